"""Shared pieces of the metrics: input checks, pixel orders, batched evaluation."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor


def check_inputs_and_maps(inputs: Any, maps: Any) -> Tensor:
    """Validate ``(N, C, H, W)`` inputs and maps of shape ``(N, 1, H, W)``, ``(N, H, W)`` or the
    inputs' shape; return the per-pixel maps ``(N, H, W)`` (channels summed)."""
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a tensor of shape (N, C, H, W), got {shape}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs must contain at least one image (got an empty batch)")
    if not isinstance(maps, Tensor):
        raise TypeError(f"maps must be a tensor, got {type(maps).__name__}")
    n, _, h, w = inputs.shape
    if maps.shape == inputs.shape or maps.shape == (n, 1, h, w):
        pixel_maps = maps.sum(1)
    elif maps.shape == (n, h, w):
        pixel_maps = maps
    else:
        raise ValueError(
            f"maps must have shape (N, 1, H, W) = {(n, 1, h, w)}, (N, H, W) or the inputs' shape "
            f"{tuple(inputs.shape)}, got {tuple(maps.shape)}"
        )
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("maps contain NaN or inf values")
    return pixel_maps.detach().to(inputs.device)


def check_fraction(fraction: Any, name: str = "fraction") -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"{name} must be in (0, 1] (a share of the pixels: 0.05 = 5%), got {fraction!r}")
    return float(fraction)


def pixel_count(fraction: float, height: int, width: int) -> int:
    """``round(fraction * H * W)`` pixels, at least one."""
    return max(1, int(round(fraction * height * width)))


def pixel_order(pixel_maps: Tensor) -> Tensor:
    """Pixel indices ``(N, H*W)`` by decreasing attribution; ties keep the raster order."""
    return torch.argsort(pixel_maps.flatten(1), dim=1, descending=True, stable=True)


def top_masks(order: Tensor, counts: Sequence[int], shape: Sequence[int]) -> Tensor:
    """Boolean masks ``(len(counts), N, 1, H, W)``: the first ``counts[k]`` pixels of each order."""
    n = order.shape[0]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand(n, -1))
    counts_t = torch.as_tensor(list(counts), device=order.device).view(-1, 1, 1)
    return (ranks.unsqueeze(0) < counts_t).view(len(counts), n, 1, *shape)


@torch.no_grad()
def evaluate(forward: Callable[[Tensor], Tensor], images: Tensor, batch_size: Optional[int]) -> Tensor:
    """``forward`` on ``(..., C, H, W)`` images in chunks; returns the outputs with the leading shape."""
    lead = images.shape[:-3]
    flat = images.reshape((-1,) + tuple(images.shape[-3:]))
    size = flat.shape[0] if batch_size is None else batch_size
    if size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    outputs = torch.cat([forward(flat[i : i + size]) for i in range(0, flat.shape[0], size)])
    return outputs.reshape(tuple(lead) + tuple(outputs.shape[1:]))


def running_reduction(uncertainty: Tensor, reference: Tensor) -> Tensor:
    """Per-image running maximum over ``t`` of ``1 - U(x_t) / U(x)``: ``(T, N)`` -> ``(N, T)``."""
    ratio = 1 - uncertainty / reference.clamp_min(torch.finfo(uncertainty.dtype).tiny).unsqueeze(0)
    return torch.cummax(ratio.t(), dim=1).values
