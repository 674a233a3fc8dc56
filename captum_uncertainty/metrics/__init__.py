"""Evaluations of uncertainty attribution maps, as in the papers.

Every metric takes a forward (an :class:`~captum_uncertainty.forward.UncertaintyForward` or any
callable mapping images to one score each; a classifier for :func:`insertion_deletion`), the
inputs and the maps (``attributions``, as in Captum's metrics), and knows nothing about the
method that made the maps. All of them build the perturbed images for all images and all steps
(and sigmas) in chunks of ``max_examples_per_batch`` images per forward call.

- :func:`blurring_test`: Wang et al.'s MURR and AUC-URR (Sec. 5.2.1, App. B.2.1).
- :func:`uncertainty_reduction_curve`, :func:`entropy_information_curve`: Perez et al.'s URC and
  Area over the EIC (supplement Sec. 2).
- :func:`insertion_deletion`: pixel insertion / deletion AUC (arXiv 2403.17224).
- :func:`make_anomalies`, :func:`anomaly_localization`: Wang et al.'s IoU and ADA (App. C).
- :func:`relevance_mass`, :func:`relevance_rank_accuracy`, :func:`pointing_game`,
  :func:`mask_auroc`, :func:`conveyance`: agreement of the maps with ground-truth masks (no
  forward needed), including Schiller et al.'s conveyance test (arXiv 2603.24524).

Every result is a named tuple with a headline ``score`` (MURR, the URC, the Area over the EIC,
the AUC, the mean IoU) and a class-level ``higher_is_better`` saying which way it is read.
"""

from captum_uncertainty.metrics.blurring import (
    BlurringResult,
    UninformativeBlurWarning,
    blurring_test,
    full_blur_sigma,
    pixel_budget,
)
from captum_uncertainty.metrics.insertion_deletion import (
    DeletionResult,
    InsertionDeletionResult,
    InsertionResult,
    insertion_deletion,
)
from captum_uncertainty.metrics.localization import (
    Anomalies,
    LocalizationResult,
    anomaly_localization,
    box_iou,
    default_patch_size,
    make_anomalies,
)
from captum_uncertainty.metrics.masks import (
    ConveyanceResult,
    MaskResult,
    conveyance,
    mask_auroc,
    pointing_game,
    relevance_mass,
    relevance_rank_accuracy,
)
from captum_uncertainty.metrics.reduction_curves import (
    InformationCurve,
    ReductionCurve,
    entropy_information_curve,
    uncertainty_reduction_curve,
)

__all__ = [
    "Anomalies",
    "BlurringResult",
    "ConveyanceResult",
    "UninformativeBlurWarning",
    "DeletionResult",
    "InformationCurve",
    "InsertionDeletionResult",
    "InsertionResult",
    "LocalizationResult",
    "MaskResult",
    "ReductionCurve",
    "anomaly_localization",
    "blurring_test",
    "box_iou",
    "conveyance",
    "default_patch_size",
    "entropy_information_curve",
    "full_blur_sigma",
    "insertion_deletion",
    "make_anomalies",
    "mask_auroc",
    "pixel_budget",
    "pointing_game",
    "relevance_mass",
    "relevance_rank_accuracy",
    "uncertainty_reduction_curve",
]
