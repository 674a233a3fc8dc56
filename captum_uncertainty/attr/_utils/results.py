"""Assembling the results of the attribution classes (shared by the path methods)."""

from __future__ import annotations

from typing import Any, Sequence, Tuple

from torch import Tensor

from captum_uncertainty.forward import Decomposition

__all__ = ["decomposed", "decomposed_maps"]


def decomposed_maps(maps: Sequence[Any]) -> Decomposition:
    """Total and aleatoric maps (tensors, or tuples of tensors) -> a Decomposition with
    epistemic = total - aleatoric."""
    total, aleatoric = maps
    epistemic: Any = tuple(t - a for t, a in zip(total, aleatoric)) if isinstance(total, tuple) else total - aleatoric
    return Decomposition(total, aleatoric, epistemic)


def decomposed(maps: Sequence[Any], deltas: Sequence[Tensor]) -> Tuple[Decomposition, Decomposition]:
    """Total and aleatoric results -> Decompositions with epistemic = total - aleatoric."""
    return decomposed_maps(maps), Decomposition(deltas[0], deltas[1], deltas[0] - deltas[1])
