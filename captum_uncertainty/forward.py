"""The uncertainty decompositions and :class:`UncertaintyForward`.

Everything else in the package either computes these scalars, attributes them to input
features, or judges an attribution. Both decompositions live here, side by side, and nowhere
else: the entropy one for classifiers (``likelihood="categorical"``) and the variance one for
regressors (``likelihood="gaussian"``).

For ``S`` posterior samples with class probabilities ``p_s = softmax(z_s)`` of one input:

* total uncertainty     ``U_t = H[mean_s p_s]``            (predictive entropy)
* aleatoric uncertainty ``U_a = mean_s H[p_s]``            (expected entropy)
* epistemic uncertainty ``U_e = U_t - U_a``                (mutual information)

and the per-class terms of Wang et al. (2023), Eq. 4:
``U_{t,g_i} = -pbar_i log pbar_i``, ``U_{a,g_i} = mean_s -p_{s,i} log p_{s,i}``,
``U_{e,g_i} = U_{t,g_i} - U_{a,g_i}``, each summing over ``i`` to its scalar.

Numerics: from logits everything is computed in log space (``log_softmax`` per sample,
``logsumexp - log S`` for the mean), so a saturated (one-hot) prediction gives exactly 0 and a
finite gradient. Probabilities declared by the caller are converted with ``log(clamp_min(p,
tiny))``; the clamp only ever multiplies an exact zero, so values are exact and gradients finite.

For ``S`` Gaussian samples ``N(mu_s, sigma_s^2)`` of one input, the law of total variance:

* aleatoric uncertainty ``mean_s sigma_s^2``                       (expected noise variance)
* epistemic uncertainty ``mean_s (mu_s - mean_t mu_t)^2``          (variance of the means,
  population form: divided by ``S``, as the entropy decomposition averages over samples)
* total uncertainty     ``aleatoric + epistemic``                  (predictive variance)
"""

from __future__ import annotations

import math
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_bool, check_choice, check_non_negative_number
from captum_uncertainty.posterior import Posterior, as_posterior, expand_to_samples

__all__ = [
    "LIKELIHOODS",
    "MEASURES",
    "VARIANCE_HEADS",
    "PROBABILITY_SUM_TOLERANCE",
    "SUMMARY_COLUMNS",
    "Decomposition",
    "UncertaintyForward",
    "entropy_decomposition",
    "per_class_uncertainty",
    "sample_log_probabilities",
    "variance_decomposition",
]

MEASURES = ("total", "aleatoric", "epistemic")

#: The members' output distributions :class:`UncertaintyForward` decomposes.
LIKELIHOODS = ("categorical", "gaussian")

#: How a Gaussian member's second output column encodes its noise: ``log sigma^2``,
#: ``sigma^2`` (e.g. a softplus head) or ``sigma``.
VARIANCE_HEADS = ("log_variance", "variance", "std")

#: Largest deviation of a probability vector's sum from 1 that is accepted.
PROBABILITY_SUM_TOLERANCE = 1e-3

#: The per-input columns of :meth:`UncertaintyForward.summary` of a classifier, in order.
SUMMARY_COLUMNS = ("predicted",) + MEASURES

#: The per-input columns of :meth:`UncertaintyForward.summary` of a regressor, in order.
_GAUSSIAN_SUMMARY_COLUMNS = ("predicted_mean",) + MEASURES


class Decomposition(NamedTuple):
    """Total, aleatoric and epistemic uncertainty (same shape each)."""

    total: Tensor
    aleatoric: Tensor
    epistemic: Tensor

    def select(self, measure: str) -> Tensor:
        """Return the tensor of one measure by name."""
        return getattr(self, check_choice(measure, "measure", MEASURES))


def _check_outputs(outputs: Any, name: str = "outputs") -> Tensor:
    """Check a stack of sample outputs of shape ``(S, N, C)``."""
    if not isinstance(outputs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (S, N, C), got {type(outputs).__name__}")
    if outputs.dim() != 3:
        raise ValueError(f"{name} must have shape (S, N, C), got shape {tuple(outputs.shape)}")
    if outputs.shape[0] == 0:
        raise ValueError(f"{name} has no posterior samples (S = 0)")
    if outputs.shape[2] < 2:
        raise ValueError(
            f"{name} must have at least 2 classes, got C = {outputs.shape[2]}: one output per input is either a "
            "binary classifier's logit (or probability), then pass UncertaintyForward(..., binary=True), or a "
            "regressor's real-valued prediction, then pass UncertaintyForward(..., likelihood='gaussian')"
        )
    if not outputs.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {outputs.dtype}")
    if not bool(torch.isfinite(outputs).all()):
        raise ValueError(f"{name} contain NaN or inf values")
    return outputs


def _looks_like_probabilities(outputs: Tensor) -> bool:
    """True when every vector is non-negative and sums to 1 (within tolerance)."""
    detached = outputs.detach()
    if bool((detached < 0).any()) or bool((detached > 1).any()):
        return False
    return bool(((detached.sum(-1) - 1).abs() <= PROBABILITY_SUM_TOLERANCE).all())


def sample_log_probabilities(outputs: Tensor, probabilities: bool = False, validate: bool = True) -> Tensor:
    """Per-sample log-probabilities ``log p_s`` of shape ``(S, N, C)``.

    Args:
        outputs (Tensor): sample outputs of shape ``(S, N, C)``: logits, or probabilities when
            ``probabilities=True``.
        probabilities (bool): declares that ``outputs`` are probabilities (each ``(S, N)``
            vector non-negative and summing to 1) rather than logits.
        validate (bool): check shapes, finiteness and that the declaration matches the values:
            logits that look exactly like probability vectors, or "probabilities" that do not
            sum to 1, raise ``ValueError``.

    Returns:
        Tensor: ``log p_s`` with ``-inf`` replaced by ``log(tiny)`` for exact zeros.
    """
    if validate:
        _validate_outputs(outputs, probabilities)
    if probabilities:
        return _log_of_probabilities(outputs)
    return torch.log_softmax(outputs, dim=-1)


def _validate_outputs(outputs: Tensor, probabilities: bool) -> None:
    """The one check of sample outputs against their declaration (shape, finiteness, logits or
    probabilities), made by every reader of sample outputs."""
    _check_outputs(outputs)
    if probabilities:
        _check_probabilities(outputs)
    elif _looks_like_probabilities(outputs):
        raise ValueError(
            "outputs look like probabilities (non-negative, summing to 1) but logits were "
            "expected; pass probabilities=True if the members return probabilities"
        )


def _log_of_probabilities(probabilities: Tensor) -> Tensor:
    """``log p`` with exact zeros mapped to ``log(tiny)``: finite, and only ever multiplied by 0."""
    return torch.log(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny))


def _log_mean_probabilities(log_p: Tensor) -> Tensor:
    """``log mean_s p_s`` from per-sample log-probabilities ``(S, N, C)``, in log space."""
    return torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])


def _check_probabilities(outputs: Tensor) -> None:
    detached = outputs.detach()
    if bool((detached < 0).any()) or bool((detached > 1).any()):
        raise ValueError(
            "probabilities=True but outputs have values outside [0, 1]; "
            "pass probabilities=False if the members return logits"
        )
    deviation = float((detached.sum(-1) - 1).abs().max())
    if deviation > PROBABILITY_SUM_TOLERANCE:
        raise ValueError(
            f"probabilities=True but output vectors do not sum to 1 (largest deviation {deviation:.3g}); "
            "pass probabilities=False if the members return logits"
        )


def _per_class_from_log_probabilities(log_p: Tensor, p: Optional[Tensor] = None) -> Decomposition:
    """Wang et al. Eq. 4 from per-sample log-probabilities ``(S, N, C)``; terms ``(N, C)``.

    ``p`` are the probabilities themselves when the caller has them (declared probabilities):
    then exact zeros stay exact zeros instead of ``exp(log(tiny))``.
    """
    if p is None:
        p = log_p.exp()
        log_mean = _log_mean_probabilities(log_p)
        mean = log_mean.exp()
    else:
        mean = p.mean(0)
        log_mean = _log_of_probabilities(mean)
    aleatoric = -(p * log_p).mean(0)
    total = -(mean * log_mean)
    return Decomposition(total, aleatoric, total - aleatoric)


def per_class_uncertainty(outputs: Tensor, probabilities: bool = False, validate: bool = True) -> Decomposition:
    """Per-class uncertainty terms ``U_{g_i}`` of Wang et al. (2023), Eq. 4.

    Args:
        outputs (Tensor): sample outputs ``(S, N, C)``, logits unless ``probabilities=True``.
        probabilities (bool): the outputs are probabilities, not logits.
        validate (bool): check the outputs' shape and finiteness, and that they match
            ``probabilities`` (a mismatch raises ``ValueError``).

    Returns:
        Decomposition: ``total``, ``aleatoric`` and ``epistemic`` terms, each ``(N, C)``;
        summed over the class dimension they give :func:`entropy_decomposition`.

    Examples::

        >>> logits = torch.randn(5, 3, 10)          # 5 members, 3 inputs, 10 classes
        >>> terms = per_class_uncertainty(logits)
        >>> torch.allclose(terms.total.sum(-1), entropy_decomposition(logits).total)
        True
    """
    log_p = sample_log_probabilities(outputs, probabilities, validate)
    return _per_class_from_log_probabilities(log_p, outputs if probabilities else None)


def entropy_decomposition(outputs: Tensor, probabilities: bool = False, validate: bool = True) -> Decomposition:
    """Total, aleatoric and epistemic uncertainty of each input, in nats.

    Args:
        outputs (Tensor): sample outputs ``(S, N, C)`` for ``S`` posterior samples, ``N``
            inputs and ``C`` classes; logits unless ``probabilities=True``.
        probabilities (bool): the outputs are probabilities, not logits.
        validate (bool): check the outputs' shape and finiteness, and that they match
            ``probabilities`` (a mismatch raises ``ValueError``).

    Returns:
        Decomposition: ``total = H[mean_s p_s]``, ``aleatoric = mean_s H[p_s]`` and
        ``epistemic = total - aleatoric``, each of shape ``(N,)``. Epistemic is
        non-negative up to rounding (Jensen's inequality).

    Examples::

        >>> logits = torch.tensor([[[2.0, 0.0]], [[0.0, 2.0]]])   # two members disagree
        >>> d = entropy_decomposition(logits)
        >>> d.total, d.aleatoric, d.epistemic                     # doctest: +SKIP
    """
    terms = per_class_uncertainty(outputs, probabilities, validate)
    return Decomposition(*(term.sum(-1) for term in terms))


def _check_gaussian_outputs(outputs: Any, variance: str, name: str = "outputs") -> Tensor:
    """Check Gaussian sample outputs ``(S, N, 1)`` (means) or ``(S, N, 2)`` (mean and variance head)."""
    if not isinstance(outputs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (S, N, 1) or (S, N, 2), got {type(outputs).__name__}")
    if outputs.dim() != 3 or outputs.shape[2] not in (1, 2):
        raise ValueError(
            f"{name} of a Gaussian likelihood must be, per sample, (N, 2) = the mean and the {variance} of each "
            f"input, or (N,) / (N, 1) = the means only; got sample outputs of shape {tuple(outputs.shape)}"
        )
    if outputs.shape[0] == 0:
        raise ValueError(f"{name} has no posterior samples (S = 0)")
    if not outputs.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {outputs.dtype}")
    if not bool(torch.isfinite(outputs).all()):
        raise ValueError(f"{name} contain NaN or inf values")
    if outputs.shape[2] == 2 and variance != "log_variance" and bool((outputs[..., 1].detach() <= 0).any()):
        smallest = float(outputs[..., 1].detach().min())
        raise ValueError(
            f"variance={variance!r} needs a positive second column, got a value of {smallest:.3g}; pass "
            "variance='log_variance' if the members return log sigma^2"
        )
    return outputs


def _noise_variances(head: Tensor, variance: str) -> Tensor:
    """``sigma_s^2`` from a Gaussian member's second output column."""
    if variance == "log_variance":
        return head.exp()
    if variance == "std":
        return head.square()
    return head


def variance_decomposition(
    outputs: Tensor, variance: str = "log_variance", noise_variance: Optional[float] = None, validate: bool = True
) -> Decomposition:
    """Total, aleatoric and epistemic variance of each input by the law of total variance.

    Args:
        outputs (Tensor): Gaussian sample outputs ``(S, N, 2)``, the mean ``mu_s`` and the
            ``variance`` head of each input, or ``(S, N, 1)``, the means only.
        variance (str): the second column is ``"log_variance"`` (``log sigma^2``), ``"variance"``
            (``sigma^2``) or ``"std"`` (``sigma``). Default: ``"log_variance"``.
        noise_variance (float, optional): a constant noise variance of means-only members (e.g.
            a fitted observation noise); ``None`` counts it as 0. Only for means-only outputs.
        validate (bool): check the outputs' shape, finiteness and the variance head's sign.

    Returns:
        Decomposition: ``aleatoric = mean_s sigma_s^2``, ``epistemic = mean_s (mu_s - mean_t
        mu_t)^2`` (the population variance, divided by ``S``) and ``total = aleatoric +
        epistemic``, each ``(N,)``. Means-only outputs have ``aleatoric = noise_variance``.

    Examples::

        >>> outputs = torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]]])   # two members: means 1, 3, log-variance 0
        >>> variance_decomposition(outputs)                         # doctest: +SKIP
        Decomposition(total=tensor([2.]), aleatoric=tensor([1.]), epistemic=tensor([1.]))
    """
    if validate:
        _check_gaussian_outputs(outputs, variance)
    means = outputs[..., 0]
    epistemic = (means - means.mean(0)).square().mean(0)
    if outputs.shape[-1] == 2:
        aleatoric = _noise_variances(outputs[..., 1], variance).mean(0)
    else:
        aleatoric = torch.full_like(epistemic, 0.0 if noise_variance is None else float(noise_variance))
    return Decomposition(aleatoric + epistemic, aleatoric, epistemic)


PosteriorLike = Union[Posterior, Sequence[nn.Module], nn.ModuleList]


class UncertaintyForward(nn.Module):
    r"""A Bayesian model's uncertainty as a Captum forward function.

    Wraps posterior samples (a deep ensemble, MC-dropout masks, weight samples or any
    callable returning samples) and returns one scalar per input: the total, aleatoric or
    epistemic uncertainty of its posterior predictive distribution. Because the output has
    shape ``(N,)``, Captum's own attribution methods (:class:`~captum.attr.IntegratedGradients`,
    :class:`~captum.attr.Saliency`, :class:`~captum.attr.NoiseTunnel`, :class:`~captum.attr.Lime`,
    :class:`~captum.attr.KernelShap`, ...) attribute *uncertainty* with
    ``target=None`` and no change to Captum.

    Classifiers (``likelihood="categorical"``, the default) are decomposed by entropy, in nats:
    total = predictive entropy, aleatoric = expected entropy, epistemic = mutual information.
    Regressors (``likelihood="gaussian"``) by the law of total variance, in squared output units
    (:func:`~captum_uncertainty.variance_decomposition`): aleatoric = mean noise variance
    ``mean_s sigma_s^2``, epistemic = variance of the means ``mean_s (mu_s - mean mu)^2``, total =
    their sum.

    Args:
        posterior (Posterior or sequence of nn.Module): where the samples come from. A plain
            list (or ``nn.ModuleList``) of modules is a deep ensemble
            (:class:`~captum_uncertainty.posterior.DeepEnsemble`); for MC dropout, weight samples
            or sample-returning callables pass a
            :class:`~captum_uncertainty.posterior.Posterior`.
        measure (str): ``"total"``, ``"aleatoric"`` or ``"epistemic"``. Default: ``"total"``.
        probabilities (bool): the samples are probability vectors rather than logits
            (categorical only). Default: ``False`` (logits).
        binary (bool): the members are binary classifiers returning one logit (or, with
            ``probabilities=True``, the probability of the positive class) per input, as ``(N,)``
            or ``(N, 1)``; it becomes the two classes ``softmax([0, z]) = [1 - sigmoid(z),
            sigmoid(z)]`` (or ``[1 - p, p]``), so every measure is the two-class one
            (categorical only). Default: ``False``.
        likelihood (str, keyword only): ``"categorical"`` (members return class logits or
            probabilities ``(N, C)``) or ``"gaussian"`` (members return ``(N, 2)``: the mean and
            the ``variance`` head of each input, or the means only, ``(N,)`` / ``(N, 1)``).
            Default: ``"categorical"``.
        variance (str, keyword only): a Gaussian member's second column: ``"log_variance"``
            (``log sigma^2``), ``"variance"`` (``sigma^2``, e.g. a softplus head) or ``"std"``
            (``sigma``). Default: ``"log_variance"``, the head a Gaussian NLL is usually trained on.
        noise_variance (float, keyword only, optional): a constant noise variance of means-only
            Gaussian members (e.g. a fitted observation noise), added as the aleatoric part; it
            does not depend on the input, so ``measure="aleatoric"`` of means-only members is
            refused. Default: ``None`` (0).
        validate (bool): check inputs (finite values, device and dtype) and sample outputs
            (shape, class count, finiteness, logits vs probabilities, the variance head's sign)
            on every call, and once, on the first call, that the posterior is deterministic (the
            same samples on two calls, an input's value independent of its batch; see
            :meth:`Posterior.check_deterministic <captum_uncertainty.Posterior.check_deterministic>`).
            Default: ``True``.

    Examples::

        >>> uf = UncertaintyForward([m1, m2, m3], measure="epistemic")
        >>> u = uf(x)                    # (N,) mutual information
        >>> p = uf.predictive(x)         # (S, N, C) member probabilities
        >>> total, aleatoric, epistemic = uf.decompose(x)
        >>> from captum.attr import IntegratedGradients
        >>> attributions = IntegratedGradients(uf).attribute(x, baselines=x * 0)
        >>> regression = UncertaintyForward(regressors, "aleatoric", likelihood="gaussian")
    """

    def __init__(
        self,
        posterior: PosteriorLike,
        measure: str = "total",
        *,
        probabilities: bool = False,
        binary: bool = False,
        likelihood: str = "categorical",
        variance: str = "log_variance",
        noise_variance: Optional[float] = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.posterior = as_posterior(posterior)
        self.measure = check_choice(measure, "measure", MEASURES)
        self.probabilities = check_bool(probabilities, "probabilities")
        self.binary = check_bool(binary, "binary")
        self.likelihood = check_choice(likelihood, "likelihood", LIKELIHOODS)
        self.variance = check_choice(variance, "variance", VARIANCE_HEADS)
        if noise_variance is not None:
            check_non_negative_number(noise_variance, "noise_variance")
        self.noise_variance = noise_variance
        self.validate = bool(validate)
        if self.likelihood == "gaussian":
            self._check_gaussian_settings()
        elif noise_variance is not None:
            raise ValueError(
                "noise_variance is the constant noise of means-only regressors: pass likelihood='gaussian' with it, "
                "or leave it out for a classifier"
            )

    def _check_gaussian_settings(self) -> None:
        for flag in ("binary", "probabilities"):
            if getattr(self, flag):
                raise ValueError(
                    f"{flag}=True describes a classifier's outputs, but likelihood='gaussian' reads a mean (and a "
                    f"variance head) per input; drop {flag}=True, or use likelihood='categorical' for a classifier"
                )

    @property
    def num_samples(self) -> int:
        """Number of posterior samples ``S``."""
        return self.posterior.num_samples

    @property
    def is_gaussian(self) -> bool:
        """Whether the members are regressors (``likelihood="gaussian"``)."""
        return self.likelihood == "gaussian"

    @property
    def summary_columns(self) -> Tuple[str, ...]:
        """The keys of :meth:`summary`, in order: ``predicted`` (a class) for a classifier,
        ``predicted_mean`` for a regressor, then the three measures."""
        return _GAUSSIAN_SUMMARY_COLUMNS if self.is_gaussian else SUMMARY_COLUMNS

    def settings(self) -> Dict[str, Any]:
        """The keyword arguments, besides ``posterior`` and ``measure``, this forward was built with."""
        return {
            "probabilities": self.probabilities,
            "binary": self.binary,
            "likelihood": self.likelihood,
            "variance": self.variance,
            "noise_variance": self.noise_variance,
            "validate": self.validate,
        }

    def with_measure(self, measure: str) -> "UncertaintyForward":
        """A new forward sharing this posterior, returning another measure."""
        return UncertaintyForward(self.posterior, measure, **self.settings())

    def sample_outputs(self, *inputs: Any) -> Tensor:
        """Raw sample outputs ``(S, N, C)`` (logits, or probabilities if declared; a Gaussian
        member's ``(S, N, 2)`` mean and variance head, or ``(S, N, 1)`` means)."""
        if self.validate:
            self.posterior.check_inputs(inputs)
            self.posterior.check_deterministic(inputs)
        return self.class_outputs(self.posterior(*inputs))

    def class_outputs(self, outputs: Tensor) -> Tensor:
        """``(S, N, C)`` sample outputs; with ``binary=True`` the one score ``(S, N, 1)`` becomes
        two classes: logits ``[0, z]`` or probabilities ``[1 - p, p]``."""
        if not self.binary:
            return outputs
        if outputs.dim() != 3 or outputs.shape[-1] != 1:
            raise ValueError(
                f"binary=True expects one logit or probability per input, (N,) or (N, 1) per sample, got sample "
                f"outputs of shape {tuple(outputs.shape)}"
            )
        if self.probabilities:
            return torch.cat([1 - outputs, outputs], dim=-1)
        return torch.cat([torch.zeros_like(outputs), outputs], dim=-1)

    def _require_categorical(self, what: str) -> None:
        if self.is_gaussian:
            raise ValueError(
                f"{what} is defined for classifiers (likelihood='categorical'); this forward has "
                "likelihood='gaussian': use decompose(), sample_means() or predictive_mean()"
            )

    def log_probabilities(self, *inputs: Any) -> Tensor:
        """Per-sample log-probabilities ``(S, N, C)`` (classifiers)."""
        self._require_categorical("log_probabilities")
        return sample_log_probabilities(self.sample_outputs(*inputs), self.probabilities, self.validate)

    def predictive(self, *inputs: Any) -> Tensor:
        """Per-sample class probabilities of shape ``(S, N, C)`` (classifiers).

        Their mean over the first dimension is the posterior predictive distribution.
        """
        return self.log_probabilities(*inputs).exp()

    def log_predictive_mean(self, *inputs: Any) -> Tensor:
        """``log mean_s p_s``, the log posterior predictive distribution ``(N, C)``, in log space."""
        return _log_mean_probabilities(self.log_probabilities(*inputs))

    def predicted_class(self, *inputs: Any) -> Tensor:
        """The class of highest posterior predictive probability, ``(N,)`` int64 (classifiers)."""
        return self.predictive(*inputs).mean(0).argmax(-1)

    def _gaussian_outputs(self, *inputs: Any) -> Tensor:
        if not self.is_gaussian:
            raise ValueError(
                "sample_means and predictive_mean are defined for regressors (likelihood='gaussian'); this forward "
                "has likelihood='categorical': use predictive() or predicted_class()"
            )
        outputs = self.sample_outputs(*inputs)
        if self.validate:
            _check_gaussian_outputs(outputs, self.variance)
        return outputs

    def sample_means(self, *inputs: Any) -> Tensor:
        """Each Gaussian sample's predicted mean ``mu_s``, shape ``(S, N)`` (regressors)."""
        return self._gaussian_outputs(*inputs)[..., 0]

    def predictive_mean(self, *inputs: Any) -> Tensor:
        """The posterior predictive mean ``mean_s mu_s``, shape ``(N,)`` (regressors)."""
        return self.sample_means(*inputs).mean(0)

    def logits_per_sample(self, points: Tensor, args: Tuple[Any, ...] = ()) -> Tensor:
        """Sample ``s``'s logits on ``points[s]`` (``(S, N, ...)`` points, one copy per sample, and
        its share of ``args``), so one backward pass gives every sample its own input gradient.

        The outputs are checked as every other reader of the samples checks them (when
        ``validate``); declared probabilities become ``log p`` (whose softmax is ``p``).
        """
        self._require_categorical("logits_per_sample (the softmax logits UA-Backprop and FullGrad read)")
        outputs = self.class_outputs(
            self.posterior.forward_per_sample(points, *expand_to_samples(args, points.shape[0]))
        )
        if self.validate:
            _validate_outputs(outputs, self.probabilities)
        return _log_of_probabilities(outputs) if self.probabilities else outputs

    def _log_probabilities_and_terms(self, *inputs: Any) -> Tuple[Tensor, Decomposition]:
        """``log p_s`` ``(S, N, C)`` and the per-class terms, from one pass through the posterior."""
        self._require_categorical("per-class uncertainty (Wang et al. Eq. 4)")
        outputs = self.sample_outputs(*inputs)
        log_p = sample_log_probabilities(outputs, self.probabilities, self.validate)
        return log_p, _per_class_from_log_probabilities(log_p, outputs if self.probabilities else None)

    def per_class(self, *inputs: Any) -> Decomposition:
        """Per-class terms ``U_{g_i}`` (Wang et al. Eq. 4), each ``(N, C)`` (classifiers)."""
        return self._log_probabilities_and_terms(*inputs)[1]

    def _variances(self, *inputs: Any) -> Tuple[Tensor, Decomposition]:
        """The Gaussian outputs and their decomposition, from one pass through the posterior."""
        outputs = self._gaussian_outputs(*inputs)
        return outputs, variance_decomposition(outputs, self.variance, self.noise_variance, validate=False)

    def summary(self, *inputs: Any) -> Dict[str, Tensor]:
        """The per-input columns a data-set run stores beside each map, from one pass through the
        posterior, keyed and ordered as :attr:`summary_columns`: ``predicted`` (int64, the argmax
        of the posterior predictive; classifiers) or ``predicted_mean`` (regressors), then the
        three measures; the same values as :meth:`predicted_class` (or :meth:`predictive_mean`)
        and :meth:`decompose`."""
        if self.is_gaussian:
            outputs, variances = self._variances(*inputs)
            columns = {"predicted_mean": outputs[..., 0].mean(0)}
            columns.update(zip(MEASURES, variances))
            return columns
        log_p, terms = self._log_probabilities_and_terms(*inputs)
        columns = {"predicted": log_p.exp().mean(0).argmax(-1)}
        columns.update((name, term.sum(-1)) for name, term in zip(MEASURES, terms))
        return columns

    def decompose(self, *inputs: Any) -> Decomposition:
        """All three measures, each ``(N,)``, from one pass through the posterior."""
        if self.is_gaussian:
            return self._variances(*inputs)[1]
        return Decomposition(*(term.sum(-1) for term in self.per_class(*inputs)))

    def forward(self, *inputs: Any) -> Tensor:
        """The chosen measure for each input, shape ``(N,)``."""
        if not self.is_gaussian:
            return self.decompose(*inputs).select(self.measure)
        outputs, variances = self._variances(*inputs)
        if self.measure == "aleatoric" and outputs.shape[-1] == 1:
            raise ValueError(
                "measure='aleatoric' needs a variance head: the members return means only ((N,) or (N, 1)), so "
                "their noise is unknown (a constant noise_variance does not depend on the input); return "
                "(N, 2) = mean and log-variance per input, or explain measure='epistemic'"
            )
        return variances.select(self.measure)

    def extra_repr(self) -> str:
        if self.is_gaussian:
            return f"measure={self.measure!r}, samples={self.num_samples}, gaussian members ({self.variance} head)"
        kind = "probabilities" if self.probabilities else "logits"
        return f"measure={self.measure!r}, samples={self.num_samples}, members return {kind}"
