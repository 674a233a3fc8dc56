"""Shared pieces of the counterfactual methods (CLUE, delta-CLUE, counterfactual-path IG): the input
check, the CLUE settings, objective and search, and the ``|x - x_cf|`` map."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from captum_uncertainty._validation import (
    check_choice,
    check_finite_tensor,
    check_floating_tensor,
    check_non_negative_number,
    check_positive_int,
    check_positive_number,
)
from captum_uncertainty.attr._utils.latent_search import LatentSearch, Projection, search_latents
from captum_uncertainty.forward import MEASURES, UncertaintyForward
from captum_uncertainty.generative.protocol import LatentGenerativeModel, decode_latents, encode_inputs

__all__ = [
    "SUPPORTED_DISTANCES",
    "ClueObjective",
    "ClueSettings",
    "Counterfactuals",
    "Distance",
    "check_counterfactual_inputs",
    "clue_search",
    "clue_settings",
    "counterfactual_map",
    "resolve_distance",
]

Distance = Union[str, Callable[[Tensor, Tensor], Tensor]]
SUPPORTED_DISTANCES = ("l1", "l2")


@dataclasses.dataclass(frozen=True)
class ClueSettings:
    r"""The settings of a CLUE / delta-CLUE latent search, checked once when built.

    Args:
        uncertainty_weight (float): ``w_u``. Default: 1.0.
        distance_weight (float): ``w_d``. Default: 1.0 (equal weights, Wang et al. App. B).
        distance (str or callable): ``"l1"`` (mean absolute difference), ``"l2"`` (mean
            squared difference) or ``d(counterfactuals, inputs) -> (N,)``. Default: ``"l1"``.
        measure (str, optional): the uncertainty to reduce (``"total"``, ``"aleatoric"``,
            ``"epistemic"``). Default: the forward's measure.
        lr (float): Adam learning rate. Default: 0.01.
        max_iterations (int): most Adam iterations per input. Default: 500.
        tolerance (float): smallest objective improvement that resets the patience count.
            Default: 1e-3.
        patience (int): iterations without such an improvement before an input stops. Default: 5.

    Examples::

        >>> settings = ClueSettings(distance="l2", max_iterations=200)
        >>> CLUE(uf, vae).attribute(x, settings=settings)
        >>> CLUE(uf, vae).attribute(x, distance="l2", max_iterations=200)  # the same search
    """

    uncertainty_weight: float = 1.0
    distance_weight: float = 1.0
    distance: Distance = "l1"
    measure: Optional[str] = None
    lr: float = 0.01
    max_iterations: int = 500
    tolerance: float = 1e-3
    patience: int = 5

    def __post_init__(self) -> None:
        check_non_negative_number(self.uncertainty_weight, "uncertainty_weight")
        check_non_negative_number(self.distance_weight, "distance_weight")
        if not callable(self.distance):
            check_choice(
                self.distance, "distance", SUPPORTED_DISTANCES, extra="or a callable d(counterfactuals, inputs) -> (N,)"
            )
        if self.measure is not None:
            check_choice(self.measure, "measure", MEASURES)
        check_positive_number(self.lr, "lr")
        check_positive_int(self.max_iterations, "max_iterations")
        check_non_negative_number(self.tolerance, "tolerance")
        check_positive_int(self.patience, "patience")


def clue_settings(settings: Optional[ClueSettings] = None, **keywords: Any) -> ClueSettings:
    """``settings``, or the :class:`ClueSettings` of the keyword arguments (never both)."""
    unknown = sorted(set(keywords) - {f.name for f in dataclasses.fields(ClueSettings)})
    if unknown:
        raise TypeError(f"unknown CLUE search settings {unknown}; the settings are the fields of ClueSettings")
    from_keywords = ClueSettings(**keywords)
    if settings is None:
        return from_keywords
    if not isinstance(settings, ClueSettings):
        raise TypeError(f"settings must be a ClueSettings or None, got {type(settings).__name__}")
    if from_keywords != ClueSettings():
        raise ValueError("pass the search settings either as settings= or as keyword arguments, not both")
    return settings


class Counterfactuals(NamedTuple):
    """What a counterfactual search found, per input (and per start for delta-CLUE).

    Attributes:
        latents (Tensor): latent codes ``(N, D)`` (``(N, K, D)`` for K starts).
        images (Tensor): decoded counterfactuals, the inputs' shape (``(N, K, ...)``).
        uncertainty (Tensor): the searched measure at the counterfactuals ``(N,)`` (``(N, K)``).
        input_uncertainty (Tensor): the same measure at the inputs ``(N,)``.
        distance (Tensor): distance to the input, as optimised ``(N,)`` (``(N, K)``).
        objective (Tensor): the final objective ``w_u * U + w_d * d`` (same shape).
        iterations (Tensor): Adam iterations each search ran (same shape, int64).
    """

    latents: Tensor
    images: Tensor
    uncertainty: Tensor
    input_uncertainty: Tensor
    distance: Tensor
    objective: Tensor
    iterations: Tensor


class ClueObjective:
    """``w_u * U(dec(z)) + w_d * d(dec(z), x)`` per input, for the rows still searching."""

    def __init__(
        self,
        forward: UncertaintyForward,
        generative_model: LatentGenerativeModel,
        inputs: Tensor,
        settings: ClueSettings,
    ) -> None:
        self.forward = forward
        self.generative_model = generative_model
        self.inputs = inputs
        self.weights = (float(settings.uncertainty_weight), float(settings.distance_weight))
        self.distance = resolve_distance(settings.distance)
        self.measure = forward.measure if settings.measure is None else settings.measure

    def terms(self, latents: Tensor, rows: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        images = decode_latents(self.generative_model, latents, self.inputs[rows])
        uncertainty = self.forward.decompose(images).select(self.measure)
        distance = self.distance(images, self.inputs[rows])
        return images, uncertainty, distance, self.weights[0] * uncertainty + self.weights[1] * distance

    def __call__(self, latents: Tensor, rows: Tensor) -> Tensor:
        return self.terms(latents, rows)[-1]

    def summarise(
        self, search: LatentSearch, before: Optional[Tensor] = None
    ) -> Tuple[Counterfactuals, Dict[str, Tensor]]:
        """What the search found, and the posterior's :meth:`~captum_uncertainty.UncertaintyForward.summary`
        at the counterfactuals (one pass gives both); ``before``, the searched measure at the
        inputs, is computed when not given."""
        with torch.no_grad():
            images = decode_latents(self.generative_model, search.latents, self.inputs)
            read = self.forward.summary(images)
            uncertainty, distance = read[self.measure], self.distance(images, self.inputs)
            objective = self.weights[0] * uncertainty + self.weights[1] * distance
            if before is None:
                before = self.forward.decompose(self.inputs).select(self.measure)
        found = Counterfactuals(search.latents, images, uncertainty, before, distance, objective, search.iterations)
        return found, read


def clue_search(
    forward: UncertaintyForward,
    generative_model: LatentGenerativeModel,
    inputs: Tensor,
    settings: ClueSettings,
    starts: Optional[Tensor] = None,
    project: Optional[Projection] = None,
    at_inputs: Optional[Dict[str, Tensor]] = None,
) -> Tuple[Counterfactuals, Dict[str, Tensor]]:
    """The CLUE search of checked ``inputs``: from the encoder's codes (or ``starts``, one row per
    input), each Adam step mapped back by ``project`` when given. Returns what it found and the
    posterior's summary at the counterfactuals (from the same pass); ``at_inputs``, the summary
    at the inputs when the caller has it, saves a pass."""
    objective = ClueObjective(forward, generative_model, inputs, settings)
    if starts is None:
        with torch.no_grad():
            starts = encode_inputs(generative_model, inputs)
            decode_latents(generative_model, starts[:1], inputs[:1])
    search = search_latents(
        objective,
        starts,
        lr=settings.lr,
        max_iterations=settings.max_iterations,
        tolerance=settings.tolerance,
        patience=settings.patience,
        project=project,
    )
    return objective.summarise(search, None if at_inputs is None else at_inputs[objective.measure])


def resolve_distance(distance: Distance) -> Callable[[Tensor, Tensor], Tensor]:
    """The distance function ``d(counterfactuals, inputs) -> (N,)`` of a :class:`ClueSettings` distance."""
    if callable(distance):
        return distance
    check_choice(distance, "distance", SUPPORTED_DISTANCES, extra="or a callable d(counterfactuals, inputs) -> (N,)")
    if distance == "l1":
        return lambda a, b: (a - b).abs().flatten(1).mean(1)
    return lambda a, b: (a - b).square().flatten(1).mean(1)


def check_counterfactual_inputs(inputs: Any, name: str = "inputs") -> Tensor:
    """A finite floating batch ``(N, ...)`` with ``N >= 1`` and at least 2 dimensions, detached."""
    check_floating_tensor(inputs, name)
    if inputs.dim() < 2 or inputs.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (N, ...), got shape {tuple(inputs.shape)}")
    check_finite_tensor(inputs, name)
    return inputs.detach()


def counterfactual_map(inputs: Tensor, counterfactuals: Tensor) -> Tensor:
    """``|x - x_cf|``, summed over channels for ``(N, C, H, W)`` images (Wang et al. App. B.1.2)."""
    difference = (inputs.detach() - counterfactuals.detach()).abs()
    return difference.sum(1, keepdim=True) if difference.dim() == 4 else difference
