"""plot_attribution (one map in its units) and plot_attribution_summary (per feature, over a data set),
read back from the figures they return."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import Normalize, TwoSlopeNorm  # noqa: E402

from captum_uncertainty.visualization import plot_attribution, plot_attribution_summary  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _heat_map(fig):
    return fig.axes[0].images[0]


def _labels_top_to_bottom(ax):
    """The y tick labels in the order they appear from the top of the axes down."""
    ticks = ax.get_yticks()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    pairs = sorted(zip(ticks, labels), reverse=not ax.yaxis_inverted())
    return [label for _, label in pairs]


def _sorted_by_mean_abs(*tables, names):
    scores = np.sum([np.abs(t).mean(0) for t in tables], axis=0)
    return [names[j] for j in np.argsort(-scores, kind="stable")]


# plot_attribution


def test_colour_bar_limits_are_the_signed_maps_range_in_its_units():
    rng = np.random.default_rng(0)
    chw = rng.normal(size=(3, 6, 7))
    summed = chw.sum(0)
    assert summed.min() < 0 < summed.max()
    fig = plot_attribution(torch.as_tensor(chw), units="variance")
    norm = _heat_map(fig).norm
    assert isinstance(norm, TwoSlopeNorm) and norm.vcenter == 0.0
    fig.canvas.draw()  # the limits survive drawing (the colour bar does not rescale them)
    assert (norm.vmin, norm.vmax) == pytest.approx((summed.min(), summed.max()))
    colour_bar = fig.axes[-1]
    assert colour_bar.get_ylabel() == "variance"
    assert colour_bar.get_ylim() == pytest.approx((summed.min(), summed.max()))


def test_colour_bar_limits_of_an_all_positive_map():
    plane = np.random.default_rng(1).uniform(0.2, 3.0, size=(5, 8))
    fig = plot_attribution(plane)
    norm = _heat_map(fig).norm
    assert type(norm) is Normalize
    assert (norm.vmin, norm.vmax) == pytest.approx((plane.min(), plane.max()))
    assert fig.axes[-1].get_ylabel() == "nats"
    np.testing.assert_allclose(_heat_map(fig).get_array(), plane)  # values as given, not normalised


def test_constant_map_is_drawn_on_a_small_range_around_its_value():
    fig = plot_attribution(np.full((4, 4), 2.0))
    fig.canvas.draw()
    norm = _heat_map(fig).norm
    assert norm.vmin < 2.0 < norm.vmax


def test_every_layout_draws_the_same_channel_sum():
    chw = np.random.default_rng(2).normal(size=(3, 6, 7))
    expected = chw.sum(0)
    layouts = [chw, np.moveaxis(chw, 0, -1), chw[None], torch.as_tensor(chw), torch.as_tensor(chw[None])]
    for attribution in layouts:
        drawn = _heat_map(plot_attribution(attribution)).get_array()
        assert drawn.shape == (6, 7)
        np.testing.assert_allclose(drawn, expected)
    np.testing.assert_allclose(_heat_map(plot_attribution(expected)).get_array(), expected)


def test_ambiguous_shape_needs_a_layout():
    attribution = np.arange(45.0).reshape(3, 5, 3) - 20
    with pytest.raises(ValueError, match=r"attribution.*\(3, 5, 3\).*layout"):
        plot_attribution(attribution)
    np.testing.assert_allclose(_heat_map(plot_attribution(attribution, layout="chw")).get_array(), attribution.sum(0))
    np.testing.assert_allclose(_heat_map(plot_attribution(attribution, layout="hwc")).get_array(), attribution.sum(-1))


@pytest.mark.parametrize("shape", [(7,), (2, 3, 6, 7), (5, 6, 7), (6, 7, 2), (1, 1, 1, 6, 7), (0, 7)])
def test_wrong_shapes_are_refused_naming_the_argument(shape):
    with pytest.raises(ValueError, match=rf"attribution.*{re.escape(str(shape))}"):
        plot_attribution(np.ones(shape))


def test_layout_must_fit_the_shape_and_be_known():
    with pytest.raises(ValueError, match=r"attribution.*layout='chw'.*\(6, 7, 3\)"):
        plot_attribution(np.ones((6, 7, 3)), layout="chw")
    with pytest.raises(ValueError, match="layout"):
        plot_attribution(np.ones((3, 6, 7)), layout="nchw")


def test_non_finite_and_non_numeric_maps_are_refused():
    plane = np.ones((4, 4))
    plane[1, 2] = np.nan
    with pytest.raises(ValueError, match="attribution must be finite"):
        plot_attribution(plane)
    with pytest.raises(TypeError, match="attribution"):
        plot_attribution(np.full((4, 4), "a"))


def test_image_is_drawn_in_gray_under_the_heat_map():
    rng = np.random.default_rng(3)
    attribution = rng.normal(size=(1, 1, 6, 7))
    image = rng.uniform(size=(6, 7, 3))
    fig = plot_attribution(attribution, torch.as_tensor(np.moveaxis(image, -1, 0)))
    heat, gray = fig.axes[0].images
    assert heat.get_alpha() == 0.6 and heat.get_zorder() > gray.get_zorder()
    np.testing.assert_allclose(heat.get_array(), attribution[0, 0])
    np.testing.assert_allclose(gray.get_array(), image.mean(-1))
    assert gray.get_cmap().name == "gray"
    with pytest.raises(ValueError, match=r"image.*\(6, 7\)"):
        plot_attribution(attribution, np.ones((3, 5, 7)))


def test_given_axes_title_and_colour_map():
    fig, ax = plt.subplots()
    returned = plot_attribution(np.eye(4) - 0.5, ax=ax, cmap="PuOr", title="aleatoric")
    assert returned is fig
    assert ax.images[0].get_cmap().name == "PuOr" and ax.get_title() == "aleatoric"
    assert fig.axes[-1].get_ylabel() == "nats"


# plot_attribution_summary


def test_features_are_sorted_by_mean_absolute_attribution():
    rng = np.random.default_rng(4)
    table = rng.normal(size=(40, 6)) * np.array([0.5, 3.0, 0.1, 2.0, 1.0, 0.2]) + np.array([0, 0, 1.5, 0, 0, 0])
    names = ["age", "income", "rooms", "distance", "tax", "crime"]
    expected = _sorted_by_mean_abs(table, names=names)
    fig = plot_attribution_summary(torch.as_tensor(table), names, units="variance")
    (ax,) = fig.axes
    assert _labels_top_to_bottom(ax) == expected
    assert ax.get_xlabel() == "attribution (variance)"


def test_default_names_and_many_inputs():
    table = np.random.default_rng(5).normal(size=(500, 4)) * np.array([1.0, 4.0, 2.0, 3.0])
    fig = plot_attribution_summary(table)
    assert _labels_top_to_bottom(fig.axes[0]) == ["feature 1", "feature 3", "feature 2", "feature 0"]
    assert fig.axes[0].get_xlabel() == "attribution (nats)"


def test_mapping_panels_share_the_order_of_the_summed_means():
    rng = np.random.default_rng(6)
    aleatoric = rng.normal(size=(30, 5)) * np.array([3.0, 0.1, 0.2, 0.3, 1.0])
    epistemic = rng.normal(size=(30, 5)) * np.array([0.1, 3.5, 0.2, 0.3, 1.5])
    names = list("abcde")
    expected = _sorted_by_mean_abs(aleatoric, epistemic, names=names)
    assert expected != _sorted_by_mean_abs(aleatoric, names=names)  # the sum, not one entry, decides
    fig = plot_attribution_summary({"aleatoric": aleatoric, "epistemic": torch.as_tensor(epistemic)}, names)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["aleatoric", "epistemic"]
    for ax in fig.axes:
        assert _labels_top_to_bottom(ax) == expected
        assert ax.get_xlabel() == "attribution (nats)"


def test_max_features_keeps_the_largest():
    table = np.random.default_rng(7).normal(size=(20, 9)) * np.arange(1.0, 10.0)
    names = [f"x{j}" for j in range(9)]
    fig = plot_attribution_summary(table, names, max_features=3)
    assert _labels_top_to_bottom(fig.axes[0]) == _sorted_by_mean_abs(table, names=names)[:3]
    assert "3 of 9" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="max_features"):
        plot_attribution_summary(table, max_features=0)


def test_wrong_feature_names_are_refused():
    table = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"feature_names.*\(3\).*2"):
        plot_attribution_summary(table, ["a", "b"])
    with pytest.raises(TypeError, match="feature_names"):
        plot_attribution_summary(table, "abc")


def test_wrong_attributions_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match=r"attributions.*\(N, F\).*\(5,\)"):
        plot_attribution_summary(np.ones(5))
    with pytest.raises(ValueError, match=r"attributions.*\(0, 3\)"):
        plot_attribution_summary(np.ones((0, 3)))
    with pytest.raises(ValueError, match=r"attributions.*shape.*'b': \(4, 2\)"):
        plot_attribution_summary({"a": np.ones((4, 3)), "b": np.ones((4, 2))})
    with pytest.raises(ValueError, match="empty"):
        plot_attribution_summary({})
    bad = np.ones((4, 3))
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"attributions\['b'\] must be finite"):
        plot_attribution_summary({"a": np.ones((4, 3)), "b": bad})
    with pytest.raises(ValueError, match="attributions must be finite"):
        plot_attribution_summary(torch.as_tensor(bad))
    with pytest.raises(TypeError, match="attributions"):
        plot_attribution_summary(np.array([["a", "b"]]))


def test_dataframe_columns_are_the_feature_names():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(8)
    frame = pd.DataFrame(rng.normal(size=(25, 4)) * np.array([1.0, 5.0, 0.5, 2.0]), columns=["w", "x", "y", "z"])
    expected = _sorted_by_mean_abs(frame.to_numpy(), names=list(frame.columns))
    assert _labels_top_to_bottom(plot_attribution_summary(frame).axes[0]) == expected
    fig = plot_attribution_summary({"aleatoric": frame, "epistemic": frame * 2})
    assert all(_labels_top_to_bottom(ax) == expected for ax in fig.axes)
    frame["label"] = "text"
    with pytest.raises(TypeError, match=r"attributions.*\['label'\]"):
        plot_attribution_summary(frame)


def test_given_axes():
    table = np.random.default_rng(9).normal(size=(10, 3))
    fig, axes = plt.subplots(1, 2)
    assert plot_attribution_summary({"a": table, "b": table}, ax=axes) is fig
    assert all(len(ax.get_yticklabels()) == 3 for ax in axes)
    with pytest.raises(ValueError, match="ax"):
        plot_attribution_summary({"a": table, "b": table}, ax=axes[0])
    with pytest.raises(TypeError, match="ax"):
        plot_attribution_summary(table, ax="left")
