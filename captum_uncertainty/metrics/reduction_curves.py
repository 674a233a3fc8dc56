r"""Perez et al.'s curves (supplement Sec. 2, Table 1): the Uncertainty Reduction Curve (URC) at a
pixel budget and the Entropy Information Curve (EIC) with the Area over it (AoEIC).

The supplement names the metrics and reports them (URC at 1% and 5% of the pixels, AoEIC) but
does not define them in formulas; the definitions below are the reading documented in each
function, shared with Wang et al.'s blurring test (which follows Perez et al.): pixels of the
image are replaced, one at a time in attribution order, by the pixels of a fully blurred copy.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple, Optional, Union

import torch
from torch import Tensor

from captum_uncertainty._typing import Forward
from captum_uncertainty._validation import check_choice, check_int, check_optional_positive_int, check_positive_int
from captum_uncertainty.blur import gaussian_blur
from captum_uncertainty.metrics._utils.checks import (
    NOT_GIVEN,
    check_blur_sigma,
    check_feature_maps,
    check_fraction,
    check_images_or_features,
    check_replacement,
    renamed,
)
from captum_uncertainty.metrics._utils.curves import (
    evenly_spaced_counts,
    median_over_images,
    reduction,
    running_reduction,
)
from captum_uncertainty.metrics._utils.replacement import chunked_scores, pixel_budget, pixel_ranks, replaced_scores

__all__ = [
    "EIC_NORMALIZATIONS",
    "SUPPORTED_EIC_NORMALIZATIONS",
    "InformationCurve",
    "ReductionCurve",
    "entropy_information_curve",
    "uncertainty_reduction_curve",
]

#: The ``normalization`` choices of :func:`entropy_information_curve`.
SUPPORTED_EIC_NORMALIZATIONS = ("input", "replaced")
#: Deprecated alias of :data:`SUPPORTED_EIC_NORMALIZATIONS`, kept for one release.
EIC_NORMALIZATIONS = SUPPORTED_EIC_NORMALIZATIONS


class _ReductionCurveFields(NamedTuple):
    score: float
    curve: Tensor
    per_image: Tensor
    reference: Tensor


class ReductionCurve(_ReductionCurveFields):
    """Result of :func:`uncertainty_reduction_curve`; ``score`` is the URC at the budget, higher
    is better (``higher_is_better = True``).

    Attributes:
        score (float): median over images of the largest reduction within the budget
            (= ``curve[-1]``; higher is better).
        curve (Tensor): ``(T,)`` median over images of the running reduction, ``t = 1..T``.
        per_image (Tensor): ``(N, T)`` running reductions.
        reference (Tensor): ``(N,)`` uncertainties of the original images.
    """

    __slots__ = ()
    higher_is_better: ClassVar[bool] = True

    def truncated(self, steps: int) -> "ReductionCurve":
        """The curve :func:`uncertainty_reduction_curve` gives with a budget of the first ``steps``
        pixels (``pixel_budget(fraction, H, W)`` of a smaller fraction; features: of ``F, 1``),
        from this one's forward passes: the running reductions' prefix.

        Examples::

            >>> five = uncertainty_reduction_curve(uf, x, maps, fraction=0.05)
            >>> one = five.truncated(pixel_budget(0.01, 28, 28))
        """
        check_int(steps, "steps", minimum=1, maximum=self.per_image.shape[1])
        per_image = self.per_image[:, :steps]
        curve = median_over_images(per_image)
        return ReductionCurve(float(curve[-1]), curve, per_image, self.reference)


class _InformationCurveFields(NamedTuple):
    area_over: float
    curve: Tensor
    fractions: Tensor
    per_image: Tensor
    reference: Tensor


class InformationCurve(_InformationCurveFields):
    """Result of :func:`entropy_information_curve`; ``score`` is ``area_over``, higher is better
    (``higher_is_better = True``).

    Attributes:
        area_over (float): Area over the EIC, ``1 -`` the area under ``curve`` (higher is better).
        curve (Tensor): ``(K,)`` median normalised remaining uncertainty at ``fractions``.
        fractions (Tensor): ``(K,)`` shares of replaced pixels, from 0 to 1.
        per_image (Tensor): ``(N, K)`` normalised remaining uncertainties.
        reference (Tensor): ``(N,)`` uncertainties of the original images.
    """

    __slots__ = ()
    higher_is_better: ClassVar[bool] = True

    @property
    def score(self) -> float:
        """The headline score, ``area_over``."""
        return self.area_over


def _replacement_for(inputs: Tensor, baseline: Optional[Union[float, Tensor]], sigma: float) -> Tensor:
    """What replaces the top-ranked elements: ``baseline`` if given, else the blurred images;
    features have no blur and need a ``baseline``."""
    if baseline is not None:
        return check_replacement(baseline, inputs)
    if inputs.dim() != 4:
        raise ValueError(
            "features (N, F) have no blur: pass baseline= the per-feature values that stand for a removed "
            "feature, e.g. baseline=x_train.mean(0)"
        )
    return gaussian_blur(inputs, check_blur_sigma(sigma))


def uncertainty_reduction_curve(
    forward_func: Forward,
    inputs: Tensor,
    attributions: Optional[Tensor] = None,
    fraction: float = 0.01,
    sigma: float = math.inf,
    max_examples_per_batch: Optional[int] = None,
    percent: Optional[float] = None,
    baseline: Optional[Union[float, Tensor]] = None,
    *,
    maps: Any = NOT_GIVEN,
    batch_size: Any = NOT_GIVEN,
) -> ReductionCurve:
    r"""Perez et al.'s Uncertainty Reduction Curve (supplement Table 1: 1% and 5% of pixels).

    For ``t = 1..T`` (``T = round(fraction * H * W)``, at least 1), ``x_t`` is ``x`` with its top
    ``t`` attributed pixels (ties: raster order; all channels) replaced by those of a fully
    blurred copy of ``x``. Per image, the reduction is the running maximum
    ``max_{i <= t} 1 - U(x_i) / U(x)``; the curve is its median over images and the score the
    curve's value at ``T`` (the median of the per-image maxima).

    Choices the supplement leaves open: "fully blurred" is ``sigma = inf`` by default, i.e. every
    pixel becomes its image's per-channel mean, the limit of an ever wider reflected Gaussian
    blur (pass a finite ``sigma`` for a Gaussian blur); the running maximum and the median are
    those of Wang et al.'s Eq. 13, which follows Perez et al.; an image with ``U(x) <= 0`` counts
    as reduction 0. Unlike :func:`~captum_uncertainty.metrics.blurring_test` there is no
    per-image sigma search.

    Tabular inputs ``(N, F)`` work the same way with features in place of pixels and
    ``baseline`` (per-feature values, e.g. the training mean) in place of the blur.

    Args:
        forward_func (callable): inputs ``(B, ...)`` -> uncertainties ``(B,)``.
        inputs (Tensor): images ``(N, C, H, W)`` or features ``(N, F)``.
        attributions (Tensor): attribution maps ``(N, 1, H, W)``, ``(N, H, W)`` or of the
            inputs' shape (summed over channels); ``(N, F)`` for features (required).
        fraction (float): pixel budget, a share of ``H * W`` (or of ``F``) in ``(0, 1]``.
        sigma (float): blur of the replacement image (``inf`` = fully blurred).
        max_examples_per_batch (int, optional): images per forward call (``None``: 4096).
        percent (float, optional): the budget in percent, ``(0, 100]``; overrides ``fraction``.
        baseline (float or Tensor, optional): replacement values broadcast to the inputs (one
            per feature, or per element) instead of the blur; required for features.

    ``maps`` and ``batch_size``, the names before this release, still work and warn.

    Returns:
        ReductionCurve: ``score``, ``curve`` ``(T,)``, ``per_image`` ``(N, T)``, ``reference``.

    Examples::

        >>> r1 = uncertainty_reduction_curve(uf, x, maps, fraction=0.01)
        >>> r5 = uncertainty_reduction_curve(uf, x, maps, fraction=0.05)
        >>> r1.score, r5.score
    """
    name = "uncertainty_reduction_curve"
    attributions = renamed(attributions, maps, "maps", "attributions", name, required=True)
    batch = renamed(max_examples_per_batch, batch_size, "batch_size", "max_examples_per_batch", name)
    inputs = check_images_or_features(inputs)
    ranks = pixel_ranks(check_feature_maps(attributions, inputs, "attributions"))
    fraction = check_fraction(fraction, percent)
    batch = check_optional_positive_int(batch, "max_examples_per_batch")
    blurred = _replacement_for(inputs, baseline, sigma)
    budget = pixel_budget(fraction, ranks[0].numel(), 1)
    reference = chunked_scores(forward_func, inputs, batch)
    values = replaced_scores(forward_func, inputs, blurred, ranks, range(1, budget + 1), batch)
    per_image = running_reduction(values, reference)
    curve = median_over_images(per_image)
    return ReductionCurve(float(curve[-1]), curve, per_image, reference)


def entropy_information_curve(
    forward_func: Forward,
    inputs: Tensor,
    attributions: Optional[Tensor] = None,
    steps: Optional[int] = None,
    sigma: float = math.inf,
    max_examples_per_batch: Optional[int] = None,
    baseline: Optional[Union[float, Tensor]] = None,
    normalization: str = "input",
    *,
    maps: Any = NOT_GIVEN,
    batch_size: Any = NOT_GIVEN,
) -> InformationCurve:
    r"""Perez et al.'s Entropy Information Curve and the Area over it (supplement Table 1).

    The EIC plots the uncertainty left as more and more pixels (in attribution order, ties in
    raster order) are replaced by those of a fully blurred copy, against the share of replaced
    pixels ``k / (H W)`` from 0 to 1. Per image the uncertainty is normalised by that of the
    original image and made monotone like the URC: ``r(k) = min(1, min_{i <= k} U(x_i) / U(x))``,
    i.e. ``1 -`` the running reduction clipped to ``[0, 1]`` (so ``r(0) = 1`` and a curve can
    only fall). The EIC is the median of ``r`` over images; the Area over the EIC is ``1 -`` its
    trapezoid area, in ``[0, 1]``, higher is better (Perez et al. report 0.999 on MNIST: the
    uncertainty vanishes after a few pixels).

    Choices the supplement leaves open, made here: the normalisation, running minimum and
    clipping above; the median (as in the URC); "fully blurred" = ``sigma = inf`` (every pixel
    the image's per-channel mean); ``steps=None`` evaluates every pixel count ``k = 0..HW``,
    an int evaluates ``steps + 1`` evenly spaced counts ``round(j HW / steps)`` (the running
    minimum is then over those counts only). Images with ``U(x) <= 0`` get ``r = 1``.

    ``normalization="replaced"`` is the Featurespace reference code's reading
    (uncertainty_library/metrics.py): ``r(k) = U(x_k) / U(x_HW)``, normalised by the uncertainty
    of the fully replaced image, with no running minimum and no clipping, so ``r`` may rise
    above 1 and the Area over the EIC may be negative; the median over images and ``1 -`` the
    trapezoid area follow (an image whose fully replaced copy has ``U <= 0`` gets ``r = 1``).
    With the reference's replacement pass ``sigma=1.5``. (The reference
    spaces its ``HW + 1`` points by ``1 / (HW + 1)`` instead of ``1 / HW``, which scales its area
    by ``HW / (HW + 1)``, 0.13% on 28x28 images; we keep the axis from 0 to 1.)

    Args:
        forward_func (callable): images ``(B, C, H, W)`` -> uncertainties ``(B,)``.
        inputs (Tensor): images ``(N, C, H, W)``.
        attributions (Tensor): attribution maps (see :func:`uncertainty_reduction_curve`;
            required).
        steps (int, optional): number of intervals of the fraction axis (``None``: ``H * W``,
            or ``F`` for features).
        sigma (float): blur of the replacement image (``inf`` = fully blurred).
        max_examples_per_batch (int, optional): images per forward call (``None``: 4096).
        baseline (float or Tensor, optional): replacement values instead of the blur, as in
            :func:`uncertainty_reduction_curve`; required for features ``(N, F)``.
        normalization (str): ``"input"`` (default: by ``U(x)``, running minimum, clipped) or
            ``"replaced"`` (the reference code's: by ``U`` of the fully replaced input).

    ``maps`` and ``batch_size``, the names before this release, still work and warn.

    Returns:
        InformationCurve: ``area_over``, ``curve``, ``fractions``, ``per_image``, ``reference``.

    Examples::

        >>> r = entropy_information_curve(uf, x, maps, steps=100)
        >>> r.area_over
    """
    name = "entropy_information_curve"
    attributions = renamed(attributions, maps, "maps", "attributions", name, required=True)
    batch = renamed(max_examples_per_batch, batch_size, "batch_size", "max_examples_per_batch", name)
    check_choice(normalization, "normalization", SUPPORTED_EIC_NORMALIZATIONS)
    inputs = check_images_or_features(inputs)
    ranks = pixel_ranks(check_feature_maps(attributions, inputs, "attributions"))
    batch = check_optional_positive_int(batch, "max_examples_per_batch")
    pixels = ranks[0].numel()
    steps = pixels if steps is None else check_positive_int(steps, "steps")
    counts = torch.tensor(evenly_spaced_counts(pixels, steps), device=inputs.device)
    blurred = _replacement_for(inputs, baseline, sigma)
    reference = chunked_scores(forward_func, inputs, batch)
    values = replaced_scores(forward_func, inputs, blurred, ranks, counts, batch)
    if normalization == "replaced":
        replaced = values[-1:]
        safe = torch.where(replaced > 0, replaced, torch.ones_like(replaced))
        remaining = torch.where(replaced > 0, values / safe, torch.ones_like(values)).t()
    else:
        remaining = (1 - torch.cummax(reduction(values, reference).t(), dim=1).values).clamp(0, 1)
    curve = median_over_images(remaining)
    fractions = counts.to(curve.dtype) / pixels
    area = float(torch.trapezoid(curve, fractions.to(curve.device)))
    return InformationCurve(1 - area, curve, fractions, remaining, reference)
