"""Faithfulness against cost: blurring-test MURR per member backward pass, for every gradient method.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_faithfulness_cost.py [--images 20]
[--figure docs/_static/faithfulness_cost.png] [--skip-seconds 240]``

Ensembles (5 members each, epistemic uncertainty, trained once and cached):

* MNIST ``adam`` and MNIST ``wang``: ``benchmark_ensemble(load_mnist(seed=0), 5, 0, recipe)``, the
  benchmark's 5-CNN ensembles (C = 10, 1 x 28 x 28 digits);
* two-digit numbers: ``train_multidigit_ensemble(2)`` on ``load_multidigit_mnist(2)`` (defaults;
  C = 100, 1 x 28 x 56 images).

For each, the ``--images`` test images of highest epistemic uncertainty are explained with every
configuration below, and each map is scored with the blurring test
(:func:`captum_uncertainty.metrics.blurring_test`) at 2% and 5% of the pixels in the
map-independent reading: one ``full_blur_sigma`` search per ensemble (sigma step 1.0, largest
sigma 20), passed as ``sigma=`` to every call, so every map of an image is judged with the same
blur. Images with sigma = 0 (no blur lowers their uncertainty; reduction 0 for every map) are
counted per ensemble.

Methods and their cost, in member backward passes per image (``S`` members, ``C`` classes,
``n`` = n_steps; a backward pass through a batch of points counts once per point and member):

* Grad (Captum ``Saliency``, ``abs=True``): ``S`` (one backward of ``U`` through every member);
* SmoothGrad (``NoiseTunnel(Saliency)``, ``nt_type="smoothgrad"``, ``nt_samples = n``, stdev 0.1,
  ``abs=True``, as in ``benchmark.py``): ``n x S``;
* UncertaintyIntegratedGradients (baseline zeros, Gauss-Legendre): ``n x S``;
* BlurIntegratedGradients (default largest sigma ``50 * max(H, W) / 224``): ``n x S``;
* GuidedIntegratedGradients (baseline zeros, fraction 0.1, max_dist 0.02): ``n x S``;
* UABackprop ``path`` ``"fullgrad"``, ``"inputgrad"``, ``"grad"``: ``C x S`` (one backward per
  class through each member);
* UABackprop ``path`` ``"integrated_gradients"`` (baseline zeros) and
  ``"blur_integrated_gradients"``: ``n x C x S``.

Forward passes are not counted. n in {4, 8, 16, 32, 64, 128} for the stepped methods, the
fixed-cost ones once. Seconds per image are the wall time of one ``attribute`` call on all images
divided by their number (one thread; memory is capped by chunking the path points, which changes
no backward-pass count). A configuration whose estimate (the method's time at its largest measured
smaller n, scaled linearly in n) exceeds ``--skip-seconds`` for all images is not run: its row
says "skipped" with the estimate. Random draws (SmoothGrad noise) are seeded per configuration.

Prints the command and date, then per ensemble: a markdown table (method, n_steps, backward
passes per image, seconds per image, MURR 2%, MURR 5%), per method the cheapest setting within
0.02 of its best MURR 5%, and the Pareto front of MURR 5% against backward passes; writes the
figure (one panel per ensemble, MURR 5% against backward passes, log x, one line per method,
the Pareto front dashed). Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty.data import accuracy, load_mnist, load_multidigit_mnist, train_multidigit_ensemble
from captum_uncertainty.experiments.benchmark import METRIC_BATCH, benchmark_ensemble
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.metrics import UninformativeBlurWarning, blurring_test, full_blur_sigma

__all__ = ["METHODS", "main"]

STEPS = (4, 8, 16, 32, 64, 128)
FRACTIONS = (0.02, 0.05)
SIGMA_STEP = 1.0
MEMBERS = 5
SEED = 0
SMOOTHGRAD_STDEV = 0.1  # benchmark.py's
TOLERANCE = 0.02  # "within 0.02 of the method's best MURR 5%"
PATH_STEPS_PER_PASS = 32  # path points per forward of the plain path methods: 32 steps of every image
UA_POINTS_PER_CLASS = 320  # UA-Backprop's path chunks: 320 // C steps of every image (memory ~ C x steps)

Explain = Callable[[UncertaintyForward, Tensor, int, int], Tensor]  # (uf, x, n_steps, classes) -> maps


@dataclass(frozen=True)
class Method:
    """One attribution method: how to run it at ``n`` steps and what that costs."""

    name: str
    formula: str
    stepped: bool
    per_class: bool
    explain: Explain

    def passes(self, n_steps: int, classes: int, members: int) -> int:
        """Member backward passes per image, from the method's definition (:attr:`formula`)."""
        return (n_steps if self.stepped else 1) * (classes if self.per_class else 1) * members


def _grad(uf: UncertaintyForward, x: Tensor, n_steps: int, classes: int) -> Tensor:
    from captum.attr import Saliency

    return Saliency(uf).attribute(x, abs=True)


def _smoothgrad(uf: UncertaintyForward, x: Tensor, n_steps: int, classes: int) -> Tensor:
    from captum.attr import NoiseTunnel, Saliency

    return NoiseTunnel(Saliency(uf)).attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=n_steps,
        nt_samples_batch_size=PATH_STEPS_PER_PASS,
        stdevs=SMOOTHGRAD_STDEV,
        abs=True,
    )


def _integrated_gradients(uf: UncertaintyForward, x: Tensor, n_steps: int, classes: int) -> Tensor:
    from captum_uncertainty.attr import UncertaintyIntegratedGradients

    return UncertaintyIntegratedGradients(uf).attribute(
        x, baselines=None, n_steps=n_steps, internal_batch_size=PATH_STEPS_PER_PASS * len(x)
    )


def _blur_ig(uf: UncertaintyForward, x: Tensor, n_steps: int, classes: int) -> Tensor:
    from captum_uncertainty.attr import BlurIntegratedGradients

    return BlurIntegratedGradients(uf).attribute(x, n_steps=n_steps, internal_batch_size=PATH_STEPS_PER_PASS * len(x))


def _guided_ig(uf: UncertaintyForward, x: Tensor, n_steps: int, classes: int) -> Tensor:
    from captum_uncertainty.attr import GuidedIntegratedGradients

    return GuidedIntegratedGradients(uf).attribute(x, n_steps=n_steps)


def _ua_backprop(path: str) -> Explain:
    def explain(uf: UncertaintyForward, x: Tensor, n_steps: int, classes: int) -> Tensor:
        from captum_uncertainty.attr import UABackprop

        chunk = len(x) * max(1, UA_POINTS_PER_CLASS // classes)
        return UABackprop(uf).attribute(x, path=path, n_steps=n_steps, internal_batch_size=chunk)

    return explain


METHODS: Tuple[Method, ...] = (
    Method("IG (zeros)", "n_steps x S", True, False, _integrated_gradients),
    Method("Blur IG", "n_steps x S", True, False, _blur_ig),
    Method("Guided IG", "n_steps x S", True, False, _guided_ig),
    Method("SmoothGrad", "n x S", True, False, _smoothgrad),
    Method("UA-Backprop+IG", "n_steps x C x S", True, True, _ua_backprop("integrated_gradients")),
    Method("UA-Backprop+BlurIG", "n_steps x C x S", True, True, _ua_backprop("blur_integrated_gradients")),
    Method("Grad", "S", False, False, _grad),
    Method("UA-Backprop+FullGrad", "C x S", False, True, _ua_backprop("fullgrad")),
    Method("UA-Backprop+InputGrad", "C x S", False, True, _ua_backprop("inputgrad")),
    Method("UA-Backprop+Grad", "C x S", False, True, _ua_backprop("grad")),
)


@dataclass
class Row:
    """One configuration's result; ``murr`` is empty for a skipped one."""

    method: str
    n_steps: Optional[int]
    passes: int
    seconds: float  # per image: measured, or the estimate of a skipped configuration
    skipped: bool
    murr: Dict[float, float]


@dataclass
class Setting:
    name: str
    classes: int
    members: int
    test_accuracy: float
    images: int
    no_blur: int
    rows: List[Row]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="most epistemically uncertain test images")
    parser.add_argument("--figure", type=Path, default=Path("docs/_static/faithfulness_cost.png"))
    parser.add_argument("--skip-seconds", type=float, default=240.0, help="skip a configuration estimated above")
    return parser.parse_args()


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ensembles() -> List[Tuple[str, Callable[[], Tuple[List[nn.Module], Tensor, Tensor]]]]:
    def mnist(recipe: str) -> Callable[[], Tuple[List[nn.Module], Tensor, Tensor]]:
        def load() -> Tuple[List[nn.Module], Tensor, Tensor]:
            data = load_mnist(seed=SEED)
            return benchmark_ensemble(data, MEMBERS, SEED, recipe), data.x_test, data.y_test

        return load

    def two_digit() -> Tuple[List[nn.Module], Tensor, Tensor]:
        data = load_multidigit_mnist(2)
        return train_multidigit_ensemble(2, data=data, progress=False), data.x_test, data.y_test

    return [("MNIST adam", mnist("adam")), ("MNIST wang", mnist("wang")), ("two-digit C = 100", two_digit)]


def _most_uncertain(uf: UncertaintyForward, images: Tensor, count: int) -> Tensor:
    """The ``count`` images of highest uncertainty, most uncertain first (as ``run_benchmark``)."""
    with torch.no_grad():
        uncertainty = uf(images)
    return images[uncertainty.argsort(descending=True)[:count]]


def _timed_maps(method: Method, uf: UncertaintyForward, x: Tensor, n_steps: int, classes: int) -> Tuple[Tensor, float]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        start = time.perf_counter()
        maps = method.explain(uf, x, n_steps, classes)
        seconds = (time.perf_counter() - start) / len(x)
    maps = maps.detach()
    return (maps.sum(1, keepdim=True) if maps.dim() == 4 else maps), seconds


def _scores(uf: UncertaintyForward, x: Tensor, maps: Tensor, sigma: Tensor) -> Dict[float, float]:
    with warnings.catch_warnings():  # the sigma = 0 images are counted per ensemble instead
        warnings.simplefilter("ignore", UninformativeBlurWarning)
        return {
            fraction: blurring_test(
                uf, x, maps, fraction=fraction, sigma=sigma, max_examples_per_batch=METRIC_BATCH
            ).murr
            for fraction in FRACTIONS
        }


def run_setting(
    name: str, load: Callable[[], Tuple[List[nn.Module], Tensor, Tensor]], images: int, skip_seconds: float
) -> Setting:
    members, x_test, y_test = load()
    test_accuracy = accuracy(members, x_test, y_test)
    uf = UncertaintyForward(members, measure="epistemic")
    x = _most_uncertain(uf, x_test, images)
    with torch.no_grad():
        classes = int(uf.sample_outputs(x[:1]).shape[-1])
    sigma = full_blur_sigma(uf, x, SIGMA_STEP, max_examples_per_batch=METRIC_BATCH)
    no_blur = int((sigma == 0).sum())
    _grad(uf, x[:1], 1, classes)  # warm-up, outside every clock
    rows: List[Row] = []
    for method in METHODS:
        measured: Optional[Tuple[int, float]] = None  # (n_steps, seconds per image) of the last run
        for n_steps in STEPS if method.stepped else (1,):
            passes = method.passes(n_steps, classes, len(members))
            shown_steps = n_steps if method.stepped else None
            if measured is not None and measured[1] * n_steps / measured[0] * len(x) > skip_seconds:
                estimate = measured[1] * n_steps / measured[0]
                rows.append(Row(method.name, shown_steps, passes, estimate, True, {}))
                _log(f"  [{name} | {method.name} {n_steps}: skipped, estimate {estimate * len(x):.0f} s]")
                continue
            maps, seconds = _timed_maps(method, uf, x, n_steps, classes)
            measured = (n_steps, seconds)
            rows.append(Row(method.name, shown_steps, passes, seconds, False, _scores(uf, x, maps, sigma)))
            _log(f"  [{name} | {method.name} {n_steps}: {seconds * len(x):.1f} s, MURR 5% {rows[-1].murr[0.05]:.3f}]")
    return Setting(name, classes, len(members), test_accuracy, len(x), no_blur, rows)


def _steps_cell(row: Row) -> str:
    return "-" if row.n_steps is None else str(row.n_steps)


def markdown_table(setting: Setting) -> List[str]:
    lines = [
        "| method | n_steps | backward passes / image | s / image | MURR 2% (full) | MURR 5% (full) |",
        "|---|---|---|---|---|---|",
    ]
    for row in setting.rows:
        if row.skipped:
            cells = [f"skipped (estimate {row.seconds:.2f})", "-", "-"]
        else:
            cells = [f"{row.seconds:.4f}", f"{row.murr[0.02]:.3f}", f"{row.murr[0.05]:.3f}"]
        lines.append("| " + " | ".join([row.method, _steps_cell(row), f"{row.passes:,}"] + cells) + " |")
    return lines


def _measured(rows: Sequence[Row]) -> List[Row]:
    return [row for row in rows if not row.skipped]


def cheapest_lines(setting: Setting) -> List[str]:
    lines = []
    for method in METHODS:
        rows = _measured([row for row in setting.rows if row.method == method.name])
        if not rows:
            lines.append(f"- {method.name}: every setting skipped")
            continue
        best = max(rows, key=lambda row: row.murr[0.05])
        cheapest = min(
            (row for row in rows if row.murr[0.05] >= best.murr[0.05] - TOLERANCE), key=lambda row: row.passes
        )
        best_at = f" (best {best.murr[0.05]:.3f} at n_steps {_steps_cell(best)})" if method.stepped else ""
        setting_cell = f"n_steps {cheapest.n_steps}" if method.stepped else "fixed cost"
        lines.append(
            f"- {method.name}: {setting_cell}, {cheapest.passes:,} passes, "
            f"{cheapest.seconds:.4f} s / image, MURR 5% {cheapest.murr[0.05]:.3f}{best_at}"
        )
    return lines


def pareto_front(rows: Sequence[Row]) -> List[Row]:
    """The measured configurations no other beats on both axes (fewer or equal passes and at least
    the MURR 5%, one of them strictly), by increasing passes."""
    measured = _measured(rows)
    front = [
        row
        for row in measured
        if not any(
            other.passes <= row.passes
            and other.murr[0.05] >= row.murr[0.05]
            and (other.passes < row.passes or other.murr[0.05] > row.murr[0.05])
            for other in measured
        )
    ]
    return sorted(front, key=lambda row: (row.passes, row.murr[0.05]))


def pareto_lines(setting: Setting) -> List[str]:
    lines = ["| backward passes / image | method | n_steps | MURR 5% (full) | s / image |", "|---|---|---|---|---|"]
    for row in pareto_front(setting.rows):
        lines.append(
            f"| {row.passes:,} | {row.method} | {_steps_cell(row)} | {row.murr[0.05]:.3f} | {row.seconds:.4f} |"
        )
    return lines


def plot(settings: Sequence[Setting], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixed_markers = iter(("s", "^", "D", "v"))
    styles = {
        method.name: ("o-" if method.stepped else next(fixed_markers), f"C{index}")
        for index, method in enumerate(METHODS)
    }
    fig, axes = plt.subplots(1, len(settings), figsize=(10, 3.5), sharey=True)
    for ax, setting in zip(axes, settings):
        for method in METHODS:
            rows = _measured([row for row in setting.rows if row.method == method.name])
            style, color = styles[method.name]
            ax.plot(
                [row.passes for row in rows],
                [row.murr[0.05] for row in rows],
                style,
                color=color,
                markersize=4,
                linewidth=1.2,
                label=method.name,
            )
        front = pareto_front(setting.rows)
        ax.plot(
            [row.passes for row in front],
            [row.murr[0.05] for row in front],
            "--",
            color="black",
            drawstyle="steps-post",
            linewidth=0.9,
            label="Pareto front",
        )
        ax.set_xscale("log")
        ax.set_title(f"{setting.name} ({setting.images} images)", fontsize=9)
        ax.set_xlabel("member backward passes / image", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, linewidth=0.5)
    axes[0].set_ylabel("MURR 5% (map-independent)", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_arguments()
    started = time.perf_counter()
    threads = os.environ.get("OMP_NUM_THREADS", "(unset)")
    print(f"Command: OMP_NUM_THREADS={threads} .venv/bin/python {' '.join(sys.argv)}")
    print(f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {MEMBERS} members, epistemic uncertainty, "
        f"{args.images} most uncertain test images, blurring test in the map-independent reading (sigma step "
        f"{SIGMA_STEP:g}, one full_blur_sigma per ensemble), skip above {args.skip_seconds:g} s per configuration\n"
    )
    print("Backward passes per image (S members, C classes): " + "; ".join(f"{m.name}: {m.formula}" for m in METHODS))
    settings = []
    for name, load in _ensembles():
        setting_started = time.perf_counter()
        _log(f"{name}:")
        setting = run_setting(name, load, args.images, args.skip_seconds)
        settings.append(setting)
        print(
            f"\n## {setting.name}: C = {setting.classes}, S = {setting.members}, "
            f"test accuracy {setting.test_accuracy:.3f}; "
            f"images with sigma = 0: {setting.no_blur} of {setting.images}; "
            f"{time.perf_counter() - setting_started:.0f} s\n"
        )
        print("\n".join(markdown_table(setting)))
        print(f"\nCheapest setting within {TOLERANCE} of the method's best MURR 5%:\n")
        print("\n".join(cheapest_lines(setting)))
        print("\nPareto front (MURR 5% against backward passes):\n")
        print("\n".join(pareto_lines(setting)), flush=True)
    plot(settings, args.figure)
    print(f"\nFigure: {args.figure}")
    print(f"Wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
