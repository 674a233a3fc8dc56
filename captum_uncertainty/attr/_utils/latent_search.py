"""Batched latent-space optimisation with per-input early stopping (CLUE, delta-CLUE, fiducials)."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

#: ``objective(latents, rows) -> (len(rows),)``: the per-input loss of the rows still searching.
Objective = Callable[[Tensor, Tensor], Tensor]
#: ``project(latents, rows) -> latents``: maps an Adam step back into the feasible set.
Projection = Callable[[Tensor, Tensor], Tensor]


class LatentSearch(NamedTuple):
    """The best latent code found per input, its loss, and how many iterations it ran."""

    latents: Tensor
    losses: Tensor
    iterations: Tensor


def check_search_settings(lr: float, max_iterations: int, tolerance: float, patience: int) -> None:
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    for name, value in (("max_iterations", max_iterations), ("patience", patience)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a non-negative number, got {tolerance!r}")


def search_latents(
    objective: Objective,
    start: Tensor,
    lr: float = 0.01,
    max_iterations: int = 500,
    tolerance: float = 1e-3,
    patience: int = 5,
    project: Optional[Projection] = None,
) -> LatentSearch:
    """Minimise a per-row objective over latent codes with Adam, every row on its own.

    Each row (input) keeps its own Adam moments and stops on its own: once its loss has not
    improved on its best value by more than ``tolerance`` for ``patience`` consecutive
    iterations, or after ``max_iterations``. Stopped rows leave the batch, so the result of a
    row does not depend on which other rows share the batch (batched search equals one-by-one
    search up to floating-point reduction order). The objective only ever sees the rows still
    running, with their indices. Returns the lowest-loss code each row visited.
    """
    check_search_settings(lr, max_iterations, tolerance, patience)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    latents = start.detach().clone()
    first_moment, second_moment = torch.zeros_like(latents), torch.zeros_like(latents)
    best_latents = latents.clone()
    best_losses = torch.full(latents.shape[:1], float("inf"), dtype=latents.dtype, device=latents.device)
    stalled = torch.zeros(latents.shape[:1], dtype=torch.long, device=latents.device)
    iterations = torch.zeros_like(stalled)
    active = torch.ones(latents.shape[:1], dtype=torch.bool, device=latents.device)
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
        active[rows[stalled[rows] >= patience]] = False
    return LatentSearch(best_latents, best_losses, iterations)
