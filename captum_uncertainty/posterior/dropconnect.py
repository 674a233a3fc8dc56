"""Monte Carlo DropConnect with frozen, seeded weight masks."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import (
    check_module_sequence,
    check_non_negative_number,
)
from captum_uncertainty.posterior._frozen_masks import FrozenMasks
from captum_uncertainty.posterior._utils import (
    batch_size_of,
    check_member_output,
    per_sample_slices,
    preserved_modes,
    stack_sample_outputs,
)

__all__ = ["MCDropConnect"]


# ----------------------------------------------------------------------------- MC DropConnect

#: The layers whose weights :class:`MCDropConnect` drops.
_DROPCONNECT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _plain_weight(layer: nn.Module) -> Optional[nn.Parameter]:
    """The layer's own ``weight`` parameter, or ``None`` if it is computed (parametrized, weight
    norm) or not yet initialised (a lazy layer)."""
    weight = dict(layer.named_parameters(recurse=False)).get("weight")
    if weight is None or isinstance(weight, nn.parameter.UninitializedParameter):
        return None
    return weight


def _dropconnect_targets(model: nn.Module, layers: Optional[Sequence[nn.Module]]) -> List[Tuple[str, nn.Module]]:
    """``(name of the weight in model, layer)`` of every dropped layer, one entry per weight."""
    names = {id(module): name for name, module in model.named_modules()}
    if layers is None:
        chosen: List[nn.Module] = [module for module in model.modules() if isinstance(module, _DROPCONNECT_TYPES)]
        labels = [f"layer {names[id(module)] or type(module).__name__!r}" for module in chosen]
        if not chosen:
            raise ValueError(
                "model has no nn.Linear or nn.Conv1d/2d/3d layers: MC DropConnect drops their weights and needs at "
                "least one"
            )
    else:
        chosen = check_module_sequence(layers, "layers", single_hint="; pass [layer]")
        if not chosen:
            raise ValueError("layers is empty: pass nn.Linear / nn.Conv1d/2d/3d layers of model, or None for all")
        labels = [f"layers[{index}]" for index in range(len(chosen))]
        for label, module in zip(labels, chosen):
            if not isinstance(module, _DROPCONNECT_TYPES):
                raise ValueError(
                    f"{label} must be an nn.Linear or nn.Conv1d/2d/3d module of model, got {type(module).__name__}"
                )
            if id(module) not in names:
                raise ValueError(f"{label} (a {type(module).__name__}) is not a submodule of model")
    targets: List[Tuple[str, nn.Module]] = []
    seen = set()
    for label, module in zip(labels, chosen):
        weight = _plain_weight(module)
        if weight is None:
            raise ValueError(
                f"{label} (a {type(module).__name__}) has no plain weight parameter to mask (a parametrization, "
                "weight norm, or a lazy layer not yet run): run the model once, remove the parametrization, or "
                "leave the layer out with layers=[...]"
            )
        if id(weight) in seen:  # a layer listed twice, or layers sharing one weight: one mask
            continue
        seen.add(id(weight))
        prefix = names[id(module)]
        targets.append((f"{prefix}.weight" if prefix else "weight", module))
    return targets


class MCDropConnect(FrozenMasks):
    r"""Monte Carlo DropConnect with ``S`` frozen weight masks.

    DropConnect as a Bayesian approximation (Mobiny et al., "DropConnect is effective in
    modeling uncertainty of Bayesian deep networks", Scientific Reports, 2021) drops
    *weights* rather than activations: posterior sample ``s`` is the model with the weight
    ``W`` of every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` layer replaced by
    ``W * m_s / (1 - p)``, where ``m_s`` is a Bernoulli(``1 - p``) mask of ``W``'s shape, so
    the mean sample weight is ``W``. Biases are never dropped. It is the weight sampler with
    which arXiv 2403.17224 obtains explanation distributions
    (:class:`~captum_uncertainty.ExplanationDistribution` over this posterior).

    The masks (one per sample and layer weight, shared by every input row) are drawn once,
    when the posterior is built, from a CPU generator seeded with ``seed`` (weight by weight
    in the order of ``model.modules()``, or of ``layers``, as
    ``torch.rand((S, *W.shape), generator=g) < 1 - p``), and reused on every call until
    :meth:`resample`. So each sample is one fixed function: path integrals are exact for a
    fixed posterior sample, and the value of an input does not depend on the other inputs of
    its batch or on ``internal_batch_size``. They are kept as booleans (``S`` bytes per
    dropped weight entry) and moved once to each device the weights are seen on.

    Sample ``s`` runs ``torch.func.functional_call(model, {name: W * m_s / (1 - p)}, inputs)``,
    one sample after another, with the model in eval mode (BatchNorm uses its running
    statistics, dropout layers are identities): the user's parameters are never written, no
    hook is added, and the ``training`` flags are restored afterwards, also when a call raises.
    Gradients flow to the inputs (and to the weights); forward hooks on the model's layers fire
    as usual, seeing the masked weight as ``module.weight``, and ``current_sample`` names
    the sample running, so hook-based methods (FullGrad, layer attributions) work. Only the
    layers' own ``weight`` parameters are dropped: functional ``F.linear`` / ``F.conv*`` calls
    on other tensors are not seen, and a layer called twice in one forward uses its one mask
    both times.

    Args:
        model (nn.Module): a network with ``nn.Linear`` / ``nn.Conv1d/2d/3d`` layers returning
            ``(N, C)`` outputs (``(N,)`` is read as ``(N, 1)``, one score per input).
        p (float): the probability of dropping each weight entry, in ``[0, 1)``; ``p = 0``
            makes every sample the model itself. Default: 0.1.
        num_samples (int): the number of masks ``S``. Default: 20.
        seed (int): seed of the mask generator. Default: 0.
        layers (sequence of nn.Module, optional): the ``nn.Linear`` / ``nn.Conv1d/2d/3d``
            layers of ``model`` whose weights are dropped (e.g. only the head); the others
            keep their weights. Default: every such layer.

    Returns:
        Calling the posterior on inputs ``(N, ...)`` returns a tensor ``(S, N, C)``: the raw
        outputs of the ``S`` masked models, in the weights' dtype and on their device.

    Examples::

        >>> posterior = MCDropConnect(model, p=0.1, num_samples=30, seed=0)
        >>> posterior(x).shape            # (30, N, C)
        >>> uf = UncertaintyForward(posterior, measure="epistemic")
        >>> maps = ExplanationDistribution(uf, IntegratedGradients).attribute(x, n_steps=32)
        >>> posterior.resample()          # draw new masks
    """

    def __init__(
        self,
        model: nn.Module,
        p: float = 0.1,
        num_samples: int = 20,
        seed: int = 0,
        layers: Optional[Sequence[nn.Module]] = None,
    ) -> None:
        check_non_negative_number(p, "p")
        if not p < 1:
            raise ValueError(f"p must be a number in [0, 1) (p = 1 would drop every weight), got {p!r}")
        super().__init__(model, num_samples, seed)
        self._targets = _dropconnect_targets(model, layers)
        self.layers = [layer for _, layer in self._targets]
        self.p = float(p)
        self._scale = 1.0 / (1.0 - self.p)
        self._masks = self._draw_masks()
        self._placed: Dict[Tuple[int, torch.device], Tensor] = {}

    def _new_masks(self) -> None:
        """Draw new masks now, for the current weight shapes."""
        self._masks = self._draw_masks()
        self._placed = {}

    def forward_single(self, sample: int, *inputs: Any) -> Tensor:
        """Sample ``sample``'s ``(N, C)`` output."""
        self.check_sample_index(sample)
        with preserved_modes([self.model]):
            output = self._call(sample, inputs)
        return check_member_output(output, sample, batch_size_of(inputs), self.output_reader)

    def forward_per_sample(self, *inputs: Any) -> Tensor:
        batch = batch_size_of(per_sample_slices(inputs, 0))
        with preserved_modes([self.model]):
            outputs = [self._call(s, per_sample_slices(inputs, s)) for s in range(self.num_samples)]
        return stack_sample_outputs(outputs, batch, self.output_reader)

    def extra_repr(self) -> str:
        return f"p={self.p}, samples={self.num_samples}, seed={self.seed}, dropped weights={len(self._targets)}"

    def _call(self, sample: int, inputs: Tuple[Any, ...]) -> Any:
        from torch.func import functional_call

        parameters = {name: self._masked_weight(index, sample) for index, (name, _) in enumerate(self._targets)}
        with self.running(sample):
            return functional_call(self.model, parameters, tuple(inputs))

    def _masked_weight(self, index: int, sample: int) -> Tensor:
        name, layer = self._targets[index]
        weight = _plain_weight(layer)
        if weight is None:
            raise ValueError(f"the weight {name!r} is no longer a plain parameter of its layer; build a new posterior")
        key = (index, weight.device)
        if key not in self._placed:
            masks = self._masks[index]
            if tuple(masks.shape[1:]) != tuple(weight.shape):
                raise ValueError(
                    f"the weight {name!r} changed shape from {tuple(masks.shape[1:])} to {tuple(weight.shape)} since "
                    "the masks were drawn; call resample()"
                )
            self._placed[key] = masks.to(device=weight.device)
        return weight * (self._placed[key][sample].to(dtype=weight.dtype) * self._scale)

    def _draw_masks(self) -> List[Tensor]:
        keep = 1.0 - self.p
        masks = []
        for _, layer in self._targets:
            weight = _plain_weight(layer)
            assert weight is not None  # checked when the targets were collected
            shape = (self.num_samples,) + tuple(weight.shape)
            masks.append(torch.rand(shape, generator=self._generator, device="cpu") < keep)
        return masks
