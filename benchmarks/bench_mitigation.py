"""Uncertainty mitigation study (Wang et al. 2023, Table 2, MNIST column) on the bundled MNIST digits.

Run: ``.venv/bin/python benchmarks/bench_mitigation.py [--epochs 120] [--seeds 5] [--n-train 500] [--space latent]``

Epistemic UA-Backprop maps (fullgrad path, the package defaults) of the cached 5-CNN deep
ensemble (:func:`captum_uncertainty.data.train_ensemble`, trained on the 4,000 bundled training
digits) are generated for the training images of every seed's subset and for the 1,000 test
digits. Then, per seed, a class-stratified subset of ``--n-train`` training digits trains the
paper's classifier (:class:`~captum_uncertainty.experiments.mitigation_study.MitigationCNN`, SGD 0.1 / momentum
0.9, batch 128, lr x0.2 at 25/50/75% of the epochs) plainly and with the attention
``1 + alpha A(x)`` (latent: on the last convolution's output; input: on the image), and both are
evaluated on the test digits. Prints a Markdown table (mean +- standard deviation over seeds),
the command and the wall time. Not a test; at 120 epochs about 35 s per seed and space (both
models) on two otherwise idle CPU cores, 6 minutes for ``--space both`` (measured 2026-11-25).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from captum_uncertainty import DeepEnsemble, UABackprop, UncertaintyForward
from captum_uncertainty.data import load_mnist, train_ensemble
from captum_uncertainty.experiments.mitigation_study import mitigation_study, stratified_subset
from captum_uncertainty.mitigation import attention_weights


def epistemic_maps(uf: UncertaintyForward, images: torch.Tensor, batch: int = 100) -> torch.Tensor:
    """UA-Backprop epistemic maps ``(N, 1, H, W)`` in batches of ``batch`` images."""
    explainer = UABackprop(uf)
    return torch.cat([explainer.attribute(images[i : i + batch]).detach() for i in range(0, len(images), batch)])


def training_maps(uf: UncertaintyForward, x: torch.Tensor, y: torch.Tensor, seeds, n_train: int) -> torch.Tensor:
    """Maps for the images of every seed's subset; zeros (never used) for the rest of the pool."""
    used = torch.unique(torch.cat([stratified_subset(y, n_train, seed) for seed in seeds]))
    maps = torch.zeros(len(x), 1, *x.shape[-2:])
    maps[used] = epistemic_maps(uf, x[used])
    return maps


def attention_summary(maps: torch.Tensor, normalization: str) -> str:
    """How far the attention departs from a constant: mean and mean per-image range of ``A``."""
    attention = attention_weights(maps, normalization).flatten(1)
    spread = (attention.max(1).values - attention.min(1).values).mean()
    return f"A(x) ({normalization}) on the test maps: mean {attention.mean():.3g}, mean per-image max-min {spread:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--space", default="latent", choices=["latent", "input", "both"])
    parser.add_argument("--normalization", default="softmax", choices=["softmax", "minmax"])
    args = parser.parse_args()
    start = time.perf_counter()
    seeds = list(range(args.seeds))
    data = load_mnist()
    uf = UncertaintyForward(DeepEnsemble(train_ensemble(5, data=data)), measure="epistemic")
    maps_train = training_maps(uf, data.x_train, data.y_train, seeds, args.n_train)
    maps_test = epistemic_maps(uf, data.x_test)
    map_time = time.perf_counter() - start
    rows = {}
    for space in ["latent", "input"] if args.space == "both" else [args.space]:
        result = mitigation_study(
            data.x_train,
            data.y_train,
            data.x_test,
            data.y_test,
            maps_train,
            maps_test,
            seeds=seeds,
            alpha=args.alpha,
            space=space,
            epochs=args.epochs,
            n_train=args.n_train,
            normalization=args.normalization,
        )
        rows.setdefault("no attention", result["no attention"])
        rows[f"attention ({space})"] = result["attention"]
    print(
        f"\nN = {args.n_train} of the {len(data.x_train)} bundled MNIST training digits, tested on {len(data.x_test)}; "
        f"{args.seeds} seeds, {args.epochs} epochs, alpha {args.alpha}; epistemic UA-Backprop (fullgrad) maps of a "
        f"5-CNN deep ensemble, {args.normalization} normalisation\n"
    )
    print("| training | accuracy (%) | NLL |")
    print("|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['accuracy_mean']:.2f} ± {row['accuracy_std']:.2f} "
            f"| {row['nll_mean']:.3f} ± {row['nll_std']:.3f} |"
        )
    print(f"\n{attention_summary(maps_test, args.normalization)}")
    print(f"command: {' '.join([sys.executable.split('/main/')[-1]] + sys.argv)}")
    print(f"wall time {time.perf_counter() - start:.0f} s (maps {map_time:.0f} s)")


if __name__ == "__main__":
    main()
