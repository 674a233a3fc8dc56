"""Integrated Gradients of predictive uncertainty, with the aleatoric / epistemic split."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor

from captum_uncertainty.attr._common import (
    additional_args_tuple,
    check_uncertainty_forward,
    quadrature,
    repeat_batch_args,
    steps_per_chunk,
)
from captum_uncertainty.forward import Decomposition, UncertaintyForward

__all__ = ["UncertaintyIntegratedGradients"]

BASELINE_NAMES = ("black", "white", "black_white")
BaselineType = Union[None, str, int, float, Tensor]


class UncertaintyIntegratedGradients(GradientAttribution):
    r"""Integrated Gradients (Sundararajan et al., 2017) of a Bayesian model's uncertainty.

    Attributes ``U(x) - U(x')``, where ``U`` is the :class:`~captum_uncertainty.UncertaintyForward`'s
    measure, to the input features by integrating the gradient of ``U`` along the straight line
    from the baseline ``x'`` to ``x``. On a single tensor baseline it computes exactly what
    ``captum.attr.IntegratedGradients(forward_func)`` computes (same integration points and
    weights), and adds what uncertainty needs:

    * ``baselines="black" | "white" | "black_white"``: an all-zeros image, an all-ones image
      (images are assumed scaled to [0, 1]), or the average of the two attributions, Perez et
      al.'s "B+W" fiducial (2022, supplement Sec. 4.4), which cancels part of the bias either
      single colour puts into the path;
    * ``decompose=True``: total, aleatoric and epistemic attributions from one forward pass per
      path point. Path integrals are linear in the integrand and epistemic = total - aleatoric,
      so the epistemic attribution is the difference of the other two (Perez et al. supplement
      Sec. 1); two backward passes (total and aleatoric) share one forward.

    Properties: completeness (``sum(attributions) = U(x) - U(x')`` up to the quadrature error,
    reported by the convergence delta), implementation invariance, sensitivity, linearity.
    Attributions can be negative: a feature can also *lower* the uncertainty.

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
    """

    def __init__(self, forward_func: UncertaintyForward, multiply_by_inputs: bool = True) -> None:
        super().__init__(check_uncertainty_forward(forward_func))
        self._multiply_by_inputs = multiply_by_inputs

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: Tensor,
        baselines: BaselineType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        decompose: bool = False,
    ) -> Any:
        r"""Integrated Gradients of the uncertainty.

        Args:
            inputs (Tensor): inputs ``(N, ...)`` to explain.
            baselines (None, str, scalar or Tensor, optional): the reference ``x'``: ``None`` or
                ``"black"`` (zeros), ``"white"`` (ones), ``"black_white"`` (average of the two
                attributions), a number, or a tensor of the inputs' shape or of one example's
                shape (shared by all examples). Default: ``None``.
            additional_forward_args (Any, optional): extra arguments of the forward; tensors
                whose first dimension is the batch size are repeated along the path.
            n_steps (int): integration points. Default: 50.
            method (str): ``"gausslegendre"`` (default) or ``"riemann_left"``,
                ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``.
            internal_batch_size (int, optional): at most this many path points per forward
                pass (at least one step of the whole batch). Default: all at once.
            return_convergence_delta (bool): also return ``sum(attributions) - (U(x) - U(x'))``
                per example (for ``"black_white"``: of the averaged attribution against the
                averaged difference).
            decompose (bool): return a :class:`~captum_uncertainty.Decomposition` of total,
                aleatoric and epistemic attributions instead of the measure's.

        Returns:
            Tensor or Decomposition: attributions of the inputs' shape (a ``Decomposition`` of
            three such tensors when ``decompose=True``), and the convergence delta ``(N,)`` (a
            ``Decomposition`` of deltas when ``decompose=True``) if requested.
        """
        forward: UncertaintyForward = self.forward_func
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
        if not inputs.is_floating_point():
            raise TypeError(f"inputs must be a floating point tensor, got dtype {inputs.dtype}")
        if inputs.dim() == 0 or inputs.shape[0] == 0:
            raise ValueError(f"inputs must have a non-empty batch dimension, got shape {tuple(inputs.shape)}")
        alphas, weights = quadrature(method, n_steps)
        measures = ("total", "aleatoric") if decompose else (forward.measure,)
        args = additional_args_tuple(additional_forward_args)
        inputs = inputs.detach()
        attributions: List[List[Tensor]] = []
        differences: List[List[Tensor]] = []
        for baseline in resolve_baselines(baselines, inputs):
            integrals = path_integrals(forward, inputs, baseline, args, alphas, weights, measures, internal_batch_size)
            scale = inputs - baseline if self._multiply_by_inputs else torch.ones_like(inputs)
            attributions.append([integral * scale for integral in integrals])
            with torch.no_grad():
                ends = forward.decompose(inputs, *args), forward.decompose(baseline, *args)
            differences.append([ends[0].select(m) - ends[1].select(m) for m in measures])
        attribution = [torch.stack(parts).mean(0) for parts in zip(*attributions)]
        difference = [torch.stack(parts).mean(0) for parts in zip(*differences)]
        deltas = [a.flatten(1).sum(1) - d for a, d in zip(attribution, difference)]
        if decompose:
            result: Any = Decomposition(attribution[0], attribution[1], attribution[0] - attribution[1])
            delta: Any = Decomposition(deltas[0], deltas[1], deltas[0] - deltas[1])
        else:
            result, delta = attribution[0], deltas[0]
        return (result, delta) if return_convergence_delta else result


def resolve_baselines(baselines: BaselineType, inputs: Tensor) -> List[Tensor]:
    """The baseline tensors (one, or two for ``"black_white"``), each of the inputs' shape."""
    if baselines is None or (isinstance(baselines, str) and baselines == "black"):
        return [torch.zeros_like(inputs)]
    if isinstance(baselines, str):
        if baselines == "white":
            return [torch.ones_like(inputs)]
        if baselines == "black_white":
            return [torch.zeros_like(inputs), torch.ones_like(inputs)]
        raise ValueError(f"baselines must be one of {BASELINE_NAMES}, a number or a tensor, got {baselines!r}")
    if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        return [torch.full_like(inputs, float(baselines))]
    if not isinstance(baselines, Tensor):
        raise TypeError(f"baselines must be None, a string, a number or a tensor, got {type(baselines).__name__}")
    if baselines.shape == inputs.shape:
        return [baselines.detach().to(inputs.dtype)]
    if baselines.shape in (inputs.shape[1:], (1,) + tuple(inputs.shape[1:])):
        return [baselines.detach().to(inputs.dtype).reshape((1,) + tuple(inputs.shape[1:])).expand_as(inputs)]
    raise ValueError(
        f"baselines must have the inputs' shape {tuple(inputs.shape)} or one example's shape "
        f"{tuple(inputs.shape[1:])}, got {tuple(baselines.shape)}"
    )


def path_integrals(
    forward: UncertaintyForward,
    inputs: Tensor,
    baseline: Tensor,
    args: Tuple[Any, ...],
    alphas: Tensor,
    weights: Tensor,
    measures: Sequence[str],
    internal_batch_size: Optional[int],
) -> List[Tensor]:
    """``sum_k w_k dU_m/dx(x' + alpha_k (x - x'))`` for each measure ``m``, from shared forwards."""
    batch = inputs.shape[0]
    chunk = steps_per_chunk(internal_batch_size, batch, len(alphas))
    totals = [torch.zeros_like(inputs) for _ in measures]
    shape = (-1,) + (1,) * inputs.dim()
    for start in range(0, len(alphas), chunk):
        step_alphas = alphas[start : start + chunk].to(inputs.dtype)
        step_weights = weights[start : start + chunk].to(inputs.dtype)
        points = (baseline.unsqueeze(0) + step_alphas.view(shape) * (inputs - baseline).unsqueeze(0)).reshape(
            (-1,) + tuple(inputs.shape[1:])
        )
        points.requires_grad_(True)
        with torch.enable_grad():
            terms = forward.decompose(points, *repeat_batch_args(args, batch, len(step_alphas)))
            values = [terms.select(m).sum() for m in measures]
            for index, value in enumerate(values):
                (gradient,) = torch.autograd.grad(value, points, retain_graph=index + 1 < len(values))
                weighted = gradient.reshape((len(step_alphas),) + tuple(inputs.shape)) * step_weights.view(shape)
                totals[index] = totals[index] + weighted.sum(0)
    return totals
