"""The uncertainty of a Bayesian model's prediction as a Captum forward function.

:class:`UncertaintyForward` runs posterior samples (:mod:`captum_uncertainty.posterior`) and
returns one uncertainty per input. What a sample's output means, and how it is decomposed (by
entropy for classifiers, by the law of total variance for regressors), is the business of its
likelihood object (:mod:`captum_uncertainty.likelihoods`); the forward asks it and nothing else.
The decomposition functions of raw sample outputs (:func:`entropy_decomposition`,
:func:`per_class_uncertainty`, :func:`variance_decomposition`) are thin spellings of the same
objects.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

from torch import Tensor, nn

from captum_uncertainty._validation import check_bool
from captum_uncertainty.likelihoods import (
    MEASURES,
    PROBABILITY_SUM_TOLERANCE,
    UNDECLARED,
    VARIANCE_HEADS,
    Categorical,
    Decomposition,
    Gaussian,
    Likelihood,
    log_mean_probabilities,
)
from captum_uncertainty.likelihoods import resolve_likelihood as _resolve_likelihood
from captum_uncertainty.posterior import Posterior, as_posterior, expand_to_samples
from captum_uncertainty.posterior._utils import positional_inputs

__all__ = [
    "MEASURES",
    "VARIANCE_HEADS",
    "PROBABILITY_SUM_TOLERANCE",
    "Decomposition",
    "UncertaintyForward",
    "entropy_decomposition",
    "per_class_uncertainty",
    "sample_log_probabilities",
    "variance_decomposition",
]


def _classifier(probabilities: bool) -> Categorical:
    return Categorical("probabilities" if check_bool(probabilities, "probabilities") else "logits")


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
    return _classifier(probabilities).log_probabilities(outputs, validate)


def per_class_uncertainty(outputs: Tensor, probabilities: bool = False, validate: bool = True) -> Decomposition:
    """Per-class uncertainty terms ``U_{g_i}`` of Wang et al. (2023), Eq. 4.

    The same as ``Categorical(outputs).terms(outputs)``
    (:class:`~captum_uncertainty.Categorical`).

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
    return _classifier(probabilities).terms(outputs, validate)


def entropy_decomposition(outputs: Tensor, probabilities: bool = False, validate: bool = True) -> Decomposition:
    """Total, aleatoric and epistemic uncertainty of each input, in nats.

    The same as ``Categorical(outputs).decompose(outputs)``
    (:class:`~captum_uncertainty.Categorical`).

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
    return _classifier(probabilities).decompose(outputs, validate)


def variance_decomposition(
    outputs: Tensor, variance: Optional[str] = UNDECLARED, noise_variance: Optional[float] = None, validate: bool = True
) -> Decomposition:
    """Total, aleatoric and epistemic variance of each input by the law of total variance.

    The same as ``Gaussian(variance, noise_variance).decompose(outputs)``
    (:class:`~captum_uncertainty.Gaussian`).

    Args:
        outputs (Tensor): Gaussian sample outputs ``(S, N, 2)``, the mean ``mu_s`` and the
            ``variance`` head of each input, or ``(S, N, 1)``, the means only.
        variance (str or None): what the second column holds, ``"log_variance"`` (``log
            sigma^2``), ``"variance"`` (``sigma^2``) or ``"std"`` (``sigma``); ``None`` for means
            only. Required: a tensor cannot tell.
        noise_variance (float, optional): a constant noise variance of means-only outputs (e.g.
            a fitted observation noise); ``None`` counts it as 0.
        validate (bool): check the outputs' shape and finiteness against the declaration and the
            variance head's sign.

    Returns:
        Decomposition: ``aleatoric = mean_s sigma_s^2``, ``epistemic = mean_s (mu_s - mean_t
        mu_t)^2`` (the population variance, divided by ``S``) and ``total = aleatoric +
        epistemic``, each ``(N,)``. Means-only outputs have ``aleatoric = noise_variance``.

    Examples::

        >>> outputs = torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]]])   # two members: means 1, 3, log-variance 0
        >>> variance_decomposition(outputs, "log_variance")         # doctest: +SKIP
        Decomposition(total=tensor([2.]), aleatoric=tensor([1.]), epistemic=tensor([1.]))
    """
    return Gaussian(variance=variance, noise_variance=noise_variance).decompose(outputs, validate)


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

    What the samples' outputs mean is declared once, by a likelihood object
    (:mod:`captum_uncertainty.likelihoods`), which reads, checks and decomposes them:

    * :class:`~captum_uncertainty.Categorical` (class logits or probabilities) and
      :class:`~captum_uncertainty.Bernoulli` (one logit or probability per input): decomposed by
      entropy, in nats: total = predictive entropy, aleatoric = expected entropy, epistemic =
      mutual information.
    * :class:`~captum_uncertainty.Gaussian` (a mean and a declared noise head, or means only):
      by the law of total variance, in squared output units: aleatoric = mean noise variance
      ``mean_s sigma_s^2``, epistemic = variance of the means ``mean_s (mu_s - mean mu)^2``,
      total = their sum.

    Without a likelihood, the samples must be class logits of at least 3 classes: 2 numbers per
    input (a 2-class classifier, or a Gaussian mean and noise head), one number, or a tuple are
    refused with a message naming the readings, never guessed.

    The model the user gave is the model explained: a deep-ensemble member in ``train()`` mode
    with active dropout is refused (see :class:`~captum_uncertainty.DeepEnsemble`), naming
    :class:`~captum_uncertainty.MCDropout` for sampled masks and ``model.eval()``.

    Args:
        posterior (Posterior or sequence of nn.Module): where the samples come from. A plain
            list (or ``nn.ModuleList``) of modules is a deep ensemble
            (:class:`~captum_uncertainty.DeepEnsemble`); for MC dropout, weight samples
            or sample-returning callables pass a
            :class:`~captum_uncertainty.Posterior`.
        measure (str): ``"total"``, ``"aleatoric"`` or ``"epistemic"``. Default: ``"total"``.
        likelihood (Likelihood or str, keyword only, optional): what the samples' outputs mean:
            ``Categorical(outputs="logits" | "probabilities")``, ``Bernoulli(outputs="logit" |
            "probability")`` or ``Gaussian(variance=..., noise_variance=None, targets=1)``. The
            names ``"categorical"`` (logits) and ``"bernoulli"`` (a logit) are shorthands;
            ``"gaussian"`` needs ``variance=``. Default: ``None``, class logits of ``C >= 3``
            classes.
        probabilities (bool, keyword only): shorthand for ``Categorical(outputs="probabilities")``
            (with ``binary=True``: ``Bernoulli(outputs="probability")``). Default: ``False``.
        binary (bool, keyword only): shorthand for ``Bernoulli(outputs="logit")``. Default:
            ``False``.
        variance (str or None, keyword only): with ``likelihood="gaussian"``, the noise head:
            shorthand for ``Gaussian(variance=...)``; no default, it must be declared.
        noise_variance (float, keyword only, optional): with ``likelihood="gaussian"`` and
            ``variance=None``: shorthand for ``Gaussian(variance=None, noise_variance=...)``.
        validate (bool): check inputs (finite values, device and dtype) and sample outputs
            against the likelihood on every call, and once, on the first call, that the
            posterior is deterministic (the same samples on two calls, an input's value
            independent of its batch; see
            :meth:`Posterior.check_deterministic <captum_uncertainty.Posterior.check_deterministic>`).
            Default: ``True``.

    Examples::

        >>> uf = UncertaintyForward([m1, m2, m3], measure="epistemic")
        >>> u = uf(x)                    # (N,) mutual information
        >>> p = uf.predictive(x)         # (S, N, C) member probabilities
        >>> total, aleatoric, epistemic = uf.decompose(x)
        >>> from captum.attr import IntegratedGradients
        >>> attributions = IntegratedGradients(uf).attribute(x, baselines=x * 0)
        >>> regression = UncertaintyForward(regressors, "aleatoric", likelihood=Gaussian(variance="log_variance"))
        >>> binary = UncertaintyForward(sigmoid_members, likelihood=Bernoulli(outputs="probability"))
    """

    def __init__(
        self,
        posterior: PosteriorLike,
        measure: str = "total",
        *,
        likelihood: Union[Likelihood, str, None] = None,
        probabilities: bool = False,
        binary: bool = False,
        variance: Optional[str] = UNDECLARED,
        noise_variance: Optional[float] = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.posterior = as_posterior(posterior)
        self.likelihood: Likelihood = _resolve_likelihood(
            likelihood, probabilities=probabilities, binary=binary, variance=variance, noise_variance=noise_variance
        )
        self.measure = self.likelihood.check_measure(measure)
        self.validate = check_bool(validate, "validate")
        self._first_outputs_checked = False

    @property
    def num_samples(self) -> int:
        """Number of posterior samples ``S``."""
        return self.posterior.num_samples

    @property
    def summary_columns(self) -> Tuple[str, ...]:
        """The keys of :meth:`summary`, in order: ``predicted`` (a class) for a classifier,
        ``predicted_mean`` (per target) for a regressor, then the three measures."""
        return self.likelihood.summary_columns

    def settings(self) -> Dict[str, Any]:
        """The keyword arguments, besides ``posterior`` and ``measure``, this forward was built with."""
        return {"likelihood": self.likelihood, "validate": self.validate}

    def with_measure(self, measure: str) -> "UncertaintyForward":
        """A new forward sharing this posterior, returning another measure."""
        return UncertaintyForward(self.posterior, measure, **self.settings())

    @contextmanager
    def _reading(self) -> Iterator[None]:
        with self.posterior.reading(self.likelihood.read):
            yield

    def sample_outputs(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """The samples' outputs ``(S, N, K)`` as the likelihood reads them (class scores, a
        Bernoulli member's one score, a Gaussian member's means then noise heads), not yet
        checked against the declaration. Keyword inputs (a tokenizer's output) are placed as
        :meth:`positional` says."""
        inputs = self.positional(*inputs, **kwargs)
        with self._reading():
            if self.validate:
                self.posterior.check_inputs(inputs)
                return self.posterior.call_checked(*inputs)
            return self.posterior(*inputs)

    def check_inputs(self, *inputs: Any) -> None:
        """The guards :meth:`sample_outputs` runs before reading the posterior, for methods that
        then run the samples their own way (:meth:`logits_per_sample`): when ``validate``, the
        inputs' checks (non-empty, finite, the model's device and dtype) and, until it has passed
        once, the check that the samples are fixed, on the first two rows. A posterior that
        learns its sample count from a call (a :class:`~captum_uncertainty.SampleCallable`) has
        learnt it after this check."""
        if not self.validate:
            return
        with self._reading():
            self.posterior.check_inputs(inputs)
            self.posterior.check_deterministic(inputs)

    def _checked(self, outputs: Tensor) -> Tensor:
        """``outputs`` checked against the likelihood (when ``validate``): every call, and the
        pattern checks of :meth:`Likelihood.check_first` on the first."""
        if not self.validate:
            return outputs
        self.likelihood.check(outputs)
        if not self._first_outputs_checked:
            self.likelihood.check_first(outputs)
            self._first_outputs_checked = True
        return outputs

    def _checked_outputs(self, *inputs: Any, **kwargs: Any) -> Tensor:
        return self._checked(self.sample_outputs(*inputs, **kwargs))

    def positional(self, *inputs: Any, **kwargs: Any) -> Tuple[Any, ...]:
        """The members' positional inputs from keyword inputs: a tokenizer's ``BatchEncoding``
        (as ``forward(**encoding)`` or ``forward(encoding)``) is laid out in the order of the
        first sample module's ``forward``, gaps filled with its defaults, e.g.
        ``(input_ids, None, attention_mask)`` for a GPT-2 classifier whose second parameter is a
        cache. Positional inputs pass through unchanged.

        Raises:
            TypeError: a keyword that the members' ``forward`` does not take positionally, or a
                posterior without modules to read a signature from.
        """
        modules = self.posterior.sample_modules() if (kwargs or (inputs and isinstance(inputs[0], Mapping))) else []
        return positional_inputs(modules[0] if modules else None, inputs, kwargs)

    def bind(self, *inputs: Any, **kwargs: Any) -> Tuple[Any, Tuple[Any, ...]]:
        """``(inputs, additional_forward_args)`` for a Captum ``attribute`` call from keyword
        inputs: the first positional input and the rest, as :meth:`positional` lays them out.

        Examples::

            >>> encoding = tokenizer(sentences, return_tensors="pt", padding=True)
            >>> token_ids, args = uf.bind(encoding)          # (input_ids, (None, attention_mask))
            >>> lig.attribute(token_ids, baselines=pad_ids, additional_forward_args=args)
        """
        bound = self.positional(*inputs, **kwargs)
        if not bound:
            raise TypeError("bind needs at least one input")
        return bound[0], tuple(bound[1:])

    def _classifier(self, what: str) -> Any:
        likelihood = self.likelihood
        if not likelihood.is_classifier:
            raise ValueError(
                f"{what} is defined for classifiers (Categorical, Bernoulli); this forward reads {likelihood!r}: use "
                "decompose(), terms(), sample_means() or predictive_mean()"
            )
        return likelihood

    def _regressor(self, what: str) -> Gaussian:
        likelihood = self.likelihood
        if not isinstance(likelihood, Gaussian):
            raise ValueError(
                f"{what} is defined for regressors (Gaussian); this forward reads {likelihood!r}: use predictive() or "
                "predicted_class()"
            )
        return likelihood

    def log_probabilities(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """Per-sample log-probabilities ``(S, N, C)`` (classifiers)."""
        likelihood = self._classifier("log_probabilities")
        return likelihood.log_probabilities(self._checked_outputs(*inputs, **kwargs), validate=False)

    def predictive(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """Per-sample class probabilities of shape ``(S, N, C)`` (classifiers).

        Their mean over the first dimension is the posterior predictive distribution.
        """
        return self.log_probabilities(*inputs, **kwargs).exp()

    def log_predictive_mean(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """``log mean_s p_s``, the log posterior predictive distribution ``(N, C)``, in log space."""
        return log_mean_probabilities(self.log_probabilities(*inputs, **kwargs))

    def predicted_class(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """The class of highest posterior predictive probability, ``(N,)`` int64 (classifiers)."""
        return self.predictive(*inputs, **kwargs).mean(0).argmax(-1)

    def sample_means(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """Each Gaussian sample's predicted mean ``mu_s`` of the explained quantity, ``(S, N)``
        (regressors; with several targets, the one :class:`~captum_uncertainty.Gaussian`'s
        ``explain`` selects, or their sum)."""
        likelihood = self._regressor("sample_means and predictive_mean")
        return likelihood.explained_means(self._checked_outputs(*inputs, **kwargs))

    def predictive_mean(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """The posterior predictive mean ``mean_s mu_s``, shape ``(N,)`` (regressors)."""
        return self.sample_means(*inputs, **kwargs).mean(0)

    def logits_per_sample(self, points: Tensor, args: Tuple[Any, ...] = ()) -> Tensor:
        """Sample ``s``'s logits on ``points[s]`` (``(S, N, ...)`` points, one copy per sample, and
        its share of ``args``), so one backward pass gives every sample its own input gradient.

        The outputs are checked as every other reader of the samples checks them (when
        ``validate``); the likelihood turns them into softmax logits (declared probabilities
        become ``log p``, a Bernoulli logit ``z`` the two classes ``[0, z]``).
        """
        likelihood = self._classifier("logits_per_sample (the softmax logits UA-Backprop and FullGrad read)")
        with self._reading():
            outputs = self.posterior.forward_per_sample(points, *expand_to_samples(args, points.shape[0]))
        return likelihood.class_logits(self._checked(outputs), validate=False)

    def terms(self, *inputs: Any, **kwargs: Any) -> Decomposition:
        """The likelihood's per-class (classifiers, Wang et al. Eq. 4) or per-target (regressors)
        terms, each ``(N, K)``, from one pass through the posterior."""
        return self.likelihood.terms(self._checked_outputs(*inputs, **kwargs), validate=False)

    def per_class(self, *inputs: Any, **kwargs: Any) -> Decomposition:
        """Per-class terms ``U_{g_i}`` (Wang et al. Eq. 4), each ``(N, C)`` (classifiers)."""
        self._classifier("per-class uncertainty (Wang et al. Eq. 4)")
        return self.terms(*inputs, **kwargs)

    def summary(self, *inputs: Any, **kwargs: Any) -> Dict[str, Tensor]:
        """The per-input columns a data-set run stores beside each map, from one pass through the
        posterior, keyed and ordered as :attr:`summary_columns`: ``predicted`` (int64, the argmax
        of the posterior predictive; classifiers) or ``predicted_mean`` (regressors), then the
        three measures; the same values as :meth:`predicted_class` (or :meth:`predictive_mean`)
        and :meth:`decompose`."""
        return self.likelihood.summary(self._checked_outputs(*inputs, **kwargs), validate=False)

    def decompose(self, *inputs: Any, **kwargs: Any) -> Decomposition:
        """All three measures, each ``(N,)``, from one pass through the posterior."""
        return self.likelihood.decompose(self._checked_outputs(*inputs, **kwargs), validate=False)

    def forward(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """The chosen measure for each input, shape ``(N,)``."""
        return self.decompose(*inputs, **kwargs).select(self.measure)

    def extra_repr(self) -> str:
        return f"measure={self.measure!r}, samples={self.num_samples}, likelihood={self.likelihood!r}"
