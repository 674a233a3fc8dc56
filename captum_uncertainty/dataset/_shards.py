"""The output folder: its checks on a (re-)run, and the Parquet shards written into it."""

from __future__ import annotations

import concurrent.futures
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

import numpy as np

from captum_uncertainty.dataset._batch import Columns, layout_of
from captum_uncertainty.dataset._manifest import (
    LAYOUT_KEYS,
    MANIFEST,
    RUN_CONFIG_KEYS,
    describe_differences,
    differing_keys,
    read_manifest,
    write_json,
)

__all__ = ["ShardWriter", "arrow_table", "finished_shards", "import_pyarrow", "prepare_output"]

_SHARD_FILE_NAME = "part-{:05d}.parquet"
_SHARD_FILE_PATTERN = re.compile(r"^part-(\d{5,})\.parquet$")
#: Hidden temporary files (shards and manifest being written), removed by a re-run.
_TEMPORARY_FILE_PATTERN = re.compile(r"^\..+\.tmp-\d+$")


def import_pyarrow() -> None:
    """Check that pyarrow (and its Parquet writer) is installed; ``ImportError`` naming the extra."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "attribute_dataset writes Parquet with pyarrow: pip install captum-uncertainty[dataset]"
        ) from error


def prepare_output(folder: Path, config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Check ``out`` and return its manifest (``None`` for a new folder); remove stale temporaries.

    Refuses (``ValueError``) a file, a non-empty folder without a manifest and a folder whose
    manifest was written with another configuration.
    """
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out must be a folder, but {folder} is a file")
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(path.name for path in folder.iterdir())
    temporaries = [name for name in names if _TEMPORARY_FILE_PATTERN.match(name)]
    stored: Optional[Dict[str, Any]] = None
    if MANIFEST in names:
        stored = read_manifest(folder)
        different = differing_keys(stored, config, RUN_CONFIG_KEYS)
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
        match = _SHARD_FILE_PATTERN.match(path.name)
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
        self.layout: Optional[Dict[str, Any]] = (
            None if stored is None else {key: stored.get(key) for key in LAYOUT_KEYS}
        )
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
        row_order = np.argsort(columns["index"], kind="stable")
        columns = {name: values[row_order] for name, values in columns.items()}
        first = shard * self.shard_size
        expected = np.arange(first, first + self.expected_rows(shard), dtype=np.int64)
        if not np.array_equal(columns["index"], expected):
            found = columns["index"].tolist()[:5]
            raise RuntimeError(f"shard {shard} would hold rows {found}..., not {first}, {first + 1}, ... in order")
        column_order: List[str] = list(self.layout["columns"]) if self.layout else list(columns)
        self.wait()
        self.in_flight = self.thread.submit(_write_shard, self.folder, shard, columns, column_order)
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


def _write_shard(folder: Path, shard: int, columns: Columns, order: Sequence[str]) -> None:
    """Write one shard to a hidden temporary file, then rename it to ``part-NNNNN.parquet``."""
    import pyarrow.parquet as pq

    final = folder / _SHARD_FILE_NAME.format(shard)
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
