"""The engines: batch after batch in this process, or Ray Data workers; both write the same files.

The local engine attributes the batches in order and hands their rows to one
:class:`~captum_uncertainty.dataset._shards.ShardWriter`. The Ray engine splits the rows into
work units of whole shards (:func:`work_units`); a Ray Data actor (:class:`RayWorker`)
attributes every batch of its unit, in order, with its own ``ShardWriter`` and writes the
unit's shards into ``out`` itself. The driver receives per shard only a small record (shard
number, rows, input hash, columns), never the maps, and writes the manifest.
"""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from captum_uncertainty._validation import check_positive_int
from captum_uncertainty.dataset._batch import attribute_batch, preserved_rng
from captum_uncertainty.dataset._explainers import build_explainer, explained_forward, model_device
from captum_uncertainty.dataset._folder import LOCK
from captum_uncertainty.dataset._shards import ShardRecord, ShardWriter, input_row_digests
from captum_uncertainty.dataset._sources import LoaderSource, MapSource, RaySource, Source, stacked

__all__ = [
    "ENGINES",
    "SUPPORTED_ENGINES",
    "Job",
    "RayWorker",
    "Target",
    "block_loader",
    "import_ray",
    "run_local",
    "run_ray",
    "work_units",
]

#: The ``engine`` choices of :func:`~captum_uncertainty.attribute_dataset`.
SUPPORTED_ENGINES = ("local", "ray")
#: Deprecated alias of :data:`SUPPORTED_ENGINES`, kept for one release.
ENGINES = SUPPORTED_ENGINES
#: When the least common multiple of batch and shard size exceeds this many of the larger one, a
#: Ray work unit is the fewest whole shards covering this many batches (see :func:`work_units`).
_UNIT_BATCHES = 8


class Job(NamedTuple):
    """Everything a worker needs to attribute a batch."""

    explainer: Any
    factory: Optional[Callable[[], Any]]
    attribute_kwargs: Dict[str, Any]
    seed: int
    batch_size: int


def run_local(job: Job, source: Source, writer: ShardWriter, bar: Any) -> int:
    """Attribute batch after batch in this process; returns the number of inputs seen."""
    forward = explained_forward(job.explainer)
    seen = 0
    with preserved_rng(model_device(forward)):
        for batch in source.batches(writer.needed):
            if batch.inputs is not None:
                writer.add(
                    attribute_batch(
                        job.explainer, forward, batch.inputs, batch.start, batch.number, job.seed, job.attribute_kwargs
                    ),
                    input_row_digests(batch.inputs),
                )
            seen += batch.size
            bar.update(batch.size)
    return seen


def import_ray() -> Any:
    """``ray``, with Ray Data imported; ``ImportError`` naming the extra when it is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError("engine='ray' needs Ray Data: pip install captum-uncertainty[ray]") from error
    return ray


class _BlockLoader:
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


def _block_rows(values: np.ndarray) -> int:
    """Rows of one block (run as a Ray task, next to the block)."""
    return len(values)


def block_loader(ray: Any, source: RaySource) -> _BlockLoader:
    """Materialise the input column of a Ray Dataset as ordered blocks and count their rows."""
    blocks = source.dataset.select_columns([source.column]).to_numpy_refs(column=source.column)
    count = ray.remote(_block_rows)
    sizes = ray.get([count.remote(block) for block in blocks])
    return _BlockLoader(blocks, np.concatenate([[0], np.cumsum(sizes)]))


class Target(NamedTuple):
    """Where and what the Ray workers write: the folder, the shard layout and what is there already."""

    folder: str
    shard_size: int
    num_inputs: int
    finished: FrozenSet[int]
    layout: Optional[Dict[str, Any]]
    lock: str


def work_units(num_inputs: int, batch_size: int, shard_size: int) -> List[Tuple[int, int]]:
    """The Ray engine's work units: row ranges ``[start, stop)`` of whole shards, in order.

    A unit is the least common multiple of the batch and shard sizes, so that it holds whole
    batches as well and every batch is attributed once, as by the local engine (one batch when
    the shards divide the batches, one shard when the batches divide the shards). When that
    multiple exceeds :data:`_UNIT_BATCHES` times the larger size (sizes with few common factors,
    64 and 100: 1,600 rows), it would leave few units to share out; the unit is then the fewest
    whole shards covering :data:`_UNIT_BATCHES` batches (600 rows), and a batch that straddles
    two units is attributed by both (each keeps the rows of its own shards), at most one extra
    batch per unit.

    Examples::

        >>> work_units(40, 8, 12)     # lcm 24: batches 0-2 are shards 0-1
        [(0, 24), (24, 40)]
        >>> work_units(2000, 64, 100)
        [(0, 600), (600, 1200), (1200, 1800), (1800, 2000)]
    """
    span = math.lcm(batch_size, shard_size)
    if span > _UNIT_BATCHES * max(batch_size, shard_size):
        span = shard_size * math.ceil(_UNIT_BATCHES * batch_size / shard_size)
    return [(start, min(start + span, num_inputs)) for start in range(0, num_inputs, span)]


class RayWorker:
    """The stateful callable of the Ray engine: attributes whole work units and writes their shards.

    Builds (or unpickles) the explainer once per actor. Each row it is called with is a work
    unit ``[start, stop)`` (:func:`work_units`); it attributes the unit's batches in order,
    batch ``b`` holding the inputs ``[b * batch_size, (b + 1) * batch_size)`` read by index from
    a torch ``Dataset`` or from a Ray Dataset's blocks, under the same seed as the local engine,
    and writes the unit's unfinished shards into ``out`` with a
    :class:`~captum_uncertainty.dataset._shards.ShardWriter` (fsync'd, renamed). It returns
    one small record per shard written: ``shard``, ``rows``, ``inputs_sha256`` and ``layout``
    (the columns, as JSON); the maps never leave the worker.
    """

    def __init__(self, job: Job, inputs: Union[MapSource, _BlockLoader], target: Target) -> None:
        self.job = job
        self.explainer = job.explainer if job.factory is None else build_explainer(job.factory)
        self.forward = explained_forward(self.explainer)
        self.inputs = inputs
        self.target = target
        self.folder = Path(target.folder)
        self.layout = target.layout
        self.folder_checked = False

    def __call__(self, rows: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.check_folder()
        records: List[ShardRecord] = []
        for start, stop in zip(rows["start"].tolist(), rows["stop"].tolist()):
            records.extend(self.write_unit(int(start), int(stop)))
        layout = json.dumps(self.layout, sort_keys=True)
        return {
            "shard": np.array([record.shard for record in records], dtype=np.int64),
            "rows": np.array([record.rows for record in records], dtype=np.int64),
            "inputs_sha256": np.array([record.inputs_sha256 for record in records], dtype=str),
            "layout": np.array([layout] * len(records), dtype=str),
        }

    def check_folder(self) -> None:
        """Refuse to write unless this worker sees the driver's ``out`` (its lock file, with this run's token)."""
        if self.folder_checked:
            return
        try:
            found: Optional[str] = (self.folder / LOCK).read_text(encoding="utf-8")
        except OSError:
            found = None
        if found != self.target.lock:
            raise RuntimeError(
                f"the Ray worker pid {os.getpid()} on host {socket.gethostname()} does not find this run's lock "
                f"{self.folder / LOCK}: with engine='ray' the workers write the shards into out themselves, so out "
                "must be a folder that the driver and every worker reach under the same path (a shared file "
                "system, or a single machine)"
            )
        self.folder_checked = True

    def write_unit(self, start: int, stop: int) -> List[ShardRecord]:
        """Attribute the batches of rows ``[start, stop)`` in order and write the unit's unfinished shards."""
        target, batch_size = self.target, self.job.batch_size
        shards = range(start // target.shard_size, -(-stop // target.shard_size))
        writer = ShardWriter(
            self.folder, target.shard_size, target.num_inputs, target.finished, self.layout, shards=shards
        )
        try:
            for number in range(start // batch_size, (stop - 1) // batch_size + 1):
                first = number * batch_size
                size = min(batch_size, target.num_inputs - first)
                if not writer.needed(first, size):
                    continue
                inputs = self.inputs.load(first, size)
                columns = attribute_batch(
                    self.explainer, self.forward, inputs, first, number, self.job.seed, self.job.attribute_kwargs
                )
                writer.add(columns, input_row_digests(inputs))
            writer.close(target.num_inputs)
        finally:
            writer.stop()
        self.layout = writer.layout  # the next units of this actor must have the same columns
        return writer.records


def _actor_pool(ray: Any, concurrency: Any, num_gpus: Optional[float]) -> Any:
    """``ActorPoolStrategy`` of ``concurrency`` actors (a number or ``(min, max)``); by default
    autoscaling up to one actor per CPU (per GPU with ``num_gpus``) of the cluster."""
    if concurrency is None:
        resources = ray.cluster_resources()
        workers = int(resources.get("GPU", 0) // num_gpus) if num_gpus else int(resources.get("CPU", 1))
        return ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, workers))
    if isinstance(concurrency, tuple) and len(concurrency) == 2:
        low, high = (check_positive_int(value, "concurrency") for value in concurrency)
        return ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    return ray.data.ActorPoolStrategy(size=check_positive_int(concurrency, "concurrency"))


def _received_records(columns: Dict[str, Any]) -> List[Tuple[ShardRecord, Dict[str, Any]]]:
    """The driver's side of a batch of worker results: ``(record, layout)`` per shard written."""
    return [
        (ShardRecord(int(shard), int(rows), str(digest)), json.loads(str(layout)))
        for shard, rows, digest, layout in zip(
            columns["shard"], columns["rows"], columns["inputs_sha256"], columns["layout"]
        )
    ]


def run_ray(
    job: Job,
    source: Source,
    target: Target,
    bar: Any,
    concurrency: Any,
    num_gpus: Optional[float],
    progress: bool,
    on_layout: Callable[[Dict[str, Any]], None],
) -> Tuple[int, List[ShardRecord]]:
    """The Ray Data engine: ``map_batches`` over the pending work units with :class:`RayWorker` actors.

    The workers write the shards; the driver collects their records (checking that every
    pending shard was written, with one set of columns, ``on_layout`` called with it on the
    first record) and returns ``(number of inputs, records)``.
    """
    ray = import_ray()
    if isinstance(source, LoaderSource):  # attribute_dataset converts it before touching out
        source = source.as_map_source()
    total = int(source.num_inputs or 0)
    shard_size = target.shard_size
    pending_shards = set(range(-(-total // shard_size))) - target.finished
    units = [
        (start, stop)
        for start, stop in work_units(total, job.batch_size, shard_size)
        if any(shard in pending_shards for shard in range(start // shard_size, -(-stop // shard_size)))
    ]
    bar.update(total - sum(min(shard_size, total - shard * shard_size) for shard in pending_shards))
    if not units:
        return total, []
    if not ray.is_initialized():  # what Ray Data would do on first use; done here to size the actor pool
        ray.init()
    compute = _actor_pool(ray, concurrency, num_gpus)
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars
    context.enable_progress_bars = progress
    records: List[ShardRecord] = []
    layout = target.layout
    try:
        inputs = source if isinstance(source, MapSource) else block_loader(ray, source)
        items = ray.data.from_items([{"start": start, "stop": stop} for start, stop in units])
        results = items.map_batches(
            RayWorker,
            batch_size=1,
            batch_format="numpy",
            compute=compute,
            num_gpus=num_gpus,
            fn_constructor_kwargs={"job": job, "inputs": inputs, "target": target},
        )
        batches = results.iter_batches(batch_size=None, batch_format="numpy")
        try:
            for columns in batches:
                for record, found in _received_records(columns):
                    if layout is None:
                        layout = found
                        on_layout(found)
                    elif found != layout:
                        raise RuntimeError(f"the Ray workers wrote shards with other columns: {found} and {layout}")
                    records.append(record)
                    bar.update(record.rows)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:  # stops the actors before the caller releases the folder
                close()
    finally:
        context.enable_progress_bars = saved
    written = sorted(record.shard for record in records)
    if written != sorted(pending_shards):
        missing = sorted(pending_shards - set(written))[:5]
        raise RuntimeError(f"the Ray workers did not report shards {missing} of {target.folder}")
    return total, records
