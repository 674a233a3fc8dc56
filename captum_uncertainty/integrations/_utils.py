"""Argument checks shared by the integration modules (package-private)."""

from __future__ import annotations

from typing import Any

__all__ = ["check_seed"]


def check_seed(seed: Any) -> int:
    """An ``int`` seed for a ``torch.Generator``; anything else (a ``bool`` too) is a ``TypeError``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return seed
