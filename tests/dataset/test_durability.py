"""attribute_dataset's durability and concurrency: fsync'd renames, the folder lock, and Ray workers
that write their own shards."""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from captum.attr import Saliency
from torch.utils.data import TensorDataset

from captum_uncertainty import UncertaintyForward, attribute_dataset
from captum_uncertainty.dataset import MANIFEST, _engines, _shards, read_manifest
from captum_uncertainty.dataset._engines import Job, RayWorker, Target, work_units
from captum_uncertainty.dataset._folder import LOCK, fsync_folder
from captum_uncertainty.dataset._sources import MapSource
from tests.helpers import make_cnn
from tests.helpers.dataset_factory import StopAt

ROOT = Path(__file__).resolve().parents[2]
N = 40
BATCH = 8  # 5 batches

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning")


@pytest.fixture(scope="module")
def forward():
    return UncertaintyForward([make_cnn(0), make_cnn(1)], measure="epistemic")


@pytest.fixture(scope="module")
def data():
    return TensorDataset(torch.rand(N, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))


def explainer(forward, at=None):
    return StopAt(Saliency(forward), at=at)


def run(explainer_, data, out, **kwargs):
    return attribute_dataset(explainer_, data, out, batch_size=BATCH, progress=False, **kwargs)


@pytest.fixture(scope="module")
def reference(forward, data, tmp_path_factory):
    """An uninterrupted local run, shards of 12 rows (12, 12, 12, 4) over batches of 8."""
    out = tmp_path_factory.mktemp("reference")
    run(explainer(forward), data, out, shard_size=12)
    return out


def snapshot(folder):
    """Every file of the folder (hidden ones too) with its bytes and modification time."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in sorted(Path(folder).iterdir())}


def shards(folder):
    return sorted(path.name for path in Path(folder).iterdir() if path.name.startswith("part-"))


def assert_same_shards(first, second):
    """The same shard files; read back, the same rows in the same order (maps included) and input hashes."""
    assert shards(first) == shards(second) and shards(first)
    for name in shards(first):
        a, b = pq.read_table(Path(first) / name), pq.read_table(Path(second) / name)
        assert a.schema.metadata == b.schema.metadata  # the input hash travels in the schema metadata
        assert a.column_names == b.column_names and a.num_rows == b.num_rows
        for row in range(a.num_rows):
            for column in a.column_names:
                left, right = a.column(column)[row], b.column(column)[row]
                if column.startswith("attribution"):  # a fixed-shape tensor: the map of that row
                    assert left.to_numpy().shape == tuple(read_manifest(first)["map_shape"])
                    np.testing.assert_allclose(
                        left.to_numpy(), right.to_numpy(), rtol=0, atol=1e-9, err_msg=f"{name} row {row}"
                    )
                else:
                    assert left.as_py() == right.as_py(), (name, row, column)
    assert read_manifest(first) == read_manifest(second)


# ----------------------------------------------------------------------------- the lock

HOLDER_SCRIPT = """
import sys, time
from pathlib import Path
from captum_uncertainty.dataset._folder import acquire_lock

acquire_lock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(120)
"""


def test_a_locked_folder_is_refused_and_the_lock_of_a_dead_process_is_taken_over(forward, data, reference, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="interrupted at batch 3"):
        run(explainer(forward, at=3), data, out, shard_size=12)
    assert shards(out) == ["part-00000.parquet", "part-00001.parquet"] and not (out / LOCK).exists()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = snapshot(out)
        lock = json.loads((out / LOCK).read_text())
        assert (lock["pid"], lock["host"]) == (holder.pid, socket.gethostname())
        attempt = explainer(forward)
        with pytest.raises(ValueError, match="^out .* is in use by another attribute_dataset run") as error:
            run(attempt, data, out, shard_size=12)
        message = str(error.value)
        for part in (str(out), f"pid {holder.pid}", f"host {socket.gethostname()}", "is alive", f"delete {out / LOCK}"):
            assert part in message, (part, message)
        assert attempt.calls == 0 and snapshot(out) == before  # nothing attributed, no file touched
    finally:
        holder.kill()
        holder.wait()  # reaped: a zombie would still answer os.kill(pid, 0)

    # the holder died without releasing its lock: the next run takes it over, says so, and resumes
    resumed = explainer(forward)
    with pytest.warns(RuntimeWarning, match=rf"taking over the stale lock of attribute_dataset run pid {holder.pid} "):
        result = run(resumed, data, out, shard_size=12)
    assert (result.shards_written, result.shards_skipped) == (2, 2) and resumed.calls == 2  # batches 3 and 4
    assert not (out / LOCK).exists()
    assert_same_shards(reference, out)


def test_a_lock_of_another_host_or_an_unreadable_lock_is_never_taken_over(forward, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    lock = {"pid": 999_999_999, "host": "some-other-host.example", "started": "2024-01-01T00:00:00+00:00", "token": "t"}
    (out / LOCK).write_text(json.dumps(lock))
    before = snapshot(out)
    with pytest.raises(ValueError, match="is in use by another attribute_dataset run") as error:
        run(explainer(forward), data, out)
    message = str(error.value)
    assert "pid 999999999 on host some-other-host.example" in message and "that host is not this one" in message
    assert f"delete {out / LOCK}" in message and snapshot(out) == before

    (out / LOCK).write_text("")  # created, then the process died before writing it
    with pytest.raises(ValueError, match=r"is locked by .*_lock, which cannot be read.*delete"):
        run(explainer(forward), data, out)
    assert sorted(path.name for path in out.iterdir()) == [LOCK]


class Spy(StopAt):
    """Reads ``out/_lock`` while the run is on, and tries a second run on the same folder from inside it."""

    def __init__(self, forward, out, data, at=None, interrupt=False):
        super().__init__(Saliency(forward), at=at)
        self.out, self.data, self.interrupt = out, data, interrupt
        self.lock = None
        self.nested = None

    def attribute(self, inputs, **kwargs):
        if self.lock is None:
            self.lock = json.loads((self.out / LOCK).read_text())
            try:
                attribute_dataset(explainer(self.explainer.forward_func), self.data, self.out, progress=False)
            except ValueError as error:
                self.nested = str(error)
        if self.interrupt and self.calls == 1:
            raise KeyboardInterrupt
        return super().attribute(inputs, **kwargs)


def test_the_lock_is_held_during_the_run_and_released_after_success_errors_and_ctrl_c(forward, data, tmp_path):
    out = tmp_path / "ok"
    spy = Spy(forward, out, data)
    run(spy, data, out)
    assert (spy.lock["pid"], spy.lock["host"]) == (os.getpid(), socket.gethostname()) and len(spy.lock["token"]) == 32
    started = datetime.datetime.fromisoformat(spy.lock["started"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()) < 600
    assert spy.nested is not None and f"pid {os.getpid()}" in spy.nested  # the same process is refused too
    assert not (out / LOCK).exists() and len(shards(out)) == 5

    failed = tmp_path / "error"
    with pytest.raises(RuntimeError, match="interrupted at batch 2"):
        run(Spy(forward, failed, data, at=2), data, failed)
    assert not (failed / LOCK).exists() and len(shards(failed)) == 2

    interrupted = tmp_path / "ctrl_c"
    with pytest.raises(KeyboardInterrupt):
        run(Spy(forward, interrupted, data, interrupt=True), data, interrupted)
    assert not (interrupted / LOCK).exists() and len(shards(interrupted)) == 1

    # a refused call releases the lock as well
    with pytest.raises(ValueError, match="keys that differ: explainer, seed"):
        run(explainer(forward), data, out, seed=1)
    assert not (out / LOCK).exists()


# ----------------------------------------------------------------------------- fsync


def test_every_file_is_fsynced_before_its_rename_and_the_folder_after(forward, data, tmp_path, monkeypatch):
    events = []  # (thread, what, inode or path, is a folder)
    real_fsync, real_replace = os.fsync, os.replace

    def recording_fsync(descriptor):
        info = os.fstat(descriptor)
        events.append((threading.get_ident(), "fsync", info.st_ino, stat.S_ISDIR(info.st_mode)))
        return real_fsync(descriptor)

    def recording_replace(source, destination):
        events.append((threading.get_ident(), "replace", os.stat(source).st_ino, Path(destination).name))
        return real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    out = tmp_path / "out"
    run(explainer(forward), data, out, shard_size=16)  # shards of 16, 16 and 8 rows
    monkeypatch.undo()

    folder = out.stat().st_ino
    replaced = [event for event in events if event[1] == "replace"]
    assert sorted(event[3] for event in replaced if event[3].startswith("part-")) == shards(out)
    assert len(shards(out)) == 3 and [event[3] for event in replaced].count(MANIFEST) == 2  # incomplete, final
    for position, (thread, kind, inode, name) in enumerate(events):
        if kind != "replace":
            continue
        own = [event for event in events if event[0] == thread]
        at = own.index(events[position])
        # the last fsync of that thread before the rename is of the temporary file itself ...
        before = [event for event in own[:at] if event[1] == "fsync"]
        assert before and before[-1][2:] == (inode, False), name
        # ... and its next fsync is of the folder
        after = [event for event in own[at + 1 :] if event[1] == "fsync"]
        assert after and after[0][2:] == (folder, True), name
        assert os.stat(out / name).st_ino == inode or name == MANIFEST  # the fsync'd file is the one in place
    assert os.stat(out / MANIFEST).st_ino == replaced[-1][2] and read_manifest(out)["complete"] is True


def test_folders_without_directory_fsync_are_skipped_but_real_errors_raise(tmp_path, monkeypatch):
    real_fsync = os.fsync
    calls = []

    def failing(code):
        def fsync(descriptor):
            if stat.S_ISDIR(os.fstat(descriptor).st_mode):
                calls.append(code)
                raise OSError(code, os.strerror(code))
            return real_fsync(descriptor)

        return fsync

    monkeypatch.setattr(os, "fsync", failing(errno.EINVAL))  # e.g. some network file systems
    fsync_folder(tmp_path)
    monkeypatch.setattr(os, "fsync", failing(errno.EIO))  # the disk failed: the rename may not be durable
    with pytest.raises(OSError, match=os.strerror(errno.EIO)):
        fsync_folder(tmp_path)
    assert calls == [errno.EINVAL, errno.EIO]


# ----------------------------------------------------------------------------- the Ray engine


def test_work_units_hold_whole_shards_and_whole_batches_when_they_can():
    assert work_units(40, 8, 12) == [(0, 24), (24, 40)]  # lcm 24: 3 batches, 2 shards
    assert work_units(40, 8, 8) == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40)]
    assert work_units(40, 8, 4) == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40)]  # a batch, 2 shards
    assert work_units(100, 8, 32) == [(0, 32), (32, 64), (64, 96), (96, 100)]  # a shard, 4 batches
    assert work_units(1300, 64, 10) == [(0, 320), (320, 640), (640, 960), (960, 1280), (1280, 1300)]  # lcm 320
    # 64 and 100 share few factors (lcm 1600 > 8 * 100): the fewest whole shards covering 8 batches
    # (512 rows), 600 rows; batch 9 (rows 576-639) straddles the first two units
    assert work_units(2000, 64, 100) == [(0, 600), (600, 1200), (1200, 1800), (1800, 2000)]
    assert work_units(999, 64, 1000) == [(0, 999)]  # lcm 8000 = 8 shards: one unit for this data set
    for count, batch, shard in ((1000, 7, 11), (999, 64, 1000), (130, 64, 10), (41, 8, 12)):
        units = work_units(count, batch, shard)
        assert units[0][0] == 0 and units[-1][1] == count
        assert all(stop == start for (_, stop), (start, _) in zip(units, units[1:]))  # contiguous, in order
        assert all(start % shard == 0 for start, _ in units)  # whole shards


def test_a_worker_that_does_not_see_the_drivers_folder_refuses_to_write(forward, data, tmp_path):
    job = Job(explainer(forward), None, {}, 0, BATCH)
    (tmp_path / LOCK).write_text("another run's lock\n")
    worker = RayWorker(job, MapSource(data, BATCH), Target(str(tmp_path), 8, N, frozenset(), None, "this run\n"))
    with pytest.raises(RuntimeError, match=r"does not find this run's lock .*shared file system"):
        worker({"start": np.array([0]), "stop": np.array([8])})
    assert shards(tmp_path) == []


@pytest.mark.ray
def test_ray_workers_write_the_shards_and_the_driver_receives_no_map(
    ray_runtime, forward, data, reference, tmp_path, monkeypatch
):
    """Worker-written shards equal the local engine's; the driver gets small per-shard records only.

    How "the driver receives no map" is checked: every batch of results the driver takes from Ray
    goes through ``_engines._received_records``; a spy records its columns (names, dtypes,
    shapes, bytes) and the test asserts they are the four record columns, one-dimensional, a few
    hundred bytes per shard, none a map. And the driver cannot have written a shard: in this
    (driver) process ``_shards._write_shard`` is replaced by a function that fails; the actors
    run in their own processes with the real one, so the shards on disk are theirs.

    ``_UNIT_BATCHES = 1`` makes every shard its own work unit, so a batch that straddles two
    shards (batch 1: rows 8-15, shards 0 and 1) is attributed by both workers, each keeping
    its own rows: the output must still be the local engine's.
    """
    received = []
    real_received = _engines._received_records

    def spy(columns):
        arrays = {name: np.asarray(values) for name, values in columns.items()}
        received.append({name: (values.dtype, values.shape) for name, values in arrays.items()})
        received[-1]["bytes"] = sum(
            sum(len(str(value).encode()) for value in values) if values.dtype.kind in "OUS" else values.nbytes
            for values in arrays.values()
        )
        return real_received(columns)

    def driver_must_not_write(*args, **kwargs):
        raise AssertionError("the driver wrote a shard")

    monkeypatch.setattr(_engines, "_received_records", spy)
    monkeypatch.setattr(_shards, "_write_shard", driver_must_not_write)
    monkeypatch.setattr(_engines, "_UNIT_BATCHES", 1)
    assert work_units(N, BATCH, 12) == [(0, 12), (12, 24), (24, 36), (36, 40)]
    out = tmp_path / "ray"
    result = run(explainer(forward), data, out, shard_size=12, engine="ray", concurrency=2)
    assert (result.num_inputs, result.shards_written, result.shards_skipped) == (N, 4, 0)
    assert not (out / LOCK).exists()
    assert_same_shards(reference, out)

    assert sum(batch["shard"][1][0] for batch in received) == 4  # one record per shard, no more
    for batch in received:
        assert set(batch) == {"shard", "rows", "inputs_sha256", "layout", "bytes"}
        records = batch["shard"][1][0]
        for name in ("shard", "rows", "inputs_sha256", "layout"):
            assert batch[name][1] == (records,), name  # one value per shard: no map, no row of a map
        assert batch["shard"][0] == batch["rows"][0] == np.int64
        assert batch["bytes"] < 600 * records  # the maps of one 12-row shard are 12 * 64 * 8 = 6,144 bytes
