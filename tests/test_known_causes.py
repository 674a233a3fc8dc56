"""Data sets whose cause of uncertainty is known by construction: patch, overlay and table."""

import math

import pytest
import torch
from torch import nn

from captum_uncertainty import UncertaintyForward
from captum_uncertainty.data import (
    SUPPORTED_TABULAR_CAUSES,
    DataSplit,
    KnownCauseImages,
    KnownCauseTable,
    load_mnist,
    make_aleatoric_overlay_images,
    make_epistemic_patch_images,
    make_tabular_known_causes,
    train_ensemble,
    train_model,
)


def _assert_identical(first, second):
    for a, b in zip(first, second):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
        else:
            assert a == b


def _share_rising(forward, caused, clean):
    with torch.no_grad():
        return float((forward(caused) > forward(clean)).float().mean())


# ----------------------------------------------------------------------------- epistemic patch


@pytest.mark.parametrize("patch_size, strength", [(None, 1.0), (3, 0.7), (4, 0.3)])
def test_patch_changes_exactly_the_masked_pixels_of_the_test_images(digits, patch_size, strength):
    known = make_epistemic_patch_images(digits, strength=strength, patch_size=patch_size, n_test=120, seed=0)
    assert isinstance(known, KnownCauseImages) and known.strength == strength
    assert known.x_test.shape == known.clean.shape == known.masks.shape == (120, 1, 8, 8)
    assert known.x_test.dtype == torch.float32 and known.masks.dtype == torch.bool
    assert torch.equal((known.x_test != known.clean), known.masks)
    assert bool(known.masks.flatten(1).any(1).all()), "every test image must carry the cause"
    assert torch.equal(known.clean, digits.x_test[:120]) and torch.equal(known.y_test, digits.y_test[:120])
    assert torch.equal(known.x_train, digits.x_train) and torch.equal(known.y_train, digits.y_train)
    assert known.train_overlaid is None and known.train_second_class is None
    assert 0.0 <= float(known.x_test.min()) and float(known.x_test.max()) <= 1.0
    side = 2 if patch_size is None else patch_size  # default: round(0.25 * 8)
    for mask in known.masks[:, 0]:
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert int(rows.max() - rows.min()) < side and int(cols.max() - cols.min()) < side


def test_full_strength_patch_is_a_checkerboard_never_seen_in_training(digits):
    known = make_epistemic_patch_images(digits, strength=1.0, patch_size=3, seed=1)
    assert set(known.x_test[known.masks].unique().tolist()) <= {0.0, 1.0}
    checkerboard = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    windows = nn.functional.unfold(digits.x_train, 3).transpose(1, 2)  # (N, positions, 9)
    assert not bool((windows == checkerboard.flatten()).all(-1).any())
    # the caused pixels agree with one checkerboard parity: 1 on one colour, 0 on the other
    for image, mask in zip(known.x_test[:, 0], known.masks[:, 0]):
        rows, cols = torch.nonzero(mask, as_tuple=True)
        parity = (rows + cols) % 2
        values = image[rows, cols]
        assert len(set(zip(parity.tolist(), values.tolist()))) <= 2


def test_patch_on_the_bundled_mnist_defaults_to_a_seven_pixel_patch():
    data = load_mnist()
    known = make_epistemic_patch_images(data, n_test=40)
    assert known.x_test.shape == (40, 1, 28, 28)
    assert torch.equal((known.x_test != known.clean), known.masks)
    assert bool(known.masks.flatten(1).any(1).all())
    for mask in known.masks[:, 0]:
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert int(rows.max() - rows.min()) < 7 and int(cols.max() - cols.min()) < 7
    assert torch.equal(known.x_train, data.x_train)


def test_patch_is_seeded_and_strength_zero_is_clean(digits):
    first = make_epistemic_patch_images(digits, patch_size=3, seed=5)
    _assert_identical(first, make_epistemic_patch_images(digits, patch_size=3, seed=5))
    other = make_epistemic_patch_images(digits, patch_size=3, seed=6)
    assert not torch.equal(first.x_test, other.x_test) and not torch.equal(first.masks, other.masks)
    none = make_epistemic_patch_images(digits, strength=0.0, patch_size=3)
    assert torch.equal(none.x_test, none.clean) and not bool(none.masks.any())


# ----------------------------------------------------------------------------- aleatoric overlay


def test_overlay_changes_exactly_the_masked_pixels_of_the_test_images(digits):
    known = make_aleatoric_overlay_images(digits, strength=0.5, n_test=200, seed=0)
    assert known.x_test.shape == known.clean.shape == known.masks.shape == (200, 1, 8, 8)
    assert torch.equal((known.x_test != known.clean), known.masks)
    assert bool(known.masks.flatten(1).any(1).all())
    assert bool((known.x_test >= known.clean).all()) and float(known.x_test.max()) <= 1.0
    assert torch.equal(known.clean, digits.x_test[:200]) and torch.equal(known.y_test, digits.y_test[:200])


def test_overlaid_training_images_carry_either_of_their_two_classes(digits):
    known = make_aleatoric_overlay_images(digits, strength=0.5, share=0.5, seed=0)
    overlaid, second = known.train_overlaid, known.train_second_class
    assert overlaid is not None and second is not None
    n_train = digits.x_train.shape[0]
    assert int(overlaid.sum()) == round(0.5 * n_train)
    # untouched images keep their pixels and labels
    assert torch.equal(known.x_train[~overlaid], digits.x_train[~overlaid])
    assert torch.equal(known.y_train[~overlaid], digits.y_train[~overlaid])
    assert bool((second[~overlaid] == -1).all())
    # overlaid ones hold a digit of another class and are labelled with one of the two classes
    base = digits.y_train[overlaid]
    assert bool((second[overlaid] != base).all())
    assert bool((known.x_train[overlaid] != digits.x_train[overlaid]).flatten(1).any(1).all())
    labels = known.y_train[overlaid]
    assert bool(((labels == base) | (labels == second[overlaid])).all())
    share_base = float((labels == base).float().mean())
    assert 0.42 < share_base < 0.58, share_base


def test_overlay_share_bounds_and_strength_zero(digits):
    nothing = make_aleatoric_overlay_images(digits, share=0.0, n_test=50)
    assert torch.equal(nothing.x_train, digits.x_train) and torch.equal(nothing.y_train, digits.y_train)
    assert nothing.train_overlaid is not None and not bool(nothing.train_overlaid.any())
    everything = make_aleatoric_overlay_images(digits, share=1.0, n_test=50)
    assert everything.train_overlaid is not None and bool(everything.train_overlaid.all())
    clean = make_aleatoric_overlay_images(digits, strength=0.0, n_test=50)
    assert torch.equal(clean.x_test, clean.clean) and not bool(clean.masks.any())
    assert torch.equal(clean.x_train, digits.x_train)


def test_overlay_is_seeded(digits):
    first = make_aleatoric_overlay_images(digits, n_test=100, seed=3)
    _assert_identical(first, make_aleatoric_overlay_images(digits, n_test=100, seed=3))
    other = make_aleatoric_overlay_images(digits, n_test=100, seed=4)
    assert not torch.equal(first.x_test, other.x_test) and not torch.equal(first.masks, other.masks)
    assert not torch.equal(first.x_train, other.x_train) and not torch.equal(first.y_train, other.y_train)


# ----------------------------------------------------------------------------- uncertainty rises


def test_uncertainty_of_the_caused_kind_rises_for_most_images(digits, digits_ensemble):
    patch = make_epistemic_patch_images(digits, patch_size=4, strength=1.0, seed=0)
    epistemic = UncertaintyForward(digits_ensemble, measure="epistemic")
    patch_share = _share_rising(epistemic, patch.x_test, patch.clean)

    overlay = make_aleatoric_overlay_images(digits, strength=0.5, share=0.5, seed=0)
    fitted = DataSplit(overlay.x_train, overlay.y_train, overlay.x_test, overlay.y_test)
    members = train_ensemble(n_members=3, data=fitted, epochs=8, seed=0, cache_dir=None, progress=False)
    aleatoric = UncertaintyForward(members, measure="aleatoric")
    overlay_share = _share_rising(aleatoric, overlay.x_test, overlay.clean)

    print(f"\nepistemic rises under the patch for {patch_share:.3f} of the test images")
    print(f"aleatoric rises under the overlay for {overlay_share:.3f} of the test images")
    assert patch_share > 0.5 and overlay_share > 0.5


# ----------------------------------------------------------------------------- table


def test_table_masks_mark_exactly_the_caused_feature():
    table = make_tabular_known_causes(n_train=1000, n_test=201, n_features=6, seed=0)
    assert isinstance(table, KnownCauseTable)
    assert table.feature_names == ["x0", "x1", "x2", "x3", "noise", "out_of_range"]
    assert (table.noise_feature, table.out_of_range_feature) == (4, 5)
    assert table.x_train.shape == (1000, 6) and table.x_test.shape == table.clean.shape == table.masks.shape
    assert table.x_train.dtype == torch.float32 and table.y_train.dtype == torch.int64
    assert set(table.y_train.unique().tolist()) == {0, 1}
    assert table.masks.sum(1).tolist() == [1] * 201
    assert int((table.cause == 1).sum()) == 100 and int((table.cause == 0).sum()) == 101
    assert SUPPORTED_TABULAR_CAUSES == ("noise", "out_of_range")
    expected = torch.zeros_like(table.masks)
    expected[table.cause == 0, table.noise_feature] = True
    expected[table.cause == 1, table.out_of_range_feature] = True
    assert torch.equal(table.masks, expected)
    assert torch.equal(table.x_test != table.clean, table.masks)

    out_of_range = table.out_of_range_feature
    far = table.x_test[table.cause == 1, out_of_range].abs()
    assert bool((far >= 6).all()) and bool((far <= 8).all())
    assert float(table.x_train[:, out_of_range].abs().max()) < float(far.min())
    assert float(table.clean[:, out_of_range].abs().max()) <= 1.0
    assert bool((table.x_test[table.cause == 0, table.noise_feature] > 1).all())
    assert bool((table.clean[:, table.noise_feature] <= 1).all())
    # the label rule holds where the noise feature is quiet
    quiet = table.x_train[:, table.noise_feature] <= 1
    rule = (table.x_train[:, 0] + table.x_train[:, 1] > 0).long()
    assert torch.equal(table.y_train[quiet], rule[quiet])
    noisy = ~quiet
    assert 0.3 < float((table.y_train[noisy] == rule[noisy]).float().mean()) < 0.7


def test_table_is_seeded():
    first = make_tabular_known_causes(n_train=300, n_test=50, seed=2)
    _assert_identical(first, make_tabular_known_causes(n_train=300, n_test=50, seed=2))
    other = make_tabular_known_causes(n_train=300, n_test=50, seed=3)
    assert not torch.equal(first.x_train, other.x_train) and not torch.equal(first.x_test, other.x_test)


def test_table_uncertainty_of_the_caused_kind_rises_for_most_rows():
    table = make_tabular_known_causes(seed=0)
    width = table.x_train.shape[1]

    def member(seed):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = nn.Sequential(nn.Linear(width, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
        return train_model(model, table.x_train, table.y_train, epochs=10, batch_size=64, lr=1e-2, seed=seed)

    members = [member(seed) for seed in range(3)]
    far, noisy = table.cause == 1, table.cause == 0
    epistemic = UncertaintyForward(members, measure="epistemic", likelihood="categorical")
    aleatoric = UncertaintyForward(members, measure="aleatoric", likelihood="categorical")
    epistemic_share = _share_rising(epistemic, table.x_test[far], table.clean[far])
    aleatoric_share = _share_rising(aleatoric, table.x_test[noisy], table.clean[noisy])
    print(f"\nepistemic rises on the out-of-range rows for {epistemic_share:.3f} of them")
    print(f"aleatoric rises on the noise rows for {aleatoric_share:.3f} of them")
    assert epistemic_share > 0.5 and aleatoric_share > 0.5


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("maker", [make_epistemic_patch_images, make_aleatoric_overlay_images])
def test_image_generators_refuse_bad_arguments(digits, maker):
    for strength in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="strength"):
            maker(digits, strength=strength)
    for strength in ("0.5", True):
        with pytest.raises(TypeError, match="strength"):
            maker(digits, strength=strength)
    for n_test in (0, digits.x_test.shape[0] + 1):
        with pytest.raises(ValueError, match="n_test"):
            maker(digits, n_test=n_test)
    with pytest.raises(TypeError, match="n_test"):
        maker(digits, n_test=2.0)
    with pytest.raises(ValueError, match="seed"):
        maker(digits, seed=-1)
    with pytest.raises(TypeError, match="data"):
        maker(digits.x_train)
    with pytest.raises(ValueError, match="x_test"):
        maker(DataSplit(digits.x_train, digits.y_train, digits.x_test.flatten(1), digits.y_test))


def test_patch_and_overlay_specific_refusals(digits):
    for patch_size in (0, 9):
        with pytest.raises(ValueError, match="patch_size"):
            make_epistemic_patch_images(digits, patch_size=patch_size)
    with pytest.raises(TypeError, match="patch_size"):
        make_epistemic_patch_images(digits, patch_size=2.5)
    for share in (-0.5, 1.01):
        with pytest.raises(ValueError, match="share"):
            make_aleatoric_overlay_images(digits, share=share)
    ones = digits.y_test == 1
    single = DataSplit(digits.x_train, digits.y_train, digits.x_test[ones], digits.y_test[ones])
    with pytest.raises(ValueError, match="two classes"):
        make_aleatoric_overlay_images(single)


def test_table_refuses_bad_arguments():
    for kwargs, name in [
        (dict(n_train=0), "n_train"),
        (dict(n_test=1), "n_test"),
        (dict(n_features=3), "n_features"),
        (dict(seed=-1), "seed"),
        (dict(n_train=10.0), "n_train"),
    ]:
        with pytest.raises(ValueError, match=name):
            make_tabular_known_causes(**kwargs)


def test_regression_set_has_its_causes_where_it_says():
    from captum_uncertainty.data import make_regression_known_causes, regression_target

    data = make_regression_known_causes(n_train=300, n_test=50, seed=3)
    again = make_regression_known_causes(n_train=300, n_test=50, seed=3)
    assert torch.equal(data.x_train, again.x_train) and torch.equal(data.x_test["epistemic"], again.x_test["epistemic"])
    assert float(data.x_train.abs().max()) <= 1.0
    assert bool((data.x_test["epistemic"][:, 5] >= 2.5).all()) and bool(
        (data.x_test["aleatoric"][:, 0].abs() >= 0.7).all()
    )
    assert data.masks["aleatoric"][:, 0].all() and data.masks["aleatoric"].sum() == 50
    assert data.masks["epistemic"][:, 5].all() and not data.masks["reference"].any()
    # the noise grows with |x0| and feature 5 never moves the target
    x = torch.zeros(4000, 6)
    x[:2000, 0] = 0.9
    y = regression_target(x, torch.Generator().manual_seed(0))
    assert float(y[:2000].std()) > 5 * float(y[2000:].std())
    moved = x.clone()
    moved[:, 5] = 3.0
    assert torch.equal(
        regression_target(x, torch.Generator().manual_seed(1)),
        regression_target(moved, torch.Generator().manual_seed(1)),
    )
