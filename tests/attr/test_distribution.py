"""ExplanationDistribution against a manual loop over samples (ensemble and MC dropout)."""

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from captum_uncertainty import MCDropout, UncertaintyForward
from captum_uncertainty.attr.distribution import ExplanationDistribution


def small(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Dropout(0.4), nn.Linear(8, 3)).double()


@pytest.fixture
def x():
    torch.manual_seed(3)
    return torch.rand(4, 1, 4, 4, dtype=torch.float64)


@pytest.mark.parametrize("method", [Saliency, IntegratedGradients])
def test_statistics_equal_a_manual_loop_for_an_ensemble(x, method):
    members = [small(s).eval() for s in range(3)]
    uf = UncertaintyForward(members)
    result = ExplanationDistribution(uf, method).attribute(x)
    with torch.no_grad():
        target = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0).argmax(1)
    manual = torch.stack([method(m).attribute(x, target=target) for m in members])
    assert torch.equal(result.target, target)
    assert torch.allclose(result.samples, manual)
    assert torch.allclose(result.mean, manual.mean(0))
    assert torch.allclose(result.std, ((manual - manual.mean(0)) ** 2).mean(0).sqrt())
    mask = manual.mean(0).abs() > 1e-3 * manual.mean(0).abs().flatten(1).max(1).values.view(-1, 1, 1, 1)
    assert torch.allclose(result.cv[mask], (result.std / result.mean.abs())[mask])
    assert (result.cv[~mask] == 0).all()


def test_mc_dropout_uses_the_frozen_masks_and_restores_mode(x):
    model = small(0)
    model.train()
    posterior = MCDropout(model, num_samples=4, seed=2)
    uf = UncertaintyForward(posterior)
    result = ExplanationDistribution(uf, Saliency).attribute(x, target=1, abs=False)
    manual = []
    for s in range(4):
        point = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(posterior.sample_module(s)(point)[:, 1].sum(), point)
        manual.append(grad)
    assert torch.allclose(result.samples, torch.stack(manual))
    assert result.std.abs().sum() > 0  # the masks differ, so the explanations do
    assert model.training and all(m.training for m in model.modules())
    again = ExplanationDistribution(uf, Saliency).attribute(x, target=1, abs=False)
    assert torch.equal(again.samples, result.samples)


def test_bad_arguments(x):
    uf = UncertaintyForward([small(0).eval()])
    with pytest.raises(TypeError, match="attribution_class"):
        ExplanationDistribution(uf, torch.nn.Linear)
    with pytest.raises(TypeError, match="UncertaintyForward"):
        ExplanationDistribution(small(0), Saliency)
