"""The regressors' likelihood: :class:`Gaussian`, decomposed by the law of total variance (the
formulas are in :mod:`captum_uncertainty.likelihoods`), and the declaration a tensor cannot
replace (:class:`UndeclaredOutputError`, :data:`UNDECLARED`). Part of
:mod:`captum_uncertainty.likelihoods`, which re-exports the public names.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from captum_uncertainty._validation import (
    check_choice,
    check_int,
    check_non_negative_number,
    check_positive_int,
)
from captum_uncertainty.likelihoods._base import MEASURES, Decomposition, Likelihood, _check_stack
from captum_uncertainty.posterior import tensor_output

__all__ = ["Gaussian", "UNDECLARED", "UndeclaredOutputError", "VARIANCE_HEADS"]

#: How a Gaussian member's noise head encodes its noise: ``log sigma^2``, ``sigma^2`` (e.g. a
#: softplus head) or ``sigma``; ``None`` declares means-only members.
VARIANCE_HEADS = ("log_variance", "variance", "std")


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
