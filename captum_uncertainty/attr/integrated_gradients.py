"""Integrated Gradients of predictive uncertainty, with the aleatoric / epistemic split."""

from __future__ import annotations

from typing import Any, List, Literal, Optional, Sequence, Tuple, TypeVar, Union, overload

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor

from captum_uncertainty.attr._utils.checks import check_uncertainty_forward
from captum_uncertainty.attr._utils.formatting import (
    BaselineType,
    TargetType,
    TensorOrTuple,
    additional_args_tuple,
    format_baselines,
    format_inputs,
    format_output,
)
from captum_uncertainty.attr._utils.path import (
    bounded_internal_batch_size,
    integrate_path,
    quadrature,
    straight_path,
    uncertainty_gradients,
    uncertainty_values,
)
from captum_uncertainty.attr._utils.results import decomposed, decomposed_maps
from captum_uncertainty.forward import Decomposition, UncertaintyForward

__all__ = ["UncertaintyIntegratedGradients"]

#: Captum's ``TensorOrTupleOfTensorsGeneric``: a tensor input gives a tensor, a tuple a tuple. Declared
#: here because Captum ships no ``py.typed``, so mypy reads Captum's own TypeVar as ``Any``.
_TensorOrTupleOfTensorsGeneric = TypeVar("_TensorOrTupleOfTensorsGeneric", Tensor, Tuple[Tensor, ...])


class UncertaintyIntegratedGradients(GradientAttribution):
    r"""Integrated Gradients (Sundararajan et al., 2017) of a Bayesian model's uncertainty.

    Attributes ``U(x) - U(x')``, where ``U`` is the :class:`~captum_uncertainty.UncertaintyForward`'s
    measure, to the input features by integrating the gradient of ``U`` along the straight line
    from the baseline ``x'`` to ``x``. ``attribute`` takes Captum's arguments in Captum's order,
    so code written for ``captum.attr.IntegratedGradients(forward_func)`` works by swapping the
    class, and on a tensor baseline it computes exactly what Captum computes (same integration
    points and weights). It adds what uncertainty needs:

    * ``baselines="black" | "white" | "black_white"``: an all-zeros input, an all-ones input
      (images are assumed scaled to [0, 1]), or the average of the two attributions, Perez et
      al.'s "B+W" fiducial (2022, supplement Sec. 4.4), which cancels part of the bias either
      single colour puts into the path;
    * ``decompose=True`` (keyword only): total, aleatoric and epistemic attributions from one
      forward pass per path point. Path integrals are linear in the integrand and epistemic =
      total - aleatoric, so the epistemic attribution is the difference of the other two (Perez
      et al. supplement Sec. 1); two backward passes (total and aleatoric) share one forward;
    * ``target``: ``None`` (default) explains the scalar measure. A class index (an int, or one
      per input) explains that class's term ``U_{g_i}`` of Wang et al.'s Eq. 4 instead (e.g.
      ``-pbar_i log pbar_i`` for total uncertainty); the terms of all classes sum to the scalar,
      and so do their attributions.

    Properties: completeness (``sum(attributions) = U(x) - U(x')`` up to the quadrature error,
    reported by the convergence delta), implementation invariance, sensitivity, linearity.
    Attributions can be negative: a feature can also *lower* the uncertainty. Under
    :class:`~captum.attr.NoiseTunnel`, ``decompose=True`` returns the plain tuple ``(total,
    aleatoric, epistemic)`` of smoothed maps (NoiseTunnel rebuilds tuples).

    Args:
        forward_func (UncertaintyForward): the uncertainty to explain.
        multiply_by_inputs (bool): multiply the path-averaged gradient by ``x - x'`` (global
            attribution, Captum's default) or return it as is (local attribution).
            Default: ``True``.

    Examples::

        >>> uf = UncertaintyForward(models, measure="epistemic")
        >>> ig = UncertaintyIntegratedGradients(uf)
        >>> attributions, delta = ig.attribute(x, baselines="black_white", n_steps=50,
        ...                                    return_convergence_delta=True)
        >>> total, aleatoric, epistemic = ig.attribute(x, baselines="black", decompose=True)
        >>> class_three = ig.attribute(x, target=3)   # the class-3 term of Eq. 4
    """

    def __init__(self, forward_func: UncertaintyForward, multiply_by_inputs: bool = True) -> None:
        super().__init__(check_uncertainty_forward(forward_func))
        self._multiply_by_inputs = multiply_by_inputs

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True

    @overload
    def attribute(
        self,
        inputs: _TensorOrTupleOfTensorsGeneric,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: Literal[False] = False,
        *,
        decompose: Literal[False] = False,
    ) -> _TensorOrTupleOfTensorsGeneric: ...

    @overload
    def attribute(
        self,
        inputs: _TensorOrTupleOfTensorsGeneric,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        *,
        return_convergence_delta: Literal[True],
        decompose: Literal[False] = False,
    ) -> Tuple[_TensorOrTupleOfTensorsGeneric, Tensor]: ...

    @overload
    def attribute(
        self,
        inputs: _TensorOrTupleOfTensorsGeneric,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: Literal[False] = False,
        *,
        decompose: Literal[True],
    ) -> Decomposition: ...

    @overload
    def attribute(
        self,
        inputs: _TensorOrTupleOfTensorsGeneric,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        *,
        return_convergence_delta: Literal[True],
        decompose: Literal[True],
    ) -> Tuple[Decomposition, Decomposition]: ...

    @overload
    def attribute(
        self,
        inputs: _TensorOrTupleOfTensorsGeneric,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        *,
        decompose: bool = False,
    ) -> Union[
        _TensorOrTupleOfTensorsGeneric,
        Tuple[_TensorOrTupleOfTensorsGeneric, Tensor],
        Decomposition,
        Tuple[Decomposition, Decomposition],
    ]: ...

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        *,
        decompose: bool = False,
    ) -> Union[TensorOrTuple, Tuple[TensorOrTuple, Tensor], Decomposition, Tuple[Decomposition, Decomposition]]:
        r"""Integrated Gradients of the uncertainty.

        Args:
            inputs (Tensor or tuple of Tensor): inputs ``(N, ...)`` to explain; a tuple when the
                posterior's models take several inputs (Captum's convention).
            baselines (None, str, scalar, Tensor or tuple): the reference ``x'``: ``None`` or
                ``"black"`` (zeros), ``"white"`` (ones), ``"black_white"`` (average of the two
                attributions), a number, a tensor of the inputs' shape or of one example's
                shape (shared by all examples), or a tuple with one per input. Default: ``None``.
            target (int, Tensor or list, optional): ``None`` for the scalar measure (default);
                a class (or one per input) for that class's Eq. 4 term.
            additional_forward_args (Any, optional): extra arguments of the forward; tensors
                whose first dimension is the batch size are repeated along the path.
            n_steps (int): integration points. Default: 50.
            method (str): ``"gausslegendre"`` (default) or ``"riemann_left"``,
                ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``.
            internal_batch_size (int, optional): at most this many path points per forward
                pass (at least one step of the whole batch). Default: as many as keep
                ``S x points x numbers per input`` within ``2**24`` (``PATH_NUMBERS_PER_CHUNK`` of
                ``captum_uncertainty.attr._utils.path``: about 5 points of a 3 x 224 x 224 image at
                S = 20), so memory stays bounded on large inputs; pass a number to change it.
            return_convergence_delta (bool): also return ``sum(attributions) - (U(x) - U(x'))``
                per example (for ``"black_white"``: of the averaged attribution against the
                averaged difference).
            decompose (bool, keyword only): return a :class:`~captum_uncertainty.Decomposition`
                of total, aleatoric and epistemic attributions instead of the measure's.

        Returns:
            Tensor, tuple of Tensor, or Decomposition: attributions of the inputs' shape(s) (a
            ``Decomposition`` of three such results when ``decompose=True``), and the
            convergence delta ``(N,)`` (a ``Decomposition`` of deltas when ``decompose=True``)
            if requested.
        """
        forward: UncertaintyForward = self.forward_func
        tensors, is_tuple = format_inputs(inputs)
        nodes, weights = quadrature(method, n_steps, tensors[0])
        measures = ("total", "aleatoric") if decompose else (forward.measure,)
        args = additional_args_tuple(additional_forward_args)
        batch = tensors[0].shape[0]
        gradients = uncertainty_gradients(forward, args, measures, batch, target)
        internal_batch_size = bounded_internal_batch_size(forward, tensors, internal_batch_size)
        attributions: List[List[Tuple[Tensor, ...]]] = []
        references = format_baselines(baselines, tensors)
        for baseline in references:
            integrals = integrate_path(
                straight_path(tensors, baseline), gradients, nodes, weights, batch, internal_batch_size
            )
            attributions.append([self._scaled(integral, tensors, baseline) for integral in integrals])
        attribution = [_average_tuples(parts) for parts in zip(*attributions)]
        maps = [format_output(parts, is_tuple) for parts in attribution]
        if not return_convergence_delta:
            return decomposed_maps(maps) if decompose else maps[0]
        with torch.no_grad():  # U(x) once per call; U at each baseline once
            at_inputs = uncertainty_values(forward, tensors, args, measures, target)
            differences = [
                [a - b for a, b in zip(at_inputs, uncertainty_values(forward, baseline, args, measures, target))]
                for baseline in references
            ]
        difference = [torch.stack(parts).mean(0) for parts in zip(*differences)]
        deltas = [sum(a.flatten(1).sum(1) for a in parts) - d for parts, d in zip(attribution, difference)]
        return decomposed(maps, deltas) if decompose else (maps[0], deltas[0])

    def _scaled(
        self, integral: Tuple[Tensor, ...], inputs: Tuple[Tensor, ...], baseline: Tuple[Tensor, ...]
    ) -> Tuple[Tensor, ...]:
        if not self._multiply_by_inputs:
            return integral
        return tuple(g * (x - b) for g, x, b in zip(integral, inputs, baseline))


def _average_tuples(parts: Sequence[Tuple[Tensor, ...]]) -> Tuple[Tensor, ...]:
    """Element-wise mean of several tuples of tensors (one per baseline set)."""
    return tuple(torch.stack(items).mean(0) for items in zip(*parts))
