"""One batch: attributed under its own seed, returned as numpy columns (one row per input)."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor

from captum_uncertainty.attr._utils.counterfactual import Counterfactuals
from captum_uncertainty.attr.counterfactual_path import CounterfactualPathResult, CounterfactualPathResultWithDelta
from captum_uncertainty.attr.distribution import DistributionResult
from captum_uncertainty.dataset._explainers import check_attribute_kwargs, counterfactuals_refusal, model_device
from captum_uncertainty.dataset._sources import Inputs, batch_rows, inputs_to
from captum_uncertainty.forward import MEASURES, Decomposition, UncertaintyForward

__all__ = ["Columns", "Outputs", "attribute_batch", "batch_seed", "layout_of", "preserved_rng", "split_result"]

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


class Outputs(NamedTuple):
    """What one ``attribute`` call gave, as columns: ``maps`` ``(n, *map_shape)`` and ``values``
    (one number per input: convergence deltas, explained targets, fiducial uncertainties)."""

    maps: Dict[str, Tensor]
    values: Dict[str, Tensor]


def split_result(result: Any, explainer: str = "explainer") -> Outputs:
    """The columns of what ``attribute`` returned (``explainer``: its class name, for the errors).

    * a Tensor: ``attribution``; a :class:`~captum_uncertainty.Decomposition`:
      ``attribution_total``, ``attribution_aleatoric``, ``attribution_epistemic``;
    * ``(maps, delta)`` (``return_convergence_delta=True``): the maps as above and ``delta``
      (``delta_total``, ... for a Decomposition of deltas);
    * :class:`~captum_uncertainty.attr.distribution.DistributionResult`
      (:class:`~captum_uncertainty.attr.ExplanationDistribution`): ``attribution_mean``,
      ``attribution_std``, ``attribution_cv`` and ``target`` (the explained class); the
      per-sample maps ``samples`` are not stored;
    * :class:`~captum_uncertainty.attr.CounterfactualPathResult` (and ``...WithDelta``,
      ``return_fiducial=True``): the attributions (and delta) as above, with
      ``fiducial_uncertainty`` (the forward's measure at the fiducial) and ``fiducial_class``
      (the posterior predictive's class at the fiducial); the fiducials' latent codes and
      images are not stored.
    """
    if isinstance(result, DistributionResult):
        maps = {"attribution_mean": result.mean, "attribution_std": result.std, "attribution_cv": result.cv}
        return Outputs(maps, {"target": result.target})
    if isinstance(result, (CounterfactualPathResult, CounterfactualPathResultWithDelta)):
        maps = _named_tensors(result.attributions, "attribution", "maps", explainer)
        values = {} if result.delta is None else _named_tensors(result.delta, "delta", "delta", explainer)
        values["fiducial_uncertainty"] = result.fiducials.uncertainty
        values["fiducial_class"] = result.fiducials.fiducial_class
        return Outputs(maps, values)
    delta: Any = None
    if isinstance(result, tuple) and not isinstance(result, Decomposition):
        if len(result) == 2 and isinstance(result[1], Counterfactuals):
            raise TypeError(counterfactuals_refusal(explainer))
        if len(result) != 2:
            raise TypeError(
                f"{explainer}.attribute returned a {type(result).__name__} of {len(result)} items; attribute_dataset "
                "stores maps, (maps, delta) or a Decomposition (one input tensor per call)"
            )
        result, delta = result
    maps = _named_tensors(result, "attribution", "maps", explainer)
    deltas = {} if delta is None else _named_tensors(delta, "delta", "delta", explainer)
    return Outputs(maps, deltas)


def _named_tensors(value: Any, prefix: str, what: str, explainer: str) -> Dict[str, Tensor]:
    if isinstance(value, Decomposition):
        return {f"{prefix}_{name}": tensor for name, tensor in zip(MEASURES, value)}
    if isinstance(value, Tensor):
        return {prefix: value}
    raise TypeError(
        f"{explainer}.attribute returned {what} of type {type(value).__name__}; attribute_dataset stores a Tensor "
        "or a Decomposition"
    )


def _number_column(numbers: Tensor, size: int) -> np.ndarray:
    """One number per input as a numpy column: float64 for floating values, int64 otherwise."""
    numbers = numbers.detach().cpu().reshape(size)
    return numbers.double().numpy() if numbers.is_floating_point() else numbers.numpy().astype(np.int64)


def attribute_batch(
    explainer: Any,
    forward: UncertaintyForward,
    inputs: Inputs,
    start: int,
    number: int,
    seed: int,
    attribute_kwargs: Dict[str, Any],
) -> Columns:
    """Attribute one batch; returns its rows as numpy columns (maps ``(n, *map_shape)``).

    The inputs (a tensor, or a mapping of tensors such as a tokenizer's output, given to
    ``attribute`` as its ``inputs`` as they are) go to the posterior's device (a worker may hold
    the model on a GPU); the batch runs under its own seed (see :func:`batch_seed`), so callers
    keep their generator state with :func:`preserved_rng`. The columns: ``index``, then
    :meth:`UncertaintyForward.summary <captum_uncertainty.UncertaintyForward.summary>`'s, then the
    per-input numbers and the maps of what ``attribute`` returned (:func:`split_result`); with one
    map and its convergence delta also ``baseline_uncertainty``, ``U(x')`` of the row's baseline.
    """
    device = model_device(forward)
    inputs = inputs_to(inputs, device)
    size = batch_rows(inputs)
    _seed_batch(batch_seed(seed, number), device)
    name = type(explainer).__name__
    check_attribute_kwargs(explainer, attribute_kwargs)
    maps, values = split_result(explainer.attribute(inputs, **attribute_kwargs), name)
    with torch.no_grad():
        summary = forward.summary(inputs)
    columns: Columns = {"index": np.arange(start, start + size, dtype=np.int64)}
    for column, numbers in summary.items():
        columns[column] = _number_column(numbers, size)
    for column, numbers in values.items():
        if not isinstance(numbers, Tensor) or numbers.numel() != size:
            shape = tuple(numbers.shape) if isinstance(numbers, Tensor) else type(numbers).__name__
            raise ValueError(
                f"{name}.attribute returned {column} of shape {shape} for {size} inputs; expected one number per input"
            )
        columns[column] = _number_column(numbers, size)
    baseline = _baseline_uncertainty(maps, values, summary, forward.measure, size)
    if baseline is not None:
        columns["baseline_uncertainty"] = baseline
    for column, tensor in maps.items():
        if tensor.dim() < 2 or tensor.shape[0] != size:
            raise ValueError(
                f"{name}.attribute returned {column} of shape {tuple(tensor.shape)} for {size} inputs; "
                f"attribute_dataset stores maps of shape ({size}, ...) with at least one dimension per input"
            )
        columns[column] = tensor.detach().cpu().numpy()
    return columns


def _baseline_uncertainty(
    maps: Dict[str, Tensor], values: Dict[str, Tensor], summary: Dict[str, Tensor], measure: str, size: int
) -> Any:
    """``U(x')`` of each row's baseline, where a method returned one map and its convergence delta:
    ``delta = sum(map) - (U(x) - U(x'))`` gives ``U(x') = U(x) - sum(map) + delta`` exactly, so
    completeness can be checked from the stored columns alone. ``None`` for anything else."""
    if set(maps) != {"attribution"} or "delta" not in values or measure not in summary:
        return None
    totals = maps["attribution"].detach().reshape(size, -1).sum(1).to(torch.float64)
    delta = values["delta"].detach().reshape(size).to(torch.float64)
    at_inputs = summary[measure].detach().reshape(size).to(torch.float64)
    return (at_inputs - totals + delta).cpu().numpy()


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
