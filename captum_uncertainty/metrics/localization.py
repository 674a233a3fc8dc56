r"""Anomaly localisation (Wang et al., App. C, Table 4): plant a patch from a training image into a
test image, then check whether the attribution map points at it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_uncertainty._typing import Forward
from captum_uncertainty._validation import check_int, check_optional_positive_int, check_positive_int
from captum_uncertainty.metrics._utils.checks import NOT_GIVEN, check_images, renamed
from captum_uncertainty.metrics._utils.replacement import chunked_scores

__all__ = [
    "Anomalies",
    "LocalizationResult",
    "anomaly_localization",
    "box_iou",
    "default_patch_size",
    "make_anomalies",
]


class Anomalies(NamedTuple):
    """Result of :func:`make_anomalies`.

    Attributes:
        images (Tensor): ``(n, C, H, W)`` modified test images, largest uncertainty rise first.
        boxes (Tensor): ``(n, 4)`` long, the planted patches as ``(top, left, bottom, right)``
            with exclusive ``bottom`` / ``right``.
        rise (Tensor): ``(n,)`` uncertainty increase ``U(modified) - U(original)``.
        indices (Tensor): ``(n,)`` indices of the originals in ``x_test``.
        donors (Tensor): ``(n,)`` indices of the patch donors in ``x_train``.
    """

    images: Tensor
    boxes: Tensor
    rise: Tensor
    indices: Tensor
    donors: Tensor


class _LocalizationFields(NamedTuple):
    iou: float
    ada: float
    per_image_iou: Tensor
    predicted_boxes: Tensor


class LocalizationResult(_LocalizationFields):
    """Result of :func:`anomaly_localization`; ``score`` is ``iou``, higher is better
    (``higher_is_better = True``; so is ``ada``).

    Attributes:
        iou (float): mean IoU between predicted and true boxes (higher is better).
        ada (float): anomaly detection accuracy, the share of images with IoU > 0.5 (higher is
            better).
        per_image_iou (Tensor): ``(N,)`` IoUs (float64).
        predicted_boxes (Tensor): ``(N, 4)`` long ``(top, left, bottom, right)``, exclusive ends.
    """

    __slots__ = ()
    higher_is_better: ClassVar[bool] = True

    @property
    def score(self) -> float:
        """The headline score, ``iou``."""
        return self.iou


def default_patch_size(height: int, width: Optional[int] = None) -> int:
    """Wang et al.'s 10 x 10 patch on 32 x 32 images, scaled: ``round(10 * min(H, W) / 32)``
    (half up), at least 1 -- 9 on 28 x 28 MNIST, 3 on 8 x 8 digits."""
    side = height if width is None else min(height, width)
    return max(1, int(math.floor(10 * side / 32 + 0.5)))


def _check_patch(patch_size: Any, height: int, width: int) -> int:
    size = default_patch_size(height, width) if patch_size is None else patch_size
    return check_int(size, "patch_size", 1, min(height, width))


def _candidate_indices(candidates: Union[None, int, Tensor], available: int) -> Tensor:
    if candidates is None:
        return torch.arange(available, device="cpu")
    if isinstance(candidates, Tensor):
        index = candidates.reshape(-1).long().cpu()
        if index.numel() == 0 or bool(((index < 0) | (index >= available)).any()):
            raise ValueError(f"candidates must index x_test (0..{available - 1}) and be non-empty")
        return index
    return torch.arange(min(check_positive_int(candidates, "candidates"), available), device="cpu")


def _box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """Boolean masks ``(N, 1, H, W)`` of boxes ``(N, 4)`` (exclusive ends)."""
    rows = torch.arange(height, device=boxes.device).view(1, height, 1)
    cols = torch.arange(width, device=boxes.device).view(1, 1, width)
    b = boxes.view(-1, 4, 1, 1)
    inside = (rows >= b[:, 0]) & (rows < b[:, 2]) & (cols >= b[:, 1]) & (cols < b[:, 3])
    return inside.unsqueeze(1)


@torch.no_grad()
def make_anomalies(
    forward_func: Forward,
    x_test: Tensor,
    x_train: Tensor,
    n_images: int = 100,
    patch_size: Optional[int] = None,
    candidates: Union[None, int, Tensor] = None,
    seed: int = 0,
    max_examples_per_batch: Optional[int] = None,
    *,
    batch_size: Any = NOT_GIVEN,
) -> Anomalies:
    r"""Plant anomalies as in Wang et al., App. C.

    Each candidate test image gets one square patch (all channels) at a uniformly random
    location replaced by the same-location patch of a uniformly random training image; the
    ``n_images`` modified images whose uncertainty rose most are kept, in decreasing order of
    the rise (ties: candidate order).

    Choices the paper leaves open, made here: the patch side defaults to the paper's 10 px on
    32 x 32 images scaled to the image size (:func:`default_patch_size`: 9 on MNIST); locations
    and donors come from a ``torch.Generator`` seeded with ``seed`` (drawn on the CPU: same
    result on every device); the paper keeps 200 images, the default here is 100.

    Args:
        forward_func (callable): images ``(B, C, H, W)`` -> uncertainties ``(B,)``.
        x_test (Tensor): test images ``(N, C, H, W)``.
        x_train (Tensor): patch donors ``(M, C, H, W)``, the same ``(C, H, W)``.
        n_images (int): number of images kept (at most the number of candidates).
        patch_size (int, optional): side of the square patch.
        candidates (int or Tensor, optional): the first ``candidates`` test images, or a tensor
            of indices into ``x_test``; default all.
        seed (int): seed of locations and donors.
        max_examples_per_batch (int, optional): images per forward call (``None``: 4096).

    ``batch_size``, the name before this release, still works and warns.

    Returns:
        Anomalies: ``images``, ``boxes``, ``rise``, ``indices``, ``donors``.

    Examples::

        >>> a = make_anomalies(uf, data.x_test, data.x_train, n_images=100)
        >>> maps = method.attribute(a.images)
        >>> anomaly_localization(maps, a.boxes).iou
    """
    batch = renamed(max_examples_per_batch, batch_size, "batch_size", "max_examples_per_batch", "make_anomalies")
    x_test = check_images(x_test, "x_test")
    x_train = check_images(x_train, "x_train")
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"x_train must have the image shape of x_test {tuple(x_test.shape[1:])}, got {tuple(x_train.shape[1:])}"
        )
    batch = check_optional_positive_int(batch, "max_examples_per_batch")
    _, _, h, w = x_test.shape
    size = _check_patch(patch_size, h, w)
    index = _candidate_indices(candidates, x_test.shape[0])
    count = index.numel()
    n_images = check_positive_int(n_images, "n_images")
    if n_images > count:
        raise ValueError(f"n_images must be at most the number of candidates ({count}), got {n_images}")
    generator = torch.Generator().manual_seed(seed)
    tops = torch.randint(0, h - size + 1, (count,), generator=generator, device="cpu")
    lefts = torch.randint(0, w - size + 1, (count,), generator=generator, device="cpu")
    donors = torch.randint(0, x_train.shape[0], (count,), generator=generator, device="cpu")
    boxes = torch.stack([tops, lefts, tops + size, lefts + size], dim=1)
    device = x_test.device
    originals = x_test[index.to(device)]
    patched = torch.where(_box_masks(boxes.to(device), h, w), x_train[donors.to(x_train.device)].to(device), originals)
    rise = chunked_scores(forward_func, patched, batch) - chunked_scores(forward_func, originals, batch)
    keep = torch.argsort(rise.cpu(), descending=True, stable=True)[:n_images]
    return Anomalies(patched[keep.to(device)], boxes[keep], rise[keep.to(rise.device)], index[keep], donors[keep])


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise IoU ``(N,)`` (float64) of boxes ``(N, 4)`` as ``(top, left, bottom, right)``,
    exclusive ends."""
    a, b = a.long(), b.long().to(a.device)
    height = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    width = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    intersection = (height * width).double()
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])).double()
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).double()
    return intersection / (area_a + area_b - intersection)


def anomaly_localization(
    attributions: Optional[Tensor] = None,
    boxes: Optional[Tensor] = None,
    patch_size: Optional[int] = None,
    *,
    maps: Any = NOT_GIVEN,
) -> LocalizationResult:
    r"""Locate planted anomalies from attribution maps (Wang et al., App. C).

    The predicted box is the ``patch_size`` x ``patch_size`` window with the highest mean
    attribution, found by exhaustive search (``avg_pool2d`` with stride 1, in float64; ties:
    the first window in raster order). IoU is the overlap area over the union area;
    ADA is the share of images with IoU > 0.5 (strictly).

    Choices: maps of shape ``(N, C, H, W)`` are summed over channels (signed: pass ``.abs()``
    for magnitudes); ``patch_size=None`` uses the side of the true boxes (which must then all
    be squares of one size), i.e. the paper's setting of a window as large as the patch.

    Args:
        attributions (Tensor): attribution maps ``(N, 1, H, W)``, ``(N, H, W)`` or
            ``(N, C, H, W)`` (required).
        boxes (Tensor): true boxes ``(N, 4)``, e.g. ``Anomalies.boxes`` (required).
        patch_size (int, optional): side of the predicted window.

    ``maps``, the name before this release, still works and warns.

    Returns:
        LocalizationResult: ``iou``, ``ada``, ``per_image_iou``, ``predicted_boxes``.

    Examples::

        >>> r = anomaly_localization(maps, anomalies.boxes)
        >>> r.iou, r.ada
    """
    attributions = renamed(attributions, maps, "maps", "attributions", "anomaly_localization", required=True)
    if boxes is None:
        raise TypeError("anomaly_localization() missing required argument: 'boxes'")
    if not isinstance(attributions, Tensor) or attributions.dim() not in (3, 4):
        shape = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(f"attributions must be a tensor of shape (N, 1, H, W), (N, C, H, W) or (N, H, W), got {shape}")
    pixel_maps = (attributions if attributions.dim() == 3 else attributions.sum(1)).detach().double()
    n, h, w = pixel_maps.shape
    if n == 0:
        raise ValueError("attributions is an empty batch (N = 0); expected at least one map")
    if not bool(torch.isfinite(pixel_maps).all()):
        raise ValueError("attributions contains NaN or infinite values")
    if not isinstance(boxes, Tensor) or tuple(boxes.shape) != (n, 4):
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a tensor of shape (N, 4) = ({n}, 4), got {shape}")
    if boxes.is_floating_point():
        raise ValueError("boxes must be integer (top, left, bottom, right) pixel coordinates")
    if patch_size is None:
        sides = torch.cat([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
        if bool((sides != sides[0]).any()):
            raise ValueError("boxes are not squares of one size: pass patch_size")
        patch_size = int(sides[0])
    size = _check_patch(patch_size, h, w)
    means = F.avg_pool2d(pixel_maps.unsqueeze(1), size, stride=1).flatten(1)
    best = means.argmax(1)
    positions = w - size + 1
    tops, lefts = best // positions, best % positions
    predicted = torch.stack([tops, lefts, tops + size, lefts + size], dim=1)
    iou = box_iou(predicted, boxes.to(predicted.device))
    return LocalizationResult(float(iou.mean()), float((iou > 0.5).double().mean()), iou, predicted)
