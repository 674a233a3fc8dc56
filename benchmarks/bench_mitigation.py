"""Uncertainty mitigation study (Wang et al. Table 2, MNIST column) on the bundled digits.

Run: ``.venv/bin/python benchmarks/bench_mitigation.py [--epochs 120] [--seeds 5] [--n-train 500]``

Epistemic UA-Backprop maps (fullgrad path) of the cached 5-CNN deep ensemble are generated for
every bundled training and test digit; then, per seed, a class-stratified subset of
``--n-train`` training digits trains Wang et al.'s CNN (``MNISTCNN``) plainly and with the
attention ``1 + alpha A(x)`` on its last convolutional features, for each map normalisation
(softmax, the paper's; min-max), and all are evaluated on the 1,000 test digits. Prints a
Markdown table (mean +- standard deviation over seeds) and the wall time. Not a test.
"""

from __future__ import annotations

import argparse
import time

import torch

from captum_uncertainty import UABackprop, UncertaintyForward
from captum_uncertainty.data import MNISTCNN, load_mnist, train_ensemble
from captum_uncertainty.mitigation import mitigation_study


def epistemic_maps(uf: UncertaintyForward, images: torch.Tensor, batch: int = 200) -> torch.Tensor:
    explainer = UABackprop(uf)
    return torch.cat([explainer.attribute(images[i : i + batch]) for i in range(0, len(images), batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--space", default="latent", choices=["latent", "input"])
    args = parser.parse_args()
    start = time.perf_counter()
    data = load_mnist()
    uf = UncertaintyForward(train_ensemble(n_members=5, data=data), measure="epistemic")
    maps_train, maps_test = epistemic_maps(uf, data.x_train), epistemic_maps(uf, data.x_test)
    result = mitigation_study(
        MNISTCNN, data.x_train, data.y_train, maps_train, data.x_test, data.y_test, maps_test,
        n_train=args.n_train, seeds=range(args.seeds), alpha=args.alpha, space=args.space,
        normalizations=("softmax", "minmax"), epochs=args.epochs,
    )
    print(f"N = {args.n_train} bundled MNIST training digits, {args.seeds} seeds, {args.epochs} epochs, "
          f"alpha {args.alpha}, {args.space} space, epistemic UA-Backprop maps of a 5-CNN ensemble\n")
    print("| training | accuracy (%) | NLL |")
    print("|---|---|---|")
    for name, row in result.items():
        print(f"| {name} | {row['accuracy']:.2f} ± {row['accuracy_std']:.2f} | {row['nll']:.3f} ± {row['nll_std']:.3f} |")
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
