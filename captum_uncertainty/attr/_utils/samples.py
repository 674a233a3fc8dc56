"""One posterior sample as the module a Captum attribution class explains, and the explained target.

Shared by the methods that explain every posterior sample on its own (the explanation
distribution, the covariance of explanations): a classifier's sample is explained through its
class scores (a binary member's one logit becomes the two classes ``[0, z]``), a regressor's
(``likelihood="gaussian"``) through its predicted mean ``mu_s``, or, when a target column is
asked for, through its raw output columns.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.posterior import tensor_output

__all__ = ["default_target", "format_target", "sample_explained_module"]


class _SampleClasses(nn.Module):
    """Sample ``s``'s class outputs ``(N, C)`` as the forward sees them (a binary member's one
    logit becomes the two classes ``[0, z]``)."""

    def __init__(self, forward: UncertaintyForward, sample: int) -> None:
        super().__init__()
        self.forward_func = forward
        self.member = forward.posterior.sample_module(sample)

    def forward(self, *inputs: Any) -> Tensor:
        outputs = tensor_output(self.member(*inputs))
        if outputs.dim() == 1:
            outputs = outputs.unsqueeze(-1)
        return self.forward_func.class_outputs(outputs.unsqueeze(0))[0]


def _gaussian_columns(outputs: Tensor) -> Tensor:
    """A Gaussian sample's raw output as ``(N, C)`` columns (``(N,)`` means become ``(N, 1)``)."""
    if outputs.dim() == 1:
        outputs = outputs.unsqueeze(-1)
    if outputs.dim() != 2 or outputs.shape[-1] not in (1, 2):
        raise ValueError(
            "a Gaussian member must return, per input, (N, 2) = the mean and the variance head, or (N,) / (N, 1) = "
            f"the means only; got an output of shape {tuple(outputs.shape)}"
        )
    return outputs


class _SampleMean(nn.Module):
    """Sample ``s``'s predicted mean ``mu_s`` ``(N,)``: column 0 of a Gaussian member's output."""

    def __init__(self, forward: UncertaintyForward, sample: int) -> None:
        super().__init__()
        self.member = forward.posterior.sample_module(sample)

    def forward(self, *inputs: Any) -> Tensor:
        return _gaussian_columns(tensor_output(self.member(*inputs)))[:, 0]


def _highest_column(target: Any) -> int:
    """The largest column a Captum target (an int, a list of ints or an integer tensor) selects."""
    if isinstance(target, Tensor):
        return int(target.max())
    if isinstance(target, (list, tuple)):
        return max(_highest_column(item) for item in target)
    return int(target)


class _SampleColumns(nn.Module):
    """Sample ``s``'s raw Gaussian output columns ``(N, C)``: column 0 the mean, column 1 (if
    any) the variance head, as the member returns it; a target column beyond them is refused."""

    def __init__(self, forward: UncertaintyForward, sample: int, target: Any) -> None:
        super().__init__()
        self.member = forward.posterior.sample_module(sample)
        self.highest = _highest_column(target)

    def forward(self, *inputs: Any) -> Tensor:
        outputs = _gaussian_columns(tensor_output(self.member(*inputs)))
        if self.highest >= outputs.shape[1]:
            heads = "column 0 the mean, column 1 the variance head" if outputs.shape[1] == 2 else "the means only"
            raise ValueError(
                f"target selects column {self.highest} of the Gaussian members' outputs, which have "
                f"{outputs.shape[1]} ({heads}); pass target=None to explain the means"
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
        nn.Module: for a classifier, the sample's class scores ``(N, C)`` as the forward reads them
        (a Hugging Face output's ``.logits``; for ``binary=True`` members the two classes
        ``[0, z]``); for a
        Gaussian forward and ``target=None``, the sample's predicted mean ``mu_s`` ``(N,)``
        (column 0; explained with Captum's ``target=None``); for a Gaussian forward with a
        ``target``, the sample's raw output columns ``(N, C)`` (``(N,)`` means become ``(N, 1)``),
        so that ``target=1`` explains the variance head.

    Examples::

        >>> module = sample_explained_module(uf, 0)           # member 0's mean, (N,)
        >>> IntegratedGradients(module).attribute(x, baselines=x * 0)
    """
    if forward.is_gaussian:
        return _SampleMean(forward, sample) if target is None else _SampleColumns(forward, sample, target)
    return _SampleClasses(forward, sample)


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
        explain the same class); for a Gaussian forward zeros, i.e. column 0 of the members'
        outputs, the predicted mean (explained with Captum's ``target=None``). On the inputs'
        device.
    """
    first = inputs[0]
    if forward.is_gaussian:
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
