"""UABackprop runtime against a literal per-(s, i) loop and against the gradient floor.

Run: ``.venv/bin/python benchmarks/bench_ua_backprop.py [--batch 100] [--samples 5] [--repeats 3]``

Setting: ``--batch`` MNIST-size images (1 x 28 x 28), a deep ensemble of ``--samples``
:class:`captum_uncertainty.data.MNISTCNN` members with random weights (runtime does not depend on
training), C = 10 classes, epistemic uncertainty. For the ``grad`` and ``fullgrad`` paths:

* ``UABackprop, classes_per_pass=1`` (default): C backward passes, each through all S members and
  N inputs at once;
* ``UABackprop, classes_per_pass=None``: one ``is_grads_batched`` backward for all C classes;
* ``literal (s, i) loop``: for every member s and class i, one forward and one
  ``torch.autograd.grad`` of ``z_i^s`` (batched over the N inputs only), then the same
  post-processing (the straightforward reading of Algorithm 1);
* ``floor``: per member one forward plus C backward passes, no post-processing at all: the cost
  of the gradients any exact implementation needs (for ``fullgrad`` the backward passes also
  return the conv / BatchNorm output gradients).

Prints a markdown table of the best of ``--repeats`` interleaved runs after one warm-up. Not a test.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Callable, Dict, List

import torch
from torch import Tensor, nn

from captum_uncertainty.attr._utils.gradients import captured_layer_outputs, fullgrad_saliency
from captum_uncertainty.attr._utils.ua_backprop import logit_uncertainties, pixel_distribution
from captum_uncertainty.attr.ua_backprop import UABackprop
from captum_uncertainty.data import MNISTCNN
from captum_uncertainty.forward import UncertaintyForward

TAU1, TAU2 = 0.08, 0.3


def best_seconds(methods: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Best-of-``repeats`` wall time of each method after one warm-up, runs interleaved
    round-robin so that load from other processes on a shared CPU hits every method alike."""
    times: Dict[str, List[float]] = {name: [] for name in methods}
    for round_index in range(repeats + 1):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            if round_index:
                times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def literal_loop(members: List[nn.Module], x: Tensor, path: str) -> Tensor:
    """Algorithm 1 one (s, i) pair at a time: S * C forwards and S * C backward passes."""
    with torch.no_grad():
        logits = torch.stack([m(x) for m in members])
    shares = logit_uncertainties(logits, TAU1, True, ("epistemic",))[0]  # (S, N, C)
    result = torch.zeros((x.shape[0], 1) + tuple(x.shape[2:]))
    for s, member in enumerate(members):
        for i in range(logits.shape[-1]):
            point = x.clone().requires_grad_(True)
            with torch.enable_grad(), captured_layer_outputs([member] if path == "fullgrad" else []) as records:
                z = member(point)[:, i].sum()
                grads = torch.autograd.grad(z, [point] + [r.output for r in records])
            if path == "fullgrad":
                terms = [r.bias_term(g) for r, g in zip(records, grads[1:])]
                relevance = fullgrad_saliency(grads[0] * x, terms, tuple(x.shape[2:]))
            else:
                relevance = grads[0]
            result += shares[s, :, i, None, None, None] * pixel_distribution(relevance, TAU2, True)
    return result / len(members)


def floor(members: List[nn.Module], x: Tensor, path: str, num_classes: int) -> None:
    """Per member: one forward, then C backward passes (input and layer-output gradients)."""
    for member in members:
        point = x.clone().requires_grad_(True)
        with torch.enable_grad(), captured_layer_outputs([member] if path == "fullgrad" else []) as records:
            z = member(point)
            wrt = [point] + [r.output for r in records]
            for i in range(num_classes):
                torch.autograd.grad(z[:, i].sum(), wrt, retain_graph=i + 1 < num_classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*batching rule.*")

    torch.manual_seed(0)
    members = [MNISTCNN().eval() for _ in range(args.samples)]
    x = torch.rand(args.batch, 1, 28, 28)
    uf = UncertaintyForward(members, measure="epistemic")
    explainer = UABackprop(uf)
    print(
        f"batch {args.batch}, S = {args.samples}, C = 10, MNISTCNN 1x28x28, "
        f"{torch.get_num_threads()} threads, best of {args.repeats} interleaved runs (s)\n"
    )
    print(
        "| path | UABackprop (classes_per_pass=1) | UABackprop (classes_per_pass=None) | literal (s, i) loop "
        "| floor | speed-up vs literal | UABackprop / floor | max abs diff vs literal |"
    )
    print("|---|---|---|---|---|---|---|---|")
    variants = {  # name: (attribute options, literal loop's path or None, floor's path)
        "grad": ({"path": "grad"}, "grad", "grad"),
        "inputgrad": ({"path": "inputgrad"}, None, "grad"),
        "fullgrad (default: raw Eq. 10)": ({"path": "fullgrad"}, None, "fullgrad"),
        "fullgrad (reference min-max)": (
            {"path": "fullgrad", "fullgrad_postprocess": "reference"},
            "fullgrad",
            "fullgrad",
        ),
    }
    for name, (options, literal_path, floor_path) in variants.items():
        methods = {
            "ours": lambda options=options: explainer.attribute(x, **options),
            "batched": lambda options=options: explainer.attribute(x, classes_per_pass=None, **options),
            "floor": lambda floor_path=floor_path: floor(members, x, floor_path, 10),
        }
        if literal_path:
            methods["literal"] = lambda literal_path=literal_path: literal_loop(members, x, literal_path)
        seconds = best_seconds(methods, args.repeats)
        ours, bottom = seconds["ours"], seconds["floor"]
        literal_cells = ["", "", ""]
        if literal_path:
            literal = seconds["literal"]
            difference = (explainer.attribute(x, **options) - literal_loop(members, x, literal_path)).abs().max().item()
            literal_cells = [f"{literal:.2f}", f"{literal / ours:.2f}x", f"{difference:.1e}"]
        cells = [
            name,
            f"{ours:.2f}",
            f"{seconds['batched']:.2f}",
            literal_cells[0],
            f"{bottom:.2f}",
            literal_cells[1],
            f"{ours / bottom:.2f}x",
            literal_cells[2],
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
