"""Why UABackprop takes an ensemble's backward passes member by member: four orders of the same
gradients (one forward plus C backward passes per member, with FullGrad's layer-output gradients).

Run: ``.venv/bin/python benchmarks/bench_backward_order.py [--batch 100] [--samples 5] [--repeats 5]``

* ``member by member, graph freed`` (the floor of ``bench_ua_backprop.py``): per member one
  forward and C backward passes, the last one freeing the member's graph;
* ``all forwards first, graphs freed``: every member's forward first (each on its own input
  leaf), then member by member, each graph freed after its last pass (what UABackprop does);
* ``all forwards first, graphs kept``: the same, every graph kept to the end;
* ``class by class through all members``: the members read views of one input leaf and each
  pass takes one class through all of them at once (UABackprop's order before).

Random-weight :class:`captum_uncertainty.data.MNISTCNN` members, C = 10, 1 x 28 x 28 inputs.
Prints a markdown table of the best of ``--repeats`` interleaved runs after one warm-up. Not a test.
"""

from __future__ import annotations

import argparse
from typing import List

import torch
from bench_ua_backprop import best_seconds, floor
from torch import Tensor, nn

from captum_uncertainty.attr._utils.gradients import captured_layer_outputs
from captum_uncertainty.data import MNISTCNN

CLASSES = 10


def all_forwards_first(members: List[nn.Module], x: Tensor, free: bool) -> None:
    with torch.enable_grad(), captured_layer_outputs(members) as records:
        leaves = [x.clone().requires_grad_(True) for _ in members]
        logits = [member(leaf) for member, leaf in zip(members, leaves)]
        per_member = len(records) // len(members)
        for s, leaf in enumerate(leaves):
            wrt = [leaf] + [r.output for r in records[s * per_member : (s + 1) * per_member]]
            for i in range(CLASSES):
                keep = not free or i + 1 < CLASSES
                torch.autograd.grad(logits[s][:, i].sum(), wrt, retain_graph=keep)


def class_by_class(members: List[nn.Module], x: Tensor) -> None:
    points = x.unsqueeze(0).expand((len(members),) + tuple(x.shape)).clone().requires_grad_(True)
    with torch.enable_grad(), captured_layer_outputs(members) as records:
        logits = torch.stack([member(points[s]) for s, member in enumerate(members)])
        wrt = [points] + [r.output for r in records]
        for i in range(CLASSES):
            torch.autograd.grad(logits[..., i].sum(), wrt, retain_graph=i + 1 < CLASSES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    members = [MNISTCNN().eval() for _ in range(args.samples)]
    x = torch.rand(args.batch, 1, 28, 28)
    seconds = best_seconds(
        {
            "member by member, graph freed (the floor)": lambda: floor(members, x, "fullgrad", CLASSES),
            "all forwards first, graphs freed (UABackprop)": lambda: all_forwards_first(members, x, free=True),
            "all forwards first, graphs kept": lambda: all_forwards_first(members, x, free=False),
            "class by class through all members (before)": lambda: class_by_class(members, x),
        },
        args.repeats,
    )
    bottom = min(seconds.values())
    print(f"batch {args.batch}, S = {args.samples}, C = {CLASSES}, {torch.get_num_threads()} threads (s)\n")
    print("| order | seconds | / fastest |\n|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} | {value / bottom:.2f}x |")


if __name__ == "__main__":
    main()
