"""The engines: batch after batch in this process, or Ray Data actors; both write the same files."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from captum_uncertainty._validation import check_positive_int
from captum_uncertainty.dataset._batch import Columns, attribute_batch, preserved_rng
from captum_uncertainty.dataset._explainers import build_explainer, explained_forward, model_device
from captum_uncertainty.dataset._shards import ROW_DIGESTS, ShardWriter, input_row_digests
from captum_uncertainty.dataset._sources import LoaderSource, MapSource, RaySource, Source, stacked

__all__ = ["ENGINES", "Job", "RayAttributor", "block_loader", "import_ray", "run_local", "run_ray"]

#: The ``engine`` choices of :func:`~captum_uncertainty.attribute_dataset`.
ENGINES = ("local", "ray")


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


class RayAttributor:
    """The stateful callable of the Ray engine: builds (or unpickles) the explainer once per worker.

    Its rows are batch numbers; batch ``b`` holds the inputs ``[b * batch_size, (b + 1) *
    batch_size)``, read by index from a torch ``Dataset`` or from a Ray Dataset's blocks, so each
    call attributes exactly the batch the local engine would, under the same seed. Beside the
    columns it returns the digests of the inputs it read (:data:`ROW_DIGESTS`), from which the
    driver computes each shard's input hash without reading the inputs itself.
    """

    def __init__(self, job: Job, inputs: Union[MapSource, _BlockLoader]) -> None:
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
        columns = attribute_batch(
            self.explainer, self.forward, inputs, start, number, self.job.seed, self.job.attribute_kwargs
        )
        columns[ROW_DIGESTS] = input_row_digests(inputs)
        return columns


@contextlib.contextmanager
def _ordered_ray_data(ray: Any, progress: bool) -> Iterator[None]:
    """Ray Data that keeps the row order (so shards are written as soon as they are complete)."""
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved


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


def run_ray(
    job: Job,
    source: Source,
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
    compute = _actor_pool(ray, concurrency, num_gpus)
    with _ordered_ray_data(ray, progress):
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
            digests = columns.pop(ROW_DIGESTS)
            writer.add(columns, digests)
            bar.update(len(columns["index"]))
    return total
