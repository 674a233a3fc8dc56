"""Monte Carlo dropout with frozen, seeded masks."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty._hashing import tensor_sha256
from captum_uncertainty._validation import check_positive_int
from captum_uncertainty.posterior._protocol import Posterior
from captum_uncertainty.posterior._utils import (
    batch_size_of,
    check_member_output,
    expand_to_samples,
    per_sample_slices,
    preserved_modes,
    submodule_names,
)

__all__ = ["DROPOUT_TYPES", "MCDropout"]


# ----------------------------------------------------------------------------- MC dropout

#: The dropout modules :class:`MCDropout` masks.
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _dropout_mask_shape(module: nn.Module, feature_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """Element-wise masks for ``nn.Dropout``, channel masks for ``nn.DropoutNd``."""
    if isinstance(module, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
        return feature_shape[:1] + (1,) * (len(feature_shape) - 1)
    return feature_shape


class MCDropout(Posterior):
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

    Examples::

        >>> posterior = MCDropout(model, num_samples=30, seed=0)
        >>> uf = UncertaintyForward(posterior, measure="epistemic")
        >>> posterior.resample()          # draw new masks
    """

    def __init__(
        self, model: nn.Module, num_samples: int = 20, seed: int = 0, dropouts: Optional[Sequence[nn.Module]] = None
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        check_positive_int(num_samples, "num_samples")
        self.model = model
        self.dropouts = (
            [m for m in model.modules() if isinstance(m, DROPOUT_TYPES)] if dropouts is None else list(dropouts)
        )
        inside = {id(m) for m in model.modules()}
        for index, module in enumerate(self.dropouts):
            if not isinstance(module, DROPOUT_TYPES) or id(module) not in inside:
                raise ValueError(
                    f"dropouts[{index}] must be an nn.Dropout* module of model, got {type(module).__name__}"
                )
        if not self.dropouts:
            raise ValueError("model has no nn.Dropout modules: MC dropout needs at least one")
        self._num_samples = num_samples
        self.seed = seed
        self._draws = 0
        self._masks: Dict[Tuple[int, int], Tensor] = {}
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return self._num_samples

    def sample_modules(self) -> List[nn.Module]:
        return [self.model]

    def resample(self, seed: Optional[int] = None) -> None:
        """Forget the masks; the next call draws new ones (from ``seed`` if given)."""
        if seed is not None:
            self._generator = torch.Generator().manual_seed(seed)
        self._masks = {}
        self._draws += 1
        self.verified = False

    def _sample_identity(self) -> Dict[str, Any]:
        """The seed, the draw counter, the sampled dropout modules (name, class, ``p``) and where
        the masks come from: before any :meth:`resample`, the seed; after one, the generator's
        state at that point (noted when the masks are not drawn yet), else the drawn masks."""
        names = submodule_names([self.model])
        identity: Dict[str, Any] = {
            "num_samples": self.num_samples,
            "seed": self.seed,
            "draws": self._draws,
            "dropouts": [[names.get(id(m), "?"), type(m).__qualname__, float(m.p)] for m in self.dropouts],  # type: ignore[arg-type]
        }
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

    def _run(self, inputs: Tuple[Any, ...], samples: List[int]) -> Tensor:
        count = len(samples)
        batch = batch_size_of(per_sample_slices(inputs, 0))
        flat = tuple(x.reshape(count * batch, *x.shape[2:]) if isinstance(x, Tensor) else x for x in inputs)
        calls: Dict[int, int] = {}  # per forward: how often each dropout module has run
        handles = [d.register_forward_hook(self._mask_hook(d, samples, batch, calls)) for d in self.dropouts]
        try:
            with preserved_modes([self.model]), self.running(samples[0] if count == 1 else None):
                out = self.model(*flat)
        finally:
            for handle in handles:
                handle.remove()
        out = check_member_output(out, samples[0] if count == 1 else 0, count * batch, self.output_reader)
        return out.reshape(count, batch, -1)

    def _mask_hook(
        self, module: nn.Module, samples: List[int], batch: int, calls: Dict[int, int]
    ) -> Callable[..., Tensor]:
        def hook(_module: nn.Module, _args: Any, output: Tensor) -> Tensor:
            # a module called twice in one forward is two dropout sites, each with its own masks
            site = calls.get(id(module), 0)
            calls[id(module)] = site + 1
            masks = self._masks_for(module, site, tuple(output.shape[1:]), output)[samples]
            grouped = output.reshape(len(samples), batch, *output.shape[1:])
            return (grouped * masks.unsqueeze(1)).reshape(output.shape)

        return hook

    def _masks_for(self, module: nn.Module, site: int, feature_shape: Tuple[int, ...], like: Tensor) -> Tensor:
        key = (id(module), site)
        shape = _dropout_mask_shape(module, feature_shape)
        if key not in self._masks:
            keep = 1.0 - float(module.p)  # type: ignore[arg-type]  # a dropout layer's float p
            draw = torch.rand((self.num_samples,) + shape, generator=self._generator, device="cpu") < keep
            scale = 1.0 / keep if keep > 0 else 0.0
            self._masks[key] = draw.to(dtype=torch.float64) * scale  # stays on the CPU: the generator's device
        masks = self._masks[key]
        if tuple(masks.shape[1:]) != shape:
            raise ValueError(
                f"a dropout layer's input shape changed from {tuple(masks.shape[1:])} to {shape} since the "
                "masks were drawn; call resample() before using inputs of another size"
            )
        return masks.to(device=like.device, dtype=like.dtype)
