r"""Pixel insertion and deletion curves (Petsiuk et al., 2018) as modified in arXiv 2403.17224: the
pixel order comes from a summary map of an explanation distribution (its mean, or its standard
deviation), not from one explanation.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, Optional, Union

import torch
from torch import Tensor

from captum_uncertainty._typing import Forward
from captum_uncertainty._validation import check_choice, check_optional_positive_int, check_positive_int
from captum_uncertainty.blur import gaussian_blur
from captum_uncertainty.likelihoods import Likelihood
from captum_uncertainty.metrics._utils.checks import (
    NOT_GIVEN,
    check_feature_maps,
    check_images_or_features,
    check_replacement,
    renamed,
)
from captum_uncertainty.metrics._utils.curves import evenly_spaced_counts
from captum_uncertainty.metrics._utils.replacement import chunked_scores, pixel_ranks, replaced_scores

__all__ = [
    "DeletionResult",
    "InsertionDeletionResult",
    "InsertionResult",
    "SUPPORTED_MODES",
    "class_probabilities",
    "insertion_deletion",
]

#: The modes of :func:`insertion_deletion`.
SUPPORTED_MODES = ("deletion", "insertion")


class InsertionDeletionResult(NamedTuple):
    """Result of :func:`insertion_deletion`; ``score`` is ``auc``. Its direction depends on the
    mode, so the function returns one of the two subclasses: :class:`DeletionResult` (lower is
    better) or :class:`InsertionResult` (higher is better), each with its ``higher_is_better``.

    Attributes:
        auc (float): mean over images of the per-image AUC (= the AUC of ``curve``).
        curve (Tensor): ``(K,)`` mean class score over images at ``fractions``.
        fractions (Tensor): ``(K,)`` shares of deleted / inserted pixels, 0 to 1.
        per_image (Tensor): ``(N, K)`` class scores.
        per_image_auc (Tensor): ``(N,)`` trapezoid AUC of each image's curve.
        target (Tensor): ``(N,)`` classes whose score was tracked.
    """

    auc: float
    curve: Tensor
    fractions: Tensor
    per_image: Tensor
    per_image_auc: Tensor
    target: Tensor

    @property
    def score(self) -> float:
        """The headline score, ``auc``."""
        return self.auc


class DeletionResult(InsertionDeletionResult):
    """:class:`InsertionDeletionResult` of ``mode="deletion"``: lower is better
    (``higher_is_better = False``)."""

    __slots__ = ()
    higher_is_better: ClassVar[bool] = False


class InsertionResult(InsertionDeletionResult):
    """:class:`InsertionDeletionResult` of ``mode="insertion"``: higher is better
    (``higher_is_better = True``)."""

    __slots__ = ()
    higher_is_better: ClassVar[bool] = True


def class_probabilities(forward_func: Forward, probabilities: bool = False) -> Forward:
    """Images -> class probabilities ``(B, classes)``.

    An object with a ``predictive`` method (an
    :class:`~captum_uncertainty.forward.UncertaintyForward`: ``predictive(x)`` is ``(S, B,
    classes)`` member probabilities) gives the predictive (posterior mean) probabilities;
    any other callable is a classifier whose logits go through a softmax, or whose outputs are
    used as they are when ``probabilities=True``. A regressor's forward
    (a :class:`~captum_uncertainty.Gaussian` likelihood) gives its predictive mean as the one
    column ``(B, 1)``.
    """
    likelihood, predictive_mean = (
        getattr(forward_func, "likelihood", None),
        getattr(forward_func, "predictive_mean", None),
    )
    if isinstance(likelihood, Likelihood) and not likelihood.is_classifier and callable(predictive_mean):
        return lambda images: predictive_mean(images).unsqueeze(1)
    predictive = getattr(forward_func, "predictive", None)
    if callable(predictive):
        return lambda images: predictive(images).mean(0)
    if probabilities:
        return forward_func
    return lambda images: torch.softmax(forward_func(images), dim=-1)


def _baseline_images(baseline: Union[float, Tensor, str], inputs: Tensor, blur_sigma: float) -> Tensor:
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(f"baseline must be a number, a tensor or 'blur', got {baseline!r}")
        if inputs.dim() != 4:
            raise ValueError("baseline='blur' needs images (N, C, H, W); for features pass per-feature values")
        return gaussian_blur(inputs, blur_sigma)
    return check_replacement(baseline, inputs)


def _targets(target: Any, probs: Tensor) -> Tensor:
    n, classes = probs.shape
    if target is None:
        return probs.argmax(1)
    t = torch.as_tensor(target, device=probs.device)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dim() > 1 or (t.dim() == 1 and t.numel() != n):
        raise ValueError(f"target must be None, an int or {n} ints, got {target!r}")
    t = t.reshape(-1).expand(n).long()
    if bool(((t < 0) | (t >= classes)).any()):
        raise ValueError(f"target must be classes in [0, {classes}), got {target!r}")
    return t


def insertion_deletion(
    forward_func: Forward,
    inputs: Tensor,
    attributions: Optional[Tensor] = None,
    target: Any = None,
    mode: str = "deletion",
    baseline: Union[float, Tensor, str] = 0.0,
    steps: Optional[int] = 50,
    max_examples_per_batch: Optional[int] = None,
    blur_sigma: float = 5.0,
    probabilities: bool = False,
    *,
    maps: Any = NOT_GIVEN,
    batch_size: Any = NOT_GIVEN,
) -> InsertionDeletionResult:
    r"""Deletion or insertion AUC of the class score, pixels taken in the order of a map.

    Pixels are ranked by the map, largest first (ties: raster order; maps of the inputs' shape
    are summed over channels; a pixel is all its channels). *Deletion* starts from ``x`` and
    replaces the top ``k`` pixels by the baseline's; *insertion* starts from the baseline and
    puts back the top ``k`` pixels of ``x``. ``k`` runs over ``steps + 1`` evenly spaced counts
    ``round(j H W / steps)``, ``j = 0..steps`` (``steps=None``: every count ``0..HW``). The
    score is the probability of ``target``; the AUC is the trapezoid area of the score against
    the share of pixels ``k / (H W)`` in ``[0, 1]``, averaged over images (Petsiuk et al.).
    A good map has a *low* deletion AUC and a *high* insertion AUC. Following arXiv 2403.17224,
    the map may be any summary of an explanation distribution (mean or standard deviation).

    Choices left open by the papers, made here: the score is the softmax probability of the
    classifier's logits, or for an ``UncertaintyForward`` (any object with a ``predictive``
    method) its predictive mean probability; ``target=None`` tracks the class predicted for
    the unmodified ``x``; the aggregate over images is the mean; ``baseline="blur"`` is
    ``gaussian_blur(x, blur_sigma)`` (Petsiuk et al. blur for insertion). For a regressor's
    UncertaintyForward (a :class:`~captum_uncertainty.Gaussian` likelihood) the score is its
    predictive mean (one column: ``target`` is ``None`` or 0), the quantity an explanation of
    the members' means explains.

    Args:
        forward_func (callable): classifier returning logits ``(B, classes)`` (or probabilities
            with ``probabilities=True``), or an UncertaintyForward.
        inputs (Tensor): images ``(N, C, H, W)``, or features ``(N, F)`` (a feature plays a
            pixel's part; the baseline is then per-feature values, e.g. the training mean).
        attributions (Tensor): maps ``(N, 1, H, W)``, ``(N, H, W)`` or of the inputs' shape
            (required).
        target (int or Tensor, optional): class, or one class per image.
        mode (str): ``"deletion"`` or ``"insertion"``.
        baseline (float, Tensor or str): the "removed" image: a number, a tensor broadcastable
            to the inputs, or ``"blur"``.
        steps (int, optional): number of intervals of the pixel axis.
        max_examples_per_batch (int, optional): images per forward call (``None``: 4096).
        blur_sigma (float): sigma of ``baseline="blur"``.
        probabilities (bool): the classifier already returns probabilities.

    ``maps`` and ``batch_size``, the names before this release, still work and warn.

    Returns:
        InsertionDeletionResult: a :class:`DeletionResult` (lower is better) or an
        :class:`InsertionResult` (higher is better): ``auc``, ``curve``, ``fractions``,
        ``per_image``, ``per_image_auc``, ``target``.

    Examples::

        >>> deletion = insertion_deletion(model, x, mean_map, mode="deletion")
        >>> insertion = insertion_deletion(model, x, mean_map, mode="insertion", baseline="blur")
        >>> deletion.auc, insertion.auc
    """
    attributions = renamed(attributions, maps, "maps", "attributions", "insertion_deletion", required=True)
    batch = renamed(max_examples_per_batch, batch_size, "batch_size", "max_examples_per_batch", "insertion_deletion")
    inputs = check_images_or_features(inputs)
    ranks = pixel_ranks(check_feature_maps(attributions, inputs, "attributions"))
    batch = check_optional_positive_int(batch, "max_examples_per_batch")
    check_choice(mode, "mode", SUPPORTED_MODES)
    n = inputs.shape[0]
    pixels = ranks[0].numel()
    steps = pixels if steps is None else check_positive_int(steps, "steps")
    reference = _baseline_images(baseline, inputs, blur_sigma)
    probs = class_probabilities(forward_func, probabilities)
    target_t = _targets(target, chunked_scores(probs, inputs, batch, scalar=False))
    counts = evenly_spaced_counts(pixels, steps)
    start, end = (inputs, reference) if mode == "deletion" else (reference, inputs)
    values = replaced_scores(probs, start, end, ranks, counts, batch, scalar=False)  # (K, N, classes)
    per_image = values.gather(2, target_t.view(1, n, 1).expand(len(counts), n, 1))[..., 0].t()
    fractions = torch.tensor(counts, dtype=per_image.dtype, device=per_image.device) / pixels
    per_image_auc = torch.trapezoid(per_image, fractions, dim=1)
    result = DeletionResult if mode == "deletion" else InsertionResult
    return result(float(per_image_auc.mean()), per_image.mean(0), fractions, per_image, per_image_auc, target_t)
