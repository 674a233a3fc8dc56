"""What every metric result shares: a headline ``score`` and the direction it is read in."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["MetricResult"]


@runtime_checkable
class MetricResult(Protocol):
    """The common face of the metric results (named tuples).

    Attributes:
        score (float): the headline number of the metric (MURR, an area, an AUC, a mean IoU).
        higher_is_better (bool): class-level: True if a larger ``score`` means a better map.
    """

    higher_is_better: bool

    @property
    def score(self) -> float: ...
