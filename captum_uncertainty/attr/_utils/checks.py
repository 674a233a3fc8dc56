"""Argument checks shared by the attribution classes (clear errors naming the argument)."""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from captum_uncertainty._validation import (
    check_floating_tensor,
    check_int,
    check_optional_positive_int,
    check_tensor,
)
from captum_uncertainty.forward import UncertaintyForward

__all__ = [
    "check_floating_batch",
    "check_image_inputs",
    "check_internal_batch_size",
    "check_n_steps",
    "check_classifier_forward",
    "check_uncertainty_forward",
]


def check_n_steps(n_steps: Any, minimum: int = 1) -> int:
    """An ``int >= minimum`` number of integration steps."""
    return check_int(n_steps, "n_steps", minimum=minimum)


def check_internal_batch_size(internal_batch_size: Any) -> Optional[int]:
    """``None`` or a positive int bounding the path points per forward pass."""
    return check_optional_positive_int(internal_batch_size, "internal_batch_size")


def check_uncertainty_forward(forward_func: Any, name: str = "forward_func") -> UncertaintyForward:
    """An :class:`~captum_uncertainty.UncertaintyForward`, or a ``TypeError`` saying how to build one."""
    if not isinstance(forward_func, UncertaintyForward):
        raise TypeError(
            f"{name} must be a captum_uncertainty.UncertaintyForward, got {type(forward_func).__name__}; "
            "wrap your models with UncertaintyForward(models, measure=...)"
        )
    return forward_func


#: What explains a regressor's uncertainty, named by the classifier-only methods' refusal.
_REGRESSION_METHODS = (
    "UncertaintyIntegratedGradients, LayerUncertaintyIntegratedGradients, CovarianceAttribution, "
    "ExplanationDistribution, or Captum's IntegratedGradients / NoiseTunnel / KernelShap / FeatureAblation on the "
    "UncertaintyForward"
)


def check_classifier_forward(
    forward_func: Any, method: str, reason: str, name: str = "forward_func"
) -> UncertaintyForward:
    """An :class:`~captum_uncertainty.UncertaintyForward` of a classifier, or a ``ValueError`` saying
    why ``method`` needs one (``reason``) and which methods explain a regressor instead."""
    forward = check_uncertainty_forward(forward_func, name)
    if not forward.likelihood.is_classifier:
        raise ValueError(
            f"{method} is built on {reason} and explains classifiers, but {name} reads {forward.likelihood!r}; "
            f"for a regressor's variance use {_REGRESSION_METHODS}"
        )
    return forward


def check_image_inputs(inputs: Any, method: str, name: str = "inputs") -> Tensor:
    """One ``(N, C, H, W)`` floating tensor, or a clear error saying which methods take flat features."""
    check_tensor(inputs, name, "(N, C, H, W)")
    if inputs.dim() != 4:
        raise ValueError(
            f"{method} needs {name} with a spatial layout (N, C, H, W), got shape {tuple(inputs.shape)}; "
            "for flat features use UncertaintyIntegratedGradients, GuidedIntegratedGradients, UABackprop with "
            "path='grad', 'inputgrad' or 'integrated_gradients', or Captum's Saliency / IntegratedGradients / "
            "Lime / KernelShap on the UncertaintyForward"
        )
    check_floating_batch(inputs, name)
    return inputs


def check_floating_batch(inputs: Any, name: str = "inputs") -> Tensor:
    """A floating tensor with a non-empty batch dimension."""
    check_floating_tensor(inputs, name)
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty batch dimension, got shape {tuple(inputs.shape)}")
    return inputs
