"""Command line: ``python -m captum_uncertainty demo|benchmark|attribute``.

* ``demo``: train (or load the cached) 5-CNN ensemble on bundled MNIST, print its test accuracy
  and the ten most epistemically uncertain test digits with their three uncertainties, save a
  picture of them with their posterior predictive histograms, then run the quick benchmark.
* ``benchmark``: every attribution method on the most uncertain test digits, scored with the
  papers' metrics; writes ``results.md`` and a self-contained ``report.html``.
* ``attribute``: explain every input of a data set (a bundled test split, a tensor or array
  file, a CSV or Parquet table, an image folder, or ``MODULE:FUNCTION``) with one method and write
  the maps, uncertainties and predictions as Parquet shards
  (:func:`captum_uncertainty.attribute_dataset`), with the inputs' ids, labels and feature names.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

from torch import Tensor

from captum_uncertainty._cli_data import CliData, imported_function, load_cli_data, load_tensor_file
from captum_uncertainty._methods import COMMAND_LINE_METHODS, methods_taking
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
    from captum_uncertainty.dataset import SUPPORTED_ENGINES
    from captum_uncertainty.forward import MEASURES

    attribute = commands.add_parser(
        "attribute", help="attribute every input of a data set with one method, write Parquet shards (resumable)"
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
        default="mnist",
        metavar="DATA",
        help=(
            "inputs to explain (default: mnist): 'mnist' or 'digits' (the bundled test splits, 28x28 and 8x8); a "
            ".pt file (a tensor, or a dict with key 'inputs' or 'x'), .npy or .npz file (key 'inputs' or 'x', else "
            "its only array); a .csv or .parquet table whose numeric columns are the features; an image folder "
            "with one sub-folder per class (torchvision's ImageFolder); or MODULE:FUNCTION returning a "
            "torch Dataset, a tensor or an array. The inputs are cast to the posterior's floating dtype"
        ),
    )
    attribute.add_argument(
        "--id", default=None, metavar="COLUMN", help="table column of input ids, carried to the output (not a feature)"
    )
    attribute.add_argument(
        "--label", default=None, metavar="COLUMN", help="table column of labels, carried to the output (not a feature)"
    )
    attribute.add_argument("--grayscale", action="store_true", help="image folder: convert the images to one channel")
    attribute.add_argument(
        "--method",
        choices=tuple(COMMAND_LINE_METHODS),
        default="ua_backprop",
        help=(
            "attribution method (default: ua_backprop). ua_backprop runs UABackprop with path='auto': the "
            "library's default path='fullgrad' where it reads every bias of an image model, else path='inputgrad' "
            "(FullGrad refuses layers whose biases it cannot read: LayerNorm, GroupNorm, recurrent layers), because "
            "on the known-cause benchmark FullGrad put more of its map on the cause than InputGrad "
            "(benchmarks/RESULTS.md, 'Ground truth'). "
            "integrated_gradients and uig run UncertaintyIntegratedGradients; blur_ig BlurIntegratedGradients; "
            "guided_ig GuidedIntegratedGradients; captum_integrated_gradients, saliency, kernel_shap and lime "
            "Captum's classes (lime with a ridge surrogate; kernel_shap and lime with Captum's 25 samples per input)"
        ),
    )
    attribute.add_argument(
        "--n-steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"integration steps, for {', '.join(methods_taking('n_steps'))} (default: the method's)",
    )
    attribute.add_argument(
        "--baseline",
        default=None,
        metavar="BASELINE",
        help=f"reference input, for {', '.join(methods_taking('baselines'))}: 'zeros', 'mean' (the data's mean "
        "input), a number, or a .pt/.npy file holding one input (shared by all) or one per input of the data "
        "(default: the method's)",
    )
    attribute.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (re-run to resume)")
    attribute.add_argument("--engine", choices=SUPPORTED_ENGINES, default="local", help="local process or Ray Data")
    attribute.add_argument(
        "--batch-size", type=_positive_int, default=64, metavar="N", help="inputs per batch and per shard (default: 64)"
    )
    attribute.add_argument(
        "--limit", type=_positive_int, default=None, metavar="N", help="explain only the first N inputs"
    )
    attribute.add_argument(
        "--measure",
        choices=MEASURES,
        default=None,
        help="uncertainty to explain (default: the posterior's own measure)",
    )


def _run_attribute(args: argparse.Namespace) -> None:
    from torch.utils.data import TensorDataset

    from captum_uncertainty.dataset import attribute_dataset

    method = COMMAND_LINE_METHODS[args.method]
    for option, name, given in (("--n-steps", "n_steps", args.n_steps), ("--baseline", "baselines", args.baseline)):
        if given is not None and name in method.refuses:
            raise ValueError(f"{option} does not apply to --method {args.method}: {method.refuses[name]}")
    _check_baseline_spec(args.baseline)
    if os.getcwd() not in sys.path:  # MODULE:FUNCTION is looked up from the working directory, as uvicorn does
        sys.path.insert(0, os.getcwd())
    data = _load_data(args.data, args.id, args.label, args.grayscale)
    forward = _load_forward(args.posterior, args.measure)
    every_input = _as_posterior_dtype(data.inputs, forward)
    inputs = every_input[: args.limit]
    _check_posterior_runs(forward, inputs)
    kwargs = dict(method.kwargs)
    if args.n_steps is not None:
        kwargs["n_steps"] = args.n_steps
    rows: Optional[Dict[bytes, int]] = None
    if args.baseline is not None:
        kwargs["baselines"], rows = _baselines(args.baseline, every_input, inputs)
    explainer: Any = _method_explainer(args.method, forward, rows)[0]
    has_delta = getattr(explainer, "has_convergence_delta", None)
    if callable(has_delta) and has_delta():  # stored with U(x') so completeness can be checked from the file
        kwargs["return_convergence_delta"] = True
    if args.engine == "ray":  # the Ray workers build their own explainer from the factory
        factory = functools.partial(_posterior_explainer, args.posterior, args.method, args.measure, rows)
        explainer = _PrebuiltFactory(factory, explainer)
    with warnings.catch_warnings():  # what Captum's Lime says of every batch: attribute_dataset batches on purpose
        warnings.filterwarnings("ignore", "You are providing multiple inputs for Lime", UserWarning)
        result = attribute_dataset(
            explainer, TensorDataset(inputs), args.out, batch_size=args.batch_size, engine=args.engine, **kwargs
        )
    head = slice(None, args.limit)
    result.annotate(
        ids=None if data.ids is None else data.ids[head],
        labels=None if data.labels is None else data.labels[head],
        feature_names=data.feature_names,
    )
    print(
        f"{result.num_inputs} inputs in {result.out}: {result.shards_written} shards written, "
        f"{result.shards_skipped} already there"
    )


def _load_data(spec: str, id_column: Optional[str], label_column: Optional[str], grayscale: bool) -> CliData:
    """:func:`~captum_uncertainty._cli_data.load_cli_data`; its warnings (ignored table columns) as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_cli_data(spec, id_column, label_column, grayscale)
    for warning in caught:
        sys.stderr.write(f"captum_uncertainty: note: {warning.message}\n")
    return data


def _load_forward(spec: str, measure: Optional[str]) -> UncertaintyForward:
    forward = import_posterior(spec)
    return forward if measure is None else forward.with_measure(measure)


def _as_posterior_dtype(inputs: Tensor, forward: UncertaintyForward) -> Tensor:
    """The inputs in the floating dtype of the posterior's parameters (numpy writes float64 by default)."""
    from captum_uncertainty.posterior import first_parameter

    reference = first_parameter(forward.posterior.sample_modules())
    if reference is None or not reference.is_floating_point() or inputs.dtype == reference.dtype:
        return inputs
    return inputs.to(reference.dtype)


def _check_posterior_runs(forward: UncertaintyForward, inputs: Tensor) -> None:
    """Run the posterior on the first input: a data / model mismatch is one line naming both, not a traceback."""
    import torch

    from captum_uncertainty.dataset._explainers import model_device

    try:
        with torch.no_grad():
            forward(inputs[:1].to(model_device(forward)))
    except Exception as error:  # whatever the user's model raises on inputs it does not take
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise ValueError(
            f"data inputs have shape {tuple(inputs.shape)} but the posterior failed on them: {first}"
        ) from None


def _check_baseline_spec(spec: Optional[str]) -> None:
    """Refuse a malformed ``--baseline`` before the data and the posterior are loaded."""
    if spec is None or spec in ("zeros", "mean") or _number(spec) is not None:
        return
    path = Path(spec)
    if path.suffix.lower() not in (".pt", ".pth", ".npy") or not path.is_file():
        raise ValueError(f"--baseline {spec}: expected 'zeros', 'mean', a number or an existing .pt or .npy file")


def _number(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None


def _baselines(spec: str, every_input: Tensor, inputs: Tensor) -> Tuple[Any, Optional[Dict[bytes, int]]]:
    """The ``baselines`` argument of ``--baseline``; with one baseline per input, also each input's row.

    ``every_input`` is the whole data (the mean and a file of the data's shape refer to it),
    ``inputs`` its first ``--limit`` rows. ``attribute_dataset`` passes the same arguments to
    every batch, so baselines of the data's shape are passed whole and each batch picks its rows
    by the inputs' bytes (:class:`_RowBaselines`).
    """
    if spec == "zeros":
        return 0.0, None
    if spec == "mean":
        return every_input.mean(0, keepdim=True), None
    number = _number(spec)
    if number is not None:
        return number, None
    baseline = load_tensor_file(spec, "--baseline").to(inputs.dtype)
    one = tuple(every_input.shape[1:])
    if tuple(baseline.shape) in (one, (1,) + one):
        return baseline.reshape((1,) + one), None
    if tuple(baseline.shape) != tuple(every_input.shape):
        raise ValueError(
            f"--baseline {spec} has shape {tuple(baseline.shape)}; expected one input's shape {one} or the data's "
            f"shape {tuple(every_input.shape)}"
        )
    baseline = baseline[: len(inputs)].contiguous()
    return baseline, _baseline_rows(inputs, baseline, spec)


def _baseline_rows(inputs: Tensor, baselines: Tensor, spec: str) -> Dict[bytes, int]:
    """The row of every input, by the sha256 of its bytes; identical inputs must have identical baselines."""
    from captum_uncertainty.dataset._shards import input_row_digests

    rows: Dict[bytes, int] = {}
    for row, digest in enumerate(input_row_digests(inputs)):
        key = digest.tobytes()
        first = rows.setdefault(key, row)
        if first != row and not bool((baselines[first] == baselines[row]).all()):
            raise ValueError(
                f"--baseline {spec}: inputs {first} and {row} are identical but their baselines differ, so a batch "
                "cannot tell which baseline is whose"
            )
    return rows


class _RowBaselines:
    """Mixin of an attribution class: ``baselines`` of the whole data's shape, cut to the batch's rows."""

    _baseline_rows: Dict[bytes, int]

    def attribute(self, inputs: Tensor, *args: Any, **kwargs: Any) -> Any:
        from captum_uncertainty.dataset._shards import input_row_digests

        baselines = kwargs.pop("baselines")
        rows = [self._baseline_rows.get(digest.tobytes()) for digest in input_row_digests(inputs)]
        if any(row is None for row in rows):
            raise ValueError("an input is not a row of the data whose baselines were given (--baseline)")
        picked = baselines[cast(List[int], rows)].to(device=inputs.device, dtype=inputs.dtype)
        return cast(Any, super()).attribute(inputs, *args, baselines=picked, **kwargs)


def _with_row_baselines(explainer: Any, rows: Dict[bytes, int]) -> Any:
    """``explainer`` taking baselines of the data's shape; its class keeps its name (the manifest records it)."""
    base = type(explainer)
    explainer.__class__ = type(base.__name__, (_RowBaselines, base), {"__qualname__": base.__qualname__})
    explainer._baseline_rows = rows
    return explainer


class _PrebuiltFactory:
    """The Ray engine's explainer factory: its first call in this process returns the explainer built
    for the checks (the posterior is loaded once on the driver); the workers, which receive it
    pickled without that explainer, build their own."""

    def __init__(self, factory: Callable[[], Any], built: Any) -> None:
        self.factory = factory
        self.built = built

    def __call__(self) -> Any:
        built, self.built = self.built, None
        return self.factory() if built is None else built

    def __getstate__(self) -> Dict[str, Any]:
        return {"factory": self.factory, "built": None}


def _run_demo(out: Path, members: int, benchmark: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")

    from captum_uncertainty import Categorical, UncertaintyForward
    from captum_uncertainty.data import load_mnist, train_ensemble
    from captum_uncertainty.experiments.benchmark import BenchmarkConfig, labelled_pass
    from captum_uncertainty.visualization import plot_posterior_predictive

    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist()
    epochs = BenchmarkConfig.quick().epochs  # the quick benchmark below explains the same ensemble
    ensemble = train_ensemble(n_members=members, data=data, epochs=epochs)
    uf = UncertaintyForward(ensemble, measure="epistemic", likelihood=Categorical("logits"))
    # one pass of the members over the test digits gives everything printed
    decomposition, probabilities, test_accuracy = labelled_pass(uf, data.x_test, data.y_test)
    print(f"test accuracy of the {members}-member ensemble ({epochs} epochs): {test_accuracy:.4f}")
    top = decomposition.epistemic.argsort(descending=True)[:10]
    predictive = probabilities[:, top]
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
            _run_attribute(args)
        else:
            from captum_uncertainty.experiments.benchmark import BenchmarkConfig, run_benchmark
            from captum_uncertainty.experiments.vae_study import run_vae_study

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
    forward = imported_function(f"--posterior {spec!r}", module_name, attribute)()
    if not isinstance(forward, UncertaintyForward):
        raise ValueError(f"--posterior {spec!r} returned {type(forward).__name__}, not an UncertaintyForward")
    return forward


def _method_explainer(
    name: str, forward: UncertaintyForward, baseline_rows: Optional[Dict[bytes, int]] = None
) -> Tuple[Any, Dict[str, Any]]:
    """The attribution object of a ``--method`` name (:data:`~captum_uncertainty._methods.COMMAND_LINE_METHODS`)
    and its fixed ``attribute`` arguments.

    ``baseline_rows`` (inputs' digest -> row) makes it take baselines of the whole data's shape.
    """
    check_choice(name, "method", tuple(COMMAND_LINE_METHODS))
    method = COMMAND_LINE_METHODS[name]
    explainer = method.build(forward)
    if baseline_rows is not None:
        explainer = _with_row_baselines(explainer, baseline_rows)
    return explainer, dict(method.kwargs)


def _posterior_explainer(
    spec: str, method: str, measure: Optional[str] = None, baseline_rows: Optional[Dict[bytes, int]] = None
) -> Any:
    """Zero-argument-factory body for the command line's Ray workers (use with ``functools.partial``)."""
    return _method_explainer(method, _load_forward(spec, measure), baseline_rows)[0]
