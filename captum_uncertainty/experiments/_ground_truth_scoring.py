"""The proxy metrics of the ground-truth benchmark (:mod:`captum_uncertainty.experiments.ground_truth`):
the scores the field uses without ground truth, and the Kendall tau between their ranking of the
methods and the ground truth's."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Dict, Sequence

import torch
from torch import Tensor

from captum_uncertainty.experiments._ground_truth_methods import ORACLE, RANDOM
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.metrics import blurring_test, insertion_deletion, uncertainty_reduction_curve
from captum_uncertainty.metrics.blurring import UninformativeBlurWarning

if TYPE_CHECKING:
    from captum_uncertainty.experiments.ground_truth import GroundTruthRow

__all__ = ["PROXIES", "PROXY_FRACTION", "agreement", "proxy_scores"]

#: The proxy metrics without ground truth, by name, and whether a higher score is better.
PROXIES: Dict[str, bool] = {
    "blurring test MURR": True,
    "URC": True,
    "deletion AUC": False,
    "insertion AUC": True,
}

#: Pixel budget of the blurring test and the URC, a share of the pixels (5%: Wang et al.'s
#: larger budget and Perez et al.'s; on 8x8 digits 1% would be a single pixel).
PROXY_FRACTION = 0.05


def proxy_scores(uf: UncertaintyForward, x: Tensor, maps: Tensor, sigma: Tensor) -> Dict[str, float]:
    """The scores of :data:`PROXIES` of one method's maps of the images ``x``."""
    with warnings.catch_warnings():  # the no-blur share is the same for every map: reported once
        warnings.simplefilter("ignore", UninformativeBlurWarning)
        murr = blurring_test(uf, x, maps, fraction=PROXY_FRACTION, sigma=sigma)
    return {
        "blurring test MURR": murr.score,
        "URC": uncertainty_reduction_curve(uf, x, maps, fraction=PROXY_FRACTION).score,
        "deletion AUC": insertion_deletion(uf, x, maps, mode="deletion").score,
        "insertion AUC": insertion_deletion(uf, x, maps, mode="insertion").score,
    }


def _kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two score lists: ``(concordant - discordant) / sqrt((n0 - ties_a) (n0 -
    ties_b))`` over the pairs, ``n0`` the pairs, ``ties_x`` the pairs tied in ``x`` (scipy's
    default; no scipy needed). ``nan`` for fewer than two items or a constant list."""
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    if x.numel() < 2:
        return math.nan
    i, j = torch.triu_indices(x.numel(), x.numel(), offset=1)
    dx, dy = torch.sign(x[i] - x[j]), torch.sign(y[i] - y[j])
    untied_x, untied_y = float((dx != 0).sum()), float((dy != 0).sum())
    if untied_x == 0 or untied_y == 0:
        return math.nan
    return float((dx * dy).sum()) / math.sqrt(untied_x * untied_y)


def agreement(rows: Sequence[GroundTruthRow], scores: Dict[str, Dict[str, float]], key: str) -> Dict[str, float]:
    """Per proxy, the Kendall tau between the real methods' proxy scores (signed so that higher
    is better) and their ``key`` scores."""
    real = [row for row in rows if row.method not in (RANDOM, ORACLE) and row.method in scores]
    truth = [float(getattr(row, key)) for row in real]
    return {
        name: _kendall_tau([scores[row.method][name] * (1 if higher else -1) for row in real], truth)
        for name, higher in PROXIES.items()
    }
