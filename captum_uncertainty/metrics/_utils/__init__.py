"""Shared machinery of the metrics: argument checks, the one pixel-ranking / replacement / chunked
scoring engine, the curve aggregates and the common result protocol. Metric modules import from
here, never from each other."""

__all__ = ()
