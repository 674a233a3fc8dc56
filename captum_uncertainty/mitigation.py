"""Uncertainty mitigation: attribution maps as attention (Wang et al., 2023, Sec. 4, App. B.2.2, D.2).

An uncertainty attribution map ``M(x)`` is normalised per image (element-wise softmax over the
pixels), turned into the attention ``A(x) = (1 - M(x)) * M(x)`` (Eq. 12), and multiplied as
``(1 + alpha * A(x))`` into the feature maps of the classifier's last convolutional layer (or,
in the ablation of Table 9, into the input). The classifier is then retrained with the attention
on limited data and compared with plain training (Table 2).

Examples::

    >>> uf = UncertaintyForward(DeepEnsemble(models), measure="epistemic")
    >>> maps_train, maps_test = UABackprop(uf).attribute(x_train), UABackprop(uf).attribute(x_test)
    >>> attention = UncertaintyAttention(model, space="latent")
    >>> logits = attention(x_train, attention_weights(maps_train))

The retraining study of Table 2 (the paper's classifier, its training loop and the
evaluation) is experiment code: :mod:`captum_uncertainty.experiments.mitigation_study`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_uncertainty._hooks import temporary_hooks
from captum_uncertainty._validation import check_choice, check_non_negative_number

__all__ = [
    "NORMALIZATIONS",
    "SPACES",
    "SUPPORTED_NORMALIZATIONS",
    "SUPPORTED_SPACES",
    "UncertaintyAttention",
    "attention_weights",
    "check_attention",
    "last_conv_layer",
]

#: The ``normalization`` choices of :func:`attention_weights`.
SUPPORTED_NORMALIZATIONS = ("softmax", "minmax")
#: Deprecated alias of :data:`SUPPORTED_NORMALIZATIONS`, kept for one release.
NORMALIZATIONS = SUPPORTED_NORMALIZATIONS

#: The ``space`` choices of :class:`UncertaintyAttention`.
SUPPORTED_SPACES = ("latent", "input")
#: Deprecated alias of :data:`SUPPORTED_SPACES`, kept for one release.
SPACES = SUPPORTED_SPACES


# ----------------------------------------------------------------------------- attention


def attention_weights(maps: Tensor, normalization: str = "softmax") -> Tensor:
    r"""The attention ``A(x) = (1 - M(x)) * M(x)`` of Wang et al.'s Eq. 12, one map per image.

    The channels of each map are summed first; the ``(N, 1, H, W)`` map is then normalised per
    image and plugged into Eq. 12:

    * ``"softmax"`` (default, the paper's, Sec. 5.2.2 / App. B.2.2): ``M`` is the softmax over
      the ``H * W`` pixels of the image, so it sums to 1 and ``A = (1 - M) M`` is of order
      ``1 / (H W)``. Note that UA-Backprop maps are small (they sum to the uncertainty, often
      ``< 0.1``), so their softmax, and hence ``A``, is nearly constant over the image.
    * ``"minmax"`` (an extra option, not the paper's): ``(m - min) / (max - min)`` per image (0
      for a constant map), under which ``A`` is 0 on the background and on the most uncertain
      pixels and largest (1/4) in between, as Eq. 12's motivation describes.

    Args:
        maps (Tensor): attribution maps of shape ``(N, C, H, W)`` (``C = 1`` typically), finite,
            ``N >= 1``. They are detached.
        normalization (str): ``"softmax"`` or ``"minmax"``. Default: ``"softmax"``.

    Returns:
        Tensor: the attention, shape ``(N, 1, H, W)``, values in ``[0, 1/4]``.

    Examples::

        >>> maps = UABackprop(UncertaintyForward(models, measure="epistemic")).attribute(x)
        >>> attention = attention_weights(maps)  # (N, 1, 28, 28)
    """
    _check_maps(maps)
    check_choice(normalization, "normalization", SUPPORTED_NORMALIZATIONS)
    summed = maps.detach().sum(1, keepdim=True)
    flat = summed.flatten(1)
    if normalization == "softmax":
        normalised = flat.softmax(1)
    else:
        low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        normalised = (flat - low) / torch.where(high > low, high - low, torch.ones_like(high))
    return ((1 - normalised) * normalised).view_as(summed)


def _check_maps(maps: Tensor) -> None:
    """ValueErrors naming ``maps`` for a non-tensor, a non-4D tensor, an empty batch, NaN or inf."""
    if not isinstance(maps, Tensor):
        raise ValueError(f"maps must be a Tensor of shape (N, C, H, W), got {type(maps).__name__}")
    if maps.dim() != 4:
        raise ValueError(f"maps must have shape (N, C, H, W), got shape {tuple(maps.shape)}")
    if maps.shape[0] == 0 or maps[0].numel() == 0:
        raise ValueError(f"maps is empty (shape {tuple(maps.shape)}): pass at least one map")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contains NaN or inf")


def check_attention(attention: Tensor, inputs: Tensor) -> None:
    """ValueErrors for inputs that are not ``(N, C, H, W)`` or an attention that does not match them."""
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must have shape (N, C, H, W), got {shape}")
    if not isinstance(attention, Tensor) or attention.dim() != 4 or attention.shape[1] != 1:
        shape = tuple(attention.shape) if isinstance(attention, Tensor) else type(attention).__name__
        raise ValueError(f"attention must have shape (N, 1, H, W) (see attention_weights), got {shape}")
    if attention.shape[0] != inputs.shape[0]:
        raise ValueError(f"attention has {attention.shape[0]} maps for a batch of {inputs.shape[0]} inputs")
    if not torch.isfinite(attention).all():
        raise ValueError("attention contains NaN or inf")


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` of ``model``, in registration order (``model.modules()``).

    Args:
        model (nn.Module): a convolutional classifier.

    Returns:
        nn.Module: its last ``nn.Conv2d``.

    Examples::

        >>> last_conv_layer(MitigationCNN())
        Conv2d(32, 32, kernel_size=(4, 4), stride=(1, 1))
    """
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convolutions:
        raise ValueError(f"model ({type(model).__name__}) has no nn.Conv2d layer: pass layer= or use space='input'")
    return convolutions[-1]


class UncertaintyAttention(nn.Module):
    r"""A classifier whose last convolutional features (or inputs) are scaled by ``1 + alpha A(x)``.

    ``space="latent"`` (the paper's main setting, Sec. 4): the output ``h`` of ``layer`` (default:
    :func:`last_conv_layer` of ``model``) becomes ``(1 + alpha * A) * h``, with ``A`` resized
    bilinearly (``align_corners=False``) to ``h``'s spatial size and broadcast over its channels.
    The forward hook doing it is registered for the duration of one call only and removed in a
    ``finally`` block, so ``model`` keeps no hook, even when the call raises.

    ``space="input"`` (the ablation of Table 9): the input becomes ``(1 + alpha * A) * x``.
    Wang et al.'s App. D.2.4 writes ``A(x) * x``; we use ``(1 + alpha * A) * x`` instead, the
    input-space counterpart of the latent form: after the softmax ``A`` is of order ``1 / (H W)``,
    so ``A(x) * x`` would scale the input down about a thousandfold and drop the "+1" that keeps
    the information of low-attention regions (App. B.2.2).

    Args:
        model (nn.Module): the classifier, returning logits; it is used (and trained) in place.
        layer (nn.Module, optional): a submodule of ``model`` whose 4D output is modulated
            (latent space only), e.g. the last convolution or its activation. Default: the last
            ``nn.Conv2d`` of ``model``.
        alpha (float): the attention strength, ``>= 0`` (``0`` is the plain model). Default: 0.2,
            the paper's.
        space (str): ``"latent"`` or ``"input"``. Default: ``"latent"``.

    Examples::

        >>> net = UncertaintyAttention(MitigationCNN(), alpha=0.2)
        >>> logits = net(x, attention_weights(maps))
    """

    def __init__(
        self, model: nn.Module, layer: Optional[nn.Module] = None, *, alpha: float = 0.2, space: str = "latent"
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.alpha = _check_alpha(alpha)
        self.space = check_choice(space, "space", SUPPORTED_SPACES)
        self.layer = _resolve_layer(model, layer, space)

    def forward(self, inputs: Tensor, attention: Optional[Tensor]) -> Tensor:
        """Logits of ``model`` on ``inputs`` with the attention applied.

        Args:
            inputs (Tensor): images ``(N, C, H, W)``.
            attention (Tensor or None): ``(N, 1, h, w)`` from :func:`attention_weights` (resized
                bilinearly where needed); ``None`` runs the plain model.

        Returns:
            Tensor: the logits of ``model``.
        """
        if attention is None:
            return self.model(inputs)
        check_attention(attention, inputs)
        attention = attention.to(device=inputs.device, dtype=inputs.dtype)
        if self.space == "input":
            return self.model(self.scale(inputs, attention))
        assert self.layer is not None  # space="latent" always resolves a layer
        with temporary_hooks() as hooks:
            hooks.forward(self.layer, lambda module, args, output: self.scale(output, attention))
            return self.model(inputs)

    def scale(self, features: Tensor, attention: Tensor) -> Tensor:
        """``(1 + alpha * A) * features``, ``A`` resized to the features' spatial size."""
        if not isinstance(features, Tensor) or features.dim() != 4 or features.shape[0] != attention.shape[0]:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(
                f"the attended layer must output (N, K, h, w) feature maps with N = {attention.shape[0]}, got {shape}"
            )
        if attention.shape[-2:] != features.shape[-2:]:
            attention = F.interpolate(attention, size=features.shape[-2:], mode="bilinear", align_corners=False)
        return (1 + self.alpha * attention) * features


def _check_alpha(alpha: float) -> float:
    check_non_negative_number(alpha, "alpha")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    return float(alpha)


def _resolve_layer(model: nn.Module, layer: Optional[nn.Module], space: str) -> Optional[nn.Module]:
    if space == "input":
        if layer is not None:
            raise ValueError("layer is only used with space='latent'")
        return None
    if layer is None:
        return last_conv_layer(model)
    if not any(module is layer for module in model.modules()):
        raise ValueError(f"layer ({type(layer).__name__}) is not a submodule of model")
    return layer


# ----------------------------------------------------------------------------- classifier
