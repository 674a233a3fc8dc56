"""The ground-truth benchmark's figure: relevance mass against seconds per image, per cause.

Reads the markdown written by ``bench_ground_truth.py`` and draws one panel per cause with the
random and oracle rows as references and the Pareto front (higher mass, fewer seconds) joined.

Run: ``python benchmarks/plot_ground_truth.py out/ground_truth.md docs/_static/ground_truth.png``
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Row = Tuple[str, float, float]


def read_tables(path: Path) -> Dict[str, List[Row]]:
    """``{cause: [(method, relevance mass, seconds per image)]}`` from the benchmark's markdown."""
    tables: Dict[str, List[Row]] = {}
    cause = None
    for line in path.read_text().splitlines():
        heading = re.match(r"^###\s+(.*?)\s*\(", line)
        if heading:
            cause = heading.group(1)
            tables[cause] = []
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cause and line.startswith("|") and len(cells) >= 7 and re.match(r"^-?\d", cells[1]):
            tables[cause].append((cells[0], float(cells[1]), float(cells[-1])))
    return tables


def pareto(rows: List[Row]) -> List[Row]:
    """Rows no other row beats on both mass (higher) and seconds (fewer)."""
    front = [r for r in rows if not any(o[1] >= r[1] and o[2] <= r[2] and o != r for o in rows)]
    return sorted(front, key=lambda r: r[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("figure", type=Path)
    args = parser.parse_args()
    tables = read_tables(args.table)
    figure, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 4.2), squeeze=False)
    for ax, (cause, rows) in zip(axes[0], tables.items()):
        methods = [r for r in rows if not r[0].startswith(("Random", "Oracle"))]
        random_mass = next(r[1] for r in rows if r[0].startswith("Random"))
        for name, mass, seconds in methods:
            ax.scatter(max(seconds, 1e-4), mass, s=18)
            ax.annotate(name, (max(seconds, 1e-4), mass), fontsize=6, xytext=(3, 2), textcoords="offset points")
        front = pareto(methods)
        ax.plot([max(r[2], 1e-4) for r in front], [r[1] for r in front], "k--", lw=0.8, label="Pareto front")
        ax.axhline(random_mass, color="grey", lw=0.8, label="random map")
        ax.axhline(1.0, color="green", lw=0.8, label="oracle (IG from the clean image)")
        ax.set_xscale("log")
        ax.set_xlabel("seconds per image (2 CPU cores, noisy)")
        ax.set_ylabel("relevance mass in the cause's mask")
        ax.set_title(cause)
        ax.set_ylim(0, 1.05)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    figure.tight_layout()
    figure.savefig(args.figure, dpi=110)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
