"""Attribution methods for uncertainty, in the style of ``captum.attr`` (one module per method).

Captum's own classes (``IntegratedGradients``, ``Saliency``, ``NoiseTunnel``, ``Lime``,
``KernelShap``, ...) already work on an :class:`~captum_uncertainty.UncertaintyForward`; the
classes here are the methods Captum lacks.
"""

from captum_uncertainty.attr._utils.latent_search import LossNotDecreasing
from captum_uncertainty.attr.blur_ig import BlurIntegratedGradients
from captum_uncertainty.attr.clue import CLUE, ClueSettings, Counterfactuals
from captum_uncertainty.attr.counterfactual_path import (
    CounterfactualPathIG,
    CounterfactualPathResult,
    CounterfactualPathResultWithDelta,
    Fiducials,
    FiducialWarning,
)
from captum_uncertainty.attr.covariance import CovarianceAttribution
from captum_uncertainty.attr.delta_clue import DeltaCLUE
from captum_uncertainty.attr.distribution import ExplanationDistribution
from captum_uncertainty.attr.fullgrad import FullGrad
from captum_uncertainty.attr.guided_ig import GuidedIntegratedGradients
from captum_uncertainty.attr.integrated_gradients import UncertaintyIntegratedGradients
from captum_uncertainty.attr.layer_integrated_gradients import LayerUncertaintyIntegratedGradients
from captum_uncertainty.attr.sparse_counterfactual import SparseCounterfactual, SparseCounterfactualIG
from captum_uncertainty.attr.ua_backprop import UABackprop

__all__ = [
    "BlurIntegratedGradients",
    "CLUE",
    "ClueSettings",
    "CounterfactualPathIG",
    "CounterfactualPathResult",
    "CounterfactualPathResultWithDelta",
    "Counterfactuals",
    "CovarianceAttribution",
    "DeltaCLUE",
    "ExplanationDistribution",
    "FiducialWarning",
    "Fiducials",
    "FullGrad",
    "GuidedIntegratedGradients",
    "LayerUncertaintyIntegratedGradients",
    "LossNotDecreasing",
    "SparseCounterfactual",
    "SparseCounterfactualIG",
    "UABackprop",
    "UncertaintyIntegratedGradients",
]
