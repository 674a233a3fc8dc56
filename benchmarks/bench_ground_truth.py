"""Which attribution map points at the real cause of the uncertainty?

Run: ``.venv/bin/python benchmarks/bench_ground_truth.py --data digits [--images 20] [--steps 32]
[--quick] [--out out/ground_truth.md]``

Two causes are built into the data: a checkerboard patch no training image holds (epistemic)
and a faint overlaid digit whose label is a coin flip in training (aleatoric). For each, an
ensemble is trained (or loaded from the cache) on the cause's training set, the test images
whose uncertainty of the caused kind rose most from their clean version are explained by every
method of :data:`captum_uncertainty.experiments.ground_truth.METHODS`, and the maps are scored
against the cause's mask: relevance mass, relevance rank accuracy, pointing game, mask AUROC,
conveyance (maps at growing strengths of the cause) and seconds per image. A random map is the
chance reference, Integrated Gradients from the clean image the oracle. The same maps are also
scored by the proxy metrics used without ground truth (blurring test MURR, URC, deletion and
insertion AUC), and per cause and proxy the Kendall tau between the real methods' ranking by the
proxy and by relevance mass (and mask AUROC) says how well the proxy ranks methods as the ground
truth does (``--no-proxies`` skips them). Prints one Markdown table per cause and writes them to
``--out``.

``--quick``: 3 members, 10 epochs, 8 images, 8 steps, conveyance at half and full strength, 30
search iterations (CLUE and the CF-path fiducial): well under a minute on the digits.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from captum_uncertainty.experiments.ground_truth import (
    SUPPORTED_DATASETS,
    SUPPORTED_POSTERIORS,
    GroundTruthConfig,
    run_ground_truth,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=SUPPORTED_DATASETS, default="digits")
    parser.add_argument(
        "--posterior",
        choices=SUPPORTED_POSTERIORS,
        default="adam",
        help="deep ensembles trained with Adam (default) or the papers' SGD recipe, or MC dropout of one network",
    )
    parser.add_argument("--images", type=int, default=None, help="explained images per cause (default 20, quick 8)")
    parser.add_argument("--steps", type=int, default=None, help="integration steps (default 32, quick 8)")
    parser.add_argument("--members", type=int, default=None, help="ensemble size (default 5, quick 3)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: 20 digits, 5 MNIST)")
    parser.add_argument(
        "--strengths",
        type=str,
        default=None,
        help="conveyance strengths as fractions of each cause's, comma-separated (default 0.25,0.5,0.75,1)",
    )
    parser.add_argument("--methods", type=str, default=None, help="comma-separated subset of the methods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a run of well under a minute on the digits")
    parser.add_argument("--no-proxies", action="store_true", help="skip the proxy metrics and their Kendall taus")
    parser.add_argument("--out", type=Path, default=Path("out/ground_truth.md"))
    args = parser.parse_args()

    config = GroundTruthConfig(
        data=args.data, posterior=args.posterior, seed=args.seed, progress=True, proxies=not args.no_proxies
    )
    if args.quick:
        config.n_members, config.epochs, config.n_images, config.n_steps = 3, 10, 8, 8
        config.strengths, config.search_iterations = (0.5, 1.0), 30
    if args.images is not None:
        config.n_images = args.images
    if args.steps is not None:
        config.n_steps = args.steps
    if args.members is not None:
        config.n_members = args.members
    if args.epochs is not None:
        config.epochs = args.epochs
    if args.strengths is not None:
        config.strengths = tuple(float(s) for s in args.strengths.split(","))
    if args.methods is not None:
        config.methods = [name.strip() for name in args.methods.split(",")]

    start = time.perf_counter()
    table = run_ground_truth(config)
    seconds = time.perf_counter() - start
    text = (
        f"{table.to_markdown()}\n"
        f"Wall time {seconds:.0f} s (training or loading the ensembles and VAEs included); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}.\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
