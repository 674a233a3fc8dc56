"""ExplanationDistribution of a regressor (likelihood="gaussian"): every member's mean, explained by Captum."""

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import nn

from captum_uncertainty import ExplanationDistribution, Gaussian, MCDropout, UncertaintyForward
from captum_uncertainty.attr._utils.samples import default_target, format_target, sample_explained_module
from tests.helpers import (
    MeansOnlyRegressor,
    assert_same_tensors,
    assert_untouched,
    default_device,
    make_regressor,
    model_state,
)


def gaussian(members, variance="log_variance"):
    return UncertaintyForward(members, "epistemic", likelihood=Gaussian(variance=variance))


@pytest.fixture
def members():
    return [make_regressor(seed) for seed in range(4)]


@pytest.fixture
def x():
    generator = torch.Generator().manual_seed(5)
    return torch.randn(3, 5, generator=generator, dtype=torch.float64)


def column_igs(modules, x, column):
    """Captum's IG of each module's output ``column``, one module at a time, ``(S, N, 5)``."""
    return torch.stack(
        [
            IntegratedGradients(lambda t, m=m: m(t)[:, column]).attribute(x, baselines=torch.zeros_like(x), n_steps=40)
            for m in modules
        ]
    )


def test_every_sample_explains_its_predicted_mean(members, x):
    result = ExplanationDistribution(gaussian(members), IntegratedGradients).attribute(
        x, baselines=torch.zeros_like(x), n_steps=40
    )
    manual = column_igs(members, x, 0)
    torch.testing.assert_close(result.samples, manual, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(result.mean, manual.mean(0), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(result.std, ((manual - manual.mean(0)) ** 2).mean(0).sqrt(), rtol=1e-12, atol=1e-15)
    assert result.std.min() > 0  # the members differ
    # the default target: zeros, column 0 of the members' outputs, the mean
    assert result.target.dtype == torch.int64 and torch.equal(result.target, torch.zeros(3, dtype=torch.int64))
    # completeness of each member's IG: the map sums to mu_s(x) - mu_s(0)
    with torch.no_grad():
        differences = torch.stack([m(x)[:, 0] - m(x * 0)[:, 0] for m in members])
    torch.testing.assert_close(result.samples.sum(-1), differences, rtol=1e-5, atol=1e-8)


def test_a_target_explains_a_raw_output_column(members, x):
    method = ExplanationDistribution(gaussian(members), IntegratedGradients)
    heads = method.attribute(x, target=1, baselines=torch.zeros_like(x), n_steps=40)
    torch.testing.assert_close(heads.samples, column_igs(members, x, 1), rtol=1e-12, atol=1e-15)
    assert torch.equal(heads.target, torch.ones(3, dtype=torch.int64))
    means = method.attribute(x, target=0, baselines=torch.zeros_like(x), n_steps=40)
    torch.testing.assert_close(means.samples, column_igs(members, x, 0), rtol=1e-12, atol=1e-15)
    assert not torch.allclose(heads.samples, means.samples)
    per_input = method.attribute(x, target=torch.tensor([1, 0, 1]), baselines=torch.zeros_like(x), n_steps=40)
    torch.testing.assert_close(per_input.samples[:, [0, 2]], heads.samples[:, [0, 2]], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(per_input.samples[:, 1], means.samples[:, 1], rtol=1e-12, atol=1e-15)


def test_means_only_members(x):
    members = [MeansOnlyRegressor(seed) for seed in range(3)]
    result = ExplanationDistribution(gaussian(members, None), Saliency).attribute(x, abs=False)
    manual = []
    for m in members:
        point = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(m(point).sum(), point)
        manual.append(grad)
    torch.testing.assert_close(result.samples, torch.stack(manual), rtol=1e-12, atol=1e-15)
    column = ExplanationDistribution(gaussian(members, None), Saliency).attribute(x, target=0, abs=False)
    torch.testing.assert_close(column.samples, result.samples, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="target selects column 1 .* which have 1 \\(the means only"):
        ExplanationDistribution(gaussian(members, None), Saliency).attribute(x, target=1)


def test_mc_dropout_regressor(x):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 2)).double()
    model.train()
    posterior = MCDropout(model, num_samples=3, seed=4)
    result = ExplanationDistribution(gaussian(posterior), IntegratedGradients).attribute(
        x, baselines=torch.zeros_like(x), n_steps=40
    )
    manual = column_igs([posterior.sample_module(s) for s in range(3)], x, 0)
    torch.testing.assert_close(result.samples, manual, rtol=1e-12, atol=1e-15)
    assert result.std.max() > 0
    assert model.training and all(m.training for m in model.modules())


def test_the_shared_sample_module_and_target_helpers(members, x):
    uf = gaussian(members)
    with torch.no_grad():
        assert torch.equal(sample_explained_module(uf, 2)(x), members[2](x)[:, 0])
        assert torch.equal(sample_explained_module(uf, 2, target=1)(x), members[2](x))
    assert torch.equal(default_target(uf, (x,)), torch.zeros(3, dtype=torch.int64))
    classifiers = UncertaintyForward([make_regressor(seed, outputs=3) for seed in range(3)])
    with torch.no_grad():
        predicted = torch.stack([torch.softmax(m(x), 1) for m in classifiers.posterior.members]).mean(0).argmax(1)
    assert torch.equal(default_target(classifiers, (x,)), predicted)
    with torch.no_grad():
        assert torch.equal(sample_explained_module(classifiers, 1)(x), classifiers.posterior.members[1](x))
    assert torch.equal(format_target(2, 3, x.device), torch.tensor([2, 2, 2]))
    assert torch.equal(format_target([0, 1, 0], 3, x.device), torch.tensor([0, 1, 0]))
    with pytest.raises(TypeError, match="target must hold integers"):
        format_target(torch.tensor([0.5]), 3, x.device)
    with pytest.raises(ValueError, match="target must be non-negative"):
        format_target(-1, 3, x.device)


def test_members_are_untouched_and_errors_name_the_argument(members, x):
    before = model_state(members)
    ExplanationDistribution(gaussian(members), IntegratedGradients).attribute(x, n_steps=10)
    ExplanationDistribution(gaussian(members), Saliency).attribute(x, target=1)
    with pytest.raises(ValueError, match="target selects column 2"):
        ExplanationDistribution(gaussian(members), Saliency).attribute(x, target=2)
    with pytest.raises(TypeError, match="target must be an int"):
        ExplanationDistribution(gaussian(members), Saliency).attribute(x, target=1.0)
    assert_untouched(before, members)


@pytest.mark.parametrize("target", [None, 1])
def test_no_tensor_is_made_off_the_inputs_device(members, x, target):
    method = ExplanationDistribution(gaussian(members), InputXGradient)
    expected = method.attribute(x, target=target)
    with default_device("meta"):
        got = method.attribute(x, target=target)
    assert_same_tensors(got, expected)
