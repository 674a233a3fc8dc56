"""The posteriors :func:`~captum_uncertainty.experiments.ground_truth.run_ground_truth` explains:
a deep ensemble trained with Adam or with the papers' SGD recipe, or MC dropout of one network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Union

import torch
from torch import Tensor, nn

from captum_uncertainty.data import WANG_RECIPE, DataSplit, train_ensemble
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.posterior import MCDropout

if TYPE_CHECKING:
    from captum_uncertainty.experiments.ground_truth import GroundTruthConfig

__all__ = ["SUPPORTED_POSTERIORS", "posterior_words", "predictive_accuracy", "train_posterior"]

#: The ``posterior`` choices of :class:`~captum_uncertainty.experiments.ground_truth.GroundTruthConfig`:
#: ``"adam"``, a deep ensemble trained with Adam (lr 1e-3, batch 128, ``epochs``); ``"sgd"``, a deep
#: ensemble trained with Wang et al.'s App. B.1 recipe (:data:`~captum_uncertainty.data.WANG_RECIPE`:
#: SGD, lr 0.1, momentum 0.9, batch 128, 30 epochs); ``"mc_dropout"``, one network trained as the
#: ``"adam"`` members are, read as :class:`~captum_uncertainty.MCDropout` with ``mc_samples`` frozen
#: masks.
SUPPORTED_POSTERIORS = ("adam", "sgd", "mc_dropout")


def train_posterior(config: "GroundTruthConfig", split: DataSplit) -> Union[List[nn.Module], MCDropout]:
    """The posterior of ``config.posterior`` trained (or loaded from ``config.cache_dir``) on
    ``split``'s training images: members for :class:`~captum_uncertainty.UncertaintyForward`, or
    an :class:`~captum_uncertainty.MCDropout`."""
    recipe: Dict[str, Any] = dict(WANG_RECIPE) if config.posterior == "sgd" else {"epochs": config.required("epochs")}
    members = 1 if config.posterior == "mc_dropout" else config.n_members
    trained = train_ensemble(
        n_members=members, data=split, seed=config.seed, cache_dir=config.cache_dir, progress=False, **recipe
    )
    if config.posterior == "mc_dropout":
        return MCDropout(trained[0], num_samples=config.mc_samples, seed=config.seed)
    return trained


def posterior_words(config: "GroundTruthConfig") -> str:
    """The posterior in words, for the tables' first line."""
    if config.posterior == "mc_dropout":
        return f"MC dropout of one network ({config.required('epochs')} epochs, Adam), {config.mc_samples} masks"
    if config.posterior == "sgd":
        return f"{config.n_members}-member ensembles (the papers' SGD recipe, 30 epochs)"
    return f"{config.n_members}-member ensembles ({config.required('epochs')} epochs, Adam)"


def predictive_accuracy(uf: UncertaintyForward, x: Tensor, y: Tensor) -> float:
    """Accuracy of the posterior predictive's class."""
    with torch.no_grad():
        return float((uf.predicted_class(x) == y).double().mean())
