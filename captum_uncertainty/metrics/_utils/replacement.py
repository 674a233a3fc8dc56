"""The one pixel-replacement engine of the curve metrics.

Pixels (or features) are ranked by an attribution map, and the score of an input whose top ``t``
pixels (all channels) are taken from a *replacement* is evaluated for many ``t`` and many inputs
in chunked, batched forward calls (:func:`replaced_scores`).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from captum_uncertainty._typing import Forward
from captum_uncertainty.metrics._utils.checks import check_scores

__all__ = [
    "DEFAULT_IMAGES_PER_FORWARD",
    "Replacement",
    "chunked_scores",
    "pixel_budget",
    "pixel_ranks",
    "replaced_scores",
]

#: What replaces the top-ranked pixels: images ``(N, C, H, W)`` (or features ``(N, F)``), or a
#: function ``(k_index, n_index) -> (B, C, H, W)`` giving the replacement of input ``n`` for
#: condition ``k``.
Replacement = Union[Tensor, Callable[[Tensor, Tensor], Tensor]]

#: Images per forward call of the metrics when ``batch_size=None``.
DEFAULT_IMAGES_PER_FORWARD = 4096


def pixel_ranks(pixel_maps: Tensor) -> Tensor:
    """Rank of every pixel: 0 for the largest attribution; ``(N, 1, H, W)`` for per-pixel maps
    ``(N, H, W)`` (a pixel is all its channels), ``(N, F)`` for feature maps ``(N, F)``.

    Ties are broken by raster order (row-major index: the earlier pixel first), via a stable sort.
    """
    n = pixel_maps.shape[0]
    flat = pixel_maps.reshape(n, -1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand(n, -1))
    return ranks.view(n, 1, *pixel_maps.shape[-2:]) if pixel_maps.dim() == 3 else ranks.view(pixel_maps.shape)


def pixel_budget(fraction: float, height: int, width: int) -> int:
    """The number of pixels ``T`` a budget ``fraction`` of an ``H x W`` image means, as every
    metric counts it: ``round(fraction * H * W)`` (half away from zero), at least 1 (features:
    ``height=F, width=1``)."""
    return max(1, int(math.floor(fraction * height * width + 0.5)))


@torch.no_grad()
def replaced_scores(
    forward_func: Forward,
    base: Tensor,
    replacement: Replacement,
    ranks: Tensor,
    counts: Union[Sequence[int], Tensor],
    batch_size: Optional[int] = None,
    scalar: bool = True,
) -> Tensor:
    """Scores ``(K, N)`` of ``base`` inputs whose ``counts[k]`` top-ranked pixels (all channels)
    are taken from ``replacement``.

    The ``K * N`` inputs are built lazily, ``batch_size`` at a time (``None``:
    ``DEFAULT_IMAGES_PER_FORWARD``), so memory stays bounded.

    Args:
        forward_func (callable): ``(B, C, H, W)`` -> ``(B,)`` scores.
        base (Tensor): images ``(N, C, H, W)`` or features ``(N, F)``.
        replacement (Tensor or callable): see :data:`Replacement` (callables serve per-condition
            blurs).
        ranks (Tensor): pixel ranks from :func:`pixel_ranks`.
        counts (sequence of int or Tensor): ``K`` pixel counts.
        batch_size (int, optional): inputs per forward call.
        scalar (bool): if True the forward must return ``(B,)`` scores; if False any
            ``(B, ...)`` output is accepted and the result is ``(K, N, ...)``.

    Returns:
        Tensor: ``(K, N)`` scores (``(K, N, ...)`` with ``scalar=False``).
    """
    n = base.shape[0]
    counts_t = torch.as_tensor(counts, dtype=torch.long, device=base.device).reshape(-1)
    total = counts_t.numel() * n
    chunk = DEFAULT_IMAGES_PER_FORWARD if batch_size is None else batch_size
    outputs = []
    for start in range(0, total, max(chunk, 1)):
        index = torch.arange(start, min(start + chunk, total), device=base.device)
        k, i = index // n, index % n
        source = replacement[i] if isinstance(replacement, Tensor) else replacement(k, i)
        mask = ranks[i] < counts_t[k].view((-1,) + (1,) * (ranks.dim() - 1))
        images = torch.where(mask, source, base[i])
        outputs.append(_checked(forward_func(images), images.shape[0], scalar))
    result = torch.cat(outputs)
    return result.view((counts_t.numel(), n) + tuple(result.shape[1:]))


@torch.no_grad()
def chunked_scores(
    forward_func: Forward, images: Tensor, batch_size: Optional[int] = None, scalar: bool = True
) -> Tensor:
    """``forward_func`` on ``(N, ...)`` inputs, ``batch_size`` at a time; ``(N,)`` (or
    ``(N, ...)`` with ``scalar=False``)."""
    chunk = DEFAULT_IMAGES_PER_FORWARD if batch_size is None else batch_size
    parts = [
        _checked(forward_func(images[i : i + chunk]), images[i : i + chunk].shape[0], scalar)
        for i in range(0, images.shape[0], chunk)
    ]
    return torch.cat(parts)


def _checked(output: Tensor, batch: int, scalar: bool) -> Tensor:
    if scalar:
        return check_scores(output, batch).detach()
    if not isinstance(output, Tensor) or output.dim() == 0 or output.shape[0] != batch:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"forward_func must return a tensor with {batch} rows, got {shape}")
    return output.detach()
