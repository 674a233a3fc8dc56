"""What a posterior sample's raw output means: one object per likelihood.

A tensor cannot say whether it holds logits or probabilities, one logit or two classes, a
variance, a log variance or a standard deviation. The user declares it once, with one of these
objects, and :class:`~captum_uncertainty.UncertaintyForward` asks the object, and only the
object, how to read a member's output, how to check it against the declaration, how to
decompose it into total, aleatoric and epistemic uncertainty, its per-class (or per-target)
terms, and which columns summarise an input. No other module compares likelihood names.

* :class:`~captum_uncertainty.Categorical`: ``C >= 2`` class logits or probabilities per input,
  decomposed by entropy, in nats.
* :class:`~captum_uncertainty.Bernoulli`: one logit or probability of the positive class per
  input, the two-class entropy decomposition of ``[1 - p, p]``.
* :class:`~captum_uncertainty.Gaussian`: a mean (per target) and, if the model has one, a noise
  head per input, decomposed by the law of total variance, in squared output units.

For ``S`` posterior samples with class probabilities ``p_s`` of one input:

* total uncertainty     ``U_t = H[mean_s p_s]``            (predictive entropy)
* aleatoric uncertainty ``U_a = mean_s H[p_s]``            (expected entropy)
* epistemic uncertainty ``U_e = U_t - U_a``                (mutual information)

and the per-class terms of Wang et al. (2023), Eq. 4:
``U_{t,g_i} = -pbar_i log pbar_i``, ``U_{a,g_i} = mean_s -p_{s,i} log p_{s,i}``,
``U_{e,g_i} = U_{t,g_i} - U_{a,g_i}``, each summing over ``i`` to its scalar.

Numerics: from logits everything is computed in log space (``log_softmax`` per sample,
``logsumexp - log S`` for the mean), so a saturated (one-hot) prediction gives exactly 0 and a
finite gradient. Declared probabilities are converted with ``log(clamp_min(p, tiny))``; the
clamp only ever multiplies an exact zero, so values are exact and gradients finite.

For ``S`` Gaussian samples ``N(mu_s, sigma_s^2)`` of one target, the law of total variance:

* aleatoric uncertainty ``mean_s sigma_s^2``                       (expected noise variance)
* epistemic uncertainty ``mean_s (mu_s - mean_t mu_t)^2``          (variance of the means,
  population form: divided by ``S``, as the entropy decomposition averages over samples)
* total uncertainty     ``aleatoric + epistemic``                  (predictive variance)
"""

from __future__ import annotations

from captum_uncertainty.likelihoods._base import MEASURES, Decomposition, Likelihood
from captum_uncertainty.likelihoods._classifiers import PROBABILITY_SUM_TOLERANCE as _PROBABILITY_SUM_TOLERANCE
from captum_uncertainty.likelihoods._classifiers import Bernoulli, Categorical, log_mean_probabilities
from captum_uncertainty.likelihoods._gaussian import UNDECLARED, VARIANCE_HEADS, Gaussian, UndeclaredOutputError
from captum_uncertainty.likelihoods._resolve import LIKELIHOOD_NAMES, resolve_likelihood

__all__ = [
    "Bernoulli",
    "Categorical",
    "Decomposition",
    "Gaussian",
    "LIKELIHOOD_NAMES",
    "Likelihood",
    "MEASURES",
    "PROBABILITY_SUM_TOLERANCE",
    "UNDECLARED",
    "UndeclaredOutputError",
    "VARIANCE_HEADS",
    "log_mean_probabilities",
    "resolve_likelihood",
]

# The same object as _classifiers' (which its checks read), bound here with its comment because
# autodoc reads a constant's #: comment from the module it is documented in (docs/api.rst).
#: Largest deviation of a probability vector's sum from 1 that is accepted.
PROBABILITY_SUM_TOLERANCE = _PROBABILITY_SUM_TOLERANCE
