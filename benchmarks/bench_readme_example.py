"""Peak memory and time of the README example's attribution lines.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_readme_example.py``

Trains (or loads from the cache) the README's five-CNN ensemble, picks the most uncertain test
digits as the README does, and runs each attribution line in a child process of its own, so
that each peak resident set size (``ru_maxrss`` of the child) belongs to that line alone:
Captum's IntegratedGradients (50 steps) and NoiseTunnel SmoothGrad (10 noisy copies), as the
README writes them (4 digits, 10 steps per copy, ``internal_batch_size=50``) and without the
bound, and the README's earlier line (8 digits, 50 steps per copy) with and without it.
Prints a Markdown table; the baseline row is the child that only loads the ensemble and the
digits (run the script twice on a fresh machine: the first run's baseline includes training).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

#: name -> (digits, NoiseTunnel's IG steps, internal_batch_size); IntegratedGradients: 50 steps.
VARIANTS = {
    "load only": (4, 0, None),
    "IntegratedGradients (README)": (4, 0, None),
    "NoiseTunnel (README: 4 digits, 10 steps, internal_batch_size=50)": (4, 10, 50),
    "NoiseTunnel, 4 digits, 10 steps, no internal_batch_size": (4, 10, None),
    "NoiseTunnel, 8 digits, 50 steps, no internal_batch_size (earlier README)": (8, 50, None),
    "NoiseTunnel, 8 digits, 50 steps, internal_batch_size=50": (8, 50, 50),
}


def run_variant(name: str) -> dict:
    import torch
    from captum.attr import IntegratedGradients, NoiseTunnel

    from captum_uncertainty import UncertaintyForward
    from captum_uncertainty.data import load_mnist, train_ensemble

    torch.manual_seed(0)
    data = load_mnist()
    members = train_ensemble(n_members=5, data=data)
    uf = UncertaintyForward(members, measure="epistemic")
    digits, nt_steps, internal_batch_size = VARIANTS[name]
    with torch.no_grad():
        x = data.x_test[uf(data.x_test).argsort(descending=True)[:digits]]
    ig = IntegratedGradients(uf)
    start = time.perf_counter()
    if name.startswith("IntegratedGradients"):
        ig.attribute(x, baselines=x * 0, n_steps=50)
    elif name.startswith("NoiseTunnel"):
        NoiseTunnel(ig).attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=10,
            baselines=x * 0,
            n_steps=nt_steps,
            internal_batch_size=internal_batch_size,
        )
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {"variant": name, "seconds": seconds, "peak_mib": peak_mib}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--variant":
        print(json.dumps(run_variant(sys.argv[2])))
        return
    rows = []
    for name in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--variant", name], check=True, capture_output=True, text=True
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]["peak_mib"]
    print("| line | seconds | peak RSS (MiB) | above loading (MiB) |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['seconds']:.1f} | {row['peak_mib']:.0f} | {row['peak_mib'] - base:.0f} |")


if __name__ == "__main__":
    main()
