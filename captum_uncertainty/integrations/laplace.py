"""laplace-torch: a fitted Laplace approximation as a fixed set of weight samples.

laplace-torch's own ``la.predictive_samples(x, n_samples=S)`` is the obvious posterior, but it
is the wrong one to attribute: it redraws the ``S`` weight samples on every call (an
integration path then runs through a different posterior at every step), returns
probabilities, breaks autograd unless the Laplace object was built with
``enable_backprop=True``, and runs a deep copy of the model (last-layer Laplace) or writes
each sample into the user's parameters and back, so layer hooks on the user's model never see
the sampled layers. :func:`~captum_uncertainty.integrations.from_laplace` instead draws the
weight samples once, from a seeded generator, into private copies of the model.

A regression Laplace approximation has one more ingredient, its observation noise
``la.sigma_noise``: each sampled copy then also returns ``log sigma_noise^2`` beside its mean, the
``(N, 2)`` layout :class:`~captum_uncertainty.UncertaintyForward` reads with
``likelihood=Gaussian(variance="log_variance")``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_positive_int
from captum_uncertainty.integrations import require
from captum_uncertainty.integrations._utils import check_seed
from captum_uncertainty.posterior import WeightSamples

__all__ = ["from_laplace"]

#: The laplace-torch likelihoods :func:`from_laplace` accepts.
_LIKELIHOODS = ("classification", "regression")


def from_laplace(la: Any, num_samples: int, seed: int = 0) -> WeightSamples:
    r"""A fitted laplace-torch Laplace approximation as ``num_samples`` fixed weight samples.

    The weights are drawn with ``la.sample(num_samples, generator=...)`` from the Gaussian
    posterior ``N(theta_MAP, P^{-1})`` of the fitted ``la`` and written into private deep copies
    of the model, one per sample; parameters that the approximation does not cover (every layer
    but the last for last-layer Laplace, parameters with ``requires_grad=False``, the rest of a
    subnetwork) keep their MAP values. The result is a
    :class:`~captum_uncertainty.WeightSamples` of plain ``nn.Module`` copies returning logits,
    so every method of this package accepts it, UA-Backprop's ``path="fullgrad"`` included.

    Why weight samples instead of ``la.predictive_samples``: the samples are drawn once, so
    every call of the posterior (every step of an integration path, every chunk of a batch)
    uses the same ``S`` networks; each input is computed independently of the other rows of
    its batch; gradients reach the input whatever ``la.enable_backprop`` says, since the copies
    are ordinary modules; and the copies' own convolution and BatchNorm layers run, so
    FullGrad's bias terms are recorded (laplace-torch runs its own deep copy of the model for
    last-layer Laplace, which hooks on the user's model never see). The outputs are logits,
    not the probabilities ``predictive_samples`` returns. This is laplace-torch's ``"nn"``
    (sampling) predictive, not its default linearised ``"glm"`` predictive.

    Regression (``Laplace(model, "regression", ...)``, a model with one output column): each
    sampled copy returns ``(N, 2)`` = its mean and ``log sigma_noise^2``, the observation noise
    ``la.sigma_noise`` of the Gaussian likelihood as a log-variance head, so
    ``UncertaintyForward(posterior, likelihood=Gaussian(variance="log_variance"))`` reads it.
    laplace-torch's regression likelihood is homoscedastic: the aleatoric variance is the
    constant ``sigma_noise^2`` for every input, so its attribution is zero, the total variance
    is ``epistemic + sigma_noise^2`` and explains the same as the epistemic variance (the
    spread of the sampled copies' means), which is the measure to attribute. Column 0 is the
    copy's own output; the noise column is a constant of the private wrapper around each copy
    (``sigma_noise`` is read once, here: refitting ``la`` later does not change the posterior).

    What ``seed`` guarantees: the samples come from a ``torch.Generator`` on the model's
    device seeded with ``seed`` (the global random state is neither used nor advanced). The
    same ``seed`` and the same fitted ``la`` give the same weight samples on every call of the
    returned posterior (they are fixed here), on every call of
    :func:`~captum_uncertainty.integrations.from_laplace`, and in another process on the same
    device type with the same PyTorch version. Different devices (CPU vs CUDA) have different
    random streams and give different samples, and so do
    different ``num_samples`` (laplace-torch draws all ``S`` samples as one normal matrix,
    whose values depend on its size): sample ``s`` of ``S = 10`` is not sample ``s`` of
    ``S = 20``.

    Neither ``la``, ``la.model`` nor the user's model is modified; ``la`` can be used as before.

    Args:
        la: a *fitted* weight-space laplace-torch approximation (a ``ParametricLaplace``) with
            the ``"classification"`` likelihood, e.g. ``Laplace(model, "classification",
            subset_of_weights="all", hessian_structure="diag")`` or ``subset_of_weights=
            "last_layer"`` with ``"kron"``, ``"diag"`` or ``"full"``, or with the
            ``"regression"`` likelihood and a model with one output column. Subnetwork
            approximations (``"diag"``, ``"full"``) work the same way, and so does any
            ``ParametricLaplace`` whose ``sample(n, generator=...)`` returns ``(n, P)`` weight
            vectors (low-rank Laplace needs laplace-torch's optional ``asdfghjkl`` backend).
        num_samples (int): the number ``S`` of weight samples.
        seed (int): seed of the generator the samples are drawn with. Default: 0.

    Returns:
        WeightSamples: ``S`` copies of the model with sampled weights (a
        :class:`~captum_uncertainty.DeepEnsemble`), returning logits (classification) or
        ``(N, 2)`` = mean and ``log sigma_noise^2`` (regression).

    Raises:
        ImportError: laplace-torch is not installed.
        TypeError: ``la`` is not a laplace-torch Laplace object.
        ValueError: ``la`` is not fitted, has a likelihood other than classification and
            regression (reward modelling), is a regression approximation of a model with more
            than one output column or with ``sigma_noise <= 0``, or is a function-space (GP)
            approximation that has no weight posterior to sample.

    Examples::

        >>> from laplace import Laplace
        >>> la = Laplace(model, "classification", subset_of_weights="last_layer",
        ...              hessian_structure="kron")
        >>> la.fit(train_loader)
        >>> posterior = from_laplace(la, num_samples=20, seed=0)
        >>> uf = UncertaintyForward(posterior, measure="epistemic")
        >>> maps = UABackprop(uf).attribute(x)            # FullGrad path, sums to uf(x)
        >>> la = Laplace(regressor, "regression", subset_of_weights="all", hessian_structure="diag")
        >>> la.fit(train_loader)
        >>> uf = UncertaintyForward(from_laplace(la, 20), "epistemic", likelihood=Gaussian(variance="log_variance"))
        >>> total, aleatoric, epistemic = uf.decompose(x)  # aleatoric == la.sigma_noise ** 2
    """
    _check_laplace(la)
    num_samples = check_positive_int(num_samples, "num_samples")
    seed = check_seed(seed)
    log_noise_variance = _log_noise_variance(la) if _likelihood(la) == "regression" else None
    base, sampled = _sampled_parameters(la)
    vectors = _draw_weight_samples(la, num_samples, seed)
    names = _parameter_names(base, sampled)
    state_dicts = [_state_dict_with(base, names, sampled, vector) for vector in vectors]
    model = _without_laplace_hooks(base, la)
    if log_noise_variance is None:
        return WeightSamples(model, state_dicts)
    prefixed = [{f"model.{key}": value for key, value in state.items()} for state in state_dicts]
    return WeightSamples(_WithLogNoiseVariance(model, log_noise_variance), prefixed)


class _WithLogNoiseVariance(nn.Module):
    """A single-output regressor returning ``(N, 2)``: its mean and a constant ``log sigma^2``.

    Args:
        model (nn.Module): the regressor, returning ``(N,)`` or ``(N, 1)``.
        log_noise_variance (float): ``log sigma_noise^2`` of the Laplace likelihood.
    """

    def __init__(self, model: nn.Module, log_noise_variance: float) -> None:
        super().__init__()
        self.model = model
        self.log_noise_variance = float(log_noise_variance)

    def forward(self, *inputs: Any) -> Tensor:
        mean = self.model(*inputs)
        if not isinstance(mean, Tensor):
            raise TypeError(f"the regression model returned {type(mean).__name__}, expected a (N, 1) tensor")
        if mean.dim() == 1:
            mean = mean.unsqueeze(-1)
        if mean.dim() != 2 or mean.shape[1] != 1:
            raise ValueError(
                f"the regression model returned shape {tuple(mean.shape)}; from_laplace explains single-output "
                "regression, (N,) or (N, 1) per input"
            )
        return torch.cat([mean, torch.full_like(mean, self.log_noise_variance)], dim=1)

    def extra_repr(self) -> str:
        return f"log_noise_variance={self.log_noise_variance:.6g}"


def _likelihood(la: Any) -> str:
    return str(getattr(la.likelihood, "value", la.likelihood))


def _check_laplace(la: Any) -> None:
    """``la`` must be a fitted, weight-space, classification or regression Laplace approximation."""
    laplace = require("laplace", "laplace-torch", "from_laplace")
    if not isinstance(la, laplace.BaseLaplace):
        raise TypeError(
            f"la must be a laplace-torch Laplace approximation (e.g. laplace.Laplace(model, 'classification', ...)), "
            f"got {type(la).__name__}"
        )
    if not isinstance(la, laplace.ParametricLaplace):
        raise ValueError(
            f"la is a function-space {type(la).__name__}, which has no weight posterior to sample; use a weight-space "
            "approximation (hessian_structure 'diag', 'kron', 'full' or 'lowrank'), or wrap its predictive as "
            "SampleCallable(lambda x: la.predictive_samples(x, n_samples=S), layout='samples_first') "
            "(not deterministic: it redraws on every call)"
        )
    likelihood = _likelihood(la)
    if likelihood not in _LIKELIHOODS:
        raise ValueError(
            f"la has likelihood {likelihood!r}; from_laplace explains classifiers and regressors: build the Laplace "
            "object with likelihood='classification' or 'regression'"
        )
    if getattr(la, "H", None) is None or not getattr(la, "n_data", 0) or not isinstance(la.mean, Tensor):
        raise ValueError("la is not fitted: call la.fit(train_loader) before from_laplace(la, ...)")


def _log_noise_variance(la: Any) -> float:
    """``log sigma_noise^2`` of a fitted regression ``la`` with one output column."""
    outputs = int(getattr(la, "n_outputs", 0))
    if outputs != 1:
        raise ValueError(
            f"la is a regression Laplace approximation of a model with {outputs} output columns; from_laplace "
            "explains single-output regression (a model returning (N, 1)): fit one Laplace approximation per target"
        )
    sigma = la.sigma_noise
    sigma = sigma.detach() if isinstance(sigma, Tensor) else torch.as_tensor(sigma)
    if sigma.numel() != 1:
        raise ValueError(f"la.sigma_noise must be one number, got shape {tuple(sigma.shape)}")
    value = float(sigma.reshape(()))
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"la.sigma_noise must be a positive, finite number, got {value}")
    return 2.0 * math.log(value)


def _sampled_parameters(la: Any) -> Tuple[nn.Module, List[Tensor]]:
    """The module the samples refer to and its parameters in the order of ``la.sample``'s columns.

    Last-layer Laplace keeps its own deep copy of the model (``la.model.model``, whose last
    layer is ``la.model.last_layer``); the other approximations sample ``la.params``, the
    parameters of ``la.model`` (the user's model) that required gradients when ``la`` was built.
    """
    laplace = require("laplace", "laplace-torch", "from_laplace")
    if isinstance(la, laplace.LLLaplace):
        return la.model.model, list(la.model.last_layer.parameters())
    return la.model, list(la.params)


def _draw_weight_samples(la: Any, num_samples: int, seed: int) -> Tensor:
    """``(S, P)`` detached weight vectors from a generator on the model's device."""
    device = next(la.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        vectors = la.sample(num_samples, generator=generator).detach()
    expected = sum(p.numel() for p in _sampled_parameters(la)[1])
    if vectors.dim() != 2 or vectors.shape != (num_samples, expected):
        raise ValueError(
            f"la.sample returned shape {tuple(vectors.shape)}, expected ({num_samples}, {expected}) for the "
            f"{expected} parameters of the approximation"
        )
    return vectors


def _parameter_names(base: nn.Module, parameters: Sequence[Tensor]) -> List[List[str]]:
    """Every state-dict name of each parameter (tied parameters have several)."""
    names: Dict[int, List[str]] = {}
    for name, parameter in base.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    missing = [index for index, p in enumerate(parameters) if id(p) not in names]
    if missing:
        raise ValueError(
            f"{len(missing)} parameters of the Laplace approximation are not parameters of its model; "
            "was la.model changed after la.fit?"
        )
    return [names[id(p)] for p in parameters]


def _state_dict_with(
    base: nn.Module, names: Sequence[Sequence[str]], parameters: Sequence[Tensor], vector: Tensor
) -> Dict[str, Tensor]:
    """``base``'s state dict with ``parameters`` replaced by consecutive slices of ``vector``."""
    state = base.state_dict()
    offset = 0
    for parameter, keys in zip(parameters, names):
        value = vector[offset : offset + parameter.numel()].view_as(parameter)
        value = value.to(device=parameter.device, dtype=parameter.dtype).clone()
        offset += parameter.numel()
        for key in keys:
            state[key] = value
    return state


def _without_laplace_hooks(base: nn.Module, la: Any) -> nn.Module:
    """``base``, or a deep copy of it without the feature hook laplace-torch put on its last layer.

    ``laplace.utils.FeatureExtractor`` hooks the last layer of its copy of the model to store
    the layer's input on itself; copies made with that hook would keep writing into ``la``.
    """
    feature_extractor = require("laplace.utils", "laplace-torch", "from_laplace").FeatureExtractor
    extractor = la.model
    if not isinstance(extractor, feature_extractor):
        return base
    if not any(_owned_by(hook, extractor) for module in base.modules() for hook in module._forward_hooks.values()):
        return base
    stripped = copy.deepcopy(base)
    for module in stripped.modules():
        for key in [key for key, hook in module._forward_hooks.items() if _owned_by(hook, extractor)]:
            del module._forward_hooks[key]
            module._forward_hooks_with_kwargs.pop(key, None)
            module._forward_hooks_always_called.pop(key, None)
    return stripped


def _owned_by(hook: Any, owner: Any) -> bool:
    """Whether ``hook`` is a method of ``owner`` or a closure over it."""
    if getattr(hook, "__self__", None) is owner:
        return True
    cells = getattr(hook, "__closure__", None) or ()
    for cell in cells:
        try:
            if cell.cell_contents is owner:
                return True
        except ValueError:  # an empty cell
            continue
    return False
