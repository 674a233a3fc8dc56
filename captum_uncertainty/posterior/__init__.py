"""Where posterior samples come from.

Every source is a :class:`Posterior`: an ``nn.Module`` whose ``forward(*inputs)`` returns the
raw outputs of its ``S`` samples stacked as ``(S, N, C)`` (logits, or probabilities when the
:class:`~captum_uncertainty.UncertaintyForward` says so). Sources:

* :class:`DeepEnsemble`: a list of member modules, run in a loop or batched with
  ``torch.func.vmap`` (chosen by ``strategy``, see its docstring for the measured trade-off);
* :class:`MCDropout`: one module with ``nn.Dropout`` layers and ``S`` dropout masks sampled once
  (seeded) and reused on every call until :meth:`MCDropout.resample`;
* :class:`MCDropConnect`: one module whose ``nn.Linear`` / ``nn.Conv*`` weights are dropped
  with ``S`` weight masks sampled once (seeded) and reused until :meth:`MCDropConnect.resample`;
* :class:`WeightSamples`: explicit weight samples (state dicts or a model factory);
* :class:`SampleCallable`: any callable that already returns samples, by output layout.

No source ever leaves the user's modules changed: ``training`` flags are restored, temporary
hooks removed and parameters untouched, also when a call raises.
"""

from captum_uncertainty.posterior._coerce import as_posterior
from captum_uncertainty.posterior._protocol import Posterior
from captum_uncertainty.posterior._utils import (
    OutputReader,
    expand_to_samples,
    first_parameter,
    is_scalar_kl,
    preserved_modes,
    tensor_output,
)
from captum_uncertainty.posterior.callable import LAYOUTS, SUPPORTED_LAYOUTS, SampleCallable
from captum_uncertainty.posterior.dropconnect import MCDropConnect
from captum_uncertainty.posterior.dropout import DROPOUT_TYPES, MCDropout
from captum_uncertainty.posterior.ensembles import DeepEnsemble, WeightSamples

__all__ = [
    "Posterior",
    "DeepEnsemble",
    "MCDropout",
    "MCDropConnect",
    "WeightSamples",
    "SampleCallable",
    "SUPPORTED_LAYOUTS",
    "LAYOUTS",
    # package-internal: used by forward.py, dataset, attribution methods and integrations
    "as_posterior",
    "preserved_modes",
    "first_parameter",
    "expand_to_samples",
    "DROPOUT_TYPES",
    "tensor_output",
    "is_scalar_kl",
    "OutputReader",
]
