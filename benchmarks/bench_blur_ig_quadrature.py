"""Blur IG's completeness error against ``n_steps`` for each of Captum's integration rules.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_blur_ig_quadrature.py [--members 5]
[--images 20] [--offset 0] [--steps 1,2,4,8,16,32,64] [--measure total] [--dtype float32]
[--grad-step 0.01] [--sqrt]``

Blur IG integrates along ``x(sigma) = gaussian_blur(x, sigma)`` from ``max_sigma`` down to 0. The
path's velocity vanishes at ``sigma = 0`` (heat equation: ``dx/dsigma = sigma * Laplacian x``), so
the left Riemann rule, Blur IG's original one, spends its first node on a zero gradient term: with
one step its map is all zero. This benchmark measures every rule of
:class:`~captum_uncertainty.BlurIntegratedGradients` (``method``) on the deep ensemble of
:func:`~captum_uncertainty.data.train_ensemble` (``--members`` MNIST CNNs, trained once and
cached) and ``--images`` test digits of :func:`~captum_uncertainty.data.load_mnist` (seed 0)
from the ``--offset``-th on, explaining ``UncertaintyForward(members, measure=--measure)`` with
the default ``max_sigma`` (6.25 pixels) and the finite-difference step ``--grad-step`` (Blur IG's
default 0.01; its forward difference biases every rule alike, so a smaller step in float64
shows the rules' own quadrature error).

Per (rule, ``n_steps``): the median and largest over the images of ``|delta| / |U(x) -
U(x(max_sigma))|`` (``delta``: the convergence delta), how many maps are all zero, and the wall
time of the call (all images in one batch). ``riemann_trapezoid`` needs two nodes ("-" at one
step). Prints two Markdown tables: the medians side by side, then every measurement. Not a test.
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, List, Optional, Tuple

import torch

from captum_uncertainty import UncertaintyForward, gaussian_blur
from captum_uncertainty.attr import BlurIntegratedGradients
from captum_uncertainty.attr._utils.path import BLUR_IG_METHOD, SUPPORTED_METHODS, default_max_sigma
from captum_uncertainty.data import load_mnist, train_ensemble

Row = Tuple[float, float, int, float]  # median relative delta, largest, all-zero maps, seconds


def measure(
    uf: UncertaintyForward,
    x: torch.Tensor,
    method: str,
    n_steps: int,
    sqrt: bool,
    grad_step: float,
    gap: torch.Tensor,
) -> Optional[Row]:
    """One Blur IG run; ``None`` when the rule does not take ``n_steps``."""
    if method == "riemann_trapezoid" and n_steps < 2:
        return None
    if method == "gausslegendre" and sqrt:
        return None
    start = time.perf_counter()
    attr, delta = BlurIntegratedGradients(uf).attribute(
        x, n_steps=n_steps, method=method, grad_step=grad_step, sqrt=sqrt, return_convergence_delta=True
    )
    seconds = time.perf_counter() - start
    relative = (delta.abs() / gap.abs()).double()
    zero_maps = int((attr.flatten(1).abs().amax(1) == 0).sum())
    return relative.median().item(), relative.max().item(), zero_maps, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5, help="ensemble size (train_ensemble, cached)")
    parser.add_argument("--images", type=int, default=20, help="test digits explained")
    parser.add_argument("--offset", type=int, default=0, help="index of the first test digit explained")
    parser.add_argument("--steps", default="1,2,4,8,16,32,64", help="comma-separated n_steps")
    parser.add_argument("--measure", default="total", help="UncertaintyForward measure")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--grad-step", type=float, default=0.01, help="Blur IG's finite-difference step")
    parser.add_argument("--sqrt", action="store_true", help="blur levels uniform in sigma^2 (Riemann rules only)")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    dtype = getattr(torch, args.dtype)

    data = load_mnist(seed=0)
    members = [m.to(dtype) for m in train_ensemble(n_members=args.members, data=data, progress=False)]
    uf = UncertaintyForward(members, measure=args.measure)
    x = data.x_test[args.offset : args.offset + args.images].to(dtype)
    max_sigma = default_max_sigma(x.shape[2], x.shape[3])
    with torch.no_grad():
        gap = uf(x) - uf(gaussian_blur(x, max_sigma, truncate=None))
    print(
        f"{args.members} members, test digits {args.offset}-{args.offset + len(x) - 1}, measure {args.measure!r}, "
        f"{args.dtype}, max_sigma {max_sigma:.2f}, grad_step {args.grad_step:g}, sqrt={args.sqrt}; "
        f"median |U(x) - U(x(max_sigma))| "
        f"{gap.abs().median().item():.3g}; default method {BLUR_IG_METHOD!r}\n"
    )
    results: Dict[Tuple[str, int], Optional[Row]] = {}
    for n_steps in steps:
        for method in SUPPORTED_METHODS:
            results[method, n_steps] = measure(uf, x, method, n_steps, args.sqrt, args.grad_step, gap)

    print("Median |delta| / |U(x) - U(x(max_sigma))| over the images:\n")
    print("| n_steps | " + " | ".join(f"`{m}`" for m in SUPPORTED_METHODS) + " |")
    print("|---:|" + "---:|" * len(SUPPORTED_METHODS))
    for n_steps in steps:
        cells: List[str] = []
        for method in SUPPORTED_METHODS:
            row = results[method, n_steps]
            cells.append("-" if row is None else f"{row[0]:.2e}")
        print(f"| {n_steps} | " + " | ".join(cells) + " |")

    print("\nEvery measurement:\n")
    print("| method | n_steps | median rel. delta | largest rel. delta | all-zero maps | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for method in SUPPORTED_METHODS:
        for n_steps in steps:
            row = results[method, n_steps]
            if row is None:
                print(f"| `{method}` | {n_steps} | - | - | - | - |")
                continue
            median, largest, zero_maps, seconds = row
            print(f"| `{method}` | {n_steps} | {median:.2e} | {largest:.2e} | {zero_maps}/{len(x)} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
