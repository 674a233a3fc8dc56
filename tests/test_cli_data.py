"""``python -m captum_uncertainty attribute`` on a user's own data: files, tables, image folders and
``MODULE:FUNCTION``; the maps equal the library's call, ids, labels and feature names reach
``DatasetResult.to_pandas()``, and bad data ends with one line."""

import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency

from captum_uncertainty import DatasetResult
from captum_uncertainty._cli import main
from captum_uncertainty._cli_data import load_cli_data
from captum_uncertainty.attr import BlurIntegratedGradients, GuidedIntegratedGradients, UncertaintyIntegratedGradients

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning")

MODULE = "cli_data_test_posteriors"
POSTERIORS = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from captum_uncertainty import UncertaintyForward


    def table():
        torch.manual_seed(0)
        return UncertaintyForward([nn.Linear(5, 3) for _ in range(3)], likelihood="categorical")


    def image():
        torch.manual_seed(1)
        members = [nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(72, 3)) for _ in range(3)]
        return UncertaintyForward(members, likelihood="categorical")


    def dataset():
        generator = torch.Generator().manual_seed(2)
        return TensorDataset(torch.rand(9, 5, generator=generator), torch.arange(9) % 3)
    """
)
FEATURES = ["age", "bmi", "glucose", "pressure", "insulin"]


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("posteriors")
    (folder / f"{MODULE}.py").write_text(POSTERIORS, encoding="utf-8")
    return folder


@pytest.fixture
def posteriors(module_dir, monkeypatch):
    """The posterior module, importable as ``MODULE:FUNCTION`` (sys.path is restored afterwards)."""
    monkeypatch.syspath_prepend(str(module_dir))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    import importlib

    return importlib.import_module(MODULE)


def attribute(data, out, method, *extra, posterior="table"):
    args = ["attribute", "--posterior", f"{MODULE}:{posterior}", "--data", str(data), "--method", method]
    return main(args + ["--out", str(out), "--batch-size", "4", *extra])


def feature_maps(frame, names):
    return torch.tensor(frame[names].to_numpy(), dtype=torch.float32)


def test_npy_file_gives_the_library_maps(posteriors, tmp_path):
    x = np.random.default_rng(0).random((10, 5))  # float64, numpy's default: cast to the posterior's float32
    np.save(tmp_path / "x.npy", x)
    assert attribute(tmp_path / "x.npy", tmp_path / "out", "uig") == 0
    frame = DatasetResult.load(tmp_path / "out").to_pandas()
    names = [f"feature_{j}" for j in range(5)]
    assert frame["index"].tolist() == list(range(10)) and "attribution" not in frame
    expected = UncertaintyIntegratedGradients(posteriors.table()).attribute(torch.from_numpy(x).float())
    torch.testing.assert_close(feature_maps(frame, names), expected, atol=1e-5, rtol=0)


def test_csv_carries_ids_labels_and_feature_names(posteriors, tmp_path):
    rng = np.random.default_rng(1)
    table = pd.DataFrame(rng.random((10, 5)), columns=FEATURES)
    table.insert(0, "patient", [f"p{k:02d}" for k in range(10)][::-1])
    table.insert(3, "outcome", rng.integers(0, 3, 10))  # between features: not one of them
    table.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "out"
    args = ("--id", "patient", "--label", "outcome")
    assert attribute(tmp_path / "t.csv", out, "captum_integrated_gradients", *args) == 0
    frame = DatasetResult.load(out).to_pandas()
    assert list(frame.columns[:3]) == ["index", "id", "label"] and FEATURES == list(frame.columns[-5:])
    assert frame["id"].tolist() == table["patient"].tolist()
    assert frame["label"].tolist() == table["outcome"].tolist()
    x = torch.tensor(table[FEATURES].to_numpy(), dtype=torch.float32)
    expected = IntegratedGradients(posteriors.table()).attribute(x)
    torch.testing.assert_close(feature_maps(frame, FEATURES), expected, atol=1e-5, rtol=0)
    assert len(pd.read_parquet(out)) == 10  # the annotations do not disturb reading the shards directly


def test_image_folder_gives_paths_classes_and_the_library_maps(posteriors, tmp_path):
    from PIL import Image
    from torchvision import datasets, transforms

    rng = np.random.default_rng(2)
    root = tmp_path / "images"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(root / name / f"{k}.png")
    out = tmp_path / "out"
    assert attribute(root, out, "blur_ig", "--grayscale", "--n-steps", "8", posterior="image") == 0
    frame = DatasetResult.load(out).to_pandas()
    assert frame["id"].tolist() == [f"{name}/{k}.png" for name in ("cat", "dog") for k in range(3)]
    assert frame["label"].tolist() == [0, 0, 0, 1, 1, 1]
    folder = datasets.ImageFolder(
        str(root), transform=transforms.Compose([transforms.Grayscale(1), transforms.ToTensor()])
    )
    x = torch.stack([folder[k][0] for k in range(len(folder))])
    expected = BlurIntegratedGradients(posteriors.image()).attribute(x, n_steps=8)
    maps = torch.from_numpy(np.stack(frame["attribution"].to_list()))
    assert maps.shape == (6, 1, 8, 8)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)


def test_module_function_dataset_gives_the_library_maps(posteriors, tmp_path):
    assert attribute(f"{MODULE}:dataset", tmp_path / "out", "guided_ig", "--n-steps", "10") == 0
    frame = DatasetResult.load(tmp_path / "out").to_pandas()
    x, y = posteriors.dataset().tensors
    assert frame["label"].tolist() == y.tolist() and "id" not in frame
    expected = GuidedIntegratedGradients(posteriors.table()).attribute(x, n_steps=10)
    torch.testing.assert_close(feature_maps(frame, [f"feature_{j}" for j in range(5)]), expected, atol=1e-5, rtol=0)


def test_n_steps_and_mean_baseline_reach_the_method(posteriors, tmp_path):
    x = torch.rand(10, 5, generator=torch.Generator().manual_seed(3))
    np.save(tmp_path / "x.npy", x.numpy())
    names = [f"feature_{j}" for j in range(5)]
    assert attribute(tmp_path / "x.npy", tmp_path / "default", "uig") == 0
    assert attribute(tmp_path / "x.npy", tmp_path / "mean", "uig", "--n-steps", "3", "--baseline", "mean") == 0
    default = feature_maps(DatasetResult.load(tmp_path / "default").to_pandas(), names)
    chosen = feature_maps(DatasetResult.load(tmp_path / "mean").to_pandas(), names)
    assert not torch.allclose(default, chosen, atol=1e-4)
    ig = UncertaintyIntegratedGradients(posteriors.table())
    expected = ig.attribute(x, baselines=x.mean(0, keepdim=True), n_steps=3)
    torch.testing.assert_close(chosen, expected, atol=1e-5, rtol=0)


def test_baseline_files_of_one_input_and_of_every_input(posteriors, tmp_path):
    x = torch.rand(10, 5, generator=torch.Generator().manual_seed(4))
    per_input = torch.rand(10, 5, generator=torch.Generator().manual_seed(5))
    torch.save(x, tmp_path / "x.pt")
    np.save(tmp_path / "one.npy", per_input[0].numpy())
    torch.save({"inputs": per_input}, tmp_path / "every.pt")
    names = [f"feature_{j}" for j in range(5)]
    ig = UncertaintyIntegratedGradients(posteriors.table())
    for name, baselines in (("one.npy", per_input[:1]), ("every.pt", per_input)):
        out = tmp_path / name.split(".")[0]
        assert attribute(tmp_path / "x.pt", out, "integrated_gradients", "--baseline", str(tmp_path / name)) == 0
        maps = feature_maps(DatasetResult.load(out).to_pandas(), names)
        torch.testing.assert_close(maps, ig.attribute(x, baselines=baselines), atol=1e-5, rtol=0)


def test_data_the_posterior_cannot_take_is_one_line_naming_the_shape(posteriors, tmp_path, capsys):
    pd.DataFrame(np.ones((4, 3)), columns=["a", "b", "c"]).to_csv(tmp_path / "t.csv", index=False)
    assert attribute(tmp_path / "t.csv", tmp_path / "out", "saliency") == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == ""
    assert lines[0].startswith("captum_uncertainty: error: data inputs have shape (4, 3) but the posterior failed")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name, make, extra, message",
    [
        ("data.txt", lambda p: p.write_text("1,2"), (), "cannot read files of type '.txt'"),
        ("data.npy", lambda p: p.write_bytes(b"not numpy"), (), "cannot read it as .npy"),
        ("data.npy", lambda p: np.save(p, np.ones(3)), (), "expected (N, ...)"),
        ("missing.csv", lambda p: None, (), "no such file or folder"),
        ("data.npy", lambda p: np.save(p, np.ones((3, 5))), ("--id", "patient"), "--id and --label name columns"),
        ("data.npy", lambda p: np.save(p, np.ones((3, 5))), ("--baseline", "middle"), "expected 'zeros', 'mean'"),
        ("data.npy", lambda p: np.save(p, np.ones((3, 5))), ("--baseline", "b.npy"), "expected 'zeros', 'mean'"),
    ],
    ids=["suffix", "damaged", "one-dimensional", "missing", "id-without-table", "baseline-word", "baseline-missing"],
)
def test_unreadable_data_and_options_are_one_line_errors(posteriors, tmp_path, capsys, name, make, extra, message):
    path = tmp_path / name
    make(path)
    assert attribute(path, tmp_path / "out", "uig", *extra) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert (str(path) in lines[0]) or "--baseline" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "method, option", [("saliency", "--n-steps"), ("ua_backprop", "--baseline"), ("lime", "--n-steps")]
)
def test_options_a_method_does_not_take_are_refused(posteriors, tmp_path, capsys, method, option):
    np.save(tmp_path / "x.npy", np.ones((3, 5), dtype=np.float32))
    assert attribute(tmp_path / "x.npy", tmp_path / "out", method, option, "4") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{option} does not apply to --method {method}" in lines[0]


def test_tables_and_archives_load_as_documented(tmp_path):
    frame = pd.DataFrame({"name": ["a", "b"], "x": [1.0, 2.0], "y": [3, 4], "flag": [True, False]})
    frame.to_parquet(tmp_path / "t.parquet")
    with pytest.warns(UserWarning, match="not numeric: name, flag"):
        data = load_cli_data(str(tmp_path / "t.parquet"), label_column="y")
    assert data.inputs.dtype == torch.float32 and data.inputs.tolist() == [[1.0], [2.0]]
    assert data.feature_names == ["x"] and data.labels == [3, 4] and data.ids is None
    np.savez(tmp_path / "a.npz", x=np.ones((2, 3), dtype=np.int64), other=np.zeros(1))
    assert load_cli_data(str(tmp_path / "a.npz")).inputs.dtype == torch.float32
    pd.DataFrame({"x": [1.0, None]}).to_csv(tmp_path / "n.csv", index=False)
    with pytest.raises(ValueError, match="missing values: x"):
        load_cli_data(str(tmp_path / "n.csv"))


def test_to_polars_names_polars_when_it_is_missing(posteriors, tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.ones((2, 5), dtype=np.float32))
    assert attribute(tmp_path / "x.npy", tmp_path / "out", "saliency") == 0
    monkeypatch.setitem(sys.modules, "polars", None)
    with pytest.raises(ImportError, match="polars"):
        DatasetResult.load(tmp_path / "out").to_polars()


def test_load_refuses_a_folder_without_a_finished_run(tmp_path):
    with pytest.raises(ValueError, match="has no _manifest.json"):
        DatasetResult.load(tmp_path)


def test_saliency_maps_of_an_image_tensor_stay_arrays_of_the_map_shape(posteriors, tmp_path):
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    torch.save({"x": x}, tmp_path / "x.pt")
    assert attribute(tmp_path / "x.pt", tmp_path / "out", "saliency", posterior="image") == 0
    frame = DatasetResult.load(tmp_path / "out").to_pandas()
    expected = Saliency(posteriors.image()).attribute(x)
    torch.testing.assert_close(torch.from_numpy(np.stack(frame["attribution"].to_list())), expected)


def test_path_methods_store_delta_and_baseline_uncertainty_for_completeness(posteriors, tmp_path):
    rng = np.random.default_rng(5)
    np.save(tmp_path / "x.npy", rng.random((6, 5)).astype(np.float32))
    out = tmp_path / "out"
    assert attribute(tmp_path / "x.npy", out, "uig", "--n-steps", "16", "--baseline", "mean") == 0
    frame = DatasetResult.load(out).to_pandas()
    maps = feature_maps(frame, [f"feature_{j}" for j in range(5)])
    x = torch.from_numpy(np.load(tmp_path / "x.npy"))
    forward = posteriors.table()
    with torch.no_grad():
        at_baseline = forward(x.mean(0, keepdim=True)).expand(6)
    torch.testing.assert_close(
        torch.tensor(frame["baseline_uncertainty"].to_numpy(), dtype=torch.float32), at_baseline, atol=1e-5, rtol=1e-5
    )
    measure = forward.measure
    completeness = maps.sum(1) - (torch.tensor(frame[measure].to_numpy()) - at_baseline.double()).float()
    torch.testing.assert_close(
        completeness, torch.tensor(frame["delta"].to_numpy(), dtype=torch.float32), atol=1e-5, rtol=1e-5
    )
