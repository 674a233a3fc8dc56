"""Ensemble forward+backward time per strategy (loop vs torch.func.vmap).

Run: ``.venv/bin/python benchmarks/bench_ensemble.py [--repeats 5] [--batch 256]``

For S in {1, 5, 10} members of the Wang et al. MNIST CNN and a batch of 256 images, times one
forward through :class:`UncertaintyForward` (epistemic) plus the backward pass to the input,
for each :class:`DeepEnsemble` strategy, and prints a Markdown table with the vmap/loop ratio.
Median of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from captum_uncertainty import DeepEnsemble, UncertaintyForward
from captum_uncertainty.data import MNISTCNN


def time_forward_backward(uf: UncertaintyForward, x: torch.Tensor, repeats: int) -> float:
    def once() -> float:
        inp = x.clone().requires_grad_()
        start = time.perf_counter()
        uf(inp).sum().backward()
        return time.perf_counter() - start

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| S | loop (s) | vmap (s) | vmap / loop | auto picks |")
    print("|---|---|---|---|---|")
    for n_members in (1, 5, 10):
        members = [MNISTCNN() for _ in range(n_members)]
        timings = {}
        for strategy in ("loop", "vmap"):
            uf = UncertaintyForward(DeepEnsemble(members, strategy=strategy), measure="epistemic")
            timings[strategy] = time_forward_backward(uf, x, args.repeats)
        auto = DeepEnsemble(members, strategy="auto")
        auto(x)
        picked = next(iter(auto._chosen.values()), "loop")
        print(
            f"| {n_members} | {timings['loop']:.3f} | {timings['vmap']:.3f} | "
            f"{timings['vmap'] / timings['loop']:.2f} | {picked} |"
        )


if __name__ == "__main__":
    main()
