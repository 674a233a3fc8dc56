"""Explanation distributions over posterior samples (arXiv 2403.17224)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Type

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor

from captum_uncertainty._validation import check_non_negative_number
from captum_uncertainty.attr._utils.checks import check_uncertainty_forward
from captum_uncertainty.attr._utils.formatting import additional_args_tuple
from captum_uncertainty.attr._utils.samples import (
    bounded_attribute_kwargs,
    default_target,
    format_target,
    sample_explained_module,
)
from captum_uncertainty.forward import UncertaintyForward

__all__ = ["ExplanationDistribution", "DistributionResult"]


class DistributionResult(NamedTuple):
    """Per-sample explanations ``samples`` ``(S, N, ...)``, their ``mean``, ``std`` (population,
    i.e. divided by S), coefficient of variation ``cv`` and the explained ``target``, an ``(N,)``
    int64 tensor: the class of each input (by default the posterior mean's predicted class), or
    for a Gaussian forward the output column, by default zeros (column 0, the predicted mean,
    which Captum explained with ``target=None``)."""

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
    on its own. For a classifier the Captum attribution class is built on
    ``posterior.sample_module(s)``, which returns that sample's raw outputs as the forward's
    likelihood reads them (logits, or probabilities if declared; a
    :class:`~captum_uncertainty.Bernoulli` member's logit ``z`` becomes the two classes
    ``[0, z]``), and attributes the score of ``target``: by default the class predicted
    by the posterior *mean*, so that all samples explain the same class. For a regressor
    (:class:`~captum_uncertainty.Gaussian`) each sample's predicted *mean* ``mu_s`` is explained, with
    Captum's ``target=None``, so the mean, std and cv are over the samples' explanations of
    their means (arXiv 2403.17224, Sec. 3); a ``target`` given in Captum's sense selects a
    column of the raw member outputs instead (the means, then the noise heads: for one target
    ``0`` the mean, ``1`` the head as the member returns it). MC dropout uses the same frozen
    masks as the forward. The result holds the per-sample maps and their mean, standard
    deviation (population, over S) and coefficient of variation ``std / |mean|`` (0 where
    ``|mean| <= cv_eps * max |mean|`` of the example).

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
        >>> regression = UncertaintyForward(regressors, "epistemic", likelihood=Gaussian(variance="log_variance"))
        >>> means = ExplanationDistribution(regression, IntegratedGradients).attribute(x)
        >>> heads = ExplanationDistribution(regression, IntegratedGradients).attribute(x, target=1)
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
            target (int, list or Tensor, optional): class per input (one is shared by all);
                default the posterior mean's predicted class. For a Gaussian forward, a column of
                the raw member outputs (``0`` the mean, ``1`` the variance head); default
                ``None``, each sample's predicted mean.
            **attribute_kwargs: arguments of the Captum class's ``attribute`` (``n_steps``,
                ``baselines``, ``n_samples``...). A class that takes ``internal_batch_size``
                (IntegratedGradients) gets the bound of the package's path methods when none is
                given (as many path points as keep ``points x numbers per input`` within
                ``2**24``), so that large inputs fit in memory; pass one to change it.

        Returns:
            DistributionResult: ``samples`` ``(S, N, ...)``, ``mean``, ``std``, ``cv``, and
            ``target`` ``(N,)`` int64 (for a Gaussian forward's default, zeros: column 0, the mean).
        """
        forward = self.forward_func
        batch = inputs.shape[0]
        if target is None:
            explained = default_target(
                forward, (inputs,), additional_args_tuple(attribute_kwargs.get("additional_forward_args"))
            )
            captum_target: Optional[Tensor] = explained if forward.likelihood.is_classifier else None
        else:
            explained = captum_target = format_target(target, batch, inputs.device)
        maps = []
        for s in range(forward.posterior.num_samples):
            module = sample_explained_module(forward, s, captum_target)
            method = self.attribution_class(module, **self.init_kwargs)
            options = bounded_attribute_kwargs(method, (inputs,), attribute_kwargs)
            maps.append(method.attribute(inputs, target=captum_target, **options).detach())
        samples = torch.stack(maps)
        mean = samples.mean(0)
        std = samples.std(0, unbiased=False)
        return DistributionResult(samples, mean, std, _coefficient_of_variation(mean, std, self.cv_eps), explained)
