"""The covariance of explanations over posterior samples: epistemic variance attributed (CovIG / CovGI)."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple, Type

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor

from captum_uncertainty._validation import check_choice
from captum_uncertainty.attr._utils.checks import check_uncertainty_forward
from captum_uncertainty.attr._utils.formatting import (
    TargetType,
    TensorOrTuple,
    additional_args_tuple,
    format_inputs,
    format_output,
)
from captum_uncertainty.attr._utils.samples import (
    bounded_attribute_kwargs,
    default_target,
    format_target,
    sample_explained_module,
)
from captum_uncertainty.forward import UncertaintyForward

__all__ = ["SUPPORTED_MODES", "CovarianceAttribution"]

#: ``"marginal"``: the covariance of a feature's explanation with the summed explanation (sums to
#: the variance); ``"diagonal"``: the variance of a feature's explanation.
SUPPORTED_MODES = ("marginal", "diagonal")


class CovarianceAttribution(Attribution):
    r"""Epistemic variance attributed by the covariance of explanations over posterior samples.

    Bley et al. (Pattern Recognition, 2025; "CovIG" with Integrated Gradients, "CovGI" with
    Gradient x Input): every posterior sample ``s`` (ensemble member, MC-dropout mask, weight
    sample) is explained on its own by a Captum attribution class, giving ``R_s``; since the
    epistemic variance is the variance of the samples' predictions, and a complete explanation
    sums to its prediction (minus the baseline's), the variance is the sum of the covariances
    of the features' explanations. With ``D_s = R_s - mean_t R_t`` (population statistics,
    divided by ``S``) and ``j`` running over all features of an input (of all tensors when the
    inputs are a tuple):

    * ``mode="marginal"`` (default): feature ``i`` gets ``mean_s D_{s,i} sum_j D_{s,j}``, its
      covariance with the summed explanation. The map sums to ``Var_s[sum_j R_{s,j}]``; for a
      complete class (``IntegratedGradients``) that is ``Var_s[mu_s(x) - mu_s(x0)]``, the
      epistemic variance of the difference to the baseline ``x0`` (the epistemic variance at
      ``x`` itself when the samples agree at ``x0``). Marginal attributions can be *negative*:
      a feature whose explanation varies against the others' lowers the variance.
    * ``mode="diagonal"``: ``Var_s[R_{s,i}] = mean_s D_{s,i}^2``, non-negative; it leaves out the
      cross-covariances, so it does not sum to the variance.

    What each sample explains is read from the forward's likelihood: for a regressor
    (:class:`~captum_uncertainty.Gaussian`) its predicted mean ``mu_s`` of the explained target,
    explained with Captum's ``target=None``; a given ``target`` selects a column of the raw
    member outputs instead (the means, then the noise heads: ``1`` is a one-target member's
    head). For a classifier, the member's score of ``target`` (its logit; its probability under
    ``Categorical(outputs="probabilities")``; ``[0, z]`` for :class:`~captum_uncertainty.Bernoulli`
    members), by default the class predicted by the posterior *mean*
    (:meth:`UncertaintyForward.predicted_class <captum_uncertainty.UncertaintyForward.predicted_class>`),
    so the map explains the variance over the samples of that class's logit.

    Properties: the marginal map sums to ``Var_s`` of the summed explanations; both
    maps are symmetric in the samples (permuting them changes nothing) and exactly zero for
    identical samples, hence for ``S = 1``; the diagonal map is non-negative. The forward's
    ``measure`` is not read: this explains the variance of the explained outputs.

    Args:
        forward_func (UncertaintyForward): wraps the posterior.
        attribution_class (type): a Captum attribution class taking a forward function as its
            first argument (``IntegratedGradients``, ``InputXGradient``, ``Saliency``,
            ``KernelShap``...).
        **init_kwargs: further arguments of ``attribution_class``.

    Examples::

        >>> from captum.attr import IntegratedGradients
        >>> uf = UncertaintyForward(regressors, "epistemic", likelihood=Gaussian(variance="log_variance"))
        >>> cov_ig = CovarianceAttribution(uf, IntegratedGradients)
        >>> marginal = cov_ig.attribute(x, baselines=x * 0, n_steps=64)
        >>> marginal.flatten(1).sum(1)            # Var_s[mu_s(x) - mu_s(0)] per input
        >>> diagonal = cov_ig.attribute(x, mode="diagonal", baselines=x * 0)
        >>> logits = CovarianceAttribution(UncertaintyForward(classifiers), IntegratedGradients)
        >>> logits.attribute(images, target=3)    # the covariance of class 3's logit explanations
    """

    def __init__(
        self, forward_func: UncertaintyForward, attribution_class: Type[Attribution], **init_kwargs: Any
    ) -> None:
        super().__init__(check_uncertainty_forward(forward_func))
        if not (isinstance(attribution_class, type) and issubclass(attribution_class, Attribution)):
            raise TypeError(f"attribution_class must be a Captum Attribution class, got {attribution_class!r}")
        self.attribution_class = attribution_class
        self.init_kwargs = init_kwargs

    @log_usage()
    def attribute(
        self, inputs: TensorOrTuple, mode: str = "marginal", target: TargetType = None, **attribute_kwargs: Any
    ) -> TensorOrTuple:
        r"""The covariance (``"marginal"``) or variance (``"diagonal"``) of the samples' explanations.

        Args:
            inputs (Tensor or tuple of Tensor): inputs ``(N, ...)``; a tuple when the models take
                several inputs (Captum's convention).
            mode (str): ``"marginal"`` (default; sums to the variance) or ``"diagonal"``.
            target (int, list or Tensor, optional): for a classifier the class whose logit is
                explained (one, or one per input); default the posterior mean's predicted class.
                For a Gaussian forward a column of the raw member outputs; default ``None``, each
                sample's predicted mean.
            **attribute_kwargs: arguments of the Captum class's ``attribute`` (``baselines``,
                ``n_steps``, ``additional_forward_args``, ``n_samples``...). A class that takes
                ``internal_batch_size`` (IntegratedGradients) gets the bound of the package's path
                methods when none is given (as many path points as keep ``points x numbers per
                input`` within ``2**24``), so that large inputs fit in memory; pass one to change it.

        Returns:
            Tensor or tuple of Tensor: the map(s), of the shape(s) and structure of the Captum
            class's explanations (for input attributions, those of ``inputs``).
        """
        mode = check_choice(mode, "mode", SUPPORTED_MODES)
        if attribute_kwargs.get("return_convergence_delta"):
            raise ValueError(
                "return_convergence_delta=True is not supported: the covariance of explanations has no convergence "
                "delta (the marginal map's sum is Var_s of the summed explanations)"
            )
        forward: UncertaintyForward = self.forward_func
        tensors, is_tuple = format_inputs(inputs, floating=False)
        batch, device = tensors[0].shape[0], tensors[0].device
        captum_target: Optional[Tensor] = None
        if target is not None:
            captum_target = format_target(target, batch, device)
        elif forward.likelihood.is_classifier:
            args = additional_args_tuple(attribute_kwargs.get("additional_forward_args"))
            captum_target = default_target(forward, tensors, args)
        explained = tensors if is_tuple else tensors[0]
        explanations: List[Tuple[Tensor, ...]] = []
        returns_tuple = False
        for s in range(forward.posterior.num_samples):
            method = self.attribution_class(sample_explained_module(forward, s, captum_target), **self.init_kwargs)
            result = method.attribute(
                explained, target=captum_target, **bounded_attribute_kwargs(method, tensors, attribute_kwargs)
            )
            returns_tuple = isinstance(result, tuple)
            explanations.append(_explanation_tensors(result, batch))
        return format_output(_covariance_maps(explanations, mode), returns_tuple)


def _explanation_tensors(result: Any, batch: int) -> Tuple[Tensor, ...]:
    """One sample's explanation as a tuple of detached ``(N, ...)`` tensors."""
    parts = result if isinstance(result, tuple) else (result,)
    for part in parts:
        if not isinstance(part, Tensor) or part.dim() == 0 or part.shape[0] != batch:
            shape = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
            raise ValueError(
                f"attribution_class must return explanations of shape (N, ...) with N = {batch}, got {shape}"
            )
    return tuple(part.detach() for part in parts)


def _covariance_maps(explanations: List[Tuple[Tensor, ...]], mode: str) -> List[Tensor]:
    """The marginal covariance or the variance maps of per-sample explanations (population)."""
    deviations = []
    for parts in zip(*explanations):
        stacked = torch.stack(parts)  # (S, N, ...)
        shifted = stacked - stacked[0]  # exact zeros when the samples agree
        deviations.append(shifted - shifted.mean(0))
    if mode == "diagonal":
        return [d.square().mean(0) for d in deviations]
    num_samples, batch = deviations[0].shape[:2]
    totals = torch.stack([d.reshape(num_samples, batch, -1).sum(2) for d in deviations]).sum(0)  # (S, N)
    return [(d * totals.reshape(totals.shape + (1,) * (d.dim() - 2))).mean(0) for d in deviations]
