"""Blurring the most attributed pixels: Wang et al.'s blurring test and Perez et al.'s curves."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from captum_uncertainty.attr.blur_ig import gaussian_blur
from captum_uncertainty.metrics._core import (
    check_fraction,
    check_inputs_and_maps,
    evaluate,
    pixel_count,
    pixel_order,
    running_reduction,
    top_masks,
)

__all__ = [
    "BlurringResult",
    "ReductionCurve",
    "InformationCurve",
    "blurring_test",
    "uncertainty_reduction_curve",
    "entropy_information_curve",
]

Forward = Callable[[Tensor], Tensor]


class BlurringResult(NamedTuple):
    """Result of :func:`blurring_test`.

    ``curve`` is the median URR(t) over images for t = 1..T, ``per_image`` the ``(N, T)``
    running-maximum reductions, ``sigma`` the blur chosen for each image.
    """

    murr: float
    auc_urr: float
    curve: Tensor
    per_image: Tensor
    sigma: Tensor


class ReductionCurve(NamedTuple):
    """Perez et al.'s Uncertainty Reduction Curve: ``score`` = median over images of the largest
    reduction within the pixel budget; ``curve`` = median running reduction for t = 1..T."""

    score: float
    curve: Tensor
    per_image: Tensor


class InformationCurve(NamedTuple):
    """Perez et al.'s Entropy Information Curve (median over images) at ``fractions`` of the
    pixels, and the Area over it (``area_over``, higher is better)."""

    area_over: float
    curve: Tensor
    fractions: Tensor


def area_over_remaining(curve: Tensor) -> float:
    """Trapezoid area under ``1 - URR`` over t in [0, T] normalised to [0, 1], with URR(0) = 0."""
    remaining = torch.cat([curve.new_ones(1), 1 - curve])
    return float(torch.trapezoid(remaining, dx=1.0 / (remaining.numel() - 1)))


def blurring_test(
    forward_func: Forward,
    inputs: Tensor,
    maps: Tensor,
    fraction: float = 0.05,
    sigma_step: float = 0.2,
    max_sigma: float = 20.0,
    batch_size: Optional[int] = 512,
) -> BlurringResult:
    r"""Wang et al.'s blurring test (Sec. 5.2.1, App. B.2.1).

    The pixels are ranked by the map (largest first; ties in raster order). ``x_t`` is ``x``
    with its top ``t`` pixels (all channels) replaced by the pixels of a Gaussian-blurred copy of
    ``x``. ``URR(t)`` is the running maximum ``max_{i <= t} 1 - U(x_i) / U(x)`` (Eq. 13), and
    the reported curve is its median over images (the paper reports medians because some
    blurred images leave the data distribution). MURR = ``max_t URR(t)``; AUC-URR is the area
    under the remaining-uncertainty curve ``1 - URR(t)`` for ``t = 0..T`` (URR(0) = 0) with the
    t axis normalised to [0, 1], by the trapezoid rule (lower is better).

    Choices the paper leaves open, made here: the blur's standard deviation is searched per image
    over ``0, sigma_step, ..., max_sigma`` once, as the one giving the lowest uncertainty when
    *all* T budgeted pixels are blurred, and that sigma is used for every t; T is
    ``round(fraction * H * W)`` (at least 1).

    Args:
        forward_func (callable): maps images ``(B, C, H, W)`` to uncertainties ``(B,)``, e.g. an
            :class:`~captum_uncertainty.UncertaintyForward`.
        inputs (Tensor): images ``(N, C, H, W)``.
        maps (Tensor): attribution maps ``(N, 1, H, W)``, ``(N, H, W)`` or of the inputs' shape
            (then summed over channels).
        fraction (float): pixel budget as a share of ``H * W`` in (0, 1] (0.02 and 0.05 in the
            paper).
        sigma_step (float): step of the sigma search (0.2 in the paper).
        max_sigma (float): largest sigma searched (20 in the paper).
        batch_size (int, optional): images per forward call.

    Returns:
        BlurringResult: ``murr``, ``auc_urr``, ``curve`` ``(T,)``, ``per_image`` ``(N, T)`` and
        ``sigma`` ``(N,)``.

    Examples::

        >>> r = blurring_test(uf, x, maps, fraction=0.02)
        >>> r.murr, r.auc_urr
    """
    pixel_maps = check_inputs_and_maps(inputs, maps)
    fraction = check_fraction(fraction)
    if not sigma_step > 0 or not max_sigma >= 0:
        raise ValueError(f"sigma_step must be > 0 and max_sigma >= 0, got {sigma_step} and {max_sigma}")
    n, _, h, w = inputs.shape
    budget = pixel_count(fraction, h, w)
    order = pixel_order(pixel_maps)
    inputs = inputs.detach()
    sigmas = torch.arange(0.0, max_sigma + sigma_step / 2, sigma_step, dtype=inputs.dtype)
    full_mask = top_masks(order, [budget], (h, w))[0]
    blurred_by_sigma = gaussian_blur(inputs.repeat(len(sigmas), 1, 1, 1), sigmas.repeat_interleave(n)).view(
        len(sigmas), *inputs.shape
    )
    candidates = torch.where(full_mask.unsqueeze(0), blurred_by_sigma, inputs.unsqueeze(0))
    best = evaluate(forward_func, candidates, batch_size).argmin(0)  # (N,)
    blurred = blurred_by_sigma[best, torch.arange(n)]
    masks = top_masks(order, range(1, budget + 1), (h, w))
    steps = torch.where(masks, blurred.unsqueeze(0), inputs.unsqueeze(0))
    reference = evaluate(forward_func, inputs, batch_size)
    per_image = running_reduction(evaluate(forward_func, steps, batch_size), reference)
    curve = per_image.median(0).values
    return BlurringResult(float(curve.max()), area_over_remaining(curve), curve, per_image, sigmas[best])


def fully_blurred(inputs: Tensor, sigma: Optional[float]) -> Tensor:
    """The reference blur of Perez et al.'s curves: sigma = the image's larger side by default,
    which leaves little more than the image mean."""
    return gaussian_blur(inputs, float(max(inputs.shape[-2:])) if sigma is None else sigma)


def uncertainty_reduction_curve(
    forward_func: Forward,
    inputs: Tensor,
    maps: Tensor,
    fraction: float = 0.01,
    sigma: Optional[float] = None,
    batch_size: Optional[int] = 512,
) -> ReductionCurve:
    r"""Perez et al.'s Uncertainty Reduction Curve (supplement Sec. 2, Table 1).

    Pixels are replaced, one at a time in attribution order, by those of a fully blurred copy
    of the image; for each image the running maximum of ``1 - U(x_t) / U(x)`` is taken over the
    first ``round(fraction * H * W)`` pixels, and the score is its median over images at the end
    of the budget (1% and 5% in the paper). "Fully blurred" is not defined in the paper: we use a
    Gaussian blur with sigma equal to the image's larger side (override with ``sigma``).

    Args:
        forward_func (callable): images -> uncertainties ``(B,)``.
        inputs (Tensor): images ``(N, C, H, W)``.
        maps (Tensor): attribution maps (see :func:`blurring_test`).
        fraction (float): pixel budget in (0, 1].
        sigma (float, optional): blur of the reference image.
        batch_size (int, optional): images per forward call.

    Returns:
        ReductionCurve: ``score``, ``curve`` ``(T,)`` and ``per_image`` ``(N, T)``.
    """
    pixel_maps = check_inputs_and_maps(inputs, maps)
    budget = pixel_count(check_fraction(fraction), *inputs.shape[2:])
    inputs = inputs.detach()
    masks = top_masks(pixel_order(pixel_maps), range(1, budget + 1), tuple(inputs.shape[2:]))
    steps = torch.where(masks, fully_blurred(inputs, sigma).unsqueeze(0), inputs.unsqueeze(0))
    per_image = running_reduction(evaluate(forward_func, steps, batch_size), evaluate(forward_func, inputs, batch_size))
    curve = per_image.median(0).values
    return ReductionCurve(float(curve[-1]), curve, per_image)


def entropy_information_curve(
    forward_func: Forward,
    inputs: Tensor,
    maps: Tensor,
    points: int = 50,
    sigma: Optional[float] = None,
    batch_size: Optional[int] = 512,
) -> InformationCurve:
    r"""Perez et al.'s Entropy Information Curve and the Area over it (supplement Table 1).

    The remaining uncertainty ``min(1, min_{i <= t} U(x_t) / U(x))`` as the top ``t`` pixels are
    replaced by a fully blurred copy, at ``points`` evenly spaced fractions of all pixels
    (0 to 1), median over images; the Area over the EIC is ``1 -`` its trapezoid area (higher
    is better: the uncertainty disappears after few pixels). The paper does not spell out the
    discretisation: we evaluate ``points`` fractions instead of every pixel count, and take the
    running minimum so that the curve, like the URC, credits the best point reached so far.

    Args:
        forward_func (callable): images -> uncertainties ``(B,)``.
        inputs (Tensor): images ``(N, C, H, W)``.
        maps (Tensor): attribution maps (see :func:`blurring_test`).
        points (int): number of pixel fractions evaluated (>= 2).
        sigma (float, optional): blur of the reference image.
        batch_size (int, optional): images per forward call.

    Returns:
        InformationCurve: ``area_over``, ``curve`` ``(points,)`` and ``fractions``.
    """
    pixel_maps = check_inputs_and_maps(inputs, maps)
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an int >= 2, got {points!r}")
    inputs = inputs.detach()
    h, w = inputs.shape[2:]
    fractions = torch.linspace(0, 1, points, dtype=inputs.dtype)
    counts = [int(round(float(f) * h * w)) for f in fractions]
    masks = top_masks(pixel_order(pixel_maps), counts, (h, w))
    steps = torch.where(masks, fully_blurred(inputs, sigma).unsqueeze(0), inputs.unsqueeze(0))
    remaining = 1 - running_reduction(evaluate(forward_func, steps, batch_size), evaluate(forward_func, inputs, batch_size))
    curve = remaining.clamp(0, 1).median(0).values
    area = float(torch.trapezoid(curve, fractions))
    return InformationCurve(1 - area, curve, fractions)
