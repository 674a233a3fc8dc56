"""Tiny random GPT-2 ensembles for the language-model tests."""

from __future__ import annotations

from typing import Any, List

from captum_uncertainty.llm.toy import tiny_gpt2


def tiny_ensemble(count: int = 3) -> List[Any]:
    return [tiny_gpt2(seed) for seed in range(count)]
