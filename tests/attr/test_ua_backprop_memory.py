"""UA-Backprop's path integrals bound the class gradients of one chunk by default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_uncertainty import UABackprop, UncertaintyForward
from captum_uncertainty.attr._utils import ua_backprop as pieces


def many_class_members(classes, seed=0):
    torch.manual_seed(seed)
    return [nn.Sequential(nn.Flatten(), nn.Linear(16, classes)).double() for _ in range(2)]


def test_the_default_chunk_respects_the_budget_and_keeps_at_least_one_step():
    x = torch.rand(4, 1, 4, 4)
    assert pieces.bounded_path_points(10, 5, x) == pieces.RELEVANCE_NUMBERS_PER_CHUNK // (10 * 5 * 16)
    assert pieces.bounded_path_points(10**7, 5, x) == 4  # one step of the whole batch


@pytest.mark.parametrize("path", ["integrated_gradients", "blur_integrated_gradients"])
def test_bounded_chunks_give_the_maps_of_one_chunk(monkeypatch, path):
    uf = UncertaintyForward(many_class_members(50))
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    ua = UABackprop(uf)
    whole = ua.attribute(x, path=path, n_steps=8, internal_batch_size=10**9, tau1=0.08, tau2=0.3)
    sizes = []
    original = pieces.integrate_path

    def recording(*args, **kwargs):
        sizes.append(args[-1] if len(args) == 6 else kwargs.get("internal_batch_size"))
        return original(*args, **kwargs)

    monkeypatch.setattr(pieces, "integrate_path", recording)
    monkeypatch.setattr(pieces, "RELEVANCE_NUMBERS_PER_CHUNK", 50 * 2 * 16 * 3 * 2)  # two steps of 3 inputs
    bounded = ua.attribute(x, path=path, n_steps=8, tau1=0.08, tau2=0.3)
    assert sizes == [6]
    torch.testing.assert_close(bounded, whole)
