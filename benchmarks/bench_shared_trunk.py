"""Posteriors whose samples share a trunk, run shared against unshared, at ImageNet size.

A ResNet-18 (random weights, 1,000 classes) on inputs 3 x 224 x 224, N = 2, one IG call of
Captum's ``IntegratedGradients`` on the epistemic uncertainty (32 steps, internal_batch_size 4,
zero baselines), against the same call on one deterministic network (the total entropy of the
ResNet alone). Two posteriors, each shared (default ``share_trunk="auto"``) and unshared
(``share_trunk=False``):

- MC dropout, S = 20: dropout (p = 0.5) before the last layer, the most common MC dropout model.
- Last-layer Laplace, S = 20: laplace-torch's default (last layer, Kronecker factors) fitted on 16
  random images with random labels, as fixed weight samples (``from_laplace``).

Every configuration runs in a child process of its own, so that its peak resident memory (the
child's ``ru_maxrss``) is its own; the first call of the forward (with its checks: the
determinism row and, for the shared runs, the shared-against-unshared check of the input layout)
is timed apart from the IG call. The maps of the shared and the unshared run are compared.

Run: ``python benchmarks/bench_shared_trunk.py`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from captum.attr import IntegratedGradients
from torch import nn

from captum_uncertainty import MCDropout, UncertaintyForward, WeightSamples

SIZE, BATCH, SAMPLES, STEPS, CHUNK = 224, 2, 20, 32, 4
CONFIGS = ["deterministic", "mc_dropout_unshared", "mc_dropout_shared", "laplace_unshared", "laplace_shared"]


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000)
    model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, 1000))
    return model.eval()


def _laplace_samples(model: nn.Module, share: bool) -> WeightSamples:
    from laplace import Laplace

    from captum_uncertainty.integrations import from_laplace

    generator = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, SIZE, SIZE, generator=generator)
    y = torch.randint(0, 1000, (16,), generator=generator)
    la = Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="kron")
    la.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8))
    samples = from_laplace(la, num_samples=SAMPLES, seed=0)
    return samples if share else WeightSamples(model, [m.state_dict() for m in samples.members], share_trunk=False)


def _forward(config: str) -> UncertaintyForward:
    model = _resnet()
    if config == "deterministic":
        return UncertaintyForward([model], "total")
    share = config.endswith("_shared")
    if config.startswith("mc_dropout"):
        return UncertaintyForward(MCDropout(model, num_samples=SAMPLES, seed=0, share_trunk="auto" if share else False))
    return UncertaintyForward(_laplace_samples(model, share), "epistemic")


def run_one(config: str, out: Path) -> None:
    torch.set_num_threads(2)
    forward = _forward(config)
    x = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    start = time.perf_counter()
    with torch.no_grad():
        forward(x)
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    maps = IntegratedGradients(forward).attribute(x, baselines=x * 0, n_steps=STEPS, internal_batch_size=CHUNK)
    seconds = time.perf_counter() - start
    torch.save(maps, out.with_suffix(".pt"))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux
    out.write_text(json.dumps({"first_call": first_call, "ig": seconds, "peak_gb": peak_gb}))


def main() -> None:
    folder = Path("out/bench_shared_trunk")
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for config in CONFIGS:
        out = folder / f"{config}.json"
        subprocess.run([sys.executable, __file__, "--one", config, str(out)], check=True)
        results[config] = json.loads(out.read_text())
        print(config, results[config], flush=True)
    base = results["deterministic"]["ig"]
    print(
        f"\nA ResNet-18, 3 x {SIZE} x {SIZE}, N = {BATCH}, S = {SAMPLES}; Captum IG, {STEPS} steps, "
        f"internal_batch_size {CHUNK}\n"
    )
    print("| run | first call (s) | IG call (s) | IG / deterministic | peak memory (GB) |")
    print("|---|---|---|---|---|")
    for config in CONFIGS:
        r = results[config]
        print(f"| {config} | {r['first_call']:.2f} | {r['ig']:.1f} | {r['ig'] / base:.2f}x | {r['peak_gb']:.2f} |")
    for posterior in ("mc_dropout", "laplace"):
        shared = torch.load(folder / f"{posterior}_shared.pt")
        plain = torch.load(folder / f"{posterior}_unshared.pt")
        gap = float((shared - plain).abs().max() / plain.abs().max())
        print(f"\n{posterior}: largest difference between the maps, relative to the largest attribution: {gap:.1e}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        run_one(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
