"""Path methods bound the rows of one forward pass by default, with the same maps as one big pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import captum_uncertainty.attr._utils.path as path_engine
from captum_uncertainty import (
    BlurIntegratedGradients,
    CounterfactualPathIG,
    LayerUncertaintyIntegratedGradients,
    MCDropout,
    UncertaintyForward,
    UncertaintyIntegratedGradients,
)
from captum_uncertainty.generative import VAE


def _members(count: int = 3):
    torch.manual_seed(0)
    return [nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(72, 4)).eval() for _ in range(count)]


class _RowCounter:
    """The largest number of rows the first layer of every member saw in one call."""

    def __init__(self, layers):
        self.rows = 0
        self.handles = [layer.register_forward_pre_hook(self._record) for layer in layers]

    def _record(self, _module, args):
        self.rows = max(self.rows, int(args[0].shape[0]))

    def remove(self):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("method", ["uig", "blur_ig", "layer_uig", "cf_path_ig"])
def test_default_chunk_keeps_one_pass_within_the_bound_and_gives_the_unbounded_maps(method, monkeypatch):
    members = _members()
    uf = UncertaintyForward(members, "epistemic")
    x = torch.rand(4, 1, 8, 8)
    budget = 3 * 64 * 12  # S x points x numbers per input: 12 points of 8 x 8 images at S = 3

    def run(**chunk):
        if method == "uig":
            return UncertaintyIntegratedGradients(uf).attribute(x, n_steps=16, **chunk)
        if method == "blur_ig":
            return BlurIntegratedGradients(uf).attribute(x, n_steps=16, **chunk)
        if method == "cf_path_ig":  # both segments of the path, from given fiducial latents
            with torch.random.fork_rng():
                torch.manual_seed(0)
                vae = VAE(image_shape=(1, 8, 8), latent_dim=3).eval()
            fiducial = torch.zeros(x.shape[0], 3)
            return CounterfactualPathIG(uf, vae).attribute(x, fiducial=fiducial, n_steps=16, **chunk)
        layer = LayerUncertaintyIntegratedGradients(uf, [m[0] for m in members])
        return layer.attribute(x, n_steps=16, **chunk)

    unbounded = run(internal_batch_size=10_000)
    monkeypatch.setattr(path_engine, "PATH_NUMBERS_PER_CHUNK", budget)
    counter = _RowCounter([m[0] for m in members] if method != "layer_uig" else [m[2] for m in members])
    try:
        bounded = run()
    finally:
        counter.remove()
    torch.testing.assert_close(bounded, unbounded, atol=1e-6, rtol=1e-5)
    numbers = 64 if method != "layer_uig" else 2 * 6 * 6  # the first layer's input / the layer's output
    assert counter.rows * numbers * 3 <= max(budget, 3 * numbers * x.shape[0]), counter.rows
    assert counter.rows < 16 * x.shape[0]  # the unbounded call puts all 64 points in one pass


def test_an_explicit_internal_batch_size_wins_and_mc_dropout_counts_its_samples():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 3)).eval()
    uf = UncertaintyForward(MCDropout(model, num_samples=8, share_trunk=False))
    x = torch.rand(2, 1, 8, 8)
    assert path_engine.bounded_internal_batch_size(uf, (x,), 7) == 7
    assert path_engine.bounded_internal_batch_size(uf, (x,), None) == path_engine.PATH_NUMBERS_PER_CHUNK // (8 * 64)
    twenty = UncertaintyForward(MCDropout(model, num_samples=20, share_trunk=False))
    assert path_engine.bounded_internal_batch_size(twenty, (torch.rand(2, 3, 224, 224),), None) == 5
    assert path_engine.bounded_internal_batch_size(twenty, (torch.rand(8, 3, 224, 224),), None) == 8  # one step


@pytest.mark.parametrize("method", ["distribution", "covariance"])
def test_per_sample_explanations_with_captums_ig_get_the_bound_too(method, monkeypatch):
    """Each sample's Captum IG gets the bound for one sample unless the caller gives one."""
    from captum.attr import IntegratedGradients

    from captum_uncertainty import CovarianceAttribution, ExplanationDistribution

    members = _members()
    uf = UncertaintyForward(members, "epistemic")
    x = torch.rand(4, 1, 8, 8)

    def run(**chunk):
        if method == "distribution":
            return ExplanationDistribution(uf, IntegratedGradients).attribute(x, n_steps=16, **chunk).samples
        return CovarianceAttribution(uf, IntegratedGradients).attribute(x, n_steps=16, **chunk)

    unbounded = run(internal_batch_size=10_000)
    budget = 64 * 12  # points x numbers per input: 12 points of 8 x 8 images, one sample at a time
    monkeypatch.setattr(path_engine, "PATH_NUMBERS_PER_CHUNK", budget)
    counter = _RowCounter([m[0] for m in members])
    try:
        bounded = run()
        assert 0 < counter.rows <= 12, counter.rows
        counter.rows = 0
        run(internal_batch_size=8)  # the caller's bound wins
        assert counter.rows == 8
    finally:
        counter.remove()
    torch.testing.assert_close(bounded, unbounded, atol=1e-6, rtol=1e-5)
