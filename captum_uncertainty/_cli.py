"""Command line: ``python -m captum_uncertainty demo|benchmark|attribute``.

* ``demo``: train (or load the cached) 5-CNN ensemble on bundled MNIST, print its test accuracy
  and the ten most epistemically uncertain test digits with their three uncertainties, save a
  picture of them with their posterior predictive histograms, then run the quick benchmark.
* ``benchmark``: every attribution method on the most uncertain test digits, scored with the
  papers' metrics; writes ``results.md`` and a self-contained ``report.html``.
* ``attribute``: explain every test digit of a bundled data set with one method and write the
  maps, uncertainties and predictions as Parquet shards (:func:`captum_uncertainty.attribute_dataset`).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from captum_uncertainty._validation import check_choice
from captum_uncertainty.forward import UncertaintyForward

__all__ = ["bundled_posterior", "import_posterior", "main"]


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments end the program with one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _plain_text(rst: str) -> str:
    """An RST docstring as terminal text: roles (``:func:`x```) and literals (````x````) lose their markup."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", rst)
    return text.replace("``", "")


def _build_parser() -> _OneLineParser:
    parser = _OneLineParser(
        prog="captum_uncertainty",
        description=_plain_text(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    demo = commands.add_parser(
        "demo", help="train the bundled ensemble, show its most uncertain digits, quick benchmark"
    )
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    demo.add_argument("--members", type=_positive_int, default=5, help="ensemble size (default: 5)")
    demo.add_argument("--no-benchmark", action="store_true", help="skip the quick benchmark")

    bench = commands.add_parser("benchmark", help="run every attribution method and the papers' metrics")
    bench.add_argument("--out", type=Path, default=Path("out/benchmark"), help="output folder (default: out/benchmark)")
    bench.add_argument("--quick", action="store_true", help="a run of a few minutes (fewer images and steps)")
    bench.add_argument("--images", type=_positive_int, default=None, help="number of most uncertain test images")
    bench.add_argument("--members", type=_positive_int, default=5, help="ensemble size (default: 5)")
    bench.add_argument("--methods", default=None, help="comma-separated subset of methods (default: all)")
    bench.add_argument("--seed", type=int, default=0, help="seed for data split, training and random maps")
    bench.add_argument(
        "--recipe",
        choices=("adam", "wang"),
        default="adam",
        help="ensemble training: 'adam' (default: Adam 1e-3, 5 epochs) or 'wang' (Wang et al. App. B.1: SGD 0.1, "
        "momentum 0.9, 30 epochs)",
    )
    bench.add_argument(
        "--vae-epochs",
        type=_positive_int,
        default=None,
        help="training epochs of the VAE the counterfactual methods use (default: 20, quick 5; the paper: 50)",
    )
    bench.add_argument(
        "--vae-latent-sizes",
        default=None,
        help="comma-separated latent sizes: run the VAE-sensitivity study (Perez supplement Table 1) instead",
    )
    bench.add_argument(
        "--reading",
        choices=("ours", "reference"),
        default="ours",
        help="with --vae-latent-sizes: 'reference' runs CounterfactualPathIG and the URC / EIC in our and in the "
        "Featurespace reference code's reading on digits above the median uncertainty",
    )
    _add_attribute_command(commands)
    return parser


def _add_attribute_command(commands: "argparse._SubParsersAction") -> None:
    from captum_uncertainty.dataset import ENGINES
    from captum_uncertainty.forward import MEASURES

    attribute = commands.add_parser(
        "attribute", help="attribute every test input with one method, write Parquet shards (resumable)"
    )
    attribute.add_argument(
        "--posterior",
        default="captum_uncertainty._cli:bundled_posterior",
        metavar="MODULE:FUNCTION",
        help="function returning an UncertaintyForward, called with no arguments "
        "(default: the bundled 5-CNN MNIST ensemble, captum_uncertainty._cli:bundled_posterior)",
    )
    attribute.add_argument(
        "--data",
        choices=("mnist", "digits"),
        default="mnist",
        help="test split to explain: bundled MNIST (28x28) or scikit-learn digits (8x8)",
    )
    attribute.add_argument(
        "--method",
        choices=tuple(_METHODS),
        default="ua_backprop",
        help=(
            "attribution method (default: ua_backprop). ua_backprop runs UABackprop with path='inputgrad', not "
            "the library's default path='fullgrad': --posterior may name any model, and FullGrad refuses models "
            "with layers whose biases it cannot read (LayerNorm, GroupNorm, recurrent layers)"
        ),
    )
    attribute.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (re-run to resume)")
    attribute.add_argument("--engine", choices=ENGINES, default="local", help="local process or Ray Data")
    attribute.add_argument(
        "--batch-size", type=_positive_int, default=64, metavar="N", help="inputs per batch and per shard (default: 64)"
    )
    attribute.add_argument(
        "--limit", type=_positive_int, default=None, metavar="N", help="explain only the first N test inputs"
    )
    attribute.add_argument(
        "--measure",
        choices=MEASURES,
        default=None,
        help="uncertainty to explain (default: the posterior's own measure)",
    )


def _run_attribute(
    posterior: str,
    data: str,
    method: str,
    out: Path,
    engine: str,
    batch_size: int,
    limit: Optional[int],
    measure: Optional[str],
) -> None:
    from torch.utils.data import TensorDataset

    from captum_uncertainty.data import load_digits, load_mnist
    from captum_uncertainty.dataset import attribute_dataset

    if os.getcwd() not in sys.path:  # MODULE:FUNCTION is looked up from the working directory, as uvicorn does
        sys.path.insert(0, os.getcwd())
    # the Ray workers build their own explainer from the factory; locally it is built once here
    if engine == "ray":
        explainer = _explainer_factory(posterior, method, measure)
    else:
        explainer = _posterior_explainer(posterior, method, measure)
    inputs = (load_mnist() if data == "mnist" else load_digits()).x_test[:limit]
    kwargs = _METHODS[method][1]
    result = attribute_dataset(explainer, TensorDataset(inputs), out, batch_size=batch_size, engine=engine, **kwargs)
    print(
        f"{result.num_inputs} inputs in {result.out}: {result.shards_written} shards written, "
        f"{result.shards_skipped} already there"
    )


def _run_demo(out: Path, members: int, benchmark: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from captum_uncertainty import UncertaintyForward
    from captum_uncertainty.data import accuracy, load_mnist, train_ensemble
    from captum_uncertainty.visualization import plot_posterior_predictive

    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist()
    ensemble = train_ensemble(n_members=members, data=data)
    uf = UncertaintyForward(ensemble, measure="epistemic")
    print(f"test accuracy of the {members}-member ensemble: {accuracy(ensemble, data.x_test, data.y_test):.4f}")
    with torch.no_grad():
        decomposition = uf.decompose(data.x_test)
        top = decomposition.epistemic.argsort(descending=True)[:10]
        predictive = uf.predictive(data.x_test[top])
    print("the ten most epistemically uncertain test digits (nats):")
    print(f"{'index':>6} {'label':>5} {'pred':>4} {'total':>7} {'aleatoric':>9} {'epistemic':>9}")
    predicted = predictive.mean(0).argmax(-1)
    for rank, index in enumerate(top.tolist()):
        print(
            f"{index:>6} {int(data.y_test[index]):>5} {int(predicted[rank]):>4} "
            f"{float(decomposition.total[index]):>7.3f} {float(decomposition.aleatoric[index]):>9.3f} "
            f"{float(decomposition.epistemic[index]):>9.3f}"
        )
    fig = plot_posterior_predictive(
        data.x_test[top],
        predictive,
        {name: getattr(decomposition, name)[top] for name in ("total", "aleatoric", "epistemic")},
    )
    picture = out / "most_uncertain_digits.png"
    fig.savefig(picture, dpi=120)
    print(f"saved {picture}")
    if benchmark:
        from captum_uncertainty.experiments.benchmark import run_benchmark

        run_benchmark(out / "benchmark", quick=True, members=members)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            _run_demo(args.out, args.members, benchmark=not args.no_benchmark)
        elif args.command == "attribute":
            _run_attribute(
                args.posterior, args.data, args.method, args.out, args.engine, args.batch_size, args.limit, args.measure
            )
        else:
            from captum_uncertainty.experiments.benchmark import BenchmarkConfig, run_benchmark, run_vae_study

            if args.reading == "reference":
                if not args.vae_latent_sizes:
                    raise ValueError("--reading reference is a VAE study: give --vae-latent-sizes too (e.g. 32)")
                from captum_uncertainty.experiments.reference_reading import run_reading_study

                run_reading_study(
                    args.out,
                    latent_sizes=_parse_ints(args.vae_latent_sizes),
                    seed=args.seed,
                    images=args.images or 50,
                    members=args.members,
                    vae_epochs=args.vae_epochs or 20,
                )
            elif args.vae_latent_sizes:
                sizes = BenchmarkConfig.quick() if args.quick else BenchmarkConfig()
                run_vae_study(
                    args.out,
                    latent_sizes=_parse_ints(args.vae_latent_sizes),
                    seed=args.seed,
                    images=args.images or sizes.images,
                    members=args.members,
                    vae_epochs=args.vae_epochs or sizes.vae_epochs,
                )
            else:
                methods: Optional[List[str]] = args.methods.split(",") if args.methods else None
                run_benchmark(
                    args.out,
                    quick=args.quick,
                    images=args.images,
                    members=args.members,
                    methods=methods,
                    seed=args.seed,
                    vae_epochs=args.vae_epochs,
                    recipe=args.recipe,
                )
    except ValueError as error:  # the library's validation errors: one line, like argparse's
        sys.stderr.write(f"captum_uncertainty: error: {error}\n")
        return 2
    # anything else is not the user's input: its traceback is shown
    return 0


def _parse_ints(text: str) -> List[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--vae-latent-sizes must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--vae-latent-sizes must be positive integers, got {text!r}")
    return values


def bundled_posterior() -> UncertaintyForward:
    """The demo's posterior: the cached 5-CNN ensemble on the bundled MNIST digits, epistemic.

    Trains it on the first call (a few minutes on a CPU), then loads it from ``.cache/``, as
    ``python -m captum_uncertainty demo`` does. The default ``--posterior`` of
    ``python -m captum_uncertainty attribute``.
    """
    from captum_uncertainty.data import load_mnist, train_ensemble

    return UncertaintyForward(train_ensemble(n_members=5, data=load_mnist()), measure="epistemic")


def import_posterior(spec: str) -> UncertaintyForward:
    """Import ``MODULE:FUNCTION`` (uvicorn's convention) and call it to get an UncertaintyForward.

    Args:
        spec (str): ``"package.module:function"``; the function takes no arguments.

    Returns:
        UncertaintyForward: what the function returned.

    Raises ``ValueError`` naming the problem: a malformed spec, a module that cannot be imported,
    a missing or non-callable attribute, or a result that is not an UncertaintyForward.
    """
    module_name, colon, attribute = str(spec).partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"--posterior must be MODULE:FUNCTION, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"--posterior {spec!r}: cannot import {module_name!r} ({error})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"--posterior {spec!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"--posterior {spec!r} is a {type(target).__name__}, not a function")
    forward = target()
    if not isinstance(forward, UncertaintyForward):
        raise ValueError(f"--posterior {spec!r} returned {type(forward).__name__}, not an UncertaintyForward")
    return forward


def _ua_backprop(forward: UncertaintyForward) -> Any:
    from captum_uncertainty.attr import UABackprop

    return UABackprop(forward)


def _integrated_gradients(forward: UncertaintyForward) -> Any:
    from captum_uncertainty.attr import UncertaintyIntegratedGradients

    return UncertaintyIntegratedGradients(forward)


def _saliency(forward: UncertaintyForward) -> Any:
    from captum.attr import Saliency

    return Saliency(forward)


def _blur_ig(forward: UncertaintyForward) -> Any:
    from captum_uncertainty.attr import BlurIntegratedGradients

    return BlurIntegratedGradients(forward)


#: The command line's ``--method`` choices: name -> (constructor, ``attribute`` arguments).
_METHODS: Dict[str, Tuple[Callable[[UncertaintyForward], Any], Dict[str, Any]]] = {
    "ua_backprop": (_ua_backprop, {"path": "inputgrad"}),
    "integrated_gradients": (_integrated_gradients, {}),
    "saliency": (_saliency, {}),
    "blur_ig": (_blur_ig, {}),
}


def _method_explainer(name: str, forward: UncertaintyForward) -> Tuple[Any, Dict[str, Any]]:
    """The attribution object of a :data:`_METHODS` name and its ``attribute`` arguments."""
    check_choice(name, "method", tuple(_METHODS))
    build, kwargs = _METHODS[name]
    return build(forward), dict(kwargs)


def _posterior_explainer(spec: str, method: str, measure: Optional[str] = None) -> Any:
    """Zero-argument-factory body for the command line's Ray workers (use with ``functools.partial``)."""
    forward = import_posterior(spec)
    if measure is not None:
        forward = forward.with_measure(measure)
    return _method_explainer(method, forward)[0]


def _explainer_factory(spec: str, method: str, measure: Optional[str] = None) -> Callable[[], Any]:
    """A picklable zero-argument factory building ``method`` on the posterior ``spec``."""
    return functools.partial(_posterior_explainer, spec, method, measure)
