"""One posterior sample as the module a Captum attribution class explains, and the explained target.

Shared by the methods that explain every posterior sample on its own (the explanation
distribution, the covariance of explanations). What a sample explains is the likelihood's
business: a classifier's sample through its class scores (a Bernoulli member's one score
becomes the two classes), a regressor's (:class:`~captum_uncertainty.Gaussian`) through its
predicted mean ``mu_s`` of the explained target, or, when a target column is asked for, through
its raw output columns.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty.attr._utils.path import bounded_internal_batch_size
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.likelihoods import Gaussian

__all__ = ["bounded_attribute_kwargs", "default_target", "format_target", "sample_explained_module"]


def _highest_column(target: Any) -> int:
    """The largest column a Captum target (an int, a list of ints or an integer tensor) selects."""
    if isinstance(target, Tensor):
        return int(target.max())
    if isinstance(target, (list, tuple)):
        return max(_highest_column(item) for item in target)
    return int(target)


class _SampleExplained(nn.Module):
    """Sample ``s``'s output as its likelihood reads it, ``(1, N, K)`` before :meth:`explained`."""

    def __init__(self, forward: UncertaintyForward, sample: int, target: Any = None) -> None:
        super().__init__()
        self.posterior = forward.posterior
        self.likelihood = forward.likelihood
        self.member = forward.posterior.sample_module(sample)
        self.highest = None if target is None else _highest_column(target)

    def forward(self, *inputs: Any) -> Tensor:
        with self.posterior.reading(self.likelihood.read):
            outputs = self.likelihood.read(self.member(*inputs))
        if outputs.dim() == 1:
            outputs = outputs.unsqueeze(-1)
        return self.explained(outputs.unsqueeze(0))[0]

    def explained(self, outputs: Tensor) -> Tensor:
        likelihood = self.likelihood
        if likelihood.is_classifier:
            return likelihood.class_scores(outputs)  # type: ignore[attr-defined]
        assert isinstance(likelihood, Gaussian)
        if self.highest is None:
            return likelihood.explained_means(outputs)
        if self.highest >= outputs.shape[-1]:
            layout = "the means first, then the noise heads" if likelihood.has_head else "the means only"
            raise ValueError(
                f"target selects column {self.highest} of the Gaussian members' outputs, which have "
                f"{outputs.shape[-1]} ({layout}, as {likelihood!r} declares); pass target=None to explain the means"
            )
        return outputs


def sample_explained_module(forward: UncertaintyForward, sample: int, target: Optional[Any] = None) -> nn.Module:
    """The module a Captum attribution class explains for posterior sample ``sample``.

    Args:
        forward (UncertaintyForward): wraps the posterior.
        sample (int): the sample's index in ``[0, S)``.
        target (optional): the target that will be passed to Captum; it only matters for a
            Gaussian forward, where it selects the raw output columns (a column beyond them
            raises ``ValueError`` when the module runs).

    Returns:
        nn.Module: for a classifier, the sample's class scores ``(N, C)`` as the likelihood
        reads them (a Hugging Face output's ``.logits``; a Bernoulli member's one logit ``z``
        as the two classes ``[0, z]``, a probability ``p`` as ``[1 - p, p]``); for a Gaussian
        forward and ``target=None``, the sample's predicted mean ``mu_s`` ``(N,)`` of the
        explained target (explained with Captum's ``target=None``); for a Gaussian forward with a
        ``target``, the sample's raw output columns ``(N, W)`` (the means, then the noise heads),
        so that ``target=1`` explains the noise head of a one-target member.

    Examples::

        >>> module = sample_explained_module(uf, 0)           # member 0's mean, (N,)
        >>> IntegratedGradients(module).attribute(x, baselines=x * 0)
    """
    return _SampleExplained(forward, sample, target)


def default_target(
    forward: UncertaintyForward, inputs: Tuple[Any, ...], additional_forward_args: Tuple[Any, ...] = ()
) -> Tensor:
    """The ``(N,)`` int64 target every sample explains by default.

    Args:
        forward (UncertaintyForward): wraps the posterior.
        inputs (tuple): the inputs ``(N, ...)``, one entry per model input.
        additional_forward_args (tuple): further arguments of the models.

    Returns:
        Tensor: for a classifier the class predicted by the posterior *mean* (so that all samples
        explain the same class); for a Gaussian forward zeros (explained with Captum's
        ``target=None``: each sample's predicted mean). On the inputs' device.
    """
    first = inputs[0]
    if not forward.likelihood.is_classifier:
        return torch.zeros(first.shape[0], dtype=torch.int64, device=first.device)
    with torch.no_grad():
        return forward.predicted_class(*inputs, *additional_forward_args)


def format_target(target: Any, batch: int, device: Any, name: str = "target") -> Tensor:
    """A target given as an int, a list of ints or an integer tensor, as an ``(N,)`` int64 tensor
    (one value is shared by the ``N = batch`` inputs), or a clear error naming ``name``."""
    if isinstance(target, bool) or isinstance(target, float):
        raise TypeError(f"{name} must be an int, a list of ints or an integer tensor, got {target!r}")
    try:
        values = torch.as_tensor(target, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"{name} must be an int, a list of ints or an integer tensor, got {type(target).__name__}"
        ) from None
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers (an output column per input), got dtype {values.dtype}")
    values = values.to(torch.int64).reshape(-1)
    if values.numel() not in (1, batch):
        raise ValueError(f"{name} must be one int or one per input ({batch}), got {values.numel()} values")
    if bool((values < 0).any()):
        raise ValueError(f"{name} must be non-negative output columns, got {values.tolist()}")
    return values.expand(batch)


def bounded_attribute_kwargs(
    method: Any, inputs: Tuple[Tensor, ...], attribute_kwargs: Dict[str, Any]
) -> Dict[str, Any]:
    """``attribute_kwargs`` with ``internal_batch_size`` bounded as the package's path methods bound
    it (:func:`~captum_uncertainty.attr._utils.path.bounded_internal_batch_size`, one sample) when
    the Captum method takes one and the caller gave none; otherwise unchanged. The maps do not
    depend on it beyond float rounding."""
    if "internal_batch_size" in attribute_kwargs:
        return attribute_kwargs
    if "internal_batch_size" not in inspect.signature(method.attribute).parameters:
        return attribute_kwargs
    return dict(attribute_kwargs, internal_batch_size=bounded_internal_batch_size(None, inputs, None))
