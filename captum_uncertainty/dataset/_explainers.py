"""The ``explainer`` argument: an attribution object, or a zero-argument factory of one."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch

from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.posterior import first_parameter

__all__ = [
    "build_explainer",
    "check_attribute_kwargs",
    "counterfactuals_refusal",
    "explained_forward",
    "model_device",
    "resolve_explainer",
]


def explained_forward(explainer: Any, name: str = "explainer") -> UncertaintyForward:
    """The :class:`~captum_uncertainty.UncertaintyForward` an attribution object explains.

    Captum's and our methods keep it in ``forward_func``; ``NoiseTunnel`` (and other wrappers)
    in ``attribution_method.forward_func``.
    """
    forward = getattr(explainer, "forward_func", None)
    if not isinstance(forward, UncertaintyForward):
        inner = getattr(explainer, "attribution_method", None)
        forward = getattr(inner, "forward_func", forward)
    if not isinstance(forward, UncertaintyForward):
        raise TypeError(
            f"{name} must explain an UncertaintyForward (its forward_func, or attribution_method.forward_func "
            f"for NoiseTunnel), but {type(explainer).__name__} explains {type(forward).__name__}; "
            "build it as Method(UncertaintyForward(models, measure=...))"
        )
    return forward


def _is_attribution(obj: Any) -> bool:
    """An object (not a class) with an ``attribute`` method."""
    return not isinstance(obj, type) and callable(getattr(obj, "attribute", None))


def resolve_explainer(explainer: Any) -> Tuple[Any, Optional[Callable[[], Any]]]:
    """``(attribution object, factory or None)``; a factory is called once here to check it."""
    if isinstance(explainer, type):
        raise TypeError(
            f"explainer must be an attribution object or a zero-argument factory, got the class "
            f"{explainer.__name__}; pass an instance such as {explainer.__name__}(forward)"
        )
    if _is_attribution(explainer):
        explained_forward(explainer)
        return explainer, None
    if isinstance(explainer, torch.nn.Module) or not callable(explainer):
        raise TypeError(
            "explainer must be an attribution object whose forward is an UncertaintyForward (e.g. "
            f"UABackprop(uf), captum.attr.Saliency(uf)) or a zero-argument factory returning one, got "
            f"{type(explainer).__name__}"
        )
    built = build_explainer(explainer)
    return built, explainer


def build_explainer(factory: Callable[[], Any]) -> Any:
    """Call a zero-argument factory and check that it returned an attribution object."""
    built = factory()
    if not _is_attribution(built):
        raise TypeError(
            f"explainer is a factory, but it returned {type(built).__name__}, not an attribution object "
            "(something with an attribute() method)"
        )
    explained_forward(built)
    return built


def counterfactuals_refusal(explainer: str) -> str:
    """Why ``return_counterfactuals=True`` (CLUE, DeltaCLUE) is refused, and what to do instead."""
    return (
        f"{explainer}.attribute(return_counterfactuals=True) returns (maps, Counterfactuals), whose latent codes and "
        "images (one per start for DeltaCLUE) are not per-input maps of one shape: attribute_dataset stores the "
        f"maps only, so leave return_counterfactuals out and call {explainer}(...).counterfactuals(x) on the inputs "
        "whose counterfactuals you need"
    )


def check_attribute_kwargs(explainer: Any, attribute_kwargs: Dict[str, Any]) -> None:
    """Refuse (``ValueError``), before anything is attributed, ``attribute`` arguments whose results
    cannot be stored as rows: ``return_counterfactuals=True`` (:class:`~captum_uncertainty.CLUE`,
    :class:`~captum_uncertainty.DeltaCLUE`) and ``return_counterfactual=True``
    (:class:`~captum_uncertainty.SparseCounterfactualIG`)."""
    if attribute_kwargs.get("return_counterfactuals"):
        raise ValueError(counterfactuals_refusal(type(explainer).__name__))
    if attribute_kwargs.get("return_counterfactual"):
        name = type(explainer).__name__
        raise ValueError(
            f"{name}.attribute(return_counterfactual=True) returns (maps, SparseCounterfactual): attribute_dataset "
            f"stores maps only, so leave it out (return_convergence_delta=True stores the delta) and call "
            f"{name}(...).counterfactual(x) on the inputs whose counterfactual you need"
        )


def model_device(forward: UncertaintyForward) -> torch.device:
    """Where the posterior's parameters live: its first floating-point parameter or buffer (CPU for
    parameter-free posteriors)."""
    reference = first_parameter(forward.posterior.sample_modules())
    return torch.device("cpu") if reference is None else reference.device
