r"""Ground-truth mask metrics: how well attribution maps agree with a known cause of the
uncertainty, given as a boolean mask over the input elements.

No forward is needed: each metric takes the maps and the masks only. Maps are ``(N, ...)``
(images ``(N, C, H, W)``, features ``(N, F)``, anything else) and every element of an input
counts as one item; masks are ``torch.bool`` of the same shape, or broadcastable to it with the
same ``N`` (an ``(N, 1, H, W)`` mask over ``(N, C, H, W)`` maps marks every channel of its
pixels). Numpy arrays are accepted for both. Everything is computed in float64 on the maps'
device, vectorised over the inputs.

- :func:`relevance_mass`, :func:`relevance_rank_accuracy`: Arras et al. (2022), "CLEVR-XAI".
- :func:`pointing_game`: Zhang et al. (2018), "Top-down neural attention by excitation backprop".
- :func:`mask_auroc`: the ROC AUC of the map as a detector of the mask (Fawcett, 2006).
- :func:`conveyance`: Schiller et al.'s conveyance test (arXiv 2603.24524).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from captum_uncertainty._validation import check_finite_tensor, check_tensor

__all__ = [
    "ConveyanceResult",
    "MaskResult",
    "conveyance",
    "mask_auroc",
    "pointing_game",
    "relevance_mass",
    "relevance_rank_accuracy",
]

TensorLike = Union[Tensor, np.ndarray]


class _MaskFields(NamedTuple):
    per_input: Tensor


class MaskResult(_MaskFields):
    """Result of the mask metrics (:func:`relevance_mass`, :func:`relevance_rank_accuracy`,
    :func:`pointing_game`, :func:`mask_auroc`); ``score`` is the mean over the inputs, higher
    is better (``higher_is_better = True``).

    Attributes:
        per_input (Tensor): ``(N,)`` the metric of each input (float64).
    """

    __slots__ = ()
    higher_is_better: ClassVar[bool] = True

    @property
    def score(self) -> float:
        """The headline score, the mean of ``per_input``."""
        return float(self.per_input.mean())


class _ConveyanceFields(NamedTuple):
    per_input: Tensor


class ConveyanceResult(_ConveyanceFields):
    """Result of :func:`conveyance`; ``score`` is the mean correlation over the inputs, higher
    is better (``higher_is_better = True``).

    Attributes:
        per_input (Tensor): ``(N,)`` Spearman correlations in ``[-1, 1]`` between the strength
            and the positive mass inside the mask (float64).
    """

    __slots__ = ()
    higher_is_better: ClassVar[bool] = True

    @property
    def score(self) -> float:
        """The headline score, the mean of ``per_input``."""
        return float(self.per_input.mean())


def _as_tensor(value: Any, name: str) -> Tensor:
    """A tensor from a tensor or a numpy array (``TypeError`` otherwise)."""
    if isinstance(value, np.ndarray):
        value = torch.as_tensor(value)
    return check_tensor(value, name, "(N, ...)")


def _check_attributions(value: Any, name: str = "attributions") -> Tensor:
    """Finite real maps ``(N, ...)`` with ``N >= 1`` and at least one element per input, as float64."""
    tensor = _as_tensor(value, name)
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must be a real-valued tensor, got dtype {tensor.dtype}")
    if tensor.dim() == 0 or tensor.shape[0] == 0 or tensor[0].numel() == 0:
        raise ValueError(
            f"{name} must have shape (N, ...) with N >= 1 and at least one element per input, "
            f"got shape {tuple(tensor.shape)}"
        )
    return check_finite_tensor(tensor.detach().double(), name, "(N, ...)")


def _check_masks(value: Any, shape: Tuple[int, ...], device: torch.device) -> Tensor:
    """``masks`` as a boolean ``(N, n_elements)`` tensor on ``device``, expanded to ``shape``."""
    masks = _as_tensor(value, "masks")
    if masks.dtype != torch.bool:
        raise TypeError(f"masks must be a boolean tensor (torch.bool), got dtype {masks.dtype}")
    mask_shape = tuple(masks.shape)
    if (
        len(mask_shape) != len(shape)
        or mask_shape[0] != shape[0]
        or any(m not in (1, s) for m, s in zip(mask_shape[1:], shape[1:]))
    ):
        raise ValueError(
            f"masks must have the shape of the attributions {shape} or be broadcastable to it with the same N, "
            f"got shape {mask_shape}"
        )
    return masks.to(device).expand(shape).reshape(shape[0], -1)


def _flat_inputs(attributions: Any, masks: Any) -> Tuple[Tensor, Tensor]:
    """Checked maps ``(N, n_elements)`` (float64) and masks ``(N, n_elements)`` (bool)."""
    maps = _check_attributions(attributions)
    flat_masks = _check_masks(masks, tuple(maps.shape), maps.device)
    return maps.reshape(maps.shape[0], -1), flat_masks


def _require_inside(counts: Tensor, total: int, need_outside: bool, metric: str) -> None:
    """Refuse inputs whose mask is all False (or all True when ``need_outside``)."""
    bad = counts == 0
    if need_outside:
        bad = bad | (counts == total)
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        count = int(counts[index])
        what = "all False" if count == 0 else "all True"
        raise ValueError(f"masks: the mask of input {index} is {what}, where {metric} is undefined")


def _average_ranks(values: Tensor) -> Tensor:
    """1-based ranks along the last dimension, ties sharing their average rank (float64)."""
    ordered = values.sort(dim=-1).values.contiguous()
    below = torch.searchsorted(ordered, values.contiguous(), right=False)
    up_to = torch.searchsorted(ordered, values.contiguous(), right=True)
    return (below + up_to + 1).double() / 2


def relevance_mass(attributions: TensorLike, masks: TensorLike) -> MaskResult:
    r"""Relevance mass accuracy (Arras et al., 2022): the share of the positive attribution
    that falls inside the mask.

    Per input, ``sum(clamp(a, min=0)[mask]) / sum(clamp(a, min=0))`` over all its elements
    (every channel of a pixel counts). An input with no positive attribution (all ``a <= 0``)
    gets 0.0, as does an input with an all-False mask.

    Relation to Quantus: ``quantus.RelevanceMassAccuracy(abs=False, normalise=False)`` computes
    ``sum(a[mask]) / sum(a)`` without the clamp; on non-negative maps the two are equal.

    Args:
        attributions (Tensor or numpy.ndarray): maps ``(N, ...)``.
        masks (Tensor or numpy.ndarray): ``torch.bool`` masks of the maps' shape, or
            broadcastable to it with the same ``N``.

    Returns:
        MaskResult: ``per_input`` ``(N,)`` in ``[0, 1]``; ``score`` their mean.

    Examples::

        >>> maps = torch.tensor([[3.0, 1.0, -2.0, 0.0]])
        >>> mask = torch.tensor([[True, False, True, False]])
        >>> relevance_mass(maps, mask).per_input      # 3 / (3 + 1)
        tensor([0.7500], dtype=torch.float64)
    """
    maps, inside = _flat_inputs(attributions, masks)
    positive = maps.clamp(min=0)
    total = positive.sum(1)
    within = (positive * inside).sum(1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return MaskResult(torch.where(total > 0, within / safe, torch.zeros_like(total)))


def relevance_rank_accuracy(attributions: TensorLike, masks: TensorLike) -> MaskResult:
    r"""Relevance rank accuracy (Arras et al., 2022): the share of the ``K`` largest
    attribution elements that lie inside the mask, ``K`` the number of True mask elements.

    Per input, the elements are ranked by decreasing (signed) attribution with a stable sort:
    among equal values the element earlier in flattened (row-major) order ranks first, the
    same on every device. An all-True mask gives 1.0.

    Relation to Quantus: ``quantus.RelevanceRankAccuracy(abs=False, normalise=False)`` ranks
    with ``numpy.argsort(-a)`` (an unstable sort): the two are equal whenever no tie straddles
    the ``K``-th place.

    Args:
        attributions (Tensor or numpy.ndarray): maps ``(N, ...)``.
        masks (Tensor or numpy.ndarray): ``torch.bool`` masks of the maps' shape, or
            broadcastable to it with the same ``N``.

    Returns:
        MaskResult: ``per_input`` ``(N,)`` in ``[0, 1]``; ``score`` their mean.

    Raises:
        ValueError: for an input whose mask is all False (the metric is undefined).

    Examples::

        >>> maps = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
        >>> mask = torch.tensor([[True, False, False, True]])
        >>> relevance_rank_accuracy(maps, mask).per_input   # top 2 are 3.0 (in), 2.0 (out)
        tensor([0.5000], dtype=torch.float64)
    """
    maps, inside = _flat_inputs(attributions, masks)
    counts = inside.sum(1)
    _require_inside(counts, maps.shape[1], False, "relevance_rank_accuracy")
    order = torch.sort(maps, dim=1, descending=True, stable=True).indices
    positions = torch.arange(maps.shape[1], device=maps.device)
    top = positions.unsqueeze(0) < counts.unsqueeze(1)
    hits = (inside.gather(1, order) & top).sum(1)
    return MaskResult(hits.double() / counts.double())


def pointing_game(attributions: TensorLike, masks: TensorLike) -> MaskResult:
    r"""Pointing game (Zhang et al., 2018): 1.0 if the largest attribution element lies inside
    the mask, else 0.0.

    If several elements share the maximum, the input is a hit when any of them is inside the
    mask. No tolerance margin around the mask is added (dilate the mask for the original
    15-pixel tolerance). An all-False mask gives 0.0.

    Relation to Quantus: equal to ``quantus.PointingGame(weighted=False, abs=False,
    normalise=False)``, which also counts a tie at the maximum as a hit if any tied element is
    inside.

    Args:
        attributions (Tensor or numpy.ndarray): maps ``(N, ...)``.
        masks (Tensor or numpy.ndarray): ``torch.bool`` masks of the maps' shape, or
            broadcastable to it with the same ``N``.

    Returns:
        MaskResult: ``per_input`` ``(N,)`` of 0.0 / 1.0; ``score`` the hit rate.

    Examples::

        >>> maps = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.1]])
        >>> mask = torch.tensor([[False, True, False], [False, True, True]])
        >>> pointing_game(maps, mask).per_input
        tensor([1., 0.], dtype=torch.float64)
    """
    maps, inside = _flat_inputs(attributions, masks)
    at_max = maps == maps.max(dim=1, keepdim=True).values
    return MaskResult((at_max & inside).any(1).double())


def mask_auroc(attributions: TensorLike, masks: TensorLike) -> MaskResult:
    r"""Area under the ROC curve of the attribution values as a score for mask membership.

    Per input, the elements inside the mask are the positives and those outside the
    negatives; the AUROC is computed exactly as the Mann-Whitney statistic
    ``U / (n_pos * n_neg)`` with ``U = sum(ranks of the positives) - n_pos (n_pos + 1) / 2``,
    ties sharing their average rank (a tie between a positive and a negative counts one half).
    So 1.0 when every inside element outranks every outside one, 0.0 for the reverse, 0.5 for a
    constant map.

    Relation to Quantus: equal to ``quantus.AUC(abs=False, normalise=False)`` (scikit-learn's
    ``roc_curve`` and ``auc`` on the raw values with the mask as labels; the trapezoids over
    tied scores give the same half counts).

    Args:
        attributions (Tensor or numpy.ndarray): maps ``(N, ...)``.
        masks (Tensor or numpy.ndarray): ``torch.bool`` masks of the maps' shape, or
            broadcastable to it with the same ``N``.

    Returns:
        MaskResult: ``per_input`` ``(N,)`` in ``[0, 1]``; ``score`` their mean.

    Raises:
        ValueError: for an input whose mask is all False or all True (no positives or no
            negatives: the metric is undefined).

    Examples::

        >>> maps = torch.tensor([[0.9, 0.1, 0.5, 0.5]])
        >>> mask = torch.tensor([[True, False, True, False]])
        >>> mask_auroc(maps, mask).per_input    # pairs (in, out): 0.9 > both, 0.5 > 0.1, 0.5 = 0.5
        tensor([0.8750], dtype=torch.float64)
    """
    maps, inside = _flat_inputs(attributions, masks)
    n_pos = inside.sum(1)
    _require_inside(n_pos, maps.shape[1], True, "mask_auroc")
    ranks = _average_ranks(maps)
    pos = n_pos.double()
    neg = maps.shape[1] - pos
    u = (ranks * inside).sum(1) - pos * (pos + 1) / 2
    return MaskResult(u / (pos * neg))


def _stack_strength_maps(attributions: Any) -> Tensor:
    """The conveyance maps as one float64 tensor ``(L, N, ...)``."""
    if isinstance(attributions, (list, tuple)):
        if not attributions:
            raise ValueError("attributions must hold one map tensor per strength, got an empty sequence")
        maps = [_check_attributions(a, f"attributions[{i}]") for i, a in enumerate(attributions)]
        shapes = [tuple(m.shape) for m in maps]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"attributions must all have one shape, got shapes {shapes}")
        return torch.stack([m.to(maps[0].device) for m in maps])
    stacked = _as_tensor(attributions, "attributions")
    if stacked.dim() < 2:
        raise ValueError(
            "attributions must be a sequence of (N, ...) maps or a tensor (L, N, ...), "
            f"got shape {tuple(stacked.shape)}"
        )
    return _check_attributions(stacked)


def _check_strengths(strengths: Any, count: int, device: torch.device) -> Tensor:
    """``strengths`` as a finite float64 ``(L,)`` tensor with ``L == count >= 2``, not all equal."""
    if isinstance(strengths, (Tensor, np.ndarray)):
        values = torch.as_tensor(strengths)
    elif isinstance(strengths, Sequence) and not isinstance(strengths, str):
        try:
            values = torch.as_tensor([float(s) for s in strengths])
        except (TypeError, ValueError):
            raise TypeError(f"strengths must be a sequence of numbers, got {strengths!r}") from None
    else:
        raise TypeError(f"strengths must be a sequence or 1-D tensor of numbers, got {type(strengths).__name__}")
    if values.dim() != 1 or values.dtype == torch.bool or values.is_complex():
        raise ValueError(f"strengths must be a 1-D sequence of numbers, got shape {tuple(values.shape)}")
    values = check_finite_tensor(values.double(), "strengths", "(L,)")
    if values.numel() < 2:
        raise ValueError(f"strengths must hold at least 2 strengths, got {values.numel()}")
    if values.numel() != count:
        raise ValueError(f"strengths must hold one strength per attribution map ({count}), got {values.numel()}")
    if bool((values == values[0]).all()):
        raise ValueError("strengths must not all be equal: the rank correlation is undefined")
    return values.to(device)


def conveyance(
    attributions: Union[Sequence[TensorLike], TensorLike],
    masks: TensorLike,
    strengths: Union[Sequence[float], TensorLike],
) -> ConveyanceResult:
    r"""Conveyance test (Schiller et al., arXiv 2603.24524): does the map follow a known cause
    of the uncertainty as the cause is made stronger?

    The same inputs get their known cause (the mask region) pasted at ``L`` growing strengths
    and are explained once per strength. Per input, the result is the Spearman rank correlation
    (Pearson correlation of the ranks, ties sharing their average rank) between the strength
    and the map's positive mass inside the mask, ``sum(clamp(a, min=0)[mask])``. The absolute
    mass is used rather than its share of the map (:func:`relevance_mass`), because the share
    can stay constant while the whole map grows with the uncertainty. So 1.0 when the mass
    grows with the strength, -1.0 when it falls; an input whose mass is the same at every
    strength (e.g. an all-False mask) gets 0.0. The strengths need not be sorted.

    Args:
        attributions (sequence of Tensor, or Tensor): ``L`` maps ``(N, ...)``, one per
            strength, or one tensor ``(L, N, ...)``; numpy arrays are accepted.
        masks (Tensor or numpy.ndarray): one ``torch.bool`` mask for every strength, of the
            maps' shape ``(N, ...)`` or broadcastable to it with the same ``N``.
        strengths (sequence of float, or Tensor): the ``L >= 2`` strengths, not all equal.

    Returns:
        ConveyanceResult: ``per_input`` ``(N,)`` correlations in ``[-1, 1]``; ``score`` their
        mean.

    Examples::

        >>> strengths = [0.0, 0.5, 1.0]
        >>> maps = [method.attribute(paste(x, cause, s)) for s in strengths]
        >>> conveyance(maps, cause_masks, strengths).score
    """
    stacked = _stack_strength_maps(attributions)
    levels, n = stacked.shape[0], stacked.shape[1]
    values = _check_strengths(strengths, levels, stacked.device)
    inside = _check_masks(masks, tuple(stacked.shape[1:]), stacked.device)
    mass = (stacked.reshape(levels, n, -1).clamp(min=0) * inside).sum(2).t()  # (N, L)
    strength_ranks = _average_ranks(values)
    strength_ranks = strength_ranks - strength_ranks.mean()
    mass_ranks = _average_ranks(mass)
    mass_ranks = mass_ranks - mass_ranks.mean(1, keepdim=True)
    spread = mass_ranks.square().sum(1)
    covariance = (mass_ranks * strength_ranks).sum(1)
    denominator = (spread * strength_ranks.square().sum()).sqrt()
    safe = torch.where(spread > 0, denominator, torch.ones_like(denominator))
    correlation = torch.where(spread > 0, covariance / safe, torch.zeros_like(covariance))
    return ConveyanceResult(correlation.clamp(-1.0, 1.0))
