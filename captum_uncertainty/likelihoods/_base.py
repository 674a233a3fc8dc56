"""The protocol every likelihood follows: :class:`Likelihood`, the :class:`Decomposition` it
returns, the names of its three measures, and the check of a stack of sample outputs shared by
the classifiers and the regressor. Part of :mod:`captum_uncertainty.likelihoods`, which
re-exports the public names.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Tuple

from torch import Tensor

from captum_uncertainty._validation import check_choice, check_finite_tensor
from captum_uncertainty.posterior import tensor_output

# _check_stack is shared with the other likelihood modules, not re-exported by the package
__all__ = ["Decomposition", "Likelihood", "MEASURES", "_check_stack"]

MEASURES = ("total", "aleatoric", "epistemic")


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
