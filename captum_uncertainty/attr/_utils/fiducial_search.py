"""The fiducials of :class:`~captum_uncertainty.CounterfactualPathIG`: what a search found and
the warning when it is not a valid fiducial, the in-class search of the Featurespace reference
code and the codes refined for reconstruction (re-exported by
:mod:`captum_uncertainty.attr.counterfactual_path`)."""

from __future__ import annotations

import warnings
from typing import Any, Dict, NamedTuple, Optional

import torch
from torch import Tensor

from captum_uncertainty._validation import check_choice, check_non_negative_number
from captum_uncertainty.attr._utils.latent_search import (
    LossNotDecreasing,
    class_averaged_bce,
    class_cross_entropy,
    reconstruction_loss,
    search_latents,
)
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.generative.protocol import LatentGenerativeModel, decode_latents, encode_inputs

__all__ = [
    "FiducialWarning",
    "Fiducials",
    "SUPPORTED_CLASS_LOSSES",
    "in_class_fiducials",
    "reconstruction_latents",
    "reference_in_class_settings",
    "warn_about_invalid_fiducials",
]

SUPPORTED_CLASS_LOSSES = ("cross_entropy", "class_averaged_bce")


class FiducialWarning(UserWarning):
    """A counterfactual fiducial changed the predicted class or did not lower the uncertainty."""


class Fiducials(NamedTuple):
    """The path's starting points and what they say about the search.

    Attributes:
        latents (Tensor): fiducial latent codes ``z_f`` ``(N, D)``.
        images (Tensor): ``dec(z_f)``, the inputs' shape.
        uncertainty (Tensor): the forward's measure at ``dec(z_f)`` ``(N,)``.
        input_uncertainty (Tensor): the same measure at the inputs ``(N,)``.
        input_class (Tensor): the posterior predictive's class at the inputs ``(N,)``.
        fiducial_class (Tensor): its class at ``dec(z_f)`` ``(N,)``.
    """

    latents: Tensor
    images: Tensor
    uncertainty: Tensor
    input_uncertainty: Tensor
    input_class: Tensor
    fiducial_class: Tensor

    @property
    def valid(self) -> Tensor:
        """``(N,)`` bool: the fiducial keeps the predicted class and lowers the uncertainty."""
        return (self.fiducial_class == self.input_class) & (self.uncertainty < self.input_uncertainty)


def in_class_fiducials(
    forward: UncertaintyForward,
    generative_model: LatentGenerativeModel,
    inputs: Tensor,
    class_weight: float = 1000.0,
    prior_weight: float = 0.5,
    lr: float = 0.01,
    max_iterations: int = 500,
    tolerance: float = 1e-3,
    patience: int = 5,
    class_loss: str = "cross_entropy",
    stopping: Optional[LossNotDecreasing] = None,
    *,
    start: Optional[Tensor] = None,
    classes: Optional[Tensor] = None,
) -> Tensor:
    r"""Latent fiducials that keep the predicted class (the Featurespace reference code's search).

    Minimises, per input and from the encoder's code,
    ``BCE(dec(z), x) + class_weight * L_class(y_hat, p(dec(z))) + prior_weight * ||z||^2`` where
    the BCE is summed over the input elements, ``y_hat`` is the posterior predictive's class at
    ``x`` and ``p`` the posterior predictive; Adam, stopping each input once its loss stops
    decreasing (by default the rule of :class:`~captum_uncertainty.CLUE`).

    ``class_loss="cross_entropy"`` (default, weight 1000, see
    :class:`~captum_uncertainty.CounterfactualPathIG`) is ``-log p_{y_hat}``.
    ``class_loss="class_averaged_bce"`` is the reference code's Keras
    ``binary_crossentropy(onehot(y_hat), p)``: the binary cross-entropy of each class's
    probability against the one-hot target, averaged over the ``C`` classes, with the
    probabilities clipped to ``[1e-7, 1 - 1e-7]`` as Keras does. The reference weighs it by
    ``1e4 * H * W`` (:func:`reference_in_class_settings`), about 780 times our default on a
    28x28 digit with 10 classes.

    Args:
        forward (captum_uncertainty.UncertaintyForward): the posterior whose predictive defines
            the class term.
        generative_model (LatentGenerativeModel): the encoder / decoder.
        inputs (Tensor): inputs in ``[0, 1]``.
        class_weight (float): weight of the class term. Default: 1000.
        prior_weight (float): weight of ``||z||^2``. Default: 0.5.
        lr (float): Adam learning rate. Default: 0.01.
        max_iterations (int): most Adam steps per input. Default: 500.
        tolerance, patience (float, int): the default stopping rule (ignored with ``stopping``).
        class_loss (str): ``"cross_entropy"`` (default) or ``"class_averaged_bce"``.
        stopping (captum_uncertainty.attr.LossNotDecreasing, optional): the reference code's
            stopping rule instead.
        start (Tensor, optional, keyword only): the codes ``(N, D)`` the search starts from.
            Default: the encoder's codes of ``inputs``.
        classes (Tensor, optional, keyword only): the classes ``y_hat`` ``(N,)`` to keep.
            Default: the posterior predictive's class at ``inputs``.

    Returns:
        Tensor: latent codes ``(N, D)``.
    """
    check_non_negative_number(class_weight, "class_weight")
    check_choice(class_loss, "class_loss", SUPPORTED_CLASS_LOSSES)
    _check_reconstruction_range(inputs, 'fiducial="in_class"')
    with torch.no_grad():
        start = encode_inputs(generative_model, inputs) if start is None else start
        target = forward.predicted_class(inputs) if classes is None else classes
    class_term = class_cross_entropy if class_loss == "cross_entropy" else class_averaged_bce

    def objective(latents: Tensor, rows: Tensor) -> Tensor:
        images = decode_latents(generative_model, latents, inputs[rows])
        log_mean = forward.log_predictive_mean(images)
        return (
            reconstruction_loss(images, inputs[rows])
            + class_weight * class_term(log_mean, target[rows])
            + prior_weight * latents.square().sum(1)
        )

    search = search_latents(
        objective,
        start,
        lr=lr,
        max_iterations=max_iterations,
        tolerance=tolerance,
        patience=patience,
        stopping=stopping,
    )
    return search.latents


def _check_reconstruction_range(inputs: Tensor, what: str) -> None:
    if inputs.min() < 0 or inputs.max() > 1:
        raise ValueError(f"{what} needs inputs in [0, 1] (its reconstruction term is a binary cross-entropy)")


def reference_in_class_settings(inputs: Tensor) -> Dict[str, Any]:
    """The in-class fiducial search of the Featurespace reference code, as ``fiducial_kwargs``.

    ``class_averaged_bce`` weighted by ``1e4 * H * W`` (its ``constrain_multiplier=1e4`` times
    the image's pixel count), Adam with learning rate 0.01 for at most 2,000 steps, stopped by
    ``LossNotDecreasing(rtol=1e-3)`` (scripts/MNIST/2.evaluation.py and
    uncertainty_library/latent_optimisation.py). One difference remains: we return the
    lowest-loss code each input visited, the reference its last one.

    Examples::

        >>> cpig.attribute(x, fiducial="in_class", fiducial_kwargs=reference_in_class_settings(x),
        ...                latent_end="refined")
    """
    height, width = inputs.shape[-2:]
    return dict(
        class_loss="class_averaged_bce",
        class_weight=1e4 * height * width,
        max_iterations=2000,
        stopping=LossNotDecreasing(rtol=1e-3),
    )


def reconstruction_latents(
    generative_model: LatentGenerativeModel,
    inputs: Tensor,
    prior_weight: float = 0.5,
    lr: float = 0.01,
    max_iterations: int = 2000,
    stopping: Optional[LossNotDecreasing] = None,
    *,
    start: Optional[Tensor] = None,
) -> Tensor:
    """The encoder's codes refined for reconstruction, as the Featurespace reference code does.

    Minimises ``BCE(dec(z), x) + prior_weight * ||z||^2`` (BCE summed over the input elements)
    from the encoder's code with Adam (learning rate 0.01, at most 2,000 steps), stopping each
    input with ``LossNotDecreasing(atol=1e-3)`` unless ``stopping`` says otherwise; returns the
    lowest-loss code visited, ``(N, D)``. ``start`` (keyword only): the codes to refine, by
    default the encoder's codes of ``inputs``.
    """
    _check_reconstruction_range(inputs, 'latent_end="refined"')
    if start is None:
        with torch.no_grad():
            start = encode_inputs(generative_model, inputs)

    def objective(latents: Tensor, rows: Tensor) -> Tensor:
        images = decode_latents(generative_model, latents, inputs[rows])
        return reconstruction_loss(images, inputs[rows]) + prior_weight * latents.square().sum(1)

    rule = LossNotDecreasing(atol=1e-3) if stopping is None else stopping
    return search_latents(objective, start, lr=lr, max_iterations=max_iterations, stopping=rule).latents


def warn_about_invalid_fiducials(found: Fiducials) -> None:
    """Warn about fiducials that change the class or do not lower the uncertainty, at the line
    that called ``attribute`` (through Captum's ``log_usage``)."""
    changed = (found.fiducial_class != found.input_class).nonzero().flatten().tolist()
    higher = (found.uncertainty >= found.input_uncertainty).nonzero().flatten().tolist()
    if changed:
        warnings.warn(
            f"CounterfactualPathIG: the fiducials of inputs {changed} change the predicted class",
            FiducialWarning,
            stacklevel=5,
        )
    if higher:
        warnings.warn(
            f"CounterfactualPathIG: the fiducials of inputs {higher} do not lower the uncertainty "
            "(see return_fiducial=True for both values)",
            FiducialWarning,
            stacklevel=5,
        )
