"""The HTML report in a real browser: headless Chromium loads a page at 1,280 px and says whether
anything sticks out past the viewport and whether every image loads. Handmade pages show that the
check passes what fits and fails what does not; then the report built from synthetic data is held
to it. Nothing is installed here: without Chromium on the machine the module is skipped (.ci/run
installs Debian's chromium first, so CI always runs it)."""

from __future__ import annotations

import base64
import importlib
import io
import pathlib

import pytest
from matplotlib.figure import Figure

from captum_uncertainty.experiments._browser import check_page, find_chromium

if find_chromium() is None:
    REASON = (
        "no Chromium on this machine (looked for chromium, chromium-browser, google-chrome and "
        "$CAPTUM_UNCERTAINTY_CHROMIUM); install Debian's chromium to run the report's browser test"
    )
    print(f"tests/test_report_browser.py skipped: {REASON}")
    pytest.skip(REASON, allow_module_level=True)

WIDTH = 1280

STYLE = """
<style>
  body { font-family: sans-serif; margin: 0 auto; padding: 1rem; max-width: 960px; }
  img, table { max-width: 100%; }
  img { height: auto; }
</style>
"""


def _page(body: str) -> str:
    head = f'<head><meta charset="utf-8"><title>check</title>{STYLE}</head>'
    return f'<!DOCTYPE html>\n<html lang="en">{head}\n<body>\n{body}\n</body></html>\n'


def _png_data_uri() -> str:
    fig = Figure(figsize=(12, 3), dpi=100)  # 1,200 px wide: fits only through max-width
    ax = fig.add_subplot()
    ax.plot([0, 1, 2, 3], [0, 1, 0, 1])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


TABLE = (
    "<table><thead><tr><th>method</th><th>AUC</th><th>time (s)</th></tr></thead><tbody>"
    + "".join(f"<tr><td>method {i}</td><td>0.{i}1</td><td>{i}.5</td></tr>" for i in range(8))
    + "</tbody></table>"
)


def _write(tmp_path: pathlib.Path, name: str, body: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(_page(body), encoding="utf-8")
    return path


def test_a_page_that_fits_passes(tmp_path):
    uri = _png_data_uri()
    text = "Some words of text. " * 80
    body = f"<h1>Report</h1><p>{text}</p>{TABLE}<img src='{uri}' alt='a'><img src='{uri}' alt='b'>"
    result = check_page(_write(tmp_path, "fits.html", body), width=WIDTH)
    assert result["viewport"] == WIDTH
    assert result["too_wide"] == [], result
    assert result["broken_images"] == [], result
    assert result["images"] == 2
    assert result["scroll_width"] <= result["client_width"] <= result["inner_width"]
    assert result["fits"]


def test_a_too_wide_page_fails_and_names_the_element(tmp_path):
    body = f"<p>intro</p><div id='banner' style='width: 2000px'>a banner far too wide</div>{TABLE}"
    result = check_page(_write(tmp_path, "wide.html", body), width=WIDTH)
    assert not result["fits"]
    assert result["scroll_width"] > result["viewport"]
    assert result["too_wide"], result
    banner = [element for element in result["too_wide"] if element["id"] == "banner"]
    assert banner, result["too_wide"]
    assert banner[0]["tag"] == "div"
    assert banner[0]["width"] == 2000
    assert banner[0]["text"] == "a banner far too wide"


def test_a_wide_table_is_too_wide_unless_its_box_scrolls(tmp_path):
    # ten 300 px cells: a table never shrinks below its content, max-width or not
    cells = "".join(f"<td><div style='width: 300px'>column {i}</div></td>" for i in range(10))
    table = f"<table class='scores'><tr>{cells}</tr></table>"
    bare = check_page(_write(tmp_path, "table.html", table))
    assert any(element["tag"] == "table" for element in bare["too_wide"]), bare
    assert not bare["fits"]
    boxed = f"<div class='table-scroll' style='overflow-x: auto'>{table}</div>"
    scrolled = check_page(_write(tmp_path, "boxed.html", boxed))
    assert scrolled["too_wide"] == [], scrolled
    assert scrolled["fits"]
    assert any(element["inside"] == "div.table-scroll" for element in scrolled["scrolled_inside"]), scrolled


def test_a_broken_image_is_reported(tmp_path):
    images = f"<img src='{_png_data_uri()}' alt='good'><img src='missing-figure.png' alt='gone'>"
    body = f"<p>one good, one missing</p>{images}"
    result = check_page(_write(tmp_path, "broken.html", body), width=WIDTH)
    assert result["images"] == 2
    assert len(result["broken_images"]) == 1, result
    assert result["broken_images"][0]["src"] == "missing-figure.png"
    assert result["too_wide"] == []
    assert not result["fits"]


def test_the_report_fits_a_1280px_screen(tmp_path):
    # imported by name at run time: the report module is being written, and until it lands this
    # test says so instead of failing (and tests/test_public_api.py does not trip over the import)
    try:
        report = importlib.import_module("captum_uncertainty.experiments.report")
        write_sample_report = report.write_sample_report
    except (ImportError, AttributeError) as error:
        pytest.skip(f"captum_uncertainty.experiments.report.write_sample_report is not there yet: {error}")
    html_path = pathlib.Path(write_sample_report(tmp_path / "report"))
    assert html_path.is_file(), html_path
    result = check_page(html_path, width=WIDTH)
    assert result["too_wide"] == [], f"elements wider than {WIDTH} px: {result['too_wide']}"
    # at 1,280 px nothing of the report hides behind a sideways-scrolling box either
    assert result["scrolled_inside"] == [], f"past {WIDTH} px inside a scrolling box: {result['scrolled_inside']}"
    assert result["scroll_width"] <= result["client_width"], result
    assert result["broken_images"] == [], f"images that do not load: {result['broken_images']}"
    assert result["images"] >= 3, result
