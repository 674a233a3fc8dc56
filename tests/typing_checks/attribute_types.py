"""Return types of the attribution methods' ``attribute``, checked by mypy only.

mypy reads this folder (``[tool.mypy] files`` in pyproject.toml); nothing here runs, and pytest
does not collect it (no ``test_`` prefix). Each ``assert_type`` pins what one combination of
flags returns, so a change to an overload shows up as a mypy error.
"""

from __future__ import annotations

from typing import Tuple, Union, assert_type

from torch import Tensor

from captum_uncertainty import (
    CLUE,
    CounterfactualPathIG,
    Decomposition,
    DeltaCLUE,
    LayerUncertaintyIntegratedGradients,
    UABackprop,
    UncertaintyIntegratedGradients,
)
from captum_uncertainty.attr import CounterfactualPathResult, CounterfactualPathResultWithDelta, Counterfactuals


def check_integrated_gradients(
    uig: UncertaintyIntegratedGradients, x: Tensor, xs: Tuple[Tensor, Tensor], flag: bool
) -> None:
    assert_type(uig.attribute(x), Tensor)
    assert_type(uig.attribute(xs), Tuple[Tensor, ...])
    assert_type(uig.attribute(x, "black", None, None, 50, "gausslegendre", None, False), Tensor)
    assert_type(uig.attribute(x, return_convergence_delta=False, decompose=False), Tensor)
    assert_type(uig.attribute(x, return_convergence_delta=True), Tuple[Tensor, Tensor])
    assert_type(uig.attribute(xs, return_convergence_delta=True), Tuple[Tuple[Tensor, ...], Tensor])
    assert_type(uig.attribute(x, decompose=True), Decomposition)
    assert_type(uig.attribute(xs, decompose=True), Decomposition)
    assert_type(uig.attribute(x, return_convergence_delta=True, decompose=True), Tuple[Decomposition, Decomposition])
    assert_type(
        uig.attribute(x, return_convergence_delta=flag, decompose=flag),
        Union[Tensor, Tuple[Tensor, Tensor], Decomposition, Tuple[Decomposition, Decomposition]],
    )
    assert_type(
        uig.attribute(xs, return_convergence_delta=flag),
        Union[
            Tuple[Tensor, ...], Tuple[Tuple[Tensor, ...], Tensor], Decomposition, Tuple[Decomposition, Decomposition]
        ],
    )


def check_layer_integrated_gradients(
    lig: LayerUncertaintyIntegratedGradients, ids: Tensor, pair: Tuple[Tensor, Tensor], flag: bool
) -> None:
    # attributions are shaped like one member's layer output: a tensor, whatever the inputs
    assert_type(lig.attribute(ids), Tensor)
    assert_type(lig.attribute(pair), Tensor)
    assert_type(lig.attribute(ids, sum_embedding=True), Tensor)
    assert_type(lig.attribute(ids, return_convergence_delta=True), Tuple[Tensor, Tensor])
    assert_type(lig.attribute(pair, return_convergence_delta=True, sum_embedding=True), Tuple[Tensor, Tensor])
    assert_type(lig.attribute(ids, decompose=True), Decomposition)
    assert_type(lig.attribute(ids, return_convergence_delta=True, decompose=True), Tuple[Decomposition, Decomposition])
    assert_type(
        lig.attribute(ids, return_convergence_delta=flag, decompose=flag),
        Union[Tensor, Tuple[Tensor, Tensor], Decomposition, Tuple[Decomposition, Decomposition]],
    )


def check_ua_backprop(ua: UABackprop, x: Tensor, flag: bool) -> None:
    assert_type(ua.attribute(x), Tensor)
    assert_type(ua.attribute(x, path="inputgrad", tau1=0.08, tau2=0.3), Tensor)
    assert_type(ua.attribute(x, decompose=False), Tensor)
    assert_type(ua.attribute(x, decompose=True), Decomposition)
    assert_type(ua.attribute(x, decompose=flag), Union[Tensor, Decomposition])


def check_counterfactual_path(cpig: CounterfactualPathIG, x: Tensor, flag: bool) -> None:
    assert_type(cpig.attribute(x), Tensor)
    assert_type(cpig.attribute(x, "in_class", None, None, 50, "riemann_middle", None, False), Tensor)
    assert_type(cpig.attribute(x, return_convergence_delta=True), Tuple[Tensor, Tensor])
    assert_type(cpig.attribute(x, decompose=True), Decomposition)
    assert_type(cpig.attribute(x, return_convergence_delta=True, decompose=True), Tuple[Decomposition, Decomposition])
    assert_type(cpig.attribute(x, return_fiducial=True), CounterfactualPathResult)
    assert_type(cpig.attribute(x, decompose=True, return_fiducial=True), CounterfactualPathResult)
    assert_type(
        cpig.attribute(x, return_convergence_delta=True, return_fiducial=True), CounterfactualPathResultWithDelta
    )
    assert_type(
        cpig.attribute(x, return_convergence_delta=True, decompose=True, return_fiducial=True),
        CounterfactualPathResultWithDelta,
    )
    assert_type(
        cpig.attribute(x, return_convergence_delta=flag, decompose=flag, return_fiducial=flag),
        Union[
            Tensor,
            Tuple[Tensor, Tensor],
            Decomposition,
            Tuple[Decomposition, Decomposition],
            CounterfactualPathResult,
            CounterfactualPathResultWithDelta,
        ],
    )


def check_clue(clue: CLUE, x: Tensor, flag: bool) -> None:
    assert_type(clue.attribute(x), Tensor)
    assert_type(clue.attribute(x, False), Tensor)
    assert_type(clue.attribute(x, max_iterations=10), Tensor)
    assert_type(clue.attribute(x, return_counterfactuals=True), Tuple[Tensor, Counterfactuals])
    assert_type(clue.attribute(x, return_counterfactuals=True, max_iterations=10), Tuple[Tensor, Counterfactuals])
    assert_type(clue.attribute(x, return_counterfactuals=flag), Union[Tensor, Tuple[Tensor, Counterfactuals]])


def check_delta_clue(dclue: DeltaCLUE, x: Tensor, flag: bool) -> None:
    assert_type(dclue.attribute(x), Tensor)
    assert_type(dclue.attribute(x, 2.0, 5, "mean", 0, False), Tensor)
    assert_type(dclue.attribute(x, delta=1.0, max_iterations=10), Tensor)
    assert_type(dclue.attribute(x, return_counterfactuals=True), Tuple[Tensor, Counterfactuals])
    assert_type(dclue.attribute(x, 2.0, n_starts=3, return_counterfactuals=True), Tuple[Tensor, Counterfactuals])
    assert_type(dclue.attribute(x, return_counterfactuals=flag), Union[Tensor, Tuple[Tensor, Counterfactuals]])
