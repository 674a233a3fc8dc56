"""The separable Gaussian blur shared by Blur IG and the blurring metrics."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def reflect_index(index: Tensor, size: int) -> Tensor:
    """Half-sample symmetric reflection ``d c b a | a b c d | d c b a``, repeated periodically
    (period ``2 * size``), so offsets of any length are defined."""
    index = torch.remainder(index, 2 * size)
    return torch.where(index >= size, 2 * size - 1 - index, index)


def blur_matrices(size: int, sigma: Tensor, truncate: Optional[float]) -> Tensor:
    """``(B, size, size)`` matrices ``M`` with ``(M @ v)`` = 1-D Gaussian blur of ``v``, one per sigma.

    Row ``i`` holds the weights ``exp(-k^2 / (2 sigma^2))`` of offsets ``|k| <= int(truncate *
    sigma + 0.5)`` (``truncate=None``: every offset ``|k| <= size - 1``, a kernel spanning the
    whole axis), normalised to sum 1 and folded back into the axis by reflection. ``sigma = 0``
    gives the identity, ``sigma = inf`` the uniform average (the limit of the reflected blur).
    """
    b = sigma.shape[0]
    finite = torch.isfinite(sigma)
    s = torch.where(finite, sigma, torch.zeros_like(sigma))
    if truncate is None:
        radius = size - 1
        own_radius = torch.full_like(s, float(radius)).unsqueeze(1)
    else:
        radius = int(truncate * float(s.max()) + 0.5) if b else 0
        own_radius = torch.floor(truncate * s + 0.5).unsqueeze(1)
    offsets = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    safe = torch.where(s > 0, s, torch.ones_like(s)).unsqueeze(1)
    weights = torch.exp(-0.5 * (offsets / safe) ** 2) * (offsets.abs() <= own_radius)
    delta = (offsets == 0).to(sigma.dtype).expand(b, -1)
    weights = torch.where((s > 0).unsqueeze(1), weights, delta)
    weights = weights / weights.sum(1, keepdim=True)
    rows = torch.arange(size, device=sigma.device)
    columns = reflect_index(rows.unsqueeze(1) + torch.arange(-radius, radius + 1, device=sigma.device), size)
    matrices = torch.zeros(b, size, size, dtype=sigma.dtype, device=sigma.device)
    matrices.scatter_add_(2, columns.expand(b, -1, -1), weights.unsqueeze(1).expand(-1, size, -1).contiguous())
    uniform = torch.full_like(matrices, 1.0 / size)
    return torch.where(finite.view(b, 1, 1), matrices, uniform)


def separable_blur(images: Tensor, sigma: Tensor, truncate: Optional[float]) -> Tensor:
    """Blur ``(N, C, H, W)`` images with per-image ``sigma`` ``(N,)`` (already validated)."""
    _, _, h, w = images.shape
    rows = blur_matrices(h, sigma, truncate)
    cols = rows if w == h else blur_matrices(w, sigma, truncate)
    return torch.einsum("nij,ncjk,nlk->ncil", rows, images, cols)
