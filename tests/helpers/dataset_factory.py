"""Helpers of tests/dataset/test_dataset.py that a subprocess (and the command line) can import too."""

from __future__ import annotations

import os
from typing import Any, Optional

from captum_uncertainty import UncertaintyForward
from captum_uncertainty.data import load_digits, train_ensemble


def make_forward() -> UncertaintyForward:
    """A tiny posterior for the command line test: 2 CNNs, 2 epochs on the 8x8 digits, not cached."""
    members = train_ensemble(n_members=2, data=load_digits(), epochs=2, seed=0, cache_dir=None, progress=False)
    return UncertaintyForward(members, measure="epistemic")


def not_a_forward() -> str:
    return "not an UncertaintyForward"


class StopAt:
    """An attribution object that delegates to ``explainer`` but stops at batch ``at`` (0-based).

    It raises ``RuntimeError`` there, or with ``kill=True`` ends the process at once
    (``os._exit``, no clean-up, as a killed process). ``at=None`` never stops, which makes the
    uninterrupted reference run with the same class name (the manifest records it).
    """

    def __init__(self, explainer: Any, at: Optional[int] = None, kill: bool = False) -> None:
        self.explainer = explainer
        self.forward_func = explainer.forward_func
        self.at = at
        self.kill = kill
        self.calls = 0

    def attribute(self, inputs: Any, **kwargs: Any) -> Any:
        call, self.calls = self.calls, self.calls + 1
        if call == self.at:
            if self.kill:
                os._exit(17)
            raise RuntimeError(f"interrupted at batch {call}")
        return self.explainer.attribute(inputs, **kwargs)
