"""The ``data`` argument: a torch ``Dataset``, a ``DataLoader`` or a Ray Dataset, read in batches.

An item's input is a tensor, or a mapping of tensors (one row of a tokenizer's output:
``{"input_ids": (L,), "attention_mask": (L,)}``); a batch of such rows is one mapping of
``(B, L)`` tensors, given to ``attribute`` as its ``inputs``.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union, cast

import numpy as np
import torch
from torch import Tensor

from captum_uncertainty._validation import check_positive_int

__all__ = [
    "DEFAULT_INPUTS_PER_BATCH",
    "Batch",
    "Inputs",
    "LoaderSource",
    "MapSource",
    "Needed",
    "RaySource",
    "Source",
    "as_source",
    "batch_rows",
    "inputs_to",
    "stacked",
]

#: Inputs per ``attribute`` call when neither ``batch_size`` nor a ``DataLoader`` sets it.
DEFAULT_INPUTS_PER_BATCH = 64


#: The inputs of one item or batch: a tensor, or named tensors (a tokenizer's output), each with
#: the batch as first dimension in a batch.
Inputs = Union[Tensor, Dict[str, Tensor]]


class Batch(NamedTuple):
    """One batch of the data set: its position, first row, size and inputs (``None``: skipped)."""

    number: int
    start: int
    size: int
    inputs: Optional[Inputs]


#: ``needed(start, size)``: whether the rows ``[start, start + size)`` still have to be attributed.
Needed = Callable[[int, int], bool]

#: What ``data`` may yield, for the errors.
_EXPECTED_ITEMS = (
    "tensors, mappings of tensors (one row of a tokenizer's output, return_tensors='pt') or (x, y, ...) tuples "
    "whose first element is one of these"
)
#: How to give every row of a tokenizer's output one length, for the errors.
_PAD_HINT = "pad every row to one length: tokenizer(texts, padding='max_length', max_length=L, return_tensors='pt')"

#: The shape (without the batch dimension) and dtype of each entry of a mapping input.
_RowLayout = Dict[str, Tuple[Tuple[int, ...], torch.dtype]]


def _first_input(item: Any, name: str = "data") -> Inputs:
    """The input of one item or batch: a tensor, a mapping of tensors (as a plain ``dict``), or
    the first element of an ``(x, y, ...)`` tuple."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, Mapping):
        return _named_tensors(item, name)
    if isinstance(item, np.ndarray):
        return torch.as_tensor(item)
    if not isinstance(item, Tensor):
        raise TypeError(f"{name} must yield {_EXPECTED_ITEMS}, got {type(item).__name__}")
    return item


def _named_tensors(item: Mapping, name: str) -> Dict[str, Tensor]:
    """A mapping input as a ``dict`` of tensors (numpy arrays converted); refuses anything else."""
    if not item:
        raise ValueError(f"{name} yielded an empty mapping; expected {_EXPECTED_ITEMS}")
    found: Dict[str, Tensor] = {}
    for key, value in item.items():
        if not isinstance(key, str):
            raise TypeError(
                f"{name} yielded a mapping with the key {key!r}; expected {_EXPECTED_ITEMS}, keyed by the names of "
                "the members' forward parameters"
            )
        if isinstance(value, np.ndarray):
            value = torch.as_tensor(value)
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{name} yielded a mapping whose {key!r} is a {type(value).__name__}; expected {_EXPECTED_ITEMS} "
                "(every entry a tensor)"
            )
        found[key] = value
    return found


def _row_layout(inputs: Dict[str, Tensor], dims: int = 0) -> _RowLayout:
    """Each entry's shape (without its first ``dims`` dimensions) and dtype."""
    return {key: (tuple(value.shape[dims:]), value.dtype) for key, value in inputs.items()}


def _describe(layout: _RowLayout) -> str:
    """``"input_ids: [8] int64, attention_mask: [8] int64"``."""
    return ", ".join(
        f"{key}: {list(shape)} {str(dtype).removeprefix('torch.')}" for key, (shape, dtype) in layout.items()
    )


def _rows(start: Optional[int], first: int, other: int) -> str:
    """``"rows 4 and 6"`` (``start``: the first row's position, ``None`` if unknown)."""
    if start is None:
        return f"rows {first} and {other} of one batch"
    return f"rows {start + first} and {start + other}"


def _check_rows(inputs: Sequence[Inputs], start: Optional[int], name: str = "data") -> None:
    """Refuse rows that mix mappings and tensors (``TypeError``), or mappings whose names, shapes
    or dtypes differ (``ValueError``): a batch of them is stacked into one mapping."""
    kinds = [isinstance(value, dict) for value in inputs]
    if not any(kinds):
        return
    if not all(kinds):
        other = kinds.index(not kinds[0])
        raise TypeError(
            f"{name} {_rows(start, 0, other)} hold a {type(inputs[0]).__name__} and a {type(inputs[other]).__name__}: "
            f"expected {_EXPECTED_ITEMS}, of one kind in every row"
        )
    rows = cast(Sequence[Dict[str, Tensor]], inputs)
    first = _row_layout(rows[0])
    for offset, row in enumerate(rows):
        layout = _row_layout(row)
        if layout != first:
            raise ValueError(
                f"{name} {_rows(start, 0, offset)} differ ({_describe(first)}; {_describe(layout)}): mapping inputs "
                f"must hold the same names, shapes and dtypes in every row; {_PAD_HINT}"
            )


def _stacked_items(items: Sequence[Any], start: Optional[int], name: str = "data") -> Inputs:
    """The inputs of consecutive items as one batch: stacked tensors, or a mapping of stacked tensors."""
    inputs = [_first_input(item, name) for item in items]
    if not any(isinstance(value, dict) for value in inputs):
        return torch.stack(cast(List[Tensor], inputs))
    _check_rows(inputs, start, name)
    rows = cast(List[Dict[str, Tensor]], inputs)
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


def _is_mapping_item(item: Any) -> bool:
    """Whether an item's input (the item, or the first element of a tuple) is a mapping."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    return isinstance(item, Mapping)


def _collate_stream(items: List[Any]) -> Any:
    """The collate function of the loader of an ``IterableDataset``: rows of mappings as by
    :func:`_stacked_items`, which names rows that differ; anything else as torch's default."""
    from torch.utils.data._utils.collate import default_collate

    return _stacked_items(items, None) if _is_mapping_item(items[0]) else default_collate(items)


def batch_rows(inputs: Inputs) -> int:
    """The number of rows of a batch's inputs (the first dimension, shared by every named tensor)."""
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0])
    sizes = {int(value.shape[0]) if value.dim() else -1 for value in inputs.values()}
    if len(sizes) != 1 or -1 in sizes:
        shapes = {key: list(value.shape) for key, value in inputs.items()}
        raise ValueError(
            f"data yielded a batch of named tensors without one first (batch) dimension ({shapes}); expected "
            f"{_EXPECTED_ITEMS}"
        )
    return sizes.pop()


def inputs_to(inputs: Inputs, device: torch.device) -> Inputs:
    """The inputs on ``device`` (every named tensor of a mapping)."""
    if isinstance(inputs, Tensor):
        return inputs.to(device)
    return {key: value.to(device) for key, value in inputs.items()}


class _SameRows:
    """Checks that every batch holds the kind of inputs of the first one and, for mapping inputs,
    its names, shapes and dtypes: the maps of one data set share one shape, so its rows share one
    padded length."""

    def __init__(self) -> None:
        self.layout: Optional[_RowLayout] = None  # of the first batch (empty for tensors)
        self.start: Optional[int] = None

    def check(self, inputs: Inputs, start: int, name: str = "data") -> Inputs:
        layout = {} if isinstance(inputs, Tensor) else _row_layout(inputs, dims=1)
        if self.layout is None or self.start is None:
            self.layout, self.start = layout, start
        elif layout != self.layout:
            here, there = (_describe(found) if found else "tensors" for found in (layout, self.layout))
            raise ValueError(
                f"{name} rows from {start} on differ from those from {self.start} on ({here}; {there}): mapping "
                f"inputs must hold the same names, shapes and dtypes in every row; {_PAD_HINT}"
            )
        return inputs


class MapSource:
    """A map-style torch ``Dataset``, read by index in batches of ``batch_size``."""

    def __init__(self, dataset: Any, batch_size: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_inputs: Optional[int] = len(dataset)
        self.rows = _SameRows()

    def load(self, start: int, size: int) -> Inputs:
        items = [self.dataset[index] for index in range(start, start + size)]
        return self.rows.check(_stacked_items(items, start), start)

    def batches(self, needed: Needed) -> Iterator[Batch]:
        total = int(self.num_inputs or 0)
        for number, start in enumerate(range(0, total, self.batch_size)):
            size = min(self.batch_size, total - start)
            yield Batch(number, start, size, self.load(start, size) if needed(start, size) else None)


class LoaderSource:
    """A ``DataLoader``: its own batches, in its order (loaded even when skipped)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.batch_size: Optional[int] = loader.batch_size
        self.num_inputs = _loader_length(loader)
        self.rows = _SameRows()

    def batches(self, needed: Needed) -> Iterator[Batch]:
        start = 0
        for number, batch in enumerate(self.loader):
            inputs = self.rows.check(_first_input(batch), start)
            size = batch_rows(inputs)
            yield Batch(number, start, size, inputs if needed(start, size) else None)
            start += size

    def as_map_source(self) -> MapSource:
        """The same rows read by index, for the Ray engine (only for loaders that read in order)."""
        from torch.utils.data import IterableDataset, SequentialSampler
        from torch.utils.data._utils.collate import default_collate

        loader = self.loader
        plain = (
            not isinstance(loader.dataset, IterableDataset)
            and isinstance(loader.sampler, SequentialSampler)
            and loader.batch_size is not None
            and not loader.drop_last
            and loader.collate_fn is default_collate
        )
        if not plain:
            raise ValueError(
                "engine='ray' reads a DataLoader's dataset by index, so data must be a DataLoader without "
                "shuffle, sampler, batch_sampler, collate_fn or drop_last; pass the Dataset itself, or use "
                "engine='local'"
            )
        return MapSource(loader.dataset, int(loader.batch_size))


def _loader_length(loader: Any) -> Optional[int]:
    """How many inputs a ``DataLoader`` yields, when that is known without iterating it."""
    from torch.utils.data import IterableDataset

    if isinstance(loader.dataset, IterableDataset) or loader.batch_size is None:
        return None
    try:
        count = len(loader.sampler)
    except TypeError:
        return None
    return count - count % loader.batch_size if loader.drop_last else count


class RaySource:
    """A Ray Dataset: the column ``"x"`` or its only tensor column, in order."""

    def __init__(self, dataset: Any, batch_size: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.column = _ray_input_column(dataset)
        self.num_inputs: Optional[int] = int(dataset.count())

    def batches(self, needed: Needed) -> Iterator[Batch]:
        start = 0
        rows = self.dataset.select_columns([self.column])
        for number, batch in enumerate(rows.iter_batches(batch_size=self.batch_size, batch_format="numpy")):
            values = batch[self.column]
            size = int(len(values))
            inputs = torch.tensor(stacked(values), device="cpu") if needed(start, size) else None  # host data
            yield Batch(number, start, size, inputs)
            start += size


Source = Union[MapSource, LoaderSource, RaySource]


def stacked(values: np.ndarray) -> np.ndarray:
    """A batch of a Ray tensor column as one array (variable-shape columns come as object arrays)."""
    return np.stack(list(values)) if values.dtype == object else values


def _is_ray_dataset(data: Any) -> bool:
    module = sys.modules.get("ray.data")
    return module is not None and isinstance(data, module.Dataset)


def _ray_input_column(dataset: Any) -> str:
    """``"x"``, or the only tensor column of a Ray Dataset."""
    import pyarrow as pa

    schema = dataset.schema()
    names = list(schema.names) if schema is not None else []
    if "x" in names:
        return "x"
    base = getattr(schema, "base_schema", None)
    tensors = []
    if isinstance(base, pa.Schema):
        tensors = [
            field.name
            for field in base
            if isinstance(field.type, pa.ExtensionType) and "tensor" in field.type.extension_name
        ]
    if len(tensors) != 1:
        raise ValueError(
            f"data (a Ray Dataset) needs a column 'x' or exactly one tensor column to read the inputs from; "
            f"it has columns {names}"
        )
    return tensors[0]


def as_source(data: Any, batch_size: Optional[int]) -> Source:
    """Wrap ``data``; ``TypeError`` for anything that is not a data set, ``ValueError`` if it is empty."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(data, DataLoader):
        if batch_size is not None and batch_size != data.batch_size:
            raise ValueError(
                f"batch_size={batch_size} conflicts with the DataLoader's batch_size={data.batch_size}: "
                "its own batches are used; leave batch_size unset"
            )
        source: Source = LoaderSource(data)
    elif isinstance(data, IterableDataset):
        source = LoaderSource(DataLoader(data, batch_size=_inputs_per_batch(batch_size), collate_fn=_collate_stream))
    elif isinstance(data, Dataset):
        if not hasattr(data, "__len__"):
            raise TypeError(
                f"data must be a map-style Dataset with __len__ or an IterableDataset, got {type(data).__name__}"
            )
        source = MapSource(data, _inputs_per_batch(batch_size))
    elif _is_ray_dataset(data):
        source = RaySource(data, _inputs_per_batch(batch_size))
    elif isinstance(data, (list, tuple)) and data and _is_mapping_item(data[0]):
        _check_rows([_first_input(item) for item in data], 0)  # in memory: every row is checked before out is touched
        source = MapSource(data, _inputs_per_batch(batch_size))
    else:
        raise TypeError(
            "data must be a torch Dataset, a DataLoader, a ray.data.Dataset or a list of mappings of tensors (the "
            f"rows of a tokenizer's output), got {type(data).__name__}; wrap tensors in "
            "torch.utils.data.TensorDataset"
        )
    if source.num_inputs == 0:
        raise ValueError("data is empty: there is nothing to attribute")
    return source


def _inputs_per_batch(batch_size: Optional[int]) -> int:
    return check_positive_int(DEFAULT_INPUTS_PER_BATCH if batch_size is None else batch_size, "batch_size")
