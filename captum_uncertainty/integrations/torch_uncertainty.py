"""torch-uncertainty: its deep-ensemble and MC-dropout wrappers as deterministic posteriors.

torch-uncertainty's ``deep_ensembles(...)`` returns the members' logits concatenated as one
``(S * N, C)`` tensor, and ``mc_dropout(...)`` draws new dropout noise on every call and, with
``on_batch=True`` (its default), independently for every row of the repeated batch, so an
input's uncertainty depends on the other rows of its batch.
:func:`~captum_uncertainty.integrations.from_torch_uncertainty` unwraps both into this
package's :class:`~captum_uncertainty.DeepEnsemble` and :class:`~captum_uncertainty.MCDropout`
(frozen masks shared by all rows).

Regression wrappers (``task="regression"``) are unwrapped the same way; their members return
point predictions (``probabilistic=False``) or a dict of distribution parameters
(``probabilistic=True``, e.g. ``{"loc", "scale"}`` from torch-uncertainty's ``NormalLinear``
head), which a private wrapper turns into the ``(N, 1)`` means or ``(N, 2)`` mean and
log-variance that :class:`~captum_uncertainty.UncertaintyForward` reads with
``likelihood=Gaussian(variance=None)`` or ``Gaussian(variance="log_variance")``.
"""

from __future__ import annotations

import collections
import copy
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_choice, check_optional_positive_int
from captum_uncertainty.integrations import require
from captum_uncertainty.integrations._utils import check_seed
from captum_uncertainty.posterior import DROPOUT_TYPES, DeepEnsemble, MCDropout, Posterior

__all__ = ["from_torch_uncertainty", "SUPPORTED_WRAPPERS", "SUPPORTED_DIST_FAMILIES", "DIST_FAMILIES"]

#: What :func:`~captum_uncertainty.integrations.from_torch_uncertainty` accepts, as named in its errors.
SUPPORTED_WRAPPERS = (
    "torch_uncertainty.methods.deep_ensembles(...) (a classification _DeepEnsembles or regression _RegDeepEnsembles)",
    "torch_uncertainty.methods.mc_dropout(...) (a classification _MCDropout or regression _RegMCDropout)",
)

#: The ``dist_family`` choices of :func:`from_torch_uncertainty`: the distribution families of
#: torch-uncertainty's probabilistic regression heads whose mean and variance the Gaussian (law of
#: total variance) decomposition reads.
SUPPORTED_DIST_FAMILIES = ("normal", "laplace", "student", "gamma")
#: Deprecated alias of :data:`SUPPORTED_DIST_FAMILIES`, kept for one release.
DIST_FAMILIES = SUPPORTED_DIST_FAMILIES

#: torch-uncertainty's family names that have no usable mean and variance per member.
_UNSUPPORTED_FAMILIES = {
    "cauchy": "a Cauchy distribution has no mean and no finite variance",
    "nig": (
        "a Normal-Inverse-Gamma (evidential) head is itself a distribution over Gaussians, with an aleatoric and an "
        "epistemic part of its own, not one predictive mean and variance"
    ),
}

#: torch-uncertainty's distribution layers (``torch_uncertainty.layers.distributions``) -> their family.
_LAYER_FAMILIES = {
    "NormalLinear": "normal",
    "NormalConvNd": "normal",
    "LaplaceLinear": "laplace",
    "LaplaceConvNd": "laplace",
    "CauchyLinear": "cauchy",
    "CauchyConvNd": "cauchy",
    "StudentTLinear": "student",
    "StudentTConvNd": "student",
    "GammaLinear": "gamma",
    "GammaConvNd": "gamma",
    "NormalInverseGammaLinear": "nig",
    "NormalInverseGammaConvNd": "nig",
}

#: The parameter names of an output dict that name its family without doubt.
_KEY_FAMILIES = {
    frozenset({"loc", "scale", "df"}): "student",
    frozenset({"concentration", "rate"}): "gamma",
    frozenset({"loc", "lmbda", "alpha", "beta"}): "nig",
}

_FITS = (
    "what fits: one target per input, as point predictions (N,) / (N, 1) (probabilistic=False) or a dict of one "
    "target's distribution parameters of shape (N,) / (N, 1) each (probabilistic=True: {'loc', 'scale'} of a "
    "normal or laplace head, {'loc', 'scale', 'df'} of a student head, {'concentration', 'rate'} of a gamma head)"
)


def from_torch_uncertainty(
    model: nn.Module, num_samples: Optional[int] = None, seed: int = 0, *, dist_family: Optional[str] = None
) -> Posterior:
    r"""A torch-uncertainty ensemble or MC-dropout wrapper as a deterministic posterior.

    * ``deep_ensembles(...)`` -> a :class:`~captum_uncertainty.DeepEnsemble` of its members
      (``model.core_models``, the same module objects, not copies). ``num_samples`` must be
      ``None`` or the number of members.
    * ``mc_dropout(...)`` -> ``MCDropout(model.core_model, num_samples, seed)`` with
      ``num_samples`` defaulting to the wrapper's ``num_estimators``: ``S`` dropout masks drawn
      once from a generator seeded with ``seed`` and shared by every row, so the posterior is
      the same on every call and an input's value does not depend on its batch (torch-
      uncertainty's ``on_batch=True`` draws noise per row). The dropout layers sampled are
      the ones torch-uncertainty makes stochastic: all of them, or only the last one when
      the wrapper was built with ``last_layer=True``. A dropout module that the model's
      ``forward`` applies at several places (torch-uncertainty's LeNet reuses its
      ``conv_dropout``) gets an independent mask at each place, as in torch-uncertainty: the
      core model is then run through a ``torch.fx`` graph in which each later use calls a
      copy of the dropout module (the other layers are the model's own). Models that
      ``torch.fx`` cannot trace are used as they are.

    Regression wrappers (``deep_ensembles(..., task="regression", probabilistic=...)``,
    ``mc_dropout(..., task="regression", probabilistic=...)``) give the same posteriors, with
    every member (or the core model) inside a private wrapper that maps its output to the
    layouts of :class:`~captum_uncertainty.Gaussian`, for one target per input:

    * point predictions ``(N,)`` / ``(N, 1)`` (``probabilistic=False``) -> ``(N, 1)`` means; the
      declare ``Gaussian(variance=None)`` (with ``noise_variance=`` if the noise is known);
      the aleatoric part is then unknown and the measure to explain is ``"epistemic"``;
    * a dict of distribution parameters (``probabilistic=True``, torch-uncertainty's
      ``NormalLinear`` / ``LaplaceLinear`` / ``StudentTLinear`` / ``GammaLinear`` heads and their
      ``ConvNd`` versions), or a ``torch.distributions.Distribution`` -> ``(N, 2)`` = the
      distribution's mean and ``log`` variance, as ``torch.distributions`` computes them for
      torch-uncertainty's family (normal ``scale^2``, laplace ``2 scale^2``, student
      ``scale^2 df / (df - 2)``, gamma ``concentration / rate^2``): declare
      ``UncertaintyForward(posterior, likelihood=Gaussian(variance="log_variance"))``.

    Anything else (several targets, pixel-wise outputs, a Cauchy or Normal-Inverse-Gamma head, a
    Student-t with ``df <= 2``) raises a ``ValueError`` on the first call saying what the member
    returned and what fits. A regression posterior's :meth:`~captum_uncertainty.Posterior.sample_modules`
    are these wrappers (each holding the user's module), not the user's modules themselves.

    The user's modules are never modified: members and the core model run in eval mode
    during each call (BatchNorm uses its running statistics) and get their flags back, and
    MC-dropout masks are applied by temporary hooks. Both posteriors run the modules as
    modules, so UA-Backprop's ``path="fullgrad"`` records their convolution and BatchNorm
    layers.

    Args:
        model (nn.Module): a classification or regression wrapper built by torch-uncertainty's
            ``deep_ensembles`` or ``mc_dropout``.
        num_samples (int, optional): number of posterior samples: the MC-dropout masks
            (default: the wrapper's ``num_estimators``); for an ensemble, the member count.
        seed (int): seed of the MC-dropout masks (unused for ensembles). Default: 0.
        dist_family (str, keyword only, optional): the distribution family of a probabilistic
            regression member's output dict, as torch-uncertainty names it: ``"normal"``,
            ``"laplace"``, ``"student"`` or ``"gamma"``. Needed only when a member returns
            ``{"loc", "scale"}`` without one of torch-uncertainty's distribution layers to tell
            normal from laplace. Default: ``None`` (read from the members' distribution layers,
            or from the dict's keys).

    Returns:
        Posterior: a :class:`~captum_uncertainty.DeepEnsemble` or
        :class:`~captum_uncertainty.MCDropout`.

    Raises:
        ImportError: torch-uncertainty is not installed.
        TypeError: ``model`` is not one of the supported wrappers (the error lists them).
        ValueError: an ensemble ``num_samples`` that differs from the member count, a
            stochastic dropout layer ``MCDropout`` cannot sample (e.g. ``nn.AlphaDropout``),
            named with its path, a ``dist_family`` for a classification wrapper, or a
            regression member with a Cauchy or Normal-Inverse-Gamma head.

    Examples::

        >>> from torch_uncertainty.methods import deep_ensembles, mc_dropout
        >>> posterior = from_torch_uncertainty(deep_ensembles([m1, m2, m3]))
        >>> posterior = from_torch_uncertainty(mc_dropout(net, num_estimators=20), seed=0)
        >>> uf = UncertaintyForward(posterior, measure="epistemic")
        >>> regression = deep_ensembles([r1, r2, r3], task="regression", probabilistic=True)
        >>> uf = UncertaintyForward(from_torch_uncertainty(regression), likelihood=Gaussian(variance="log_variance"))
    """
    ensembles = require("torch_uncertainty.methods.deep_ensembles", "torch-uncertainty", "from_torch_uncertainty")
    dropout = require("torch_uncertainty.methods.mc_dropout", "torch-uncertainty", "from_torch_uncertainty")
    seed = check_seed(seed)
    num_samples = check_optional_positive_int(num_samples, "num_samples")
    if not isinstance(model, (ensembles._DeepEnsembles, dropout._MCDropout)):
        raise TypeError(
            f"model must be one of torch-uncertainty's wrappers: {'; '.join(SUPPORTED_WRAPPERS)}; got "
            f"{type(model).__name__}. For other models build a DeepEnsemble, MCDropout or WeightSamples directly"
        )
    regression = isinstance(model, (ensembles._RegDeepEnsembles, dropout._RegMCDropout))
    if dist_family is not None:
        check_choice(dist_family, "dist_family", SUPPORTED_DIST_FAMILIES + tuple(_UNSUPPORTED_FAMILIES))
        if not regression:
            raise ValueError(
                f"dist_family={dist_family!r} describes a probabilistic regression member, but model is a "
                f"classification {type(model).__name__}; drop dist_family"
            )
    if isinstance(model, ensembles._DeepEnsembles):
        return _ensemble_posterior(model, num_samples, regression, dist_family)
    return _dropout_posterior(model, num_samples, seed, regression, dist_family)


def _ensemble_posterior(
    model: Any, num_samples: Optional[int], regression: bool, dist_family: Optional[str]
) -> DeepEnsemble:
    """The members of a ``_DeepEnsembles`` as a :class:`DeepEnsemble` (wrapped for regression)."""
    members = list(model.core_models)
    if num_samples is not None and num_samples != len(members):
        raise ValueError(
            f"num_samples={num_samples} but the ensemble has {len(members)} members; pass num_samples=None"
        )
    if regression:
        members = [
            _RegressionMoments(member, _family_of(member, dist_family, f"member {index}"))
            for index, member in enumerate(members)
        ]
    return DeepEnsemble(members)


def _dropout_posterior(
    model: Any, num_samples: Optional[int], seed: int, regression: bool, dist_family: Optional[str]
) -> MCDropout:
    """``MCDropout`` over the wrapper's core model, sampling the layers torch-uncertainty samples."""
    core = model.core_model
    stochastic = list(model.filtered_modules)  # all dropout modules, or the last one (last_layer=True)
    _check_dropout_types(core, stochastic)
    network, sampled = _with_dropout_per_call_site(core, stochastic)
    if regression:
        network = _RegressionMoments(network, _family_of(core, dist_family, "the core model"))
    return MCDropout(network, num_samples=num_samples or model.num_estimators, seed=seed, dropouts=sampled)


def _family_of(module: nn.Module, dist_family: Optional[str], where: str) -> Optional[str]:
    """The distribution family of a regression module: ``dist_family``, else its distribution
    layers' (``None`` when it has none: then its output, a tensor or a dict's keys, decides)."""
    found = {_LAYER_FAMILIES[type(sub).__name__] for sub in module.modules() if type(sub).__name__ in _LAYER_FAMILIES}
    if dist_family is None and len(found) > 1:
        raise ValueError(
            f"{where} contains torch-uncertainty distribution layers of several families ({', '.join(sorted(found))}); "
            "pass dist_family= the family of its output"
        )
    family = dist_family if dist_family is not None else next(iter(found), None)
    if family in _UNSUPPORTED_FAMILIES:
        raise ValueError(_unsupported_message(where, family))
    return family


def _unsupported_message(where: str, family: str) -> str:
    return (
        f"{where} of the regression wrapper has a {family!r} distribution head: {_UNSUPPORTED_FAMILIES[family]}, so "
        f"the law of total variance does not apply (supported families: {', '.join(SUPPORTED_DIST_FAMILIES)}); {_FITS}"
    )


class _RegressionMoments(nn.Module):
    """A torch-uncertainty regression module returning :class:`UncertaintyForward`'s Gaussian layout.

    Point predictions become ``(N, 1)`` means; distribution parameters (a dict, read as
    ``family``, or a ``torch.distributions.Distribution``) become ``(N, 2)`` = mean and ``log``
    variance.

    Args:
        model (nn.Module): the member or core model.
        family (str, optional): torch-uncertainty's distribution family of the output dict
            (``None``: named by the dict's keys).
    """

    def __init__(self, model: nn.Module, family: Optional[str]) -> None:
        super().__init__()
        self.model = model
        self.family = family

    def forward(self, *inputs: Any) -> Tensor:
        out = self.model(*inputs)
        if isinstance(out, Tensor):
            return _one_target(out, "point predictions")
        if isinstance(out, dict):
            out = self._distribution(out)
        if isinstance(out, torch.distributions.Distribution):
            return self._moments(out)
        raise ValueError(
            f"a torch-uncertainty regression module returned {type(out).__name__}, expected a tensor of point "
            f"predictions or a dict of distribution parameters; {_FITS}"
        )

    def _distribution(self, parameters: Dict[str, Any]) -> torch.distributions.Distribution:
        keys = frozenset(parameters)
        family = self.family or _KEY_FAMILIES.get(keys)
        if family is None:
            raise ValueError(
                f"a torch-uncertainty regression module returned a dict with keys {sorted(keys)} and has no "
                "torch-uncertainty distribution layer naming its family; pass from_torch_uncertainty(..., "
                f"dist_family=...), one of {', '.join(SUPPORTED_DIST_FAMILIES)} "
                "({'loc', 'scale'} is normal or laplace)"
            )
        if family in _UNSUPPORTED_FAMILIES:
            raise ValueError(_unsupported_message("a module", family))
        distributions = require("torch_uncertainty.utils.distributions", "torch-uncertainty", "from_torch_uncertainty")
        parameters = {key: _one_target(value, f"parameter {key!r}") for key, value in parameters.items()}
        try:
            return distributions.get_dist_class(family)(**parameters, validate_args=False)
        except TypeError as error:
            raise ValueError(
                f"a torch-uncertainty regression module returned a dict with keys {sorted(keys)}, which are not the "
                f"parameters of a {family!r} distribution ({error}); {_FITS}"
            ) from None

    @staticmethod
    def _moments(distribution: torch.distributions.Distribution) -> Tensor:
        name = type(distribution).__name__
        mean = _one_target(distribution.mean, f"the mean of its {name}")
        variance = _one_target(distribution.variance, f"the variance of its {name}")
        detached = torch.cat([mean, variance], dim=1).detach()
        if not bool(torch.isfinite(detached).all()) or bool((variance.detach() <= 0).any()):
            df = getattr(distribution, "df", None)
            found = f" (its smallest df is {float(df.detach().min()):.3g})" if isinstance(df, Tensor) else ""
            raise ValueError(
                f"a torch-uncertainty regression module returned a {name} without a finite mean and a positive, "
                f"finite variance for every input{found}: a Student-t needs df > 2 (torch-uncertainty's "
                f"StudentTLinear clamps df at min_df=2 by default: build it with min_df > 2 or a fixed_df > 2), a "
                f"Cauchy has neither; {_FITS}"
            )
        return torch.cat([mean, variance.log()], dim=1)

    def extra_repr(self) -> str:
        return f"family={self.family!r}" if self.family else ""


def _one_target(value: Any, what: str) -> Tensor:
    """``value`` as ``(N, 1)``: one number per input, from ``(N,)`` or ``(N, 1)``."""
    if not isinstance(value, Tensor):
        raise ValueError(
            f"a torch-uncertainty regression module returned {what} of type {type(value).__name__}, not a tensor; "
            f"{_FITS}"
        )
    if value.dim() == 1:
        return value.unsqueeze(-1)
    if value.dim() == 2 and value.shape[1] == 1:
        return value
    targets = f"{value.shape[1]} targets" if value.dim() == 2 else f"a {value.dim()}-dimensional output"
    hint = (
        "; if the two columns of a point-prediction member are a mean and a variance head, use "
        "DeepEnsemble(model.core_models) with UncertaintyForward(..., likelihood=Gaussian(variance=...))"
        if value.dim() == 2 and value.shape[1] == 2 and what == "point predictions"
        else ""
    )
    raise ValueError(
        f"a torch-uncertainty regression module returned {what} of shape {tuple(value.shape)} ({targets}), but "
        f"from_torch_uncertainty explains one target per input; {_FITS}{hint}"
    )


def _check_dropout_types(core: nn.Module, stochastic: List[nn.Module]) -> None:
    """Every dropout layer torch-uncertainty samples must be one MCDropout can mask."""
    paths = {id(module): path for path, module in core.named_modules()}
    for module in stochastic:
        if not isinstance(module, DROPOUT_TYPES):
            raise ValueError(
                f"the dropout layer {type(module).__name__} at {paths.get(id(module), '?')!r} is sampled by "
                f"torch-uncertainty but MCDropout masks only {', '.join(t.__name__ for t in DROPOUT_TYPES)} modules"
            )


def _with_dropout_per_call_site(core: nn.Module, stochastic: List[nn.Module]) -> Tuple[nn.Module, List[nn.Module]]:
    """``core``, or an ``fx`` graph of it in which each reuse of a dropout module calls a copy.

    Returns the network to run and the dropout modules in it to sample (``stochastic`` plus
    the copies made for their later call sites). ``MCDropout`` keeps one mask per dropout
    module; a module called twice in one forward would otherwise get the same mask twice (or
    fail when its input shapes differ), where torch-uncertainty draws independent noise.
    """
    try:
        graph_module = _fx_trace(core)
    except Exception:  # noqa: BLE001 - untraceable forward: use the model as it is
        return core, stochastic
    calls = collections.Counter(node.target for node in graph_module.graph.nodes if node.op == "call_module")
    modules = dict(core.named_modules())
    if not any(calls[path] > 1 for path, module in modules.items() if isinstance(module, DROPOUT_TYPES)):
        return core, stochastic
    sampled = list(stochastic)
    seen: Dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), DROPOUT_TYPES):
            continue
        site = seen[node.target] = seen.get(node.target, -1) + 1
        if site == 0:
            continue
        original = modules[node.target]
        copy_name = f"{node.target.replace('.', '_')}_call_site_{site}"
        while hasattr(graph_module, copy_name):
            copy_name += "_"
        duplicate = copy.deepcopy(original)
        graph_module.add_submodule(copy_name, duplicate)
        node.target = copy_name
        if any(original is module for module in stochastic):
            sampled.append(duplicate)
    graph_module.recompile()
    return graph_module, sampled


def _fx_trace(core: nn.Module) -> Any:
    """``torch.fx.symbolic_trace(core)``: a ``GraphModule`` sharing ``core``'s submodules."""
    import torch.fx

    return torch.fx.symbolic_trace(core)
