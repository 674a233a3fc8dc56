"""MCDropConnect: frozen, seeded weight masks; each sample checked against a literal masked model."""

import contextlib
import math

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from captum_uncertainty import (
    ExplanationDistribution,
    FullGrad,
    MCDropConnect,
    UncertaintyForward,
    UncertaintyIntegratedGradients,
    WeightSamples,
)
from tests.helpers import assert_untouched, default_device, make_cnn, model_state

DOUBLE = torch.float64


def images(n=4, seed=0, dtype=DOUBLE):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2


def tiny_mlp(seed=0, dtype=DOUBLE):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def dropped_layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def literal_masks(layers, num_samples, p, seed):
    """The documented draw: one CPU generator seeded with ``seed``, weight by weight in order,
    ``torch.rand((S, *W.shape)) < 1 - p``."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand((num_samples,) + tuple(m.weight.shape), generator=generator) < 1 - p for m in layers]


def literal_weight_samples(model, layers, num_samples, p, seed):
    """Sample ``s`` as an explicit state dict: every dropped weight ``W * mask[s] / (1 - p)``."""
    names = {id(m): name for name, m in model.named_modules()}
    masks = literal_masks(layers, num_samples, p, seed)
    states = []
    for s in range(num_samples):
        state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        for layer, mask in zip(layers, masks):
            state[f"{names[id(layer)]}.weight"] = layer.weight.detach() * mask[s].to(DOUBLE) / (1 - p)
        states.append(state)
    return WeightSamples(model, states)


@contextlib.contextmanager
def weights_seen(layers):
    """Record ``(layer index, weight, bias)`` each time one of ``layers`` runs."""
    seen = []
    handles = [
        layer.register_forward_hook(
            lambda module, _inputs, _output, i=i: seen.append((i, module.weight.detach().clone(), module.bias))
        )
        for i, layer in enumerate(layers)
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


# ------------------------------------------------------------------ frozen, seeded, batch-independent


def test_masks_are_frozen_seeded_and_resampled():
    model = make_cnn(0)
    x = images()
    posterior = MCDropConnect(model, p=0.3, num_samples=6, seed=2)
    first = posterior(x)
    assert first.shape == (6, 4, 4) and first.dtype == DOUBLE
    assert torch.equal(posterior(x), first)
    assert not torch.allclose(first[0], first[1])  # the samples differ from one another
    assert torch.equal(MCDropConnect(model, p=0.3, num_samples=6, seed=2)(x), first)
    other_seed = MCDropConnect(model, p=0.3, num_samples=6, seed=3)(x)
    assert not torch.allclose(other_seed, first)

    uf = UncertaintyForward(posterior, "epistemic")
    uf(x)
    assert posterior.verified
    posterior.resample()
    assert not posterior.verified
    resampled = posterior(x)
    assert not torch.allclose(resampled, first)
    assert torch.equal(posterior(x), resampled)  # frozen again after the redraw
    posterior.resample(seed=3)
    assert torch.equal(posterior(x), other_seed)


def test_the_value_of_an_input_does_not_depend_on_its_batch():
    model = make_cnn(1)
    x = images(5)
    posterior = MCDropConnect(model, p=0.4, num_samples=4, seed=0)
    together = posterior(x)
    torch.testing.assert_close(posterior(x[:1]), together[:, :1], rtol=1e-12, atol=1e-12)
    split = torch.cat([posterior(x[:2]), posterior(x[2:])], dim=1)
    torch.testing.assert_close(split, together, rtol=1e-12, atol=1e-12)
    UncertaintyForward(posterior, "total")(x)  # and the library's own check agrees
    assert posterior.verified


# ------------------------------------------------------------------ against literal computations


def test_each_sample_is_the_model_with_literally_masked_weights():
    torch.manual_seed(0)
    model = nn.Linear(5, 3).to(DOUBLE)
    p, num_samples, seed = 0.3, 4, 7
    x = torch.randn(6, 5, dtype=DOUBLE)
    posterior = MCDropConnect(model, p=p, num_samples=num_samples, seed=seed)
    (masks,) = literal_masks([model], num_samples, p, seed)
    with torch.no_grad(), weights_seen([model]) as seen:
        out = posterior(x)
    assert len(seen) == num_samples
    for s, (_, weight, bias) in enumerate(seen):
        literal = model.weight.detach() * masks[s] / (1 - p)
        torch.testing.assert_close(weight, literal, rtol=1e-15, atol=0)
        kept = masks[s]
        assert torch.equal(weight[~kept], torch.zeros_like(weight[~kept]))  # dropped entries are exactly 0
        ratio = weight[kept] / model.weight.detach()[kept]
        torch.testing.assert_close(ratio, torch.full_like(ratio, 1 / (1 - p)), rtol=1e-15, atol=0)
        assert bias is model.bias  # the bias is the user's own, never dropped
        torch.testing.assert_close(out[s], x @ literal.T + model.bias.detach(), rtol=1e-12, atol=1e-12)
    assert 0 < int((~masks).sum()) < masks.numel()  # some entries kept, some dropped


def test_the_mean_over_many_samples_approaches_the_model():
    torch.manual_seed(0)
    model = nn.Linear(5, 3).to(DOUBLE)
    p, num_samples = 0.3, 4000
    x = torch.randn(4, 5, dtype=DOUBLE)
    with torch.no_grad():
        samples = MCDropConnect(model, p=p, num_samples=num_samples, seed=0)(x)
        plain = model(x)
    # Output j of one sample is b_j + sum_i W_ji x_i m_ji / (1 - p), m ~ Bernoulli(1 - p):
    # mean b_j + (W x)_j and variance p / (1 - p) * sum_i W_ji^2 x_i^2.
    variance = p / (1 - p) * (x.pow(2) @ model.weight.detach().pow(2).T)
    standard_error = (variance / num_samples).sqrt()
    assert ((samples.mean(0) - plain).abs() <= 5 * standard_error).all()
    # the spread matches the theory too (a wrong scale, e.g. no 1 / (1 - p), fails both checks)
    torch.testing.assert_close(samples.var(0), variance, rtol=0.1, atol=0)
    assert (5 * standard_error < 0.1 * variance.sqrt()).all()  # the tolerance is far below one sample's spread


def test_p_zero_gives_the_model_exactly_for_every_sample():
    model = make_cnn(2, hidden=8)
    x = images()
    with torch.no_grad():
        out = MCDropConnect(model, p=0.0, num_samples=3)(x)
        plain = model(x)
    for s in range(3):
        assert torch.equal(out[s], plain)


def test_only_the_given_layers_are_dropped():
    model = make_cnn(3, hidden=8)
    layers = dropped_layers(model)  # conv, conv, linear, linear
    chosen = [layers[1], layers[3]]
    p, num_samples, seed = 0.5, 3, 4
    posterior = MCDropConnect(model, p=p, num_samples=num_samples, seed=seed, layers=chosen)
    masks = literal_masks(chosen, num_samples, p, seed)
    x = images()
    with torch.no_grad(), weights_seen(layers) as seen:
        out = posterior(x)
    assert len(seen) == 4 * num_samples
    for position, (index, weight, _) in enumerate(seen):
        s = position // 4
        if layers[index] in chosen:
            mask = masks[chosen.index(layers[index])][s]
            torch.testing.assert_close(weight, layers[index].weight.detach() * mask / (1 - p), rtol=1e-15, atol=0)
        else:
            assert torch.equal(weight, layers[index].weight.detach())  # exactly the user's weight
    with torch.no_grad():
        reference = literal_weight_samples(model, chosen, num_samples, p, seed)(x)
    torch.testing.assert_close(out, reference, rtol=1e-10, atol=1e-12)


def test_forward_per_sample_feeds_sample_s_its_own_inputs_and_gradients_flow():
    model = make_cnn(4)
    posterior = MCDropConnect(model, p=0.2, num_samples=3, seed=0)
    assert posterior.num_samples == 3 and posterior.sample_modules() == [model]
    inputs = torch.rand(3, 2, 1, 8, 8, dtype=DOUBLE, requires_grad=True)
    out = posterior.forward_per_sample(inputs)
    assert out.shape == (3, 2, 4)
    for s in range(3):
        single = inputs[s].detach().clone().requires_grad_()
        alone = posterior.forward_single(s, single)
        torch.testing.assert_close(out[s], alone, rtol=1e-12, atol=1e-12)
        (grad,) = torch.autograd.grad(out[s].sum(), inputs, retain_graph=True)
        (grad_alone,) = torch.autograd.grad(alone.sum(), single)
        assert grad_alone.abs().sum() > 0
        torch.testing.assert_close(grad[s], grad_alone, rtol=1e-12, atol=1e-12)
        others = [t for t in range(3) if t != s]
        assert torch.equal(grad[others], torch.zeros_like(grad[others]))
        torch.testing.assert_close(posterior.sample_module(s)(inputs[s]), out[s], rtol=1e-12, atol=1e-12)


def test_hooks_on_the_users_layers_fire_and_see_the_running_sample():
    model = make_cnn(5)
    posterior = MCDropConnect(model, p=0.2, num_samples=3, seed=0)
    records = []
    handle = model[0].register_forward_hook(
        lambda module, _inputs, output: records.append((posterior.current_sample, module.training, output.shape[0]))
    )
    try:
        with posterior.hookable():
            posterior(images(2))
        posterior.forward_single(1, images(2))
    finally:
        handle.remove()
    assert records == [(0, False, 2), (1, False, 2), (2, False, 2), (1, False, 2)]  # eval mode inside the call
    assert posterior.current_sample is None


def test_tied_weights_share_one_mask():
    torch.manual_seed(0)
    tied = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)).to(DOUBLE)
    tied[2].weight = tied[0].weight  # one weight used by two layers
    with torch.no_grad(), weights_seen([tied[0], tied[2]]) as seen:
        MCDropConnect(tied, p=0.5, num_samples=2, seed=0)(torch.rand(3, 4, dtype=DOUBLE))
    assert [i for i, _, _ in seen] == [0, 1, 0, 1]
    assert torch.equal(seen[0][1], seen[1][1]) and torch.equal(seen[2][1], seen[3][1])
    assert not torch.equal(seen[0][1], seen[2][1])
    assert tied[0].weight is tied[2].weight


def test_binary_models_returning_one_score_give_n_by_1():
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 1), nn.Flatten(0)).to(DOUBLE)
    posterior = MCDropConnect(model, p=0.2, num_samples=3)
    x = torch.rand(6, 4, dtype=DOUBLE)
    assert posterior(x).shape == (3, 6, 1)
    assert posterior.forward_single(2, x).shape == (6, 1)


# ------------------------------------------------------------------ the user's model is untouched


def test_the_users_model_is_untouched_by_calls_and_by_calls_that_raise():
    model = make_cnn(6, hidden=8)
    model.append(nn.Dropout(0.5))
    model.train()
    model[0].bias.requires_grad_(False)
    user_hooks = []
    model[3].register_forward_hook(lambda *args: user_hooks.append(1))
    before = model_state([model])
    posterior = MCDropConnect(model, p=0.3, num_samples=4, seed=0)
    x = images().requires_grad_()
    out = posterior(x)
    assert len(user_hooks) == 4  # the user's hook ran once per sample, and is still the only one
    (grad,) = torch.autograd.grad(UncertaintyForward(posterior, "epistemic")(x).sum(), x)
    assert grad.abs().sum() > 0
    assert_untouched(before, [model])
    # the call ran in eval mode: Dropout off, BatchNorm on its running statistics
    model.eval()
    reference = MCDropConnect(model, p=0.3, num_samples=4, seed=0)(x)
    model.train()
    assert torch.equal(out, reference)
    with pytest.raises(RuntimeError):
        posterior(torch.rand(2, 1, 3, 3, dtype=DOUBLE))  # too small for the max-pool: fails mid-forward
    with pytest.raises(RuntimeError):
        posterior.forward_single(0, torch.rand(2, 1, 3, 3, dtype=DOUBLE))
    assert_untouched(before, [model])


# ------------------------------------------------------------------ with Captum and the library's methods


def test_integrated_gradients_through_uncertainty_forward_is_complete():
    model = tiny_mlp(1)
    uf = UncertaintyForward(MCDropConnect(model, p=0.3, num_samples=8, seed=0), "epistemic")
    x = torch.randn(3, 4, dtype=DOUBLE) * 2
    baseline = torch.zeros_like(x)
    ig = IntegratedGradients(uf)
    attributions = ig.attribute(x, baselines=baseline, n_steps=200)
    with torch.no_grad():
        difference = uf(x) - uf(baseline)
    assert (difference.abs() > 1e-4).all()
    torch.testing.assert_close(attributions.sum(1), difference, rtol=1e-3, atol=0)
    chunked = ig.attribute(x, baselines=baseline, n_steps=200, internal_batch_size=7)
    torch.testing.assert_close(chunked, attributions, rtol=1e-10, atol=1e-12)


def test_attributions_equal_those_of_the_literal_weight_samples():
    model = make_cnn(7)
    p, num_samples, seed = 0.3, 3, 5
    x = images(2).requires_grad_()  # Saliency would warn about setting it
    ours = UncertaintyForward(MCDropConnect(model, p=p, num_samples=num_samples, seed=seed), "epistemic")
    literal = UncertaintyForward(
        literal_weight_samples(model, dropped_layers(model), num_samples, p, seed), "epistemic"
    )
    torch.testing.assert_close(ours(x), literal(x), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(FullGrad(ours).attribute(x), FullGrad(literal).attribute(x), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(
        ExplanationDistribution(ours, Saliency).attribute(x).samples,
        ExplanationDistribution(literal, Saliency).attribute(x).samples,
        rtol=1e-7,
        atol=1e-9,
    )


# ------------------------------------------------------------------ devices and dtypes


def device_cases(device, dtype=DOUBLE):
    model = make_cnn(8, hidden=8).to(device=device, dtype=dtype)
    posterior = MCDropConnect(model, p=0.3, num_samples=3, seed=1)
    uf = UncertaintyForward(posterior, "total")
    x = images(3, dtype=dtype).to(device)

    def resampled():
        posterior.resample(seed=4)
        return posterior(x)

    return {
        "posterior": lambda: posterior(x),
        "forward_single": lambda: posterior.forward_single(2, x),
        "uncertainty": lambda: uf(x),
        "uig": lambda: UncertaintyIntegratedGradients(uf).attribute(x, n_steps=4),
        "fullgrad": lambda: FullGrad(uf).attribute(x),
        "resample": resampled,
    }


def test_no_tensor_is_made_off_the_inputs_device():
    cases = device_cases("cpu")
    for name, case in cases.items():
        expected = case()
        with default_device("meta"):
            got = case()
        assert got.device == expected.device and got.dtype == expected.dtype == DOUBLE, name
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


def test_float32_stays_float32():
    for name, case in device_cases("cpu", torch.float32).items():
        with default_device("meta"):
            result = case()
        assert result.dtype == torch.float32 and result.device.type == "cpu", name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_results_equal_cpu_results():
    cpu, cuda = device_cases("cpu"), device_cases("cuda")
    for name in cpu:
        got = cuda[name]()
        assert got.device.type == "cuda" and got.dtype == DOUBLE, name
        torch.testing.assert_close(got.cpu(), cpu[name](), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, math.nan, "0.1", True, None])
def test_bad_p(p):
    with pytest.raises(ValueError, match=r"^p must be"):
        MCDropConnect(tiny_mlp(), p=p)


@pytest.mark.parametrize("num_samples", [0, -2, 2.5, True])
def test_bad_num_samples(num_samples):
    with pytest.raises(ValueError, match=r"^num_samples must be a positive int"):
        MCDropConnect(tiny_mlp(), num_samples=num_samples)


@pytest.mark.parametrize("seed", ["0", 1.5, None])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=r"^seed must be an int"):
        MCDropConnect(tiny_mlp(), seed=seed)
    posterior = MCDropConnect(tiny_mlp())
    if seed is not None:
        with pytest.raises(ValueError, match=r"^seed must be an int"):
            posterior.resample(seed=seed)


def test_bad_model_and_layers():
    model = tiny_mlp()
    with pytest.raises(TypeError, match="^model must be an nn.Module, got function"):
        MCDropConnect(lambda x: x)
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv1d/2d/3d layers"):
        MCDropConnect(nn.Sequential(nn.Flatten(), nn.ReLU()))
    with pytest.raises(ValueError, match=r"^layers\[0\] must be an nn.Linear or nn.Conv1d/2d/3d module.*Tanh"):
        MCDropConnect(model, layers=[model[1]])
    with pytest.raises(ValueError, match=r"^layers\[1\] \(a Linear\) is not a submodule of model"):
        MCDropConnect(model, layers=[model[0], nn.Linear(4, 6)])
    with pytest.raises(TypeError, match="^layers must be a sequence of modules, got a single Linear"):
        MCDropConnect(model, layers=model[0])
    with pytest.raises(TypeError, match="^layers must be a sequence of modules, got int"):
        MCDropConnect(model, layers=3)
    with pytest.raises(ValueError, match="^layers is empty"):
        MCDropConnect(model, layers=[])
    with pytest.raises(ValueError, match=r"^layers\[0\] \(a LazyLinear\) has no plain weight"):
        lazy = nn.Sequential(nn.LazyLinear(3))
        MCDropConnect(lazy, layers=[lazy[0]])
    weight_normed = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(4, 3)))
    with pytest.raises(ValueError, match="layer '0' .* has no plain weight"):
        MCDropConnect(weight_normed)


def test_bad_sample_index_and_outputs():
    posterior = MCDropConnect(tiny_mlp(), num_samples=3)
    x = torch.rand(2, 4, dtype=DOUBLE)
    for sample in (3, -1, 1.0):
        with pytest.raises(ValueError, match=r"^sample must be an int in \[0, 2\]"):
            posterior.forward_single(sample, x)
    cube = nn.Sequential(nn.Linear(4, 6), nn.Unflatten(1, (2, 3))).to(DOUBLE)
    with pytest.raises(ValueError, match=r"returned shape \(2, 2, 3\), expected \(N, C\)"):
        MCDropConnect(cube, num_samples=2)(x)
    with pytest.raises(ValueError, match=r"returned shape \(2, 2, 3\), expected \(N, C\)"):
        MCDropConnect(cube, num_samples=2).forward_single(1, x)
