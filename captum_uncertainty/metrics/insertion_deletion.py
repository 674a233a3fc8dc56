"""Insertion and deletion curves (Petsiuk et al. 2018), as used by arXiv 2403.17224."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor

from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.metrics._core import check_inputs_and_maps, evaluate, pixel_order, top_masks

__all__ = ["InsertionDeletionResult", "insertion_deletion"]


class InsertionDeletionResult(NamedTuple):
    """``auc`` of the class-score ``curve`` (median over images) at ``fractions`` of the pixels."""

    auc: float
    curve: Tensor
    fractions: Tensor
    per_image: Tensor


def class_probabilities(forward_func: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Images -> class probabilities: the posterior mean for an UncertaintyForward, else the
    softmax of the classifier's logits."""
    if isinstance(forward_func, UncertaintyForward):
        return lambda images: forward_func.predictive(images).mean(0)
    return lambda images: torch.softmax(forward_func(images), dim=-1)


def insertion_deletion(
    forward_func: Callable[[Tensor], Tensor],
    inputs: Tensor,
    maps: Tensor,
    target: Any = None,
    mode: str = "deletion",
    baseline: Union[float, Tensor] = 0.0,
    steps: int = 50,
    batch_size: Optional[int] = 512,
) -> InsertionDeletionResult:
    r"""Deletion (insertion) AUC: the class probability as pixels are removed from (added to) the
    image in decreasing order of the map.

    Deletion starts from ``x`` and replaces the top pixels by ``baseline``; insertion starts from
    the baseline and puts back the top pixels of ``x``. The curve is sampled at ``steps + 1``
    evenly spaced fractions of the pixels (0..1) and its trapezoid area is the AUC (lower is
    better for deletion, higher for insertion). The score is the probability of ``target``
    (default: the class predicted for ``x``); for an
    :class:`~captum_uncertainty.UncertaintyForward` the posterior mean probability is used. Maps
    of any kind (a mean map, or a standard-deviation map from
    :class:`~captum_uncertainty.attr.ExplanationDistribution`) set the order.

    Args:
        forward_func (callable): a classifier returning logits ``(B, classes)``, or an
            UncertaintyForward.
        inputs (Tensor): images ``(N, C, H, W)``.
        maps (Tensor): maps ``(N, 1, H, W)``, ``(N, H, W)`` or of the inputs' shape.
        target (int or Tensor, optional): class per image.
        mode (str): ``"deletion"`` or ``"insertion"``.
        baseline (float or Tensor): value of removed pixels (a number or an inputs-shaped tensor).
        steps (int): number of steps (>= 1).
        batch_size (int, optional): images per forward call.

    Returns:
        InsertionDeletionResult: ``auc``, ``curve``, ``fractions``, ``per_image``.
    """
    pixel_maps = check_inputs_and_maps(inputs, maps)
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    inputs = inputs.detach()
    reference = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device).expand_as(inputs)
    probabilities = class_probabilities(forward_func)
    n, _, h, w = inputs.shape
    if target is None:
        target = evaluate(probabilities, inputs, batch_size).argmax(1)
    target = torch.as_tensor(target, device=inputs.device).reshape(-1).expand(n)
    fractions = torch.linspace(0, 1, steps + 1, dtype=inputs.dtype)
    masks = top_masks(pixel_order(pixel_maps), [int(round(float(f) * h * w)) for f in fractions], (h, w))
    start, end = (inputs, reference) if mode == "deletion" else (reference, inputs)
    images = torch.where(masks, end.unsqueeze(0), start.unsqueeze(0))
    scores = evaluate(probabilities, images, batch_size)  # (steps + 1, N, classes)
    per_image = scores.gather(2, target.view(1, n, 1).expand(len(fractions), n, 1)).squeeze(2).t()
    curve = per_image.median(0).values
    return InsertionDeletionResult(float(torch.trapezoid(curve, fractions)), curve, fractions, per_image)
