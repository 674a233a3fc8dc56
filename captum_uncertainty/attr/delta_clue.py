"""delta-CLUE: diverse CLUEs within a latent ball (Ley, Bhatt and Weller, 2021)."""

from __future__ import annotations

from typing import Any, Literal, Optional, Tuple, Union, overload

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor

from captum_uncertainty._validation import check_choice, check_positive_int, check_positive_number
from captum_uncertainty.attr._utils.checks import check_uncertainty_forward
from captum_uncertainty.attr._utils.counterfactual import (
    ClueSettings,
    Counterfactuals,
    check_counterfactual_inputs,
    clue_search,
    clue_settings,
    counterfactual_map,
)
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.generative.protocol import (
    LatentGenerativeModel,
    check_generative_model,
    decode_latents,
    encode_inputs,
)

__all__ = ["DeltaCLUE", "SUPPORTED_AGGREGATES", "uniform_in_ball", "project_to_ball"]

SUPPORTED_AGGREGATES = ("best", "mean")


class DeltaCLUE(Attribution):
    r"""delta-CLUE (Ley et al., 2021): a diverse set of CLUEs inside an L2 ball of the latent space.

    Runs the :class:`~captum_uncertainty.CLUE` objective ``w_u U(dec(z)) + w_d d(dec(z), x)`` from ``n_starts``
    random starting codes drawn uniformly from the ball ``||z - z_x||_2 <= delta`` around the
    encoder's code ``z_x``, and projects every Adam step back onto that ball, so that every
    solution stays within ``delta`` of ``z_x``. :meth:`counterfactuals` returns all the
    solutions (the diverse set, ``(N, K, ...)``); :meth:`attribute` turns them into one map per
    input: ``|x - dec(z)|`` of the lowest-objective solution (``aggregate="best"``, the default)
    or the mean of the K maps (``aggregate="mean"``).

    All starts of all inputs run as one batch; each keeps its own Adam state and stopping rule
    (see :class:`~captum_uncertainty.CLUE`). The K start offsets are drawn once from a seeded generator and shared by
    all inputs, so an input's solutions do not depend on the rest of the batch.

    Args:
        forward_func (UncertaintyForward): the Bayesian classifier's uncertainty.
        generative_model (LatentGenerativeModel): encoder/decoder pair.

    Examples::

        >>> dclue = DeltaCLUE(UncertaintyForward(models, measure="total"), vae)
        >>> found = dclue.counterfactuals(x, delta=2.0, n_starts=5)
        >>> found.images.shape                      # (N, 5, 1, 28, 28)
        >>> maps = dclue.attribute(x, delta=2.0)    # (N, 1, 28, 28)
    """

    def __init__(self, forward_func: UncertaintyForward, generative_model: Optional[LatentGenerativeModel]) -> None:
        super().__init__(check_uncertainty_forward(forward_func))
        self.generative_model = check_generative_model(generative_model, type(self).__name__)

    def has_convergence_delta(self) -> bool:
        return False

    @overload
    def attribute(
        self,
        inputs: Tensor,
        delta: float = 2.0,
        n_starts: int = 5,
        aggregate: str = "best",
        seed: int = 0,
        return_counterfactuals: Literal[False] = False,
        *,
        settings: Optional[ClueSettings] = None,
        **search_settings: Any,
    ) -> Tensor: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        delta: float = 2.0,
        n_starts: int = 5,
        aggregate: str = "best",
        seed: int = 0,
        *,
        return_counterfactuals: Literal[True],
        settings: Optional[ClueSettings] = None,
        **search_settings: Any,
    ) -> Tuple[Tensor, Counterfactuals]: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        delta: float = 2.0,
        n_starts: int = 5,
        aggregate: str = "best",
        seed: int = 0,
        return_counterfactuals: bool = False,
        *,
        settings: Optional[ClueSettings] = None,
        **search_settings: Any,
    ) -> Union[Tensor, Tuple[Tensor, Counterfactuals]]: ...

    @log_usage()
    def attribute(
        self,
        inputs: Tensor,
        delta: float = 2.0,
        n_starts: int = 5,
        aggregate: str = "best",
        seed: int = 0,
        return_counterfactuals: bool = False,
        *,
        settings: Optional[ClueSettings] = None,
        **search_settings: Any,
    ) -> Union[Tensor, Tuple[Tensor, Counterfactuals]]:
        r"""One delta-CLUE map per input.

        Args:
            inputs (Tensor): inputs ``(N, ...)`` to explain.
            delta (float): radius of the latent L2 ball around the encoder's code. Default: 2.0.
            n_starts (int): random starts per input (the size of the diverse set). Default: 5.
            aggregate (str): ``"best"`` (the map of the lowest-objective solution) or ``"mean"``
                (mean of the solutions' maps). Default: ``"best"``.
            seed (int): seed of the random starts. Default: 0.
            return_counterfactuals (bool): also return the
                :class:`~captum_uncertainty.attr.Counterfactuals` (all starts).
            settings (ClueSettings, optional, keyword only): all the search settings in one
                object. Default: ``None`` (the settings come from ``**search_settings``).
            **search_settings: any field of :class:`~captum_uncertainty.ClueSettings` by
                name (``uncertainty_weight=1.0, distance_weight=1.0, distance="l1",
                measure=None, lr=0.01, max_iterations=500, tolerance=1e-3, patience=5``);
                not together with ``settings``.

        Returns:
            Tensor: ``(N, 1, H, W)`` for images ``(N, C, H, W)``, otherwise the inputs' shape;
            with the :class:`~captum_uncertainty.attr.Counterfactuals` if requested.
        """
        check_choice(aggregate, "aggregate", SUPPORTED_AGGREGATES)
        found = self.counterfactuals(
            inputs,
            delta,
            n_starts,
            seed,
            settings=settings,
            **search_settings,
        )
        inputs = inputs.detach()
        if aggregate == "best":
            best = found.objective.argmin(1)
            maps = counterfactual_map(inputs, found.images[torch.arange(inputs.shape[0], device=best.device), best])
        else:
            repeated = inputs.unsqueeze(1).expand_as(found.images).flatten(0, 1)
            maps = counterfactual_map(repeated, found.images.flatten(0, 1))
            maps = maps.view((inputs.shape[0], -1) + tuple(maps.shape[1:])).mean(1)
        return (maps, found) if return_counterfactuals else maps

    def counterfactuals(
        self,
        inputs: Tensor,
        delta: float = 2.0,
        n_starts: int = 5,
        seed: int = 0,
        *,
        settings: Optional[ClueSettings] = None,
        **search_settings: Any,
    ) -> Counterfactuals:
        """All ``n_starts`` solutions per input, each field shaped ``(N, K, ...)`` (arguments as in
        :meth:`attribute`)."""
        inputs = check_counterfactual_inputs(inputs)
        check_positive_number(delta, "delta")
        check_positive_int(n_starts, "n_starts")
        settings = clue_settings(settings, **search_settings)
        batch = inputs.shape[0]
        with torch.no_grad():
            centres = encode_inputs(self.generative_model, inputs)
            decode_latents(self.generative_model, centres[:1], inputs[:1])
        generator = torch.Generator(device="cpu").manual_seed(seed)  # drawn on the CPU, moved to the inputs'
        offsets = uniform_in_ball(torch.Size((n_starts, centres.shape[1])), float(delta), generator).to(centres)
        centres = centres.repeat_interleave(n_starts, 0)
        starts = centres + offsets.repeat(batch, 1)

        def project(latents: Tensor, rows: Tensor) -> Tensor:
            return project_to_ball(latents, centres[rows], float(delta))

        found = clue_search(
            self.forward_func,
            self.generative_model,
            inputs.repeat_interleave(n_starts, 0),
            settings,
            starts=starts,
            project=project,
        )[0]
        per_input = Counterfactuals(*(field.view((batch, n_starts) + tuple(field.shape[1:])) for field in found))
        return per_input._replace(input_uncertainty=per_input.input_uncertainty[:, 0])


def uniform_in_ball(shape: torch.Size, radius: float, generator: torch.Generator) -> Tensor:
    """Offsets ``(N, D)`` drawn uniformly from the D-dimensional L2 ball of the given radius."""
    directions = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
    directions = directions / directions.norm(dim=1, keepdim=True)
    radii = radius * torch.rand(shape[:1], generator=generator, dtype=torch.float64, device=generator.device) ** (
        1.0 / shape[1]
    )
    return directions * radii.unsqueeze(1)


def project_to_ball(latents: Tensor, centres: Tensor, radius: float) -> Tensor:
    """The nearest point of the ball ``||z - centre||_2 <= radius`` to each row of ``latents``."""
    offsets = latents - centres
    norms = offsets.norm(dim=1, keepdim=True)
    return centres + offsets * torch.clamp(radius / norms.clamp_min(1e-12), max=1.0)
