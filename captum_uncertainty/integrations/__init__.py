"""Posteriors and evaluation adapters for other uncertainty and explainability libraries.

Each ``from_*`` function turns a model of another library into a *deterministic*
:class:`~captum_uncertainty.Posterior`: the same ``S`` posterior samples on every call, and an
input's outputs independent of the other rows of its batch. That is what path methods
(integrated gradients, UA-Backprop's IG path) and repeated evaluations need, and what the
libraries' own predictive functions do not give (they redraw weights or noise on every call,
or per row). Every returned posterior is a :class:`~captum_uncertainty.DeepEnsemble` (or
:class:`~captum_uncertainty.WeightSamples`, :class:`~captum_uncertainty.MCDropout`) of plain
``torch.nn`` modules, so every method of this package accepts it, including
:class:`~captum_uncertainty.UABackprop`'s ``path="fullgrad"`` with its bias terms.

* :func:`from_laplace`: laplace-torch's weight-space Laplace approximations;
* :func:`from_bayesian_torch`: bayesian-torch networks (``dnn_to_bnn`` or the model zoo);
* :func:`from_torch_uncertainty`: torch-uncertainty's ``deep_ensembles`` and ``mc_dropout``;
* :class:`QuantusUncertaintyModel` and :func:`quantus_explain_func`: evaluate uncertainty maps
  with Quantus metrics.

The first three accept regressors too: their posteriors then return the ``(N, 2)`` mean and
log-variance that ``UncertaintyForward(posterior, likelihood=Gaussian(variance="log_variance"))``
(or the ``(N, 1)`` means that ``Gaussian(variance=None)``) decomposes by the law of total
variance (laplace-torch's observation noise ``la.sigma_noise``, torch-uncertainty's
``{"loc", "scale"}`` heads, a bayesian-torch network's own variance head).

The libraries are optional (``pip install captum-uncertainty[integrations]``): this package and
its submodules import them only when a function needs them, and raise an ``ImportError`` saying
what to install when one is missing.

Examples::

    >>> from captum_uncertainty import UABackprop, UncertaintyForward
    >>> from captum_uncertainty.integrations import from_laplace
    >>> posterior = from_laplace(la, num_samples=20, seed=0)
    >>> uf = UncertaintyForward(posterior, measure="epistemic")
    >>> maps = UABackprop(uf).attribute(x, path="fullgrad")
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Dict, List

__all__ = [
    "from_laplace",
    "from_bayesian_torch",
    "from_torch_uncertainty",
    "QuantusUncertaintyModel",
    "quantus_explain_func",
    "quantus_batch",
    # package-internal: imports an optional dependency for the integration modules
    "require",
]

#: The ``pip`` command that installs every optional package used here.
INSTALL_HINT = "pip install captum-uncertainty[integrations]"

#: Public name -> the submodule defining it (imported on first access, PEP 562).
_LAZY: Dict[str, str] = {
    "from_laplace": "laplace",
    "from_bayesian_torch": "bayesian_torch",
    "from_torch_uncertainty": "torch_uncertainty",
    "QuantusUncertaintyModel": "quantus",
    "quantus_explain_func": "quantus",
    "quantus_batch": "quantus",
}


def require(module: str, package: str, caller: str) -> ModuleType:
    """Import an optional dependency, or raise an ``ImportError`` saying how to install it.

    Args:
        module (str): the module to import, e.g. ``"laplace"``.
        package (str): its distribution name on PyPI, e.g. ``"laplace-torch"``.
        caller (str): the function that needs it, named in the error.

    Returns:
        ModuleType: the imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{caller} needs the optional package {package} ({module!r} could not be imported: {error}); "
            f"install it with `{INSTALL_HINT}`"
        ) from error


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
