r"""The one path-integration engine of the package.

Every path method (Integrated Gradients of uncertainty, both segments of the counterfactual path,
UA-Backprop's IG path, Blur IG) computes

.. math:: I = \sum_k w_k \, \nabla F(\gamma(a_k)) \odot \gamma'(a_k)

for quadrature nodes ``a_k`` and weights ``w_k``: :func:`integrate_path` builds the points of a
chunk of nodes (all inputs of the batch, step-major), asks for the gradients there, multiplies
them by the path's velocity when it has one, weighs and sums them. ``internal_batch_size``
bounds the path points per forward pass, as in Captum. Nodes and weights live on the inputs'
device and dtype.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from captum_uncertainty._validation import check_choice
from captum_uncertainty.attr._utils.checks import check_internal_batch_size, check_n_steps
from captum_uncertainty.attr._utils.formatting import TargetType, repeat_batch_args, repeat_target
from captum_uncertainty.blur import gaussian_blur
from captum_uncertainty.forward import UncertaintyForward

__all__ = [
    "BLUR_IG_METHOD",
    "INTEGRATION_METHODS",
    "SUPPORTED_METHODS",
    "PATH_NUMBERS_PER_CHUNK",
    "bounded_internal_batch_size",
    "blur_levels",
    "blur_path",
    "blur_quadrature",
    "default_max_sigma",
    "integrate_path",
    "quadrature",
    "select_class",
    "step_chunks",
    "straight_path",
    "target_gradients",
    "uncertainty_gradients",
    "uncertainty_values",
    "weighted_step_sum",
]

#: The ``method`` choices (Captum's integration rules) of the path methods' ``attribute``
#: (:class:`~captum_uncertainty.UncertaintyIntegratedGradients`,
#: :class:`~captum_uncertainty.BlurIntegratedGradients`, ...), of :func:`quadrature` and of
#: :func:`blur_quadrature`.
SUPPORTED_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
#: Deprecated alias of :data:`SUPPORTED_METHODS`, kept for one release.
INTEGRATION_METHODS = SUPPORTED_METHODS

Points = Tuple[Tensor, ...]
#: nodes ``(k,)`` -> (points, velocities or None), each a tuple with one ``(k * N, ...)`` tensor per input
PathFunction = Callable[[Tensor], Tuple[Points, Optional[Points]]]
#: (points, k) -> one tuple of gradients per output; a gradient is ``(*lead, k * N, ...)``
GradientFunction = Callable[[Points, int], Sequence[Points]]


def quadrature(method: str, n_steps: int, like: Tensor) -> Tuple[Tensor, Tensor]:
    """Nodes ``a_k`` in [0, 1] and weights ``w_k`` of Captum's integration rules, on ``like``'s
    device and dtype.

    The same rules and the same points as ``captum.attr.IntegratedGradients``: Gauss-Legendre
    on [0, 1], or left / right / middle / trapezoid Riemann sums (``n_steps >= 2`` for Riemann,
    as Captum requires). Computed in float64, then cast.
    """
    check_choice(method, "method", SUPPORTED_METHODS)
    if method == "gausslegendre":
        check_n_steps(n_steps)
        points, weights = np.polynomial.legendre.leggauss(n_steps)
        nodes, weights = 0.5 * (1 + points), 0.5 * weights
    else:
        check_n_steps(n_steps, minimum=2)
        weights = np.full(n_steps, 1.0 / n_steps)
        rule = method.split("_")[1]
        if rule == "trapezoid":
            weights[0] /= 2
            weights[-1] /= 2
            nodes = np.linspace(0, 1, n_steps)
        elif rule == "left":
            nodes = np.linspace(0, 1 - 1 / n_steps, n_steps)
        elif rule == "middle":
            nodes = np.linspace(1 / (2 * n_steps), 1 - 1 / (2 * n_steps), n_steps)
        else:
            nodes = np.linspace(1 / n_steps, 1, n_steps)
    return (
        torch.as_tensor(nodes, dtype=like.dtype, device=like.device),
        torch.as_tensor(weights, dtype=like.dtype, device=like.device),
    )


#: Input numbers one chunk of path points may hold when ``internal_batch_size`` is not given,
#: counting every posterior sample's copy: ``S x points x numbers per input``. The network's
#: activations grow with the same count, so this bounds them too (``benchmarks/RESULTS.md``,
#: "Path methods: a bounded chunk by default").
PATH_NUMBERS_PER_CHUNK = 2**24


def bounded_internal_batch_size(
    forward: Any, inputs: Sequence[Tensor], internal_batch_size: Optional[int]
) -> Optional[int]:
    """``internal_batch_size`` if given, else as many path points as keep ``S x points x numbers
    per input`` within :data:`PATH_NUMBERS_PER_CHUNK` (``S`` is the forward's ``num_samples``, 1
    for a plain model), and at least one step of the whole batch. The results do not depend on it
    beyond float rounding: chunks only split the same sum."""
    if internal_batch_size is not None:
        return internal_batch_size
    samples = int(getattr(forward, "num_samples", 1) or 1)
    per_point = samples * sum(int(t[0].numel()) for t in inputs)
    return max(int(inputs[0].shape[0]), PATH_NUMBERS_PER_CHUNK // max(per_point, 1))


def step_chunks(n_nodes: int, batch: int, internal_batch_size: Optional[int]) -> Iterator[Tuple[int, int]]:
    """``(start, stop)`` ranges of nodes; each chunk holds at most ``internal_batch_size`` path
    points (``nodes x batch``), and at least one node of the whole batch."""
    check_internal_batch_size(internal_batch_size)
    size = n_nodes if internal_batch_size is None else max(1, internal_batch_size // batch)
    for start in range(0, n_nodes, size):
        yield start, min(start + size, n_nodes)


def integrate_path(
    path: PathFunction,
    gradients: GradientFunction,
    nodes: Tensor,
    weights: Tensor,
    batch: int,
    internal_batch_size: Optional[int] = None,
) -> List[Points]:
    r"""``sum_k w_k grad_m(gamma(a_k)) * gamma'(a_k)`` for every output ``m`` and input.

    Args:
        path: maps a chunk of nodes ``(k,)`` to the points ``gamma(a)`` (one ``(k * N, ...)``
            tensor per input, step-major) and their velocities ``gamma'(a)`` (same shapes), or
            ``None`` for a velocity the caller applies afterwards (e.g. ``x - x'``).
        gradients: maps the points and ``k`` to the gradients of each output at the points;
            a gradient may carry leading dimensions (``(*lead, k * N, ...)``, e.g. classes and
            posterior samples), which are kept.
        nodes, weights: ``(K,)`` quadrature nodes and weights.
        batch: ``N``.
        internal_batch_size: at most this many path points per forward pass.

    Returns:
        One tuple per output, with one ``(*lead, N, ...)`` integral per input.
    """
    totals: Optional[List[List[Tensor]]] = None
    for start, stop in step_chunks(len(nodes), batch, internal_batch_size):
        count = stop - start
        points, velocities = path(nodes[start:stop])
        chunk_weights = weights[start:stop]
        outputs = gradients(points, count)
        sums = [
            [
                weighted_step_sum(g, points[j], None if velocities is None else velocities[j], chunk_weights, batch)
                for j, g in enumerate(per_input)
            ]
            for per_input in outputs
        ]
        totals = sums if totals is None else [[a + b for a, b in zip(old, new)] for old, new in zip(totals, sums)]
    assert totals is not None  # at least one node: check_n_steps
    return [tuple(per_input) for per_input in totals]


def weighted_step_sum(
    gradient: Tensor, point: Tensor, velocity: Optional[Tensor], weights: Tensor, batch: int
) -> Tensor:
    """``sum_k w_k g_k (* v_k)`` of a ``(*lead, k * N, ...)`` gradient at ``(k * N, ...)`` points, keeping ``lead``."""
    lead = gradient.dim() - point.dim()
    count = weights.shape[0]
    steps = gradient.reshape(tuple(gradient.shape[:lead]) + (count, batch) + tuple(point.shape[1:]))
    if velocity is not None:
        steps = steps * velocity.reshape((count, batch) + tuple(point.shape[1:]))
    return (steps * weights.view((count,) + (1,) * (point.dim()))).sum(lead)


def straight_path(inputs: Points, baselines: Points) -> PathFunction:
    """``x' + a (x - x')`` for every input; the velocity ``x - x'`` is left to the caller."""

    def points_at(nodes: Tensor) -> Tuple[Points, None]:
        points = []
        for x, base in zip(inputs, baselines):
            alphas = nodes.view((-1,) + (1,) * x.dim())
            points.append((base.unsqueeze(0) + alphas * (x - base).unsqueeze(0)).reshape((-1,) + tuple(x.shape[1:])))
        return tuple(points), None

    return points_at


def uncertainty_values(
    forward: UncertaintyForward,
    inputs: Points,
    args: Tuple[Any, ...],
    measures: Sequence[str],
    target: TargetType = None,
) -> List[Tensor]:
    """Each measure's ``(N,)`` value: the scalar uncertainty, or with ``target`` the likelihood's
    term of that column: the class term ``U_{g_target}`` of Wang et al.'s Eq. 4 for a classifier,
    the target's own variance for a several-target regressor."""
    if target is None:
        terms = forward.decompose(*inputs, *args)
        return [terms.select(m) for m in measures]
    terms = forward.terms(*inputs, *args)
    return [select_class(terms.select(m), target) for m in measures]


def select_class(per_class: Tensor, target: TargetType) -> Tensor:
    """Column ``target`` of ``(N, C)`` per-class terms (an int, or one class per row)."""
    index = torch.as_tensor(target, device=per_class.device).reshape(-1)
    if isinstance(target, bool) or index.dtype in (torch.bool,) or index.is_floating_point():
        raise TypeError(f"target must be an int or integer classes per input, got {target!r}")
    if index.numel() == 1:
        index = index.expand(per_class.shape[0])
    if index.numel() != per_class.shape[0]:
        raise ValueError(f"target must be one class or one class per input ({per_class.shape[0]}), got {index.numel()}")
    if bool((index < 0).any()) or bool((index >= per_class.shape[1]).any()):
        raise ValueError(f"target must be a class in [0, {per_class.shape[1]}), got {target!r}")
    return per_class.gather(1, index.view(-1, 1)).squeeze(1)


def uncertainty_gradients(
    forward: UncertaintyForward, args: Tuple[Any, ...], measures: Sequence[str], batch: int, target: TargetType = None
) -> GradientFunction:
    """Gradients of every measure (one shared forward) at the path points; per-example ``args``
    and ``target`` repeated over the path's steps."""

    def gradients_at(points: Points, count: int) -> List[Points]:
        points = tuple(p.detach().requires_grad_(True) for p in points)
        with torch.enable_grad():
            values = uncertainty_values(
                forward, points, repeat_batch_args(args, batch, count), measures, repeat_target(target, batch, count)
            )
            return [
                tuple(g.detach() for g in torch.autograd.grad(v.sum(), points, retain_graph=m + 1 < len(values)))
                for m, v in enumerate(values)
            ]

    return gradients_at


def target_gradients(attribution: Any, target: TargetType, args: Tuple[Any, ...], batch: int) -> GradientFunction:
    """Gradients of the ``target``-selected output of ``attribution.forward_func`` (Captum's
    ``gradient_func``), for methods that accept any forward function."""

    def gradients_at(points: Points, count: int) -> List[Points]:
        points = tuple(p.detach().requires_grad_(True) for p in points)
        extra = repeat_batch_args(args, batch, count)
        grads = attribution.gradient_func(
            attribution.forward_func, points, repeat_target(target, batch, count), extra if extra else None
        )
        return [tuple(g.detach() for g in grads)]

    return gradients_at


#: Blur IG's reference setting: ``max_sigma = 50`` for 224-pixel images (Xu et al., 2020).
REFERENCE_MAX_SIGMA = 50.0
REFERENCE_IMAGE_SIZE = 224


def default_max_sigma(height: int, width: int) -> float:
    """Blur IG's default largest blur: ``50 * max(H, W) / 224`` pixels.

    Xu et al. (2020) use ``max_sigma = 50`` on 224-pixel ImageNet images; we keep the same
    blur *relative to the image size* (28 px MNIST -> 6.25, 32 px CIFAR -> 7.14, 8 px -> 1.79).
    """
    return REFERENCE_MAX_SIGMA * max(height, width) / REFERENCE_IMAGE_SIZE


# --------------------------------------------------------------------------- the scale-space path (Blur IG)


def blur_levels(max_sigma: float, n_steps: int, sqrt: bool = False, device: Any = "cpu") -> Tensor:
    """The ``n_steps + 1`` blur levels ``0 = sigma_0 < ... < sigma_T = max_sigma`` (float64).

    Uniform in ``sigma`` by default; with ``sqrt=True`` uniform in the variance
    ``sigma^2`` (``sigma_k = max_sigma * sqrt(k / T)``), denser at small blurs.
    """
    fractions = torch.arange(n_steps + 1, dtype=torch.float64, device=device) / n_steps
    if sqrt:
        fractions = fractions.sqrt()
    return fractions * max_sigma


#: Blur IG's default rule (``BlurIntegratedGradients`` and UA-Backprop's scale-space path): the
#: right Riemann sum had the smallest median completeness error at 16 and 32 steps (tied with the
#: middle rule at 32) on a trained MNIST ensemble, at the same cost as the others, and never
#: spends a node at ``sigma = 0``, where the path's velocity vanishes (``benchmarks/RESULTS.md``,
#: "Blur IG quadrature: delta against n_steps").
BLUR_IG_METHOD = "riemann_right"


def blur_quadrature(
    max_sigma: float, n_steps: int, method: str, sqrt: bool = False, device: Any = "cpu"
) -> Tuple[Tensor, Tensor]:
    """Nodes (blur levels ``sigma``, float64 on ``device``) and weights (positive widths in
    ``sigma``, float64, summing to ``max_sigma``) of Captum's integration rule ``method`` for
    Blur IG's integral over ``sigma`` in ``[0, max_sigma]``; ``n_steps`` nodes, one gradient each.

    * ``"riemann_left"`` / ``"riemann_right"`` / ``"riemann_middle"``: the ``n_steps`` cells
      ``[sigma_k, sigma_{k+1}]`` of :func:`blur_levels` (``sqrt`` spaces them uniformly in
      ``sigma^2``), each weighted by its width ``sigma_{k+1} - sigma_k`` and evaluated at
      ``sigma_k`` (left: Blur IG's original rule), ``sigma_{k+1}`` (right) or the cell's midpoint
      *in sigma* ``(sigma_k + sigma_{k+1}) / 2`` (middle, also with ``sqrt=True``).
    * ``"riemann_trapezoid"``: the ``n_steps`` levels of :func:`blur_levels` with ``n_steps - 1``
      cells, each weighted by half the widths of its neighbouring cells (``n_steps >= 2``). Unlike
      Captum's rule, whose weights sum to ``1 - 1 / n_steps``, these sum to ``max_sigma``.
    * ``"gausslegendre"``: the ``n_steps``-point Gauss-Legendre rule on ``[0, max_sigma]``.
      ``sqrt=True`` raises a ``ValueError``: it spaces the Riemann rules' cells and has no
      meaning for Gauss-Legendre's fixed nodes.
    """
    check_choice(method, "method", SUPPORTED_METHODS)
    if method == "riemann_trapezoid":
        check_n_steps(n_steps, minimum=2)
        levels = blur_levels(max_sigma, n_steps - 1, sqrt, device)
        widths = levels[1:] - levels[:-1]
        weights = torch.zeros_like(levels)
        weights[:-1] += widths / 2
        weights[1:] += widths / 2
        return levels, weights
    check_n_steps(n_steps)
    if method == "gausslegendre":
        if sqrt:
            raise ValueError(
                "sqrt=True spaces the Riemann rules' blur levels uniformly in sigma^2; it does not apply to "
                "method='gausslegendre' (use sqrt=False or a riemann_* method)"
            )
        points, gauss_weights = np.polynomial.legendre.leggauss(n_steps)
        nodes = torch.as_tensor(0.5 * (1 + points) * max_sigma, dtype=torch.float64, device=device)
        weights = torch.as_tensor(0.5 * gauss_weights * max_sigma, dtype=torch.float64, device=device)
        return nodes, weights
    levels = blur_levels(max_sigma, n_steps, sqrt, device)
    widths = levels[1:] - levels[:-1]
    if method == "riemann_left":
        return levels[:-1], widths
    if method == "riemann_right":
        return levels[1:], widths
    return (levels[:-1] + levels[1:]) / 2, widths


def blur_path(inputs: Tuple[Tensor, ...], grad_step: float) -> PathFunction:
    """The scale-space path ``x(sigma)`` (Blur IG's untruncated blur) and its velocity towards the
    input, ``-dx/dsigma``, by a forward difference of step ``grad_step``; the quadrature weights
    are the (positive) sigma widths."""

    def points_at(levels: Tensor) -> Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...]]:
        points, velocities = [], []
        for t in inputs:
            stacked = t.repeat((len(levels),) + (1,) * (t.dim() - 1))  # step-major blocks of N
            level = levels.repeat_interleave(t.shape[0])
            low = gaussian_blur(stacked, level.to(t.dtype), truncate=None)
            high = gaussian_blur(stacked, (level + grad_step).to(t.dtype), truncate=None)
            points.append(low)
            velocities.append(-(high - low) / grad_step)
        return tuple(points), tuple(velocities)

    return points_at
