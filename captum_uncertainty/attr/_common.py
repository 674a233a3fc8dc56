"""Small helpers shared by the attribution classes (vendored, so we import no ``captum._utils``)."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from captum_uncertainty.forward import UncertaintyForward

#: Captum's integration rules for path methods.
INTEGRATION_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def check_n_steps(n_steps: Any, minimum: int = 1) -> int:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < minimum:
        raise ValueError(f"n_steps must be an int >= {minimum}, got {n_steps!r}")
    return n_steps


def quadrature(method: str, n_steps: int, dtype: torch.dtype = torch.float64) -> Tuple[Tensor, Tensor]:
    """Points ``alpha_k`` in [0, 1] and weights ``w_k`` of Captum's integration rules.

    The same rules (and the same points) as ``captum.attr.IntegratedGradients``: Gauss-Legendre
    on [0, 1], or left / right / middle / trapezoid Riemann sums (``n_steps >= 2`` for Riemann,
    as Captum requires).
    """
    if method not in INTEGRATION_METHODS:
        raise ValueError(f"method must be one of {INTEGRATION_METHODS}, got {method!r}")
    if method == "gausslegendre":
        check_n_steps(n_steps)
        points, weights = np.polynomial.legendre.leggauss(n_steps)
        return torch.tensor(0.5 * (1 + points), dtype=dtype), torch.tensor(0.5 * weights, dtype=dtype)
    check_n_steps(n_steps, minimum=2)
    weights = torch.full((n_steps,), 1.0 / n_steps, dtype=dtype)
    rule = method.split("_")[1]
    if rule == "trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        alphas = torch.linspace(0, 1, n_steps, dtype=dtype)
    elif rule == "left":
        alphas = torch.linspace(0, 1 - 1 / n_steps, n_steps, dtype=dtype)
    elif rule == "middle":
        alphas = torch.linspace(1 / (2 * n_steps), 1 - 1 / (2 * n_steps), n_steps, dtype=dtype)
    else:
        alphas = torch.linspace(1 / n_steps, 1, n_steps, dtype=dtype)
    return alphas, weights


def check_uncertainty_forward(forward_func: Any, name: str = "forward_func") -> UncertaintyForward:
    if not isinstance(forward_func, UncertaintyForward):
        raise TypeError(
            f"{name} must be a captum_uncertainty.UncertaintyForward, got {type(forward_func).__name__}; "
            "wrap your models with UncertaintyForward(models, measure=...)"
        )
    return forward_func


def check_image_inputs(inputs: Any, method: str, name: str = "inputs") -> Tensor:
    """One ``(N, C, H, W)`` floating tensor, or a clear error saying which methods take flat features."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise ValueError(
            f"{method} needs {name} with a spatial layout (N, C, H, W), got shape {tuple(inputs.shape)}; "
            "for flat features use UncertaintyIntegratedGradients, GuidedIntegratedGradients or Captum's "
            "Saliency / IntegratedGradients / Lime / KernelShap on the UncertaintyForward"
        )
    if not inputs.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise ValueError(f"{name} must contain at least one example")
    return inputs


def additional_args_tuple(additional_forward_args: Any) -> Tuple[Any, ...]:
    if additional_forward_args is None:
        return ()
    return additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,)


def repeat_batch_args(args: Tuple[Any, ...], batch: int, repeats: int) -> Tuple[Any, ...]:
    """Repeat tensor arguments with a leading batch dimension ``repeats`` times (step-major)."""
    return tuple(
        arg.repeat((repeats,) + (1,) * (arg.dim() - 1)) if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == batch else arg
        for arg in args
    )


def steps_per_chunk(internal_batch_size: Optional[int], batch: int, n_steps: int) -> int:
    """How many path steps one forward pass may hold (at least one)."""
    if internal_batch_size is None:
        return n_steps
    if isinstance(internal_batch_size, bool) or not isinstance(internal_batch_size, int) or internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be a positive int or None, got {internal_batch_size!r}")
    return max(1, internal_batch_size // batch)
