"""bayesian-torch: a mean-field variational network as a fixed set of sampled plain networks.

A bayesian-torch layer (``Conv2dReparameterization``, ``LinearFlipout``, ...) draws new weights
``mu + softplus(rho) * eps`` on every forward (Flipout also draws random signs per row), so its
predictions change between calls and, for Flipout, with the other rows of the batch; its
layers are not ``nn.Conv2d`` modules, so hook-based methods (FullGrad) miss their biases; and
models written for it return ``(output, kl)``.
:func:`~captum_uncertainty.integrations.from_bayesian_torch` replaces every bayesian layer by
an ordinary ``nn.Conv*d`` / ``nn.Linear`` carrying one weight draw, in a private copy of the
network per posterior sample.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_uncertainty._validation import check_positive_int
from captum_uncertainty.integrations import require
from captum_uncertainty.integrations._utils import check_seed
from captum_uncertainty.posterior import DeepEnsemble, is_scalar_kl

__all__ = ["from_bayesian_torch", "BayesianTorchSample", "SampledLayerWithKL", "PLAIN_LAYERS"]

#: bayesian-torch layer class name -> the plain layer it becomes.
PLAIN_LAYERS: Dict[str, Type[nn.Module]] = {
    "Conv1dReparameterization": nn.Conv1d,
    "Conv2dReparameterization": nn.Conv2d,
    "Conv3dReparameterization": nn.Conv3d,
    "ConvTranspose1dReparameterization": nn.ConvTranspose1d,
    "ConvTranspose2dReparameterization": nn.ConvTranspose2d,
    "ConvTranspose3dReparameterization": nn.ConvTranspose3d,
    "LinearReparameterization": nn.Linear,
    "Conv1dFlipout": nn.Conv1d,
    "Conv2dFlipout": nn.Conv2d,
    "Conv3dFlipout": nn.Conv3d,
    "ConvTranspose1dFlipout": nn.ConvTranspose1d,
    "ConvTranspose2dFlipout": nn.ConvTranspose2d,
    "ConvTranspose3dFlipout": nn.ConvTranspose3d,
    "LinearFlipout": nn.Linear,
}

#: bayesian-torch's deterministic BatchNorm wrappers (accepting ``(x, kl)`` pairs) -> torch's.
PLAIN_BATCHNORMS: Dict[str, Type[nn.Module]] = {
    "BatchNorm1dLayer": nn.BatchNorm1d,
    "BatchNorm2dLayer": nn.BatchNorm2d,
    "BatchNorm3dLayer": nn.BatchNorm3d,
}

Generators = Dict[torch.device, torch.Generator]


def from_bayesian_torch(model: nn.Module, num_samples: int, seed: int = 0) -> DeepEnsemble:
    r"""A bayesian-torch network as ``num_samples`` deterministic networks with sampled weights.

    For each posterior sample, a deep copy of ``model`` is made in which every bayesian-torch
    layer (``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d`` and ``Linear``, in both their
    ``Reparameterization`` and ``Flipout`` versions) is replaced by the equivalent
    ``nn.Conv*d`` / ``nn.ConvTranspose*d`` / ``nn.Linear`` (same stride, padding, dilation,
    groups, output padding and bias flag) whose weight and bias are ONE draw
    ``mu + softplus(rho) * eps`` of the layer's variational posterior, with ``eps`` standard
    normal from a seeded generator. Flipout layers are sampled the same way: Flipout's random
    signs only decorrelate the rows of a training batch, its weight distribution is this one.
    bayesian-torch's ``BatchNorm1d/2d/3dLayer`` wrappers become torch's BatchNorm layers with the
    same parameters and statistics.

    The copies are deterministic (eval mode during calls, as every
    :class:`~captum_uncertainty.DeepEnsemble` member) and compute each input independently of
    the other rows of its batch. FullGrad (UA-Backprop's ``path="fullgrad"``) sees every
    converted layer as an ``nn.Conv2d``, and its bias term uses the *sampled* bias of that
    posterior sample (``mu_bias + softplus(rho_bias) * eps``), not ``mu_bias``.

    Models from bayesian-torch's ``dnn_to_bnn`` (layers flagged ``dnn_to_bnn_flag``, returning
    tensors) and models written for bayesian-torch whose layers and ``forward`` return
    ``(output, kl)`` both work: a converted layer that was called for ``(output, kl)`` returns
    ``(output, 0)`` (a
    :class:`~captum_uncertainty.integrations.bayesian_torch.SampledLayerWithKL` around the plain
    layer), and every copy is wrapped in a
    :class:`~captum_uncertainty.integrations.bayesian_torch.BayesianTorchSample` that returns
    only the model's output. A model
    returning log-probabilities (``log_softmax``, as bayesian-torch's ``SCNN``) is fine: they
    are logits up to a per-input constant.

    Regressors work the same way: the members return whatever the network returns, so a
    network whose output is ``(N, 2)`` = mean and log-variance (or variance, or standard
    deviation) per input, or ``(N,)`` / ``(N, 1)`` means only, is explained with
    ``UncertaintyForward(posterior, measure, likelihood=Gaussian(variance=...))``: aleatoric =
    the sampled networks' mean noise variance, epistemic = the variance of their means. Return
    the mean and the variance head as *one* ``(N, 2)`` tensor (or as the output of an
    ``(output, kl)`` pair): a pair whose second item is not a scalar KL is refused, since it
    would otherwise be read as ``(output, kl)`` and its variance head dropped.

    What ``seed`` guarantees: ``eps`` comes from a ``torch.Generator`` per device, seeded with
    ``seed`` (the global random state is neither used nor advanced); samples are drawn in
    order, sample by sample and layer by layer in ``model.named_modules()`` order. The same
    ``seed`` and the same ``model`` (parameters) give the same networks on every call of the
    posterior, on every call of this function and across processes on the same device type;
    sample ``s`` does not depend on ``num_samples``.

    ``model`` is never modified; hooks registered on its bayesian layers are not carried over
    to the plain replacements.

    Args:
        model (nn.Module): a network containing bayesian-torch layers.
        num_samples (int): the number ``S`` of sampled networks.
        seed (int): seed of the ``eps`` generator. Default: 0.

    Returns:
        DeepEnsemble: ``S``
        :class:`~captum_uncertainty.integrations.bayesian_torch.BayesianTorchSample` members,
        each returning the output of one sampled network: ``(N, C)`` logits of a classifier, or
        a regressor's ``(N, 2)`` mean and variance head or ``(N,)`` / ``(N, 1)`` means.

    Raises:
        ImportError: bayesian-torch is not installed.
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``model`` contains a bayesian-torch layer that cannot be converted (e.g.
            ``LSTMReparameterization``, the quantized layers), named with its path in the
            model, or no bayesian-torch layer at all.

    Examples::

        >>> from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn
        >>> dnn_to_bnn(model, prior_parameters)           # the model now samples on each call
        >>> posterior = from_bayesian_torch(model, num_samples=20, seed=0)
        >>> uf = UncertaintyForward(posterior, measure="epistemic")
        >>> maps = UABackprop(uf).attribute(x, path="fullgrad")
        >>> regression = from_bayesian_torch(regressor, num_samples=20)   # (N, 2): mean, log sigma^2
        >>> uf = UncertaintyForward(regression, likelihood=Gaussian(variance="log_variance"))
        >>> total, aleatoric, epistemic = uf.decompose(x)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    num_samples = check_positive_int(num_samples, "num_samples")
    seed = check_seed(seed)
    layers = _conversion_plan(model)
    generators: Generators = {}
    members = [BayesianTorchSample(_sampled_copy(model, layers, generators, seed)) for _ in range(num_samples)]
    return DeepEnsemble(members)


class BayesianTorchSample(nn.Module):
    """One sampled network, returning its output only (``output`` of an ``(output, kl)`` pair).

    The ``kl`` of a pair must be a scalar (a number or a 0-dimensional tensor, as bayesian-torch's
    KL terms are); a pair whose second item has several elements or one per input, such as a
    regressor's ``(mean, variance)``, raises ``TypeError`` instead of losing its second item.

    Args:
        model (nn.Module): the sampled copy, with plain layers.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: Any) -> Tensor:
        out = self.model(*inputs)
        if isinstance(out, (tuple, list)):
            if len(out) != 2 or not isinstance(out[0], Tensor):
                raise TypeError(
                    f"the bayesian-torch model returned a {type(out).__name__} of {len(out)} items; expected a "
                    "tensor or an (output, kl) pair"
                )
            if not is_scalar_kl(out[1], out[0]):
                kl = out[1]
                raise TypeError(
                    f"the bayesian-torch model returned a pair whose second item has shape {tuple(kl.shape)}, not a "
                    "scalar KL; a regressor returning a mean and a variance head should return them as one (N, 2) "
                    "tensor (torch.cat([mean, log_variance], dim=1)), alone or as the output of an (output, kl) pair"
                )
            return out[0]
        if not isinstance(out, Tensor):
            raise TypeError(f"the bayesian-torch model returned {type(out).__name__}, expected a tensor")
        return out


class SampledLayerWithKL(nn.Module):
    """A plain layer standing in for a bayesian-torch layer that returns ``(output, kl)``.

    Returns ``(layer(x), 0)`` like the bayesian layer did (``kl`` is a zero tensor: a sampled
    network has no KL term), or only ``layer(x)`` when called with ``return_kl=False``. Hooks
    on the wrapped ``layer`` see a plain tensor output.

    Args:
        layer (nn.Module): the plain ``nn.Conv*d`` / ``nn.Linear`` / BatchNorm layer.
        pairs_in (bool): the bayesian layer took ``(x, kl)`` pairs as input (bayesian-torch's
            BatchNorm wrappers); a tensor input is then also accepted.
    """

    def __init__(self, layer: nn.Module, pairs_in: bool = False) -> None:
        super().__init__()
        self.layer = layer
        self.pairs_in = pairs_in

    def forward(self, input: Any, return_kl: bool = True) -> Any:
        if self.pairs_in:
            if not isinstance(input, (tuple, list)):
                return self.layer(input)
            input = input[0]
        out = self.layer(input)
        return (out, out.new_zeros(())) if return_kl else out


def _conversion_plan(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(path, layer)`` of every bayesian-torch layer to convert, in ``named_modules`` order.

    Raises ``ValueError`` naming the first bayesian layer that cannot be converted.
    """
    layers_module = require("bayesian_torch.layers", "bayesian-torch", "from_bayesian_torch")
    base = layers_module.BaseVariationalLayer_
    plan = []
    for path, module in model.named_modules():
        name = type(module).__name__
        convertible = type(module) is getattr(layers_module, name, None) and (
            name in PLAIN_LAYERS or name in PLAIN_BATCHNORMS
        )
        if convertible:
            plan.append((path, module))
        elif isinstance(module, base):
            where = f"at {path!r}" if path else "(the model itself)"
            raise ValueError(
                f"from_bayesian_torch cannot convert the bayesian-torch layer {name} {where}: only "
                f"{', '.join(sorted(PLAIN_LAYERS))} are sampled into plain layers"
            )
    if not any(type(module).__name__ in PLAIN_LAYERS for _, module in plan):
        raise ValueError(
            "model contains no bayesian-torch layer to sample; for a deterministic network use "
            "DeepEnsemble([model]) or MCDropout(model)"
        )
    return plan


def _sampled_copy(
    model: nn.Module, layers: List[Tuple[str, nn.Module]], generators: Generators, seed: int
) -> nn.Module:
    """A deep copy of ``model`` with each planned layer replaced by its plain, sampled version.

    The replacements are put in ``deepcopy``'s memo, so the bayesian layers are never copied and
    a layer registered at several places stays one (shared) module in the copy.
    """
    memo: Dict[int, Any] = {}
    with torch.no_grad():
        for _, layer in layers:
            memo[id(layer)] = _replacement(layer, generators, seed)
    return copy.deepcopy(model, memo)


def _replacement(layer: nn.Module, generators: Generators, seed: int) -> nn.Module:
    """The plain module standing in for ``layer`` (wrapped if ``layer`` returned ``(output, kl)``)."""
    name = type(layer).__name__
    if name in PLAIN_BATCHNORMS:
        return SampledLayerWithKL(_plain_batchnorm(layer, PLAIN_BATCHNORMS[name]), pairs_in=True).train(layer.training)
    plain = _sampled_plain_layer(layer, PLAIN_LAYERS[name], generators, seed).train(layer.training)
    if getattr(layer, "dnn_to_bnn_flag", False):
        return plain
    return SampledLayerWithKL(plain).train(layer.training)


def _draw(mu: Tensor, rho: Tensor, generators: Generators, seed: int) -> nn.Parameter:
    """One draw ``mu + softplus(rho) * eps`` as a parameter (``requires_grad`` as ``mu``).

    ``softplus(rho) = log(1 + exp(rho))`` is bayesian-torch's ``sigma``.
    """
    eps = torch.randn(mu.shape, generator=_generator_for(mu.device, generators, seed), device=mu.device, dtype=mu.dtype)
    value = mu.detach() + F.softplus(rho.detach()) * eps
    return nn.Parameter(value, requires_grad=mu.requires_grad)


def _generator_for(device: torch.device, generators: Generators, seed: int) -> torch.Generator:
    """The generator of ``device``, created (seeded with ``seed``) on first use."""
    if device not in generators:
        generators[device] = torch.Generator(device=device).manual_seed(seed)
    return generators[device]


def _layer_tensors(layer: Any) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
    """``mu`` and ``rho`` of the weight (``mu_kernel`` or ``mu_weight``) and of the bias (or ``None``)."""
    if hasattr(layer, "mu_kernel"):
        mu, rho = layer.mu_kernel, layer.rho_kernel
    else:
        mu, rho = layer.mu_weight, layer.rho_weight
    mu_bias = getattr(layer, "mu_bias", None)
    rho_bias = getattr(layer, "rho_bias", None) if mu_bias is not None else None
    return mu, rho, mu_bias, rho_bias


def _sampled_plain_layer(layer: nn.Module, kind: Type[nn.Module], generators: Generators, seed: int) -> nn.Module:
    """``kind`` with ``layer``'s hyperparameters and one draw of its weight and bias.

    The plain layer is built on the meta device (no initialisation, no random numbers) and
    gets the drawn tensors, on ``mu``'s device and dtype, as parameters.
    """
    mu, rho, mu_bias, rho_bias = _layer_tensors(layer)
    plain = _empty_plain_layer(layer, kind, mu, has_bias=mu_bias is not None)
    plain.weight = _draw(mu, rho, generators, seed)
    if mu_bias is not None:
        assert rho_bias is not None  # _layer_tensors reads rho_bias whenever mu_bias exists
        plain.bias = _draw(mu_bias, rho_bias, generators, seed)
    return plain


def _empty_plain_layer(layer: Any, kind: Type[nn.Module], mu: Tensor, has_bias: bool) -> nn.Module:
    """The plain layer on the meta device, shaped like ``layer``'s weight ``mu``."""
    if kind is nn.Linear:
        out_features, in_features = mu.shape
        return nn.Linear(in_features, out_features, bias=has_bias, device="meta", dtype=mu.dtype)
    kernel_size = tuple(mu.shape[2:])
    common: Dict[str, Any] = dict(
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=has_bias,
        device="meta",
        dtype=mu.dtype,
    )
    if issubclass(kind, nn.modules.conv._ConvTransposeNd):
        in_channels, out_channels = mu.shape[0], mu.shape[1] * layer.groups
        return kind(in_channels, out_channels, kernel_size, output_padding=layer.output_padding, **common)
    out_channels, in_channels = mu.shape[0], mu.shape[1] * layer.groups
    return kind(in_channels, out_channels, kernel_size, **common)


def _plain_batchnorm(layer: nn.Module, kind: Type[nn.Module]) -> nn.Module:
    """torch's BatchNorm with ``layer``'s settings, parameters and running statistics (copied)."""
    floating = [t for t in layer.state_dict().values() if t.is_floating_point()]
    device = floating[0].device if floating else None
    dtype = floating[0].dtype if floating else None
    plain = kind(
        layer.num_features,
        eps=layer.eps,
        momentum=layer.momentum,
        affine=layer.affine,
        track_running_stats=layer.track_running_stats,
        device=device,
        dtype=dtype,
    )
    plain.load_state_dict(layer.state_dict())
    for name, parameter in plain.named_parameters():
        parameter.requires_grad_(getattr(layer, name).requires_grad)
    return plain
