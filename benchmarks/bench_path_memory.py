"""Peak memory and time of UncertaintyIntegratedGradients' default call on ImageNet-sized inputs.

A ResNet-18 (random weights, 1,000 classes) with dropout before its last layer under MC dropout
(S = 20), two 3 x 224 x 224 images, 32 steps: the default chunk (bounded by
``PATH_NUMBERS_PER_CHUNK``), ``internal_batch_size=4``, and the default with the shared trunk.
Each configuration runs in its own process; peak memory is its maximum resident set. The
unbounded call (all 1,280 sample-rows of 64 path points in one pass) is not run: it needs more
memory than this machine has.

Run: ``python benchmarks/bench_path_memory.py``
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any, Dict

import torch


def run_one(setting: str) -> Dict[str, Any]:
    import torchvision
    from torch import nn

    from captum_uncertainty import MCDropout, UncertaintyForward, UncertaintyIntegratedGradients

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000)
    model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, 1000))
    model.eval()
    posterior = MCDropout(model, num_samples=20, seed=0, share_trunk=setting == "default, shared trunk")
    forward = UncertaintyForward(posterior, "epistemic")
    x = torch.rand(2, 3, 224, 224)
    chunk = {"internal_batch_size": 4} if setting == "internal_batch_size=4" else {}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    UncertaintyIntegratedGradients(forward).attribute(x, n_steps=32, **chunk)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"setting": setting, "seconds": seconds, "peak_mb": peak, "before_mb": before}


def main() -> None:
    print("| setting | seconds | peak memory (MB) | before the call (MB) |")
    print("|---|---|---|---|")
    for setting in ("default", "internal_batch_size=4", "default, shared trunk"):
        output = subprocess.run(
            [sys.executable, __file__, "--one", setting], capture_output=True, text=True, check=True
        )
        row = json.loads(output.stdout.strip().splitlines()[-1])
        print(
            f"| {row['setting']} | {row['seconds']:.1f} | {row['peak_mb']:.0f} | {row['before_mb']:.0f} |", flush=True
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(run_one(sys.argv[2])))
    else:
        main()
