"""The small protocol any encoder/decoder pair follows to drive the counterfactual methods."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "LatentGenerativeModel",
    "check_generative_model",
    # package-internal: used by the counterfactual attribution methods
    "encode_inputs",
    "decode_latents",
    "check_latents",
]


@runtime_checkable
class LatentGenerativeModel(Protocol):
    """What :class:`~captum_uncertainty.CLUE`, :class:`~captum_uncertainty.DeltaCLUE`
    and :class:`~captum_uncertainty.CounterfactualPathIG` need from a generative model.

    Any object with these two methods works (a VAE, the encoder/decoder of an autoencoder, a
    GAN generator with an inversion network); it does not have to subclass anything:

    * ``encode(x) -> z``: a deterministic latent code ``(N, D)`` for inputs ``(N, ...)`` (for a
      VAE: the mean of q(z|x));
    * ``decode(z) -> x``: inputs ``(N, ...)`` *in the space the classifier reads* (for images
      scaled to [0, 1]: a sigmoid output), differentiable in ``z``.

    ``decode`` must be a pure function of ``z`` (no sampling, no batch statistics: put dropout
    and batch-norm layers in eval mode) so that path derivatives and counterfactual searches are
    well defined; the methods never switch the model's mode themselves.

    Examples::

        >>> class MyPair:
        ...     def __init__(self, encoder, decoder):
        ...         self.encoder, self.decoder = encoder, decoder
        ...     def encode(self, x):
        ...         return self.encoder(x)
        ...     def decode(self, z):
        ...         return torch.sigmoid(self.decoder(z))
        >>> cpig = CounterfactualPathIG(uf, MyPair(encoder, decoder))
    """

    def encode(self, inputs: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...


def check_generative_model(model: Any, method: str, name: str = "generative_model") -> LatentGenerativeModel:
    """The model itself, or a clear error saying a generative model is missing or incomplete."""
    if model is None:
        raise ValueError(
            f"{method} needs a generative model ({name}): pass an object with encode(x) -> z and "
            "decode(z) -> x, e.g. captum_uncertainty.generative.train_vae(VAE(image_shape), images)"
        )
    missing = [attr for attr in ("encode", "decode") if not callable(getattr(model, attr, None))]
    if missing:
        raise TypeError(
            f"{name} must have callable encode(x) and decode(z) methods (LatentGenerativeModel); "
            f"{type(model).__name__} lacks {', '.join(missing)}"
        )
    return model


def encode_inputs(model: LatentGenerativeModel, inputs: Tensor, name: str = "generative_model") -> Tensor:
    """``model.encode(inputs)`` checked: a finite ``(N, D)`` tensor on the inputs' device and dtype."""
    _check_same_dtype_and_device(model, inputs, name)
    latents = model.encode(inputs)
    if not isinstance(latents, Tensor) or latents.dim() != 2 or latents.shape[0] != inputs.shape[0]:
        shape = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
        raise ValueError(
            f"{name}.encode must return latent codes of shape (N, D) = ({inputs.shape[0]}, D), got {shape}"
        )
    check_latents(latents, f"{name}.encode(inputs)")
    return latents.to(inputs.dtype)


def decode_latents(
    model: LatentGenerativeModel, latents: Tensor, like: Tensor, name: str = "generative_model"
) -> Tensor:
    """``model.decode(latents)`` checked against the shape of the inputs ``like`` it stands for."""
    images = model.decode(latents)
    if not isinstance(images, Tensor) or images.shape != like.shape:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(
            f"{name}.decode returned shape {shape}, but the inputs have shape {tuple(like.shape)}: "
            "the decoder's output must match the inputs the classifier reads"
        )
    return images


def check_latents(latents: Tensor, name: str) -> Tensor:
    """``latents`` unchanged, or a ``ValueError`` naming the inputs whose codes are NaN or inf."""
    if not torch.isfinite(latents).all():
        rows = (~torch.isfinite(latents)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"{name} has non-finite latent codes (NaN or inf) for inputs {rows}")
    return latents


def _check_same_dtype_and_device(model: Any, inputs: Tensor, name: str) -> None:
    """For an ``nn.Module`` model: its parameters must share the inputs' dtype and device."""
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if parameter is not None and (parameter.dtype != inputs.dtype or parameter.device != inputs.device):
        raise TypeError(
            f"{name} has parameters of dtype {parameter.dtype} on {parameter.device}, but the inputs are "
            f"{inputs.dtype} on {inputs.device}; convert one of them (e.g. inputs.to(...) or model.to(...))"
        )
