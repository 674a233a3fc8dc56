"""attribute_dataset: per-input results of a whole data set as Parquet shards, resumable, two engines."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch
from captum.attr import NoiseTunnel, Saliency
from torch.utils.data import DataLoader, TensorDataset

from captum_uncertainty import (
    DatasetResult,
    UABackprop,
    UncertaintyForward,
    UncertaintyIntegratedGradients,
    attribute_dataset,
)
from captum_uncertainty.__main__ import main
from captum_uncertainty.dataset import MANIFEST, read_manifest
from captum_uncertainty.dataset._engines import block_loader
from captum_uncertainty.dataset._manifest import json_safe
from captum_uncertainty.dataset._sources import RaySource
from tests.helpers.dataset_factory import StopAt

ROOT = Path(__file__).resolve().parents[2]
N = 40
BATCH = 8
KWARGS = {"path": "inputgrad"}


@pytest.fixture(scope="module")
def uf(digits_ensemble):
    return UncertaintyForward(digits_ensemble, measure="epistemic")


@pytest.fixture(scope="module")
def x(digits):
    return digits.x_test[:N]


@pytest.fixture(scope="module")
def data(digits):
    return TensorDataset(digits.x_test[:N], digits.y_test[:N])


@pytest.fixture(scope="module")
def reference(uf, data, tmp_path_factory):
    """An uninterrupted run with the wrapper class the interruption tests use."""
    out = tmp_path_factory.mktemp("reference")
    attribute_dataset(StopAt(UABackprop(uf)), data, out, batch_size=BATCH, progress=False, **KWARGS)
    return out


def shards(out):
    return sorted(path.name for path in Path(out).iterdir() if path.name.startswith("part-"))


def hidden(out):
    return sorted(path.name for path in Path(out).iterdir() if path.name.startswith("."))


def columns_of(path):
    """Every column of a shard as numpy (maps with their shape)."""
    table = pq.read_table(path)
    result = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        result[name] = column.to_numpy_ndarray() if hasattr(column, "to_numpy_ndarray") else column.to_numpy()
    return result


def assert_same_output(first, second, map_atol=0.0):
    """Same shard files with the same rows; maps to ``map_atol``, every other column exactly."""
    assert shards(first) == shards(second)
    for name in shards(first):
        a, b = columns_of(Path(first) / name), columns_of(Path(second) / name)
        assert list(a) == list(b)
        for column in a:
            assert a[column].dtype == b[column].dtype and a[column].shape == b[column].shape, column
            if column.startswith("attribution"):
                np.testing.assert_allclose(a[column], b[column], rtol=0, atol=map_atol, err_msg=column)
            else:
                np.testing.assert_array_equal(a[column], b[column], err_msg=column)
    assert read_manifest(first) == read_manifest(second)


def test_local_engine_matches_direct_attribution(uf, x, data, tmp_path):
    ua = UABackprop(uf)
    result = attribute_dataset(ua, data, tmp_path, batch_size=16, progress=False, **KWARGS)
    assert result == DatasetResult(tmp_path, N, 3, 0)
    assert shards(tmp_path) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [len(columns_of(tmp_path / name)["index"]) for name in shards(tmp_path)] == [16, 16, 8]
    table = pads.dataset(tmp_path).to_table().sort_by("index")
    assert table.column_names == ["index", "predicted", "total", "aleatoric", "epistemic", "attribution"]
    np.testing.assert_array_equal(table.column("index").to_numpy(), np.arange(N))
    maps = table.column("attribution").combine_chunks().to_numpy_ndarray()
    direct = torch.cat([ua.attribute(x[i : i + 1], **KWARGS) for i in range(N)])
    np.testing.assert_allclose(maps, direct.numpy(), rtol=0, atol=1e-6)
    for start in range(0, N, 16):
        rows = slice(start, start + 16)
        with torch.no_grad():
            decomposition = uf.decompose(x[rows])
            predicted = uf.predictive(x[rows]).mean(0).argmax(-1)
        for name in ("total", "aleatoric", "epistemic"):
            column = table.column(name).to_numpy()[rows]
            assert column.dtype == np.float64
            np.testing.assert_array_equal(column, getattr(decomposition, name).double().numpy())
        np.testing.assert_array_equal(table.column("predicted").to_numpy()[rows], predicted.numpy())
    manifest = read_manifest(tmp_path)
    assert manifest["explainer"] == "UABackprop" and manifest["measure"] == "epistemic"
    assert manifest["num_samples"] == 3 and manifest["attribute_kwargs"] == KWARGS
    assert manifest["map_shape"] == [1, 8, 8] and manifest["map_dtype"] == "float32"
    assert (manifest["num_inputs"], manifest["num_shards"], manifest["complete"]) == (N, 3, True)


def test_dataloader_factory_and_random_methods_are_reproducible(uf, data, reference, tmp_path):
    loader = DataLoader(data, batch_size=BATCH)
    result = attribute_dataset(lambda: StopAt(UABackprop(uf)), loader, tmp_path / "loader", progress=False, **KWARGS)
    assert result.num_inputs == N
    assert_same_output(reference, tmp_path / "loader")
    with pytest.raises(ValueError, match="batch_size"):
        attribute_dataset(UABackprop(uf), loader, tmp_path / "conflict", batch_size=16, progress=False)

    noisy = NoiseTunnel(Saliency(uf))
    kwargs = {"nt_type": "smoothgrad", "nt_samples": 2, "stdevs": 0.2}
    first = TensorDataset(data.tensors[0][:16])
    state = torch.random.get_rng_state()
    attribute_dataset(noisy, first, tmp_path / "a", batch_size=BATCH, progress=False, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone
    torch.manual_seed(123)  # and its state does not matter
    attribute_dataset(noisy, first, tmp_path / "b", batch_size=BATCH, progress=False, **kwargs)
    assert_same_output(tmp_path / "a", tmp_path / "b")
    attribute_dataset(noisy, first, tmp_path / "c", batch_size=BATCH, seed=1, progress=False, **kwargs)
    assert not np.array_equal(
        columns_of(tmp_path / "a" / "part-00000.parquet")["attribution"],
        columns_of(tmp_path / "c" / "part-00000.parquet")["attribution"],
    )
    torch.random.set_rng_state(state)


def test_decompose_and_delta_columns(uf, x, data, tmp_path):
    ua = UABackprop(uf)
    attribute_dataset(ua, data, tmp_path / "parts", batch_size=BATCH, progress=False, decompose=True, **KWARGS)
    table = pads.dataset(tmp_path / "parts").to_table().sort_by("index")
    names = ["attribution_total", "attribution_aleatoric", "attribution_epistemic"]
    assert [name for name in table.column_names if name.startswith("attribution")] == names
    assert read_manifest(tmp_path / "parts")["map_columns"] == names
    direct = ua.attribute(x[:BATCH], decompose=True, **KWARGS)
    for name, expected in zip(names, direct):
        np.testing.assert_allclose(
            table.column(name).combine_chunks().to_numpy_ndarray()[:BATCH], expected.numpy(), atol=1e-6
        )

    ig = UncertaintyIntegratedGradients(uf)
    first = TensorDataset(data.tensors[0][:16])
    attribute_dataset(
        ig, first, tmp_path / "ig", batch_size=BATCH, progress=False, n_steps=8, return_convergence_delta=True
    )
    frame = pd.read_parquet(tmp_path / "ig").sort_values("index")
    maps, delta = ig.attribute(x[:BATCH], n_steps=8, return_convergence_delta=True)
    np.testing.assert_allclose(frame["delta"].to_numpy()[:BATCH], delta.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(np.stack(frame["attribution"])[:BATCH].reshape(maps.shape), maps.numpy(), atol=1e-6)


def test_interrupted_run_resumes_to_the_uninterrupted_output(uf, data, reference, tmp_path):
    explainer = StopAt(UABackprop(uf), at=3)
    with pytest.raises(RuntimeError, match="interrupted at batch 3"):
        attribute_dataset(explainer, data, tmp_path, batch_size=BATCH, progress=False, **KWARGS)
    assert shards(tmp_path) == [f"part-0000{k}.parquet" for k in range(3)]
    assert hidden(tmp_path) == []  # no temporary or partial file is visible
    assert read_manifest(tmp_path)["complete"] is False
    assert len(pd.read_parquet(tmp_path)) == 3 * BATCH  # readers see whole shards only

    result = attribute_dataset(explainer, data, tmp_path, batch_size=BATCH, progress=False, **KWARGS)
    assert (result.shards_written, result.shards_skipped) == (2, 3)
    assert explainer.calls == 4 + 2  # the finished batches were not attributed again
    assert_same_output(reference, tmp_path)


def test_stale_temporary_file_is_removed_and_never_read(uf, data, reference, tmp_path):
    with pytest.raises(RuntimeError):
        attribute_dataset(StopAt(UABackprop(uf), at=2), data, tmp_path, batch_size=BATCH, progress=False, **KWARGS)
    stale = tmp_path / ".part-00002.parquet.tmp-99999"
    stale.write_bytes(b"PAR1 half a shard")
    assert len(pd.read_parquet(tmp_path)) == 2 * BATCH and len(pads.dataset(tmp_path).to_table()) == 2 * BATCH
    attribute_dataset(StopAt(UABackprop(uf)), data, tmp_path, batch_size=BATCH, progress=False, **KWARGS)
    assert not stale.exists() and hidden(tmp_path) == []
    assert_same_output(reference, tmp_path)


KILLED_SCRIPT = """
import sys, torch
from torch.utils.data import TensorDataset
from captum_uncertainty import UABackprop, UncertaintyForward, attribute_dataset
from captum_uncertainty.data import MNISTCNN
from tests.helpers.dataset_factory import StopAt

saved = torch.load(sys.argv[1], weights_only=True)
members = []
for state in saved["members"]:
    member = MNISTCNN(in_channels=1, image_size=8, num_classes=10)
    member.load_state_dict(state)
    members.append(member.eval())
uf = UncertaintyForward(members, measure="epistemic")
data = TensorDataset(saved["x"], saved["y"])
attribute_dataset(
    StopAt(UABackprop(uf), at=2, kill=True), data, sys.argv[2], batch_size=8, progress=False, path="inputgrad"
)
"""


@pytest.mark.subprocess
def test_killed_process_resumes_to_the_uninterrupted_output(uf, data, digits_ensemble, reference, tmp_path):
    weights = tmp_path / "ensemble.pt"
    torch.save(
        {"members": [m.state_dict() for m in digits_ensemble], "x": data.tensors[0], "y": data.tensors[1]}, weights
    )
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_SCRIPT, str(weights), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == 17, killed.stderr[-2000:]
    # shard 0 was on disk before batch 1 was attributed; shard 1 was being written in the background
    # when batch 2 killed the process: it is there whole, or not at all (at most a hidden temporary)
    survivors = shards(out)
    assert survivors in (["part-00000.parquet"], ["part-00000.parquet", "part-00001.parquet"])
    assert all(len(pq.read_table(out / name)) == BATCH for name in survivors)
    # the killed process left its lock behind: the resumed run takes it over and says so
    with pytest.warns(RuntimeWarning, match="lock"):
        result = attribute_dataset(StopAt(UABackprop(uf)), data, out, batch_size=BATCH, progress=False, **KWARGS)
    assert (result.shards_written, result.shards_skipped) == (5 - len(survivors), len(survivors))
    assert hidden(out) == []
    assert_same_output(reference, out, map_atol=1e-6)


def test_other_configuration_or_foreign_folder_is_refused(uf, data, reference):
    def run(explainer, **kwargs):
        options = {"batch_size": BATCH, "progress": False, **KWARGS, **kwargs}
        return attribute_dataset(explainer, data, reference, **options)

    before = {name: (reference / name).read_bytes() for name in shards(reference) + [MANIFEST]}
    with pytest.raises(ValueError, match="keys that differ: attribute_kwargs") as error:
        run(StopAt(UABackprop(uf)), path="grad")
    assert '"grad"' in str(error.value)
    with pytest.raises(ValueError, match="keys that differ: measure"):
        run(StopAt(UABackprop(uf.with_measure("total"))))
    with pytest.raises(ValueError, match="keys that differ: batch_size, shard_size"):
        run(StopAt(UABackprop(uf)), batch_size=16)
    with pytest.raises(ValueError, match="keys that differ: explainer"):
        run(UABackprop(uf))
    assert {name: (reference / name).read_bytes() for name in shards(reference) + [MANIFEST]} == before
    assert run(StopAt(UABackprop(uf))).shards_skipped == N // BATCH  # the same configuration is welcome


def test_attribute_kwargs_are_recorded_json_safe():
    baseline = torch.linspace(0, 1, 64, dtype=torch.float64).reshape(1, 8, 8)
    recorded = json_safe({"baselines": baseline, "n_steps": 8, "stdevs": (0.1, float("nan")), "fn": json.dumps})
    expected_hash = hashlib.sha256(baseline.numpy().tobytes()).hexdigest()
    assert recorded == {
        "baselines": {"tensor": {"shape": [1, 8, 8], "dtype": "torch.float64", "sha256": expected_hash}},
        "fn": {"callable": "json.dumps"},
        "n_steps": 8,
        "stdevs": [0.1, "nan"],
    }
    assert json.loads(json.dumps(recorded)) == recorded
    changed = baseline.clone()
    changed[0, 0, 0] = 0.5
    assert json_safe(changed) != json_safe(baseline)


def test_folder_without_manifest_is_refused(uf, data, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and has no _manifest.json"):
        attribute_dataset(UABackprop(uf), data, tmp_path, progress=False)
    with pytest.raises(ValueError, match="out must be a folder"):
        attribute_dataset(UABackprop(uf), data, tmp_path / "notes.txt", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_bad_arguments_are_named(uf, data, digits_ensemble, tmp_path):
    ua = UABackprop(uf)
    for bad in (["a", "b"], 3):
        with pytest.raises(TypeError, match="^data must be a torch Dataset"):
            attribute_dataset(ua, bad, tmp_path, progress=False)
    with pytest.raises(TypeError, match="^explainer must be an attribution object"):
        attribute_dataset(3, data, tmp_path, progress=False)
    with pytest.raises(TypeError, match="^explainer must be an attribution object"):
        attribute_dataset(uf, data, tmp_path, progress=False)
    with pytest.raises(TypeError, match="^explainer must explain an UncertaintyForward.*Saliency explains MNISTCNN"):
        attribute_dataset(Saliency(digits_ensemble[0]), data, tmp_path, progress=False)
    with pytest.raises(TypeError, match="^explainer is a factory, but it returned int"):
        attribute_dataset(lambda: 3, data, tmp_path, progress=False)
    with pytest.raises(ValueError, match="^data is empty"):
        attribute_dataset(ua, TensorDataset(data.tensors[0][:0]), tmp_path, progress=False)
    with pytest.raises(ValueError, match="^data is empty"):
        attribute_dataset(ua, DataLoader(EmptyStream(), batch_size=4), tmp_path, progress=False)
    with pytest.raises(ValueError, match="^engine must be one of"):
        attribute_dataset(ua, data, tmp_path, engine="spark", progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing was written


class EmptyStream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(())


def test_cli_attribute_writes_rows_and_rejects_a_bad_posterior(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = [
        "attribute",
        "--posterior",
        "tests.helpers.dataset_factory:make_forward",
        "--data",
        "digits",
        "--method",
        "ua_backprop",
        "--out",
        str(tmp_path / "cli"),
        "--limit",
        "20",
    ]
    assert main(args) == 0
    frame = pd.read_parquet(tmp_path / "cli")
    assert len(frame) == 20 and sorted(frame["index"]) == list(range(20))
    assert read_manifest(tmp_path / "cli")["attribute_kwargs"] == {"path": "auto"}  # the command line's ua_backprop
    capsys.readouterr()
    for posterior in (
        "tests.helpers.dataset_factory:nowhere",
        "no_such_module_xyz:make",
        "no-colon",
        "tests.helpers.dataset_factory:not_a_forward",
        "tests.helpers.dataset_factory:KWARGS_MISSING",
    ):
        assert main(["attribute", "--posterior", posterior, "--data", "digits", "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--posterior" in err, err
    assert not (tmp_path / "bad").exists()


@pytest.mark.ray
def test_readers_and_the_ray_engine_agree_with_the_local_engine(ray_runtime, uf, x, data, tmp_path):
    ray = ray_runtime
    local = tmp_path / "local"
    attribute_dataset(UABackprop(uf), data, local, batch_size=BATCH, shard_size=12, progress=False, **KWARGS)
    assert shards(local) == [f"part-0000{k}.parquet" for k in range(4)]  # 12, 12, 12, 4 rows
    distributed = tmp_path / "ray"
    result = attribute_dataset(
        UABackprop(uf),
        data,
        distributed,
        batch_size=BATCH,
        shard_size=12,
        engine="ray",
        concurrency=1,
        progress=False,
        **KWARGS,
    )
    assert result == DatasetResult(distributed, N, 4, 0)
    assert_same_output(local, distributed, map_atol=1e-6)

    # a Ray Dataset in blocks of 5, 12 and 23 rows (one tensor column, "data"): read in order by the local
    # engine, and batch by batch from the object store by the Ray engine's actors (the same BlockLoader)
    rows = ray.data.from_numpy([x[:5].numpy(), x[5:17].numpy(), x[17:].numpy()])
    from_ray = tmp_path / "from_ray_dataset"
    attribute_dataset(UABackprop(uf), rows, from_ray, batch_size=BATCH, shard_size=12, progress=False, **KWARGS)
    assert_same_output(local, from_ray)
    loader = block_loader(ray, RaySource(rows, BATCH))
    assert loader.offsets.tolist() == [0, 5, 17, N]
    for start in range(0, N, BATCH):
        assert torch.equal(loader.load(start, min(BATCH, N - start)), x[start : start + BATCH])

    expected = pads.dataset(local).to_table().sort_by("index").column("attribution").combine_chunks().to_numpy_ndarray()
    assert expected.shape == (N, 1, 8, 8)
    frame = pd.read_parquet(local).sort_values("index")
    shape = read_manifest(local)["map_shape"]
    np.testing.assert_array_equal(np.stack(frame["attribution"]).reshape(-1, *shape), expected)
    batch = ray.data.read_parquet(str(local)).take_batch(N)
    order = np.argsort(batch["index"])
    assert batch["attribution"].shape == (N, 1, 8, 8)
    np.testing.assert_array_equal(batch["attribution"][order], expected)
    np.testing.assert_array_equal(batch["index"][order], np.arange(N))
    manifest = json.loads((local / MANIFEST).read_text())
    assert manifest["shard_size"] == 12 and manifest["batch_size"] == BATCH
