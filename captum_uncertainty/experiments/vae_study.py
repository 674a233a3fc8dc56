"""The VAE-sensitivity study of Perez et al.'s supplement (Table 1), apart from the method
benchmark: :func:`run_vae_study` (``python -m captum_uncertainty benchmark --vae-latent-sizes``)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Dict, Sequence

import torch

from captum_uncertainty._methods import as_map
from captum_uncertainty._validation import check_positive_int
from captum_uncertainty.forward import UncertaintyForward

__all__ = ["run_vae_study"]


def run_vae_study(
    out: Path,
    latent_sizes: Sequence[int],
    seed: int = 0,
    images: int = 100,
    members: int = 5,
    vae_epochs: int = 20,
    n_steps: int = 50,
) -> Dict[int, Dict[str, float]]:
    """The VAE-sensitivity study of Perez et al.'s supplement (Table 1): one VAE per latent size.

    For every latent size a VAE is trained on the bundled training digits, then
    :class:`~captum_uncertainty.CounterfactualPathIG` (in-class fiducial, Perez et al.'s
    same-class low-entropy source image) explains the total
    uncertainty of the ``images`` most uncertain test digits, scored by the Area over the Entropy
    Information Curve and the Uncertainty Reduction Curve at 1% and 5% of the pixels. Writes
    ``out/vae_study.md``.

    Returns:
        dict: latent size -> scores (``aoeic``, ``urc_1%``, ``urc_5%``, ``runtime_s`` and
        ``valid_fiducials``, the share of fiducials that keep the class and lower the uncertainty).
    """
    from tqdm.auto import tqdm

    from captum_uncertainty.attr.counterfactual_path import CounterfactualPathIG, FiducialWarning
    from captum_uncertainty.data import load_mnist, train_ensemble
    from captum_uncertainty.generative import load_or_train_vae
    from captum_uncertainty.metrics import entropy_information_curve, uncertainty_reduction_curve

    if not latent_sizes:
        raise ValueError("latent_sizes must name at least one latent size")
    for size in latent_sizes:
        check_positive_int(size, "latent_sizes")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist(seed=seed)
    uf = UncertaintyForward(train_ensemble(n_members=members, data=data, seed=seed), measure="total")
    with torch.no_grad():
        x = data.x_test[uf(data.x_test).argsort(descending=True)[:images]]
    scores: Dict[int, Dict[str, float]] = {}
    for size in tqdm(latent_sizes, desc="latent sizes"):
        vae = load_or_train_vae(data.x_train, latent_dim=size, epochs=vae_epochs, seed=seed)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FiducialWarning)
            attributions, fiducials = CounterfactualPathIG(uf, vae).attribute(
                x, fiducial="in_class", n_steps=n_steps, return_fiducial=True
            )
        maps = as_map(attributions)
        runtime = (time.perf_counter() - start) / x.shape[0]
        scores[size] = {
            "aoeic": entropy_information_curve(uf, x, maps).area_over,
            "urc_1%": uncertainty_reduction_curve(uf, x, maps, fraction=0.01).score,
            "urc_5%": uncertainty_reduction_curve(uf, x, maps, fraction=0.05).score,
            "runtime_s": runtime,
            "valid_fiducials": fiducials.valid.double().mean().item(),
        }
    lines = [
        "# VAE latent-size study (Perez et al. supplement, Table 1)\n",
        f"{images} most uncertain bundled MNIST test digits, {members}-CNN ensemble, total uncertainty, "
        f"CounterfactualPathIG (in-class fiducial, {n_steps} steps), VAE {vae_epochs} epochs, seed {seed}.\n",
        "| latent size | Area over EIC | URC 1% | URC 5% | s / image | valid fiducials |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {size} | {row['aoeic']:.3f} | {row['urc_1%']:.3f} | {row['urc_5%']:.3f} | "
        f"{row['runtime_s']:.3f} | {row['valid_fiducials']:.0%} |"
        for size, row in scores.items()
    ]
    (out / "vae_study.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return scores
