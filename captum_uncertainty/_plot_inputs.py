"""Input checks of the figures of :mod:`captum_uncertainty.visualization`: images, maps and
attribution tables as float64 numpy arrays, refused with a clear error when their type, shape or
values do not fit. Nothing here imports matplotlib."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["LAYOUTS", "SUPPORTED_LAYOUTS", "channels_last", "summary_tables"]


#: Channel counts of an image layout: gray, RGB, RGBA.
_CHANNELS = (1, 3, 4)
#: The ``layout`` choices of :func:`~captum_uncertainty.visualization.plot_attribution`: channels
#: first, channels last, found from the shape.
SUPPORTED_LAYOUTS = ("chw", "hwc", None)
#: Deprecated alias of :data:`SUPPORTED_LAYOUTS`, kept for one release.
LAYOUTS = SUPPORTED_LAYOUTS
_IMAGE_SHAPES = "(H, W), (C, H, W), (H, W, C) or (1, C, H, W) with C in {1, 3, 4}"


def _real_array(values: Any, name: str) -> np.ndarray:
    """``values`` (tensor or array-like of real numbers) as a float64 numpy array."""
    if isinstance(values, Tensor):
        if values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
        return values.detach().cpu().to(torch.float64).numpy()
    try:
        array = np.asarray(values)
    except ValueError as error:  # ragged nested sequences
        raise TypeError(f"{name} must be a tensor or an array of real numbers, got {type(values).__name__}") from error
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array.astype(np.float64)


def _check_finite(array: np.ndarray, name: str) -> None:
    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite values")


def channels_last(values: Any, name: str, layout: Optional[str]) -> np.ndarray:
    """One image or map in any accepted layout as an ``(H, W, C)`` float64 array."""
    array = _real_array(values, name)
    shape = tuple(array.shape)
    if array.ndim == 4:
        if shape[0] != 1:
            raise ValueError(f"{name} must be one image of shape {_IMAGE_SHAPES}, got a batch of shape {shape}")
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3:
        first, last = array.shape[0] in _CHANNELS, array.shape[-1] in _CHANNELS
        if layout is None:
            if first and last:
                raise ValueError(
                    f"{name} of shape {shape} is ambiguous: its first and its last axis could both be "
                    "channels; pass layout='chw' or layout='hwc'"
                )
            if not (first or last):
                raise ValueError(f"{name} must have shape {_IMAGE_SHAPES}, got {shape}")
            layout = "chw" if first else "hwc"
        if layout == "chw":
            array = np.moveaxis(array, 0, -1)
        if array.shape[-1] not in _CHANNELS:
            raise ValueError(f"{name} with layout={layout!r} must have C in {{1, 3, 4}} channels, got shape {shape}")
    else:
        raise ValueError(f"{name} must have shape {_IMAGE_SHAPES}, got {shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {shape}")
    _check_finite(array, name)
    return array


def summary_tables(attributions: Any) -> Tuple[Dict[Any, np.ndarray], Optional[List[str]]]:
    """``attributions`` of :func:`~captum_uncertainty.visualization.plot_attribution_summary` as
    panel name (None: a single panel) -> ``(N, F)`` float64 array, and the feature names its
    ``DataFrame`` columns give, if any."""
    if not _is_dataframe(attributions) and isinstance(attributions, Mapping):
        if not attributions:
            raise ValueError("attributions must not be an empty mapping")
        tables: Dict[Any, np.ndarray] = {}
        columns: Dict[Any, List[str]] = {}
        for key, value in attributions.items():
            tables[key], names = _table(value, f"attributions[{key!r}]")
            if names is not None:
                columns[key] = names
        shapes = {key: table.shape for key, table in tables.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"attributions' entries must all have one shape (N, F), got {shapes}")
        if len({tuple(names) for names in columns.values()}) > 1:
            raise ValueError(f"attributions' DataFrame entries must have the same columns, got {columns}")
        return tables, next(iter(columns.values()), None)
    table, names = _table(attributions, "attributions")
    return {None: table}, names


def _is_dataframe(value: Any) -> bool:
    pandas = sys.modules.get("pandas")  # never imported here: only a loaded pandas made the value
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _table(value: Any, name: str) -> Tuple[np.ndarray, Optional[List[str]]]:
    """One ``(N, F)`` table of finite attributions, and its column names for a ``DataFrame``."""
    names: Optional[List[str]] = None
    if _is_dataframe(value):
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        wrong = [str(c) for c, dtype in value.dtypes.items() if not is_numeric_dtype(dtype) or is_bool_dtype(dtype)]
        if wrong:
            raise TypeError(f"{name} must have numeric columns only, got non-numeric columns {wrong}")
        names = [str(c) for c in value.columns]
        array = value.to_numpy(dtype=np.float64)
    else:
        array = _real_array(value, name)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, F) with N, F >= 1, got {tuple(array.shape)}")
    _check_finite(array, name)
    return array, names
