"""How many benchmark images have no blur that lowers their uncertainty (sigma = 0).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_no_blur.py``

For both training recipes of the benchmark's ensemble (``adam`` and ``wang``) and both
benchmark configurations (quick: 20 images, sigma step 1.0; full: 100 images, sigma step 0.2),
takes the benchmark's images (the most epistemically uncertain test digits) and counts those
whose map-independent blur (:func:`~captum_uncertainty.metrics.full_blur_sigma`, the default
reading of the blurring test) is ``sigma = 0``: no blur of the whole image lowers their
uncertainty, so their reduction is 0 for every map. The count does not depend on any map, so it
holds for every table of that configuration. Prints a Markdown table.
"""

from __future__ import annotations

import torch

from captum_uncertainty import UncertaintyForward
from captum_uncertainty.data import load_mnist
from captum_uncertainty.experiments.benchmark import BenchmarkConfig, benchmark_ensemble
from captum_uncertainty.metrics import full_blur_sigma


def main() -> None:
    data = load_mnist(seed=0)
    print("| recipe | configuration | images | sigma step | images with sigma = 0 | share |")
    print("|---|---|---|---|---|---|")
    for recipe in ("adam", "wang"):
        uf = UncertaintyForward(benchmark_ensemble(data, 5, 0, recipe), measure="epistemic")
        with torch.no_grad():
            order = uf(data.x_test).argsort(descending=True)
        for name, config in (("quick", BenchmarkConfig.quick()), ("full", BenchmarkConfig())):
            x = data.x_test[order[: config.images]]
            sigma = full_blur_sigma(uf, x, config.sigma_step)
            count = int((sigma == 0).sum())
            print(f"| {recipe} | {name} | {len(x)} | {config.sigma_step} | {count} | {count / len(x):.0%} |")


if __name__ == "__main__":
    main()
