"""FullGrad (Srinivas & Fleuret, 2019) on any scalar target, uncertainty included."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_uncertainty.attr._utils.checks import check_image_inputs
from captum_uncertainty.attr._utils.formatting import additional_args_tuple
from captum_uncertainty.attr._utils.gradients import captured_layer_outputs, check_layers_ran, fullgrad_saliency
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.posterior import Posterior

__all__ = ["FullGrad", "FullGradTerms"]


class FullGradTerms(NamedTuple):
    """The raw FullGrad decomposition of a scalar output.

    ``input_term`` is ``df/dx * x`` (inputs' shape); ``bias_terms`` holds one tensor
    ``df/dh_l * b_l`` per biased layer call (shaped like the layer's output, rows = examples, or
    samples x examples for a posterior run as one batch). For a piecewise-linear network
    (ReLU, max-pooling, eval-mode BatchNorm) ``input_term.sum() + sum(b.sum() for b in
    bias_terms)`` equals the output exactly.
    """

    input_term: Tensor
    bias_terms: List[Tensor]

    def total(self) -> Tensor:
        """Sum of all raw terms per example, shape ``(N,)``."""
        batch = self.input_term.shape[0]
        total = self.input_term.flatten(1).sum(1)
        for term in self.bias_terms:  # rows are N, or S x N sample-major
            total = total + term.reshape(-1, batch, *term.shape[1:]).flatten(2).sum((0, 2))
        return total


def _modules_of(forward_func: Callable[..., Tensor]) -> Tuple[List[nn.Module], Optional[Posterior]]:
    """The user's modules whose layer biases FullGrad needs, and the posterior (if any)."""
    if isinstance(forward_func, UncertaintyForward):
        return forward_func.posterior.sample_modules(), forward_func.posterior
    if isinstance(forward_func, nn.Module):
        return [forward_func], None
    raise TypeError(
        f"forward_func must be an nn.Module or an UncertaintyForward (FullGrad hooks its layers), "
        f"got {type(forward_func).__name__}"
    )


def _selected_output(output: Tensor, target: Any) -> Tensor:
    """The scalar per example: the output itself when it is ``(N,)``, else its ``target`` column."""
    if output.dim() == 1:
        if target is not None:
            raise ValueError("target must be None for a forward returning one scalar per example")
        return output
    if target is None:
        raise ValueError(f"target is required for a forward returning shape {tuple(output.shape)}")
    index = torch.as_tensor(target, device=output.device).reshape(-1)
    index = index.expand(output.shape[0]) if index.numel() == 1 else index
    return output.gather(1, index.view(-1, 1)).squeeze(1)


class FullGrad(GradientAttribution):
    r"""FullGrad saliency (Srinivas & Fleuret, 2019) of any scalar target.

    FullGrad splits a network's output into an input-gradient term ``df/dx * x`` and one
    bias-gradient term ``df/db_l * b_l`` per biased layer (convolutions, linear layers, and
    BatchNorm's implicit bias ``beta - mean * gamma / sqrt(var + eps)``); for piecewise-linear
    networks the raw terms sum to the output exactly (*completeness*, see :meth:`raw_terms`). The
    saliency map post-processes each spatial term with psi = absolute value then per-example
    min-max normalisation, sums it over channels, resizes it bilinearly to the input and adds
    the maps (linear-layer terms have no location and are left out of the map, as in the
    reference implementation). Applied to an :class:`~captum_uncertainty.UncertaintyForward`, the
    target is the uncertainty itself and the bias terms come from every posterior sample.

    Properties: the raw terms are *complete* for piecewise-linear networks (ReLU, max-pooling,
    eval-mode BatchNorm: input term plus all bias terms, linear layers included, sum to the
    output); not for entropy, which is not piecewise linear. The map is non-negative
    (*positivity*) but, being min-max normalised, not complete.

    A plain model runs as it is (call ``model.eval()`` first: a BatchNorm layer in training mode
    has no fixed bias and is left out); a posterior runs its samples in eval mode. Hooks are
    removed and the model's flags are untouched after every call, also when it raises.

    Args:
        forward_func (nn.Module or UncertaintyForward): a model (with ``target``) or an
            uncertainty forward (``target=None``).

    Examples::

        >>> fullgrad = FullGrad(UncertaintyForward(models, measure="epistemic"))
        >>> saliency = fullgrad.attribute(x)                # (N, 1, H, W)
        >>> terms = FullGrad(model).raw_terms(x, target=3)  # terms.total() == model(x)[:, 3]
    """

    def __init__(self, forward_func: Callable[..., Tensor]) -> None:
        _modules_of(forward_func)
        super().__init__(forward_func)

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return False

    def raw_terms(
        self, inputs: Tensor, target: Any = None, additional_forward_args: Any = None, spatial_only: bool = False
    ) -> FullGradTerms:
        """The un-normalised input and bias terms of the selected output (see
        :class:`~captum_uncertainty.attr.fullgrad.FullGradTerms`)."""
        modules, posterior = _modules_of(self.forward_func)
        point = inputs.detach().clone().requires_grad_(True)
        hookable = posterior.hookable() if posterior is not None else nullcontext()
        with torch.enable_grad(), hookable, captured_layer_outputs(modules, posterior, spatial_only) as records:
            output = _selected_output(self.forward_func(point, *additional_args_tuple(additional_forward_args)), target)
            check_layers_ran(records)
            outputs = [record.output for record in records]
            gradients = torch.autograd.grad(output.sum(), [point] + outputs, allow_unused=True)
        bias_terms = [
            record.bias_term(gradient if gradient is not None else torch.zeros_like(record.output))
            for record, gradient in zip(records, gradients[1:])
        ]
        return FullGradTerms(gradients[0] * inputs.detach(), [term.detach() for term in bias_terms])

    @log_usage()
    def attribute(self, inputs: Tensor, target: Any = None, additional_forward_args: Any = None) -> Tensor:
        r"""The FullGrad saliency map.

        Args:
            inputs (Tensor): images ``(N, C, H, W)``.
            target (int, list or Tensor, optional): output column for a model returning
                ``(N, classes)``; ``None`` for an uncertainty forward. Default: ``None``.
            additional_forward_args (Any, optional): extra forward arguments.

        Returns:
            Tensor: saliency maps ``(N, 1, H, W)``, non-negative.
        """
        check_image_inputs(inputs, "FullGrad")
        terms = self.raw_terms(inputs, target, additional_forward_args, spatial_only=True)
        batch = inputs.shape[0]
        spatial = [t.reshape(-1, batch, *t.shape[1:]) for t in terms.bias_terms if t.dim() == 4]
        per_sample = [group[s] for group in spatial for s in range(group.shape[0])]
        return fullgrad_saliency(terms.input_term, per_sample, (inputs.shape[2], inputs.shape[3]))
