"""Perez et al.'s numbers against ours: CounterfactualPathIG and its metrics in both readings.

``python -m captum_uncertainty benchmark --vae-latent-sizes 32 --reading reference`` runs
:func:`run_reading_study`: on the bundled MNIST test digits whose total uncertainty lies above
the median (the reference code's selection, scripts/MNIST/2.evaluation.py), CounterfactualPathIG
explains the total uncertainty with our settings and with the Featurespace reference code's
(in-class fiducial weighted ``1e4 * H * W`` on a class-averaged BCE, up to 2,000 steps, stopped
by ``LossNotDecreasing``; the latent path ending at the refined code), and both sets of maps are
scored in both metric readings (ours: pixels replaced by the image mean, EIC normalised by
``U(x)`` with a running minimum; the reference's: a sigma 1.5 Gaussian blur, EIC normalised by
``U`` of the fully blurred image). The 2 x 2 table says which half closes the gap.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Sequence, Tuple

import torch
from torch import Tensor

from captum_uncertainty.forward import UncertaintyForward

if TYPE_CHECKING:
    from captum_uncertainty.generative import VAE

__all__ = ["METRIC_READINGS", "SUPPORTED_READINGS", "METHOD_READINGS", "above_median_sample", "run_reading_study"]

#: Keyword arguments of the URC / EIC per metric reading.
METRIC_READINGS: Dict[str, Dict[str, Any]] = {
    "ours": {"sigma": math.inf, "normalization": "input"},
    "reference": {"sigma": 1.5, "normalization": "replaced"},
}

#: The method readings :func:`run_reading_study` runs CounterfactualPathIG in (the ``reading``
#: argument of its per-reading explainer; fiducial settings filled in per batch).
SUPPORTED_READINGS = ("ours", "reference")
#: Deprecated alias of :data:`SUPPORTED_READINGS`, kept for one release.
METHOD_READINGS = SUPPORTED_READINGS


def above_median_sample(uncertainty: Tensor, images: int, seed: int) -> Tensor:
    """Indices of ``images`` inputs drawn (seeded, without replacement) from those whose
    uncertainty lies strictly above the median, the reference code's selection; all of them
    if there are fewer."""
    candidates = (uncertainty > uncertainty.median()).nonzero().flatten()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(candidates.numel(), generator=generator)
    return candidates[order[:images].to(candidates.device)].sort().values


def _explain(uf: UncertaintyForward, vae: "VAE", x: Tensor, reading: str, n_steps: int) -> Tuple[Tensor, Tensor, float]:
    """CounterfactualPathIG maps ``(N, 1, H, W)``, fiducial validity ``(N,)`` and seconds per image."""
    from captum_uncertainty.attr.counterfactual_path import (
        CounterfactualPathIG,
        FiducialWarning,
        reference_in_class_settings,
    )

    options: Dict[str, Any] = {}
    if reading == "reference":
        options = dict(fiducial_kwargs=reference_in_class_settings(x), latent_end="refined")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FiducialWarning)
        attributions, found = CounterfactualPathIG(uf, vae).attribute(
            x, fiducial="in_class", n_steps=n_steps, return_fiducial=True, **options
        )
    seconds = (time.perf_counter() - start) / x.shape[0]
    return attributions.detach().sum(1, keepdim=True), found.valid, seconds


def _score(uf: UncertaintyForward, x: Tensor, maps: Tensor, reading: str, batch_size: int) -> Dict[str, float]:
    from captum_uncertainty.metrics import entropy_information_curve, uncertainty_reduction_curve

    settings = METRIC_READINGS[reading]
    sigma = settings["sigma"]
    eic = entropy_information_curve(
        uf, x, maps, sigma=sigma, normalization=settings["normalization"], max_examples_per_batch=batch_size
    )
    row = {"aoeic": eic.area_over}
    for fraction in (0.01, 0.05):
        urc = uncertainty_reduction_curve(
            uf, x, maps, fraction=fraction, sigma=sigma, max_examples_per_batch=batch_size
        )
        row[f"urc_{fraction:.0%}"] = urc.score
    return row


def run_reading_study(
    out: Path,
    latent_sizes: Sequence[int] = (32,),
    seed: int = 0,
    images: int = 50,
    members: int = 5,
    vae_epochs: int = 20,
    n_steps: int = 50,
    batch_size: int = 256,
) -> Dict[Tuple[int, str, str], Dict[str, float]]:
    """CounterfactualPathIG in our and the reference code's reading, scored in both metric
    readings, on ``images`` digits drawn from the test digits above the median total uncertainty.

    Writes ``out/reading_study.md``.

    Returns:
        dict: ``(latent size, method reading, metric reading)`` -> ``aoeic``, ``urc_1%``,
        ``urc_5%``, ``runtime_s`` and ``valid_fiducials``.
    """
    from captum_uncertainty.data import load_mnist, train_ensemble
    from captum_uncertainty.generative import load_or_train_vae

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist(seed=seed)
    uf = UncertaintyForward(train_ensemble(n_members=members, data=data, seed=seed), measure="total")
    with torch.no_grad():
        total = uf(data.x_test)
    x = data.x_test[above_median_sample(total, images, seed)]
    results: Dict[Tuple[int, str, str], Dict[str, float]] = {}
    for size in latent_sizes:
        vae = load_or_train_vae(data.x_train, latent_dim=size, epochs=vae_epochs, seed=seed)
        for method in SUPPORTED_READINGS:
            maps, valid, seconds = _explain(uf, vae, x, method, n_steps)
            for metric in METRIC_READINGS:
                row = _score(uf, x, maps, metric, batch_size)
                row.update(runtime_s=seconds, valid_fiducials=valid.double().mean().item())
                results[(size, method, metric)] = row
    _write_table(out / "reading_study.md", results, x.shape[0], members, vae_epochs, n_steps, seed)
    return results


def _write_table(path: Path, results, images: int, members: int, vae_epochs: int, n_steps: int, seed: int) -> None:
    lines = [
        "# CounterfactualPathIG in our and the reference code's reading\n",
        f"{images} test digits drawn from those above the median total uncertainty, {members}-CNN ensemble, total "
        f"uncertainty, in-class fiducial, {n_steps} steps per segment, VAE {vae_epochs} epochs, seed {seed}.\n",
        "| latent size | method reading | metric reading | Area over EIC | URC 1% | URC 5% | s / image "
        "| valid fiducials |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {size} | {method} | {metric} | {row['aoeic']:.3f} | {row['urc_1%']:.3f} | {row['urc_5%']:.3f} | "
        f"{row['runtime_s']:.3f} | {row['valid_fiducials']:.0%} |"
        for (size, method, metric), row in results.items()
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
