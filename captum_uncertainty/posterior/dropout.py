"""Monte Carlo dropout with frozen, seeded masks."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty._hashing import tensor_sha256
from captum_uncertainty._hooks import temporary_hooks
from captum_uncertainty._validation import check_choice, check_module_sequence, check_positive_int
from captum_uncertainty.posterior._frozen_masks import FrozenMasks
from captum_uncertainty.posterior._shared_trunk import check_share_trunk, input_layout, shared_run_agrees
from captum_uncertainty.posterior._utils import (
    batch_size_of,
    check_member_output,
    expand_to_samples,
    per_sample_slices,
    preserved_modes,
    submodule_names,
)

__all__ = ["DROPOUT_TYPES", "MASK_LAYOUTS", "SUPPORTED_MASK_LAYOUTS", "MCDropout"]


# ----------------------------------------------------------------------------- MC dropout

#: The dropout modules :class:`MCDropout` masks.
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


#: The ``mask_layout`` choices of :class:`MCDropout`: how a mask covers a dropout layer's output.
SUPPORTED_MASK_LAYOUTS = ("element", "feature")
#: Deprecated alias of :data:`SUPPORTED_MASK_LAYOUTS`, kept for one release.
MASK_LAYOUTS = SUPPORTED_MASK_LAYOUTS


def _dropout_mask_shape(module: nn.Module, feature_shape: Tuple[int, ...], layout: str) -> Tuple[int, ...]:
    """Channel masks for ``nn.DropoutNd``; for ``nn.Dropout`` element-wise masks, or with the
    ``"feature"`` layout one mask over the last dimension, shared by all the others."""
    if isinstance(module, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
        return feature_shape[:1] + (1,) * (len(feature_shape) - 1)
    if layout == "feature" and feature_shape:
        return (1,) * (len(feature_shape) - 1) + feature_shape[-1:]
    return feature_shape


class MCDropout(FrozenMasks):
    r"""Monte Carlo dropout with ``S`` frozen dropout masks.

    The masks (one per sample and ``nn.Dropout`` layer, shared by every input row) are drawn
    once from a seeded generator on the first call and reused on every later call until
    :meth:`resample`. So the ``S`` subnetworks are the same for every point of an
    integration path and every ``internal_batch_size`` chunk, which makes path methods exact
    for a fixed posterior sample. All samples run as one batch of ``S * N`` rows.

    During a call the model is in eval mode (BatchNorm uses running statistics, dropout
    layers are identities) and the masks are applied by temporary forward hooks on the
    dropout modules; flags and hooks are restored afterwards. Only dropout *modules*
    (``nn.Dropout``, ``nn.Dropout1d/2d/3d``) are sampled: functional ``F.dropout`` calls
    inside ``forward`` are not seen. A module called twice in one forward is two dropout sites
    with masks of their own, as plain dropout would draw them.

    Args:
        model (nn.Module): a network containing dropout modules.
        num_samples (int): the number of masks ``S``. Default: 20.
        seed (int): seed of the mask generator. Default: 0.
        dropouts (sequence of nn.Module, optional): the dropout modules of ``model`` to sample
            (e.g. only the last one); the others stay off. Default: every ``nn.Dropout*`` module.
        mask_layout (str): ``"element"`` draws one mask entry per element of a layer's output
            (beside the batch), as ``nn.Dropout`` does, so the masks fix the input size;
            ``"feature"`` draws one entry per index of the output's last dimension, shared by
            every other position (every token of a sequence, every head), drawn for
            ``max(max_features, size)`` indices and sliced to the size met, so inputs of any
            length (prompts of a language model) see the same masks on their common prefix.
            Default: ``"element"``, plain dropout's masks.
        max_features (int): with ``mask_layout="feature"``, the number of last-dimension
            indices each mask is drawn for (at least the first size met); a longer last
            dimension later is refused. Default: 4096.
        share_trunk (bool or str): run what the ``S`` samples share once. Everything before
            the first dropout site is the same for every sample, so the model runs on the ``N``
            inputs and each dropout layer that meets ``N`` rows repeats them ``S`` times before
            masking (sample-major, as the unshared run lays them out); the layers after it see
            ``S * N`` rows and the backward pass sums the samples' gradients through the trunk
            once. ``"auto"`` checks it on the first call for each input shape against the
            unshared run (equal within 1e-5, else the unshared run is kept for that shape,
            e.g. a model that reads its batch size before the first dropout), ``True`` uses it
            without the check (a model whose rows change count before a dropout layer, by a
            reshape, can then be grouped wrongly), ``False`` never. Default: ``"auto"``, because with dropout
            before the head most of the network runs once instead of ``S`` times (see
            ``benchmarks/RESULTS.md``, "Shared trunks").

    Examples::

        >>> posterior = MCDropout(model, num_samples=30, seed=0)
        >>> uf = UncertaintyForward(posterior, measure="epistemic")
        >>> posterior.resample()          # draw new masks
    """

    def __init__(
        self,
        model: nn.Module,
        num_samples: int = 20,
        seed: int = 0,
        dropouts: Optional[Sequence[nn.Module]] = None,
        *,
        mask_layout: str = "element",
        max_features: int = 4096,
        share_trunk: Any = "auto",
    ) -> None:
        super().__init__(model, num_samples, seed)
        self.mask_layout = check_choice(mask_layout, "mask_layout", SUPPORTED_MASK_LAYOUTS)
        self.max_features = check_positive_int(max_features, "max_features")
        self.share_trunk = check_share_trunk(share_trunk)
        self._trunk_checked: Dict[Tuple[Any, ...], bool] = {}
        self.dropouts = (
            [m for m in model.modules() if isinstance(m, DROPOUT_TYPES)]
            if dropouts is None
            else check_module_sequence(dropouts, "dropouts", single_hint="; pass [dropout]")
        )
        inside = {id(m) for m in model.modules()}
        for index, module in enumerate(self.dropouts):
            if not isinstance(module, DROPOUT_TYPES) or id(module) not in inside:
                raise ValueError(
                    f"dropouts[{index}] must be an nn.Dropout* module of model, got {type(module).__name__}"
                )
        if not self.dropouts:
            raise ValueError("model has no nn.Dropout modules: MC dropout needs at least one")
        self._masks: Dict[Tuple[int, int], Tensor] = {}

    def _new_masks(self) -> None:
        """Forget the masks: the next call draws new ones, site by site."""
        self._masks = {}

    def identity(self) -> Dict[str, Any]:
        """The seed, the draw counter, the sampled dropout modules (name, class, ``p``) and where
        the masks come from: before any :meth:`resample`, the seed; after one, the generator's
        state at that point (noted when the masks are not drawn yet), else the drawn masks."""
        names = submodule_names([self.model])
        identity: Dict[str, Any] = {
            "num_samples": self.num_samples,
            "seed": self.seed,
            "draws": self._draws,
            "dropouts": [[names.get(id(m), "?"), type(m).__qualname__, float(m.p)] for m in self.dropouts],
        }
        if self.mask_layout != "element":
            identity["mask_layout"] = [self.mask_layout, self.max_features]
        if self._draws:  # resampled: the masks are drawn from the generator as it was then
            if not self._masks:
                self._resampled_from = (self._draws, tensor_sha256(self._generator.get_state()))
            noted = vars(self).get("_resampled_from")
            if noted is not None and noted[0] == self._draws:
                identity["generator"] = noted[1]
            else:  # drawn before the state was noted: the masks themselves
                identity["masks"] = [
                    [names.get(key[0], "?"), key[1], tensor_sha256(mask)] for key, mask in self._masks.items()
                ]
        return identity

    def forward_single(self, sample: int, *inputs: Any) -> Tensor:
        """Sample ``sample``'s ``(N, C)`` output."""
        self.check_sample_index(sample)
        return self._run(expand_to_samples(inputs, 1), [sample])[0]

    def forward_per_sample(self, *inputs: Any) -> Tensor:
        return self._run(inputs, list(range(self.num_samples)))

    def forward(self, *inputs: Any) -> Tensor:
        """All samples on the same inputs, ``(S, N, C)``: through the shared trunk when
        ``share_trunk`` allows it (see the class docstring), else as ``S * N`` rows."""
        if self.share_trunk is False or self.num_samples == 1 or self._hooks_expected:
            return super().forward(*inputs)  # hooks inside hookable() expect S x N rows at every layer
        if self.share_trunk is True:
            return self._run_shared(inputs)
        key = input_layout(inputs)
        if key not in self._trunk_checked:
            self._trunk_checked[key] = shared_run_agrees(
                lambda: super(MCDropout, self).forward(*inputs), lambda: self._run_shared(inputs)
            )
        return self._run_shared(inputs) if self._trunk_checked[key] else super().forward(*inputs)

    def _run_shared(self, inputs: Tuple[Any, ...]) -> Tensor:
        count, batch = self.num_samples, batch_size_of(inputs)
        samples = list(range(count))
        with self._masked(samples, batch):
            out = self.model(*inputs)
        read = self.output_reader(out)
        if isinstance(read, Tensor) and read.dim() > 0 and read.shape[0] == batch:  # no dropout ran: all alike
            read = read.repeat(count, *([1] * (read.dim() - 1)))
        return check_member_output(read, 0, count * batch).reshape(count, batch, -1)

    def _run(self, inputs: Tuple[Any, ...], samples: List[int]) -> Tensor:
        count = len(samples)
        batch = batch_size_of(per_sample_slices(inputs, 0))
        flat = tuple(x.reshape(count * batch, *x.shape[2:]) if isinstance(x, Tensor) else x for x in inputs)
        with self._masked(samples):
            out = self.model(*flat)
        out = check_member_output(out, samples[0] if count == 1 else 0, count * batch, self.output_reader)
        return out.reshape(count, batch, -1)

    @contextmanager
    def sampling(self, sample: int) -> Iterator[nn.Module]:
        """The model in eval mode with sample ``sample``'s masks on its dropout layers (hooks
        removed and flags restored after the block)."""
        self.check_sample_index(sample)
        with self._masked([sample]):
            yield self.model

    @contextmanager
    def hookable(self) -> Iterator[None]:
        """Allow forward hooks on the model's layers inside the block; the caller knows that the
        hooked layers see the ``S`` samples as one batch of ``S * N`` rows, sample-major."""
        previous = self._hooks_expected
        self._hooks_expected = True
        try:
            yield
        finally:
            self._hooks_expected = previous

    _hooks_expected: bool = False

    def _refuse_layer_hooks(self) -> None:
        """A forward hook someone else put on the model (Captum's ``LayerIntegratedGradients``,
        ``LayerGradCam``, DeepLift) would see ``S * N`` rows and give a map of ``S * N`` rows.
        Forward *pre*-hooks are not refused: lazy modules initialise through one, and Captum's
        layer methods hook outputs unless told to attribute a layer's input."""
        hooked = [name or type(module).__name__ for name, module in self.model.named_modules() if module._forward_hooks]
        if hooked:
            raise ValueError(
                f"MCDropout runs its {self.num_samples} samples as one batch of S x N rows, and a forward hook sits "
                f"on {hooked[0]!r}{' and others' if len(hooked) > 1 else ''} (e.g. Captum's LayerIntegratedGradients "
                "or DeepLift): a layer attribution would get S x N rows, not N. Attribute the inputs "
                "(UncertaintyIntegratedGradients, Captum's IntegratedGradients); for a language model's token "
                "embeddings use captum_uncertainty.llm.LLMGradientUncertaintyAttribution; or, if the hook expects "
                "S x N rows, run inside posterior.hookable()"
            )

    @contextmanager
    def _masked(self, samples: List[int], shared_batch: Optional[int] = None) -> Iterator[None]:
        """The model in eval mode, its dropout layers' outputs multiplied by the masks of
        ``samples`` (rows in sample-major order), for the block. With ``shared_batch = N`` a
        dropout layer that meets ``N`` rows (the shared trunk's) first repeats them once per sample."""
        if len(samples) > 1 and not self._hooks_expected:
            self._refuse_layer_hooks()
        calls: Dict[int, int] = {}  # per forward: how often each dropout module has run
        with temporary_hooks() as hooks:
            for d in self.dropouts:
                hooks.forward(d, self._mask_hook(d, samples, calls, shared_batch))
            with preserved_modes([self.model]), self.running(samples[0] if len(samples) == 1 else None):
                yield

    def _mask_hook(
        self, module: nn.Module, samples: List[int], calls: Dict[int, int], shared_batch: Optional[int] = None
    ) -> Callable[..., Tensor]:
        def hook(_module: nn.Module, _args: Any, output: Tensor) -> Tensor:
            # a module called twice in one forward is two dropout sites, each with its own masks
            site = calls.get(id(module), 0)
            calls[id(module)] = site + 1
            if shared_batch is not None and output.shape[0] == shared_batch:  # the trunk ends here
                output = output.repeat(len(samples), *([1] * (output.dim() - 1)))
            masks = self._masks_for(module, site, tuple(output.shape[1:]), output)[samples]
            grouped = output.reshape(len(samples), output.shape[0] // len(samples), *output.shape[1:])
            return (grouped * masks.unsqueeze(1)).reshape(output.shape)

        return hook

    def _masks_for(self, module: nn.Module, site: int, feature_shape: Tuple[int, ...], like: Tensor) -> Tensor:
        key = (id(module), site)
        shape = _dropout_mask_shape(module, feature_shape, self.mask_layout)
        sliced = self.mask_layout == "feature" and shape == (1,) * (len(shape) - 1) + feature_shape[-1:]
        if key not in self._masks:
            keep = 1.0 - float(module.p)  # type: ignore[arg-type]  # a dropout layer's float p
            drawn = shape[:-1] + (max(self.max_features, shape[-1]),) if sliced else shape
            draw = torch.rand((self.num_samples,) + drawn, generator=self._generator, device="cpu") < keep
            scale = 1.0 / keep if keep > 0 else 0.0
            self._masks[key] = draw.to(dtype=torch.float64) * scale  # stays on the CPU: the generator's device
        masks = self._masks[key]
        if sliced and masks.dim() == len(shape) + 1 and masks.shape[-1] >= shape[-1]:
            masks = masks[..., : shape[-1]]
        if tuple(masks.shape[1:]) != shape:
            hint = (
                f"the masks were drawn for {masks.shape[-1]} features: raise max_features"
                if sliced
                else "call resample() before using inputs of another size, or MCDropout(..., mask_layout='feature') "
                "for masks that do not depend on a sequence's length"
            )
            raise ValueError(
                f"a dropout layer's output shape changed from {tuple(masks.shape[1:])} to {shape} since the "
                f"masks were drawn; {hint}"
            )
        return masks.to(device=like.device, dtype=like.dtype)
