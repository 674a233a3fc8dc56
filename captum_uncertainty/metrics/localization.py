"""Anomaly localisation (Wang et al. App. C): plant a foreign patch, find it in the map."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_uncertainty.metrics._core import check_inputs_and_maps, evaluate

__all__ = ["Anomalies", "LocalizationResult", "default_patch_size", "make_anomalies", "anomaly_localization"]


class Anomalies(NamedTuple):
    """Test images with a planted patch: ``boxes`` are ``(top, left, bottom, right)`` with
    exclusive ends, ``rise`` the uncertainty increase, ``indices`` the test images used."""

    images: Tensor
    boxes: Tensor
    rise: Tensor
    indices: Tensor


class LocalizationResult(NamedTuple):
    """Mean IoU, ADA (share of images with IoU > 0.5), per-image IoU and predicted boxes."""

    iou: float
    ada: float
    per_image_iou: Tensor
    predicted_boxes: Tensor


def default_patch_size(height: int) -> int:
    """The paper's 10x10 patch at 32x32, scaled to the image: ``round(10 * H / 32)`` (9 at 28x28)."""
    return max(1, int(round(10 * height / 32)))


def check_patch_size(patch_size: Optional[int], height: int, width: int) -> int:
    size = default_patch_size(height) if patch_size is None else patch_size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= min(height, width):
        raise ValueError(f"patch_size must be an int in [1, {min(height, width)}], got {patch_size!r}")
    return size


@torch.no_grad()
def make_anomalies(
    forward_func: Callable[[Tensor], Tensor],
    x_test: Tensor,
    x_train: Tensor,
    n_images: int = 100,
    patch_size: Optional[int] = None,
    candidates: Optional[int] = None,
    seed: int = 0,
    batch_size: Optional[int] = 512,
) -> Anomalies:
    r"""Replace a random patch of each candidate test image with the same-location patch of a
    random training image and keep the ``n_images`` whose uncertainty rose most (App. C).

    Args:
        forward_func (callable): images -> uncertainties ``(B,)``.
        x_test (Tensor): test images ``(N, C, H, W)``.
        x_train (Tensor): training images (the patch donors), same ``(C, H, W)``.
        n_images (int): number of modified images kept (200 in the paper; 100 here by default).
        patch_size (int, optional): side of the square patch; default ``round(10 H / 32)``.
        candidates (int, optional): how many test images to modify (default all).
        seed (int): seed of the locations and donors.
        batch_size (int, optional): images per forward call.

    Returns:
        Anomalies: ``images``, ``boxes`` ``(n, 4)``, ``rise`` and ``indices``.
    """
    if x_test.dim() != 4 or x_train.dim() != 4 or x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"x_test and x_train must be (N, C, H, W) with the same image shape, got {tuple(x_test.shape)} "
            f"and {tuple(x_train.shape)}"
        )
    if x_test.shape[0] == 0 or x_train.shape[0] == 0:
        raise ValueError("x_test and x_train must not be empty")
    _, _, h, w = x_test.shape
    size = check_patch_size(patch_size, h, w)
    count = x_test.shape[0] if candidates is None else min(candidates, x_test.shape[0])
    if not 1 <= n_images <= count:
        raise ValueError(f"n_images must be in [1, {count}], got {n_images}")
    generator = torch.Generator().manual_seed(seed)
    tops = torch.randint(0, h - size + 1, (count,), generator=generator)
    lefts = torch.randint(0, w - size + 1, (count,), generator=generator)
    donors = torch.randint(0, x_train.shape[0], (count,), generator=generator)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    inside = (
        (rows >= tops.view(-1, 1, 1)) & (rows < (tops + size).view(-1, 1, 1))
        & (cols >= lefts.view(-1, 1, 1)) & (cols < (lefts + size).view(-1, 1, 1))
    ).unsqueeze(1)
    originals = x_test[:count]
    patched = torch.where(inside.to(x_test.device), x_train[donors], originals)
    rise = evaluate(forward_func, patched, batch_size) - evaluate(forward_func, originals, batch_size)
    keep = torch.argsort(rise, descending=True, stable=True)[:n_images]
    boxes = torch.stack([tops, lefts, tops + size, lefts + size], dim=1)[keep]
    return Anomalies(patched[keep], boxes, rise[keep], keep)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes ``(top, left, bottom, right)`` (exclusive ends), row by row."""
    height = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    width = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    intersection = (height * width).double()
    area = lambda box: ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).double()  # noqa: E731
    return intersection / (area(a) + area(b) - intersection)


def anomaly_localization(maps: Tensor, boxes: Tensor, patch_size: Optional[int] = None) -> LocalizationResult:
    r"""Predict each planted patch as the window with the highest mean attribution (exhaustive
    search over all positions; ties: the first in raster order) and score it against the truth.

    Args:
        maps (Tensor): attribution maps ``(N, 1, H, W)``, ``(N, H, W)`` or ``(N, C, H, W)``
            (summed over channels).
        boxes (Tensor): true boxes ``(N, 4)`` as returned by :func:`make_anomalies`.
        patch_size (int, optional): window side; default the true boxes' side.

    Returns:
        LocalizationResult: mean ``iou``, ``ada`` (share with IoU > 0.5), ``per_image_iou`` and
        ``predicted_boxes``.
    """
    if not isinstance(maps, Tensor) or maps.dim() not in (3, 4):
        raise ValueError(f"maps must be a tensor of shape (N, 1, H, W) or (N, H, W), got {getattr(maps, 'shape', maps)}")
    pixel_maps = maps if maps.dim() == 3 else maps.sum(1)
    n, h, w = pixel_maps.shape
    check_inputs_and_maps(torch.zeros(n, 1, h, w, dtype=pixel_maps.dtype), pixel_maps)
    if not isinstance(boxes, Tensor) or boxes.shape != (n, 4):
        raise ValueError(f"boxes must be a tensor of shape (N, 4) = ({n}, 4), got {getattr(boxes, 'shape', boxes)}")
    size = check_patch_size(int(boxes[0, 2] - boxes[0, 0]) if patch_size is None else patch_size, h, w)
    window_means = F.avg_pool2d(pixel_maps.unsqueeze(1).double(), size, stride=1).flatten(1)
    best = window_means.argmax(1)
    positions = w - size + 1
    tops, lefts = best // positions, best % positions
    predicted = torch.stack([tops, lefts, tops + size, lefts + size], dim=1)
    iou = box_iou(predicted, boxes.to(predicted.device).long())
    return LocalizationResult(float(iou.mean()), float((iou > 0.5).double().mean()), iou, predicted)
