"""The classifiers' likelihoods: :class:`Categorical` and :class:`Bernoulli`, decomposed by
entropy in log space (the formulas are in :mod:`captum_uncertainty.likelihoods`), and the
checks of probability outputs. Part of :mod:`captum_uncertainty.likelihoods`, which re-exports
the public names.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from captum_uncertainty._validation import check_choice
from captum_uncertainty.likelihoods._base import MEASURES, Decomposition, Likelihood, _check_stack
from captum_uncertainty.posterior import tensor_output

# _UndeclaredCategorical is shared with the resolver, not re-exported by the package
__all__ = ["Bernoulli", "Categorical", "PROBABILITY_SUM_TOLERANCE", "log_mean_probabilities", "_UndeclaredCategorical"]

#: Largest deviation of a probability vector's sum from 1 that is accepted.
PROBABILITY_SUM_TOLERANCE = 1e-3

#: What a refusal of an undeclared output says the two readings of a pair of numbers are.
_BOTH_READINGS = (
    "a 2-class classifier's logits (likelihood=Categorical(outputs='logits'), or outputs='probabilities') "
    "or a regressor's mean and noise head (likelihood=Gaussian(variance='log_variance' | 'variance' | 'std'))"
)


# ----------------------------------------------------------------------------- checks of class scores


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


# ----------------------------------------------------------------------------- the classifiers


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
