r"""Blur Integrated Gradients (Xu et al., 2020, "Attribution in Scale and Space").

Also home of :func:`gaussian_blur`, a small differentiable Gaussian blur for ``(N, C, H, W)``
tensors with a per-image ``sigma`` (reused by the blurring-test metric), and of the few
private helpers shared with :mod:`captum_uncertainty.attr.guided_ig` (input formatting,
expansion of ``target`` / ``additional_forward_args`` over path steps).
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Tuple, Union

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor

from captum_uncertainty._blur import separable_blur
from captum_uncertainty.attr._common import additional_args_tuple, check_n_steps

__all__ = ["BlurIntegratedGradients", "gaussian_blur", "default_max_sigma"]

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]
TargetType = Union[None, int, Tuple[int, ...], Tensor, List[Any]]

#: Blur IG's reference setting: ``max_sigma = 50`` for 224-pixel images (Xu et al., 2020).
REFERENCE_MAX_SIGMA = 50.0
REFERENCE_IMAGE_SIZE = 224


# --------------------------------------------------------------------------- Gaussian blur
def _sigma_per_image(sigma: Union[float, Tensor], images: Tensor) -> Tensor:
    n = images.shape[0]
    if isinstance(sigma, Tensor):
        sigma = sigma.detach().to(device=images.device, dtype=images.dtype)
        if sigma.dim() == 0:
            sigma = sigma.expand(n)
        if sigma.shape != (n,):
            raise ValueError(
                f"sigma must be a float or a tensor of shape (N,) = ({n},), got shape {tuple(sigma.shape)}"
            )
    elif isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        sigma = torch.full((n,), float(sigma), dtype=images.dtype, device=images.device)
    else:
        raise TypeError(f"sigma must be a float or a tensor of shape (N,), got {type(sigma).__name__}")
    if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
        raise ValueError("sigma must be finite and >= 0")
    return sigma


def gaussian_blur(images: Tensor, sigma: Union[float, Tensor]) -> Tensor:
    r"""Blur ``(N, C, H, W)`` images with an isotropic Gaussian of standard deviation ``sigma``.

    The blur is separable (a 1-D Gaussian along H, then along W; the same code as
    :func:`captum_uncertainty.metrics.gaussian_blur`, with an untruncated kernel), applied to every channel
    independently; image ``n`` uses ``sigma[n]``. Boundaries use half-sample symmetric
    reflection (``scipy.ndimage`` mode ``"reflect"``: ``c b a | a b c | c b a``). The kernel is
    *not* truncated at a few sigma: it spans the whole axis (offsets ``|k| <= L - 1``,
    renormalised), so the output is a smooth function of ``sigma`` -- a truncation radius
    that jumps with ``sigma`` would put spikes in the finite-difference path derivative of
    :class:`BlurIntegratedGradients`. For ``sigma <= L / 4`` this equals scipy's
    ``gaussian_filter(..., mode="reflect")`` up to the tail mass beyond the axis (< 1e-4).
    ``sigma = 0`` returns the images unchanged (exactly). Differentiable w.r.t. ``images``.

    Args:
        images (Tensor): floating point tensor of shape ``(N, C, H, W)``.
        sigma (float or Tensor): one standard deviation in pixels for all images, or a
            tensor of shape ``(N,)`` with one per image. Must be ``>= 0``.

    Returns:
        Tensor: the blurred images, same shape and dtype as ``images``.

    Examples::

        >>> x = torch.rand(2, 3, 32, 32)
        >>> y = gaussian_blur(x, 2.0)
        >>> z = gaussian_blur(x, torch.tensor([0.0, 4.0]))   # z[0] == x[0]
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating point tensor, got dtype {images.dtype}")
    sigma_n = _sigma_per_image(sigma, images)
    return separable_blur(images, sigma_n, truncate=None)


def default_max_sigma(height: int, width: int) -> float:
    """Blur IG's default largest blur: ``50 * max(H, W) / 224`` pixels.

    Xu et al. (2020) use ``max_sigma = 50`` on 224-pixel ImageNet images; we keep the same
    blur *relative to the image size* (28 px MNIST -> 6.25, 32 px CIFAR -> 7.14, 8 px -> 1.79).
    """
    return REFERENCE_MAX_SIGMA * max(height, width) / REFERENCE_IMAGE_SIZE


# --------------------------------------------------------------------------- shared helpers
def _format_inputs(inputs: Any, name: str = "inputs") -> Tuple[Tuple[Tensor, ...], bool]:
    """Return ``(tuple_of_tensors, was_tuple)``; check a common batch size."""
    is_tuple = isinstance(inputs, tuple)
    tensors = inputs if is_tuple else (inputs,)
    if len(tensors) == 0:
        raise ValueError(f"{name} must be a tensor or a non-empty tuple of tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor or a tuple of tensors, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point tensors, got dtype {t.dtype}")
        if t.dim() < 1:
            raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"all {name} must have the same batch size, got {[t.shape[0] for t in tensors]}")
    return tuple(tensors), is_tuple


def _format_output(values: Tuple[Tensor, ...], is_tuple: bool) -> TensorOrTuple:
    return values if is_tuple else values[0]


def _repeat_args(args: Tuple[Any, ...], repeats: int) -> Tuple[Any, ...]:
    """Tile tensor arguments ``repeats`` times along dim 0 (block ``r`` = copy ``r``)."""
    if repeats == 1:
        return args
    return tuple(
        torch.cat([a] * repeats, dim=0) if isinstance(a, Tensor) and a.dim() > 0 else a for a in args
    )


def _repeat_target(target: TargetType, repeats: int) -> TargetType:
    """Tile a per-example target the same way as :func:`_repeat_args`."""
    if repeats == 1 or target is None or isinstance(target, (int, tuple)):
        return target
    if isinstance(target, Tensor):
        return target if target.numel() == 1 else torch.cat([target] * repeats, dim=0)
    if isinstance(target, list):
        return list(target) * repeats
    raise TypeError(f"target must be None, an int, a tuple, a tensor or a list, got {type(target).__name__}")


def _path_gradients(
    attribution: GradientAttribution,
    points: Tuple[Tensor, ...],
    target: TargetType,
    args: Tuple[Any, ...],
    repeats: int,
) -> Tuple[Tensor, ...]:
    """Gradients of the (target-selected) scalar output at ``repeats`` stacked copies of a batch."""
    points = tuple(p.detach().requires_grad_(True) for p in points)
    extra = _repeat_args(args, repeats)
    grads = attribution.gradient_func(
        attribution.forward_func, points, _repeat_target(target, repeats), extra if extra else None
    )
    return tuple(g.detach() for g in grads)


# --------------------------------------------------------------------------- Blur IG
class BlurIntegratedGradients(GradientAttribution):
    r"""Blur Integrated Gradients (Xu et al., 2020, "Attribution in Scale and Space").

    Integrated gradients along the *scale-space* path from a maximally blurred image to the
    input: ``x(sigma) = gaussian_blur(x, sigma)`` for ``sigma`` going from ``max_sigma`` down
    to 0 (``gaussian_blur`` of this module, an untruncated separable Gaussian). With
    ``sigma_0 = 0 < sigma_1 < ... < sigma_T = max_sigma``, the attribution of feature ``i`` is

    .. math::

        A_i = -\sum_{k=0}^{T-1} (\sigma_{k+1} - \sigma_k)\,
              \frac{x_i(\sigma_k + h) - x_i(\sigma_k)}{h}\,
              \frac{\partial F}{\partial x_i}(x(\sigma_k))

    a Riemann sum of the path integral with the path derivative taken by a forward finite
    difference of step ``h = grad_step`` (the reference implementation's 0.01; a tiny step
    such as 1e-10 would give all-zero differences in float32). No baseline is needed: the
    blurred image plays its role, and information is only ever *removed* along the path.

    Properties: completeness holds *approximately*: ``sum_i A_i ~ F(x) - F(x(max_sigma))``,
    exactly in the limit ``n_steps -> inf``, ``grad_step -> 0`` (measured on a smooth tiny
    CNN in float64: relative error about 0.1% at ``n_steps = 200``; see the tests).
    Implementation invariance holds (only gradients of ``F`` are used); sensitivity holds in
    the path-method sense; attributions are ``gradient x path displacement``, so they are
    global attributions (``multiplies_by_inputs`` is ``True``). Linearity in ``F`` holds.

    Works with any forward function returning one scalar per example (e.g.
    :class:`~captum_uncertainty.forward.UncertaintyForward` with ``target=None``) or a
    classifier with a ``target``.

    Args:
        forward_func (Callable): the model or any function returning ``(N,)`` / ``(N, C)``
            outputs for inputs of shape ``(N, C, H, W)``.
    """

    def __init__(self, forward_func: Callable[..., Tensor]) -> None:
        GradientAttribution.__init__(self, forward_func)

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return True

    @staticmethod
    def sigma_grid(max_sigma: float, n_steps: int, sqrt: bool = False) -> Tensor:
        """The ``n_steps + 1`` blur levels ``0 = sigma_0 < ... < sigma_T = max_sigma`` (float64).

        Uniform in ``sigma`` by default; with ``sqrt=True`` uniform in the variance
        ``sigma^2`` (``sigma_k = max_sigma * sqrt(k / T)``), denser at small blurs.
        """
        fractions = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
        if sqrt:
            fractions = fractions.sqrt()
        return fractions * max_sigma

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        max_sigma: Optional[float] = None,
        n_steps: int = 50,
        grad_step: float = 0.01,
        sqrt: bool = False,
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
    ) -> Union[TensorOrTuple, Tuple[TensorOrTuple, Tensor]]:
        r"""
        Args:
            inputs (Tensor or tuple of Tensor): images of shape ``(N, C, H, W)`` (a tuple
                of such tensors is blurred tensor by tensor with the same ``sigma``).
            target (int, tuple, Tensor or list, optional): output index per example, as in
                Captum. ``None`` for forward functions returning one scalar per example
                (e.g. an :class:`~captum_uncertainty.forward.UncertaintyForward`).
                Default: ``None``.
            additional_forward_args (Any, optional): extra arguments to ``forward_func``
                after the inputs; tensors with a batch dimension are tiled over path
                steps. Default: ``None``.
            max_sigma (float, optional): blur of the path's starting point, in pixels.
                Default: ``None`` meaning ``default_max_sigma`` of the first input,
                ``50 * max(H, W) / 224`` (Xu et al.'s 50 for 224-pixel images, scaled).
            n_steps (int, optional): number of Riemann steps. Default: 50.
            grad_step (float, optional): finite-difference step in ``sigma`` for the path
                derivative. Default: 0.01.
            sqrt (bool, optional): space the blur levels uniformly in ``sigma^2`` rather
                than in ``sigma``. Default: ``False``.
            internal_batch_size (int, optional): at most this many path points per forward
                pass (at least one step of all ``N`` inputs is always evaluated together).
                Default: ``None`` (all ``n_steps * N`` points at once).
            return_convergence_delta (bool, optional): also return
                ``sum(attributions) - (F(x) - F(x(max_sigma)))`` per example.
                Default: ``False``.

        Returns:
            *Tensor* or *tuple[Tensor, ...]* of **attributions**, same shape(s) as ``inputs``;
            with ``return_convergence_delta=True`` a pair ``(attributions, delta)`` where
            ``delta`` has shape ``(N,)``.

        Examples::

            >>> uf = UncertaintyForward(ensemble, measure="epistemic")
            >>> blur_ig = BlurIntegratedGradients(uf)
            >>> attr, delta = blur_ig.attribute(x, n_steps=100, return_convergence_delta=True)
        """
        tensors, is_tuple = _format_inputs(inputs)
        for t in tensors:
            if t.dim() != 4:
                raise ValueError(
                    "inputs must be images of shape (N, C, H, W) for BlurIntegratedGradients, "
                    f"got shape {tuple(t.shape)} (GuidedIntegratedGradients accepts flat features)"
                )
        n_steps = check_n_steps(n_steps)
        if not isinstance(grad_step, (int, float)) or isinstance(grad_step, bool) or not grad_step > 0:
            raise ValueError(f"grad_step must be a float > 0, got {grad_step!r}")
        if max_sigma is None:
            max_sigma = default_max_sigma(tensors[0].shape[2], tensors[0].shape[3])
        if not isinstance(max_sigma, (int, float)) or isinstance(max_sigma, bool) or not (
            max_sigma > 0 and math.isfinite(max_sigma)
        ):
            raise ValueError(f"max_sigma must be a finite float > 0, got {max_sigma!r}")
        if internal_batch_size is not None and (
            isinstance(internal_batch_size, bool) or not isinstance(internal_batch_size, int) or internal_batch_size < 1
        ):
            raise ValueError(f"internal_batch_size must be None or an integer >= 1, got {internal_batch_size!r}")

        n = tensors[0].shape[0]
        args = additional_args_tuple(additional_forward_args)
        sigmas = self.sigma_grid(float(max_sigma), n_steps, sqrt)
        widths = sigmas[1:] - sigmas[:-1]
        steps_per_batch = n_steps if internal_batch_size is None else max(1, internal_batch_size // max(n, 1))

        totals = [torch.zeros_like(t) for t in tensors]
        for start in range(0, n_steps, steps_per_batch):
            stop = min(n_steps, start + steps_per_batch)
            repeats = stop - start
            level = sigmas[start:stop].repeat_interleave(n)  # step-major blocks of N
            width = widths[start:stop].repeat_interleave(n)
            points, derivatives = [], []
            for t in tensors:
                stacked = torch.cat([t.detach()] * repeats, dim=0)
                lo = gaussian_blur(stacked, level.to(t.dtype))
                hi = gaussian_blur(stacked, (level + grad_step).to(t.dtype))
                points.append(lo)
                derivatives.append((hi - lo) / grad_step)
            grads = _path_gradients(self, tuple(points), target, args, repeats)
            for total, grad, deriv in zip(totals, grads, derivatives):
                scale = -width.to(grad.dtype).view(-1, *([1] * (grad.dim() - 1)))
                contribution = scale * deriv * grad
                total += contribution.view(repeats, n, *grad.shape[1:]).sum(0)

        attributions = _format_output(tuple(totals), is_tuple)
        if not return_convergence_delta:
            return attributions
        start_point = tuple(gaussian_blur(t.detach(), float(max_sigma)) for t in tensors)
        delta = self.compute_convergence_delta(
            attributions,
            _format_output(start_point, is_tuple),
            _format_output(tuple(t.detach() for t in tensors), is_tuple),
            target=target,
            additional_forward_args=additional_forward_args,
        )
        return attributions, delta
