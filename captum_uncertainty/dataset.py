"""Attribute every input of a data set and write the results as Parquet shards (issue 14).

:func:`attribute_dataset` runs an attribution method over a torch ``Dataset``, a
``DataLoader`` or a Ray Dataset, one batch at a time, and writes per input its position, the
three uncertainties, the predicted class and the map to ``out/part-00000.parquet``,
``out/part-00001.parquet``, ... plus ``out/_manifest.json`` (the configuration). Captum's
``DataLoaderAttribution`` only aggregates over a loader; this keeps every input's result.

Layout and guarantees:

* shard ``k`` holds the rows ``[k * shard_size, (k + 1) * shard_size)`` ordered by ``index``;
  it is written under a hidden temporary name and renamed (``os.replace``), so a reader never
  sees a partial shard;
* a re-run of the same call skips the shards that exist, removes stale temporary files and
  ends with the files of an uninterrupted run; a folder made with another configuration, or
  a non-empty folder without a manifest, is refused;
* every batch is attributed under its own seed (from ``seed`` and the batch's position), so
  random methods (``NoiseTunnel``, ``Lime``, MC dropout) give the same maps on every run, on
  either engine and after a resume;
* the maps are ``arrow.fixed_shape_tensor`` columns: ``pyarrow`` and ``ray.data`` return
  arrays of the map's shape; ``pandas`` returns each map flattened (C order), to be reshaped
  with ``manifest["map_shape"]`` (see :func:`read_manifest`).

The manifest is called ``_manifest.json`` rather than ``manifest.json``: pandas and
``pyarrow.dataset`` read every file of a folder whose name does not start with ``_`` or ``.``
as Parquet and fail on a JSON file.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import importlib
import json
import math
import os
import pathlib
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from captum_uncertainty.forward import Decomposition, UncertaintyForward
from captum_uncertainty.posterior import first_parameter

__all__ = [
    "DatasetResult",
    "ENGINES",
    "MANIFEST",
    "METHODS",
    "attribute_dataset",
    "bundled_posterior",
    "import_posterior",
    "method_explainer",
    "read_manifest",
]

#: File name of the manifest inside ``out`` (the leading ``_`` keeps Parquet readers off it).
MANIFEST = "_manifest.json"
SHARD_NAME = "part-{:05d}.parquet"
SHARD_PATTERN = re.compile(r"^part-(\d{5,})\.parquet$")
TEMPORARY_PATTERN = re.compile(r"^\..+\.tmp-\d+$")
ENGINES = ("local", "ray")
FORMAT = "captum_uncertainty.attribute_dataset/1"
DEFAULT_BATCH_SIZE = 64
#: Manifest keys that must match for a call to continue an existing ``out``.
CONFIG_KEYS = (
    "format",
    "library_version",
    "explainer",
    "measure",
    "num_samples",
    "attribute_kwargs",
    "batch_size",
    "shard_size",
    "seed",
    "num_inputs",
)
#: Manifest keys describing the written columns (taken from the first attributed batch).
LAYOUT_KEYS = ("columns", "map_columns", "map_shape", "map_dtype")
UNCERTAINTY_COLUMNS = ("total", "aleatoric", "epistemic")

Columns = Dict[str, np.ndarray]


class DatasetResult(NamedTuple):
    """What one :func:`~captum_uncertainty.attribute_dataset` call did.

    Args:
        out (Path): the output folder.
        num_inputs (int): rows in the whole data set (written now or before).
        shards_written (int): shards this call wrote.
        shards_skipped (int): shards that already existed (an earlier, interrupted run).
    """

    out: pathlib.Path
    num_inputs: int
    shards_written: int
    shards_skipped: int


# -- explainers --------------------------------------------------------------------------------


def explained_forward(explainer: Any, name: str = "explainer") -> UncertaintyForward:
    """The :class:`~captum_uncertainty.UncertaintyForward` an attribution object explains.

    Captum's and our methods keep it in ``forward_func``; ``NoiseTunnel`` (and other wrappers)
    in ``attribution_method.forward_func``.
    """
    forward = getattr(explainer, "forward_func", None)
    if not isinstance(forward, UncertaintyForward):
        inner = getattr(explainer, "attribution_method", None)
        forward = getattr(inner, "forward_func", forward)
    if not isinstance(forward, UncertaintyForward):
        raise TypeError(
            f"{name} must explain an UncertaintyForward (its forward_func, or attribution_method.forward_func "
            f"for NoiseTunnel), but {type(explainer).__name__} explains {type(forward).__name__}; "
            "build it as Method(UncertaintyForward(models, measure=...))"
        )
    return forward


def is_attribution(obj: Any) -> bool:
    """An object (not a class) with an ``attribute`` method."""
    return not isinstance(obj, type) and callable(getattr(obj, "attribute", None))


def resolve_explainer(explainer: Any) -> Tuple[Any, Optional[Callable[[], Any]]]:
    """``(attribution object, factory or None)``; a factory is called once here to check it."""
    if isinstance(explainer, type):
        raise TypeError(
            f"explainer must be an attribution object or a zero-argument factory, got the class "
            f"{explainer.__name__}; pass an instance such as {explainer.__name__}(forward)"
        )
    if is_attribution(explainer):
        explained_forward(explainer)
        return explainer, None
    if isinstance(explainer, torch.nn.Module) or not callable(explainer):
        raise TypeError(
            "explainer must be an attribution object whose forward is an UncertaintyForward (e.g. "
            f"UABackprop(uf), captum.attr.Saliency(uf)) or a zero-argument factory returning one, got "
            f"{type(explainer).__name__}"
        )
    built = build_explainer(explainer)
    return built, explainer


def build_explainer(factory: Callable[[], Any]) -> Any:
    """Call a zero-argument factory and check that it returned an attribution object."""
    built = factory()
    if not is_attribution(built):
        raise TypeError(
            f"explainer is a factory, but it returned {type(built).__name__}, not an attribution object "
            "(something with an attribute() method)"
        )
    explained_forward(built)
    return built


# -- the data ------------------------------------------------------------------------------------


class Batch(NamedTuple):
    """One batch of the data set: its position, first row, size and inputs (``None``: skipped)."""

    number: int
    start: int
    size: int
    inputs: Optional[Tensor]


Needed = Callable[[int, int], bool]


def first_input(item: Any, name: str = "data") -> Tensor:
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
        return torch.stack([first_input(self.dataset[index]) for index in range(start, start + size)])

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
        self.num_inputs = loader_length(loader)

    def batches(self, needed: Needed) -> Iterator[Batch]:
        start = 0
        for number, batch in enumerate(self.loader):
            inputs = first_input(batch)
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


def loader_length(loader: Any) -> Optional[int]:
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
        self.column = ray_input_column(dataset)
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


def stacked(values: np.ndarray) -> np.ndarray:
    """A batch of a Ray tensor column as one array (variable-shape columns come as object arrays)."""
    return np.stack(list(values)) if values.dtype == object else values


def is_ray_dataset(data: Any) -> bool:
    module = sys.modules.get("ray.data")
    return module is not None and isinstance(data, module.Dataset)


def ray_input_column(dataset: Any) -> str:
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


def as_source(data: Any, batch_size: Optional[int]) -> Union[MapSource, LoaderSource, RaySource]:
    """Wrap ``data``; ``TypeError`` for anything that is not a data set, ``ValueError`` if it is empty."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(data, DataLoader):
        if batch_size is not None and batch_size != data.batch_size:
            raise ValueError(
                f"batch_size={batch_size} conflicts with the DataLoader's batch_size={data.batch_size}: "
                "its own batches are used; leave batch_size unset"
            )
        source: Union[MapSource, LoaderSource, RaySource] = LoaderSource(data)
    elif isinstance(data, IterableDataset):
        source = LoaderSource(DataLoader(data, batch_size=default_batch_size(batch_size)))
    elif isinstance(data, Dataset):
        if not hasattr(data, "__len__"):
            raise TypeError(
                f"data must be a map-style Dataset with __len__ or an IterableDataset, got {type(data).__name__}"
            )
        source = MapSource(data, default_batch_size(batch_size))
    elif is_ray_dataset(data):
        source = RaySource(data, default_batch_size(batch_size))
    else:
        raise TypeError(
            "data must be a torch Dataset, a DataLoader or a ray.data.Dataset, got "
            f"{type(data).__name__}; wrap tensors in torch.utils.data.TensorDataset"
        )
    if source.num_inputs == 0:
        raise ValueError("data is empty: there is nothing to attribute")
    return source


def default_batch_size(batch_size: Optional[int]) -> int:
    return check_positive(DEFAULT_BATCH_SIZE if batch_size is None else batch_size, "batch_size")


def check_positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


# -- one batch -------------------------------------------------------------------------------------


def batch_seed(seed: int, number: int) -> int:
    """The seed of batch ``number``: independent of the engine, the order and earlier batches."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_batch(seed: int, device: torch.device) -> None:
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


def model_device(forward: UncertaintyForward) -> torch.device:
    """Where the posterior's parameters live (CPU for parameter-free posteriors)."""
    reference = first_parameter(forward.posterior.sample_modules())
    return torch.device("cpu") if reference is None else reference.device


def split_result(result: Any) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """``({map column: maps}, {delta column: deltas})`` of what ``attribute`` returned."""
    delta: Any = None
    if isinstance(result, tuple) and not isinstance(result, Decomposition):
        if len(result) != 2:
            raise TypeError(
                f"explainer.attribute returned a tuple of {len(result)} items; expected maps, (maps, delta) "
                "or a Decomposition (one input tensor per call)"
            )
        result, delta = result
    maps = named_tensors(result, "attribution", "maps")
    deltas = {} if delta is None else named_tensors(delta, "delta", "delta")
    return maps, deltas


def named_tensors(value: Any, prefix: str, what: str) -> Dict[str, Tensor]:
    if isinstance(value, Decomposition):
        return {f"{prefix}_{name}": tensor for name, tensor in zip(UNCERTAINTY_COLUMNS, value)}
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
    :func:`preserved_rng`.
    """
    inputs = inputs.to(model_device(forward))
    size = int(inputs.shape[0])
    seed_batch(batch_seed(seed, number), inputs.device)
    maps, deltas = split_result(explainer.attribute(inputs, **attribute_kwargs))
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


# -- the manifest ----------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """A JSON form of an ``attribute`` argument; tensors become shape, dtype and a sha256 of their bytes."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, (Tensor, np.ndarray)):
        return tensor_summary(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_safe(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if callable(value):
        return {"callable": qualified_name(value)}
    return {"object": qualified_name(type(value)), "repr": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))}


def tensor_summary(value: Union[Tensor, np.ndarray]) -> Dict[str, Any]:
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value).tobytes()
    else:
        data = value.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
    digest = hashlib.sha256(data).hexdigest()
    return {"tensor": {"shape": list(value.shape), "dtype": str(value.dtype), "sha256": digest}}


def qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def run_config(
    explainer: Any,
    forward: UncertaintyForward,
    attribute_kwargs: Dict[str, Any],
    batch_size: Optional[int],
    shard_size: int,
    seed: int,
    num_inputs: Optional[int],
) -> Dict[str, Any]:
    from captum_uncertainty import __version__

    try:
        num_samples: Optional[int] = int(forward.num_samples)
    except ValueError:  # a SampleCallable learns S on its first call
        num_samples = None
    return {
        "format": FORMAT,
        "library_version": __version__,
        "explainer": type(explainer).__name__,
        "measure": forward.measure,
        "num_samples": num_samples,
        "attribute_kwargs": json_safe(attribute_kwargs),
        "batch_size": batch_size,
        "shard_size": shard_size,
        "seed": seed,
        "num_inputs": num_inputs,
    }


def read_manifest(out: Union[str, Path]) -> Dict[str, Any]:
    """The manifest of a folder written by :func:`~captum_uncertainty.attribute_dataset`.

    Args:
        out (str or Path): the output folder.

    Returns:
        dict: the configuration (``explainer``, ``measure``, ``num_samples``,
        ``attribute_kwargs``, ``batch_size``, ``shard_size``, ``seed``, ``library_version``), the
        columns (``columns``, ``map_columns``, ``map_shape``, ``map_dtype``) and, once the run
        has finished, ``num_inputs``, ``num_shards`` and ``complete=True``.

    Examples::

        >>> manifest = read_manifest("out/maps")
        >>> frame = pandas.read_parquet("out/maps")
        >>> maps = numpy.stack(frame["attribution"]).reshape(-1, *manifest["map_shape"])
    """
    path = Path(out) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"out {Path(out)} has no {MANIFEST}: it was not written by attribute_dataset") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the folder is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a manifest of attribute_dataset (format {FORMAT!r})")
    return manifest


def differing_keys(stored: Dict[str, Any], config: Dict[str, Any], keys: Sequence[str]) -> List[str]:
    """Keys whose values differ (``num_inputs`` only when both runs know it)."""
    different = []
    for key in keys:
        old, new = stored.get(key), config.get(key)
        if key in ("num_inputs", "num_samples") and (old is None or new is None):
            continue
        if old != new:
            different.append(key)
    return different


def describe_differences(stored: Dict[str, Any], config: Dict[str, Any], keys: Sequence[str]) -> str:
    def short(value: Any) -> str:
        text = json.dumps(value, sort_keys=True)
        return text if len(text) <= 80 else text[:77] + "..."

    return "; ".join(f"{key}: {short(stored.get(key))} there, {short(config.get(key))} now" for key in keys)


def write_json(path: Path, data: Dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (hidden temporary file, then ``os.replace``)."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


# -- the output folder -----------------------------------------------------------------------------


def prepare_output(folder: Path, config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Check ``out`` and return its manifest (``None`` for a new folder); remove stale temporaries.

    Refuses (``ValueError``) a file, a non-empty folder without a manifest and a folder whose
    manifest was written with another configuration.
    """
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out must be a folder, but {folder} is a file")
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(path.name for path in folder.iterdir())
    temporaries = [name for name in names if TEMPORARY_PATTERN.match(name)]
    stored: Optional[Dict[str, Any]] = None
    if MANIFEST in names:
        stored = read_manifest(folder)
        different = differing_keys(stored, config, CONFIG_KEYS)
        if different:
            raise ValueError(
                f"out {folder} holds results of another configuration; keys that differ: {', '.join(different)} "
                f"({describe_differences(stored, config, different)}); use another folder or delete this one"
            )
    else:
        foreign = [name for name in names if name not in temporaries]
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise ValueError(
                f"out {folder} is not empty and has no {MANIFEST} (it holds {shown}): refusing to write "
                "into a folder attribute_dataset did not create; use an empty or new folder"
            )
    for name in temporaries:
        (folder / name).unlink(missing_ok=True)
    return stored


def finished_shards(folder: Path) -> Set[int]:
    """Numbers of the shards whose final file exists."""
    found = set()
    for path in folder.iterdir():
        match = SHARD_PATTERN.match(path.name)
        if match:
            found.add(int(match.group(1)))
    return found


class ShardWriter:
    """Collects attributed rows and writes each shard once all its rows are there.

    Rows of finished shards are dropped; a shard is written under a hidden temporary name, then
    renamed, by a background thread while the next batches are attributed (at most one shard is
    being written; its errors surface at the next write or at :meth:`close`). Holds at most the
    rows of the shards in progress (one, when batches arrive in order) and the shard being written.
    """

    def __init__(
        self,
        folder: Path,
        shard_size: int,
        num_inputs: Optional[int],
        finished: Set[int],
        config: Dict[str, Any],
        stored: Optional[Dict[str, Any]],
    ) -> None:
        self.folder = folder
        self.shard_size = shard_size
        self.num_inputs = num_inputs
        self.finished = set(finished)
        self.config = config
        self.layout = None if stored is None else {key: stored.get(key) for key in LAYOUT_KEYS}
        self.checked = False
        self.pending: Dict[int, List[Columns]] = {}
        self.written = 0
        self.thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="attribute_dataset-writer"
        )
        self.in_flight: Optional[concurrent.futures.Future] = None

    def needed(self, start: int, size: int) -> bool:
        """Whether a batch of rows ``[start, start + size)`` touches a shard that is not finished."""
        first, last = start // self.shard_size, (start + size - 1) // self.shard_size
        return any(shard not in self.finished for shard in range(first, last + 1))

    def expected_rows(self, shard: int) -> int:
        if self.num_inputs is None:
            return self.shard_size
        return min(self.shard_size, self.num_inputs - shard * self.shard_size)

    def add(self, columns: Columns) -> None:
        self.check_layout(columns)
        shards = columns["index"] // self.shard_size
        for shard in np.unique(shards).tolist():
            if shard in self.finished:
                continue
            rows = shards == shard
            self.pending.setdefault(shard, []).append({name: values[rows] for name, values in columns.items()})
            if sum(len(piece["index"]) for piece in self.pending[shard]) >= self.expected_rows(shard):
                self.flush(shard)

    def check_layout(self, columns: Columns) -> None:
        """Write the manifest before the first shard; later batches must have the same columns."""
        if self.checked:
            return
        layout = layout_of(columns)
        if self.layout is None:
            write_json(self.folder / MANIFEST, {**self.config, **layout, "complete": False})
        elif self.layout != layout:
            different = differing_keys(self.layout, layout, LAYOUT_KEYS)
            raise ValueError(
                f"out {self.folder} holds other columns than this run writes; keys that differ: "
                f"{', '.join(different)} "
                f"({describe_differences(self.layout, layout, different)}); use another folder or delete this one"
            )
        self.layout, self.checked = layout, True

    def flush(self, shard: int) -> None:
        pieces = self.pending.pop(shard)
        columns = {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}
        order = np.argsort(columns["index"], kind="stable")
        columns = {name: values[order] for name, values in columns.items()}
        first = shard * self.shard_size
        expected = np.arange(first, first + self.expected_rows(shard), dtype=np.int64)
        if not np.array_equal(columns["index"], expected):
            found = columns["index"].tolist()[:5]
            raise RuntimeError(f"shard {shard} would hold rows {found}..., not {first}, {first + 1}, ... in order")
        order = self.layout["columns"] if self.layout else list(columns)
        self.wait()
        self.in_flight = self.thread.submit(write_shard, self.folder, shard, columns, order)
        self.finished.add(shard)
        self.written += 1

    def wait(self) -> None:
        """Block until the shard being written is on disk; re-raises its error."""
        if self.in_flight is not None:
            future, self.in_flight = self.in_flight, None
            future.result()

    def close(self, num_inputs: int) -> None:
        """Write the last (short) shard once the data set's length is known, and wait for the writes."""
        self.num_inputs = num_inputs
        for shard in sorted(self.pending):
            if sum(len(piece["index"]) for piece in self.pending[shard]) != self.expected_rows(shard):
                raise RuntimeError(f"shard {shard} is missing rows at the end of the data")
            self.flush(shard)
        self.wait()

    def stop(self) -> None:
        """Let the shard being written finish (after an error too) and end the thread."""
        try:
            if self.in_flight is not None:
                concurrent.futures.wait([self.in_flight])
        finally:
            self.thread.shutdown(wait=True)


def write_shard(folder: Path, shard: int, columns: Columns, order: Sequence[str]) -> None:
    """Write one shard to a hidden temporary file, then rename it to ``part-NNNNN.parquet``."""
    import pyarrow.parquet as pq

    final = folder / SHARD_NAME.format(shard)
    temporary = folder / f".{final.name}.tmp-{os.getpid()}"
    pq.write_table(arrow_table(columns, order), temporary)
    os.replace(temporary, final)


def arrow_table(columns: Columns, order: Sequence[str]) -> Any:
    """A pyarrow table; maps become ``arrow.fixed_shape_tensor`` columns."""
    import pyarrow as pa

    arrays = {}
    for name in order:
        values = columns[name]
        if values.ndim > 1:
            arrays[name] = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


# -- the engines ------------------------------------------------------------------------------------


class Job(NamedTuple):
    """Everything a worker needs to attribute a batch."""

    explainer: Any
    factory: Optional[Callable[[], Any]]
    attribute_kwargs: Dict[str, Any]
    seed: int
    batch_size: int


def run_local(job: Job, source: Union[MapSource, LoaderSource, RaySource], writer: ShardWriter, bar: Any) -> int:
    """Attribute batch after batch in this process; returns the number of inputs seen."""
    forward = explained_forward(job.explainer)
    seen = 0
    with preserved_rng(model_device(forward)):
        for batch in source.batches(writer.needed):
            if batch.inputs is not None:
                writer.add(
                    attribute_batch(
                        job.explainer, forward, batch.inputs, batch.start, batch.number, job.seed, job.attribute_kwargs
                    )
                )
            seen += batch.size
            bar.update(batch.size)
    return seen


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError("engine='ray' needs Ray Data: pip install captum-uncertainty[ray]") from error
    return ray


def import_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "attribute_dataset writes Parquet with pyarrow: pip install captum-uncertainty[dataset]"
        ) from error


class BlockLoader:
    """Batches of a Ray Dataset read by position from its blocks in the object store.

    ``ray.data.Dataset.to_numpy_refs`` materialises the input column as ordered blocks (in the
    object store, not in this process); ``offsets`` are their first rows. A worker fetches only
    the blocks a batch overlaps.
    """

    def __init__(self, blocks: Sequence[Any], offsets: np.ndarray) -> None:
        self.blocks = list(blocks)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.num_inputs = int(self.offsets[-1])
        self.cached: Tuple[int, Optional[np.ndarray]] = (-1, None)

    def block(self, position: int) -> np.ndarray:
        if self.cached[0] != position:
            import ray

            self.cached = (position, stacked(ray.get(self.blocks[position])))
        assert self.cached[1] is not None
        return self.cached[1]

    def load(self, start: int, size: int) -> Tensor:
        parts = []
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        position, row = first, start
        while row < start + size:
            values = self.block(position)
            begin = row - int(self.offsets[position])
            take = min(start + size - row, len(values) - begin)
            parts.append(values[begin : begin + take])
            row += take
            position += 1
        return torch.tensor(np.concatenate(parts), device="cpu")  # host data, moved to the model later


def block_rows(values: np.ndarray) -> int:
    """Rows of one block (run as a Ray task, next to the block)."""
    return len(values)


def block_loader(ray: Any, source: RaySource) -> BlockLoader:
    """Materialise the input column of a Ray Dataset as ordered blocks and count their rows."""
    blocks = source.dataset.select_columns([source.column]).to_numpy_refs(column=source.column)
    count = ray.remote(block_rows)
    sizes = ray.get([count.remote(block) for block in blocks])
    return BlockLoader(blocks, np.concatenate([[0], np.cumsum(sizes)]))


class RayAttributor:
    """The stateful callable of the Ray engine: builds (or unpickles) the explainer once per worker.

    Its rows are batch numbers; batch ``b`` holds the inputs ``[b * batch_size, (b + 1) *
    batch_size)``, read by index from a torch ``Dataset`` or from a Ray Dataset's blocks, so each
    call attributes exactly the batch the local engine would, under the same seed.
    """

    def __init__(self, job: Job, inputs: Union[MapSource, BlockLoader]) -> None:
        self.job = job
        self.explainer = job.explainer if job.factory is None else build_explainer(job.factory)
        self.forward = explained_forward(self.explainer)
        self.inputs = inputs

    def __call__(self, rows: Dict[str, np.ndarray]) -> Columns:
        parts = [self.attribute_number(int(number)) for number in rows["batch"]]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def attribute_number(self, number: int) -> Columns:
        start = number * self.job.batch_size
        size = min(self.job.batch_size, int(self.inputs.num_inputs or 0) - start)
        inputs = self.inputs.load(start, size)
        return attribute_batch(
            self.explainer, self.forward, inputs, start, number, self.job.seed, self.job.attribute_kwargs
        )


@contextlib.contextmanager
def ordered_ray_data(ray: Any, progress: bool) -> Iterator[None]:
    """Ray Data that keeps the row order (so shards are written as soon as they are complete)."""
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved


def actor_pool(ray: Any, concurrency: Any, num_gpus: Optional[float]) -> Any:
    """``ActorPoolStrategy`` of ``concurrency`` actors (a number or ``(min, max)``); by default
    autoscaling up to one actor per CPU (per GPU with ``num_gpus``) of the cluster."""
    if concurrency is None:
        resources = ray.cluster_resources()
        workers = int(resources.get("GPU", 0) // num_gpus) if num_gpus else int(resources.get("CPU", 1))
        return ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, workers))
    if isinstance(concurrency, tuple) and len(concurrency) == 2:
        low, high = (check_positive(value, "concurrency") for value in concurrency)
        return ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    return ray.data.ActorPoolStrategy(size=check_positive(concurrency, "concurrency"))


def run_ray(
    job: Job,
    source: Union[MapSource, LoaderSource, RaySource],
    writer: ShardWriter,
    bar: Any,
    concurrency: Any,
    num_gpus: Optional[float],
    progress: bool,
) -> int:
    """The Ray Data engine: ``map_batches`` over the pending batch numbers with :class:`RayAttributor` actors."""
    ray = import_ray()
    if isinstance(source, LoaderSource):
        source = source.as_map_source()
    total = int(source.num_inputs or 0)
    batch_size = job.batch_size
    sizes = {number: min(batch_size, total - start) for number, start in enumerate(range(0, total, batch_size))}
    pending = [number for number, size in sizes.items() if writer.needed(number * batch_size, size)]
    bar.update(sum(size for number, size in sizes.items() if number not in set(pending)))
    if not pending:
        return total
    if not ray.is_initialized():  # what Ray Data would do on first use; done here to size the actor pool
        ray.init()
    compute = actor_pool(ray, concurrency, num_gpus)
    with ordered_ray_data(ray, progress):
        inputs = source if isinstance(source, MapSource) else block_loader(ray, source)
        numbers = ray.data.from_items([{"batch": number} for number in pending])
        results = numbers.map_batches(
            RayAttributor,
            batch_size=1,
            batch_format="numpy",
            compute=compute,
            num_gpus=num_gpus,
            fn_constructor_kwargs={"job": job, "inputs": inputs},
        )
        for columns in results.iter_batches(batch_size=None, batch_format="numpy"):
            columns = {name: np.asarray(values) for name, values in columns.items()}
            writer.add(columns)
            bar.update(len(columns["index"]))
    return total


# -- the public function ----------------------------------------------------------------------------


def attribute_dataset(
    explainer: Any,
    data: Any,
    out: Union[str, Path],
    *,
    batch_size: Optional[int] = None,
    engine: str = "local",
    shard_size: Optional[int] = None,
    concurrency: Optional[Union[int, Tuple[int, int]]] = None,
    num_gpus: Optional[float] = None,
    seed: int = 0,
    progress: bool = True,
    **attribute_kwargs: Any,
) -> DatasetResult:
    r"""Attribute the uncertainty of every input of a data set; write the results as Parquet shards.

    Per input, ``out`` gets one row with ``index`` (int64, the input's position in the data
    set), ``predicted`` (int64, the argmax of the posterior predictive), ``total``,
    ``aleatoric`` and ``epistemic`` (float64, as :meth:`UncertaintyForward.decompose
    <captum_uncertainty.UncertaintyForward.decompose>`), and the map in ``attribution`` (an
    ``arrow.fixed_shape_tensor`` column). If ``attribute`` returns a
    :class:`~captum_uncertainty.Decomposition` (``decompose=True``) the maps go to
    ``attribution_total``, ``attribution_aleatoric`` and ``attribution_epistemic``; if it
    returns ``(maps, delta)`` (``return_convergence_delta=True``) the delta goes to ``delta``.

    ``out`` becomes a Parquet data set that ``pandas.read_parquet(out)``,
    ``pyarrow.dataset.dataset(out)`` and ``ray.data.read_parquet(out)`` read directly: shards
    ``part-00000.parquet``, ``part-00001.parquet``, ... (shard ``k`` holds rows
    ``[k * shard_size, (k + 1) * shard_size)``) and ``_manifest.json``, the configuration
    (see :func:`~captum_uncertainty.dataset.read_manifest`). pyarrow and Ray return the maps with
    their shape, pandas flattened (reshape with ``manifest["map_shape"]``).

    The job is resumable: each shard is written under a hidden temporary name and renamed, so a
    shard either exists whole or not at all. After an exception or a killed process, the same
    call skips the finished shards and ends with the files of an uninterrupted run. ``out``
    written with another configuration (explainer class, measure, number of samples,
    ``attribute_kwargs``, batch or shard size, seed, number of inputs, library version) is
    refused, as is a non-empty folder without a manifest. Shards are written by a background
    thread while the next batches are attributed; memory holds one batch of inputs, the shard
    being filled and the shard being written, whatever the size of the data set.

    Args:
        explainer (object or callable): an attribution object of this package or of Captum whose
            forward function is an :class:`~captum_uncertainty.UncertaintyForward`
            (``forward_func``, or ``attribution_method.forward_func`` for
            :class:`~captum.attr.NoiseTunnel`), or a zero-argument factory returning one (each
            Ray worker then builds its own).
        data (object): a torch ``Dataset`` (items are tensors or ``(x, y, ...)`` tuples whose
            first element is the input), a ``DataLoader`` (its batches, in its order), or a
            ``ray.data.Dataset`` (column ``"x"`` or its only tensor column).
        out (str or Path): output folder, created if missing.
        batch_size (int, optional): inputs per ``attribute`` call. Default: 64, or a
            ``DataLoader``'s own batch size (another value then raises ``ValueError``).
        engine (str): ``"local"`` (this process) or ``"ray"`` (Ray Data actors; the same files).
            Default: ``"local"``.
        shard_size (int, optional): rows per Parquet file. Default: the batch size.
        concurrency (int or tuple, optional): Ray actors (a number, or ``(min, max)`` to
            autoscale), passed to Ray Data as an ``ActorPoolStrategy``.
            Default: autoscaling up to one per CPU (per GPU with ``num_gpus``) of the cluster.
        num_gpus (float, optional): GPUs per Ray actor.
        seed (int): base seed; batch ``b`` runs under a seed made of ``(seed, b)``, so random
            methods give identical maps on every run. Default: 0.
        progress (bool): show a tqdm progress bar. Default: ``True``.
        **attribute_kwargs: passed to ``explainer.attribute`` on every batch (e.g.
            ``path="inputgrad"``, ``decompose=True``); recorded in the manifest (tensors by
            shape, dtype and sha256).

    Returns:
        DatasetResult: ``(out, num_inputs, shards_written, shards_skipped)``.

    Examples::

        >>> uf = UncertaintyForward(models, measure="epistemic")
        >>> result = attribute_dataset(UABackprop(uf), TensorDataset(x), "out/maps", path="inputgrad")
        >>> frame = pandas.read_parquet("out/maps")      # index, predicted, total, ..., attribution
        >>> attribute_dataset(lambda: UABackprop(load_posterior()), dataset, "out/maps",
        ...                   engine="ray", concurrency=8, path="inputgrad")
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "local" and (concurrency is not None or num_gpus is not None):
        raise ValueError("concurrency and num_gpus apply to engine='ray' only")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    import_pyarrow()
    if engine == "ray":
        import_ray()
    resolved, factory = resolve_explainer(explainer)
    forward = explained_forward(resolved)
    source = as_source(data, batch_size)
    effective_batch = source.batch_size
    batch = effective_batch or DEFAULT_BATCH_SIZE
    shard_size = check_positive(batch if shard_size is None else shard_size, "shard_size")
    folder = Path(out)
    config = run_config(resolved, forward, attribute_kwargs, effective_batch, shard_size, seed, source.num_inputs)
    stored = prepare_output(folder, config)
    finished = finished_shards(folder)
    writer = ShardWriter(folder, shard_size, source.num_inputs, finished, config, stored)
    job = Job(resolved if factory is None else None, factory, attribute_kwargs, seed, batch)

    from tqdm.auto import tqdm

    try:
        with tqdm(total=source.num_inputs, unit="input", desc="attribute_dataset", disable=not progress) as bar:
            if engine == "local":
                num_inputs = run_local(job._replace(explainer=resolved), source, writer, bar)
            else:
                num_inputs = run_ray(job, source, writer, bar, concurrency, num_gpus, progress)
        if num_inputs == 0:
            raise ValueError("data is empty: there is nothing to attribute")
        if source.num_inputs is not None and num_inputs != source.num_inputs:
            raise ValueError(f"data yielded {num_inputs} inputs but has length {source.num_inputs}")
        writer.close(num_inputs)
    finally:
        writer.stop()
    num_shards = math.ceil(num_inputs / shard_size)
    missing = sorted(set(range(num_shards)) - finished_shards(folder))
    if missing:
        raise RuntimeError(f"shards {missing[:5]} of {folder} were not written")
    layout = writer.layout if writer.layout is not None else {}
    final = {**config, **layout, "num_inputs": num_inputs, "num_shards": num_shards, "complete": True}
    write_json(folder / MANIFEST, final)
    return DatasetResult(folder, num_inputs, writer.written, num_shards - writer.written)


# -- command-line helpers ----------------------------------------------------------------------------


def bundled_posterior() -> UncertaintyForward:
    """The demo's posterior: the cached 5-CNN ensemble on the bundled MNIST digits, epistemic.

    Trains it on the first call (a few minutes on a CPU), then loads it from ``.cache/``, as
    ``python -m captum_uncertainty demo`` does. The default ``--posterior`` of
    ``python -m captum_uncertainty attribute``.
    """
    from captum_uncertainty.data import load_mnist, train_ensemble

    return UncertaintyForward(train_ensemble(n_members=5, data=load_mnist()), measure="epistemic")


def import_posterior(spec: str) -> UncertaintyForward:
    """Import ``MODULE:FUNCTION`` (uvicorn's convention) and call it to get an UncertaintyForward.

    Args:
        spec (str): ``"package.module:function"``; the function takes no arguments.

    Returns:
        UncertaintyForward: what the function returned.

    Raises ``ValueError`` naming the problem: a malformed spec, a module that cannot be imported,
    a missing or non-callable attribute, or a result that is not an UncertaintyForward.
    """
    module_name, colon, attribute = str(spec).partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"--posterior must be MODULE:FUNCTION, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"--posterior {spec!r}: cannot import {module_name!r} ({error})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"--posterior {spec!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"--posterior {spec!r} is a {type(target).__name__}, not a function")
    forward = target()
    if not isinstance(forward, UncertaintyForward):
        raise ValueError(f"--posterior {spec!r} returned {type(forward).__name__}, not an UncertaintyForward")
    return forward


def ua_backprop(forward: UncertaintyForward) -> Any:
    from captum_uncertainty.attr import UABackprop

    return UABackprop(forward)


def integrated_gradients(forward: UncertaintyForward) -> Any:
    from captum_uncertainty.attr import UncertaintyIntegratedGradients

    return UncertaintyIntegratedGradients(forward)


def saliency(forward: UncertaintyForward) -> Any:
    from captum.attr import Saliency

    return Saliency(forward)


def blur_ig(forward: UncertaintyForward) -> Any:
    from captum_uncertainty.attr import BlurIntegratedGradients

    return BlurIntegratedGradients(forward)


#: The command line's ``--method`` choices: name -> (constructor, ``attribute`` arguments).
METHODS: Dict[str, Tuple[Callable[[UncertaintyForward], Any], Dict[str, Any]]] = {
    "ua_backprop": (ua_backprop, {"path": "inputgrad"}),
    "integrated_gradients": (integrated_gradients, {}),
    "saliency": (saliency, {}),
    "blur_ig": (blur_ig, {}),
}


def method_explainer(name: str, forward: UncertaintyForward) -> Tuple[Any, Dict[str, Any]]:
    """The attribution object of a :data:`METHODS` name and its ``attribute`` arguments."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {name!r}")
    build, kwargs = METHODS[name]
    return build(forward), dict(kwargs)


def posterior_explainer(spec: str, method: str, measure: Optional[str] = None) -> Any:
    """Zero-argument-factory body for the command line's Ray workers (use with ``functools.partial``)."""
    forward = import_posterior(spec)
    if measure is not None:
        forward = forward.with_measure(measure)
    return method_explainer(method, forward)[0]


def explainer_factory(spec: str, method: str, measure: Optional[str] = None) -> Callable[[], Any]:
    """A picklable zero-argument factory building ``method`` on the posterior ``spec``."""
    return functools.partial(posterior_explainer, spec, method, measure)
