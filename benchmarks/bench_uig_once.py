"""UncertaintyIntegratedGradients: seconds per image, to compare code versions (U(x) once per call).

Usage: python benchmarks/bench_uig_once.py [--images 20] [--steps 32] [--repeats 5]

Times UIG on the most epistemically uncertain bundled-MNIST test digits with the cached 5-CNN
ensemble, for one baseline ("black") and two ("black_white"), with and without the convergence
delta; prints the median over repeats in seconds per image and, exactly, the number of inputs the
posterior is run on per call (path points and the uncertainty at the inputs and the baselines).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from captum_uncertainty import UncertaintyForward, UncertaintyIntegratedGradients
from captum_uncertainty.data import load_mnist, train_ensemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = load_mnist()
    uf = UncertaintyForward(train_ensemble(n_members=5, data=data, progress=False), measure="epistemic")
    with torch.no_grad():
        x = data.x_test[uf(data.x_test).argsort(descending=True)[: args.images]]
    uig = UncertaintyIntegratedGradients(uf)
    rows = [0]
    uf.posterior.register_forward_pre_hook(lambda _module, inputs: rows.__setitem__(0, rows[0] + len(inputs[0])))
    print("| baselines | delta | inputs run through the posterior per call | s / image (median) |")
    print("|---|---|---:|---:|")
    for baselines in ("black", "black_white"):
        for delta in (False, True):
            uig.attribute(x[:2], baselines=baselines, n_steps=4, return_convergence_delta=delta)  # warm-up
            rows[0] = 0
            uig.attribute(x, baselines=baselines, n_steps=args.steps, return_convergence_delta=delta)
            evaluated = rows[0]
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                uig.attribute(x, baselines=baselines, n_steps=args.steps, return_convergence_delta=delta)
                times.append((time.perf_counter() - start) / len(x))
            print(f"| {baselines} | {delta} | {evaluated} | {statistics.median(times):.4f} |")


if __name__ == "__main__":
    main()
