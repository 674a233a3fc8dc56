"""Many-class data: composed multi-digit MNIST numbers, their CNN and the cached ensemble."""

import numpy as np
import pytest
import torch

from captum_uncertainty import UABackprop, UncertaintyForward
from captum_uncertainty.attr._utils.gradients import unseen_bias_layers
from captum_uncertainty.data import (
    MultiDigitCNN,
    load_mnist,
    load_multidigit_mnist,
    train_multidigit_ensemble,
)


def tiles(images, digits):
    """The 28 x 28 tiles of composed images as bytes, ``[image][position]``."""
    return [
        [image[0, :, 28 * p : 28 * (p + 1)].contiguous().numpy().tobytes() for p in range(digits)] for image in images
    ]


def digit_table(x, y):
    """bytes of a bundled digit image -> its label."""
    return {image.contiguous().numpy().tobytes(): int(label) for image, label in zip(x[:, 0], y)}


@pytest.fixture(scope="module")
def base():
    return load_mnist(seed=0)


@pytest.mark.parametrize("digits", [2, 3])
def test_shape_labels_and_no_digit_shared_between_train_and_test(base, digits):
    data = load_multidigit_mnist(digits=digits, n_train=300, n_test=200, seed=0)
    assert data.x_train.shape == (300, 1, 28, 28 * digits) and data.x_test.shape == (200, 1, 28, 28 * digits)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0
    train_digits, test_digits = digit_table(base.x_train, base.y_train), digit_table(base.x_test, base.y_test)
    assert not set(train_digits) & set(test_digits)  # the bundled split itself shares no image
    for x, y, allowed in ((data.x_train, data.y_train, train_digits), (data.x_test, data.y_test, test_digits)):
        for image_tiles, label in zip(tiles(x, digits), y.tolist()):
            # every tile is a digit image of this half of the split (never of the other half)
            assert all(tile in allowed for tile in image_tiles)
            # the label is the number the tiles spell, the leftmost digit most significant
            number = 0
            for tile in image_tiles:
                number = 10 * number + allowed[tile]
            assert number == label
    assert 0 <= int(data.y_train.min()) and int(data.y_train.max()) < 10**digits


def test_labels_spread_over_all_numbers():
    data = load_multidigit_mnist(digits=2, n_train=5000, n_test=100, seed=0)
    counts = np.bincount(data.y_train.numpy(), minlength=100)
    assert len(counts) == 100 and counts.min() > 0
    # uniform over 100 numbers: 50 expected per class; each digit position is uniform too
    assert abs(counts.mean() - 50) < 1e-9 and counts.max() < 90
    for position_counts in (np.bincount(data.y_train.numpy() // 10), np.bincount(data.y_train.numpy() % 10)):
        assert np.all(np.abs(position_counts - 500) < 100)


def test_seed_reproducibility_and_independent_test_draws():
    first = load_multidigit_mnist(digits=2, n_train=100, n_test=50, seed=3)
    again = load_multidigit_mnist(digits=2, n_train=100, n_test=50, seed=3)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    other = load_multidigit_mnist(digits=2, n_train=100, n_test=50, seed=4)
    assert not torch.equal(first.y_train, other.y_train) and not torch.equal(first.x_test, other.x_test)
    # the test draws do not depend on how many training images were drawn
    more = load_multidigit_mnist(digits=2, n_train=170, n_test=50, seed=3)
    assert torch.equal(more.x_test, first.x_test) and torch.equal(more.y_test, first.y_test)


@pytest.mark.parametrize("digits", [2, 3])
def test_model_outputs_one_logit_per_number_and_fullgrad_reads_every_bias(digits):
    torch.manual_seed(0)
    model = MultiDigitCNN(digits).eval()
    assert model.num_classes == 10**digits
    assert model(torch.rand(3, 1, 28, 28 * digits)).shape == (3, 10**digits)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 4 and all(layer.bias is not None for layer in layers)
    assert unseen_bias_layers([model]) == []
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())


def test_ua_backprop_fullgrad_is_complete_on_a_100_class_ensemble():
    torch.manual_seed(0)
    members = [MultiDigitCNN(2, width=4, hidden=16).eval() for _ in range(2)]
    uf = UncertaintyForward(members, measure="epistemic")
    x = torch.rand(2, 1, 28, 56)
    maps = UABackprop(uf).attribute(x, path="fullgrad")
    assert maps.shape == (2, 1, 28, 56)
    with torch.no_grad():
        expected = uf(x)
    assert torch.allclose(maps.flatten(1).sum(1), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(digits=4), "digits"),
        (dict(digits=1), "digits"),
        (dict(digits="2"), "digits"),
        (dict(n_train=0), "n_train"),
        (dict(n_test=-1), "n_test"),
        (dict(n_train=2.5), "n_train"),
        (dict(seed=-1), "seed"),
        (dict(seed=True), "seed"),
    ],
)
def test_loader_rejects_bad_arguments_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        load_multidigit_mnist(**kwargs)


@pytest.mark.parametrize(
    "kwargs,name",
    [(dict(digits=4), "digits"), (dict(width=0), "width"), (dict(hidden=-3), "hidden")],
)
def test_model_rejects_bad_arguments_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MultiDigitCNN(**kwargs)


@pytest.fixture(scope="module")
def tiny():
    return load_multidigit_mnist(digits=2, n_train=192, n_test=64, seed=0)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(digits=5), "digits"),
        (dict(n_members=0), "n_members"),
        (dict(epochs=0), "epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=0.0), "lr"),
        (dict(width=0), "width"),
        (dict(seed=-2), "seed"),
        (dict(digits=3), "data"),  # 2-digit images for a 3-digit ensemble
    ],
)
def test_ensemble_rejects_bad_arguments_naming_them(tiny, kwargs, name):
    arguments = dict(digits=2, n_members=1, data=tiny, epochs=1, cache_dir=None, progress=False)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=name):
        train_multidigit_ensemble(**arguments)


def test_ensemble_trains_caches_and_keeps_global_rng(tiny, tmp_path):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    settings = dict(digits=2, n_members=2, data=tiny, epochs=1, seed=0, cache_dir=tmp_path, progress=False)
    models = train_multidigit_ensemble(**settings)
    assert torch.equal(torch.rand(1), expected_next), "training must not consume the global RNG"
    assert len(models) == 2 and all(isinstance(m, MultiDigitCNN) and not m.training for m in models)
    assert models[0](tiny.x_test[:3]).shape == (3, 100)
    files = list(tmp_path.glob("multidigit-ensemble-*.pt"))
    assert len(files) == 1
    # training moved the weights away from the seeded initialisation
    torch.manual_seed(0)
    assert not torch.equal(MultiDigitCNN(2).features[0].weight, models[0].features[0].weight)
    cached = train_multidigit_ensemble(**settings)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    for trained, loaded in zip(models, cached):
        trained_state, loaded_state = trained.state_dict(), loaded.state_dict()
        assert trained_state.keys() == loaded_state.keys()
        assert all(torch.equal(trained_state[key], loaded_state[key]) for key in trained_state)
    assert not torch.equal(models[0].features[0].weight, models[1].features[0].weight)  # members differ
    # another argument or other data is another cache entry
    train_multidigit_ensemble(**{**settings, "seed": 1})
    other = load_multidigit_mnist(digits=2, n_train=192, n_test=64, seed=1)
    train_multidigit_ensemble(**{**settings, "data": other})
    assert len(list(tmp_path.glob("multidigit-ensemble-*.pt"))) == 3
    # cache_dir=None trains the same members again without writing anything
    uncached = train_multidigit_ensemble(**{**settings, "cache_dir": None})
    assert all(torch.equal(a.classifier[-1].weight, b.classifier[-1].weight) for a, b in zip(models, uncached))
    assert len(list(tmp_path.glob("*.pt"))) == 3
