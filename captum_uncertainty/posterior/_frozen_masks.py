"""The base of the sources whose samples are one model under ``S`` seeded masks drawn once
(:class:`~captum_uncertainty.MCDropout`, :class:`~captum_uncertainty.MCDropConnect`)."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from captum_uncertainty._validation import check_int, check_positive_int
from captum_uncertainty.posterior._protocol import Posterior

__all__ = ["FrozenMasks"]


class FrozenMasks(Posterior):
    """One ``model`` whose ``S`` samples differ by masks from a CPU generator seeded with ``seed``,
    kept until :meth:`resample`; a subclass says how its masks are (re)drawn in
    :meth:`_new_masks` and when they are drawn first."""

    def __init__(self, model: nn.Module, num_samples: int, seed: int) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        check_positive_int(num_samples, "num_samples")
        check_int(seed, "seed")
        self.model = model
        self._num_samples = num_samples
        self.seed = seed
        self._draws = 0
        self._generator = torch.Generator(device="cpu").manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return self._num_samples

    def sample_modules(self) -> List[nn.Module]:
        return [self.model]

    def resample(self, seed: Optional[int] = None) -> None:
        """New masks (from a generator seeded with ``seed`` if given, else from the current one);
        the next call is checked again."""
        if seed is not None:
            check_int(seed, "seed")
            self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._new_masks()
        self._draws += 1
        self.verified = False

    def _new_masks(self) -> None:  # pragma: no cover - abstract
        """Forget the masks or draw new ones, from ``self._generator``."""
        raise NotImplementedError
