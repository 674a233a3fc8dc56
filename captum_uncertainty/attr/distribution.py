"""Explanation distributions over posterior samples (arXiv 2403.17224)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Type

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_uncertainty._validation import check_non_negative_number
from captum_uncertainty.attr._utils.checks import check_uncertainty_forward
from captum_uncertainty.forward import UncertaintyForward

__all__ = ["ExplanationDistribution", "DistributionResult"]


class DistributionResult(NamedTuple):
    """Per-sample explanations ``samples`` ``(S, N, ...)``, their ``mean``, ``std`` (population,
    i.e. divided by S), coefficient of variation ``cv`` and the explained ``target`` ``(N,)``."""

    samples: Tensor
    mean: Tensor
    std: Tensor
    cv: Tensor
    target: Tensor


def _coefficient_of_variation(mean: Tensor, std: Tensor, eps: float) -> Tensor:
    """``std / |mean|`` where ``|mean| > eps * max|mean|`` of the same example, else 0.

    Near-zero means make the ratio explode on pixels nobody attends to; those pixels get 0
    (no evidence of variation relative to a signal), documented and tested.
    """
    scale = mean.abs().flatten(1).max(1).values.view((-1,) + (1,) * (mean.dim() - 1))
    safe = mean.abs() > eps * scale
    return torch.where(safe, std / mean.abs().clamp_min(torch.finfo(mean.dtype).tiny), torch.zeros_like(std))


class ExplanationDistribution:
    r"""The distribution of a Captum explanation over posterior samples (arXiv 2403.17224).

    Each posterior sample ``s`` (ensemble member, MC-dropout mask, weight sample) is explained
    on its own: the Captum attribution class is built on
    ``posterior.sample_module(s)``, which returns that sample's raw outputs (logits, or
    probabilities if the forward declares them), and attributes the score of ``target``: by
    default the class predicted by the posterior *mean*, so that all samples explain the same
    class. MC dropout uses the same frozen masks as the forward. The result holds the per-sample
    maps and their mean, standard deviation (population, over S) and coefficient of variation
    ``std / |mean|`` (0 where ``|mean| <= cv_eps * max |mean|`` of the example).

    Args:
        forward_func (UncertaintyForward): wraps the posterior.
        attribution_class (type): a Captum attribution class taking a forward function as its
            first argument (``Saliency``, ``IntegratedGradients``, ``GuidedBackprop``, ``Lime``...).
        cv_eps (float): relative guard of the coefficient of variation. Default: 1e-3.
        **init_kwargs: further arguments of ``attribution_class``.

    Examples::

        >>> dist = ExplanationDistribution(uf, IntegratedGradients)
        >>> result = dist.attribute(x, n_steps=32)
        >>> result.mean.shape, result.std.shape, result.cv.shape      # all x-shaped
    """

    def __init__(
        self,
        forward_func: UncertaintyForward,
        attribution_class: Type[Attribution],
        cv_eps: float = 1e-3,
        **init_kwargs: Any,
    ) -> None:
        check_uncertainty_forward(forward_func)
        if not (isinstance(attribution_class, type) and issubclass(attribution_class, Attribution)):
            raise TypeError(f"attribution_class must be a Captum Attribution class, got {attribution_class!r}")
        check_non_negative_number(cv_eps, "cv_eps")
        self.forward_func = forward_func
        self.attribution_class = attribution_class
        self.cv_eps = cv_eps
        self.init_kwargs = init_kwargs

    @log_usage()
    def attribute(self, inputs: Tensor, target: Optional[Any] = None, **attribute_kwargs: Any) -> DistributionResult:
        r"""Explain every posterior sample and summarise the explanations.

        Args:
            inputs (Tensor): inputs ``(N, ...)``.
            target (int or Tensor, optional): class per input; default the posterior mean's
                predicted class.
            **attribute_kwargs: arguments of the Captum class's ``attribute`` (``n_steps``,
                ``baselines``, ``n_samples``...).

        Returns:
            DistributionResult: ``samples`` ``(S, N, ...)``, ``mean``, ``std``, ``cv``, ``target``.
        """
        posterior = self.forward_func.posterior
        if target is None:
            with torch.no_grad():
                target = self.forward_func.predicted_class(inputs)
        target = torch.as_tensor(target, device=inputs.device).reshape(-1).expand(inputs.shape[0])
        maps = []
        for s in range(posterior.num_samples):
            method = self.attribution_class(_class_outputs_of(self.forward_func, s), **self.init_kwargs)
            maps.append(method.attribute(inputs, target=target, **attribute_kwargs).detach())
        samples = torch.stack(maps)
        mean = samples.mean(0)
        std = samples.std(0, unbiased=False)
        return DistributionResult(samples, mean, std, _coefficient_of_variation(mean, std, self.cv_eps), target)


class _SampleClasses(nn.Module):
    """Sample ``s``'s class outputs ``(N, C)`` as the forward sees them (a binary member's one
    logit becomes the two classes ``[0, z]``)."""

    def __init__(self, forward: UncertaintyForward, sample: int) -> None:
        super().__init__()
        self.forward_func = forward
        self.member = forward.posterior.sample_module(sample)

    def forward(self, *inputs: Any) -> Tensor:
        outputs = self.member(*inputs)
        if outputs.dim() == 1:
            outputs = outputs.unsqueeze(-1)
        return self.forward_func.class_outputs(outputs.unsqueeze(0))[0]


def _class_outputs_of(forward: UncertaintyForward, sample: int) -> nn.Module:
    """The module Captum explains for sample ``sample``: the member itself, or for binary
    members the two-class wrapper."""
    return _SampleClasses(forward, sample) if forward.binary else forward.posterior.sample_module(sample)
