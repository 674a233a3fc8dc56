"""Argument checks shared by the attribution classes (clear errors naming the argument)."""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from captum_uncertainty.forward import UncertaintyForward

__all__ = [
    "check_image_inputs",
    "check_internal_batch_size",
    "check_n_steps",
    "check_target_is_none",
    "check_uncertainty_forward",
]


def check_n_steps(n_steps: Any, minimum: int = 1) -> int:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < minimum:
        raise ValueError(f"n_steps must be an int >= {minimum}, got {n_steps!r}")
    return n_steps


def check_internal_batch_size(internal_batch_size: Any) -> Optional[int]:
    if internal_batch_size is not None and (
        isinstance(internal_batch_size, bool) or not isinstance(internal_batch_size, int) or internal_batch_size < 1
    ):
        raise ValueError(f"internal_batch_size must be a positive int or None, got {internal_batch_size!r}")
    return internal_batch_size


def check_uncertainty_forward(forward_func: Any, name: str = "forward_func") -> UncertaintyForward:
    if not isinstance(forward_func, UncertaintyForward):
        raise TypeError(
            f"{name} must be a captum_uncertainty.UncertaintyForward, got {type(forward_func).__name__}; "
            "wrap your models with UncertaintyForward(models, measure=...)"
        )
    return forward_func


def check_target_is_none(target: Any, method: str) -> None:
    """Methods that explain the scalar uncertainty itself take no ``target``."""
    if target is not None:
        raise ValueError(
            f"{method} explains the scalar uncertainty of each input, so target must be None, got {target!r}; "
            "for the class-i term of Wang et al.'s Eq. 4 use UncertaintyIntegratedGradients(...).attribute(x, target=i)"
        )


def check_image_inputs(inputs: Any, method: str, name: str = "inputs") -> Tensor:
    """One ``(N, C, H, W)`` floating tensor, or a clear error saying which methods take flat features."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(inputs).__name__}")
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
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {inputs.dtype}")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty batch dimension, got shape {tuple(inputs.shape)}")
    return inputs
