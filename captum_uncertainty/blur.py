"""The one Gaussian blur of the package, shared by Blur IG and the metrics."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from captum_uncertainty._validation import check_positive_number

__all__ = ["gaussian_blur", "SCIPY_TRUNCATE"]

#: Kernel half-width in standard deviations of ``scipy.ndimage.gaussian_filter`` (its default).
SCIPY_TRUNCATE = 4.0


def gaussian_blur(images: Tensor, sigma: Union[float, Tensor], truncate: Optional[float] = SCIPY_TRUNCATE) -> Tensor:
    r"""Blur ``(N, C, H, W)`` images with an isotropic Gaussian of standard deviation ``sigma``.

    Separable (one 1-D blur along H, one along W, written as two small matrix products), every
    channel independently; image ``n`` uses ``sigma[n]``. Boundaries follow
    ``scipy.ndimage.gaussian_filter(mode="reflect")``: half-sample symmetric reflection
    ``c b a | a b c | c b a``, repeated periodically when the kernel is wider than the image, so
    any ``sigma`` is defined.

    * ``truncate=4.0`` (default): scipy's kernel, offsets ``|k| <= int(4 sigma + 0.5)``; equal to
      ``gaussian_filter(..., mode="reflect")``. The metrics use it.
    * ``truncate=None``: the kernel spans the whole axis (``|k| <= L - 1``, renormalised), so the
      output is a smooth function of ``sigma``: a radius that jumps with ``sigma`` would put
      spikes into the finite-difference path derivative of Blur IG, which uses this setting.
      For ``sigma <= L / 4`` it differs from scipy's only by the tail mass beyond the axis.

    ``sigma = 0`` returns the images unchanged (exactly); ``sigma = inf`` sets every pixel to
    its image's per-channel mean (the limit of the reflected blur). Differentiable with respect
    to ``images``; every tensor it makes is on the images' device and dtype.

    Args:
        images (Tensor): floating point images of shape ``(N, C, H, W)``.
        sigma (float or Tensor): one standard deviation (in pixels) for all images, or a tensor
            ``(N,)`` with one per image. Must be ``>= 0`` (``inf`` allowed).
        truncate (float or None): kernel half-width in standard deviations, or ``None`` for the
            whole axis. Default: 4.0.

    Returns:
        Tensor: the blurred images, same shape, dtype and device as ``images``.

    Examples::

        >>> x = torch.rand(2, 1, 28, 28)
        >>> y = gaussian_blur(x, 2.0)
        >>> z = gaussian_blur(x, torch.tensor([0.0, 4.0]))   # z[0] == x[0]
        >>> smooth = gaussian_blur(x, 2.5, truncate=None)    # Blur IG's kernel
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (N, C, H, W), got {shape}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating point tensor, got dtype {images.dtype}")
    if truncate is not None:
        check_positive_number(truncate, "truncate")
    n = images.shape[0]
    if isinstance(sigma, Tensor):
        sigma_n = sigma.detach().to(device=images.device, dtype=images.dtype)
    elif isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        sigma_n = torch.full((), float(sigma), dtype=images.dtype, device=images.device)
    else:
        raise TypeError(f"sigma must be a float or a tensor of shape (N,), got {type(sigma).__name__}")
    if sigma_n.dim() == 0:
        sigma_n = sigma_n.expand(n)
    if tuple(sigma_n.shape) != (n,):
        raise ValueError(f"sigma must be a float or a tensor of shape ({n},), got shape {tuple(sigma_n.shape)}")
    if bool(torch.isnan(sigma_n).any()) or bool((sigma_n < 0).any()):
        raise ValueError(f"sigma must be >= 0 (inf allowed), got {sigma}")
    if n == 0:
        return images.clone()
    return _separable_blur(images, sigma_n, None if truncate is None else float(truncate))


def _reflect_index(index: Tensor, size: int) -> Tensor:
    """Half-sample symmetric reflection ``d c b a | a b c d | d c b a``, repeated periodically
    (period ``2 * size``), so offsets of any length are defined."""
    index = torch.remainder(index, 2 * size)
    return torch.where(index >= size, 2 * size - 1 - index, index)


def _blur_matrices(size: int, sigma: Tensor, truncate: Optional[float]) -> Tensor:
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
    columns = _reflect_index(rows.unsqueeze(1) + torch.arange(-radius, radius + 1, device=sigma.device), size)
    matrices = torch.zeros(b, size, size, dtype=sigma.dtype, device=sigma.device)
    matrices.scatter_add_(2, columns.expand(b, -1, -1), weights.unsqueeze(1).expand(-1, size, -1).contiguous())
    uniform = torch.full_like(matrices, 1.0 / size)
    return torch.where(finite.view(b, 1, 1), matrices, uniform)


def _separable_blur(images: Tensor, sigma: Tensor, truncate: Optional[float]) -> Tensor:
    """Blur ``(N, C, H, W)`` images with per-image ``sigma`` ``(N,)`` (already validated)."""
    _, _, h, w = images.shape
    rows = _blur_matrices(h, sigma, truncate)
    cols = rows if w == h else _blur_matrices(w, sigma, truncate)
    return torch.einsum("nij,ncjk,nlk->ncil", rows, images, cols).contiguous()
