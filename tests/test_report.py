"""The benchmark's HTML report, built from synthetic scores, curves and maps (no training), and the
figures it draws: colour bars on the maps' own scale, the curves' legend outside the axes."""

from __future__ import annotations

import html
import json
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from captum_uncertainty.experiments import benchmark
from captum_uncertainty.experiments.benchmark import BenchmarkConfig
from captum_uncertainty.experiments.report import (
    SAMPLE_METHODS,
    recommended_method,
    sample_report_inputs,
    write_results,
    write_sample_report,
)
from captum_uncertainty.visualization import plot_attribution_grid, plot_curves

IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
SRC = re.compile(r'\bsrc="([^"]*)"')


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = write_sample_report(tmp_path_factory.mktemp("report"))
    return path, path.read_text(encoding="utf-8"), sample_report_inputs()


def test_sample_report_holds_every_method_and_only_data_uri_images(sample):
    path, page, inputs = sample
    assert path.name == "report.html" and path.is_file()
    assert len(SAMPLE_METHODS) == 14 and "UA-Backprop+FullGrad (reference min-max)" in SAMPLE_METHODS
    assert set(inputs.scores) == set(SAMPLE_METHODS)
    for name in SAMPLE_METHODS:
        # a row in every score table (one per question) and an example figure: no method dropped
        cells = page.count(f'<td class="method">{html.escape(name)}</td>')
        assert cells == 4, (name, cells)
        assert f"<h3>{html.escape(name)}</h3>" in page
    images = IMG.findall(page)
    assert len(images) == 2 + len(SAMPLE_METHODS)  # first screen, curves, one figure per method
    for tag in images:
        source = SRC.search(tag)
        assert source is not None and source.group(1).startswith("data:image/png;base64,"), tag[:80]
    for key, title in benchmark.COLUMNS:  # every score column is in some table
        assert f"<th>{html.escape(title)}</th>" in page, key


def test_first_screen_recommends_the_best_map_independent_murr_and_shows_the_uncertainties(sample):
    _, page, inputs = sample
    candidates = {name: row["murr_full_2%"] for name, row in inputs.scores.items() if name != "Random"}
    best = max(candidates, key=candidates.__getitem__)
    assert recommended_method(inputs.scores) == best
    first = page[: page.index('id="scores"')]  # before the tables
    assert (
        f"<strong>{html.escape(best)}</strong>, the method with the best map-independent MURR 2% in this run" in first
    )
    assert len(IMG.findall(first)) == 1
    decomposition = inputs.decomposition
    for k in range(6):
        for values in (decomposition.total, decomposition.aleatoric, decomposition.epistemic):
            assert f"<td>{float(values[k]):.3f}</td>" in first
    assert "nats" in first and "aleatoric" in first and "epistemic" in first


def test_report_explains_each_score_and_fits_the_page(sample):
    _, page, _ = sample
    for sentence in (
        "MURR is the largest share of the uncertainty this removes",
        "AUC-URR is the area under the remaining-uncertainty curve: lower is better",
        "they are the ones to compare maps with",
        "Perez et al.'s URC",
        "IoU is the overlap of that window with the pasted patch",
        "Seconds per image",
    ):
        assert html.escape(sentence) in page, sentence
    assert page.count("Higher is better.") >= 2 and "Lower is better." in page
    assert "max-width:1200px" in page and "img{max-width:100%;height:auto" in page
    assert "white-space:normal" in page and "overflow-wrap:anywhere" in page and "table-layout:fixed" in page
    assert "overflow-x" not in page  # the tables fit; nothing scrolls sideways


def test_recommendation_skips_random_and_missing_scores():
    scores = {
        "Random": {"murr_full_2%": 0.9},
        "A": {"murr_full_2%": 0.3},
        "B": {"murr_full_2%": float("nan")},
        "C": {"murr_full_2%": 0.5},
        "D": {},
    }
    assert recommended_method(scores) == "C"
    assert recommended_method({"Random": {"murr_full_2%": 0.9}}) is None


def test_results_files_keep_their_format(tmp_path):
    inputs = sample_report_inputs()
    names = ["UA-Backprop+FullGrad (reference min-max)", "Grad", "Random"]
    scores = {name: inputs.scores[name] for name in names}
    epistemic, aleatoric = inputs.examples
    examples = ({n: epistemic[n] for n in names}, {n: aleatoric[n] for n in names})
    config = BenchmarkConfig.quick()
    x = torch.cat([inputs.images, inputs.images])[: config.images]
    write_results(tmp_path, scores, inputs.curves, examples, x, config, 0.97, 1, inputs.decomposition)
    results = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert results.startswith(f"# Uncertainty attribution benchmark\n\n{config.images} most epistemically uncertain")
    assert "(test accuracy 0.970)" in results
    assert results.endswith("\n\n" + benchmark.markdown_table(scores) + "\n")
    record = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    assert set(record) == {"config", "test_accuracy", "no_blur_images", "scores"}
    assert record["scores"] == scores and record["no_blur_images"] == 1 and record["config"] == vars(config)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    best = max(names[:2], key=lambda name: scores[name]["murr_full_2%"])
    assert f"<strong>{html.escape(best)}</strong>" in page
    assert len(IMG.findall(page)) == 2 + len(names)


def _grid_maps():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand((6, 1, 28, 28), generator=generator)
    maps = {
        "small": 0.01 * torch.randn((6, 1, 28, 28), generator=generator),
        "large": torch.randn((6, 1, 28, 28), generator=generator),
        "positive": torch.rand((6, 1, 28, 28), generator=generator),
    }
    maps["large"][3, 0, 5, 5] = -10.0  # the largest magnitude is a negative value of image 4
    return images, maps


@pytest.mark.parametrize("rows", ["methods", "images"])
def test_colour_bars_span_each_methods_largest_magnitude(rows):
    images, maps = _grid_maps()
    fig = plot_attribution_grid(images, maps, max_images=5, colorbar=True, rows=rows, outline=True)
    try:
        with_bars = [im for ax in fig.axes for im in ax.images if im.colorbar is not None]
        assert len(with_bars) == len(maps)  # one colour bar per method, in the methods' order
        for values, drawn in zip(maps.values(), with_bars):
            limit = float(values[:5].abs().max())
            assert drawn.get_clim() == pytest.approx((-limit, limit))
            assert drawn.colorbar.mappable.get_clim() == pytest.approx((-limit, limit))
            assert drawn.colorbar.ax.get_ylabel() + drawn.colorbar.ax.get_xlabel() == "nats"
            assert float(np.nanmax(np.abs(drawn.get_array()))) == pytest.approx(limit)  # the maps' own values
        assert float(with_bars[1].get_clim()[1]) == pytest.approx(10.0)
        assert float(with_bars[0].get_clim()[1]) < 0.1  # 0.01 nats is not drawn like 1 nat
    finally:
        plt.close(fig)


def test_default_grid_still_draws_captum_heat_maps():
    images, maps = _grid_maps()
    fig = plot_attribution_grid(images, maps, 4)  # the original call
    try:
        assert len(fig.axes) == 4 * (1 + len(maps))
        assert not [im for ax in fig.axes for im in ax.images if im.colorbar is not None]
    finally:
        plt.close(fig)


def test_curve_legend_lies_outside_the_axes():
    generator = torch.Generator().manual_seed(0)
    curves = {name: torch.rand(39, generator=generator).cummax(0).values for name in SAMPLE_METHODS}
    fig = plot_curves(curves, x_max=0.05)
    try:
        fig.canvas.draw()
        (ax,) = fig.axes
        legend = fig.legends[0] if fig.legends else ax.get_legend()
        box, axes_box = legend.get_window_extent(), ax.get_window_extent()
        assert box.x0 >= axes_box.x1, (box, axes_box)  # right of the axes: covers no curve
        assert box.x1 <= fig.bbox.x1 + 1 and box.y0 >= -1 and box.y1 <= fig.bbox.y1 + 1  # and on the figure
        assert [text.get_text() for text in legend.get_texts()] == list(curves)
        assert math.isclose(ax.lines[0].get_xdata()[-1], 0.05)
    finally:
        plt.close(fig)
