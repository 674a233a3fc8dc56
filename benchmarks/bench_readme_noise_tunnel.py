"""How far the README's NoiseTunnel maps are from complete, per noise level.

SmoothGrad over IG averages maps of noisy copies ``x + e``; each sums to ``U(x + e) - U(0)``,
so their mean sums to ``E[U(x + e)] - U(0)``, not ``U(x) - U(0)``. This measures the mean
relative gap ``|sum(map) - (U(x) - U(0))| / |U(x) - U(0)|`` over the README's four most uncertain
digits for Captum's default ``stdevs=1.0`` and for noise relative to the image range [0, 1].

Run: ``python benchmarks/bench_readme_noise_tunnel.py``
"""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients, NoiseTunnel

from captum_uncertainty import UncertaintyForward
from captum_uncertainty.data import load_mnist, train_ensemble


def main() -> None:
    torch.manual_seed(0)
    data = load_mnist()
    members = train_ensemble(n_members=5, data=data)
    uf = UncertaintyForward(members, measure="epistemic")
    with torch.no_grad():
        x = data.x_test[uf(data.x_test).argsort(descending=True)[:4]]
        change = uf(x) - uf(x * 0)
    ig = IntegratedGradients(uf)
    plain = ig.attribute(x, baselines=x * 0, n_steps=50)
    print("| map | mean relative gap to U(x) - U(0) |")
    print("|---|---|")
    gap = ((plain.sum((1, 2, 3)) - change).abs() / change.abs()).mean()
    print(f"| IG, 50 steps | {float(gap):.3f} |")
    for stdevs in (1.0, 0.2, 0.1, 0.05):
        torch.manual_seed(0)
        smooth = NoiseTunnel(ig).attribute(
            x, nt_type="smoothgrad", nt_samples=10, stdevs=stdevs, baselines=x * 0, n_steps=10, internal_batch_size=50
        )
        gap = ((smooth.sum((1, 2, 3)) - change).abs() / change.abs()).mean()
        print(f"| NoiseTunnel smoothgrad, stdevs={stdevs} (10 samples, 10 steps) | {float(gap):.3f} |")


if __name__ == "__main__":
    main()
