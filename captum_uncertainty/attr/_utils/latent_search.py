"""Batched latent-space optimisation with per-input early stopping (CLUE, delta-CLUE, fiducials),
and the loss terms of the fiducial searches."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from captum_uncertainty._validation import check_non_negative_number, check_positive_int, check_positive_number

__all__ = [
    "LatentSearch",
    "LossNotDecreasing",
    "Objective",
    "Projection",
    "class_averaged_bce",
    "class_cross_entropy",
    "reconstruction_loss",
    "search_latents",
]

#: ``objective(latents, rows) -> (len(rows),)``: the per-input loss of the rows still searching.
Objective = Callable[[Tensor, Tensor], Tensor]
#: ``project(latents, rows) -> latents``: maps an Adam step back into the feasible set.
Projection = Callable[[Tensor, Tensor], Tensor]


class LatentSearch(NamedTuple):
    """The best latent code found per input, its loss, and how many iterations it ran."""

    latents: Tensor
    losses: Tensor
    iterations: Tensor


def _check_search_settings(lr: float, max_iterations: int, tolerance: float, patience: int) -> None:
    check_positive_number(lr, "lr")
    check_positive_int(max_iterations, "max_iterations")
    check_positive_int(patience, "patience")
    check_non_negative_number(tolerance, "tolerance")


class LossNotDecreasing:
    r"""Stopping rule of the Featurespace reference code (``tfp.optimizer.convergence_criteria.
    LossNotDecreasing``), per input.

    With ``d_t = L_{t-1} - L_t`` (``d_1 = 0``) and the moving average
    ``a_t = d_t + (1 - 1/window_size) (a_{t-1} - d_t)`` (``a_0 = 0``), an input stops at the
    first step ``t >= min_steps`` where ``a_t < max(atol, rtol * a_W)``, ``a_W`` being the
    average after the first ``window_size`` steps. Unset tolerances count as 0; at least one
    must be given.

    Args:
        atol (float, optional): absolute threshold on the average decrease.
        rtol (float, optional): threshold relative to the average decrease of the first window.
        window_size (int): effective window of the moving average. Default: 10.
        min_steps (int): no input stops before this many steps. Default: 20.
    """

    def __init__(
        self, atol: Optional[float] = None, rtol: Optional[float] = None, window_size: int = 10, min_steps: int = 20
    ) -> None:
        if atol is None and rtol is None:
            raise ValueError("LossNotDecreasing needs atol or rtol (or both)")
        for name, value in (("atol", atol), ("rtol", rtol)):
            if value is not None:
                check_non_negative_number(value, name)
        check_positive_int(window_size, "window_size")
        check_positive_int(min_steps, "min_steps")
        self.atol, self.rtol = float(atol or 0.0), float(rtol or 0.0)
        self.window_size, self.min_steps = window_size, min_steps

    def start(self, losses: Tensor) -> "_AverageDecreaseState":
        return _AverageDecreaseState(self, losses)


class _AverageDecreaseState:
    """Per-input moving averages of :class:`LossNotDecreasing` over one search."""

    def __init__(self, rule: LossNotDecreasing, like: Tensor) -> None:
        self.rule = rule
        self.previous = torch.full_like(like, float("nan"))
        self.average = torch.zeros_like(like)
        self.initial = torch.zeros_like(like)

    def stop(self, rows: Tensor, losses: Tensor, step: int) -> Tensor:
        rule = self.rule
        previous = self.previous[rows]
        decrease = torch.where(previous.isnan(), torch.zeros_like(losses), previous - losses)
        average = decrease + (1 - 1 / rule.window_size) * (self.average[rows] - decrease)
        threshold = torch.clamp(rule.rtol * self.initial[rows], min=rule.atol)
        self.previous[rows], self.average[rows] = losses, average
        if step <= rule.window_size:
            self.initial[rows] = average
        return (average < threshold) & (step >= rule.min_steps)


def search_latents(
    objective: Objective,
    start: Tensor,
    lr: float = 0.01,
    max_iterations: int = 500,
    tolerance: float = 1e-3,
    patience: int = 5,
    project: Optional[Projection] = None,
    stopping: Optional[LossNotDecreasing] = None,
) -> LatentSearch:
    """Minimise a per-row objective over latent codes with Adam, every row on its own.

    Each row (input) keeps its own Adam moments and stops on its own: once its loss has not
    improved on its best value by more than ``tolerance`` for ``patience`` consecutive
    iterations (or, with ``stopping``, by that rule), or after ``max_iterations``. Stopped rows
    leave the batch, so the result of a row does not depend on which other rows share the batch
    (batched search equals one-by-one search up to floating-point reduction order). The
    objective only ever sees the rows still running, with their indices. Returns the lowest-loss
    code each row visited.
    """
    _check_search_settings(lr, max_iterations, tolerance, patience)
    if stopping is not None and not isinstance(stopping, LossNotDecreasing):
        raise TypeError(f"stopping must be None or a LossNotDecreasing rule, got {type(stopping).__name__}")
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    latents = start.detach().clone()
    first_moment, second_moment = torch.zeros_like(latents), torch.zeros_like(latents)
    best_latents = latents.clone()
    best_losses = torch.full(latents.shape[:1], float("inf"), dtype=latents.dtype, device=latents.device)
    stalled = torch.zeros(latents.shape[:1], dtype=torch.long, device=latents.device)
    iterations = torch.zeros_like(stalled)
    active = torch.ones(latents.shape[:1], dtype=torch.bool, device=latents.device)
    average_decrease = stopping.start(best_losses) if stopping is not None else None
    for step in range(1, max_iterations + 1):
        rows = active.nonzero().flatten()
        if rows.numel() == 0:
            break
        current = latents[rows].requires_grad_(True)
        with torch.enable_grad():
            losses = objective(current, rows)
            (gradient,) = torch.autograd.grad(losses.sum(), current)
        losses = losses.detach()
        better = losses < best_losses[rows]
        best_latents[rows[better]] = latents[rows[better]]
        stalled[rows] = torch.where(losses < best_losses[rows] - tolerance, 0, stalled[rows] + 1)
        best_losses[rows] = torch.minimum(losses, best_losses[rows])
        iterations[rows] += 1
        first_moment[rows] = beta1 * first_moment[rows] + (1 - beta1) * gradient
        second_moment[rows] = beta2 * second_moment[rows] + (1 - beta2) * gradient.square()
        corrected = first_moment[rows] / (1 - beta1**step)
        scale = (second_moment[rows] / (1 - beta2**step)).sqrt() + eps
        moved = latents[rows] - lr * corrected / scale
        latents[rows] = project(moved, rows) if project is not None else moved
        done = stalled[rows] >= patience if average_decrease is None else average_decrease.stop(rows, losses, step)
        active[rows[done]] = False
    return LatentSearch(best_latents, best_losses, iterations)


def reconstruction_loss(images: Tensor, inputs: Tensor) -> Tensor:
    """Binary cross-entropy of the decoded images against the inputs, summed per input."""
    clipped = images.clamp(1e-6, 1 - 1e-6)
    return torch.nn.functional.binary_cross_entropy(clipped, inputs, reduction="none").flatten(1).sum(1)


def class_cross_entropy(log_mean: Tensor, target: Tensor) -> Tensor:
    """``-log p_y`` of the posterior predictive ``(B, C)`` (log space)."""
    return -log_mean.gather(1, target.unsqueeze(1)).squeeze(1)


def class_averaged_bce(log_mean: Tensor, target: Tensor) -> Tensor:
    """Keras's ``binary_crossentropy(onehot(y), p)``: per-class BCE averaged over the classes."""
    probabilities = log_mean.exp().clamp(1e-7, 1 - 1e-7)
    onehot = torch.nn.functional.one_hot(target, probabilities.shape[1]).to(probabilities)
    return torch.nn.functional.binary_cross_entropy(probabilities, onehot, reduction="none").mean(1)
