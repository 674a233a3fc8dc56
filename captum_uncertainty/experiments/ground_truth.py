"""Which attribution method points at the real cause of the uncertainty?

Two causes are built into the data (:mod:`captum_uncertainty.data`), so the right answer is
known pixel by pixel:

* ``"epistemic patch"``: a checkerboard patch no training image holds is pasted into the test
  images (:func:`~captum_uncertainty.data.make_epistemic_patch_images`); the ensemble is trained
  on the unchanged training set and its *epistemic* uncertainty is explained;
* ``"aleatoric overlay"``: a faint second digit of another class is overlaid on half of the
  training images, labelled with either class at random, and on the test images
  (:func:`~captum_uncertainty.data.make_aleatoric_overlay_images`); the ensemble is trained on
  that training set and its *aleatoric* uncertainty is explained.

For each cause :func:`run_ground_truth` trains (or loads from the package's cache, see
:func:`~captum_uncertainty.data.train_ensemble`) a deep ensemble on the cause's training set,
keeps the ``n_images`` test images whose uncertainty of the caused kind rose most from their
clean version, explains them with every method of :data:`METHODS` and scores the maps against
the cause's mask with :func:`~captum_uncertainty.metrics.relevance_mass`,
:func:`~captum_uncertainty.metrics.relevance_rank_accuracy`,
:func:`~captum_uncertainty.metrics.pointing_game`, :func:`~captum_uncertainty.metrics.mask_auroc`
and :func:`~captum_uncertainty.metrics.conveyance`, with the seconds per image. The references:
the ``"Random"`` map ignores the input and scores about the mask's share of the pixels on
relevance mass, rank accuracy and pointing game (0.5 on mask AUROC, 0 on conveyance); the
oracle, Integrated Gradients from the clean image, can only put attribution on the changed
pixels and scores about 1 on relevance mass.

With ``proxies=True`` (the default) the same maps of the same images are also scored by the
proxy metrics the field uses without ground truth (:data:`PROXIES`): Wang et al.'s blurring
test (MURR), Perez et al.'s Uncertainty Reduction Curve and the deletion and insertion AUCs of
the predictive class probability; per cause and proxy, the Kendall tau (tau-b) between the
methods' ranking by the proxy (in its own direction) and their ranking by relevance mass, and
by mask AUROC, over the real methods (the random map and the oracle excluded), says how well
the proxy ranks methods as the ground truth does.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from captum_uncertainty._validation import check_choice, check_int, check_positive_int
from captum_uncertainty.cache import USER_CACHE, CacheDir
from captum_uncertainty.data import (
    DataSplit,
)
from captum_uncertainty.experiments._ground_truth_data import (
    cause_maker,
    load_cause_data,
    select_images,
    strength_inputs,
)
from captum_uncertainty.experiments._ground_truth_methods import (
    GENERATIVE_METHODS,
    METHODS,
    ORACLE,
    RANDOM,
    backward_rows,
)
from captum_uncertainty.experiments._ground_truth_methods import Context as _Context
from captum_uncertainty.experiments._ground_truth_methods import Explainer as _Explainer
from captum_uncertainty.experiments._ground_truth_methods import seeded as _seeded
from captum_uncertainty.experiments._ground_truth_posteriors import (
    SUPPORTED_POSTERIORS,
    posterior_words,
    predictive_accuracy,
    train_posterior,
)
from captum_uncertainty.experiments._ground_truth_scoring import PROXIES, PROXY_FRACTION
from captum_uncertainty.experiments._ground_truth_scoring import agreement as _agreement
from captum_uncertainty.experiments._ground_truth_scoring import proxy_scores as _proxy_scores
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.metrics import conveyance, mask_auroc, pointing_game, relevance_mass, relevance_rank_accuracy
from captum_uncertainty.metrics.blurring import full_blur_sigma

__all__ = [
    "CAUSES",
    "DATASETS",
    "GENERATIVE_METHODS",
    "GroundTruthConfig",
    "GroundTruthRow",
    "GroundTruthTable",
    "CauseSummary",
    "METHODS",
    "ORACLE",
    "PROXIES",
    "PROXY_FRACTION",
    "RANDOM",
    "SUPPORTED_DATASETS",
    "SUPPORTED_POSTERIORS",
    "run_ground_truth",
]

#: The ``data`` choices of :class:`GroundTruthConfig`: scikit-learn's 8x8 digits or the bundled MNIST.
SUPPORTED_DATASETS = ("digits", "mnist")
#: Deprecated alias of :data:`SUPPORTED_DATASETS`, kept for one release.
DATASETS = SUPPORTED_DATASETS

#: The causes, each with the uncertainty measure it raises.
CAUSES: Dict[str, str] = {"epistemic patch": "epistemic", "aleatoric overlay": "aleatoric"}

#: Per-data defaults of the settings :class:`GroundTruthConfig` leaves at ``None``.
_DATA_DEFAULTS: Dict[str, Dict[str, Optional[int]]] = {
    "digits": {"epochs": 20, "patch_size": 3, "vae_latent": 8, "vae_epochs": 30},
    "mnist": {"epochs": 5, "patch_size": None, "vae_latent": 32, "vae_epochs": 20},
}


@dataclass
class GroundTruthConfig:
    """Settings of one :func:`run_ground_truth` run.

    Attributes:
        data (str): ``"digits"`` (scikit-learn's 8x8 digits, :func:`~captum_uncertainty.data.load_digits`)
            or ``"mnist"`` (the 5,000 bundled MNIST digits, :func:`~captum_uncertainty.data.load_mnist`).
            Default: ``"digits"``.
        posterior (str): what is explained: ``"adam"`` (a deep ensemble trained with Adam),
            ``"sgd"`` (one trained with the papers' SGD recipe) or ``"mc_dropout"`` (MC dropout
            of one network), see :data:`SUPPORTED_POSTERIORS`. Default: ``"adam"``.
        n_members (int): ensemble size. Default: 5.
        epochs (int, optional): training epochs of every member (Adam, lr 1e-3, batch 128; the
            SGD recipe has its own 30). Default: 20 on the digits, 5 on MNIST
            (:func:`~captum_uncertainty.data.train_ensemble`'s).
        mc_samples (int): dropout masks of ``posterior="mc_dropout"``. Default: 20.
        n_images (int): explained test images per cause. Default: 20.
        n_steps (int): integration steps of the path methods (IG, Blur IG, Guided IG, the
            UA-Backprop paths, the oracle, CF-path IG). Default: 32.
        strengths (tuple of float): the conveyance strengths, as *fractions of each cause's
            strength* (``patch_strength``, ``overlay_strength``); at least two distinct values.
            Default: ``(0.25, 0.5, 0.75, 1.0)``.
        seed (int): seed of the data split, the cause's draws (patch positions, overlay
            partners), the training and every method's random draws. Default: 0.
        methods (sequence of str, optional): a subset of :data:`METHODS`. Default: all.
        patch_strength (float): blend weight of the epistemic patch. Default: 1.0.
        patch_size (int, optional): side of the patch. Default: 3 on the digits, the
            generator's default (7) on MNIST.
        overlay_strength (float): intensity of the overlaid digit. Default: 0.5.
        overlay_share (float): share of overlaid training images. Default: 0.5.
        candidates (int, optional): how many test images (the first of the split) carry the
            cause and compete for the ``n_images`` places. Default: all.
        smoothgrad_samples (int): noisy samples of SmoothGrad (standard deviation 0.1). Default: 16.
        shap_samples (int): perturbed samples of KernelShap and LIME per image. Default: 200.
        search_iterations (int): most Adam iterations of CLUE's search and of CF-path IG's
            fiducial search. Default: 100.
        vae_latent (int, optional): latent size of the VAE of CLUE and CF-path IG. Default: 8 on
            the digits, 32 on MNIST.
        vae_epochs (int, optional): its training epochs. Default: 30 on the digits, 20 on MNIST.
        cache_dir (str, Path or None): cache of the ensembles and VAEs; ``None`` trains every
            time. Default: the per-user cache.
        progress (bool): print one line per method and cause to stderr. Default: ``False``.
        proxies (bool): also score every map with the proxy metrics of :data:`PROXIES` and
            compare their rankings of the methods with the ground truth's. Default: ``True``.
    """

    data: str = "digits"
    posterior: str = "adam"
    n_members: int = 5
    epochs: Optional[int] = None
    mc_samples: int = 20
    n_images: int = 20
    n_steps: int = 32
    strengths: Tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    seed: int = 0
    methods: Optional[Sequence[str]] = None
    patch_strength: float = 1.0
    patch_size: Optional[int] = None
    overlay_strength: float = 0.5
    overlay_share: float = 0.5
    candidates: Optional[int] = None
    smoothgrad_samples: int = 16
    shap_samples: int = 200
    search_iterations: int = 100
    vae_latent: Optional[int] = None
    vae_epochs: Optional[int] = None
    cache_dir: CacheDir = USER_CACHE
    progress: bool = False
    proxies: bool = True

    def setting(self, name: str) -> Optional[int]:
        """The value of a per-data setting (``epochs``, ``patch_size``, ``vae_latent``,
        ``vae_epochs``): the one given, else the data set's default."""
        value = getattr(self, name)
        return _DATA_DEFAULTS[self.data][name] if value is None else value

    def required(self, name: str) -> int:
        """:meth:`setting` of a setting every data set has a default for (``epochs``,
        ``vae_latent``, ``vae_epochs``)."""
        value = self.setting(name)
        if value is None:
            raise ValueError(f"{name} has no default for data={self.data!r}: set it")
        return int(value)


class GroundTruthRow(NamedTuple):
    """The scores of one method on one cause (every score: higher is better).

    Attributes:
        cause (str): a key of :data:`CAUSES`.
        measure (str): the explained uncertainty, ``"epistemic"`` or ``"aleatoric"``.
        method (str): a key of :data:`METHODS`.
        relevance_mass (float): mean share of the positive attribution inside the mask.
        rank_accuracy (float): mean share of the ``K`` largest attributions inside the mask.
        pointing_game (float): share of images whose largest attribution is inside the mask.
        mask_auroc (float): mean ROC AUC of the map as a detector of the mask.
        conveyance (float): mean Spearman correlation between the cause's strength and the
            map's positive mass inside the mask.
        seconds_per_image (float): wall time of the ``attribute`` call at full strength over
            the number of images.
        mask_share (float): mean share of the pixels inside the mask (the random reference).
        images (int): explained images.
        backward_passes (float): rows back-propagated through the posterior's sample modules
            during that call, over the number of images and of samples: the backward passes per
            image and sample (32 for IG with 32 steps, the classes for UA-Backprop's gradient
            paths, 0 for KernelShap and LIME).
    """

    cause: str
    measure: str
    method: str
    relevance_mass: float
    rank_accuracy: float
    pointing_game: float
    mask_auroc: float
    conveyance: float
    seconds_per_image: float
    mask_share: float
    images: int
    backward_passes: float = float("nan")


class CauseSummary(NamedTuple):
    """What one cause did to its ensemble.

    Attributes:
        cause (str): a key of :data:`CAUSES`.
        measure (str): the explained uncertainty.
        images (int): explained images.
        candidates (int): test images that carried the cause (usable masks only).
        rose (int): candidates whose uncertainty of ``measure`` rose with the cause.
        mean_rise (float): mean rise ``U(x) - U(clean)`` over the explained images.
        mean_clean (float): mean ``U(clean)`` over the explained images.
        mask_share (float): mean share of the pixels inside the explained images' masks.
        nonzero_mask_share (float): mean share of the non-black pixels (``x != 0``) inside the
            masks: the reference of a map that is random on the non-black pixels and 0 on the
            black ones, as maps multiplied by ``x - 0`` (IG, KernelShap and LIME from black) are.
        clean_accuracy (float): the posterior predictive's accuracy on the clean candidates.
        strengths (tuple of float): the absolute strengths of the conveyance maps.
    """

    cause: str
    measure: str
    images: int
    candidates: int
    rose: int
    mean_rise: float
    mean_clean: float
    mask_share: float
    nonzero_mask_share: float
    clean_accuracy: float
    strengths: Tuple[float, ...]


_COLUMNS = (
    ("relevance_mass", "relevance mass ↑"),
    ("rank_accuracy", "rank accuracy ↑"),
    ("pointing_game", "pointing game ↑"),
    ("mask_auroc", "mask AUROC ↑"),
    ("conveyance", "conveyance ↑"),
)


@dataclass
class GroundTruthTable:
    """The result of :func:`run_ground_truth`: one row per method and cause.

    Attributes:
        rows (list of GroundTruthRow): the scores.
        causes (list of CauseSummary): one per cause, in :data:`CAUSES` order.
        not_measured (dict): ``(cause, method) -> reason`` for methods that raised.
        config (GroundTruthConfig): the run's settings.
        proxy_scores (dict): ``{cause: {method: {proxy: score}}}``, the proxies of
            :data:`PROXIES` on every measured method (empty with ``proxies=False``).
        proxy_agreement (dict): ``{cause: {proxy: tau}}``, the Kendall tau-b between the real
            methods' ranking by the proxy (its better end first) and by relevance mass; ``nan``
            with fewer than two real methods or a constant score.
        proxy_agreement_auroc (dict): the same against the ranking by mask AUROC.
        no_blur (dict): ``{cause: images}`` whose blurring-test blur is ``sigma = 0`` (no blur
            lowers their uncertainty: reduction 0 whatever the map).
    """

    rows: List[GroundTruthRow]
    causes: List[CauseSummary]
    not_measured: Dict[Tuple[str, str], str] = field(default_factory=dict)
    config: GroundTruthConfig = field(default_factory=GroundTruthConfig)
    proxy_scores: Dict[str, Dict[str, Dict[str, float]]] = field(default_factory=dict)
    proxy_agreement: Dict[str, Dict[str, float]] = field(default_factory=dict)
    proxy_agreement_auroc: Dict[str, Dict[str, float]] = field(default_factory=dict)
    no_blur: Dict[str, int] = field(default_factory=dict)

    def row(self, cause: str, method: str) -> GroundTruthRow:
        """The row of ``method`` on ``cause`` (``KeyError`` if there is none)."""
        for candidate in self.rows:
            if candidate.cause == cause and candidate.method == method:
                return candidate
        raise KeyError(f"no row for method {method!r} on cause {cause!r}")

    def rows_for(self, cause: str) -> List[GroundTruthRow]:
        """The rows of ``cause``, highest relevance mass first (ties: the order of :data:`METHODS`)."""
        return sorted((r for r in self.rows if r.cause == cause), key=lambda r: -r.relevance_mass)

    def to_markdown(self) -> str:
        """One Markdown table per cause, sorted by relevance mass, with a line on the cause's
        effect and references above each table and the methods not measured below it."""
        config = self.config
        lines = [
            f"Data: {config.data}, {posterior_words(config)}, "
            f"n_steps={config.n_steps}, conveyance strengths {list(config.strengths)} of each cause's strength, "
            f"seed {config.seed}.",
        ]
        for summary in self.causes:
            lines += [
                "",
                f"### {summary.cause} (measure: {summary.measure})",
                "",
                f"{summary.images} test images whose {summary.measure} uncertainty rose most (rose for "
                f"{summary.rose} of {summary.candidates}; mean {summary.mean_clean:.4f} clean -> "
                f"{summary.mean_clean + summary.mean_rise:.4f} with the cause); accuracy on the clean "
                f"images {summary.clean_accuracy:.3f}; conveyance strengths "
                f"{', '.join(f'{s:g}' for s in summary.strengths)}. Mask share of the pixels "
                f"{summary.mask_share:.3f}: a map that ignores the input scores about that on relevance mass, "
                "rank accuracy and pointing game (0.5 on mask AUROC, 0 on conveyance); share of the non-black "
                f"pixels {summary.nonzero_mask_share:.3f} (the reference of maps that are 0 on black pixels).",
                "",
                "| method | " + " | ".join(title for _, title in _COLUMNS) + " | backward passes / image | s / image |",
                "|---" * (len(_COLUMNS) + 3) + "|",
            ]
            for row in self.rows_for(summary.cause):
                cells = [f"{getattr(row, key):.3f}" for key, _ in _COLUMNS]
                cells += [f"{row.backward_passes:.1f}", f"{row.seconds_per_image:.4f}"]
                lines.append(f"| {row.method} | " + " | ".join(cells) + " |")
            missing = [(method, why) for (cause, method), why in self.not_measured.items() if cause == summary.cause]
            if missing:
                lines += ["", "Not measured: " + "; ".join(f"{method} ({why})" for method, why in missing) + "."]
            lines += self._proxy_markdown(summary.cause)
        return "\n".join(lines) + "\n"

    def _proxy_markdown(self, cause: str) -> List[str]:
        """The proxies' scores per method and their Kendall taus with the ground truth."""
        scores = self.proxy_scores.get(cause)
        if not scores:
            return []
        names = list(PROXIES)
        real = sum(1 for method in scores if method not in (RANDOM, ORACLE))
        lines = [
            "",
            f"Proxy metrics without ground truth on the same images and maps (blurring test MURR and URC "
            f"at {PROXY_FRACTION:g} of the pixels, blurring-test sigma searched on the fully blurred image, "
            f"{self.no_blur.get(cause, 0)} of {self.config.n_images} images with no lowering blur; URC towards "
            "the fully blurred image; deletion and insertion of the predictive probability of the predicted "
            "class towards black, 50 steps):",
            "",
            "| method (proxies) | " + " | ".join(f"{name} {'↑' if PROXIES[name] else '↓'}" for name in names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        for row in self.rows_for(cause):
            if row.method in scores:
                cells = [f"{scores[row.method][name]:.3f}" for name in names]
                lines.append(f"| {row.method} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Kendall tau-b between the {real} real methods' rankings (random map and oracle excluded; each "
            "proxy in its own direction):",
            "",
            "| proxy | tau with relevance mass | tau with mask AUROC |",
            "|---|---|---|",
        ]
        for name in names:
            tau, tau_auroc = self.proxy_agreement[cause][name], self.proxy_agreement_auroc[cause][name]
            lines.append(f"| {name} | {tau:.3f} | {tau_auroc:.3f} |")
        return lines


# ----------------------------------------------------------------------------- the run


def _check_config(config: GroundTruthConfig) -> Dict[str, _Explainer]:
    """Refuse bad settings; return the chosen methods."""
    if not isinstance(config, GroundTruthConfig):
        raise TypeError(f"config must be a GroundTruthConfig, got {type(config).__name__}")
    check_choice(config.data, "data", SUPPORTED_DATASETS)
    check_choice(config.posterior, "posterior", SUPPORTED_POSTERIORS)
    for name in (
        "n_members",
        "mc_samples",
        "n_images",
        "n_steps",
        "smoothgrad_samples",
        "shap_samples",
        "search_iterations",
    ):
        check_positive_int(getattr(config, name), name)
    for name in ("epochs", "vae_latent", "vae_epochs", "candidates", "patch_size"):
        if getattr(config, name) is not None:
            check_positive_int(getattr(config, name), name)
    check_int(config.seed, "seed", minimum=0)
    strengths = tuple(float(s) for s in config.strengths)
    if len(set(strengths)) < 2 or any(not 0.0 <= s <= 1.0 for s in strengths):
        raise ValueError(f"strengths must hold at least two distinct fractions in [0, 1], got {config.strengths!r}")
    if config.methods is None:
        return dict(METHODS)
    unknown = [name for name in config.methods if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    return {name: METHODS[name] for name in config.methods}


def _say(config: GroundTruthConfig, message: str) -> None:
    if config.progress:
        print(message, file=sys.stderr, flush=True)


def run_ground_truth(config: Optional[GroundTruthConfig] = None) -> GroundTruthTable:
    """Score every chosen method on both known causes (see the module docstring).

    Per cause (:data:`CAUSES`): the cause's data are generated from ``config.seed``; a deep
    ensemble of :class:`~captum_uncertainty.data.MNISTCNN` members is trained on the cause's
    training set by :func:`~captum_uncertainty.data.train_ensemble` (cached in
    ``config.cache_dir``); the caused test images are ranked by the rise of the cause's
    uncertainty, ``U(x_test) - U(clean)`` under
    ``UncertaintyForward(members, measure)``, and the first ``n_images`` kept (only images whose
    mask marks some but not all pixels compete; ties keep the test order). Every method explains
    ``U`` at those images; its maps (channel sums) are scored against the masks. For
    conveyance, the same images get the cause at each strength of ``config.strengths`` (fractions
    of the cause's strength, the same seed: the same patch positions and overlay digits, which
    is checked), on the ensemble trained at full strength, and every method explains each of
    them; the full-strength maps are reused when 1.0 is a fraction. The oracle's baseline is
    always the clean image. Seconds per image time the full-strength call (the VAE of CLUE and
    CF-path IG is trained or loaded before the clock starts). A method that raises is listed in
    :attr:`GroundTruthTable.not_measured` with its error instead of a row.

    Args:
        config (GroundTruthConfig, optional): the settings. Default: ``GroundTruthConfig()``.

    Returns:
        GroundTruthTable: one row per method and cause.

    Examples::

        >>> table = run_ground_truth(GroundTruthConfig(n_images=10, methods=["Random", ORACLE, "Saliency"]))
        >>> print(table.to_markdown())
        >>> table.row("epistemic patch", ORACLE).relevance_mass
    """
    config = GroundTruthConfig() if config is None else config
    methods = _check_config(config)
    data = load_cause_data(config)
    rows: List[GroundTruthRow] = []
    summaries: List[CauseSummary] = []
    not_measured: Dict[Tuple[str, str], str] = {}
    proxy_scores: Dict[str, Dict[str, Dict[str, float]]] = {}
    agreement: Dict[str, Dict[str, float]] = {}
    agreement_auroc: Dict[str, Dict[str, float]] = {}
    no_blur: Dict[str, int] = {}
    for cause, measure in CAUSES.items():
        make, full_strength = cause_maker(config, data, cause)
        full = make(full_strength)
        start = time.perf_counter()
        posterior = train_posterior(config, DataSplit(full.x_train, full.y_train, full.x_test, full.y_test))
        _say(config, f"[{cause}] {config.posterior} posterior trained or loaded in {time.perf_counter() - start:.1f} s")
        uf = UncertaintyForward(posterior, measure=measure)
        chosen, rise, usable = select_images(uf, full, config.n_images)
        x, clean, masks = full.x_test[chosen], full.clean[chosen], full.masks[chosen]
        strengths = tuple(fraction * full_strength for fraction in config.strengths)
        inputs = strength_inputs(make, full, chosen, strengths)
        with torch.no_grad():
            clean_uncertainty = float(uf(clean).mean())
        mask_share = float(masks.flatten(1).double().mean(1).mean())
        nonzero = (x != 0).flatten(1)
        nonzero_share = float(((masks.flatten(1) & nonzero).sum(1) / nonzero.sum(1)).double().mean())
        summaries.append(
            CauseSummary(
                cause=cause,
                measure=measure,
                images=len(chosen),
                candidates=int(usable.sum()),
                rose=int(((rise > 0) & usable).sum()),
                mean_rise=float(rise[chosen].mean()),
                mean_clean=clean_uncertainty,
                mask_share=mask_share,
                nonzero_mask_share=nonzero_share,
                clean_accuracy=predictive_accuracy(uf, full.clean[usable], full.y_test[usable]),
                strengths=strengths,
            )
        )
        ctx = _Context(config, full.x_train, clean)
        if config.proxies:
            sigma = full_blur_sigma(uf, x)  # independent of the map: one search for every method
            no_blur[cause] = int((sigma == 0).sum())
            proxy_scores[cause] = {}
        for name, explain in methods.items():
            try:
                if name in GENERATIVE_METHODS:
                    ctx.vae()
                with backward_rows(uf) as counted:
                    begin = time.perf_counter()
                    maps = _seeded(explain, uf, x, ctx)
                    seconds = (time.perf_counter() - begin) / x.shape[0]
                passes = counted[0] / (x.shape[0] * uf.num_samples)
                per_strength = [maps if torch.equal(xs, x) else _seeded(explain, uf, xs, ctx) for xs in inputs]
            except Exception as error:  # recorded in the table, never dropped silently
                not_measured[(cause, name)] = f"{type(error).__name__}: {error}"
                _say(config, f"[{cause}] {name}: not measured ({not_measured[(cause, name)]})")
                continue
            row = GroundTruthRow(
                cause=cause,
                measure=measure,
                method=name,
                relevance_mass=relevance_mass(maps, masks).score,
                rank_accuracy=relevance_rank_accuracy(maps, masks).score,
                pointing_game=pointing_game(maps, masks).score,
                mask_auroc=mask_auroc(maps, masks).score,
                conveyance=conveyance(per_strength, masks, strengths).score,
                seconds_per_image=seconds,
                mask_share=mask_share,
                images=len(chosen),
                backward_passes=passes,
            )
            rows.append(row)
            _say(
                config,
                f"[{cause}] {name}: relevance mass {row.relevance_mass:.3f}, {seconds:.4f} s/image",
            )
            if config.proxies:
                proxy_scores[cause][name] = _proxy_scores(uf, x, maps, sigma)
        if config.proxies:
            cause_rows = [row for row in rows if row.cause == cause]
            agreement[cause] = _agreement(cause_rows, proxy_scores[cause], "relevance_mass")
            agreement_auroc[cause] = _agreement(cause_rows, proxy_scores[cause], "mask_auroc")
    return GroundTruthTable(rows, summaries, not_measured, config, proxy_scores, agreement, agreement_auroc, no_blur)
