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
    quiet = NoiseTunnel(UncertaintyIntegratedGradients(uf)).attribute(
        x, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, n_steps=8
    )
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


# ----------------------------------------------------------------------------- Captum's calling conventions
class Gated(torch.nn.Module):
    """A member taking an extra per-example argument: logits of ``x`` scaled by ``gate``."""

    def __init__(self, seed):
        super().__init__()
        self.net = small_cnn(seed)

    def forward(self, x, gate):
        return self.net(x) * gate.view(-1, 1)


def test_same_positional_call_as_captum_with_an_extra_argument(x):
    uf = UncertaintyForward([Gated(seed) for seed in range(3)], measure="epistemic")
    gate = torch.linspace(0.5, 2.0, x.shape[0], dtype=torch.float64)
    baseline = torch.full_like(x, 0.2)
    ours, our_delta = UncertaintyIntegratedGradients(uf).attribute(
        x, baseline, None, gate, 32, "gausslegendre", 5, True
    )
    theirs, their_delta = IntegratedGradients(uf).attribute(x, baseline, None, gate, 32, "gausslegendre", 5, True)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    assert torch.allclose(our_delta, their_delta, atol=1e-6)
    # the argument really reaches the members: another gate, another map
    other = UncertaintyIntegratedGradients(uf).attribute(x, baseline, None, gate.flip(0), 32)
    assert not torch.allclose(ours, other, atol=1e-4)


class TwoInputs(torch.nn.Module):
    """A member taking an image and a feature vector."""

    def __init__(self, seed):
        super().__init__()
        self.net = small_cnn(seed)
        torch.manual_seed(seed + 100)
        self.side = torch.nn.Linear(3, 5).double()

    def forward(self, image, features):
        return self.net(image) + self.side(features)


def test_tuple_inputs_as_captum_accepts_them(x):
    uf = UncertaintyForward([TwoInputs(seed) for seed in range(3)], measure="total")
    features = torch.linspace(-1, 1, x.shape[0] * 3, dtype=torch.float64).view(-1, 3)
    inputs, baselines = (x, features), (torch.zeros_like(x), 0.5)
    ours, delta = UncertaintyIntegratedGradients(uf).attribute(
        inputs, baselines, n_steps=24, return_convergence_delta=True
    )
    theirs = IntegratedGradients(uf).attribute(inputs, baselines, n_steps=24)
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-8)
    # completeness over both inputs together
    with torch.no_grad():
        gap = uf(x, features) - uf(torch.zeros_like(x), torch.full_like(features, 0.5))
    assert torch.allclose(ours[0].flatten(1).sum(1) + ours[1].sum(1), gap + delta, atol=1e-10)
    total, aleatoric, epistemic = UncertaintyIntegratedGradients(uf).attribute(
        inputs, baselines, n_steps=8, decompose=True
    )
    assert isinstance(epistemic, tuple) and torch.allclose(epistemic[1], total[1] - aleatoric[1])


@pytest.mark.parametrize("measure", ["total", "aleatoric", "epistemic"])
def test_target_attributes_the_class_term_of_eq4(members, x, measure):
    uf = UncertaintyForward(members, measure=measure)
    uig = UncertaintyIntegratedGradients(uf)
    per_class = [uig.attribute(x, 0.3, target=c, n_steps=16) for c in range(5)]
    # Captum's IG on the per-class terms with the same target
    class_terms = lambda inputs: uf.per_class(inputs).select(measure)  # noqa: E731
    for c in (0, 3):
        captum_map = IntegratedGradients(class_terms).attribute(x, 0.3, target=c, n_steps=16)
        assert torch.allclose(per_class[c], captum_map, atol=1e-8)
    # the class terms sum to the measure, so do their attributions
    assert torch.allclose(sum(per_class), uig.attribute(x, 0.3, n_steps=16), atol=1e-10)
    rows = torch.tensor([0, 1, 2, 4])
    mixed = uig.attribute(x, 0.3, target=rows, n_steps=16)
    assert torch.allclose(mixed, torch.stack([per_class[int(c)][i] for i, c in enumerate(rows)]), atol=1e-10)
    with pytest.raises(ValueError, match="target"):
        uig.attribute(x, target=7)
    with pytest.raises(TypeError, match="target"):
        uig.attribute(x, target=1.5)


def test_multiplies_by_inputs_follows_the_option(members):
    uf = UncertaintyForward(members)
    assert UncertaintyIntegratedGradients(uf).multiplies_by_inputs
    assert not UncertaintyIntegratedGradients(uf, multiply_by_inputs=False).multiplies_by_inputs


def test_noise_tunnel_keeps_the_decomposition(members, x):
    uf = UncertaintyForward(members, measure="total")
    kwargs = dict(nt_type="smoothgrad", nt_samples=3, stdevs=0.1, n_steps=8)
    torch.manual_seed(1)
    total, aleatoric, epistemic = NoiseTunnel(UncertaintyIntegratedGradients(uf)).attribute(x, decompose=True, **kwargs)
    torch.manual_seed(1)
    alone = NoiseTunnel(UncertaintyIntegratedGradients(uf)).attribute(x, **kwargs)
    torch.manual_seed(1)
    epistemic_alone = NoiseTunnel(UncertaintyIntegratedGradients(uf.with_measure("epistemic"))).attribute(x, **kwargs)
    assert torch.allclose(total, alone, atol=1e-10)
    assert torch.allclose(epistemic, epistemic_alone, atol=1e-10)
    assert torch.allclose(total - aleatoric, epistemic, atol=1e-12)
