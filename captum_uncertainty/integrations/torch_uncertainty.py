"""torch-uncertainty: its deep-ensemble and MC-dropout wrappers as deterministic posteriors.

torch-uncertainty's ``deep_ensembles(...)`` returns the members' logits concatenated as one
``(S * N, C)`` tensor, and ``mc_dropout(...)`` draws new dropout noise on every call and, with
``on_batch=True`` (its default), independently for every row of the repeated batch, so an
input's uncertainty depends on the other rows of its batch.
:func:`~captum_uncertainty.integrations.from_torch_uncertainty` unwraps both into this
package's :class:`~captum_uncertainty.DeepEnsemble` and :class:`~captum_uncertainty.MCDropout`
(frozen masks shared by all rows).
"""

from __future__ import annotations

import collections
import copy
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from captum_uncertainty._validation import check_optional_positive_int
from captum_uncertainty.integrations import require
from captum_uncertainty.integrations._utils import check_seed
from captum_uncertainty.posterior import DROPOUT_TYPES, DeepEnsemble, MCDropout, Posterior

__all__ = ["from_torch_uncertainty", "SUPPORTED_WRAPPERS"]

#: What :func:`~captum_uncertainty.integrations.from_torch_uncertainty` accepts, as named in its errors.
SUPPORTED_WRAPPERS = (
    "torch_uncertainty.methods.deep_ensembles(...) (a classification _DeepEnsembles)",
    "torch_uncertainty.methods.mc_dropout(...) (a classification _MCDropout)",
)


def from_torch_uncertainty(model: nn.Module, num_samples: Optional[int] = None, seed: int = 0) -> Posterior:
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

    The user's modules are never modified: members and the core model run in eval mode
    during each call (BatchNorm uses its running statistics) and get their flags back, and
    MC-dropout masks are applied by temporary hooks. Both posteriors run the modules as
    modules, so UA-Backprop's ``path="fullgrad"`` records their convolution and BatchNorm
    layers.

    Args:
        model (nn.Module): a classification wrapper built by torch-uncertainty's
            ``deep_ensembles`` or ``mc_dropout``.
        num_samples (int, optional): number of posterior samples: the MC-dropout masks
            (default: the wrapper's ``num_estimators``); for an ensemble, the member count.
        seed (int): seed of the MC-dropout masks (unused for ensembles). Default: 0.

    Returns:
        Posterior: a :class:`~captum_uncertainty.DeepEnsemble` or
        :class:`~captum_uncertainty.MCDropout`.

    Raises:
        ImportError: torch-uncertainty is not installed.
        TypeError: ``model`` is not one of the supported wrappers (the error lists them).
        ValueError: a regression wrapper, an ensemble ``num_samples`` that differs from the
            member count, or a stochastic dropout layer ``MCDropout`` cannot sample (e.g.
            ``nn.AlphaDropout``), named with its path.

    Examples::

        >>> from torch_uncertainty.methods import deep_ensembles, mc_dropout
        >>> posterior = from_torch_uncertainty(deep_ensembles([m1, m2, m3]))
        >>> posterior = from_torch_uncertainty(mc_dropout(net, num_estimators=20), seed=0)
        >>> uf = UncertaintyForward(posterior, measure="epistemic")
    """
    ensembles = require("torch_uncertainty.methods.deep_ensembles", "torch-uncertainty", "from_torch_uncertainty")
    dropout = require("torch_uncertainty.methods.mc_dropout", "torch-uncertainty", "from_torch_uncertainty")
    seed = check_seed(seed)
    num_samples = check_optional_positive_int(num_samples, "num_samples")
    if isinstance(model, ensembles._DeepEnsembles):
        if isinstance(model, ensembles._RegDeepEnsembles):
            raise ValueError(_regression_message("deep_ensembles"))
        return _ensemble_posterior(model, num_samples)
    if isinstance(model, dropout._MCDropout):
        if isinstance(model, dropout._RegMCDropout):
            raise ValueError(_regression_message("mc_dropout"))
        return _dropout_posterior(model, num_samples, seed)
    raise TypeError(
        f"model must be one of torch-uncertainty's wrappers: {'; '.join(SUPPORTED_WRAPPERS)}; got "
        f"{type(model).__name__}. For other models build a DeepEnsemble, MCDropout or WeightSamples directly"
    )


def _regression_message(builder: str) -> str:
    return (
        f"model is a regression {builder}(...) wrapper; from_torch_uncertainty explains classifiers "
        "(task='classification')"
    )


def _ensemble_posterior(model: Any, num_samples: Optional[int]) -> DeepEnsemble:
    """The members of a ``_DeepEnsembles`` as a :class:`DeepEnsemble`."""
    members = list(model.core_models)
    if num_samples is not None and num_samples != len(members):
        raise ValueError(
            f"num_samples={num_samples} but the ensemble has {len(members)} members; pass num_samples=None"
        )
    return DeepEnsemble(members)


def _dropout_posterior(model: Any, num_samples: Optional[int], seed: int) -> MCDropout:
    """``MCDropout`` over the wrapper's core model, sampling the layers torch-uncertainty samples."""
    core = model.core_model
    stochastic = list(model.filtered_modules)  # all dropout modules, or the last one (last_layer=True)
    _check_dropout_types(core, stochastic)
    network, sampled = _with_dropout_per_call_site(core, stochastic)
    return MCDropout(network, num_samples=num_samples or model.num_estimators, seed=seed, dropouts=sampled)


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
