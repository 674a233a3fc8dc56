"""UABackprop runtime against a literal per-(s, i) loop and against the gradient floor.

Run: ``.venv/bin/python benchmarks/bench_ua_backprop.py [--model mnist|resnet18] [--classes 10]
[--batch 100] [--samples 5] [--repeats 3] [--warmup 1] [--n-steps 8] [--paths grad,...]``

Setting: ``--batch`` images, a deep ensemble of ``--samples`` members with random weights
(runtime does not depend on training), ``--classes`` classes, epistemic uncertainty. ``mnist``:
:class:`captum_uncertainty.data.MNISTCNN` on 1 x 28 x 28; ``resnet18``: torchvision's
``resnet18(num_classes=C)`` on 3 x 32 x 32 (eval mode, so BatchNorm is affine). Per path:

* ``UABackprop, classes_per_pass=1`` (default): C backward passes per member;
* ``UABackprop, classes_per_pass=None``: one ``is_grads_batched`` backward per member for all C
  classes (``--batched`` only; slower in every row measured);
* ``literal (s, i) loop`` (``grad`` and the reference FullGrad, ``--literal`` only): for every
  member s and class i, one forward and one ``torch.autograd.grad`` of ``z_i^s`` (batched over
  the N inputs only), then the same post-processing (the straightforward reading of Algorithm 1);
* ``floor``: per member one forward plus C backward passes, no post-processing at all: the cost
  of the gradients any exact implementation needs (for ``fullgrad`` the backward passes also
  return the conv / BatchNorm output gradients; for the path integrals one forward of all
  ``n_steps * N`` path points and C backward passes per member).

Prints a markdown table of the best of ``--repeats`` interleaved runs after ``--warmup`` warm-up
rounds. Not a test.
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


def best_seconds(methods: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> Dict[str, float]:
    """Best-of-``repeats`` wall time of each method after ``warmup`` rounds, runs interleaved
    round-robin so that load from other processes on a shared CPU hits every method alike."""
    times: Dict[str, List[float]] = {name: [] for name in methods}
    for round_index in range(repeats + warmup):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            if round_index >= warmup:
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


def path_floor(members: List[nn.Module], x: Tensor, num_classes: int, n_steps: int) -> None:
    """A path integral's floor: per member one forward of all ``n_steps * N`` points, C backward passes."""
    floor(members, x.repeat((n_steps,) + (1,) * (x.dim() - 1)), "grad", num_classes)


def make_members(model: str, num_classes: int, samples: int) -> List[nn.Module]:
    if model == "resnet18":
        from torchvision.models import resnet18

        return [resnet18(num_classes=num_classes).eval() for _ in range(samples)]
    return [MNISTCNN(num_classes=num_classes).eval() for _ in range(samples)]


#: name: (attribute options, literal loop's path or None, floor's path)
VARIANTS = {
    "grad": ({"path": "grad"}, "grad", "grad"),
    "inputgrad": ({"path": "inputgrad"}, None, "grad"),
    "fullgrad": ({"path": "fullgrad"}, None, "fullgrad"),
    "fullgrad_reference": ({"path": "fullgrad", "fullgrad_postprocess": "reference"}, "fullgrad", "fullgrad"),
    "integrated_gradients": ({"path": "integrated_gradients"}, None, "path"),
    "blur_integrated_gradients": ({"path": "blur_integrated_gradients"}, None, "path"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mnist", "resnet18"), default="mnist")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--n-steps", type=int, default=8, help="steps of the two path integrals")
    parser.add_argument("--paths", default=",".join(VARIANTS), help="comma-separated rows of " + ", ".join(VARIANTS))
    parser.add_argument("--literal", action="store_true", help="also time the literal (s, i) loop")
    parser.add_argument("--batched", action="store_true", help="also time classes_per_pass=None")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*batching rule.*")

    torch.manual_seed(0)
    members = make_members(args.model, args.classes, args.samples)
    shape = (3, 32, 32) if args.model == "resnet18" else (1, 28, 28)
    x = torch.rand((args.batch,) + shape)
    uf = UncertaintyForward(members, measure="epistemic")
    explainer = UABackprop(uf)
    print(
        f"{args.model} {'x'.join(map(str, shape))}, batch {args.batch}, S = {args.samples}, C = {args.classes}, "
        f"path integrals n_steps = {args.n_steps}, {torch.get_num_threads()} threads, best of {args.repeats} "
        f"interleaved runs after {args.warmup} warm-up (s)\n"
    )
    print(
        "| path | UABackprop (classes_per_pass=1) | UABackprop (classes_per_pass=None) | literal (s, i) loop "
        "| floor | speed-up vs literal | UABackprop / floor | max abs diff vs literal |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.paths.split(","):
        options, literal_path, floor_path = VARIANTS[name]
        if floor_path == "path":
            options = dict(options, n_steps=args.n_steps)
        methods: Dict[str, Callable[[], object]] = {"ours": lambda options=options: explainer.attribute(x, **options)}
        if args.batched:
            methods["batched"] = lambda options=options: explainer.attribute(x, classes_per_pass=None, **options)
        if floor_path == "path":
            methods["floor"] = lambda: path_floor(members, x, args.classes, args.n_steps)
        else:
            methods["floor"] = lambda floor_path=floor_path: floor(members, x, floor_path, args.classes)
        if literal_path and args.literal:
            methods["literal"] = lambda literal_path=literal_path: literal_loop(members, x, literal_path)
        seconds = best_seconds(methods, args.repeats, args.warmup)
        ours, bottom = seconds["ours"], seconds["floor"]
        literal_cells = ["", "", ""]
        if "literal" in seconds:
            literal = seconds["literal"]
            difference = (explainer.attribute(x, **options) - literal_loop(members, x, literal_path)).abs().max().item()
            literal_cells = [f"{literal:.2f}", f"{literal / ours:.2f}x", f"{difference:.1e}"]
        batched = f"{seconds['batched']:.2f}" if "batched" in seconds else ""
        cells = [name, f"{ours:.2f}", batched, literal_cells[0], f"{bottom:.2f}", literal_cells[1]]
        cells += [f"{ours / bottom:.2f}x", literal_cells[2]]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
