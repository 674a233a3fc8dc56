"""Per-image runtime of the counterfactual methods next to UABackprop, in the same run.

Run: ``.venv/bin/python benchmarks/bench_counterfactual.py [--images 20] [--vae-epochs 20]``

Setting: the cached 5-CNN deep ensemble of the bundled MNIST (``train_ensemble`` defaults), a
32-dimensional :class:`~captum_uncertainty.generative.VAE` (``load_or_train_vae``, cached), the
``--images`` most uncertain (total) test digits, CPU. Methods:

* ``UABackprop`` (fullgrad path), the reference of Wang et al.'s Table 6;
* ``CLUE`` (at most 500 Adam iterations, early stopping), all images in one batched search,
  and the obvious alternative: the same search one image at a time;
* ``DeltaCLUE`` (5 starts, delta 2);
* ``CounterfactualPathIG`` with the CLUE fiducial and with the in-class fiducial (50 steps),
  search included.

Training times are excluded (models are trained or loaded before the clock starts). Prints a
Markdown table: seconds per image and the ratio to UABackprop. Not a test.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Callable, Dict

import torch

from captum_uncertainty import CLUE, CounterfactualPathIG, DeltaCLUE, UABackprop, UncertaintyForward
from captum_uncertainty.attr import FiducialWarning
from captum_uncertainty.data import load_mnist, train_ensemble
from captum_uncertainty.generative import load_or_train_vae


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--vae-epochs", type=int, default=20)
    args = parser.parse_args()
    warnings.simplefilter("ignore", FiducialWarning)

    data = load_mnist()
    uf = UncertaintyForward(train_ensemble(n_members=5, data=data), measure="total")
    vae = load_or_train_vae(data.x_train, latent_dim=32, epochs=args.vae_epochs, seed=0)
    with torch.no_grad():
        x = data.x_test[uf(data.x_test).argsort(descending=True)[: args.images]]
    clue, cpig = CLUE(uf, vae), CounterfactualPathIG(uf, vae)
    methods: Dict[str, Callable[[], object]] = {
        "UABackprop (fullgrad)": lambda: UABackprop(uf).attribute(x),
        "CLUE, batched search": lambda: clue.attribute(x),
        "CLUE, one image at a time": lambda: [clue.attribute(x[i : i + 1]) for i in range(len(x))],
        "DeltaCLUE (5 starts), batched": lambda: DeltaCLUE(uf, vae).attribute(x, n_starts=5),
        "CounterfactualPathIG, CLUE fiducial": lambda: cpig.attribute(x, fiducial="clue", n_steps=50),
        "CounterfactualPathIG, in-class fiducial": lambda: cpig.attribute(x, fiducial="in_class", n_steps=50),
    }
    UABackprop(uf).attribute(x[:2])  # warm-up
    per_image = {name: seconds(fn) / len(x) for name, fn in methods.items()}
    reference = per_image["UABackprop (fullgrad)"]
    print(f"{len(x)} most uncertain bundled MNIST test digits, 5-CNN ensemble, VAE latent 32, CPU\n")
    print("| method | s / image | x UABackprop |")
    print("|---|---|---|")
    for name, value in per_image.items():
        print(f"| {name} | {value:.4f} | {value / reference:.1f} |")
    loop, batched = per_image["CLUE, one image at a time"], per_image["CLUE, batched search"]
    print(f"\nbatched CLUE search is {loop / batched:.1f}x faster than one image at a time")


if __name__ == "__main__":
    main()
