"""Sensitivity of UA-Backprop to its two temperatures tau1 and tau2 (Wang et al. App. D.5 style).

Run: ``.venv/bin/python benchmarks/bench_temperature.py [--recipe adam] [--images 100]
[--tau1 0.02,0.04,0.08,0.16,0.32] [--tau2 0.075,0.15,0.3,0.6,1.2] [--path fullgrad] [--sigma-step 0.2]
[--seed 0] [--out results.md]``

Setting: as :func:`captum_uncertainty.experiments.benchmark.run_benchmark`: the bundled MNIST
digits (``load_mnist(seed=seed)``), the benchmark's 5-CNN deep ensemble trained (or loaded from
the cache) with ``--recipe``, epistemic uncertainty, and the ``--images`` test digits of highest
epistemic uncertainty. For every (tau1, tau2) pair of the grid, epistemic UA-Backprop maps
(``path=--path``) are scored with the blurring test
(:func:`captum_uncertainty.metrics.blurring_test`) at 2% and 5% of the pixels, under its default
sigma search (``sigma_selection="final"``: the sigma that minimises the uncertainty once the
map's T pixels are blurred) and under ``"full"`` (the sigma that minimises the uncertainty of the
fully blurred image, the same for every map).

Prints a markdown table (one row per pair, the paper's pair tau1 = 0.08, tau2 = 0.3 marked), the
best pair of every column, the paper pair's rank on MURR 2% and 5%, and the wall time; ``--out``
also writes them to a file. Not a test.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from captum_uncertainty.attr import UABackprop
from captum_uncertainty.data import accuracy, load_mnist
from captum_uncertainty.experiments.benchmark import METRIC_BATCH, benchmark_ensemble
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.metrics import blurring_test, full_blur_sigma

PAPER_PAIR = (0.08, 0.3)
FRACTIONS = (0.02, 0.05)
READINGS = ("final", "full")  # blurring_test's default sigma search, then the map-independent one
MEMBERS = 5

Pair = tuple[float, float]
Key = tuple[str, float, str]  # (score: "murr" or "auc_urr", fraction, sigma reading)
Results = dict[Pair, dict[Key, float]]  # every pair's scores


class Column(NamedTuple):
    title: str
    key: Key
    higher_is_better: bool


COLUMNS = [
    Column("MURR 2%", ("murr", 0.02, "final"), True),
    Column("AUC-URR 2%", ("auc_urr", 0.02, "final"), False),
    Column("MURR 5%", ("murr", 0.05, "final"), True),
    Column("AUC-URR 5%", ("auc_urr", 0.05, "final"), False),
    Column("MURR 2% (full)", ("murr", 0.02, "full"), True),
    Column("MURR 5% (full)", ("murr", 0.05, "full"), True),
    Column("AUC-URR 5% (full)", ("auc_urr", 0.05, "full"), False),
]
RANKED_COLUMNS = ("MURR 2%", "MURR 5%")


def float_list(text: str) -> list[float]:
    """``"0.1,0.2"`` -> ``[0.1, 0.2]`` (argparse type)."""
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from error


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="adam", choices=["adam", "wang"], help="ensemble training recipe")
    parser.add_argument("--images", type=int, default=100, help="most epistemically uncertain test digits")
    parser.add_argument("--tau1", type=float_list, default="0.02,0.04,0.08,0.16,0.32", help="comma-separated")
    parser.add_argument("--tau2", type=float_list, default="0.075,0.15,0.3,0.6,1.2", help="comma-separated")
    parser.add_argument("--path", default="fullgrad", help="UABackprop's z -> x path")
    parser.add_argument("--sigma-step", type=float, default=0.2, help="step of the blurring test's sigma grid")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split and the ensemble")
    parser.add_argument("--out", type=Path, help="also write the markdown to this file")
    return parser.parse_args()


def most_uncertain(uf: UncertaintyForward, images: Tensor, count: int) -> Tensor:
    """The ``count`` images of highest uncertainty, most uncertain first (as ``run_benchmark``)."""
    with torch.no_grad():
        uncertainty = uf(images)
    return images[uncertainty.argsort(descending=True)[:count]]


def pair_scores(
    uf: UncertaintyForward, x: Tensor, pair: Pair, path: str, sigma_step: float, full_sigma: Tensor
) -> dict[Key, float]:
    """Blurring-test MURR and AUC-URR of one pair's maps, at every fraction under every reading
    (the "full" reading's blur, which no map changes, searched once: ``full_sigma``)."""
    tau1, tau2 = pair
    maps = UABackprop(uf).attribute(x, path=path, tau1=tau1, tau2=tau2).detach()
    scores: dict[Key, float] = {}
    for fraction in FRACTIONS:
        for reading in READINGS:
            given = {"sigma": full_sigma} if reading == "full" else {}
            result = blurring_test(
                uf, x, maps, fraction=fraction, sigma_step=sigma_step, max_examples_per_batch=METRIC_BATCH, **given
            )
            scores["murr", fraction, reading] = result.murr
            scores["auc_urr", fraction, reading] = result.auc_urr
    return scores


def is_paper_pair(pair: Pair) -> bool:
    return all(math.isclose(value, paper) for value, paper in zip(pair, PAPER_PAIR))


def pair_cells(pair: Pair) -> list[str]:
    tau1, tau2 = pair
    return [f"{tau1:g}", f"{tau2:g}" + (" (paper)" if is_paper_pair(pair) else "")]


def markdown_table(results: Results) -> list[str]:
    lines = ["| tau1 | tau2 | " + " | ".join(column.title for column in COLUMNS) + " |"]
    lines.append("|---" * (len(COLUMNS) + 2) + "|")
    for pair, scores in results.items():
        cells = pair_cells(pair) + [f"{scores[column.key]:.3f}" for column in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ordered_pairs(results: Results, column: Column) -> list[Pair]:
    """The pairs from best to worst on ``column``."""
    return sorted(results, key=lambda pair: results[pair][column.key], reverse=column.higher_is_better)


def rank(results: Results, column: Column, pair: Pair) -> int:
    """1 + the number of pairs strictly better than ``pair`` on ``column`` (ties share a rank)."""
    value = results[pair][column.key]
    sign = 1 if column.higher_is_better else -1
    return 1 + sum(sign * (scores[column.key] - value) > 0 for scores in results.values())


def best_pair_lines(results: Results) -> list[str]:
    lines = []
    for column in COLUMNS:
        best = ordered_pairs(results, column)[0]
        lines.append(
            f"- best on {column.title}: tau1 = {best[0]:g}, tau2 = {best[1]:g} ({results[best][column.key]:.3f})"
        )
    return lines


def paper_rank_lines(results: Results) -> list[str]:
    paper = next((pair for pair in results if is_paper_pair(pair)), None)
    if paper is None:
        return [f"- the paper's pair (tau1 = {PAPER_PAIR[0]:g}, tau2 = {PAPER_PAIR[1]:g}) is not in the grid"]
    columns = [column for column in COLUMNS if column.title in RANKED_COLUMNS]
    return [
        f"- paper's pair ranks {rank(results, column, paper)} of {len(results)} on {column.title}" for column in columns
    ]


def header_line(args: argparse.Namespace, test_accuracy: float) -> str:
    return (
        f"recipe {args.recipe}, ensemble test accuracy {test_accuracy:.3f}, {args.images} most epistemically "
        f"uncertain test digits, path {args.path}, sigma step {args.sigma_step:g}, seed {args.seed}, "
        f"torch threads {torch.get_num_threads()}"
    )


def main() -> None:
    args = parse_arguments()
    started = time.perf_counter()
    data = load_mnist(seed=args.seed)
    ensemble = benchmark_ensemble(data, MEMBERS, args.seed, args.recipe)
    uf = UncertaintyForward(ensemble, measure="epistemic")
    x = most_uncertain(uf, data.x_test, args.images)
    with torch.no_grad():
        test_accuracy = accuracy(ensemble, data.x_test, data.y_test)
    grid: Sequence[Pair] = [(tau1, tau2) for tau1 in args.tau1 for tau2 in args.tau2]
    full_sigma = full_blur_sigma(uf, x, args.sigma_step, max_examples_per_batch=METRIC_BATCH)
    results = {pair: pair_scores(uf, x, pair, args.path, args.sigma_step, full_sigma) for pair in grid}
    lines = [header_line(args, test_accuracy), ""]
    lines += markdown_table(results) + [""] + best_pair_lines(results) + paper_rank_lines(results)
    lines += ["", f"wall time {time.perf_counter() - started:.0f} s"]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
