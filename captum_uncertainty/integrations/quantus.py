r"""Quantus: evaluate uncertainty attributions with Quantus's metrics.

Quantus evaluates an explanation of a *class score*: it wraps a torch model, reads
``model(x)[n, y_batch[n]]`` on perturbed inputs and compares the changes with the attribution.
To evaluate an explanation of *uncertainty*, the explained score is the uncertainty itself:

* :class:`~captum_uncertainty.integrations.QuantusUncertaintyModel` turns an
  :class:`~captum_uncertainty.UncertaintyForward` into a one-output model returning ``U(x)``
  as an ``(N, 1)`` score, so ``y_batch`` is all zeros
  (:func:`~captum_uncertainty.integrations.quantus_batch` builds it);
* :func:`~captum_uncertainty.integrations.quantus_explain_func` adapts an attribution class of
  this package or Captum to Quantus's ``explain_func(model, inputs, targets, **kwargs)``
  (numpy in, numpy out), for metrics that explain perturbed inputs or randomised models
  themselves.

**Always call the metric with** ``softmax=False``. With ``softmax=True`` (the default of
``PixelFlipping``, ``RegionPerturbation`` and other faithfulness metrics) Quantus appends a
softmax over the model's outputs, and a softmax over ONE output is identically 1.0: every curve
is constant and every score meaningless. The output of
:class:`~captum_uncertainty.integrations.QuantusUncertaintyModel` refuses to go through a
softmax and raises a ``ValueError`` saying so.

Which metrics are meaningful for an uncertainty score:

* **Faithfulness** metrics that remove features and read the score change keep their
  direction, with "score" read as "uncertainty": removing the features the map credits with
  the uncertainty should lower ``U`` quickly, so each metric's ``score_direction`` in Quantus
  stays valid: ``PixelFlipping``, ``RegionPerturbation`` (MoRF), ``Selectivity`` and
  ``ROAD``: lower (area under the ``U`` curve) is better; ``IROF`` (area over the curve),
  ``FaithfulnessCorrelation``, ``FaithfulnessEstimate`` and ``MonotonicityCorrelation``:
  higher is better; ``Infidelity``: lower is better.
  The perturbation baseline must itself be a *low-uncertainty* value: removing features by
  painting them black raises ``U`` when black images are uncertain for the model, which then
  rewards maps that point away from the uncertainty (choose ``perturb_baseline`` to match the
  data, e.g. the black background of digits).
* **Robustness** (``MaxSensitivity``, ``AvgSensitivity``, ``LocalLipschitzEstimate``,
  ``Continuity``; lower is better) and **complexity** (``Sparseness``: higher is sparser,
  ``Complexity``: lower is simpler) do not use the score and apply unchanged, as does model
  parameter randomisation (``MPRT``, ``SmoothMPRT``: lower is better, ``EfficientMPRT``:
  higher; the explain function rebuilds the attribution from each randomised copy).
* **Not meaningful**: metrics that need several classes or class labels (``RandomLogit``,
  ``Focus``, ``Sufficiency`` and ``Consistency``, which compare predicted classes) and
  ``Completeness`` in Quantus's form ``sum(a) = f(x) - f(baseline)`` for maps that sum to
  ``U(x)`` itself (UA-Backprop).

Examples::

    >>> import quantus
    >>> model = QuantusUncertaintyModel(uf)
    >>> maps = UABackprop(uf).attribute(x)
    >>> scores = quantus.PixelFlipping(features_in_step=8)(
    ...     model=model, **quantus_batch(x), a_batch=maps.numpy(), softmax=False)
    >>> scores = quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=8)(
    ...     model=model, **quantus_batch(x), a_batch=None, softmax=False,
    ...     explain_func=quantus_explain_func(UABackprop, path="inputgrad"))
    >>> quantus.PixelFlipping()(model=model, **quantus_batch(x), a_batch=maps.numpy())
    Traceback (most recent call last):
    ValueError: ... pass softmax=False ...

    Without the guard (a bare module returning ``uf(x)[:, None]``), the same call returns
    curves that are all exactly 1.0.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_uncertainty._validation import check_bool
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.posterior import first_parameter

__all__ = ["QuantusUncertaintyModel", "UncertaintyScores", "quantus_explain_func", "quantus_batch"]

#: Operations that make a single-output score constant.
SOFTMAX_FUNCTIONS = (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, Tensor.softmax, Tensor.log_softmax)

SOFTMAX_MESSAGE = (
    "a softmax was applied to the uncertainty score of a QuantusUncertaintyModel: over its single output it is "
    "identically 1.0, so every Quantus curve would be constant; pass softmax=False to the Quantus metric call"
)


class UncertaintyScores(Tensor):
    """The ``(N, 1)`` uncertainty scores of :class:`~captum_uncertainty.integrations.QuantusUncertaintyModel`.

    A plain tensor in every respect, except that ``softmax`` / ``log_softmax`` (whatever the
    entry point: ``nn.Softmax``, ``F.softmax``, ``Tensor.softmax``) raise a ``ValueError``:
    over one output they are constant, which is what Quantus computes when a metric is called
    with ``softmax=True``.
    """

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Optional[Dict[str, Any]] = None) -> Any:
        if func in SOFTMAX_FUNCTIONS:
            raise ValueError(SOFTMAX_MESSAGE)
        return super().__torch_function__(func, types, args, kwargs or {})


class QuantusUncertaintyModel(nn.Module):
    r"""An :class:`~captum_uncertainty.UncertaintyForward` as a one-output model for Quantus.

    ``model(x)`` is ``uf(x)`` as an ``(N, 1)`` score (the uncertainty is "class" 0, so
    Quantus's ``y_batch`` is all zeros: see
    :func:`~captum_uncertainty.integrations.quantus_batch`). Quantus feeds float32 tensors made
    from numpy arrays; they are moved to the posterior's device and dtype. The output is an
    :class:`~captum_uncertainty.integrations.quantus.UncertaintyScores` tensor, which raises a
    ``ValueError`` if Quantus applies a softmax to it (a metric called without
    ``softmax=False``).

    The module is in eval mode, as Quantus requires, and ``train()`` / ``eval()`` change only
    this wrapper's flag: the posterior puts its own modules in eval mode during each call
    and restores them, so the user's modules are never left changed.

    Args:
        forward_func (captum_uncertainty.UncertaintyForward): the uncertainty whose attributions are
            evaluated.

    Examples::

        >>> model = QuantusUncertaintyModel(UncertaintyForward(members, "epistemic"))
        >>> model(x).shape          # (N, 1)
        >>> quantus.PixelFlipping(features_in_step=8)(
        ...     model=model, **quantus_batch(x), a_batch=maps, softmax=False)
    """

    def __init__(self, forward_func: UncertaintyForward) -> None:
        super().__init__()
        if not isinstance(forward_func, UncertaintyForward):
            raise TypeError(
                f"forward_func must be an UncertaintyForward, got {type(forward_func).__name__}; build one with "
                "UncertaintyForward(posterior, measure=...)"
            )
        self.forward_func = forward_func
        self.training = False

    def train(self, mode: bool = True) -> "QuantusUncertaintyModel":
        """Set this wrapper's ``training`` flag only (the posterior manages its modules' modes)."""
        self.training = check_bool(mode, "mode")
        return self

    def forward(self, inputs: Tensor) -> Tensor:
        """The uncertainty of each input, ``(N, 1)``, on the model's device and dtype."""
        return (
            self.forward_func(_as_model_tensor(inputs, self.forward_func)).unsqueeze(1).as_subclass(UncertaintyScores)
        )


def quantus_explain_func(
    method: Callable[[UncertaintyForward], Any], **attribute_kwargs: Any
) -> Callable[..., np.ndarray]:
    r"""An attribution class as Quantus's ``explain_func(model, inputs, targets, **kwargs)``.

    The returned function takes the model Quantus passes (a
    :class:`~captum_uncertainty.integrations.QuantusUncertaintyModel`, or an
    :class:`~captum_uncertainty.UncertaintyForward`), builds ``method(forward_func)`` for
    it (so metrics that randomise the model explain the randomised copy), converts the numpy
    ``inputs`` to the model's device and dtype, and returns
    ``method(forward_func).attribute(inputs, **attribute_kwargs, **kwargs)`` as a numpy array
    (``(N, 1, H, W)`` for UA-Backprop, ``(N, C, H, W)`` for Captum's methods). ``targets``
    must be all zeros (the single uncertainty output): attributions explain the uncertainty,
    never a class. The ``device`` keyword Quantus adds is dropped (the model's device is used).

    Args:
        method (callable): an attribution class taking the forward function, e.g.
            :class:`~captum_uncertainty.UABackprop`, :class:`~captum.attr.IntegratedGradients`
            or :class:`~captum.attr.Saliency`.
        **attribute_kwargs: keyword arguments of ``method(...).attribute`` (e.g.
            ``path="inputgrad"``). Batch-sized tensors (e.g. IG ``baselines``) would not match
            the batches Quantus explains: use scalars or names.

    Returns:
        callable: ``explain_func(model, inputs, targets=None, **kwargs) -> np.ndarray``.

    Examples::

        >>> explain = quantus_explain_func(UABackprop, path="inputgrad")
        >>> quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=8)(
        ...     model=QuantusUncertaintyModel(uf), **quantus_batch(x), a_batch=None,
        ...     explain_func=explain, softmax=False)
    """
    if not callable(method):
        raise TypeError(f"method must be an attribution class (callable), got {type(method).__name__}")

    def explain_func(model: Any, inputs: Any, targets: Any = None, **kwargs: Any) -> np.ndarray:
        kwargs.pop("device", None)
        forward_func = _uncertainty_forward_of(model)
        _check_targets(targets)
        x = _as_model_tensor(inputs, forward_func)
        attributions = method(forward_func).attribute(x, **{**attribute_kwargs, **kwargs})
        if not isinstance(attributions, Tensor):
            raise TypeError(
                f"{getattr(method, '__name__', method)}.attribute returned {type(attributions).__name__}; "
                "Quantus needs one attribution tensor (do not pass decompose=True or return_convergence_delta=True)"
            )
        return attributions.detach().cpu().numpy()

    return explain_func


def quantus_batch(inputs: Any) -> Dict[str, np.ndarray]:
    """``x_batch`` (numpy) and the all-zero ``y_batch`` for a Quantus call on the uncertainty model.

    Args:
        inputs (Tensor or numpy.ndarray): the inputs ``(N, ...)``.

    Returns:
        dict: ``{"x_batch": ..., "y_batch": zeros(N, dtype=int64)}``, to unpack into a metric
        call: ``metric(model=model, **quantus_batch(x), a_batch=..., softmax=False)``.
    """
    array = inputs.detach().cpu().numpy() if isinstance(inputs, Tensor) else np.asarray(inputs)
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(f"inputs must have a non-empty batch dimension, got shape {array.shape}")
    return {"x_batch": array, "y_batch": np.zeros(array.shape[0], dtype=np.int64)}


def _uncertainty_forward_of(model: Any) -> UncertaintyForward:
    """The :class:`UncertaintyForward` behind the model Quantus passes to an explain function."""
    if isinstance(model, QuantusUncertaintyModel):
        return model.forward_func
    if isinstance(model, UncertaintyForward):
        return model
    raise TypeError(
        f"the explain function got a {type(model).__name__} model; pass QuantusUncertaintyModel(uf) to the "
        "Quantus metric"
    )


def _check_targets(targets: Any) -> None:
    """Quantus's targets index the single uncertainty output: all zeros."""
    if targets is None:
        return
    values = targets.detach().cpu().numpy() if isinstance(targets, Tensor) else np.asarray(targets)
    if values.size and np.any(values != 0):
        raise ValueError(
            "targets must be all zeros: the QuantusUncertaintyModel has one output, the uncertainty; "
            "use quantus_batch(x) for y_batch"
        )


def _as_model_tensor(inputs: Any, forward_func: UncertaintyForward) -> Tensor:
    """``inputs`` (numpy or tensor) on the device and in the floating dtype of the posterior's modules."""
    x = torch.as_tensor(inputs)
    reference = first_parameter(forward_func.posterior.sample_modules())
    if reference is None:
        return x
    return x.to(device=reference.device, dtype=reference.dtype if x.is_floating_point() else x.dtype)
