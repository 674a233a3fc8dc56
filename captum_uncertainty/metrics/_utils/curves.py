"""Aggregating per-image scores of partially replaced inputs into curves and numbers."""

from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor

__all__ = ["area_over_curve_remaining", "evenly_spaced_counts", "median_over_images", "reduction", "running_reduction"]


def evenly_spaced_counts(pixels: int, steps: int) -> List[int]:
    """``steps + 1`` pixel counts ``round(j * pixels / steps)`` (half up), ``j = 0..steps``."""
    return [int(math.floor(j * pixels / steps + 0.5)) for j in range(steps + 1)]


def reduction(uncertainty: Tensor, reference: Tensor) -> Tensor:
    """``1 - U(x_t) / U(x)`` for uncertainties ``(..., N)`` and references ``(N,)``.

    An image with ``U(x) <= 0`` has nothing to reduce: its reductions are defined as 0.
    """
    positive = reference > 0
    safe = torch.where(positive, reference, torch.ones_like(reference))
    return torch.where(positive, 1 - uncertainty / safe, torch.zeros_like(uncertainty))


def running_reduction(uncertainty: Tensor, reference: Tensor) -> Tensor:
    """Per-image running maximum of ``1 - U(x_t) / U(x)`` over ``t`` (Wang Eq. 13 before the
    average): ``(T, N)`` uncertainties and ``(N,)`` references -> ``(N, T)``."""
    return torch.cummax(reduction(uncertainty, reference).t(), dim=1).values


def median_over_images(per_image: Tensor) -> Tensor:
    """Median over the first axis; for an even count, the mean of the two middle values (NumPy's
    convention, not ``torch.median``'s lower middle value)."""
    return torch.quantile(per_image, 0.5, dim=0)


def area_over_curve_remaining(curve: Tensor) -> float:
    """Area under the remaining-uncertainty curve ``1 - URR(t)`` for ``t = 0..T`` with
    ``URR(0) = 0``, the t axis normalised to ``[0, 1]`` (trapezoid rule)."""
    remaining = torch.cat([curve.new_ones(1), 1 - curve])
    return float(torch.trapezoid(remaining, dx=1.0 / (remaining.numel() - 1)))
