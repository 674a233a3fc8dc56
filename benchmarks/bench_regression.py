"""Uncertainty attribution for regressors: does each method find the feature that carries the variance?

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_regression.py [--seed 0]``

Part 1, synthetic ground truth. Six features, uniform in [-1, 1] for training;
``y = sin(pi x1) + x2^2 + 0.5 x3 + 0.5 tanh(2 x4) + eps`` with ``eps ~ N(0, (0.05 + |x0|)^2)``:
feature 0 alone sets the noise (aleatoric ground truth), feature 5 is never used. Five
heteroscedastic MLPs (6 -> 64 -> 64 -> 2, tanh, Gaussian NLL on mean and log-variance,
full-batch Adam, one seed per member) form the ensemble. Two test sets of 200 points: in
range with ``|x0|`` in [0.7, 1] (aleatoric maps should point at feature 0) and with feature 5
out of the training range, ``x5`` in [2.5, 3.5], ``|x0| <= 0.1`` (epistemic maps should point at
feature 5); a third in-range set with ``|x0| <= 0.1`` is only the sanity check's reference.
Each method is scored by the share of ``|attribution|`` on the ground-truth feature (mean over
points), the fraction of points whose largest ``|attribution|`` is that feature, and seconds
per input (``time.perf_counter`` around the ``attribute`` call / number of inputs).

Part 2, diabetes (``sklearn.datasets.load_diabetes``; features and target standardised on a
seeded 80/20 split's training part). Five MLPs 10 -> 32 -> 2. The same methods on the 40 test
patients of highest epistemic variance (aleatoric maps: of highest aleatoric variance), scored
by the feature-flipping curve of :func:`captum_uncertainty.metrics.entropy_information_curve`
with ``baseline=0`` (the training mean): features are replaced by 0 in the order of decreasing
map value and the explained variance after each removal, normalised by its starting value
(running minimum, clipped to [0, 1]), is recorded; the area under that curve (``1 -
area_over``, median over patients; and the mean of the per-patient areas) is reported, lower
is better, against a random order (mean of 10 random orders).

IG-based methods use ``n_steps=32`` and the baseline zeros (the training mean); KernelShap uses
``n_samples=200``, the baseline zeros and ``perturbations_per_eval=200`` (one forward per input).
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import time
import warnings
from functools import partial
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, TypeVar

import torch
from captum.attr import IntegratedGradients, KernelShap
from sklearn.datasets import load_diabetes
from torch import Tensor, nn

from captum_uncertainty import Gaussian, UncertaintyForward
from captum_uncertainty.attr.covariance import CovarianceAttribution
from captum_uncertainty.attr.distribution import ExplanationDistribution
from captum_uncertainty.attr.integrated_gradients import UncertaintyIntegratedGradients
from captum_uncertainty.data import make_regression_known_causes
from captum_uncertainty.metrics import entropy_information_curve

N_STEPS = 32
SHAP_SAMPLES = 200
T = TypeVar("T")
N_MEMBERS = 5
#: The members return (N, 2) = mean and log-variance per input.
GAUSSIAN = Gaussian(variance="log_variance")


class MapResult(NamedTuple):
    """Attribution maps ``(N, F)`` of one method on one set, and the seconds per input."""

    maps: Tensor
    seconds_per_input: float


def make_mlp(n_features: int, hidden: Tuple[int, ...]) -> nn.Sequential:
    """An MLP returning ``(N, 2)`` = mean and log-variance."""
    layers: List[nn.Module] = []
    width = n_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.Tanh()]
        width = size
    layers.append(nn.Linear(width, 2))
    return nn.Sequential(*layers)


def gaussian_nll(outputs: Tensor, y: Tensor) -> Tensor:
    """Mean Gaussian negative log-likelihood (without the constant) of mean / log-variance outputs."""
    mean, log_var = outputs[:, 0], outputs[:, 1]
    return 0.5 * (log_var + (y - mean).square() * torch.exp(-log_var)).mean()


def train_ensemble(
    x: Tensor, y: Tensor, hidden: Tuple[int, ...], steps: int, lr: float, seed: int, weight_decay: float = 0.0
) -> Tuple[List[nn.Module], List[float]]:
    """Train ``N_MEMBERS`` heteroscedastic MLPs full-batch with Adam; member ``m`` uses seed ``seed + m``."""
    members: List[nn.Module] = []
    losses = []
    for m in range(N_MEMBERS):
        torch.manual_seed(seed + m)
        model = make_mlp(x.shape[1], hidden)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(steps):
            optimiser.zero_grad()
            loss = gaussian_nll(model(x), y)
            loss.backward()
            optimiser.step()
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        members.append(model)
        losses.append(float(loss.detach()))
    return members, losses


def timed(run: Callable[[], Tensor], n_inputs: int) -> MapResult:
    start = time.perf_counter()
    maps = run()
    elapsed = time.perf_counter() - start
    return MapResult(maps.detach(), elapsed / n_inputs)


def captum_ig(uf: UncertaintyForward, x: Tensor) -> MapResult:
    return timed(lambda: IntegratedGradients(uf).attribute(x, baselines=torch.zeros_like(x), n_steps=N_STEPS), len(x))


def kernel_shap(uf: UncertaintyForward, x: Tensor, seed: int) -> MapResult:
    torch.manual_seed(seed)
    warnings.filterwarnings("ignore", message="You are providing multiple inputs for Lime / Kernel SHAP")
    return timed(
        lambda: KernelShap(uf).attribute(
            x, baselines=torch.zeros_like(x), n_samples=SHAP_SAMPLES, perturbations_per_eval=SHAP_SAMPLES
        ),
        len(x),
    )


def uig_decomposed(uf: UncertaintyForward, x: Tensor) -> Tuple[Dict[str, Tensor], float]:
    """Total, aleatoric and epistemic maps from one ``decompose=True`` call, and its seconds per input."""
    start = time.perf_counter()
    result = UncertaintyIntegratedGradients(uf).attribute(
        x, baselines=torch.zeros_like(x), n_steps=N_STEPS, decompose=True
    )
    elapsed = time.perf_counter() - start
    maps = {
        "total": result.total.detach(),
        "aleatoric": result.aleatoric.detach(),
        "epistemic": result.epistemic.detach(),
    }
    return maps, elapsed / len(x)


def covariance(uf: UncertaintyForward, x: Tensor, mode: str) -> MapResult:
    method = CovarianceAttribution(uf, IntegratedGradients)
    return timed(lambda: method.attribute(x, mode=mode, baselines=torch.zeros_like(x), n_steps=N_STEPS), len(x))


def distribution_std(uf: UncertaintyForward, x: Tensor) -> MapResult:
    method = ExplanationDistribution(uf, IntegratedGradients)
    return timed(lambda: method.attribute(x, baselines=torch.zeros_like(x), n_steps=N_STEPS).std, len(x))


def safe_run(run: Callable[..., T], *args: Any) -> Tuple[Optional[T], str]:
    """Run one method; a failure is reported in the table (its type and message), not raised."""
    try:
        return run(*args), ""
    except Exception as error:  # noqa: BLE001 - the benchmark reports every failure
        return None, f"{type(error).__name__}: {error}".replace("|", "/").replace("\n", " ")[:300]


# ----------------------------------------------------------------------------------------------- part 1


def localisation(maps: Tensor, feature: int) -> Tuple[float, float]:
    """Mean share of ``|attribution|`` on ``feature`` and the fraction of points where it is the largest."""
    magnitude = maps.abs()
    totals = magnitude.sum(1)
    share = torch.where(totals > 0, magnitude[:, feature] / totals.clamp_min(1e-30), torch.zeros_like(totals))
    top1 = (magnitude.argmax(1) == feature).float()
    return float(share.mean()), float(top1.mean())


def part1(seed: int, n_train: int, n_test: int, steps: int) -> None:
    data = make_regression_known_causes(n_train, n_test, seed)
    x_train, y_train = data.x_train, data.y_train
    start = time.perf_counter()
    members, losses = train_ensemble(x_train, y_train, (64, 64), steps, 3e-3, seed=seed + 100)
    train_seconds = time.perf_counter() - start
    print(
        f"Trained {N_MEMBERS} MLPs 6 -> 64 -> 64 -> 2 on {n_train} points, {steps} full-batch Adam steps each, "
        f"in {train_seconds:.1f} s; final training NLL per member: {', '.join(f'{v:.3f}' for v in losses)}"
    )
    print()
    sets = data.x_test
    forwards = {m: UncertaintyForward(members, m, likelihood=GAUSSIAN) for m in ("total", "aleatoric", "epistemic")}

    print("Sanity check: mean variances per test set")
    print()
    print("| set | points | total | aleatoric | epistemic |")
    print("|---|---|---|---|---|")
    means = {}
    with torch.no_grad():
        for name, label in (
            ("aleatoric", "in range, |x0| in [0.7, 1]"),
            ("epistemic", "x5 in [2.5, 3.5], |x0| <= 0.1"),
            ("reference", "in range, |x0| <= 0.1"),
        ):
            d = forwards["total"].decompose(sets[name])
            means[name] = {k: float(getattr(d, k).mean()) for k in ("total", "aleatoric", "epistemic")}
            print(
                f"| {label} | {n_test} | {means[name]['total']:.4f} | {means[name]['aleatoric']:.4f} | "
                f"{means[name]['epistemic']:.4f} |"
            )
    epi_ratio = means["epistemic"]["epistemic"] / means["reference"]["epistemic"]
    ale_ratio = means["aleatoric"]["aleatoric"] / means["reference"]["aleatoric"]
    print()
    print(
        f"epistemic(out of range) / epistemic(in range, reference) = {epi_ratio:.1f} "
        f"({'OK' if epi_ratio > 10 else 'NOT much larger'}); aleatoric(|x0| large) / aleatoric(reference) = "
        f"{ale_ratio:.1f} ({'OK' if ale_ratio > 10 else 'NOT much larger'}; noise-model ratio "
        f"{(0.05 + 0.85) ** 2 / (0.05 + 0.05) ** 2:.0f})"
    )
    print()

    rows: List[Tuple[str, str, str, int, Optional[MapResult], str]] = []
    tasks = (("aleatoric", 0), ("epistemic", 5))
    # Captum IG and KernelShap on each variance; total on both sets.
    runners: Tuple[Tuple[str, Callable[[UncertaintyForward, Tensor], MapResult]], ...] = (
        ("Captum IntegratedGradients", captum_ig),
        ("Captum KernelShap", partial(kernel_shap, seed=seed)),
    )
    for method, runner in runners:
        for measure in ("total", "aleatoric", "epistemic"):
            for set_name, feature in tasks:
                if measure != "total" and measure != set_name:
                    continue
                result, error = safe_run(runner, forwards[measure], sets[set_name])
                rows.append((method, measure, set_name, feature, result, error))
    # UncertaintyIntegratedGradients, decompose=True: one call per set gives all three maps.
    for set_name, feature in tasks:
        decomposed, error = safe_run(uig_decomposed, forwards["total"], sets[set_name])
        for measure in ("total", set_name):
            result = None if decomposed is None else MapResult(decomposed[0][measure], decomposed[1])
            rows.append(("UncertaintyIG (decompose=True)", measure, set_name, feature, result, error))
    x_epi = sets["epistemic"]
    for mode in ("marginal", "diagonal"):
        result, error = safe_run(covariance, forwards["epistemic"], x_epi, mode)
        rows.append((f"CovarianceAttribution (IG, {mode})", "epistemic", "epistemic", 5, result, error))
    result, error = safe_run(distribution_std, forwards["epistemic"], x_epi)
    rows.append(("ExplanationDistribution (IG) std", "epistemic", "epistemic", 5, result, error))

    print(f"Part 1: ground-truth localisation ({n_test} points per set, n_steps={N_STEPS}, KernelShap {SHAP_SAMPLES})")
    print()
    print(
        "| method | explains | test set | ground truth | share of abs attribution on it | top-1 fraction | s / input |"
    )
    print("|---|---|---|---|---|---|---|")
    set_labels = {"aleatoric": "|x0| large", "epistemic": "x5 out of range"}
    for method, measure, set_name, feature, result, error in rows:
        if result is None:
            print(f"| {method} | {measure} | {set_labels[set_name]} | x{feature} | failed: {error} | - | - |")
            continue
        share, top1 = localisation(result.maps, feature)
        print(
            f"| {method} | {measure} | {set_labels[set_name]} | x{feature} | {share:.3f} | {top1:.3f} | "
            f"{result.seconds_per_input:.2e} |"
        )
    print()


# ----------------------------------------------------------------------------------------------- part 2


def diabetes_split(seed: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.float32)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train = int(round(0.8 * len(x)))
    train, test = order[:n_train], order[n_train:]
    x_mean, x_std = x[train].mean(0), x[train].std(0)
    y_mean, y_std = y[train].mean(), y[train].std()
    return (
        (x[train] - x_mean) / x_std,
        (y[train] - y_mean) / y_std,
        (x[test] - x_mean) / x_std,
        (y[test] - y_mean) / y_std,
    )


def flipping_areas(uf: UncertaintyForward, x: Tensor, maps: Tensor) -> Tuple[float, float]:
    """Area under the feature-flipping curve (median over inputs, and mean of per-input areas)."""
    curve = entropy_information_curve(uf, x, maps, baseline=torch.zeros(x.shape[1]))
    per_input = torch.trapezoid(curve.per_image, curve.fractions.to(curve.per_image.dtype), dim=1)
    return 1 - curve.area_over, float(per_input.mean())


def part2(seed: int, steps: int, n_top: int) -> None:
    x_train, y_train, x_test, y_test = diabetes_split(seed)
    start = time.perf_counter()
    members, losses = train_ensemble(x_train, y_train, (32,), steps, 3e-3, seed=seed + 200)
    train_seconds = time.perf_counter() - start
    forwards = {m: UncertaintyForward(members, m, likelihood=GAUSSIAN) for m in ("total", "aleatoric", "epistemic")}
    with torch.no_grad():
        d = forwards["total"].decompose(x_test)
        mean = forwards["total"].predictive_mean(x_test)
    rmse = float((mean - y_test).square().mean().sqrt())
    nll = float((0.5 * (torch.log(2 * math.pi * d.total) + (y_test - mean).square() / d.total)).mean())
    print(
        f"Diabetes: {len(x_train)} training / {len(x_test)} test patients, {N_MEMBERS} MLPs 10 -> 32 -> 2, {steps} "
        f"full-batch Adam steps each, trained in {train_seconds:.1f} s (final training NLL per member: "
        f"{', '.join(f'{v:.3f}' for v in losses)}). Test (standardised target): RMSE {rmse:.3f}, Gaussian NLL "
        f"{nll:.3f} (predictive variance = total); mean test variances: total {float(d.total.mean()):.4f}, "
        f"aleatoric {float(d.aleatoric.mean()):.4f}, epistemic {float(d.epistemic.mean()):.4f}"
    )
    sets = {
        "epistemic": x_test[d.epistemic.argsort(descending=True)[:n_top]],
        "aleatoric": x_test[d.aleatoric.argsort(descending=True)[:n_top]],
    }
    print()

    # (method, explained measure = the curve's variance, set)
    rows: List[Tuple[str, str, str, Optional[MapResult], str]] = []
    runners: Tuple[Tuple[str, Callable[[UncertaintyForward, Tensor], MapResult]], ...] = (
        ("Captum IntegratedGradients", captum_ig),
        ("Captum KernelShap", partial(kernel_shap, seed=seed)),
    )
    for method, runner in runners:
        for measure, set_name in (("total", "epistemic"), ("aleatoric", "aleatoric"), ("epistemic", "epistemic")):
            result, error = safe_run(runner, forwards[measure], sets[set_name])
            rows.append((method, measure, set_name, result, error))
    for set_name, measures in (("epistemic", ("total", "epistemic")), ("aleatoric", ("aleatoric",))):
        decomposed, error = safe_run(uig_decomposed, forwards["total"], sets[set_name])
        for measure in measures:
            result = None if decomposed is None else MapResult(decomposed[0][measure], decomposed[1])
            rows.append(("UncertaintyIG (decompose=True)", measure, set_name, result, error))
    for mode in ("marginal", "diagonal"):
        result, error = safe_run(covariance, forwards["epistemic"], sets["epistemic"], mode)
        rows.append((f"CovarianceAttribution (IG, {mode})", "epistemic", "epistemic", result, error))
    result, error = safe_run(distribution_std, forwards["epistemic"], sets["epistemic"])
    rows.append(("ExplanationDistribution (IG) std", "epistemic", "epistemic", result, error))

    random_generator = torch.Generator().manual_seed(seed + 300)
    random_rows = []
    for measure, set_name in (("total", "epistemic"), ("aleatoric", "aleatoric"), ("epistemic", "epistemic")):
        x = sets[set_name]
        areas = [
            flipping_areas(forwards[measure], x, torch.rand(x.shape, generator=random_generator)) for _ in range(10)
        ]
        random_rows.append(
            (measure, set_name, sum(a[0] for a in areas) / len(areas), sum(a[1] for a in areas) / len(areas))
        )

    print(
        f"Part 2: diabetes feature flipping ({n_top} test patients of highest epistemic variance; aleatoric maps: of "
        "highest aleatoric variance; features replaced by 0 = the training mean in decreasing map order; area under "
        "the normalised remaining-variance curve, lower is better)"
    )
    print()
    print(
        f"| method | explains (curve variance) | patients (top {n_top} by) | area (median curve) | "
        "mean per-patient area | s / input |"
    )
    print("|---|---|---|---|---|---|")
    for method, measure, set_name, result, error in rows:
        if result is None:
            print(f"| {method} | {measure} | {set_name} | failed: {error} | - | - |")
            continue
        median_area, mean_area = flipping_areas(forwards[measure], sets[set_name], result.maps)
        print(
            f"| {method} | {measure} | {set_name} | {median_area:.3f} | {mean_area:.3f} | "
            f"{result.seconds_per_input:.2e} |"
        )
    for measure, set_name, median_area, mean_area in random_rows:
        print(f"| random order (mean of 10) | {measure} | {set_name} | {median_area:.3f} | {mean_area:.3f} | - |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=4000, help="synthetic training points")
    parser.add_argument("--n-test", type=int, default=200, help="synthetic test points per set")
    parser.add_argument("--steps", type=int, default=1500, help="full-batch Adam steps per synthetic member")
    parser.add_argument("--diabetes-steps", type=int, default=1000, help="full-batch Adam steps per diabetes member")
    parser.add_argument("--top", type=int, default=40, help="diabetes test patients per set")
    args = parser.parse_args()
    wall = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}"
    )
    print()
    part1(args.seed, args.n_train, args.n_test, args.steps)
    part2(args.seed, args.diabetes_steps, args.top)
    print(f"Total wall time {time.perf_counter() - wall:.1f} s")


if __name__ == "__main__":
    main()
