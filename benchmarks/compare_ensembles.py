"""Two benchmark runs side by side: how the ranking of the methods moves with the ensemble.

Run: ``.venv/bin/python benchmarks/compare_ensembles.py out/full_adam out/full_wang``
(the folders of two ``python -m captum_uncertainty benchmark --recipe ... --out DIR`` runs; each
holds the ``scores.json`` the benchmark writes).

Prints, per metric column, each method's score in both runs and its rank in each (1 = best;
higher is better for MURR, URC, IoU and ADA, lower for AUC-URR), then the Spearman rank
correlation of the two runs per column; ``--rst`` prints the chosen columns of both runs as one
Sphinx list-table instead (the tables of docs/guide.rst); ``--scores`` prints every score of each
run as a Markdown table, the map-independent blurring-test reading first (the tables of
benchmarks/RESULTS.md). Not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from captum_uncertainty.experiments.benchmark import markdown_table

#: (key in scores.json, title, higher is better)
COLUMNS = [
    ("murr_2%", "MURR 2%", True),
    ("murr_5%", "MURR 5%", True),
    ("auc_urr_2%", "AUC-URR 2%", False),
    ("auc_urr_5%", "AUC-URR 5%", False),
    ("murr_full_2%", "MURR 2% (full)", True),
    ("murr_full_5%", "MURR 5% (full)", True),
    ("auc_urr_full_2%", "AUC-URR 2% (full)", False),
    ("auc_urr_full_5%", "AUC-URR 5% (full)", False),
    ("urc_1%", "URC 1%", True),
    ("urc_5%", "URC 5%", True),
    ("iou", "IoU", True),
    ("ada", "ADA", True),
    ("runtime_s", "s / image", False),
]


def load(folder: Path) -> dict:
    return json.loads((folder / "scores.json").read_text(encoding="utf-8"))


def ranks(scores: dict[str, dict[str, float]], key: str, higher: bool) -> dict[str, float]:
    """Rank of each method on one column (1 = best; ties share their mean rank)."""
    values = {name: row[key] for name, row in scores.items()}
    ordered = sorted(values, key=lambda name: -values[name] if higher else values[name])
    result: dict[str, float] = {}
    for name in ordered:
        tied = [other for other in ordered if values[other] == values[name]]
        positions = [ordered.index(other) + 1 for other in tied]
        result[name] = sum(positions) / len(positions)
    return result


def spearman(a: dict[str, float], b: dict[str, float]) -> float:
    names = list(a)
    n = len(names)
    mean = (n + 1) / 2
    covariance = sum((a[m] - mean) * (b[m] - mean) for m in names)
    spread = (sum((a[m] - mean) ** 2 for m in names) * sum((b[m] - mean) ** 2 for m in names)) ** 0.5
    return covariance / spread if spread else float("nan")


def side_by_side(first: dict, second: dict, key: str, title: str, higher: bool) -> list[str]:
    common = [name for name in first["scores"] if name in second["scores"]]
    a = {name: first["scores"][name] for name in common}
    b = {name: second["scores"][name] for name in common}
    rank_a, rank_b = ranks(a, key, higher), ranks(b, key, higher)
    label_a, label_b = first["config"]["recipe"], second["config"]["recipe"]
    lines = [f"| method | {title} ({label_a}) | rank | {title} ({label_b}) | rank |", "|---|---|---|---|---|"]
    for name in sorted(common, key=lambda n: rank_a[n]):
        lines.append(f"| {name} | {a[name][key]:.3f} | {rank_a[name]:g} | {b[name][key]:.3f} | {rank_b[name]:g} |")
    lines.append(f"\nSpearman rank correlation of the two runs: {spearman(rank_a, rank_b):.2f}\n")
    return lines


def wide_rst(first: dict, second: dict, keys: list[str]) -> list[str]:
    """One Sphinx list-table: per method, each chosen column in both runs."""
    titles = {key: title for key, title, _ in COLUMNS}
    labels = first["config"]["recipe"], second["config"]["recipe"]
    lines = [".. list-table::", "   :header-rows: 1", "", "   * - method"]
    lines += [f"     - {titles[key]} ({label})" for key in keys for label in labels]
    for name in (n for n in first["scores"] if n in second["scores"]):
        lines.append(f"   * - {name}")
        lines += [f"     - {run['scores'][name][key]:.3f}" for key in keys for run in (first, second)]
    return lines


#: the order of ``--scores``: the library's default reading first, then the paper's
SCORE_TABLE = [
    ("murr_full_2%", "MURR 2% (full) ↑"),
    ("auc_urr_full_2%", "AUC-URR 2% (full) ↓"),
    ("murr_full_5%", "MURR 5% (full) ↑"),
    ("auc_urr_full_5%", "AUC-URR 5% (full) ↓"),
    ("murr_2%", "MURR 2% (paper's reading) ↑"),
    ("auc_urr_2%", "AUC-URR 2% (paper's reading) ↓"),
    ("murr_5%", "MURR 5% (paper's reading) ↑"),
    ("auc_urr_5%", "AUC-URR 5% (paper's reading) ↓"),
    ("urc_1%", "URC 1% ↑"),
    ("urc_5%", "URC 5% ↑"),
    ("iou", "IoU ↑"),
    ("ada", "ADA ↑"),
    ("runtime_s", "s / image"),
]


def score_table(run: dict, folder: Path) -> list[str]:
    """Every score of one run as a Markdown table, under a line naming its ensemble."""
    images = run["config"]["images"]
    return [
        f"`{run['config']['recipe']}` ensemble (test accuracy {run['test_accuracy']:.3f}; images with "
        f"sigma = 0: {run['no_blur_images']} of {images}; `{folder / 'scores.json'}`):",
        "",
        markdown_table(run["scores"], SCORE_TABLE),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument(
        "--columns",
        default="murr_2%,murr_5%,murr_full_2%,murr_full_5%,urc_5%,iou",
        help="comma-separated keys of scores.json",
    )
    parser.add_argument("--rst", action="store_true", help="print one Sphinx list-table of the columns instead")
    parser.add_argument("--scores", action="store_true", help="print every score of each run as a Markdown table")
    args = parser.parse_args()
    first, second = load(args.first), load(args.second)
    if args.scores:
        print("\n".join(score_table(first, args.first) + score_table(second, args.second)))
        return
    if args.rst:
        print("\n".join(wide_rst(first, second, args.columns.split(","))))
        return
    print(
        f"test accuracy: {first['config']['recipe']} {first['test_accuracy']:.3f}, "
        f"{second['config']['recipe']} {second['test_accuracy']:.3f}\n"
    )
    chosen = args.columns.split(",")
    for key, title, higher in COLUMNS:
        if key in chosen:
            print("\n".join(side_by_side(first, second, key, title, higher)))


if __name__ == "__main__":
    main()
