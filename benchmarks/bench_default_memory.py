"""Peak memory and seconds of every method's default call on an ImageNet-sized deep ensemble.

Three ResNet-18s (random weights, 1,000 classes, eval mode) as a ``DeepEnsemble``, inputs
3 x 224 x 224, N = 2, the epistemic uncertainty; every method called with its defaults (only the
arguments it requires), each in a child process of its own so that its peak resident memory
(``ru_maxrss``) is its own; the child's memory after building the ensemble is reported too.
Captum's ``IntegratedGradients`` and the README's ``NoiseTunnel`` line are Captum's own defaults
(no internal batch bound), shown for comparison. The counterfactual methods need a generative
model of the images and are not run here.

Run: ``python benchmarks/bench_default_memory.py`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict

import torch
import torchvision

from captum_uncertainty import UncertaintyForward

METHODS = [
    "UncertaintyIntegratedGradients",
    "BlurIntegratedGradients",
    "GuidedIntegratedGradients",
    "FullGrad",
    "UABackprop",
    "ExplanationDistribution(IntegratedGradients)",
    "CovarianceAttribution(IntegratedGradients)",
    "Captum IntegratedGradients",
    "Captum NoiseTunnel (README line)",
]


def _call(name: str, uf: UncertaintyForward, x: torch.Tensor) -> Callable[[], object]:
    import captum.attr as captum_attr

    import captum_uncertainty as cu

    calls: Dict[str, Callable[[], object]] = {
        "UncertaintyIntegratedGradients": lambda: cu.UncertaintyIntegratedGradients(uf).attribute(x),
        "BlurIntegratedGradients": lambda: cu.BlurIntegratedGradients(uf).attribute(x),
        "GuidedIntegratedGradients": lambda: cu.GuidedIntegratedGradients(uf).attribute(x),
        "FullGrad": lambda: cu.FullGrad(uf).attribute(x),
        "UABackprop": lambda: cu.UABackprop(uf).attribute(x),
        "ExplanationDistribution(IntegratedGradients)": lambda: cu.ExplanationDistribution(
            uf, captum_attr.IntegratedGradients
        ).attribute(x),
        "CovarianceAttribution(IntegratedGradients)": lambda: cu.CovarianceAttribution(
            uf, captum_attr.IntegratedGradients
        ).attribute(x),
        "Captum IntegratedGradients": lambda: captum_attr.IntegratedGradients(uf).attribute(x, baselines=x * 0),
        "Captum NoiseTunnel (README line)": lambda: captum_attr.NoiseTunnel(
            captum_attr.IntegratedGradients(uf)
        ).attribute(
            x, nt_type="smoothgrad", nt_samples=10, stdevs=0.1, baselines=x * 0, n_steps=10, internal_batch_size=50
        ),
    }
    return calls[name]


def run_one(name: str, out: Path) -> None:
    torch.set_num_threads(2)
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(torchvision.models.resnet18(num_classes=1000).eval())
    uf = UncertaintyForward(members, "epistemic")
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        uf(x)  # the first call's checks, before the clock
    built_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _call(name, uf, x)()
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux
    out.write_text(json.dumps({"seconds": seconds, "peak_gb": peak_gb, "built_gb": built_gb}))


def main() -> None:
    folder = Path("out/bench_default_memory")
    folder.mkdir(parents=True, exist_ok=True)
    print("| method (default call) | seconds | peak memory (GB) |")
    print("|---|---:|---:|")
    built = 0.0
    for index, name in enumerate(METHODS):
        out = folder / f"{index}.json"
        done = subprocess.run([sys.executable, __file__, "--one", name, str(out)])
        if done.returncode != 0:
            print(f"| {name} | failed (exit {done.returncode}) | |", flush=True)
            continue
        result = json.loads(out.read_text())
        built = result["built_gb"]
        print(f"| {name} | {result['seconds']:.1f} | {result['peak_gb']:.2f} |", flush=True)
    print(f"\nThe ensemble built and called once: {built:.2f} GB")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        run_one(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
