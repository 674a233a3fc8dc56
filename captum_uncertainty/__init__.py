"""captum-uncertainty: attribute the predictive uncertainty of Bayesian classifiers with Captum."""

from captum_uncertainty._version import __version__ as __version__
from captum_uncertainty.attr import (
    CLUE,
    BlurIntegratedGradients,
    ClueSettings,
    CounterfactualPathIG,
    CovarianceAttribution,
    DeltaCLUE,
    ExplanationDistribution,
    FullGrad,
    GuidedIntegratedGradients,
    LayerUncertaintyIntegratedGradients,
    SparseCounterfactualIG,
    UABackprop,
    UncertaintyIntegratedGradients,
)
from captum_uncertainty.blur import gaussian_blur
from captum_uncertainty.dataset import DatasetResult, attribute_dataset
from captum_uncertainty.forward import (
    Decomposition,
    UncertaintyForward,
    entropy_decomposition,
    per_class_uncertainty,
    variance_decomposition,
)
from captum_uncertainty.likelihoods import Bernoulli, Categorical, Gaussian, Likelihood
from captum_uncertainty.posterior import (
    DeepEnsemble,
    MCDropConnect,
    MCDropout,
    Posterior,
    SampleCallable,
    WeightSamples,
)

__all__ = [
    "BlurIntegratedGradients",
    "CLUE",
    "ClueSettings",
    "CounterfactualPathIG",
    "CovarianceAttribution",
    "DeltaCLUE",
    "ExplanationDistribution",
    "FullGrad",
    "GuidedIntegratedGradients",
    "SparseCounterfactualIG",
    "UABackprop",
    "UncertaintyIntegratedGradients",
    "LayerUncertaintyIntegratedGradients",
    "DatasetResult",
    "attribute_dataset",
    "Decomposition",
    "Bernoulli",
    "Categorical",
    "Gaussian",
    "Likelihood",
    "DeepEnsemble",
    "MCDropConnect",
    "MCDropout",
    "Posterior",
    "SampleCallable",
    "UncertaintyForward",
    "WeightSamples",
    "entropy_decomposition",
    "variance_decomposition",
    "gaussian_blur",
    "per_class_uncertainty",
]
