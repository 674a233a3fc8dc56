"""One batch: attributed under its own seed, returned as numpy columns (one row per input)."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import torch
from torch import Tensor

from captum_uncertainty.dataset._explainers import model_device
from captum_uncertainty.forward import MEASURES, Decomposition, UncertaintyForward

__all__ = ["Columns", "attribute_batch", "batch_seed", "layout_of", "preserved_rng"]

#: The rows of a batch or a shard: column name -> values (maps ``(n, *map_shape)``).
Columns = Dict[str, np.ndarray]


def batch_seed(seed: int, number: int) -> int:
    """The seed of batch ``number``: independent of the engine, the order and earlier batches."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _seed_batch(seed: int, device: torch.device) -> None:
    """Seed the generators a batch on ``device`` draws from: the CPU's, and that GPU's."""
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Give the caller's generator states (CPU, and ``device`` if a GPU) back after the block."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        yield


def _split_result(result: Any) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """``({map column: maps}, {delta column: deltas})`` of what ``attribute`` returned."""
    delta: Any = None
    if isinstance(result, tuple) and not isinstance(result, Decomposition):
        if len(result) != 2:
            raise TypeError(
                f"explainer.attribute returned a tuple of {len(result)} items; expected maps, (maps, delta) "
                "or a Decomposition (one input tensor per call)"
            )
        result, delta = result
    maps = _named_tensors(result, "attribution", "maps")
    deltas = {} if delta is None else _named_tensors(delta, "delta", "delta")
    return maps, deltas


def _named_tensors(value: Any, prefix: str, what: str) -> Dict[str, Tensor]:
    if isinstance(value, Decomposition):
        return {f"{prefix}_{name}": tensor for name, tensor in zip(MEASURES, value)}
    if isinstance(value, Tensor):
        return {prefix: value}
    raise TypeError(
        f"explainer.attribute returned {what} of type {type(value).__name__}; expected a Tensor or a Decomposition"
    )


def attribute_batch(
    explainer: Any,
    forward: UncertaintyForward,
    inputs: Tensor,
    start: int,
    number: int,
    seed: int,
    attribute_kwargs: Dict[str, Any],
) -> Columns:
    """Attribute one batch; returns its rows as numpy columns (maps ``(n, *map_shape)``).

    The inputs go to the posterior's device (a worker may hold the model on a GPU); the batch
    runs under its own seed (see :func:`batch_seed`), so callers keep their generator state with
    :func:`preserved_rng`. Beside ``index`` and the maps, the columns are
    :meth:`UncertaintyForward.summary <captum_uncertainty.UncertaintyForward.summary>`'s.
    """
    inputs = inputs.to(model_device(forward))
    size = int(inputs.shape[0])
    _seed_batch(batch_seed(seed, number), inputs.device)
    maps, deltas = _split_result(explainer.attribute(inputs, **attribute_kwargs))
    with torch.no_grad():
        summary = forward.summary(inputs)
    columns: Columns = {"index": np.arange(start, start + size, dtype=np.int64)}
    for name, values in summary.items():
        values = values.detach().cpu()
        columns[name] = values.numpy().astype(np.int64) if name == "predicted" else values.double().numpy()
    for name, values in deltas.items():
        columns[name] = values.detach().cpu().double().reshape(size).numpy()
    for name, values in maps.items():
        if values.dim() < 2 or values.shape[0] != size:
            raise ValueError(f"explainer.attribute returned {name} of shape {tuple(values.shape)} for {size} inputs")
        columns[name] = values.detach().cpu().numpy()
    return columns


def layout_of(columns: Columns) -> Dict[str, Any]:
    """The manifest's description of the written columns."""
    maps = [name for name, values in columns.items() if values.ndim > 1]
    first = columns[maps[0]]
    return {
        "columns": list(columns),
        "map_columns": maps,
        "map_shape": list(first.shape[1:]),
        "map_dtype": str(first.dtype),
    }
