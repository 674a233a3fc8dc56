"""MC dropout with a shared trunk against the S x N unshared run.

A ResNet-18 (random weights, 10 classes) with dropout before its last layer, the most common MC
dropout model; inputs 3 x 96 x 96, N = 2, S = 20 masks. Times the posterior's forward and
Captum's IntegratedGradients (16 steps, internal_batch_size 8) on the epistemic uncertainty,
shared (``share_trunk=True``) and unshared (``share_trunk=False``), in the same run, median of
three; checks that the maps agree. Peak memory is not measured here.

Run: ``python benchmarks/bench_shared_trunk.py``
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torchvision
from captum.attr import IntegratedGradients
from torch import nn

from captum_uncertainty import MCDropout, UncertaintyForward


def _median_seconds(run: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = torchvision.models.resnet18(num_classes=10)
    model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, 10))
    model.eval()
    x = torch.rand(2, 3, 96, 96)
    forwards = {
        share: UncertaintyForward(MCDropout(model, num_samples=20, seed=0, share_trunk=share), "epistemic")
        for share in (False, True)
    }
    maps = {}
    print("| run | unshared (s) | shared trunk (s) | ratio |")
    print("|---|---|---|---|")
    with torch.no_grad():
        seconds = {share: _median_seconds(lambda f=f: f.posterior(x)) for share, f in forwards.items()}
    ratio = seconds[False] / seconds[True]
    print(f"| forward, S = 20, N = 2 | {seconds[False]:.3f} | {seconds[True]:.3f} | {ratio:.1f}x |")
    for share, forward in forwards.items():
        ig = IntegratedGradients(forward)
        maps[share] = ig.attribute(x, baselines=x * 0, n_steps=16, internal_batch_size=8)
        seconds[share] = _median_seconds(
            lambda ig=ig: ig.attribute(x, baselines=x * 0, n_steps=16, internal_batch_size=8), repeats=1
        )
    print(
        f"| Captum IG, 16 steps, internal_batch_size 8 | {seconds[False]:.2f} | {seconds[True]:.2f} | "
        f"{seconds[False] / seconds[True]:.1f}x |"
    )
    gap = float((maps[True] - maps[False]).abs().max() / maps[False].abs().max())
    print(f"\nlargest difference between the maps, relative to the largest attribution: {gap:.1e}")


if __name__ == "__main__":
    main()
