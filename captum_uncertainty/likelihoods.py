"""What a posterior sample's raw output means: one object per likelihood.

A tensor cannot say whether it holds logits or probabilities, one logit or two classes, a
variance, a log variance or a standard deviation. The user declares it once, with one of these
objects, and :class:`~captum_uncertainty.UncertaintyForward` asks the object, and only the
object, how to read a member's output, how to check it against the declaration, how to
decompose it into total, aleatoric and epistemic uncertainty, its per-class (or per-target)
terms, and which columns summarise an input. No other module compares likelihood names.

* :class:`Categorical`: ``C >= 2`` class logits or probabilities per input, decomposed by
  entropy, in nats.
* :class:`Bernoulli`: one logit or probability of the positive class per input, the two-class
  entropy decomposition of ``[1 - p, p]``.
* :class:`Gaussian`: a mean (per target) and, if the model has one, a noise head per input,
  decomposed by the law of total variance, in squared output units.

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

import math
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from captum_uncertainty._validation import (
    check_choice,
    check_finite_tensor,
    check_int,
    check_non_negative_number,
    check_positive_int,
)
from captum_uncertainty.posterior import tensor_output

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

MEASURES = ("total", "aleatoric", "epistemic")

#: How a Gaussian member's noise head encodes its noise: ``log sigma^2``, ``sigma^2`` (e.g. a
#: softplus head) or ``sigma``; ``None`` declares means-only members.
VARIANCE_HEADS = ("log_variance", "variance", "std")

#: Largest deviation of a probability vector's sum from 1 that is accepted.
PROBABILITY_SUM_TOLERANCE = 1e-3

#: What a refusal of an undeclared output says the two readings of a pair of numbers are.
_BOTH_READINGS = (
    "a 2-class classifier's logits (likelihood=Categorical(outputs='logits'), or outputs='probabilities') "
    "or a regressor's mean and noise head (likelihood=Gaussian(variance='log_variance' | 'variance' | 'std'))"
)


class Decomposition(NamedTuple):
    """Total, aleatoric and epistemic uncertainty (same shape each)."""

    total: Tensor
    aleatoric: Tensor
    epistemic: Tensor

    def select(self, measure: str) -> Tensor:
        """Return the tensor of one measure by name."""
        return getattr(self, check_choice(measure, "measure", MEASURES))


# ----------------------------------------------------------------------------- shared checks


def _check_stack(outputs: Any, shape: str) -> Tensor:
    """Sample outputs stacked as ``shape`` (``S`` samples, ``N`` inputs, then the columns): a finite
    floating tensor with at least one sample."""
    check_finite_tensor(outputs, "outputs", shape, dims=(3,))
    if outputs.shape[0] == 0:
        raise ValueError("outputs has no posterior samples (S = 0)")
    return outputs


def _refuse_structured(output: Any, declared: str) -> None:
    """A classifier's member returned a tuple, list or dict: say what each reading needs."""
    if isinstance(output, (tuple, list, dict)):
        raise TypeError(
            f"a posterior sample returned a {type(output).__name__}, but {declared} reads one tensor of scores per "
            "input. A regressor's (mean, variance) pair or {'loc', 'scale'} dict: pass likelihood=Gaussian("
            "variance='variance' | 'log_variance' | 'std'), which reads it. A Bayesian layer's (output, kl) pair: "
            "wrap the model with captum_uncertainty.integrations.from_bayesian_torch, or SampleCallable(model, "
            "layout='output_kl', num_samples=..., seed=0) (it keeps the output and drops kl)"
        )


def _outside_unit_interval(outputs: Tensor) -> bool:
    detached = outputs.detach()
    return bool((detached < 0).any()) or bool((detached > 1).any())


def _sums_to_one(outputs: Tensor) -> Tuple[bool, float]:
    deviation = float((outputs.detach().sum(-1) - 1).abs().max())
    return deviation <= PROBABILITY_SUM_TOLERANCE, deviation


# ----------------------------------------------------------------------------- entropy, in log space


def _log_of_probabilities(probabilities: Tensor) -> Tensor:
    """``log p`` with exact zeros mapped to ``log(tiny)``: finite, and only ever multiplied by 0."""
    return torch.log(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny))


def log_mean_probabilities(log_p: Tensor) -> Tensor:
    """``log mean_s p_s`` from per-sample log-probabilities ``(S, N, C)``, in log space."""
    return torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])


def _entropy_terms(log_p: Tensor, p: Optional[Tensor] = None) -> Decomposition:
    """Wang et al. Eq. 4 from per-sample log-probabilities ``(S, N, C)``; terms ``(N, C)``.

    ``p`` are the probabilities themselves when the caller has them (declared probabilities):
    then exact zeros stay exact zeros instead of ``exp(log(tiny))``.
    """
    if p is None:
        p = log_p.exp()
        log_mean = log_mean_probabilities(log_p)
        mean = log_mean.exp()
    else:
        mean = p.mean(0)
        log_mean = _log_of_probabilities(mean)
    aleatoric = -(p * log_p).mean(0)
    total = -(mean * log_mean)
    return Decomposition(total, aleatoric, total - aleatoric)


# ----------------------------------------------------------------------------- the protocol


class Likelihood:
    """What a posterior sample's raw output means; the base of :class:`Categorical`,
    :class:`Bernoulli` and :class:`Gaussian`.

    A likelihood reads one member's raw output into a tensor ``(N, K)`` (:meth:`read`, structure
    only, so it also runs under ``torch.func.vmap``), checks the stacked ``(S, N, K)`` outputs
    against the declaration (:meth:`check`), and owns their decomposition: the per-class or
    per-target terms (:meth:`terms`, ``(N, K')``), the three measures (:meth:`decompose`,
    ``(N,)``) and the per-input summary columns (:meth:`summary`).
    """

    #: The name recorded in manifests and reprs.
    name: str = ""

    #: Whether the samples are class distributions (the methods built on the softmax need them).
    is_classifier: bool = False

    def read(self, output: Any) -> Any:
        """One member's raw output as a tensor (structure only; values are checked by :meth:`check`)."""
        return tensor_output(output)

    def check(self, outputs: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Check stacked ``(S, N, K)`` outputs against the declaration; a mismatch raises ``ValueError``."""
        raise NotImplementedError

    def check_first(self, outputs: Tensor) -> None:
        """Checks made once, on a forward's first outputs, for declarations that only a pattern
        of values contradicts (a Bernoulli logit that is always in ``[0, 1]``): once, so that a
        path point or chunk whose genuine logits happen to fit the pattern is not refused."""

    def validate(self, outputs: Tensor) -> Tensor:
        """:meth:`check` and :meth:`check_first` together: what ``validate=True`` means for a
        call on one stack of outputs (a forward makes the first check only on its first call)."""
        self.check(outputs)
        self.check_first(outputs)
        return outputs

    def terms(self, outputs: Tensor, validate: bool = True) -> Decomposition:  # pragma: no cover - abstract
        """The per-class (classifiers) or per-target (regressors) terms, each ``(N, K')``."""
        raise NotImplementedError

    def reduce(self, terms: Decomposition) -> Decomposition:
        """The three measures ``(N,)`` from :meth:`terms`: their sum over the last dimension."""
        return Decomposition(*(term.sum(-1) for term in terms))

    def decompose(self, outputs: Tensor, validate: bool = True) -> Decomposition:
        """Total, aleatoric and epistemic uncertainty of each input, each ``(N,)``."""
        return self.reduce(self.terms(outputs, validate))

    @property
    def summary_columns(self) -> Tuple[str, ...]:  # pragma: no cover - abstract
        """The keys of :meth:`summary`, in order."""
        raise NotImplementedError

    def summary(self, outputs: Tensor, validate: bool = True) -> Dict[str, Tensor]:  # pragma: no cover - abstract
        """The per-input columns a data-set run stores beside each map, keyed as :attr:`summary_columns`."""
        raise NotImplementedError

    def check_measure(self, measure: str) -> str:
        """Refuse a measure these outputs cannot give (a means-only regressor's aleatoric part)."""
        return check_choice(measure, "measure", MEASURES)

    def settings(self) -> Dict[str, Any]:
        """What defines the reading, JSON-ready (recorded in data-set manifests)."""
        return {"likelihood": self.name}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, Likelihood) and other.settings() == self.settings()

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self.settings().items())))

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.settings().items() if key != "likelihood")
        return f"{type(self).__name__}({arguments})"


class _Classifier(Likelihood):
    """The entropy decomposition of class distributions, shared by :class:`Categorical` and
    :class:`Bernoulli`; subclasses say how raw outputs become log-probabilities."""

    is_classifier = True

    #: The two declarations of ``outputs``: logits first, then probabilities.
    OUTPUTS: Tuple[str, str] = ("logits", "probabilities")

    def __init__(self, outputs: str) -> None:
        self.outputs = check_choice(outputs, "outputs", self.OUTPUTS)

    @property
    def declares_logits(self) -> bool:
        """The declared outputs are logits (a real score per class, or a Bernoulli logit)."""
        return self.outputs == self.OUTPUTS[0]

    @property
    def outputs_are_logits(self) -> bool:
        """The raw outputs are the softmax logits themselves (no transform between them)."""
        return False

    def settings(self) -> Dict[str, Any]:
        return {"likelihood": self.name, "outputs": self.outputs}

    def read(self, output: Any) -> Any:
        output = tensor_output(output)
        _refuse_structured(output, repr(self))
        return output

    def class_scores(self, outputs: Tensor) -> Tensor:
        """``(S, N, C)`` class scores as the model gives them: logits, or probabilities if declared
        (a Bernoulli member's one column becomes two classes)."""
        return outputs

    def class_logits(self, outputs: Tensor, validate: bool = True) -> Tensor:
        """``(S, N, C)`` logits whose softmax is each sample's class distribution, as the model
        computes them (UA-Backprop and FullGrad differentiate each one): the class scores
        (:meth:`class_scores`; a Bernoulli logit ``z`` as ``[0, z]``) of a logit declaration,
        ``log p`` of a probability declaration."""
        if validate:
            self.validate(outputs)
        scores = self.class_scores(outputs)
        return scores if self.declares_logits else _log_of_probabilities(scores)

    def log_probabilities(self, outputs: Tensor, validate: bool = True) -> Tensor:  # pragma: no cover - abstract
        """Per-sample log-probabilities ``log p_s``, ``(S, N, C)``."""
        raise NotImplementedError

    def _probabilities(self, outputs: Tensor) -> Optional[Tensor]:
        """The ``(S, N, C)`` probabilities when they were declared (so exact zeros stay exact)."""
        return None

    def terms(self, outputs: Tensor, validate: bool = True) -> Decomposition:
        """Per-class terms ``U_{g_i}`` of Wang et al. (2023), Eq. 4, each ``(N, C)``."""
        log_p = self.log_probabilities(outputs, validate)
        return _entropy_terms(log_p, self._probabilities(outputs))

    @property
    def summary_columns(self) -> Tuple[str, ...]:
        return ("predicted",) + MEASURES

    def summary(self, outputs: Tensor, validate: bool = True) -> Dict[str, Tensor]:
        """``predicted`` (int64, the argmax of the posterior predictive), then the three measures."""
        log_p = self.log_probabilities(outputs, validate)
        terms = _entropy_terms(log_p, self._probabilities(outputs))
        columns = {"predicted": log_p.exp().mean(0).argmax(-1)}
        columns.update(zip(MEASURES, self.reduce(terms)))
        return columns


class Categorical(_Classifier):
    r"""Members return ``C >= 2`` class scores per input: logits or probabilities.

    Args:
        outputs (str): ``"logits"`` (any real scores; each sample's distribution is their softmax)
            or ``"probabilities"`` (each vector non-negative and summing to 1). Default:
            ``"logits"``.

    A member's ``(N, C)`` tensor, or a Hugging Face ``ModelOutput``'s ``.logits``, is read.
    Outputs that contradict the declaration are refused: logits that are all probability
    vectors, probabilities outside ``[0, 1]`` or not summing to 1 (within
    :data:`~captum_uncertainty.likelihoods.PROBABILITY_SUM_TOLERANCE`), a single column (use
    :class:`Bernoulli`), tuples.

    Examples::

        >>> uf = UncertaintyForward(members, "epistemic", likelihood=Categorical())
        >>> uf = UncertaintyForward(members, likelihood=Categorical(outputs="probabilities"))
    """

    name = "categorical"

    def __init__(self, outputs: str = "logits") -> None:
        super().__init__(outputs)

    @property
    def outputs_are_logits(self) -> bool:
        return self.declares_logits

    def check(self, outputs: Tensor) -> Tensor:
        _check_stack(outputs, "(S, N, C)")
        self._check_width(outputs.shape[2])
        if self.outputs == "probabilities":
            if _outside_unit_interval(outputs):
                raise ValueError(
                    "Categorical(outputs='probabilities') but the outputs have values outside [0, 1]; pass "
                    "Categorical(outputs='logits') if the members return logits"
                )
            summed, deviation = _sums_to_one(outputs)
            if not summed:
                raise ValueError(
                    f"Categorical(outputs='probabilities') but the output vectors do not sum to 1 (largest deviation "
                    f"{deviation:.3g}); pass Categorical(outputs='logits') if the members return logits"
                )
        elif not _outside_unit_interval(outputs) and _sums_to_one(outputs)[0]:
            raise ValueError(
                "the outputs look like probabilities (non-negative, summing to 1) but logits were declared; pass "
                "likelihood=Categorical(outputs='probabilities') if the members return probabilities"
            )
        return outputs

    def _check_width(self, width: int) -> None:
        if width < 2:
            raise ValueError(
                f"{self!r} needs at least 2 classes, got C = {width}: one output per input is either a binary "
                "classifier's logit or probability (likelihood=Bernoulli(outputs='logit' | 'probability')) or a "
                "regressor's prediction (likelihood=Gaussian(variance=None) for means only)"
            )

    def log_probabilities(self, outputs: Tensor, validate: bool = True) -> Tensor:
        if validate:
            self.validate(outputs)
        if self.outputs == "probabilities":
            return _log_of_probabilities(outputs)
        return torch.log_softmax(outputs, dim=-1)

    def _probabilities(self, outputs: Tensor) -> Optional[Tensor]:
        return outputs if self.outputs == "probabilities" else None


class _UndeclaredCategorical(Categorical):
    """What :class:`~captum_uncertainty.UncertaintyForward` reads when no likelihood is given:
    class logits of ``C >= 3`` classes. A pair of numbers per input (a 2-class classifier or a
    Gaussian mean and noise head), one number, or a tuple cannot be read without a declaration
    and is refused, naming the readings."""

    def check(self, outputs: Tensor) -> Tensor:
        if isinstance(outputs, Tensor) and outputs.dim() == 3 and outputs.shape[2] == 2:
            raise ValueError(
                "the members return 2 numbers per input and no likelihood was declared: they are either "
                f"{_BOTH_READINGS}; pass the one that is meant"
            )
        return super().check(outputs)

    def __repr__(self) -> str:
        return "Categorical(outputs='logits') (the default, no likelihood declared)"


class Bernoulli(_Classifier):
    r"""Binary classifiers: one logit (or probability) of the positive class per input.

    Each sample's distribution is the two classes ``[1 - sigmoid(z), sigmoid(z)]`` (or
    ``[1 - p, p]``), so every measure and per-class term is the two-class one, class 1 the
    positive class.

    Args:
        outputs (str): ``"logit"`` (a real score, ``p = sigmoid(z)``) or ``"probability"``
            (``p`` in ``[0, 1]``). Default: ``"logit"``.

    Members return ``(N,)`` or ``(N, 1)``. Refused: another width (use :class:`Categorical`),
    probabilities outside ``[0, 1]`` (on every call), and logits that are all in ``[0, 1]`` on a
    forward's first call, which is what sigmoid outputs look like (pass
    ``outputs="probability"``). That last check is made once, on the first outputs a forward
    sees, so that path points whose genuine logits happen to lie in ``[0, 1]`` are never refused;
    a first batch of such logits can be passed with ``UncertaintyForward(..., validate=False)``.

    Examples::

        >>> uf = UncertaintyForward(members, "epistemic", likelihood=Bernoulli())
        >>> uf = UncertaintyForward(members, likelihood=Bernoulli(outputs="probability"))
    """

    name = "bernoulli"
    OUTPUTS = ("logit", "probability")

    def __init__(self, outputs: str = "logit") -> None:
        super().__init__(outputs)

    def check(self, outputs: Tensor) -> Tensor:
        _check_stack(outputs, "(S, N, 1)")
        if outputs.shape[2] != 1:
            raise ValueError(
                f"{self!r} reads one score per input ((N,) or (N, 1) per sample), got {outputs.shape[2]} columns; "
                "for class scores per input pass likelihood=Categorical(outputs='logits' | 'probabilities')"
            )
        if self.outputs == "probability" and _outside_unit_interval(outputs):
            raise ValueError(
                "Bernoulli(outputs='probability') but the outputs have values outside [0, 1]: they are logits; "
                "pass likelihood=Bernoulli(outputs='logit')"
            )
        return outputs

    def check_first(self, outputs: Tensor) -> None:
        if self.outputs == "logit" and not _outside_unit_interval(outputs):
            raise ValueError(
                "Bernoulli(outputs='logit') but every output is in [0, 1], as sigmoid probabilities are: pass "
                "likelihood=Bernoulli(outputs='probability') if the members end in a sigmoid (genuine logits that "
                "all lie in [0, 1] on this first batch: UncertaintyForward(..., validate=False))"
            )

    def class_scores(self, outputs: Tensor) -> Tensor:
        """Logits ``[0, z]`` or probabilities ``[1 - p, p]``, ``(S, N, 2)``."""
        if self.outputs == "probability":
            return torch.cat([1 - outputs, outputs], dim=-1)
        return torch.cat([torch.zeros_like(outputs), outputs], dim=-1)

    def log_probabilities(self, outputs: Tensor, validate: bool = True) -> Tensor:
        if validate:
            self.validate(outputs)
        if self.outputs == "probability":
            return _log_of_probabilities(self.class_scores(outputs))
        return torch.cat([torch.nn.functional.logsigmoid(-outputs), torch.nn.functional.logsigmoid(outputs)], dim=-1)

    def _probabilities(self, outputs: Tensor) -> Optional[Tensor]:
        return self.class_scores(outputs) if self.outputs == "probability" else None


class UndeclaredOutputError(TypeError, ValueError):
    """A declaration that a tensor cannot replace was left out (a Gaussian's noise head). Both a
    missing argument (``TypeError``) and an invalid configuration (``ValueError``), so either
    ``except`` catches it, as numpy's ``AxisError`` is both a ``ValueError`` and an ``IndexError``."""


class _Undeclared:
    """The value of an argument that was not given (``None`` is a declaration: means only)."""

    def __repr__(self) -> str:
        return "<undeclared>"


#: Marks ``Gaussian(variance=...)`` and the forward's ``variance=`` as not given.
UNDECLARED: Any = _Undeclared()

#: The keys of a ``dict`` output that hold a Gaussian member's mean, and its noise head by kind.
_MEAN_KEYS = ("loc", "mean", "mu")
_HEAD_KEYS = {
    "std": ("scale", "std", "sigma", "stddev"),
    "variance": ("variance", "var"),
    "log_variance": ("log_variance", "log_var", "logvar"),
}


class Gaussian(Likelihood):
    r"""Regressors: each sample a Gaussian ``N(mu_s, sigma_s^2)`` per target, or its means only.

    Decomposed by the law of total variance, per target ``k``: aleatoric ``mean_s sigma_{s,k}^2``,
    epistemic ``mean_s (mu_{s,k} - mean_t mu_{t,k})^2`` (population form), total their sum, in
    squared output units.

    Args:
        variance (str or None): what the noise head holds, which a tensor cannot tell:
            ``"log_variance"`` (``log sigma^2``, the head a Gaussian NLL is usually trained on),
            ``"variance"`` (``sigma^2``, e.g. a softplus head), ``"std"`` (``sigma``), or ``None``
            for means-only members. Required: there is no default, and leaving it out raises
            :class:`~captum_uncertainty.likelihoods.UndeclaredOutputError` (a ``TypeError`` and a
            ``ValueError``).
        noise_variance (float, optional): a constant noise variance of means-only members (e.g. a
            fitted observation noise), the aleatoric part of every input; refused next to a noise
            head. Default: ``None`` (0).
        targets (int): ``K``, the number of regression targets per input. Default: 1.
        explain (str or int): with ``K > 1``, what the forward returns: ``"sum"`` (the sum of the
            targets' measures; for the total, the trace of the predictive covariance) or one
            target's index. Default: ``"sum"``.

    Layout of a member's output per input: a tensor ``(N, K)`` of means (``(N,)`` when ``K = 1``),
    or ``(N, 2K)`` = the ``K`` means then the ``K`` noise heads (``torch.cat([mean, head], -1)``);
    a ``(mean, head)`` tuple or list of two ``(N,)`` / ``(N, K)`` tensors; or a dict with the mean
    under ``"loc"`` / ``"mean"`` / ``"mu"`` and the head under a key naming the declared kind
    (``"scale"`` / ``"std"`` / ``"sigma"`` for ``"std"``, ``"variance"`` / ``"var"``,
    ``"log_variance"`` / ``"log_var"`` / ``"logvar"``). Refused: a width that is not ``K`` (means
    only) or ``2K`` (with a head) as declared, a dict whose head key names another kind than the
    declared one, and negative values of a ``"variance"`` or ``"std"`` head.

    Examples::

        >>> uf = UncertaintyForward(members, "aleatoric", likelihood=Gaussian(variance="log_variance"))
        >>> uf = UncertaintyForward(members, "epistemic", likelihood=Gaussian(variance=None))
        >>> uf = UncertaintyForward(members, likelihood=Gaussian(variance="std", targets=3, explain=0))
    """

    name = "gaussian"

    def __init__(
        self,
        variance: Optional[str] = UNDECLARED,
        noise_variance: Optional[float] = None,
        targets: int = 1,
        explain: Union[str, int] = "sum",
    ) -> None:
        if variance is UNDECLARED:
            raise UndeclaredOutputError(
                "Gaussian needs variance= declared, as a tensor cannot tell: 'log_variance' (log sigma^2), "
                "'variance' (sigma^2), 'std' (sigma), or None for members that return means only"
            )
        if variance is not None:
            check_choice(variance, "variance", VARIANCE_HEADS)
        self.variance = variance
        if noise_variance is not None:
            check_non_negative_number(noise_variance, "noise_variance")
            if variance is not None:
                raise ValueError(
                    f"noise_variance is the constant noise of means-only members, but variance={variance!r} declares "
                    "a noise head that gives each input its own noise: drop noise_variance, or declare "
                    "variance=None if the members return means only"
                )
            noise_variance = float(noise_variance)
        self.noise_variance = noise_variance
        self.targets = check_positive_int(targets, "targets")
        if not (isinstance(explain, str) and explain == "sum"):
            if not isinstance(explain, int) or isinstance(explain, bool):
                raise ValueError(f"explain must be 'sum' or a target index, got {explain!r}")
            check_int(explain, "explain", minimum=0, maximum=self.targets - 1)
        self.explain = explain

    @property
    def has_head(self) -> bool:
        """Whether the members return a noise head beside their means."""
        return self.variance is not None

    @property
    def width(self) -> int:
        """The number of columns per input, ``K`` means and then ``K`` heads if declared."""
        return self.targets * (2 if self.has_head else 1)

    def settings(self) -> Dict[str, Any]:
        settings: Dict[str, Any] = {"likelihood": self.name, "variance": self.variance}
        if self.noise_variance is not None:
            settings["noise_variance"] = self.noise_variance
        if self.targets != 1:
            settings.update(targets=self.targets, explain=self.explain)
        return settings

    def check_measure(self, measure: str) -> str:
        measure = super().check_measure(measure)
        if measure == "aleatoric" and not self.has_head:
            raise ValueError(
                "measure='aleatoric' needs a noise head: Gaussian(variance=None) declares members that return means "
                "only, so their noise is unknown (a constant noise_variance does not depend on the input); return a "
                "mean and a noise head per input and declare it (variance='log_variance' | 'variance' | 'std'), or "
                "explain measure='epistemic'"
            )
        return measure

    # ------------------------------------------------------------------------- reading

    def read(self, output: Any) -> Any:
        output = tensor_output(output)
        if isinstance(output, dict):
            return self._read_dict(output)
        if isinstance(output, (tuple, list)):
            return self._read_pair(output)
        return output

    def _columns(self, value: Any, what: str) -> Tensor:
        if not isinstance(value, Tensor):
            raise TypeError(f"a Gaussian member's {what} must be a tensor, got {type(value).__name__}")
        return value.unsqueeze(-1) if value.dim() == 1 else value

    def _read_pair(self, output: Sequence[Any]) -> Tensor:
        if not self.has_head:
            raise TypeError(
                f"a posterior sample returned a {type(output).__name__} of {len(output)}, but Gaussian(variance=None) "
                "declares means only; for a (mean, noise head) pair declare the head: Gaussian(variance="
                "'variance' | 'log_variance' | 'std')"
            )
        if len(output) != 2:
            raise TypeError(
                f"a Gaussian member's {type(output).__name__} must be a (mean, {self.variance}) pair, got "
                f"{len(output)} items"
            )
        return torch.cat([self._columns(output[0], "mean"), self._columns(output[1], self.variance or "")], dim=-1)

    def _read_dict(self, output: Dict[str, Any]) -> Tensor:
        means = [key for key in _MEAN_KEYS if key in output]
        if not means:
            raise TypeError(
                f"a Gaussian member's dict output needs its mean under one of {list(_MEAN_KEYS)}, got keys "
                f"{sorted(map(str, output))}"
            )
        mean = self._columns(output[means[0]], "mean")
        found = {kind: key for kind, keys in _HEAD_KEYS.items() for key in keys if key in output}
        if not self.has_head:
            if found:
                kind, key = next(iter(found.items()))
                raise ValueError(
                    f"a Gaussian member's dict output has a noise head {key!r} but Gaussian(variance=None) declares "
                    f"means only: declare Gaussian(variance={kind!r})"
                )
            return mean
        if self.variance not in found:
            named = ", ".join(f"{key!r} ({kind})" for kind, key in found.items()) or "none"
            raise ValueError(
                f"Gaussian(variance={self.variance!r}) but the member's dict output has no "
                f"{' / '.join(map(repr, _HEAD_KEYS[self.variance or '']))} key; its noise heads: {named}. Declare the "
                "kind its key names" + (f", e.g. Gaussian(variance={next(iter(found))!r})" if found else "")
            )
        return torch.cat([mean, self._columns(output[found[self.variance]], self.variance or "")], dim=-1)

    # ------------------------------------------------------------------------- checks

    def check(self, outputs: Tensor) -> Tensor:
        _check_stack(outputs, "(S, N, W)")
        width = outputs.shape[2]
        if width != self.width:
            raise ValueError(self._width_message(width))
        if self.variance in ("variance", "std"):
            smallest = float(outputs[..., self.targets :].detach().min())
            if smallest < 0:
                raise ValueError(
                    f"Gaussian(variance={self.variance!r}) but the noise head has a negative value ({smallest:.3g}): "
                    "declare the kind the head holds, e.g. Gaussian(variance='log_variance') for log sigma^2"
                )
        return outputs

    def _width_message(self, width: int) -> str:
        declared = (
            f"Gaussian(variance={self.variance!r}, targets={self.targets}) reads {self.width} columns per input ("
            + (
                f"{self.targets} mean(s), then {self.targets} noise head(s)"
                if self.has_head
                else f"{self.targets} mean(s)"
            )
            + f"), got {width}"
        )
        if not self.has_head and width == 2 * self.targets:
            hint = (
                f"{width} means of {width} targets: pass targets={width}; a mean and a noise head per target: "
                "declare the head, variance='log_variance' | 'variance' | 'std'"
            )
        elif self.has_head and width == self.targets:
            hint = "means only (no noise head): declare variance=None"
        elif self.has_head and width % 2 == 0:
            hint = f"{width // 2} targets with a noise head each: pass targets={width // 2}"
        else:
            hint = f"{width} means only: Gaussian(variance=None, targets={width})"
        return f"{declared}; if they are {hint}"

    # ------------------------------------------------------------------------- the decomposition

    def means(self, outputs: Tensor) -> Tensor:
        """Each sample's means ``mu_s``, ``(S, N, K)``."""
        return outputs[..., : self.targets]

    def noise_variances(self, outputs: Tensor) -> Optional[Tensor]:
        """Each sample's ``sigma_s^2``, ``(S, N, K)``, from the declared head; ``None`` for means only."""
        if not self.has_head:
            return None
        head = outputs[..., self.targets :]
        if self.variance == "log_variance":
            return head.exp()
        if self.variance == "std":
            return head.square()
        return head

    def explained_means(self, outputs: Tensor) -> Tensor:
        """What each sample predicts for the explained quantity, ``(S, N)``: the mean of the target
        ``explain`` selects, or the sum of the targets' means for ``"sum"``."""
        means = self.means(outputs)
        return means.sum(-1) if self.explain == "sum" else means[..., int(self.explain)]

    def terms(self, outputs: Tensor, validate: bool = True) -> Decomposition:
        """Per-target terms, each ``(N, K)``. Means-only members' aleatoric part is the constant
        ``noise_variance`` (0 if not given), with a zero gradient."""
        if validate:
            self.validate(outputs)
        means = self.means(outputs)
        epistemic = (means - means.mean(0)).square().mean(0)
        variances = self.noise_variances(outputs)
        if variances is None:
            # a constant that is still part of the graph: its gradient is an exact zero, not an error
            aleatoric = epistemic.mul(0).add(self.noise_variance or 0.0)
        else:
            aleatoric = variances.mean(0)
        return Decomposition(aleatoric + epistemic, aleatoric, epistemic)

    def reduce(self, terms: Decomposition) -> Decomposition:
        if self.explain == "sum":
            return super().reduce(terms)
        return Decomposition(*(term[..., int(self.explain)] for term in terms))

    @property
    def summary_columns(self) -> Tuple[str, ...]:
        if self.targets == 1:
            return ("predicted_mean",) + MEASURES
        return tuple(f"predicted_mean_{k}" for k in range(self.targets)) + MEASURES

    def summary(self, outputs: Tensor, validate: bool = True) -> Dict[str, Tensor]:
        """The posterior predictive mean of each target (``predicted_mean``, or ``predicted_mean_k``
        for ``K > 1``), then the three measures."""
        decomposition = self.decompose(outputs, validate)
        predicted = self.means(outputs).mean(0)
        names = self.summary_columns[: self.targets]
        columns = {name: predicted[:, k] for k, name in enumerate(names)}
        columns.update(zip(MEASURES, decomposition))
        return columns


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
