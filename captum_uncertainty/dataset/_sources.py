"""The ``data`` argument: a torch ``Dataset``, a ``DataLoader`` or a Ray Dataset, read in batches."""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterator, NamedTuple, Optional, Union

import numpy as np
import torch
from torch import Tensor

from captum_uncertainty._validation import check_positive_int

__all__ = [
    "DEFAULT_INPUTS_PER_BATCH",
    "Batch",
    "LoaderSource",
    "MapSource",
    "Needed",
    "RaySource",
    "Source",
    "as_source",
    "stacked",
]

#: Inputs per ``attribute`` call when neither ``batch_size`` nor a ``DataLoader`` sets it.
DEFAULT_INPUTS_PER_BATCH = 64


class Batch(NamedTuple):
    """One batch of the data set: its position, first row, size and inputs (``None``: skipped)."""

    number: int
    start: int
    size: int
    inputs: Optional[Tensor]


#: ``needed(start, size)``: whether the rows ``[start, start + size)`` still have to be attributed.
Needed = Callable[[int, int], bool]


def _first_input(item: Any, name: str = "data") -> Tensor:
    """The input of one item or batch: a tensor, or the first element of an ``(x, y, ...)`` tuple."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, np.ndarray):
        return torch.as_tensor(item)
    if not isinstance(item, Tensor):
        raise TypeError(
            f"{name} must yield tensors or (x, y, ...) tuples whose first element is a tensor, got "
            f"{type(item).__name__}"
        )
    return item


class MapSource:
    """A map-style torch ``Dataset``, read by index in batches of ``batch_size``."""

    def __init__(self, dataset: Any, batch_size: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_inputs: Optional[int] = len(dataset)

    def load(self, start: int, size: int) -> Tensor:
        return torch.stack([_first_input(self.dataset[index]) for index in range(start, start + size)])

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

    def batches(self, needed: Needed) -> Iterator[Batch]:
        start = 0
        for number, batch in enumerate(self.loader):
            inputs = _first_input(batch)
            size = int(inputs.shape[0])
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
        source = LoaderSource(DataLoader(data, batch_size=_inputs_per_batch(batch_size)))
    elif isinstance(data, Dataset):
        if not hasattr(data, "__len__"):
            raise TypeError(
                f"data must be a map-style Dataset with __len__ or an IterableDataset, got {type(data).__name__}"
            )
        source = MapSource(data, _inputs_per_batch(batch_size))
    elif _is_ray_dataset(data):
        source = RaySource(data, _inputs_per_batch(batch_size))
    else:
        raise TypeError(
            "data must be a torch Dataset, a DataLoader or a ray.data.Dataset, got "
            f"{type(data).__name__}; wrap tensors in torch.utils.data.TensorDataset"
        )
    if source.num_inputs == 0:
        raise ValueError("data is empty: there is nothing to attribute")
    return source


def _inputs_per_batch(batch_size: Optional[int]) -> int:
    return check_positive_int(DEFAULT_INPUTS_PER_BATCH if batch_size is None else batch_size, "batch_size")
