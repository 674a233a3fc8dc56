"""The one place that reads the likelihood names and the forward's older keyword flags:
:func:`resolve_likelihood`. Part of :mod:`captum_uncertainty.likelihoods`, which re-exports the
public names.
"""

from __future__ import annotations

from typing import Any, Optional

from captum_uncertainty.likelihoods._base import Likelihood
from captum_uncertainty.likelihoods._classifiers import Bernoulli, Categorical, _UndeclaredCategorical
from captum_uncertainty.likelihoods._gaussian import UNDECLARED, Gaussian

__all__ = ["LIKELIHOOD_NAMES", "resolve_likelihood"]

# ----------------------------------------------------------------------------- the old flags, read here only

#: The likelihood names accepted as shorthands.
LIKELIHOOD_NAMES = ("categorical", "bernoulli", "gaussian")


def resolve_likelihood(
    likelihood: Any = None,
    *,
    probabilities: bool = False,
    binary: bool = False,
    variance: Any = UNDECLARED,
    noise_variance: Optional[float] = None,
) -> Likelihood:
    """The :class:`Likelihood` a forward's arguments declare: the one place that reads the names
    ``"categorical"`` / ``"bernoulli"`` / ``"gaussian"`` and the older keyword flags.

    * a :class:`Likelihood` object is used as given (no flag may be passed beside it);
    * ``None`` with no flag: class logits of ``C >= 3`` classes; 2 numbers per input are
      refused as ambiguous;
    * ``probabilities=True``: :class:`Categorical` ``("probabilities")``; ``binary=True``:
      :class:`Bernoulli` (``"probability"`` with ``probabilities=True``);
    * ``"categorical"``, ``"bernoulli"``: as the flags say; ``"gaussian"``: :class:`Gaussian`
      with ``variance`` (required) and ``noise_variance``.
    """
    for value, flag in ((probabilities, "probabilities"), (binary, "binary")):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {value!r}")
    flags = {
        "probabilities": probabilities,
        "binary": binary,
        "variance": variance is not UNDECLARED,
        "noise_variance": noise_variance is not None,
    }
    given = [name for name, present in flags.items() if present]
    if isinstance(likelihood, Likelihood):
        if given:
            raise ValueError(
                f"{', '.join(given)} given beside likelihood={likelihood!r}: declare the outputs once, inside the "
                "likelihood object (e.g. Categorical(outputs='probabilities'), "
                "Gaussian(variance=..., noise_variance=...))"
            )
        return likelihood
    if likelihood is not None and (not isinstance(likelihood, str) or likelihood not in LIKELIHOOD_NAMES):
        raise ValueError(
            "likelihood must be a Categorical, Bernoulli or Gaussian object (or one of the names "
            f"{LIKELIHOOD_NAMES}), got {likelihood!r}"
        )
    if likelihood == "gaussian":
        for flag in ("binary", "probabilities"):
            if flags[flag]:
                raise ValueError(
                    f"{flag}=True describes a classifier's outputs, but likelihood='gaussian' reads a mean (and a "
                    f"noise head) per input; drop {flag}=True, or declare a classifier (Categorical, Bernoulli)"
                )
        return Gaussian(variance=variance, noise_variance=noise_variance)
    for flag in ("variance", "noise_variance"):
        if flags[flag]:
            raise ValueError(
                f"{flag} describes a regressor's noise, but the forward reads a classifier; pass "
                "likelihood=Gaussian(variance=..., noise_variance=...) for a regressor, or leave it out"
            )
    if binary or likelihood == "bernoulli":
        return Bernoulli("probability" if probabilities else "logit")
    if probabilities:
        return Categorical("probabilities")
    return Categorical() if likelihood == "categorical" else _UndeclaredCategorical()
