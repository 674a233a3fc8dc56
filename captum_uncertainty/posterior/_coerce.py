"""What the forward accepts as a posterior."""

from __future__ import annotations

from typing import Any

from torch import nn

from captum_uncertainty.posterior._protocol import Posterior
from captum_uncertainty.posterior.ensembles import DeepEnsemble, check_members

__all__ = ["as_posterior"]


# ----------------------------------------------------------------------------- coercion


def as_posterior(posterior: Any) -> Posterior:
    """Accept a :class:`Posterior` or a sequence of member modules (a deep ensemble)."""
    if isinstance(posterior, Posterior):
        return posterior
    if isinstance(posterior, nn.Module) and not isinstance(posterior, nn.ModuleList):
        raise TypeError(
            f"posterior must be a Posterior or a list of nn.Module members, got a single "
            f"{type(posterior).__name__}; wrap it as MCDropout(model, num_samples=...) or DeepEnsemble([model])"
        )
    if callable(posterior) and not isinstance(posterior, (list, tuple, nn.ModuleList)):
        raise TypeError(
            "posterior is a callable: wrap it as SampleCallable(fn, layout=...) to say how its samples are laid out"
        )
    if isinstance(posterior, (str, bytes)) or not hasattr(posterior, "__iter__"):
        raise TypeError(f"posterior must be a Posterior or a list of nn.Module members, got {type(posterior).__name__}")
    return DeepEnsemble(check_members(posterior, "posterior"))
