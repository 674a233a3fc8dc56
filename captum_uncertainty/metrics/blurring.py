r"""Wang et al.'s blurring test (Sec. 5.2.1, Eq. 13, App. B.2.1): the uncertainty left as the
top-attributed pixels are blurred, with a per-image sigma search.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, ClassVar, NamedTuple, Optional

import torch
from torch import Tensor

from captum_uncertainty._typing import Forward
from captum_uncertainty._validation import check_choice, check_int, check_optional_positive_int
from captum_uncertainty.blur import gaussian_blur
from captum_uncertainty.metrics._utils.checks import (
    NOT_GIVEN,
    check_fraction,
    check_images,
    check_maps,
    check_sigma_search,
    check_sigmas,
    renamed,
)
from captum_uncertainty.metrics._utils.curves import (
    area_over_curve_remaining,
    median_over_images,
    reduction,
    running_reduction,
)
from captum_uncertainty.metrics._utils.replacement import chunked_scores, pixel_budget, pixel_ranks, replaced_scores

__all__ = [
    "BlurringResult",
    "NO_BLUR_WARNING_SHARE",
    "SUPPORTED_SIGMA_SELECTIONS",
    "UninformativeBlurWarning",
    "blurring_test",
    "full_blur_sigma",
    "pixel_budget",
]

#: The readings of the sigma search of :func:`blurring_test`.
SUPPORTED_SIGMA_SELECTIONS = ("image", "final", "step", "full")

#: Share of images without a lowering blur (sigma = 0) from which :func:`blurring_test` warns:
#: a quarter of the images then score 0 whatever the map, and the medians over images move
#: towards 0 for every map alike.
NO_BLUR_WARNING_SHARE = 0.25


class UninformativeBlurWarning(UserWarning):
    """Many images of a blurring test have no blur that lowers their uncertainty (sigma = 0)."""


class _BlurringFields(NamedTuple):
    murr: float
    auc_urr: float
    curve: Tensor
    per_image: Tensor
    sigma: Tensor
    reference: Tensor


class BlurringResult(_BlurringFields):
    """Result of :func:`blurring_test`; ``score`` is ``murr``, higher is better
    (``higher_is_better = True``).

    Attributes:
        murr (float): maximum uncertainty reduction rate ``max_t URR(t)`` (higher is better).
        auc_urr (float): area under the normalised remaining-uncertainty curve (lower is better).
        curve (Tensor): ``(T,)`` median URR(t) over images, ``t = 1..T``.
        per_image (Tensor): ``(N, T)`` running-maximum reductions of each image.
        sigma (Tensor): ``(N,)`` blur chosen for each image (for ``sigma_selection="step"``: the
            blur of the step where the image reached its largest reduction).
        reference (Tensor): ``(N,)`` uncertainties ``U(x)`` of the unblurred images.
        no_blur (int): how many images got ``sigma = 0``: no blur lowers their uncertainty, so
            their reduction is 0 whatever the map.
    """

    __slots__ = ()
    higher_is_better: ClassVar[bool] = True

    @property
    def no_blur(self) -> int:
        """The number of images whose chosen blur is ``sigma = 0`` (reduction 0 by construction)."""
        return int((self.sigma == 0).sum())

    @property
    def score(self) -> float:
        """The headline score, ``murr``."""
        return self.murr

    def truncated(self, steps: int) -> "BlurringResult":
        """This result with the budget cut to its first ``steps`` pixels (``pixel_budget(fraction,
        H, W)`` of a smaller fraction): what :func:`blurring_test` returns with that budget when
        each image's sigma does not depend on the budget (``sigma_selection="full"`` or a given
        ``sigma``; the other readings choose sigma with the budget, so theirs differ). Scores two
        budgets of one map for the forward passes of the larger.

        Examples::

            >>> five = blurring_test(uf, x, maps, fraction=0.05, sigma=full_blur_sigma(uf, x))
            >>> two = five.truncated(pixel_budget(0.02, 28, 28))
        """
        check_int(steps, "steps", minimum=1, maximum=self.per_image.shape[1])
        return _result(self.per_image[:, :steps], self.sigma, self.reference)


def blurring_test(
    forward_func: Forward,
    inputs: Tensor,
    attributions: Optional[Tensor] = None,
    fraction: float = 0.05,
    sigma_step: float = 0.2,
    max_sigma: float = 20.0,
    max_examples_per_batch: Optional[int] = None,
    sigma_selection: str = "full",
    percent: Optional[float] = None,
    sigma: Optional[Tensor] = None,
    *,
    maps: Any = NOT_GIVEN,
    batch_size: Any = NOT_GIVEN,
) -> BlurringResult:
    r"""Wang et al.'s blurring test (Sec. 5.2.1, Eq. 13; settings from App. B.2.1).

    Pixels are ranked by the map, largest first (ties: raster order). ``x_t`` is ``x`` with its
    top ``t`` pixels, all channels, replaced by the same pixels of ``gaussian_blur(x, sigma)``.
    For each image the reduction is the running maximum
    ``URR_x(t) = max_{i <= t} 1 - U(x_i) / U(x)``; the curve is its median over images
    (Wang report medians "considering that some blurred images could be out-of-distribution";
    Eq. 13 writes a mean). ``MURR = max_t URR(t)``, and ``AUC-URR`` is the area under the
    decreasing curve ``1 - URR(t)`` over ``t = 0..T`` with ``URR(0) = 0`` and ``t`` normalised
    to ``[0, 1]`` (trapezoid rule), so a map that removes nothing scores 1 and one that removes
    all uncertainty with its first pixel scores ``1 / (2T)``.

    Choices the paper leaves open, made here:

    - ``T = round(fraction * H * W)`` (at least 1); ``fraction`` is a share of the pixels
      (Wang use 2% and 5%).
    - The sigma search (App. B.2.1: "an individual search for sigma for each image, ensuring
      that the blurred image has the minimum uncertainty", over ``0, 0.2, ..., 20``) picks one
      sigma per image. With ``sigma_selection="full"`` (default) it is the sigma minimising
      ``U`` of the *fully* blurred image ``gaussian_blur(x, sigma)``, which does not depend on
      the map: every map is judged with the same perturbation (``S*N + T*N`` forwards for S
      sigmas). The other readings put the map under judgement into the sigma search, so two
      maps of one image can be judged with different blurs, and measured they flatter some maps
      (:ref:`guide-which-pixels`): ``"final"`` (the paper's reading, ``S*N + T*N`` forwards)
      picks the sigma minimising ``U(x_T)``, "the blurred image" being the one with all T
      budgeted pixels blurred; ``"image"`` picks the sigma whose curve reaches the lowest
      uncertainty ``min_t U(x_t)`` (equivalently the largest per-image MURR); ``"step"``
      searches sigma anew for every ``t`` (the most generous reading). Both cost ``S*T*N``
      forwards. Ties go to the smaller sigma. Because ``sigma = 0`` (no blur) is in the
      search, ``URR(T) >= 0`` in every mode, and every ``URR(t) >= 0`` for ``"image"`` and
      ``"step"``.
    - An image for which no blur lowers the uncertainty gets ``sigma = 0`` and reduction 0 for
      every map; the result counts them (``no_blur``), and an
      :class:`UninformativeBlurWarning` says when they are at least ``NO_BLUR_WARNING_SHARE``
      (a quarter) of the images, when the test separates maps poorly.
    - Maps of the inputs' shape are summed over channels; a pixel is blurred in all channels.
    - An image with ``U(x) <= 0`` counts as reduction 0.

    Args:
        forward_func (callable): maps images ``(B, C, H, W)`` to uncertainties ``(B,)``, e.g. an
            :class:`~captum_uncertainty.forward.UncertaintyForward` with ``measure="epistemic"``
            (the measure Wang evaluate).
        inputs (Tensor): images ``(N, C, H, W)``.
        attributions (Tensor): attribution maps ``(N, 1, H, W)``, ``(N, H, W)`` or of the inputs'
            shape (required).
        fraction (float): pixel budget, a share of ``H * W`` in ``(0, 1]``.
        sigma_step (float): step of the sigma grid (> 0).
        max_sigma (float): largest sigma searched (>= 0); the grid is ``0, step, ..., max``.
        max_examples_per_batch (int, optional): images per forward call (``None``: 4096); the
            perturbed images of all steps, sigmas and images are built lazily, one call's worth at
            a time.
        sigma_selection (str): ``"full"`` (default), ``"final"``, ``"image"`` or ``"step"`` (see
            above).
        percent (float, optional): the budget in percent, ``(0, 100]``; overrides ``fraction``.
        sigma (Tensor, optional): ``(N,)`` blur of each image, used instead of a search. Pass
            ``full_blur_sigma(forward_func, inputs, ...)`` to score many maps of the same images
            in the ``"full"`` reading with one search (the results equal
            ``sigma_selection="full"``); allowed with ``"final"`` and ``"full"`` only.

    ``maps`` and ``batch_size``, the names before this release, still work and warn.

    Returns:
        BlurringResult: ``murr``, ``auc_urr``, ``curve`` ``(T,)``, ``per_image`` ``(N, T)``,
        ``sigma`` ``(N,)`` and ``reference`` ``(N,)``.

    Examples::

        >>> uf = UncertaintyForward(models, measure="epistemic")
        >>> r = blurring_test(uf, x, maps, fraction=0.02, max_examples_per_batch=4096)
        >>> r.murr, r.auc_urr
    """
    attributions = renamed(attributions, maps, "maps", "attributions", "blurring_test", required=True)
    batch = renamed(max_examples_per_batch, batch_size, "batch_size", "max_examples_per_batch", "blurring_test")
    if isinstance(inputs, Tensor) and inputs.dim() == 2:
        raise ValueError(
            "blurring_test blurs images (N, C, H, W); for features (N, F) use insertion_deletion or "
            "uncertainty_reduction_curve / entropy_information_curve with baseline= per-feature values "
            "(e.g. the training mean)"
        )
    inputs = check_images(inputs)
    ranks = pixel_ranks(check_maps(attributions, inputs, "attributions"))
    fraction = check_fraction(fraction, percent)
    batch = check_optional_positive_int(batch, "max_examples_per_batch")
    check_sigma_search(sigma_step, max_sigma)
    check_choice(sigma_selection, "sigma_selection", SUPPORTED_SIGMA_SELECTIONS)
    n, _, h, w = inputs.shape
    budget = pixel_budget(fraction, h, w)
    reference = chunked_scores(forward_func, inputs, batch)
    steps = torch.arange(1, budget + 1, device=inputs.device)
    if sigma is not None:
        if sigma_selection not in ("final", "full"):
            raise ValueError(
                f"sigma= replaces the search: it goes with sigma_selection 'final' or 'full', not {sigma_selection!r}"
            )
        return _curve_at(forward_func, inputs, ranks, steps, check_sigmas(sigma, inputs), reference, batch)
    if sigma_selection == "full":
        chosen = full_blur_sigma(forward_func, inputs, sigma_step, max_sigma, batch)
        return _curve_at(forward_func, inputs, ranks, steps, chosen, reference, batch)
    sigmas = _sigma_grid(sigma_step, max_sigma, inputs)

    def blurred_for(sigma_of_k: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        return lambda k, i: gaussian_blur(inputs[i], sigma_of_k[k])

    if sigma_selection == "final":
        final = replaced_scores(forward_func, inputs, blurred_for(sigmas), ranks, [budget] * len(sigmas), batch)
        chosen = sigmas[final.argmin(0)]  # (N,), first (smallest) sigma on ties
        return _curve_at(forward_func, inputs, ranks, steps, chosen, reference, batch)

    grid_sigma = sigmas.repeat_interleave(budget)  # k = s * T + (t - 1)
    grid = replaced_scores(forward_func, inputs, blurred_for(grid_sigma), ranks, steps.repeat(len(sigmas)), batch)
    grid = grid.view(len(sigmas), budget, n)
    if sigma_selection == "image":
        runs = torch.stack([running_reduction(g, reference) for g in grid])  # (S, N, T)
        best = runs[:, :, -1].argmax(0)
        per_image = runs[best, torch.arange(n, device=inputs.device)]
        return _result(per_image, sigmas[best], reference)
    reductions = reduction(grid, reference)  # (S, T, N)
    best_per_step = reductions.max(0)  # over sigma, per t and image
    per_image = torch.cummax(best_per_step.values.t(), dim=1).values
    at_max = per_image[:, -1:].eq(best_per_step.values.t()).to(torch.long).argmax(1)
    chosen = sigmas[best_per_step.indices.t()[torch.arange(n, device=inputs.device), at_max]]
    return _result(per_image, chosen, reference)


def _sigma_grid(sigma_step: float, max_sigma: float, like: Tensor) -> Tensor:
    """``0, step, ..., max`` on ``like``'s device and dtype."""
    count = int(math.floor(max_sigma / sigma_step + 1e-9)) + 1
    return torch.arange(count, dtype=like.dtype, device=like.device) * sigma_step


@torch.no_grad()
def full_blur_sigma(
    forward_func: Forward,
    inputs: Tensor,
    sigma_step: float = 0.2,
    max_sigma: float = 20.0,
    max_examples_per_batch: Optional[int] = None,
    *,
    batch_size: Any = NOT_GIVEN,
) -> Tensor:
    """The blur of the ``"full"`` reading of :func:`blurring_test`: per image, the sigma of the
    grid ``0, step, ..., max`` minimising ``U(gaussian_blur(x, sigma))`` (ties: the smaller
    sigma). It does not depend on any map, so one call serves every map of these images.

    Args:
        forward_func (callable): images ``(B, C, H, W)`` -> uncertainties ``(B,)``.
        inputs (Tensor): images ``(N, C, H, W)``.
        sigma_step (float): step of the sigma grid (> 0).
        max_sigma (float): largest sigma searched (>= 0).
        max_examples_per_batch (int, optional): images per forward call (``None``: 4096).

    ``batch_size``, the name before this release, still works and warns.

    Returns:
        Tensor: ``(N,)`` sigmas.

    Examples::

        >>> sigma = full_blur_sigma(uf, x)
        >>> results = {name: blurring_test(uf, x, maps, sigma=sigma) for name, maps in all_maps.items()}
    """
    batch = renamed(max_examples_per_batch, batch_size, "batch_size", "max_examples_per_batch", "full_blur_sigma")
    inputs = check_images(inputs)
    batch = check_optional_positive_int(batch, "max_examples_per_batch")
    check_sigma_search(sigma_step, max_sigma)
    sigmas = _sigma_grid(sigma_step, max_sigma, inputs)
    everything = torch.zeros((inputs.shape[0], 1) + tuple(inputs.shape[2:]), dtype=torch.long, device=inputs.device)
    blurred = replaced_scores(
        forward_func,
        inputs,
        lambda k, i: gaussian_blur(inputs[i], sigmas[k]),
        everything,
        [1] * len(sigmas),
        batch,
    )
    return sigmas[blurred.argmin(0)]


def _curve_at(
    forward_func: Forward,
    inputs: Tensor,
    ranks: Tensor,
    steps: Tensor,
    sigma: Tensor,
    reference: Tensor,
    batch_size: Optional[int],
) -> BlurringResult:
    """The blurring curve with each image blurred by its own ``sigma``."""
    per_sigma = replaced_scores(
        forward_func, inputs, lambda k, i: gaussian_blur(inputs[i], sigma[i]), ranks, steps, batch_size
    )
    return _result(running_reduction(per_sigma, reference), sigma, reference)


def _result(per_image: Tensor, sigma: Tensor, reference: Tensor) -> BlurringResult:
    curve = median_over_images(per_image)
    result = BlurringResult(float(curve.max()), area_over_curve_remaining(curve), curve, per_image, sigma, reference)
    if result.no_blur >= NO_BLUR_WARNING_SHARE * len(sigma):
        warnings.warn(
            f"{result.no_blur} of {len(sigma)} images have no blur that lowers their uncertainty (sigma = 0): their "
            "reduction is 0 for every map, so the blurring test separates maps poorly here; report the count "
            "(result.no_blur), or compare maps with uncertainty_reduction_curve",
            UninformativeBlurWarning,
            stacklevel=3,
        )
    return result
