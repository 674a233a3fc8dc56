"""How each attribution method is built on an :class:`~captum_uncertainty.UncertaintyForward`: one
constructor a class, shared by the command line's ``--method`` choices
(:data:`COMMAND_LINE_METHODS`) and by the benchmarks' explainers
(:mod:`captum_uncertainty.experiments.benchmark`, the ground-truth benchmark's methods), which
call ``attribute`` on what a constructor returns with their own settings.

The constructors import Captum and the library's attribution classes when called, so that
importing this module (and the command line that reads its table) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple

import torch
from torch import Tensor

from captum_uncertainty.forward import UncertaintyForward

if TYPE_CHECKING:
    from captum.attr import IntegratedGradients, KernelShap, Lime, Saliency

    from captum_uncertainty.attr import (
        BlurIntegratedGradients,
        GuidedIntegratedGradients,
        UABackprop,
        UncertaintyIntegratedGradients,
    )

__all__ = [
    "BLURRED",
    "as_map",
    "clue_map",
    "in_class_path_map",
    "COMMAND_LINE_METHODS",
    "Method",
    "NO_PATH",
    "SAMPLED",
    "build_blur_ig",
    "build_captum_integrated_gradients",
    "build_guided_ig",
    "build_integrated_gradients",
    "build_kernel_shap",
    "build_lime",
    "build_saliency",
    "build_ua_backprop",
    "methods_taking",
    "pixel_blocks",
]


def build_ua_backprop(forward: UncertaintyForward) -> UABackprop:
    """The library's :class:`~captum_uncertainty.attr.UABackprop`."""
    from captum_uncertainty.attr import UABackprop

    return UABackprop(forward)


def build_integrated_gradients(forward: UncertaintyForward) -> UncertaintyIntegratedGradients:
    """The library's :class:`~captum_uncertainty.attr.UncertaintyIntegratedGradients`."""
    from captum_uncertainty.attr import UncertaintyIntegratedGradients

    return UncertaintyIntegratedGradients(forward)


def build_captum_integrated_gradients(forward: UncertaintyForward) -> IntegratedGradients:
    """Captum's ``IntegratedGradients``."""
    from captum.attr import IntegratedGradients

    return IntegratedGradients(forward)


def build_saliency(forward: UncertaintyForward) -> Saliency:
    """Captum's ``Saliency`` (the gradient)."""
    from captum.attr import Saliency

    return Saliency(forward)


def build_blur_ig(forward: UncertaintyForward) -> BlurIntegratedGradients:
    """The library's :class:`~captum_uncertainty.attr.BlurIntegratedGradients`."""
    from captum_uncertainty.attr import BlurIntegratedGradients

    return BlurIntegratedGradients(forward)


def build_guided_ig(forward: UncertaintyForward) -> GuidedIntegratedGradients:
    """The library's :class:`~captum_uncertainty.attr.GuidedIntegratedGradients`."""
    from captum_uncertainty.attr import GuidedIntegratedGradients

    return GuidedIntegratedGradients(forward)


def build_kernel_shap(forward: UncertaintyForward) -> KernelShap:
    """Captum's ``KernelShap``."""
    from captum.attr import KernelShap

    return KernelShap(forward)


def build_lime(forward: UncertaintyForward) -> Lime:
    """Captum's Lime with a ridge surrogate (alpha 1, the ``lime`` package's default): Captum's default
    Lasso (alpha 0.01) zeroes every coefficient when the target is an uncertainty of a few tenths of a
    nat, which leaves all-zero maps."""
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    return Lime(forward, interpretable_model=SkLearnRidge(alpha=1.0))


class Method(NamedTuple):
    """A ``--method``: its constructor, its fixed ``attribute`` arguments, and the options it refuses
    (``"n_steps"``, ``"baselines"``) with the reason."""

    build: Callable[[UncertaintyForward], Any]
    kwargs: Dict[str, Any]
    refuses: Dict[str, str]


BLURRED = "its path starts at a blurred copy of the input, not a baseline"
NO_PATH = "a gradient has no integration path, hence neither steps nor a baseline"
SAMPLED = "it samples perturbations of the input; it has no integration steps"

#: The command line's ``--method`` choices. ``ExplanationDistribution`` and ``CovarianceAttribution``
#: are not among them: they need a Captum class to explain every posterior sample with.
COMMAND_LINE_METHODS: Dict[str, Method] = {
    "ua_backprop": Method(
        build_ua_backprop,
        {"path": "auto"},
        dict.fromkeys(
            ("n_steps", "baselines"), "it runs path='auto' (FullGrad or InputGrad), which has no integration path"
        ),
    ),
    "integrated_gradients": Method(build_integrated_gradients, {}, {}),
    "uig": Method(build_integrated_gradients, {}, {}),
    "captum_integrated_gradients": Method(build_captum_integrated_gradients, {}, {}),
    "saliency": Method(build_saliency, {}, dict.fromkeys(("n_steps", "baselines"), NO_PATH)),
    "blur_ig": Method(build_blur_ig, {}, {"baselines": BLURRED}),
    "guided_ig": Method(build_guided_ig, {}, {}),
    "kernel_shap": Method(build_kernel_shap, {}, {"n_steps": SAMPLED}),
    "lime": Method(build_lime, {}, {"n_steps": SAMPLED}),
}


def methods_taking(option: str) -> List[str]:
    """The ``--method`` names that take ``option`` (``"n_steps"`` or ``"baselines"``)."""
    return [name for name, method in COMMAND_LINE_METHODS.items() if option not in method.refuses]


def as_map(attributions: Any) -> Tensor:
    """What an explainer returned as one detached map: the attributions of a tuple's first
    element, image attributions ``(N, C, H, W)`` summed over the channels to ``(N, 1, H, W)``."""
    if isinstance(attributions, tuple):
        attributions = attributions[0]
    return attributions.detach().sum(1, keepdim=True) if attributions.dim() == 4 else attributions.detach()


def clue_map(forward: UncertaintyForward, vae: Any, x: Tensor, max_iterations: int) -> Tensor:
    """CLUE's map of ``x`` with the benchmarks' search length."""
    from captum_uncertainty.attr import CLUE

    return CLUE(forward, vae).attribute(x, max_iterations=max_iterations)


def in_class_path_map(forward: UncertaintyForward, vae: Any, x: Tensor, n_steps: int, max_iterations: int) -> Tensor:
    """CounterfactualPathIG from the in-class fiducial, as the benchmarks run it: its
    ``FiducialWarning`` silenced (a fiducial that changes the class still gives a complete map;
    the VAE study counts the valid fiducials)."""
    import warnings

    from captum_uncertainty.attr import CounterfactualPathIG, FiducialWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FiducialWarning)
        return CounterfactualPathIG(forward, vae).attribute(
            x, fiducial="in_class", n_steps=n_steps, fiducial_kwargs={"max_iterations": max_iterations}
        )


def pixel_blocks(x: Tensor, block: int) -> Tensor:
    """Feature ids ``(1, 1, H, W)`` on ``x``'s device grouping ``x``'s pixels into ``block x block``
    squares, row by row (the last row and column of blocks may be narrower): the feature mask of
    KernelShap and LIME in the benchmarks."""
    height, width = x.shape[-2:]
    columns = (width + block - 1) // block
    rows = torch.arange(height, device=x.device) // block
    ids = rows[:, None] * columns + (torch.arange(width, device=x.device) // block)[None, :]
    return ids.view(1, 1, height, width)
