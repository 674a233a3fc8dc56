"""attribute_dataset continues a folder only with the same posterior (fingerprint) and inputs (shard hashes)."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from captum.attr import Saliency
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_uncertainty import UncertaintyForward, attribute_dataset
from captum_uncertainty._cli import main
from captum_uncertainty.data import MNISTCNN
from captum_uncertainty.dataset import MANIFEST, read_manifest
from captum_uncertainty.posterior import DeepEnsemble, MCDropConnect, MCDropout, SampleCallable
from tests.helpers import make_cnn
from tests.helpers.dataset_factory import StopAt

N = 40
BATCH = 8  # 5 shards of 8 rows

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning")


@pytest.fixture(scope="module")
def members():
    return [make_cnn(0), make_cnn(1)]


@pytest.fixture(scope="module")
def x():
    return torch.rand(N, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def reloaded(modules):
    """The same weights in new modules, as a fresh process loading a checkpoint has them."""
    copies = []
    for seed, module in enumerate(modules):
        fresh = make_cnn(100 + seed)
        fresh.load_state_dict(module.state_dict())
        copies.append(fresh)
    return copies


def retrained(modules):
    """Same architecture, other weights: one more (tiny) update of the second member's first conv."""
    copies = [copy.deepcopy(module) for module in modules]
    with torch.no_grad():
        copies[1][0].weight[0, 0, 0, 0] += 1e-3
    return copies


def explainer(posterior, at=None):
    return StopAt(Saliency(UncertaintyForward(posterior, measure="epistemic")), at=at)


def run(explainer_, data, out, **kwargs):
    return attribute_dataset(explainer_, data, out, batch_size=BATCH, progress=False, **kwargs)


def snapshot(folder):
    """Every file of the folder (hidden ones too) with its bytes and modification time."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in sorted(Path(folder).iterdir())}


def shards(folder):
    return sorted(path.name for path in Path(folder).iterdir() if path.name.startswith("part-"))


def interrupted(posterior, data, out):
    """A run stopped at batch 3: shards 0, 1 and 2 are on disk."""
    with pytest.raises(RuntimeError, match="interrupted at batch 3"):
        run(explainer(posterior, at=3), data, out)
    assert shards(out) == [f"part-0000{k}.parquet" for k in range(3)]


def literal_inputs_hash(rows):
    """A shard's input hash by hand: sha256 of each row's sha256 (dtype, shape, bytes), in row order."""
    header = f"{rows.dtype}{tuple(rows.shape[1:])}".encode()
    digests = b"".join(hashlib.sha256(header + row.contiguous().numpy().tobytes()).digest() for row in rows)
    return hashlib.sha256(digests).hexdigest()


# ----------------------------------------------------------------------------- Posterior.fingerprint


def test_fingerprint_follows_every_weight_buffer_seed_and_mask(members):
    fingerprint = DeepEnsemble(members).fingerprint()
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0
    assert DeepEnsemble(reloaded(members)).fingerprint() == fingerprint  # a reloaded checkpoint: the same
    assert DeepEnsemble(retrained(members)).fingerprint() != fingerprint
    buffers = reloaded(members)
    buffers[0][1].running_mean[0] += 1e-6  # BatchNorm statistics are part of the samples
    assert DeepEnsemble(buffers).fingerprint() != fingerprint
    assert DeepEnsemble(members[:1]).fingerprint() != fingerprint  # number of samples
    assert DeepEnsemble(members[::-1]).fingerprint() != fingerprint  # which member is sample 0
    other_class = reloaded(members)
    other_class[0][2] = nn.GELU()  # same parameters, another layer
    assert DeepEnsemble(other_class).fingerprint() != fingerprint
    assert DeepEnsemble([m.float() for m in reloaded(members)]).fingerprint() != fingerprint  # dtypes count
    half = DeepEnsemble([copy.deepcopy(m).to(torch.bfloat16) for m in members]).fingerprint()  # numpy has no bf16
    assert (
        half != fingerprint
        and half == DeepEnsemble([copy.deepcopy(m).to(torch.bfloat16) for m in members]).fingerprint()
    )

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4)).double()
    dropout = MCDropout(model, num_samples=4, seed=0)
    first = dropout.fingerprint()
    dropout(torch.rand(3, 1, 8, 8, dtype=torch.float64))  # drawing the masks does not change what they are
    assert dropout.fingerprint() == first == MCDropout(model, num_samples=4, seed=0).fingerprint()
    assert MCDropout(model, num_samples=4, seed=1).fingerprint() != first
    assert MCDropout(model, num_samples=5, seed=0).fingerprint() != first
    dropout.resample()
    assert dropout.fingerprint() != first
    connect = MCDropConnect(model, num_samples=3, seed=0)
    before = connect.fingerprint()
    connect(torch.rand(3, 1, 8, 8, dtype=torch.float64))
    assert connect.fingerprint() == before == MCDropConnect(model, num_samples=3, seed=0).fingerprint()
    assert MCDropConnect(model, num_samples=3, seed=1).fingerprint() != before
    assert MCDropConnect(model, p=0.2, num_samples=3, seed=0).fingerprint() != before
    connect.resample()
    assert connect.fingerprint() != before


def test_sample_callable_needs_modules_or_a_fingerprint(members):
    def stacked(inputs):
        return torch.stack([member(inputs) for member in members])

    with pytest.raises(ValueError, match=r"pass SampleCallable\(\.\.\., fingerprint='\.\.\.'\)"):
        SampleCallable(stacked, layout="samples_first").fingerprint()
    named = SampleCallable(stacked, layout="samples_first", fingerprint="checkpoint-1").fingerprint()
    assert named == SampleCallable(stacked, layout="samples_first", fingerprint="checkpoint-1").fingerprint()
    assert named != SampleCallable(stacked, layout="samples_first", fingerprint="checkpoint-2").fingerprint()
    listed = SampleCallable(stacked, layout="samples_first", modules=members).fingerprint()
    assert listed == SampleCallable(stacked, layout="samples_first", modules=reloaded(members)).fingerprint()
    assert listed != SampleCallable(stacked, layout="samples_first", modules=retrained(members)).fingerprint()
    assert listed != SampleCallable(stacked, layout="samples_first", modules=members, seed=0).fingerprint()
    for bad in (3, ""):
        with pytest.raises(TypeError, match="^fingerprint must be a non-empty string"):
            SampleCallable(stacked, layout="samples_first", fingerprint=bad)


# ----------------------------------------------------------------------------- resuming a folder


def test_retrained_posterior_is_refused_and_the_folder_is_untouched(members, x, tmp_path):
    data = TensorDataset(x)
    interrupted(DeepEnsemble(members), data, tmp_path)
    assert read_manifest(tmp_path)["posterior_fingerprint"] == DeepEnsemble(members).fingerprint()
    stale = tmp_path / ".part-00003.parquet.tmp-99999"
    stale.write_bytes(b"PAR1 half a shard")
    before = snapshot(tmp_path)
    other = explainer(DeepEnsemble(retrained(members)))
    with pytest.raises(ValueError, match="^the posterior's weights differ from the run in") as error:
        run(other, data, tmp_path)
    assert str(tmp_path) in str(error.value) and "posterior_fingerprint" in str(error.value)
    assert "new out folder" in str(error.value) and "delete" in str(error.value)
    assert other.calls == 0 and snapshot(tmp_path) == before  # nothing attributed, no file touched

    same = explainer(DeepEnsemble(reloaded(members)))
    result = run(same, data, tmp_path)
    assert (result.shards_written, result.shards_skipped) == (2, 3) and same.calls == 2
    assert not stale.exists()


def test_other_inputs_of_the_same_length_are_refused_naming_the_shard(members, x, tmp_path):
    posterior = DeepEnsemble(members)
    run(explainer(posterior), TensorDataset(x), tmp_path)
    before = snapshot(tmp_path)
    changed = x.clone()
    changed[27, 0, 3, 3] += 1e-9  # row 27 lies in shard 3 (rows 24-31)
    swapped = x[[1, 0] + list(range(2, N))]  # the same rows in another order
    labelled = DataLoader(TensorDataset(changed, torch.zeros(N)), batch_size=BATCH)  # streamed, not read by index
    for data, shard, rows in (
        (TensorDataset(changed), 3, "24-31"),
        (TensorDataset(swapped), 0, "0-7"),
        (labelled, 3, "24-31"),
    ):
        attempt = explainer(posterior)
        with pytest.raises(ValueError, match=rf"^the inputs of shard {shard} \(rows {rows}\) differ from the run in"):
            run(attempt, data, tmp_path)
        assert attempt.calls == 0 and snapshot(tmp_path) == before

    # only the finished shards are compared: a change in a shard still to be done is new work
    partial = tmp_path / "partial"
    interrupted(posterior, TensorDataset(x), partial)
    later = x.clone()
    later[35] += 0.5  # shard 4, not written yet
    resumed = explainer(posterior)
    assert run(resumed, TensorDataset(later), partial).shards_written == 2 and resumed.calls == 2
    for shard, rows in enumerate((x[:8], x[8:16], x[16:24], x[24:32], later[32:])):
        metadata = pq.read_schema(partial / f"part-0000{shard}.parquet").metadata
        assert metadata[b"captum_uncertainty.inputs_sha256"].decode() == literal_inputs_hash(rows)


def test_same_posterior_and_inputs_still_skip_every_finished_shard(members, x, tmp_path):
    run(explainer(DeepEnsemble(members)), TensorDataset(x), tmp_path)
    for data in (TensorDataset(x.clone()), DataLoader(TensorDataset(x), batch_size=BATCH)):
        again = explainer(DeepEnsemble(reloaded(members)))
        result = run(again, data, tmp_path)
        assert (result.num_inputs, result.shards_written, result.shards_skipped) == (N, 0, 5) and again.calls == 0


def test_mcdropout_with_another_seed_is_refused(x, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4)).double()
    data = TensorDataset(x)
    posterior = MCDropout(model, num_samples=4, seed=0)
    interrupted(posterior, data, tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="^the posterior's weights differ from the run in"):
        run(explainer(MCDropout(model, num_samples=4, seed=1)), data, tmp_path)
    assert snapshot(tmp_path) == before
    # the same object, its masks drawn by now, continues
    assert run(explainer(posterior), data, tmp_path).shards_written == 2
    assert run(explainer(MCDropout(model, num_samples=4, seed=0)), data, tmp_path).shards_written == 0


def test_sample_callable_without_modules_needs_a_fingerprint_to_resume(members, x, tmp_path):
    def stacked(inputs):
        return torch.stack([member(inputs) for member in members])

    data = TensorDataset(x)
    unnamed = tmp_path / "unnamed"
    interrupted(SampleCallable(stacked, layout="samples_first"), data, unnamed)  # a fresh run may proceed
    assert read_manifest(unnamed)["posterior_fingerprint"] is None
    before = snapshot(unnamed)
    for posterior in (
        SampleCallable(stacked, layout="samples_first"),
        SampleCallable(stacked, layout="samples_first", fingerprint="checkpoint-1"),
    ):
        with pytest.raises(
            ValueError, match=r"without a fingerprint.*pass SampleCallable\(\.\.\., fingerprint='\.\.\.'\)"
        ):
            run(explainer(posterior), data, unnamed)
    assert snapshot(unnamed) == before

    named = tmp_path / "named"
    interrupted(SampleCallable(stacked, layout="samples_first", fingerprint="checkpoint-1"), data, named)
    before = snapshot(named)
    with pytest.raises(ValueError, match=r"has none .*pass SampleCallable\(\.\.\., fingerprint='\.\.\.'\)"):
        run(explainer(SampleCallable(stacked, layout="samples_first")), data, named)
    with pytest.raises(ValueError, match="^the posterior's weights differ"):
        run(explainer(SampleCallable(stacked, layout="samples_first", fingerprint="checkpoint-2")), data, named)
    assert snapshot(named) == before
    result = run(explainer(SampleCallable(stacked, layout="samples_first", fingerprint="checkpoint-1")), data, named)
    assert (result.shards_written, result.shards_skipped) == (2, 3)


def test_folders_without_the_records_are_refused(members, x, tmp_path):
    """A manifest without ``posterior_fingerprint`` or a shard without its input hash cannot be checked."""
    data = TensorDataset(x)
    run(explainer(DeepEnsemble(members)), data, tmp_path / "manifest")
    manifest = json.loads((tmp_path / "manifest" / MANIFEST).read_text())
    del manifest["posterior_fingerprint"]
    (tmp_path / "manifest" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="records no posterior_fingerprint"):
        run(explainer(DeepEnsemble(members)), data, tmp_path / "manifest")

    run(explainer(DeepEnsemble(members)), data, tmp_path / "shard")
    path = tmp_path / "shard" / "part-00002.parquet"
    pq.write_table(pq.read_table(path).replace_schema_metadata(None), path)
    with pytest.raises(ValueError, match=r"^shard 2 \(rows 16-23\) .* records no input hash"):
        run(explainer(DeepEnsemble(members)), data, tmp_path / "shard")


# ----------------------------------------------------------------------------- the command line


def _digits_forward(seed):
    torch.manual_seed(seed)
    return UncertaintyForward([MNISTCNN(in_channels=1, image_size=8, num_classes=10).eval()], measure="epistemic")


def test_cli_attribute_refuses_a_retrained_posterior(tmp_path, capsys, monkeypatch):
    factories = types.ModuleType("fingerprint_test_posteriors")
    factories.first = lambda: _digits_forward(0)
    factories.retrained = lambda: _digits_forward(1)
    monkeypatch.setitem(sys.modules, factories.__name__, factories)
    out = tmp_path / "cli"

    def cli(name):
        args = ["attribute", "--posterior", f"{factories.__name__}:{name}", "--data", "digits", "--method", "saliency"]
        return main(args + ["--out", str(out), "--limit", "16", "--batch-size", "8"])

    assert cli("first") == 0
    assert len(pq.read_table(out)) == 16 and shards(out) == ["part-00000.parquet", "part-00001.parquet"]
    capsys.readouterr()
    before = snapshot(out)
    assert cli("retrained") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "the posterior's weights differ from the run in" in err[-1] and str(out) in err[-1]
    assert snapshot(out) == before
    assert cli("first") == 0
    assert capsys.readouterr().out.strip().endswith("0 shards written, 2 already there")
    np.testing.assert_array_equal(np.sort(pq.read_table(out).column("index").to_numpy()), np.arange(16))


# ----------------------------------------------------------------------------- the Ray engine


@pytest.mark.ray
def test_ray_engine_checks_the_inputs_on_the_driver_and_hashes_them_in_the_actors(ray_runtime, members, x, tmp_path):
    ray = ray_runtime
    posterior = DeepEnsemble(members)
    options = {"engine": "ray", "concurrency": 1, "shard_size": 12}
    interrupted_out = tmp_path / "partial"
    with pytest.raises(RuntimeError, match="interrupted at batch 3"):
        run(explainer(posterior, at=3), TensorDataset(x), interrupted_out, shard_size=12)
    assert shards(interrupted_out) == ["part-00000.parquet", "part-00001.parquet"]  # rows 0-23
    before = snapshot(interrupted_out)
    changed = x.clone()
    changed[13] += 0.5  # shard 1, rows 12-23
    rows = ray.data.from_numpy([changed[:5].numpy(), changed[5:].numpy()])
    for data in (TensorDataset(changed), rows):
        with pytest.raises(ValueError, match=r"^the inputs of shard 1 \(rows 12-23\) differ"):
            run(explainer(posterior), data, interrupted_out, **options)
        assert snapshot(interrupted_out) == before
    with pytest.raises(ValueError, match="^the posterior's weights differ"):
        run(explainer(DeepEnsemble(retrained(members))), TensorDataset(x), interrupted_out, **options)
    assert snapshot(interrupted_out) == before

    result = run(explainer(posterior), TensorDataset(x), interrupted_out, **options)
    assert (result.shards_written, result.shards_skipped) == (2, 2)
    for shard, start in enumerate(range(0, N, 12)):  # the actors' digests give the local engine's hash
        metadata = pq.read_schema(interrupted_out / f"part-0000{shard}.parquet").metadata
        assert metadata[b"captum_uncertainty.inputs_sha256"].decode() == literal_inputs_hash(x[start : start + 12])
    again = run(explainer(posterior), ray.data.from_numpy(x.numpy()), interrupted_out, **options)
    assert (again.shards_written, again.shards_skipped) == (0, 4)


def test_a_forward_built_with_other_settings_is_refused_but_validate_does_not_matter(members, x, tmp_path):
    out = tmp_path / "out"
    data = TensorDataset(x)
    interrupted(members, data, out)
    before = snapshot(out)
    probabilities = StopAt(Saliency(UncertaintyForward(members, "epistemic", probabilities=True)))
    with pytest.raises(ValueError, match="forward_settings"):
        run(probabilities, data, out)
    assert snapshot(out) == before
    unvalidated = StopAt(Saliency(UncertaintyForward(members, "epistemic", validate=False)))
    result = run(unvalidated, data, out)
    assert result.shards_skipped == 3
