"""The main job: every attribution method on the most uncertain MNIST digits, scored as in the papers.

``python -m captum_uncertainty benchmark [--quick] --out DIR`` trains (or loads the cached)
5-CNN ensemble on the bundled MNIST digits, takes the most epistemically uncertain test images
(100 in the full run, as Wang et al. App. B.2.1 do for MNIST), explains their epistemic
uncertainty with every method, and writes ``DIR/results.md`` and a self-contained
``DIR/report.html`` (URR curves, example maps, aleatoric vs epistemic panels).

Scores per method: blurring-test MURR / AUC-URR at 2% and 5% of the pixels (Wang et al.
Sec. 5.2.1) in the paper's reading (each image's sigma chosen with the map's budgeted pixels
blurred, ``sigma_selection="final"``), MURR in the map-independent reading, the library's
default (``sigma_selection="full"``: sigma from the fully blurred image, the same perturbation
for every map; the results say how many images have no lowering blur), Perez et al.'s
Uncertainty Reduction Curve at 1% / 5% and Area over the Entropy Information Curve,
anomaly-localisation IoU / ADA (Wang et al. App. C, 9x9 patches at 28x28), and the runtime
per image on this machine's CPU.
"""

from __future__ import annotations

import base64
import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from captum_uncertainty._methods import (
    as_map,
    build_blur_ig,
    build_guided_ig,
    build_integrated_gradients,
    build_lime,
    build_saliency,
    build_ua_backprop,
    clue_map,
    in_class_path_map,
    pixel_blocks,
)
from captum_uncertainty._validation import check_choice
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.likelihoods import Categorical, Decomposition

if TYPE_CHECKING:
    from captum_uncertainty.generative import VAE

__all__ = [
    "BenchmarkConfig",
    "Context",
    "METHODS",
    "METRIC_BATCH",
    "benchmark_ensemble",
    "labelled_pass",
    "lime",
    "markdown_table",
    "no_blur_sentence",
    "run_benchmark",
    "seeded",
    "select_methods",
    "smoothgrad",
]


@dataclass
class BenchmarkConfig:
    """Sizes of one benchmark run; ``quick()`` is the few-minute version ``make demo`` uses."""

    images: int = 100
    anomaly_images: int = 100
    members: int = 5
    ig_steps: int = 100
    smoothgrad_samples: int = 50
    lime_samples: int = 500
    clue_iterations: int = 500
    vae_epochs: int = 20
    sigma_step: float = 0.2
    #: images (and anomaly images) of the rows in :data:`SLOW_METHODS`; ``None``: all of them
    slow_images: Optional[int] = None
    seed: int = 0
    methods: Optional[List[str]] = None
    recipe: str = "adam"
    #: training epochs of the ``"adam"`` recipe's members (``"wang"`` has its own 30); the quick
    #: run trains 4, so that ``make demo`` prints its first result within 45 s on 2 cores
    #: (``benchmarks/RESULTS.md``, "The quick run")
    epochs: int = 5

    @classmethod
    def quick(cls, **overrides: object) -> "BenchmarkConfig":
        config = cls(
            images=20,
            anomaly_images=20,
            ig_steps=32,
            smoothgrad_samples=10,
            lime_samples=100,
            clue_iterations=100,
            vae_epochs=5,
            sigma_step=1.0,
            epochs=4,
            slow_images=8,
        )
        for key, value in overrides.items():
            setattr(config, key, value)
        return config


@dataclass
class Context:
    """What methods may need besides the forward: training data and a lazily trained VAE."""

    config: BenchmarkConfig
    x_train: Tensor
    _vae: Optional["VAE"] = field(default=None, repr=False)

    def vae(self) -> "VAE":
        if self._vae is None:
            from captum_uncertainty.generative import load_or_train_vae

            self._vae = load_or_train_vae(
                self.x_train, latent_dim=32, epochs=self.config.vae_epochs, seed=self.config.seed
            )
        return self._vae


Explainer = Callable[[UncertaintyForward, Tensor, Context], Tensor]


def _ua_backprop(path: str, **options: Any) -> Explainer:
    def explain(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
        return build_ua_backprop(uf).attribute(x, path=path, n_steps=ctx.config.ig_steps, **options)

    return explain


def _grad(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return build_saliency(uf).attribute(x, abs=True)


def smoothgrad(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    from captum.attr import NoiseTunnel

    return NoiseTunnel(build_saliency(uf)).attribute(
        x, nt_type="smoothgrad", nt_samples=ctx.config.smoothgrad_samples, stdevs=0.1, abs=True
    )


def _fullgrad(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    from captum_uncertainty.attr import FullGrad

    return FullGrad(uf).attribute(x)


def _integrated_gradients(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return build_integrated_gradients(uf).attribute(x, baselines="white", n_steps=ctx.config.ig_steps)


def _blur_ig(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return build_blur_ig(uf).attribute(x, n_steps=ctx.config.ig_steps)


def _blur_ig_papers_setting(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    """Blur IG as the papers ran it (benchmark only): the reference code's finite-difference step
    of 1e-10 in sigma on float32 images, which rounds almost every pixel's path derivative to 0,
    and its largest sigma of 2 (ours: 6.25 on 28-pixel digits)."""
    return build_blur_ig(uf).attribute(x.float(), n_steps=ctx.config.ig_steps, max_sigma=2.0, grad_step=1e-10)


def _guided_ig(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return build_guided_ig(uf).attribute(x, n_steps=min(50, ctx.config.ig_steps))


def lime(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    """Captum's Lime on 2x2-pixel superpixels (quickshift needs scikit-image, which we do not ship).

    The surrogate is a ridge regression (alpha 1, the ``lime`` package's default; see
    :func:`~captum_uncertainty._methods.build_lime`): Captum's default Lasso zeroes every
    coefficient of an uncertainty of a few tenths of a nat, which leaves all-zero maps.
    """
    mask = pixel_blocks(x, 2).expand(x.shape[0], -1, -1, -1)
    lime_attr = build_lime(uf)
    return torch.cat(
        [
            lime_attr.attribute(x[i : i + 1], feature_mask=mask[i : i + 1], n_samples=ctx.config.lime_samples)
            for i in range(x.shape[0])
        ]
    )


def _clue(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return clue_map(uf, ctx.vae(), x, ctx.config.clue_iterations)


def _delta_clue(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    from captum_uncertainty.attr import DeltaCLUE

    return DeltaCLUE(uf, ctx.vae()).attribute(x, max_iterations=ctx.config.clue_iterations)


def _counterfactual_path_ig(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    return in_class_path_map(uf, ctx.vae(), x, min(50, ctx.config.ig_steps), ctx.config.clue_iterations)


def _random_map(uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    """Uniform noise maps (Wang et al. App. D.6), seeded."""
    generator = torch.Generator().manual_seed(ctx.config.seed)
    return torch.rand((x.shape[0], 1) + tuple(x.shape[2:]), generator=generator, device="cpu").to(x)


METHODS: Dict[str, Explainer] = {
    "UA-Backprop+FullGrad": _ua_backprop("fullgrad"),
    "UA-Backprop+FullGrad (reference min-max)": _ua_backprop("fullgrad", fullgrad_postprocess="reference"),
    "UA-Backprop+Grad": _ua_backprop("grad"),
    "UA-Backprop+InputGrad": _ua_backprop("inputgrad"),
    "UA-Backprop+IG": _ua_backprop("integrated_gradients"),
    "UA-Backprop+BlurIG": _ua_backprop("blur_integrated_gradients"),
    "Grad": _grad,
    "SmoothGrad": smoothgrad,
    "FullGrad": _fullgrad,
    "IG (white)": _integrated_gradients,
    "Blur IG": _blur_ig,
    "Blur IG (papers' setting: step 1e-10; max sigma 2)": _blur_ig_papers_setting,
    "Guided IG": _guided_ig,
    "LIME": lime,
    "CLUE": _clue,
    "delta-CLUE": _delta_clue,
    "CF-path IG": _counterfactual_path_ig,
    "Random": _random_map,
}

#: Images per forward call of the metrics: the 5-CNN ensemble runs 590 images/s in batches of
#: 256 on this project's 2-core CPU against 420-430 in batches of 1,024-2,048 (the metrics' default).
METRIC_BATCH = 256

#: Example images per method in the report (epistemic and aleatoric maps side by side).
EXAMPLES = 6

#: The rows that cost 0.3 s or more per image in the quick run, every other row 0.1 s or less
#: (``benchmarks/RESULTS.md``, "The quick run (`make demo`)"); ``BenchmarkConfig.slow_images``
#: caps their images, and the results say so in their ``images`` column.
SLOW_METHODS = {"UA-Backprop+IG", "UA-Backprop+BlurIG", "LIME", "delta-CLUE", "CF-path IG"}

#: Methods that need the VAE of :meth:`Context.vae`.
GENERATIVE_METHODS = {"CLUE", "delta-CLUE", "CF-path IG"}


def seeded(explain: Explainer, uf: UncertaintyForward, x: Tensor, ctx: Context) -> Tensor:
    """One method's maps, its random draws (SmoothGrad noise, LIME samples) seeded with the run's
    seed, so that a method's maps do not depend on which methods ran before it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.config.seed)
        return as_map(explain(uf, x, ctx))


def _timed(explain: Explainer, uf: UncertaintyForward, x: Tensor, ctx: Context):
    start = time.perf_counter()
    maps = seeded(explain, uf, x, ctx)
    return maps, (time.perf_counter() - start) / x.shape[0]


def _figure_to_data_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def select_methods(names: Optional[Sequence[str]]) -> Dict[str, Explainer]:
    """The chosen methods; ``--methods`` splits at commas, so no method name may hold one."""
    if names is None:
        return dict(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    return {n: METHODS[n] for n in names}


def run_benchmark(
    out: Path,
    quick: bool = False,
    images: Optional[int] = None,
    members: int = 5,
    methods: Optional[Sequence[str]] = None,
    seed: int = 0,
    config: Optional[BenchmarkConfig] = None,
    vae_epochs: Optional[int] = None,
    recipe: str = "adam",
) -> Dict[str, Dict[str, float]]:
    """Run the benchmark and write ``results.md`` and ``report.html`` into ``out``.

    Args:
        out (Path): output folder (created).
        quick (bool): the few-minute configuration (:meth:`BenchmarkConfig.quick`).
        images (int, optional): number of most uncertain test images (default 100, quick 20).
        members (int): ensemble size.
        methods (sequence of str, optional): subset of :data:`METHODS`; default all.
        seed (int): seed of the data split, the training and the random maps.
        config (BenchmarkConfig, optional): full control over the sizes (overrides the above).
        vae_epochs (int, optional): training epochs of the counterfactual methods' VAE
            (default 20, quick 5).
        recipe (str): how the ensemble is trained: ``"adam"`` (the default of
            :func:`~captum_uncertainty.data.train_ensemble`: Adam 1e-3, 5 epochs; 4 in the quick
            configuration, see :class:`BenchmarkConfig`) or ``"wang"``
            (Wang et al.'s App. B.1 recipe, :data:`~captum_uncertainty.data.WANG_RECIPE`).

    Returns:
        dict: method name -> its scores (also written to ``out/scores.json``).
    """
    if config is None:
        config = BenchmarkConfig.quick() if quick else BenchmarkConfig()
        config.members, config.seed = members, seed
        if images is not None:
            config.images = config.anomaly_images = images
        if vae_epochs is not None:
            config.vae_epochs = vae_epochs
        config.recipe = recipe
    chosen = select_methods(methods if methods is not None else config.methods)
    import matplotlib

    matplotlib.use("Agg")
    from tqdm.auto import tqdm

    from captum_uncertainty.data import load_mnist
    from captum_uncertainty.metrics import (
        UninformativeBlurWarning,
        anomaly_localization,
        full_blur_sigma,
        make_anomalies,
        pixel_budget,
        uncertainty_reduction_curve,
    )
    from captum_uncertainty.metrics import blurring_test as blurring_score

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    data = load_mnist(seed=config.seed)
    ensemble = benchmark_ensemble(data, config.members, config.seed, config.recipe, config.epochs)
    uf = UncertaintyForward(ensemble, measure="epistemic")
    decomposition, _, test_accuracy = labelled_pass(uf, data.x_test, data.y_test)  # the images to explain
    x = data.x_test[decomposition.epistemic.argsort(descending=True)[: config.images]]
    anomalies = make_anomalies(uf, data.x_test, data.x_train, n_images=config.anomaly_images, seed=config.seed)
    ctx = Context(config, data.x_train)
    if GENERATIVE_METHODS & chosen.keys():
        ctx.vae()  # trained (or loaded) before the clock starts: runtimes are per explanation

    # map-independent: one search
    full_sigma = full_blur_sigma(uf, x, config.sigma_step, max_examples_per_batch=METRIC_BATCH)
    no_blur = int((full_sigma == 0).sum())  # reported in the results instead of warned about per map
    height, width = x.shape[-2:]

    def blurring_test(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UninformativeBlurWarning)
            return blurring_score(*args, **kwargs)

    scores: Dict[str, Dict[str, float]] = {}
    curves: Dict[str, Tensor] = {}
    examples: Dict[str, Tensor] = {}
    aleatoric_examples: Dict[str, Tensor] = {}
    for name, explain in tqdm(chosen.items(), desc="methods"):
        count = len(x) if name not in SLOW_METHODS or config.slow_images is None else min(config.slow_images, len(x))
        subset, sigma = x[:count], full_sigma[:count]
        planted_images, planted_boxes = anomalies.images[:count], anomalies.boxes[:count]
        maps, seconds = _timed(explain, uf, subset, ctx)
        row: Dict[str, float] = {"runtime_s": seconds, "images": float(count)}
        # the map-independent readings at the smaller budget are the larger one's prefix
        full = blurring_test(uf, subset, maps, fraction=0.05, sigma=sigma, max_examples_per_batch=METRIC_BATCH)
        urc = uncertainty_reduction_curve(uf, subset, maps, fraction=0.05, max_examples_per_batch=METRIC_BATCH)
        for fraction in (0.02, 0.05):
            result = blurring_test(
                uf,
                subset,
                maps,
                fraction=fraction,
                sigma_step=config.sigma_step,
                max_examples_per_batch=METRIC_BATCH,
                sigma_selection="final",
            )
            row[f"murr_{fraction:.0%}"], row[f"auc_urr_{fraction:.0%}"] = result.murr, result.auc_urr
            if fraction == 0.05:
                curves[name] = result.curve
            fixed = full.truncated(pixel_budget(fraction, height, width))
            row[f"murr_full_{fraction:.0%}"], row[f"auc_urr_full_{fraction:.0%}"] = fixed.murr, fixed.auc_urr
        for fraction in (0.01, 0.05):
            row[f"urc_{fraction:.0%}"] = urc.truncated(pixel_budget(fraction, height, width)).score
        anomaly_maps, _ = _timed(explain, uf, planted_images, ctx)
        localisation = anomaly_localization(anomaly_maps, planted_boxes)
        row["iou"], row["ada"] = localisation.iou, localisation.ada
        scores[name] = row
        examples[name] = maps[:EXAMPLES]
        aleatoric_examples[name] = seeded(explain, uf.with_measure("aleatoric"), x[:EXAMPLES], ctx)

    with torch.no_grad():  # the report's first screen: the example digits' three uncertainties
        decomposition = uf.decompose(x[:EXAMPLES])
    _write_results(
        out, scores, curves, (examples, aleatoric_examples), x, config, test_accuracy, no_blur, decomposition
    )
    return scores


def labelled_pass(uf: UncertaintyForward, x: Tensor, y: Tensor) -> Tuple[Decomposition, Tensor, float]:
    """One pass of the bundled CNN members (which return logits) over labelled inputs, without
    gradients: the decomposition of each input's uncertainty, the members' class probabilities
    ``(S, N, C)`` and the accuracy of their mean."""
    logits = Categorical("logits")
    with torch.no_grad():
        outputs = uf.sample_outputs(x)
        probabilities = logits.log_probabilities(outputs).exp()
        decomposition = logits.decompose(outputs)
    return decomposition, probabilities, float((probabilities.mean(0).argmax(-1) == y).double().mean())


def benchmark_ensemble(data, members: int, seed: int, recipe: str, epochs: int = 5) -> List[torch.nn.Module]:
    """The benchmark's ensemble, trained (or loaded from the cache) with ``recipe`` (``"adam"`` for
    ``epochs`` epochs)."""
    from captum_uncertainty.data import WANG_RECIPE, train_ensemble

    recipes: Dict[str, Dict[str, Any]] = {"adam": {"epochs": epochs}, "wang": WANG_RECIPE}
    check_choice(recipe, "recipe", tuple(sorted(recipes)))
    return train_ensemble(n_members=members, data=data, seed=seed, **recipes[recipe])


COLUMNS = [
    ("murr_2%", "MURR 2% (paper's reading) ↑"),
    ("auc_urr_2%", "AUC-URR 2% (paper's reading) ↓"),
    ("murr_5%", "MURR 5% (paper's reading) ↑"),
    ("auc_urr_5%", "AUC-URR 5% (paper's reading) ↓"),
    ("murr_full_2%", "MURR 2% (full) ↑"),
    ("murr_full_5%", "MURR 5% (full) ↑"),
    ("urc_1%", "URC 1% ↑"),
    ("urc_5%", "URC 5% ↑"),
    ("iou", "IoU ↑"),
    ("ada", "ADA ↑"),
    ("runtime_s", "s / image"),
    ("images", "images"),
]


def markdown_table(scores: Dict[str, Dict[str, float]], columns: Sequence[Tuple[str, str]] = COLUMNS) -> str:
    """One row per method of ``scores``, one column per ``(key, title)`` of ``columns`` (the
    results' table by default)."""
    lines = ["| method | " + " | ".join(title for _, title in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for name, row in scores.items():
        lines.append(f"| {name} | " + " | ".join(_cell(key, row[key]) for key, _ in columns) + " |")
    return "\n".join(lines)


def _cell(key: str, value: float) -> str:
    """A score with three decimals; the ``images`` count as an integer."""
    return str(int(value)) if key == "images" else f"{value:.3f}"


def no_blur_sentence(no_blur: int, images: int) -> str:
    """The results' line on the images no blur helps; from ``NO_BLUR_WARNING_SHARE`` of the images on
    it says, as :class:`~captum_uncertainty.metrics.UninformativeBlurWarning` does, that the
    "(full)" columns separate maps poorly."""
    from captum_uncertainty.metrics.blurring import NO_BLUR_WARNING_SHARE

    sentence = (
        "Images with no lowering blur (sigma = 0 in the map-independent reading, reduction 0 for every map): "
        f"{no_blur} of {images}."
    )
    if no_blur >= NO_BLUR_WARNING_SHARE * images:
        sentence += (
            f' That is at least {NO_BLUR_WARNING_SHARE:.0%} of the images: the "(full)" columns separate maps '
            "poorly here; compare maps with the URC columns too."
        )
    return sentence


def _write_results(
    out: Path,
    scores,
    curves,
    examples,
    x: Tensor,
    config: BenchmarkConfig,
    test_accuracy: float,
    no_blur: int,
    decomposition=None,
) -> None:
    """``results.md``, ``scores.json`` and ``report.html``: see :mod:`captum_uncertainty.experiments.report`."""
    from captum_uncertainty.experiments.report import write_results

    write_results(out, scores, curves, examples, x, config, test_accuracy, no_blur, decomposition)
