"""CLUE: Counterfactual Latent Uncertainty Explanations (Antoran et al., ICLR 2021)."""

from __future__ import annotations

from typing import Any, Literal, Optional, Tuple, Union, overload

from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor

from captum_uncertainty.attr._utils.checks import check_uncertainty_forward
from captum_uncertainty.attr._utils.counterfactual import (
    SUPPORTED_DISTANCES,
    ClueSettings,
    Counterfactuals,
    check_counterfactual_inputs,
    clue_search,
    clue_settings,
    counterfactual_map,
)
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.generative.protocol import LatentGenerativeModel, check_generative_model

__all__ = ["CLUE", "ClueSettings", "Counterfactuals", "SUPPORTED_DISTANCES", "counterfactual_map"]


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

    @overload
    def attribute(
        self,
        inputs: Tensor,
        return_counterfactuals: Literal[False] = False,
        *,
        settings: Optional[ClueSettings] = None,
        **search_settings: Any,
    ) -> Tensor: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        *,
        return_counterfactuals: Literal[True],
        settings: Optional[ClueSettings] = None,
        **search_settings: Any,
    ) -> Tuple[Tensor, Counterfactuals]: ...

    @overload
    def attribute(
        self,
        inputs: Tensor,
        return_counterfactuals: bool = False,
        *,
        settings: Optional[ClueSettings] = None,
        **search_settings: Any,
    ) -> Union[Tensor, Tuple[Tensor, Counterfactuals]]: ...

    @log_usage()
    def attribute(
        self,
        inputs: Tensor,
        return_counterfactuals: bool = False,
        *,
        settings: Optional[ClueSettings] = None,
        **search_settings: Any,
    ) -> Union[Tensor, Tuple[Tensor, Counterfactuals]]:
        r"""The CLUE map ``|x - dec(z_CLUE)|``, summed over channels for images.

        Args:
            inputs (Tensor): inputs ``(N, ...)`` to explain, in the space the classifier reads.
            return_counterfactuals (bool): also return the
                :class:`~captum_uncertainty.attr.Counterfactuals`.
            settings (ClueSettings, optional, keyword only): all the search settings in one
                object. Default: ``None`` (the settings come from ``**search_settings``).
            **search_settings: any field of :class:`~captum_uncertainty.ClueSettings` by
                name (``uncertainty_weight=1.0, distance_weight=1.0, distance="l1",
                measure=None, lr=0.01, max_iterations=500, tolerance=1e-3, patience=5``);
                not together with ``settings``.

        Returns:
            Tensor: ``(N, 1, H, W)`` for image inputs ``(N, C, H, W)``, otherwise the inputs'
            shape; with the :class:`~captum_uncertainty.attr.Counterfactuals` if requested.
        """
        found = self.counterfactuals(inputs, settings=settings, **search_settings)
        maps = counterfactual_map(inputs, found.images)
        return (maps, found) if return_counterfactuals else maps

    def counterfactuals(
        self,
        inputs: Tensor,
        *,
        settings: Optional[ClueSettings] = None,
        **search_settings: Any,
    ) -> Counterfactuals:
        """Run the latent search (arguments as in :meth:`attribute`) and return what it found."""
        inputs = check_counterfactual_inputs(inputs)
        settings = clue_settings(settings, **search_settings)
        return clue_search(self.forward_func, self.generative_model, inputs, settings)[0]
