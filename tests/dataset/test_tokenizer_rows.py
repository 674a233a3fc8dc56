"""attribute_dataset on a tokenizer's rows (mappings of tensors), and the units its manifest states."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset
from transformers import GPT2Config, GPT2ForSequenceClassification

from captum_uncertainty import Gaussian, LayerUncertaintyIntegratedGradients, UncertaintyForward, attribute_dataset
from captum_uncertainty.dataset import MANIFEST, read_manifest
from captum_uncertainty.llm.toy import toy_tokenizer
from tests.helpers.dataset_factory import StopAt

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran",
    "maybe the rug",
    "the dog sat on a rug",
    "a cat",
    "zorp ran on the mat",
]
KWARGS = {"baselines": 0, "n_steps": 8, "sum_embedding": True}  # baseline 0: the pad id, so padding gets exactly 0


def _gpt2(seed: int) -> GPT2ForSequenceClassification:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=14, n_positions=16, n_embd=16, n_layer=1, n_head=2, num_labels=3, pad_token_id=0)
    return GPT2ForSequenceClassification(config).eval()


class Rows(Dataset):
    """A map-style Dataset whose items are one row of a tokenizer's output each."""

    def __init__(self, encoding):
        self.encoding = encoding

    def __len__(self):
        return int(self.encoding["input_ids"].shape[0])

    def __getitem__(self, index):
        return {name: values[index] for name, values in self.encoding.items()}


class RowStream(IterableDataset):
    def __init__(self, rows):
        self.rows = rows

    def __iter__(self):
        return iter(self.rows)


@pytest.fixture(scope="module")
def members():
    return [_gpt2(seed) for seed in range(3)]


@pytest.fixture(scope="module")
def encoding():
    tokenizer = toy_tokenizer()
    tokenizer.padding_side = "left"
    return tokenizer(SENTENCES, return_tensors="pt", padding=True)


@pytest.fixture(scope="module")
def rows(encoding):
    return [{name: values[index] for name, values in encoding.items()} for index in range(len(SENTENCES))]


@pytest.fixture(scope="module")
def uf(members):
    return UncertaintyForward(members, "total")


@pytest.fixture(scope="module")
def lig(uf, members):
    return LayerUncertaintyIntegratedGradients(uf, [m.get_input_embeddings() for m in members])


@pytest.fixture(scope="module")
def expected(lig, encoding):
    return lig.attribute(encoding, baselines=0, n_steps=8, sum_embedding=True)


def stored(out):
    table = pq.read_table(out)
    table = table.take(np.argsort(table.column("index").to_numpy(), kind="stable"))
    return table, torch.tensor(table.column("attribution").combine_chunks().to_numpy_ndarray())


def shards(out):
    return {path.name: path.stat().st_mtime_ns for path in Path(out).glob("part-*.parquet")}


def run(explainer, data, out, **kwargs):
    return attribute_dataset(explainer, data, out, progress=False, **{"batch_size": 4, **kwargs, **KWARGS})


@pytest.mark.parametrize("kind", ["list", "dataset", "loader", "stream"])
def test_tokenizer_rows_give_the_maps_of_the_whole_encoding(kind, lig, uf, encoding, rows, expected, tmp_path):
    data = {
        "list": rows,
        "dataset": Rows(encoding),
        "loader": DataLoader(Rows(encoding), batch_size=4),
        "stream": RowStream(rows),
    }[kind]
    extra = {"batch_size": None} if kind == "loader" else {}
    result = run(lig, data, tmp_path, **extra)
    assert (result.num_inputs, result.shards_written, result.shards_skipped) == (6, 2, 0)
    table, maps = stored(tmp_path)
    assert maps.shape == expected.shape == (6, encoding["input_ids"].shape[1])
    torch.testing.assert_close(maps, expected.float(), atol=1e-5, rtol=0)
    padding = encoding["attention_mask"] == 0
    assert padding.any() and (maps[padding] == 0).all()  # exactly zero
    with torch.no_grad():
        summary = uf.decompose(encoding)
    np.testing.assert_allclose(table.column("total").to_numpy(), summary.total.numpy(), atol=1e-5)
    assert table.column("predicted").to_numpy().tolist() == uf.predicted_class(encoding).tolist()
    manifest = read_manifest(tmp_path)
    assert manifest["map_shape"] == [encoding["input_ids"].shape[1]] and manifest["units"] == "nats"

    before = shards(tmp_path)
    again = run(lig, data, tmp_path, **extra)  # resumes: every shard is there and its inputs unchanged
    assert (again.shards_written, again.shards_skipped) == (0, 2)
    assert shards(tmp_path) == before


def test_an_interrupted_run_resumes_and_every_tensor_of_a_row_is_hashed(lig, rows, expected, tmp_path):
    with pytest.raises(RuntimeError, match="interrupted at batch 1"):
        run(StopAt(lig, at=1), rows, tmp_path, shard_size=2)
    assert sorted(shards(tmp_path)) == ["part-00000.parquet", "part-00001.parquet"]
    result = run(StopAt(lig), rows, tmp_path, shard_size=2)
    assert (result.shards_written, result.shards_skipped) == (1, 2)
    torch.testing.assert_close(stored(tmp_path)[1], expected.float(), atol=1e-5, rtol=0)

    masked = [dict(row) for row in rows]
    masked[1]["attention_mask"] = torch.ones_like(masked[1]["attention_mask"])  # same ids, other mask
    before = shards(tmp_path)
    with pytest.raises(ValueError, match="the inputs of shard 0 .* differ from the run"):
        run(StopAt(lig), masked, tmp_path, shard_size=2)
    assert shards(tmp_path) == before


def test_other_items_are_refused_naming_data(lig, encoding, rows, tmp_path):
    ragged = [*rows[:2], {name: values[1:] for name, values in rows[2].items()}, *rows[3:]]
    out = tmp_path / "ragged"
    with pytest.raises(ValueError, match=r"^data rows 0 and 2 differ .*input_ids: \[6\].*input_ids: \[5\].*pad every"):
        run(lig, ragged, out)
    assert not out.exists()  # a list is checked whole before out is touched
    with pytest.raises(ValueError, match="^data rows 0 and 2 of one batch differ"):
        run(lig, RowStream(ragged), tmp_path / "stream")

    class RaggedRows(Rows):
        def __getitem__(self, index):
            row = super().__getitem__(index)
            return {name: values[1:] for name, values in row.items()} if index >= 4 else row

    with pytest.raises(ValueError, match=r"^data rows from 4 on differ from those from 0 on .*pad every"):
        run(lig, RaggedRows(encoding), tmp_path / "dataset")
    listed = [*rows[:5], {"input_ids": rows[5]["input_ids"].tolist(), "attention_mask": rows[5]["attention_mask"]}]
    with pytest.raises(TypeError, match="^data yielded a mapping whose 'input_ids' is a list; expected tensors, "):
        run(lig, listed, tmp_path / "listed")
    with pytest.raises(TypeError, match="^data rows 0 and 3 hold a dict and a Tensor"):
        run(lig, [*rows[:3], rows[3]["input_ids"], *rows[4:]], tmp_path / "mixed")
    with pytest.raises(TypeError, match="^data must be a torch Dataset"):
        run(lig, [row["input_ids"] for row in rows], tmp_path / "tensors")


def test_the_manifest_states_the_units(tmp_path):
    torch.manual_seed(0)
    regressor = UncertaintyForward([nn.Linear(3, 2) for _ in range(3)], likelihood=Gaussian(variance="log_variance"))
    data = TensorDataset(torch.randn(10, 3))
    attribute_dataset(IntegratedGradients(regressor), data, tmp_path / "gaussian", batch_size=5, progress=False)
    assert read_manifest(tmp_path / "gaussian")["units"] == "squared output units"

    classifier = UncertaintyForward([nn.Linear(3, 4) for _ in range(3)], "epistemic")
    out = tmp_path / "categorical"
    attribute_dataset(IntegratedGradients(classifier), data, out, batch_size=5, progress=False)
    assert read_manifest(out)["units"] == "nats"

    # a folder written before the manifest stated its units reads as None and is still continued
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["units"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    (out / "part-00001.parquet").unlink()
    assert read_manifest(out)["units"] is None
    result = attribute_dataset(IntegratedGradients(classifier), data, out, batch_size=5, progress=False)
    assert (result.shards_written, result.shards_skipped) == (1, 1)
    assert read_manifest(out)["units"] == "nats"
