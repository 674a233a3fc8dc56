"""The ground-truth benchmark's data: each cause's generator at a chosen strength, the images
whose uncertainty the cause raised most, and the same images at every conveyance strength."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Sequence, Tuple

import torch
from torch import Tensor

from captum_uncertainty.data import (
    DataSplit,
    KnownCauseImages,
    load_digits,
    load_mnist,
    make_aleatoric_overlay_images,
    make_epistemic_patch_images,
)
from captum_uncertainty.forward import UncertaintyForward

if TYPE_CHECKING:
    from captum_uncertainty.experiments.ground_truth import GroundTruthConfig

__all__ = ["cause_maker", "load_cause_data", "select_images", "strength_inputs"]


def load_cause_data(config: "GroundTruthConfig") -> DataSplit:
    """The configured data set, split with the configured seed."""
    return load_digits(seed=config.seed) if config.data == "digits" else load_mnist(seed=config.seed)


def cause_maker(
    config: "GroundTruthConfig", data: DataSplit, cause: str
) -> Tuple[Callable[[float], KnownCauseImages], float]:
    """The cause's generator as a function of the strength (everything else, the seed included,
    fixed), and the cause's full strength."""
    if cause == "epistemic patch":
        patch_size = config.setting("patch_size")

        def patch(strength: float) -> KnownCauseImages:
            return make_epistemic_patch_images(
                data, strength=strength, patch_size=patch_size, n_test=config.candidates, seed=config.seed
            )

        return patch, config.patch_strength

    def overlay(strength: float) -> KnownCauseImages:
        return make_aleatoric_overlay_images(
            data, strength=strength, share=config.overlay_share, n_test=config.candidates, seed=config.seed
        )

    return overlay, config.overlay_strength


@torch.no_grad()
def select_images(uf: UncertaintyForward, known: KnownCauseImages, n_images: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The ``n_images`` test images whose uncertainty rose most from their clean version.

    Only images whose mask marks some but not all pixels compete (rank accuracy and mask AUROC
    are undefined otherwise); ties keep the test order. Returns the chosen indices (largest rise
    first), the rises of all test images and the competitors' boolean index.
    """
    rise = uf(known.x_test) - uf(known.clean)
    marked = known.masks.flatten(1).sum(1)
    usable = (marked > 0) & (marked < known.masks[0].numel())
    if int(usable.sum()) < n_images:
        raise ValueError(f"n_images={n_images} but only {int(usable.sum())} test images carry a usable mask")
    ranked = torch.where(usable, rise, torch.full_like(rise, -torch.inf))
    chosen = torch.argsort(ranked, descending=True, stable=True)[:n_images]
    return chosen, rise, usable


def strength_inputs(
    make: Callable[[float], KnownCauseImages], full: KnownCauseImages, chosen: Tensor, strengths: Sequence[float]
) -> List[Tensor]:
    """The chosen images with the cause at each strength, checked to carry it in the same place.

    The generators draw the patch positions and overlay partners from the seed alone, so the
    same seed puts the cause in the same pixels at every strength: for a strength above 0 the
    masks must equal those at full strength, at 0 they must be empty, and the clean images must
    be the same. A ``RuntimeError`` says otherwise.
    """
    inputs = []
    for strength in strengths:
        if strength == full.strength:
            inputs.append(full.x_test[chosen])
            continue
        known = make(strength)
        masks, expected = known.masks[chosen], full.masks[chosen]
        same_place = torch.equal(masks, expected) if strength > 0 else not bool(masks.any())
        if not same_place or not torch.equal(known.clean[chosen], full.clean[chosen]):
            raise RuntimeError(f"the cause at strength {strength:g} is not in the same pixels as at full strength")
        inputs.append(known.x_test[chosen])
    return inputs
