"""UncertaintyIntegratedGradients: equality with Captum's IG, B+W baseline, one-pass decomposition."""

import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel

from captum_uncertainty import UncertaintyForward
from captum_uncertainty.attr.integrated_gradients import UncertaintyIntegratedGradients


def small_cnn(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)
    ).double()


@pytest.fixture(scope="module")
def members():
    return [small_cnn(seed) for seed in range(3)]


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(10)
    return torch.rand(4, 1, 8, 8, dtype=torch.float64) * 3


@pytest.mark.parametrize("measure", ["total", "aleatoric", "epistemic"])
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_left"])
def test_equals_captum_integrated_gradients(members, x, measure, method):
    uf = UncertaintyForward(members, measure=measure)
    baseline = torch.full_like(x, 0.3)
    ours, delta = UncertaintyIntegratedGradients(uf).attribute(
        x, baselines=baseline, n_steps=20, method=method, return_convergence_delta=True
    )
    theirs, their_delta = IntegratedGradients(uf).attribute(
        x, baselines=baseline, n_steps=20, method=method, return_convergence_delta=True
    )
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    assert torch.allclose(delta, their_delta, atol=1e-6)


def test_string_baselines_and_black_white_average(members, x):
    uf = UncertaintyForward(members, measure="total")
    uig = UncertaintyIntegratedGradients(uf)
    black = uig.attribute(x, baselines="black", n_steps=16)
    white = uig.attribute(x, baselines="white", n_steps=16)
    assert torch.allclose(black, IntegratedGradients(uf).attribute(x, baselines=torch.zeros_like(x), n_steps=16))
    assert torch.allclose(white, IntegratedGradients(uf).attribute(x, baselines=torch.ones_like(x), n_steps=16))
    both, delta = uig.attribute(x, baselines="black_white", n_steps=200, return_convergence_delta=True)
    assert torch.allclose(both, (black + white) / 2)
    with torch.no_grad():
        expected = uf(x) - (uf(torch.zeros_like(x)) + uf(torch.ones_like(x))) / 2
    assert torch.allclose(both.flatten(1).sum(1), expected, atol=1e-3)
    assert delta.abs().max() < 1e-3


def test_decompose_one_pass_equals_separate_runs_and_is_complete(members, x):
    uf = UncertaintyForward(members, measure="total")
    parts, deltas = UncertaintyIntegratedGradients(uf).attribute(
        x, baselines="black", n_steps=100, decompose=True, return_convergence_delta=True
    )
    for name in ("total", "aleatoric", "epistemic"):
        separate = UncertaintyIntegratedGradients(uf.with_measure(name)).attribute(x, baselines="black", n_steps=100)
        assert torch.allclose(parts.select(name), separate, atol=1e-9)
    assert torch.allclose(parts.total, parts.aleatoric + parts.epistemic)
    assert deltas.epistemic.abs().max() < 1e-4 and deltas.total.abs().max() < 1e-4


def test_internal_batch_size_and_additional_forward_args(members, x):
    class Shifted(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, inputs, shift):
            return self.net(inputs) + shift

    uf = UncertaintyForward([Shifted(m) for m in members], measure="epistemic")
    shift = torch.arange(20, dtype=torch.float64).view(4, 5) / 10
    uig = UncertaintyIntegratedGradients(uf)
    whole = uig.attribute(x, additional_forward_args=(shift,), n_steps=12)
    chunked = uig.attribute(x, additional_forward_args=(shift,), n_steps=12, internal_batch_size=9)
    captum = IntegratedGradients(uf).attribute(x, additional_forward_args=(shift,), n_steps=12)
    assert torch.allclose(whole, chunked) and torch.allclose(whole, captum, atol=1e-6)


def test_noise_tunnel_matches_captum_ig_under_the_same_noise(members, x):
    uf = UncertaintyForward(members, measure="total")
    kwargs = dict(nt_type="smoothgrad", nt_samples=3, stdevs=0.1, n_steps=8)
    torch.manual_seed(0)
    ours = NoiseTunnel(UncertaintyIntegratedGradients(uf)).attribute(x, **kwargs)
    torch.manual_seed(0)
    theirs = NoiseTunnel(IntegratedGradients(uf)).attribute(x, **kwargs)
    assert torch.allclose(ours, theirs, atol=1e-8)
    plain = UncertaintyIntegratedGradients(uf).attribute(x, n_steps=8)
    assert not torch.allclose(ours, plain, atol=1e-6)  # the noise did something
    quiet = NoiseTunnel(UncertaintyIntegratedGradients(uf)).attribute(x, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, n_steps=8)
    assert torch.allclose(quiet, plain)


def test_bad_input(members, x):
    uig = UncertaintyIntegratedGradients(UncertaintyForward(members))
    with pytest.raises(ValueError, match="n_steps"):
        uig.attribute(x, n_steps=0)
    with pytest.raises(ValueError, match="baselines"):
        uig.attribute(x, baselines=torch.zeros(3, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="baselines"):
        uig.attribute(x, baselines="grey")
    with pytest.raises(ValueError, match="method"):
        uig.attribute(x, method="simpson")
    with pytest.raises(TypeError, match="UncertaintyForward"):
        UncertaintyIntegratedGradients(members[0])
