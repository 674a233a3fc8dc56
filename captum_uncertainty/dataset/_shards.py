"""The output folder: its checks on a (re-)run, and the Parquet shards written into it.

Each shard records the hash of the inputs it was computed from in its own Parquet schema
metadata (:data:`INPUTS_METADATA_KEY`), not in the manifest: the hash is then written and
renamed into place with the shard itself, so a shard that exists always has its hash (a
manifest updated after every shard could be a shard behind after a kill). The hash of a shard
is the sha256 of the sha256 digests of its input rows in row order, each over the row's dtype,
shape and bytes (those of every named tensor, for a tokenizer's rows; :func:`input_row_digests`);
per-row digests let the Ray actors hash the rows they load, and make the shard's hash
independent of how batches split it.

A :class:`ShardWriter` writes the shards of one process: the local engine's, or one Ray
worker's share (``shards=``, the shards of its work unit). Each shard file is fsync'd before
its rename and the folder after it (:func:`~captum_uncertainty.dataset._folder.atomic_write`).
"""

from __future__ import annotations

import concurrent.futures
import json
import re
from pathlib import Path
from typing import IO, Any, Collection, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np
from torch import Tensor

from captum_uncertainty._hashing import new_digest, row_bytes, values_sha256
from captum_uncertainty.dataset._batch import Columns, layout_of
from captum_uncertainty.dataset._folder import TEMPORARY_FILE_PATTERN, atomic_write, is_lock_file
from captum_uncertainty.dataset._manifest import (
    LAYOUT_KEYS,
    MANIFEST,
    RUN_CONFIG_KEYS,
    check_posterior,
    describe_differences,
    differing_keys,
    read_manifest,
    write_json,
)
from captum_uncertainty.dataset._sources import Inputs, MapSource, Source, batch_rows

__all__ = [
    "INPUTS_METADATA_KEY",
    "ROW_DIGESTS",
    "ShardRecord",
    "ShardWriter",
    "arrow_table",
    "check_finished_inputs",
    "finished_shards",
    "import_pyarrow",
    "input_row_digests",
    "inputs_hash",
    "known_layout",
    "layout_mismatch",
    "prepare_output",
    "remove_temporaries",
    "shard_layout",
    "stored_input_hashes",
]

#: Parquet schema metadata key of a shard's input hash (:func:`inputs_hash` of its rows).
INPUTS_METADATA_KEY = b"captum_uncertainty.inputs_sha256"
#: Key of the per-row input digests ``(n, 32)`` that travel with a batch's columns (never written).
ROW_DIGESTS = "__input_row_sha256__"

_SHARD_FILE_NAME = "part-{:05d}.parquet"
_SHARD_FILE_PATTERN = re.compile(r"^part-(\d{5,})\.parquet$")


def import_pyarrow() -> None:
    """Check that pyarrow (and its Parquet writer) is installed; ``ImportError`` naming the extra."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "attribute_dataset writes Parquet with pyarrow: pip install captum-uncertainty[dataset]"
        ) from error


def prepare_output(
    folder: Path, config: Dict[str, Any], unfingerprinted: Optional[str] = None
) -> Optional[Dict[str, Any]]:
    """Check ``out`` and return its manifest (``None`` for a new folder); create it if missing.

    Refuses (``ValueError``) a file, a non-empty folder without a manifest and a folder whose
    manifest was written with another configuration or posterior (``unfingerprinted``: why
    this call's posterior has no fingerprint). Changes nothing in an existing folder: stale
    temporaries are removed by :func:`remove_temporaries` once every check has passed.
    """
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out must be a folder, but {folder} is a file")
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(path.name for path in folder.iterdir())
    temporaries = [name for name in names if TEMPORARY_FILE_PATTERN.match(name) or is_lock_file(name)]
    stored: Optional[Dict[str, Any]] = None
    if MANIFEST in names:
        stored = read_manifest(folder)
        different = differing_keys(stored, config, RUN_CONFIG_KEYS)
        if different:
            raise ValueError(
                f"out {folder} holds results of another configuration; keys that differ: {', '.join(different)} "
                f"({describe_differences(stored, config, different)}); use another folder or delete this one"
            )
        check_posterior(folder, stored, config, unfingerprinted)
    else:
        foreign = [name for name in names if name not in temporaries]
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise ValueError(
                f"out {folder} is not empty and has no {MANIFEST} (it holds {shown}): refusing to write "
                "into a folder attribute_dataset did not create; use an empty or new folder"
            )
    return stored


def remove_temporaries(folder: Path) -> None:
    """Remove the hidden temporary files an interrupted run left (never read)."""
    for path in folder.iterdir():
        if TEMPORARY_FILE_PATTERN.match(path.name):
            path.unlink(missing_ok=True)


def finished_shards(folder: Path) -> Set[int]:
    """Numbers of the shards whose final file exists."""
    found = set()
    for path in folder.iterdir():
        match = _SHARD_FILE_PATTERN.match(path.name)
        if match:
            found.add(int(match.group(1)))
    return found


def input_row_digests(inputs: Inputs) -> np.ndarray:
    """The sha256 digest of every input row (its dtype, shape and bytes, on the CPU), ``(n, 32)`` uint8.

    A mapping of tensors (a tokenizer's output) hashes each row over every entry, in the order
    of the names: the names, dtypes and shapes first, then each entry's bytes of that row.
    """
    header = new_digest()
    if isinstance(inputs, Tensor):
        header.update(f"{inputs.dtype}{tuple(inputs.shape[1:])}".encode())
        raws = [row_bytes(inputs)]
    else:
        names = sorted(inputs)
        described = [[name, str(inputs[name].dtype), list(inputs[name].shape[1:])] for name in names]
        header.update(json.dumps(["mapping", described]).encode())
        raws = [row_bytes(inputs[name]) for name in names]
    count = batch_rows(inputs)
    digests = np.empty((count, 32), dtype=np.uint8)
    for row in range(count):
        digest = header.copy()
        for raw in raws:
            digest.update(raw[row])
        digests[row] = np.frombuffer(digest.digest(), dtype=np.uint8)
    return digests


def inputs_hash(digests: np.ndarray) -> str:
    """The hash of a shard's inputs: sha256 of its rows' digests (:func:`input_row_digests`) in row order."""
    return values_sha256(np.ascontiguousarray(digests, dtype=np.uint8))


def stored_input_hashes(folder: Path, shards: Set[int]) -> Dict[int, Tuple[int, Optional[str]]]:
    """``{shard: (rows, input hash)}`` from the finished shards' Parquet footers (hash ``None`` if absent)."""
    import pyarrow.parquet as pq

    stored: Dict[int, Tuple[int, Optional[str]]] = {}
    for shard in sorted(shards):
        metadata = pq.read_metadata(folder / _SHARD_FILE_NAME.format(shard))
        value = (metadata.metadata or {}).get(INPUTS_METADATA_KEY)
        stored[shard] = (int(metadata.num_rows), None if value is None else value.decode("ascii"))
    return stored


def check_finished_inputs(
    source: Source, folder: Path, shard_size: int, stored: Dict[int, Tuple[int, Optional[str]]]
) -> None:
    """Refuse (``ValueError``) to skip a finished shard whose inputs are not those it was computed from.

    Hashes the current inputs of every finished shard (``stored``, from
    :func:`stored_input_hashes`) before anything is attributed or written: a map-style
    ``Dataset`` is read by index (the finished rows only); a ``DataLoader`` or Ray Dataset is
    streamed from the start up to the last finished shard (it cannot seek).
    """
    if not stored:
        return
    for shard, (rows, expected) in sorted(stored.items()):
        if expected is None:
            start = shard * shard_size
            raise ValueError(
                f"shard {shard} (rows {start}-{start + rows - 1}) of {folder} records no input hash (written by an "
                f"older version of attribute_dataset), so its inputs cannot be checked; use a new out folder, or "
                f"delete {folder} to start over"
            )
    current: Dict[int, List[np.ndarray]] = {shard: [] for shard in stored}
    if isinstance(source, MapSource):
        total = int(source.num_inputs or 0)
        for shard in sorted(stored):
            start = shard * shard_size
            stop = min(start + shard_size, total)
            for first in range(start, stop, source.batch_size):
                current[shard].append(input_row_digests(source.load(first, min(source.batch_size, stop - first))))
    else:
        end = max(shard * shard_size + shard_size for shard in stored)
        for batch in source.batches(lambda start, size: True):
            assert batch.inputs is not None  # every batch is needed here
            shards = np.arange(batch.start, batch.start + batch.size) // shard_size
            digests = input_row_digests(batch.inputs)
            for shard in np.unique(shards).tolist():
                if shard in current:
                    current[shard].append(digests[shards == shard])
            if batch.start + batch.size >= end:
                break
    for shard, (rows, expected) in sorted(stored.items()):
        found = np.concatenate(current[shard]) if current[shard] else np.empty((0, 32), dtype=np.uint8)
        if inputs_hash(found) != expected:
            start = shard * shard_size
            detail = "" if len(found) == rows else f"; it now holds {len(found)} rows instead of {rows}"
            raise ValueError(
                f"the inputs of shard {shard} (rows {start}-{start + rows - 1}) differ from the run in {folder} "
                f"(other data, another order or other preprocessing{detail}): its maps belong to the other "
                f"inputs, so it is not skipped nor continued; use a new out folder, or delete {folder} to start over"
            )


class ShardRecord(NamedTuple):
    """What the writer of a shard reports: its number, rows and input hash (:func:`inputs_hash`)."""

    shard: int
    rows: int
    inputs_sha256: str


def shard_layout(folder: Path, shard: int) -> Dict[str, Any]:
    """The manifest's column description (:data:`LAYOUT_KEYS`) read from a finished shard's schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(folder / _SHARD_FILE_NAME.format(shard))
    maps = [field for field in schema if isinstance(field.type, pa.FixedShapeTensorType)]
    if not maps:
        raise ValueError(f"shard {shard} of {folder} has no map column: it was not written by attribute_dataset")
    return {
        "columns": list(schema.names),
        "map_columns": [field.name for field in maps],
        "map_shape": list(maps[0].type.shape),
        "map_dtype": str(np.dtype(maps[0].type.value_type.to_pandas_dtype())),
    }


def known_layout(folder: Path, stored: Optional[Dict[str, Any]], finished: Set[int]) -> Optional[Dict[str, Any]]:
    """The columns an earlier run wrote: from the manifest, else from its first finished shard.

    A Ray run's manifest gets the columns only once a worker has reported its first shard, so a
    run interrupted before that leaves shards whose columns only their schema records.
    ``None``: nothing was written yet.
    """
    if stored is not None and stored.get("columns") is not None:
        return {key: stored.get(key) for key in LAYOUT_KEYS}
    if finished:
        return shard_layout(folder, min(finished))
    return None


def layout_mismatch(folder: Path, expected: Dict[str, Any], found: Dict[str, Any]) -> Optional[ValueError]:
    """The error of a run whose columns differ from those already in ``folder`` (``None``: they agree)."""
    if expected == found:
        return None
    different = differing_keys(expected, found, LAYOUT_KEYS)
    return ValueError(
        f"out {folder} holds other columns than this run writes; keys that differ: {', '.join(different)} "
        f"({describe_differences(expected, found, different)}); use another folder or delete this one"
    )


class ShardWriter:
    """Collects attributed rows and writes each shard once all its rows are there.

    Rows of finished shards (and, with ``shards``, of shards outside that set) are dropped; a
    shard is written durably under a hidden temporary name, then renamed, by a background thread
    while the next batches are attributed (at most one shard is being written; its errors
    surface at the next write or at :meth:`close`). Holds at most the rows of the shards in
    progress (one, when batches arrive in order) and the shard being written.

    Args:
        folder (Path): the output folder.
        shard_size (int): rows per shard.
        num_inputs (int, optional): rows of the data set (``None``: learnt at :meth:`close`).
        finished (set of int): shards that exist.
        layout (dict, optional): the columns already in ``folder`` (:func:`known_layout`); the
            first batch must have them. ``None``: the first batch sets them.
        manifest (dict, optional): the run's configuration, written as the manifest with the
            columns of the first batch when ``layout`` is ``None``. ``None``: never write the
            manifest (a Ray worker; the driver writes it).
        shards (collection of int, optional): write only these shards. Default: all.
    """

    def __init__(
        self,
        folder: Path,
        shard_size: int,
        num_inputs: Optional[int],
        finished: Collection[int],
        layout: Optional[Dict[str, Any]],
        manifest: Optional[Dict[str, Any]] = None,
        shards: Optional[Collection[int]] = None,
    ) -> None:
        self.folder = folder
        self.shard_size = shard_size
        self.num_inputs = num_inputs
        self.finished = set(finished)
        self.shards = None if shards is None else set(shards)
        self.manifest = manifest
        self.layout = layout
        self.checked = False
        self.pending: Dict[int, List[Columns]] = {}
        self.records: List[ShardRecord] = []
        self.thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="attribute_dataset-writer"
        )
        self.in_flight: Optional[concurrent.futures.Future] = None

    @property
    def written(self) -> int:
        """Shards handed to the background thread so far."""
        return len(self.records)

    def wanted(self, shard: int) -> bool:
        """Whether this writer still has to write ``shard``."""
        return shard not in self.finished and (self.shards is None or shard in self.shards)

    def needed(self, start: int, size: int) -> bool:
        """Whether a batch of rows ``[start, start + size)`` touches a shard this writer still has to write."""
        first, last = start // self.shard_size, (start + size - 1) // self.shard_size
        return any(self.wanted(shard) for shard in range(first, last + 1))

    def expected_rows(self, shard: int) -> int:
        if self.num_inputs is None:
            return self.shard_size
        return min(self.shard_size, self.num_inputs - shard * self.shard_size)

    def add(self, columns: Columns, digests: np.ndarray) -> None:
        """Take a batch's rows and their input digests (:func:`input_row_digests`, one per row)."""
        self.check_layout(columns)
        if len(digests) != len(columns["index"]):
            raise RuntimeError(f"{len(digests)} input digests for {len(columns['index'])} rows")
        columns = {**columns, ROW_DIGESTS: digests}
        shards = columns["index"] // self.shard_size
        for shard in np.unique(shards).tolist():
            if not self.wanted(shard):
                continue
            rows = shards == shard
            self.pending.setdefault(shard, []).append({name: values[rows] for name, values in columns.items()})
            if sum(len(piece["index"]) for piece in self.pending[shard]) >= self.expected_rows(shard):
                self.flush(shard)

    def check_layout(self, columns: Columns) -> None:
        """Before the first shard: write the manifest (``manifest`` given, columns unknown so far) or
        check the columns against those already written; later batches must have the same columns."""
        if self.checked:
            return
        layout = layout_of(columns)
        if self.layout is None:
            if self.manifest is not None:
                write_json(self.folder / MANIFEST, {**self.manifest, **layout, "complete": False})
        else:
            error = layout_mismatch(self.folder, self.layout, layout)
            if error is not None:
                raise error
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
        digest = inputs_hash(columns.pop(ROW_DIGESTS))
        column_order: List[str] = list(self.layout["columns"]) if self.layout else list(columns)
        self.wait()
        self.in_flight = self.thread.submit(_write_shard, self.folder, shard, columns, column_order, digest)
        self.finished.add(shard)
        self.records.append(ShardRecord(shard, len(expected), digest))

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


def _write_shard(folder: Path, shard: int, columns: Columns, order: Sequence[str], inputs_digest: str) -> None:
    """Write one shard, its input hash in the schema metadata, durably to a hidden temporary file
    (flushed, fsync'd), rename it to ``part-NNNNN.parquet`` and fsync the folder."""
    import pyarrow.parquet as pq

    table = arrow_table(columns, order)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), INPUTS_METADATA_KEY: inputs_digest})

    def write(handle: IO[bytes]) -> None:
        pq.write_table(table, handle)

    atomic_write(folder / _SHARD_FILE_NAME.format(shard), write)


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
