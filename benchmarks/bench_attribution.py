"""Attribution runtimes: UABackprop vs its references, our IG vs Captum's, per-image method costs.

Run: ``.venv/bin/python benchmarks/bench_attribution.py [--batch 100] [--repeats 3]``

1. UABackprop (batch 100, S = 5 MNIST CNNs, C = 10) against
   * the literal per-(s, i) loop (one forward and one backward per sample and class), and
   * the floor of any exact method: per member one forward plus C backward passes to the input.
2. UncertaintyIntegratedGradients vs Captum's IntegratedGradients on a plain loop-entropy
   forward (a hand-written module: members in a Python loop, naive entropy), 50 steps.
3. Per-image runtime of UABackprop, Blur IG (100 steps), SmoothGrad (50 samples) and IG
   (100 steps) side by side (Wang et al. Table 6's comparison).
Medians of ``--repeats`` runs after a warm-up; members have random weights (runtime does not
depend on training).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import Tensor, nn

from captum_uncertainty import UncertaintyForward
from captum_uncertainty.attr.blur_ig import BlurIntegratedGradients
from captum_uncertainty.attr.integrated_gradients import UncertaintyIntegratedGradients
from captum_uncertainty.attr.ua_backprop import UABackprop
from captum_uncertainty.data import MNISTCNN


def median_time(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def literal_loop(members: List[nn.Module], x: Tensor) -> None:
    """One forward and one backward per (sample, class): the per-(s, i) reading of Eq. 9-10."""
    for member in members:
        for i in range(10):
            point = x.clone().requires_grad_()
            torch.autograd.grad(member(point)[:, i].sum(), point)


def floor(members: List[nn.Module], x: Tensor) -> None:
    """Per member: one forward, then C backward passes to the input."""
    for member in members:
        point = x.clone().requires_grad_()
        z = member(point)
        for i in range(10):
            torch.autograd.grad(z[:, i].sum(), point, retain_graph=i < 9)


class LoopEntropy(nn.Module):
    """The obvious alternative: members in a loop, entropy of the mean written naively."""

    def __init__(self, members: List[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        p = torch.stack([torch.softmax(m(x), dim=1) for m in self.members]).mean(0)
        return -(p * torch.log(p + 1e-12)).sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    members = [MNISTCNN().eval() for _ in range(5)]
    x = torch.rand(args.batch, 1, 28, 28)
    uf = UncertaintyForward(members, measure="epistemic")
    ua = UABackprop(uf)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, S = 5, C = 10\n")

    t_literal = median_time(lambda: literal_loop(members, x), args.repeats)
    t_floor = median_time(lambda: floor(members, x), args.repeats)
    print("| UABackprop variant | seconds | literal loop / ours | ours / floor |")
    print("|---|---|---|---|")
    print(f"| literal per-(s, i) loop (grad only) | {t_literal:.2f} | | |")
    print(f"| floor: 1 forward + C backward per member | {t_floor:.2f} | | |")
    for path in ("grad", "inputgrad", "fullgrad"):
        t = median_time(lambda path=path: ua.attribute(x, path=path), args.repeats)
        print(f"| UABackprop path={path} | {t:.2f} | {t_literal / t:.2f} | {t / t_floor:.2f} |")
    t = median_time(lambda: ua.attribute(x, path="fullgrad", decompose=True), args.repeats)
    print(f"| UABackprop path=fullgrad, decompose=True | {t:.2f} | {t_literal / t:.2f} | {t / t_floor:.2f} |")

    small = x[:32]
    t_captum = median_time(lambda: IntegratedGradients(LoopEntropy(members)).attribute(small, n_steps=50), args.repeats)
    t_ours = median_time(lambda: UncertaintyIntegratedGradients(uf).attribute(small, n_steps=50), args.repeats)
    t_dec = median_time(
        lambda: UncertaintyIntegratedGradients(uf).attribute(small, n_steps=50, decompose=True), args.repeats
    )
    print("\n| IG of epistemic uncertainty, batch 32, 50 steps | seconds | ratio to Captum IG on loop entropy |")
    print("|---|---|---|")
    print(f"| Captum IntegratedGradients(LoopEntropy) (total) | {t_captum:.2f} | 1.00 |")
    print(f"| UncertaintyIntegratedGradients | {t_ours:.2f} | {t_ours / t_captum:.2f} |")
    print(f"| UncertaintyIntegratedGradients, decompose=True (3 maps) | {t_dec:.2f} | {t_dec / t_captum:.2f} |")

    images = x[:20]
    per_image = {
        "UA-Backprop (fullgrad)": lambda: ua.attribute(images),
        "Blur IG (100 steps)": lambda: BlurIntegratedGradients(uf).attribute(
            images, n_steps=100, internal_batch_size=500
        ),
        "SmoothGrad (50 samples)": lambda: NoiseTunnel(Saliency(uf)).attribute(
            images, nt_type="smoothgrad", nt_samples=50, nt_samples_batch_size=10, stdevs=0.1
        ),
        "IG (100 steps)": lambda: UncertaintyIntegratedGradients(uf).attribute(
            images, n_steps=100, internal_batch_size=500
        ),
    }
    times = {name: median_time(run, args.repeats) / images.shape[0] for name, run in per_image.items()}
    base = times["UA-Backprop (fullgrad)"]
    print("\n| method (20 images) | ms / image | ratio to UA-Backprop |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {1000 * seconds:.1f} | {seconds / base:.1f} |")


if __name__ == "__main__":
    main()
