"""Evaluations of uncertainty attribution maps, as in the papers.

Every metric takes a forward (an :class:`~captum_uncertainty.UncertaintyForward` or any callable
mapping images to one score each), the inputs and the maps, and knows nothing about the method
that made the maps.
"""

from captum_uncertainty.metrics.blurring import (
    BlurringResult,
    InformationCurve,
    ReductionCurve,
    blurring_test,
    entropy_information_curve,
    uncertainty_reduction_curve,
)
from captum_uncertainty.metrics.insertion_deletion import InsertionDeletionResult, insertion_deletion
from captum_uncertainty.metrics.localization import (
    Anomalies,
    LocalizationResult,
    anomaly_localization,
    default_patch_size,
    make_anomalies,
)

__all__ = [
    "Anomalies",
    "BlurringResult",
    "InformationCurve",
    "InsertionDeletionResult",
    "LocalizationResult",
    "ReductionCurve",
    "anomaly_localization",
    "blurring_test",
    "default_patch_size",
    "entropy_information_curve",
    "insertion_deletion",
    "make_anomalies",
    "uncertainty_reduction_curve",
]
