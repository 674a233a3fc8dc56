"""Argument checks specific to the metrics (shapes of images, maps and scores, pixel shares, blurs),
and the one handler of renamed arguments (:func:`renamed`).

Generic checks come from :mod:`captum_uncertainty._validation`. Every check raises a
:class:`ValueError` (or :class:`TypeError` for a wrong type) whose message names the offending
argument and says what was expected.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any, Optional, TypeVar

import torch
from torch import Tensor

from captum_uncertainty._validation import (
    ArgumentTypeError,
    check_floating_tensor,
    check_non_negative_number,
    check_positive_number,
    check_tensor,
)

__all__ = [
    "NOT_GIVEN",
    "check_blur_sigma",
    "check_feature_maps",
    "check_fraction",
    "check_images",
    "check_images_or_features",
    "check_maps",
    "check_replacement",
    "check_scores",
    "check_sigma_search",
    "check_sigmas",
    "renamed",
]

T = TypeVar("T")


class _NotGiven:
    """The type of :data:`NOT_GIVEN`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<not given>"


#: The default of a deprecated argument name: tells "not passed" apart from an explicit ``None``.
#: Typed ``Any`` so that it can stand as the default of a parameter of any type.
NOT_GIVEN: Any = _NotGiven()


def renamed(
    new_value: Optional[T],
    old_value: Any,
    old_name: str,
    new_name: str,
    function_name: str,
    required: bool = False,
) -> Optional[T]:
    """The value of an argument renamed from ``old_name`` to ``new_name``, from whichever name the
    caller used.

    The old name is a keyword-only alias defaulting to :data:`NOT_GIVEN`; the new name defaults
    to ``None``. Passing the old name emits a :class:`DeprecationWarning` naming the new one (at
    the caller of ``function_name``); passing both raises a :class:`TypeError`, as does passing
    neither when ``required`` (the new name has a default only so that the old one can stand in).

    Examples::

        >>> attributions = renamed(attributions, maps, "maps", "attributions", "blurring_test", required=True)
    """
    if old_value is NOT_GIVEN:
        if required and new_value is None:
            raise TypeError(f"{function_name}() missing required argument: '{new_name}'")
        return new_value
    if new_value is not None:
        raise TypeError(
            f"{function_name}() got both {new_name}= and {old_name}= (its name before this release): "
            f"pass {new_name}= only"
        )
    warnings.warn(
        f"{function_name}({old_name}=...) is deprecated: use {new_name}=",
        DeprecationWarning,
        stacklevel=_caller_level(),
    )
    return old_value


def _caller_level() -> int:
    """The ``stacklevel`` of the code calling the metric that called :func:`renamed`, past torch's
    decorators (``torch.no_grad``) between the two, for a warning issued in :func:`renamed`."""
    level, frame = 3, sys._getframe(3)  # 1: renamed, 2: the metric, 3: its caller
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "torch":
        level, frame = level + 1, frame.f_back
    return level


def check_images(images: Any, name: str = "inputs") -> Tensor:
    """A non-empty floating point tensor of shape ``(N, C, H, W)``, returned detached."""
    check_tensor(images, name, "(N, C, H, W)")
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N = 0); expected at least one image")
    if images.shape[2] == 0 or images.shape[3] == 0 or images.shape[1] == 0:
        raise ValueError(f"{name} must have C, H, W >= 1, got shape {tuple(images.shape)}")
    return check_floating_tensor(images, name).detach()


def check_images_or_features(inputs: Any, name: str = "inputs") -> Tensor:
    """Images ``(N, C, H, W)`` or tabular features ``(N, F)``, returned detached."""
    if isinstance(inputs, Tensor) and inputs.dim() == 2:
        if inputs.shape[0] == 0 or inputs.shape[1] == 0:
            raise ValueError(f"{name} must have N, F >= 1, got shape {tuple(inputs.shape)}")
        return check_floating_tensor(inputs, name).detach()
    if isinstance(inputs, Tensor) and inputs.dim() != 4:
        raise ValueError(f"{name} must be images (N, C, H, W) or features (N, F), got shape {tuple(inputs.shape)}")
    return check_images(inputs, name)


def check_feature_maps(maps: Any, inputs: Tensor, name: str = "attributions") -> Tensor:
    """Per-element maps: per-pixel ``(N, H, W)`` for images (see :func:`check_maps`), the
    inputs' own shape ``(N, F)`` for features."""
    if inputs.dim() == 4:
        return check_maps(maps, inputs, name)
    check_tensor(maps, name)
    if tuple(maps.shape) != tuple(inputs.shape):
        raise ValueError(f"{name} must have the features' shape {tuple(inputs.shape)}, got {tuple(maps.shape)}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return maps.detach().to(device=inputs.device)


def check_replacement(baseline: Any, inputs: Tensor, name: str = "baseline") -> Tensor:
    """A per-feature (or per-element) replacement value broadcast to the inputs' shape, e.g. the
    training mean ``x_train.mean(0)``."""
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float, Tensor)):
        raise TypeError(f"{name} must be a number or a tensor of per-feature values, got {type(baseline).__name__}")
    value = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
    try:
        return value.expand_as(inputs)
    except RuntimeError:
        raise ValueError(
            f"{name} must broadcast to the inputs' shape {tuple(inputs.shape)} (e.g. one value per feature), "
            f"got {tuple(value.shape)}"
        ) from None


def check_maps(maps: Any, inputs: Tensor, name: str = "attributions") -> Tensor:
    """Attribution maps for ``inputs`` ``(N, C, H, W)``, returned as per-pixel maps ``(N, H, W)``.

    Accepted shapes: ``(N, 1, H, W)``, ``(N, H, W)`` or the inputs' shape ``(N, C, H, W)``; the
    latter is summed over channels (signed sum: pass ``maps.abs()`` for magnitudes). NaN or
    infinite entries are rejected.
    """
    check_tensor(maps, name)
    n, c, h, w = inputs.shape
    if maps.shape[0:1] == (0,):
        raise ValueError(f"{name} is an empty batch (N = 0); expected {n} maps")
    if tuple(maps.shape) in ((n, 1, h, w), (n, c, h, w)):
        pixel_maps = maps.detach().sum(1)
    elif tuple(maps.shape) == (n, h, w):
        pixel_maps = maps.detach()
    else:
        raise ValueError(
            f"{name} must have shape (N, 1, H, W) = {(n, 1, h, w)}, (N, H, W) = {(n, h, w)} or the "
            f"inputs' shape {(n, c, h, w)}, got {tuple(maps.shape)}"
        )
    if not bool(torch.isfinite(pixel_maps).all()) or not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return pixel_maps.to(device=inputs.device)


def check_fraction(fraction: Any, percent: Any = None, name: str = "fraction") -> float:
    """A share of the pixels in ``(0, 1]``; ``percent`` (in ``(0, 100]``), if given, overrides it.

    0, negative values, values above 1 (or above 100 for ``percent``), NaN and non-numbers are
    rejected.
    """
    if percent is not None:
        value = _real(percent, "percent")
        if not 0 < value <= 100:
            raise ValueError(f"percent must be in (0, 100] (5 = 5% of the pixels), got {percent!r}")
        return value / 100.0
    value = _real(fraction, name)
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1] (a share of the pixels: 0.05 = 5%), got {fraction!r}")
    return value


def check_scores(scores: Any, batch: int, name: str = "forward_func") -> Tensor:
    """The output of a scoring forward for ``batch`` images: one finite-or-not score each, ``(B,)``.

    ``(B, 1)`` outputs are accepted and flattened.
    """
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must return a torch.Tensor of shape (B,), got {type(scores).__name__}")
    if scores.dim() == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if tuple(scores.shape) != (batch,):
        raise ValueError(f"{name} must return one score per image, shape ({batch},), got shape {tuple(scores.shape)}")
    return scores


def check_blur_sigma(sigma: Any, name: str = "sigma") -> float:
    """The blur of a replacement image: a number ``>= 0`` (``inf`` = fully blurred), as a float."""
    return float(check_non_negative_number(sigma, name))


def check_sigma_search(sigma_step: Any, max_sigma: Any) -> None:
    """The sigma grid ``0, sigma_step, ..., max_sigma``: a step ``> 0`` and a finite maximum ``>= 0``."""
    check_positive_number(sigma_step, "sigma_step")
    if math.isinf(check_non_negative_number(max_sigma, "max_sigma")):
        raise ValueError(f"max_sigma must be a finite non-negative number, got {max_sigma!r}")


def check_sigmas(sigma: Any, inputs: Tensor) -> Tensor:
    """One finite blur ``>= 0`` per image, ``(N,)``, on the inputs' device and dtype."""
    if not isinstance(sigma, Tensor) or sigma.shape != inputs.shape[:1]:
        shape = tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
        raise ValueError(f"sigma must be a tensor of one blur per image, shape ({inputs.shape[0]},); got {shape}")
    if not torch.isfinite(sigma).all() or (sigma < 0).any():
        raise ValueError("sigma must hold finite blurs >= 0")
    return sigma.to(device=inputs.device, dtype=inputs.dtype)


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a real number, got {value!r}")
    if math.isnan(float(value)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(value)
