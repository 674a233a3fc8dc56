"""CLUE: Counterfactual Latent Uncertainty Explanations (Antoran et al., ICLR 2021)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor

from captum_uncertainty._validation import check_choice
from captum_uncertainty.attr._utils.checks import check_uncertainty_forward
from captum_uncertainty.attr._utils.latent_search import LatentSearch, search_latents
from captum_uncertainty.forward import MEASURES, UncertaintyForward
from captum_uncertainty.generative.protocol import (
    LatentGenerativeModel,
    check_generative_model,
    decode_latents,
    encode_inputs,
)

__all__ = ["CLUE", "Counterfactuals", "counterfactual_map"]

Distance = Union[str, Callable[[Tensor, Tensor], Tensor]]
DISTANCES = ("l1", "l2")


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


class CLUE(Attribution):
    r"""CLUE (Antoran et al., 2021): the nearest on-manifold input the model is sure about.

    Searches the latent space of a generative model for ``z`` minimising

    .. math:: w_u \, U(\mathrm{dec}(z)) + w_d \, d(\mathrm{dec}(z), x)

    from the encoder's code of ``x``, with Adam, and explains ``x`` by what had to change:
    the attribution map is ``|x - dec(z_CLUE)|`` summed over channels (Wang et al., 2023,
    App. B.1.2). ``U`` is any of the forward's measures (total, aleatoric, epistemic).

    Choices where the papers leave room (documented and tested):

    * the distance ``"l1"`` is the *mean* absolute difference per input element (the L1 norm
      divided by the number of elements), so that with Wang et al.'s equal weights the
      uncertainty (nats) and the distance terms have comparable scales; ``"l2"`` is the mean
      squared difference; a callable ``d(counterfactuals, inputs) -> (N,)`` is used as given;
    * early stopping (Wang et al.: Adam, learning rate 0.01, at most 500 iterations, "patience"
      1e-3): an input stops once its objective has not improved by more than ``tolerance`` for
      ``patience`` consecutive iterations; the lowest-objective code visited is returned;
    * each input is optimised on its own (its own Adam moments and stopping), so a batched
      search gives the one-by-one result.

    The generative model is any :class:`~captum_uncertainty.generative.LatentGenerativeModel`;
    neither it nor the classifier is modified (gradients are taken with respect to the latent
    codes only).

    Args:
        forward_func (UncertaintyForward): the Bayesian classifier's uncertainty.
        generative_model (LatentGenerativeModel): encoder/decoder pair, e.g. a trained
            :class:`~captum_uncertainty.generative.VAE`.

    Examples::

        >>> vae = train_vae(VAE(image_shape=(1, 28, 28)), data.x_train, epochs=20)
        >>> clue = CLUE(UncertaintyForward(models, measure="epistemic"), vae)
        >>> maps = clue.attribute(x)                     # (N, 1, 28, 28)
        >>> found = clue.counterfactuals(x)
        >>> found.uncertainty < found.input_uncertainty  # lower uncertainty, close to x
    """

    method_name = "CLUE"

    def __init__(self, forward_func: UncertaintyForward, generative_model: Optional[LatentGenerativeModel]) -> None:
        super().__init__(check_uncertainty_forward(forward_func))
        self.generative_model = check_generative_model(generative_model, type(self).__name__)

    def has_convergence_delta(self) -> bool:
        return False

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: Tensor,
        uncertainty_weight: float = 1.0,
        distance_weight: float = 1.0,
        distance: Distance = "l1",
        measure: Optional[str] = None,
        lr: float = 0.01,
        max_iterations: int = 500,
        tolerance: float = 1e-3,
        patience: int = 5,
        return_counterfactuals: bool = False,
    ) -> Any:
        r"""The CLUE map ``|x - dec(z_CLUE)|``, summed over channels for images.

        Args:
            inputs (Tensor): inputs ``(N, ...)`` to explain, in the space the classifier reads.
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
            patience (int): iterations without such an improvement before an input stops.
                Default: 5.
            return_counterfactuals (bool): also return the
                :class:`~captum_uncertainty.attr.Counterfactuals`.

        Returns:
            Tensor: ``(N, 1, H, W)`` for image inputs ``(N, C, H, W)``, otherwise the inputs'
            shape; with the :class:`~captum_uncertainty.attr.Counterfactuals` if requested.
        """
        found = self.counterfactuals(
            inputs, uncertainty_weight, distance_weight, distance, measure, lr, max_iterations, tolerance, patience
        )
        maps = counterfactual_map(inputs, found.images)
        return (maps, found) if return_counterfactuals else maps

    def counterfactuals(
        self,
        inputs: Tensor,
        uncertainty_weight: float = 1.0,
        distance_weight: float = 1.0,
        distance: Distance = "l1",
        measure: Optional[str] = None,
        lr: float = 0.01,
        max_iterations: int = 500,
        tolerance: float = 1e-3,
        patience: int = 5,
    ) -> Counterfactuals:
        """Run the latent search (arguments as in :meth:`attribute`) and return what it found."""
        inputs = check_counterfactual_inputs(inputs)
        objective = ClueObjective(
            self.forward_func, self.generative_model, inputs, uncertainty_weight, distance_weight, distance, measure
        )
        with torch.no_grad():
            start = encode_inputs(self.generative_model, inputs)
            decode_latents(self.generative_model, start[:1], inputs[:1])
        search = search_latents(objective, start, lr, max_iterations, tolerance, patience)
        return objective.summarise(search)


class ClueObjective:
    """``w_u * U(dec(z)) + w_d * d(dec(z), x)`` per input, for the rows still searching."""

    def __init__(
        self,
        forward: UncertaintyForward,
        generative_model: LatentGenerativeModel,
        inputs: Tensor,
        uncertainty_weight: float,
        distance_weight: float,
        distance: Distance,
        measure: Optional[str],
    ) -> None:
        for name, weight in (("uncertainty_weight", uncertainty_weight), ("distance_weight", distance_weight)):
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
                raise ValueError(f"{name} must be a non-negative number, got {weight!r}")
        self.forward = forward
        self.generative_model = generative_model
        self.inputs = inputs
        self.weights = (float(uncertainty_weight), float(distance_weight))
        self.distance = resolve_distance(distance)
        self.measure = forward.measure if measure is None else check_choice(measure, "measure", MEASURES)

    def terms(self, latents: Tensor, rows: Tensor):
        images = decode_latents(self.generative_model, latents, self.inputs[rows])
        uncertainty = self.forward.decompose(images).select(self.measure)
        distance = self.distance(images, self.inputs[rows])
        return images, uncertainty, distance, self.weights[0] * uncertainty + self.weights[1] * distance

    def __call__(self, latents: Tensor, rows: Tensor) -> Tensor:
        return self.terms(latents, rows)[-1]

    def summarise(self, search: LatentSearch) -> Counterfactuals:
        rows = torch.arange(self.inputs.shape[0], device=self.inputs.device)
        with torch.no_grad():
            images, uncertainty, distance, objective = self.terms(search.latents, rows)
            before = self.forward.decompose(self.inputs).select(self.measure)
        return Counterfactuals(search.latents, images, uncertainty, before, distance, objective, search.iterations)


def resolve_distance(distance: Distance) -> Callable[[Tensor, Tensor], Tensor]:
    if callable(distance):
        return distance
    if distance == "l1":
        return lambda a, b: (a - b).abs().flatten(1).mean(1)
    if distance == "l2":
        return lambda a, b: (a - b).square().flatten(1).mean(1)
    raise ValueError(
        f"distance must be one of {DISTANCES} or a callable d(counterfactuals, inputs) -> (N,), got {distance!r}"
    )


def check_counterfactual_inputs(inputs: Any, name: str = "inputs") -> Tensor:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {inputs.dtype}")
    if inputs.dim() < 2 or inputs.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (N, ...), got shape {tuple(inputs.shape)}")
    if not torch.isfinite(inputs).all():
        raise ValueError(f"{name} contains NaN or inf")
    return inputs.detach()


def counterfactual_map(inputs: Tensor, counterfactuals: Tensor) -> Tensor:
    """``|x - x_cf|``, summed over channels for ``(N, C, H, W)`` images (Wang et al. App. B.1.2)."""
    difference = (inputs.detach() - counterfactuals.detach()).abs()
    return difference.sum(1, keepdim=True) if difference.dim() == 4 else difference
