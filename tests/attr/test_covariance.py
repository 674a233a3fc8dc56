"""CovarianceAttribution against literal loops over the posterior samples (regressors and classifiers)."""

import copy

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from captum_uncertainty import CovarianceAttribution, Gaussian, MCDropout, UncertaintyForward
from captum_uncertainty.attr.covariance import SUPPORTED_MODES
from tests.helpers import (
    MeansOnlyRegressor,
    assert_same_tensors,
    assert_untouched,
    default_device,
    make_regressor,
    model_state,
)

IG_KWARGS = {"n_steps": 200}


def classifier(seed, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, classes)).double()


class TwoInputs(nn.Module):
    """A regressor reading two tensors, ``(N, 2)`` and ``(N, 3)``."""

    def __init__(self, seed):
        super().__init__()
        self.net = make_regressor(seed)

    def forward(self, a, b):
        return self.net(torch.cat([a, b], dim=1))


def gaussian(members, variance="log_variance"):
    return UncertaintyForward(members, "epistemic", likelihood=Gaussian(variance=variance))


@pytest.fixture
def members():
    return [make_regressor(seed) for seed in range(4)]


@pytest.fixture
def x():
    generator = torch.Generator().manual_seed(7)
    return torch.randn(3, 5, generator=generator, dtype=torch.float64)


def member_igs(members, x, column, baselines):
    """Captum's IG of every member's output ``column``, literally, ``(S, N, 5)``."""
    return torch.stack(
        [
            IntegratedGradients(lambda t, m=m: m(t)[:, column]).attribute(x, baselines=baselines, **IG_KWARGS)
            for m in members
        ]
    )


def literal_marginal(explanations):
    """``mean_s (R_si - mean_t R_ti) (sum_j R_sj - mean_t sum_j R_tj)`` by loops, ``(N, F)``."""
    samples, batch, features = explanations.shape
    out = torch.zeros(batch, features, dtype=explanations.dtype)
    for n in range(batch):
        totals = [float(explanations[s, n].sum()) for s in range(samples)]
        mean_total = sum(totals) / samples
        for i in range(features):
            values = [float(explanations[s, n, i]) for s in range(samples)]
            mean = sum(values) / samples
            out[n, i] = sum((values[s] - mean) * (totals[s] - mean_total) for s in range(samples)) / samples
    return out


def literal_diagonal(explanations):
    """``mean_s (R_si - mean_t R_ti)^2`` by loops, ``(N, F)``."""
    samples, batch, features = explanations.shape
    out = torch.zeros(batch, features, dtype=explanations.dtype)
    for n in range(batch):
        for i in range(features):
            values = [float(explanations[s, n, i]) for s in range(samples)]
            mean = sum(values) / samples
            out[n, i] = sum((v - mean) ** 2 for v in values) / samples
    return out


# ----------------------------------------------------------------------------- regressors: the means


def test_marginal_sums_to_the_variance_of_the_mean_differences(members, x):
    result = CovarianceAttribution(gaussian(members), IntegratedGradients).attribute(
        x, baselines=torch.zeros_like(x), **IG_KWARGS
    )
    with torch.no_grad():
        differences = torch.stack([m(x)[:, 0] - m(torch.zeros_like(x))[:, 0] for m in members])
    variance = ((differences - differences.mean(0)) ** 2).mean(0)
    assert result.shape == x.shape and result.dtype == x.dtype
    assert (variance > 1e-4).all()
    torch.testing.assert_close(result.sum(1), variance, rtol=1e-6, atol=0)


def test_marginal_equals_a_literal_covariance_and_can_be_negative(members, x):
    result = CovarianceAttribution(gaussian(members), IntegratedGradients).attribute(x, baselines=0.0, **IG_KWARGS)
    explanations = member_igs(members, x, 0, torch.zeros_like(x))
    torch.testing.assert_close(result, literal_marginal(explanations), rtol=1e-9, atol=1e-13)
    assert (result < 0).any() and (result > 0).any()


def test_diagonal_equals_a_literal_variance_loop(members, x):
    result = CovarianceAttribution(gaussian(members), IntegratedGradients).attribute(
        x, mode="diagonal", baselines=torch.zeros_like(x), **IG_KWARGS
    )
    expected = literal_diagonal(member_igs(members, x, 0, torch.zeros_like(x)))
    torch.testing.assert_close(result, expected, rtol=1e-9, atol=1e-13)
    assert (result >= 0).all() and (result > 0).any()
    marginal = CovarianceAttribution(gaussian(members), IntegratedGradients).attribute(x, baselines=0.0, **IG_KWARGS)
    assert not torch.allclose(result, marginal)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_identical_members_and_a_single_sample_give_exact_zeros(x, mode):
    member = make_regressor(0)
    for posterior in ([copy.deepcopy(member) for _ in range(3)], [member]):
        result = CovarianceAttribution(gaussian(posterior), IntegratedGradients).attribute(
            x, mode=mode, baselines=0.0, n_steps=20
        )
        assert torch.equal(result, torch.zeros_like(x))


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_permuting_the_members_changes_nothing(members, x, mode):
    method = CovarianceAttribution(gaussian(members), IntegratedGradients)
    permuted = CovarianceAttribution(gaussian([members[i] for i in (2, 0, 3, 1)]), IntegratedGradients)
    first = method.attribute(x, mode=mode, baselines=0.0, n_steps=30)
    second = permuted.attribute(x, mode=mode, baselines=0.0, n_steps=30)
    assert first.abs().max() > 1e-4
    torch.testing.assert_close(first, second, rtol=1e-12, atol=1e-15)


def test_tuple_inputs_keep_their_structure_and_the_sum_holds(x):
    members = [TwoInputs(seed) for seed in range(4)]
    a, b = x[:, :2].clone(), x[:, 2:].clone()
    method = CovarianceAttribution(gaussian(members), IntegratedGradients)
    result = method.attribute((a, b), baselines=(0.0, 0.0), **IG_KWARGS)
    assert isinstance(result, tuple) and len(result) == 2
    assert result[0].shape == a.shape and result[1].shape == b.shape
    with torch.no_grad():
        differences = torch.stack([m(a, b)[:, 0] - m(a * 0, b * 0)[:, 0] for m in members])
    variance = ((differences - differences.mean(0)) ** 2).mean(0)
    torch.testing.assert_close(result[0].sum(1) + result[1].sum(1), variance, rtol=1e-6, atol=0)
    assert result[1].sum(1).abs().max() > 1e-6  # both tensors take part

    # the marginal of a feature of ``a`` uses the total over both tensors: the single-tensor values
    def joined_ig(m):
        return IntegratedGradients(lambda p, q: m(p, q)[:, 0]).attribute((a, b), baselines=(0.0, 0.0), n_steps=30)

    joined = torch.stack([torch.cat(joined_ig(m), dim=1) for m in members])
    coarse = method.attribute((a, b), baselines=(0.0, 0.0), n_steps=30)
    torch.testing.assert_close(torch.cat(coarse, dim=1), literal_marginal(joined), rtol=1e-9, atol=1e-13)
    diagonal = method.attribute((a, b), mode="diagonal", baselines=(0.0, 0.0), n_steps=30)
    torch.testing.assert_close(torch.cat(diagonal, dim=1), literal_diagonal(joined), rtol=1e-9, atol=1e-13)


def test_a_target_explains_a_raw_output_column(members, x):
    """``target=1`` explains the members' variance heads; ``target=0`` their means."""
    method = CovarianceAttribution(gaussian(members), IntegratedGradients)
    heads = method.attribute(x, target=1, baselines=0.0, **IG_KWARGS)
    torch.testing.assert_close(
        heads, literal_marginal(member_igs(members, x, 1, torch.zeros_like(x))), rtol=1e-9, atol=1e-13
    )
    means = method.attribute(x, target=0, baselines=0.0, **IG_KWARGS)
    torch.testing.assert_close(means, method.attribute(x, baselines=0.0, **IG_KWARGS), rtol=1e-12, atol=1e-15)
    assert not torch.allclose(heads, means)


def test_means_only_members_returning_one_dimension(x):
    members = [MeansOnlyRegressor(seed) for seed in range(3)]
    result = CovarianceAttribution(gaussian(members, None), IntegratedGradients).attribute(
        x, baselines=0.0, **IG_KWARGS
    )
    with torch.no_grad():
        differences = torch.stack([m(x) - m(x * 0) for m in members])
    torch.testing.assert_close(result.sum(1), differences.var(0, unbiased=False), rtol=1e-6, atol=0)


def test_mc_dropout_regressor_uses_its_frozen_masks(x):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 2)).double()
    posterior = MCDropout(model, num_samples=4, seed=3)
    uf = gaussian(posterior)
    result = CovarianceAttribution(uf, IntegratedGradients).attribute(x, mode="diagonal", baselines=0.0, n_steps=30)
    explanations = torch.stack(
        [
            IntegratedGradients(lambda t, s=s: posterior.sample_module(s)(t)[:, 0]).attribute(
                x, baselines=0.0, n_steps=30
            )
            for s in range(4)
        ]
    )
    torch.testing.assert_close(result, literal_diagonal(explanations), rtol=1e-9, atol=1e-13)
    assert result.abs().max() > 0


# ----------------------------------------------------------------------------- classifiers: the target's logit


def test_a_classifier_explains_the_logits_of_the_predicted_class(x):
    members = [classifier(seed) for seed in range(4)]
    uf = UncertaintyForward(members, "epistemic")
    method = CovarianceAttribution(uf, IntegratedGradients)
    with torch.no_grad():
        predicted = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0).argmax(1)
    logit_igs = torch.stack(
        [IntegratedGradients(m).attribute(x, baselines=0.0, target=predicted, n_steps=50) for m in members]
    )
    default = method.attribute(x, baselines=0.0, n_steps=50)
    torch.testing.assert_close(default, literal_marginal(logit_igs), rtol=1e-9, atol=1e-13)
    # an explicit class, shared by all inputs
    other = torch.stack([IntegratedGradients(m).attribute(x, baselines=0.0, target=2, n_steps=50) for m in members])
    explicit = method.attribute(x, mode="diagonal", target=2, baselines=0.0, n_steps=50)
    torch.testing.assert_close(explicit, literal_diagonal(other), rtol=1e-9, atol=1e-13)
    with torch.no_grad():
        logits = torch.stack([m(x)[:, 2] - m(x * 0)[:, 2] for m in members])
    summed = method.attribute(x, target=2, baselines=0.0, **IG_KWARGS).sum(1)
    torch.testing.assert_close(summed, logits.var(0, unbiased=False), rtol=1e-6, atol=0)


def test_binary_members_explain_their_one_logit(x):
    members = [classifier(seed, classes=1) for seed in range(3)]
    uf = UncertaintyForward(members, "total", binary=True)
    result = CovarianceAttribution(uf, IntegratedGradients).attribute(x, target=1, baselines=0.0, n_steps=30)
    explanations = torch.stack(
        [IntegratedGradients(lambda t, m=m: m(t)[:, 0]).attribute(x, baselines=0.0, n_steps=30) for m in members]
    )
    torch.testing.assert_close(result, literal_marginal(explanations), rtol=1e-9, atol=1e-13)
    zero_class = CovarianceAttribution(uf, IntegratedGradients).attribute(x, target=0, baselines=0.0, n_steps=30)
    assert torch.equal(zero_class, torch.zeros_like(x))  # the constant logit 0 of class 0


# ----------------------------------------------------------------------------- Captum wiring, state, errors


def test_noise_tunnel_without_noise_equals_the_plain_map(members, x):
    method = CovarianceAttribution(gaussian(members), IntegratedGradients)
    plain = method.attribute(x, baselines=0.0, n_steps=30)
    tunnelled = NoiseTunnel(method).attribute(x, nt_samples=2, stdevs=0.0, baselines=0.0, n_steps=30)
    torch.testing.assert_close(tunnelled, plain, rtol=1e-12, atol=1e-15)


def test_members_are_untouched(members, x):
    classifiers = [classifier(seed) for seed in range(3)]
    before = model_state(members + classifiers)
    CovarianceAttribution(gaussian(members), IntegratedGradients).attribute(x, baselines=0.0, n_steps=10)
    CovarianceAttribution(gaussian(members), Saliency).attribute(x, mode="diagonal", target=1)
    CovarianceAttribution(UncertaintyForward(classifiers), InputXGradient).attribute(x)
    with pytest.raises(ValueError, match="target selects column 5 of the Gaussian members' outputs, which have 2"):
        CovarianceAttribution(gaussian(members), Saliency).attribute(x, target=5)
    assert_untouched(before, members + classifiers)


def test_bad_arguments(members, x):
    uf = gaussian(members)
    with pytest.raises(ValueError, match="mode must be one of"):
        CovarianceAttribution(uf, IntegratedGradients).attribute(x, mode="full")
    with pytest.raises(TypeError, match="attribution_class"):
        CovarianceAttribution(uf, nn.Linear)
    with pytest.raises(TypeError, match="attribution_class"):
        CovarianceAttribution(uf, IntegratedGradients(members[0]))
    with pytest.raises(TypeError, match="forward_func must be a captum_uncertainty.UncertaintyForward"):
        CovarianceAttribution(members[0], IntegratedGradients)
    with pytest.raises(TypeError, match="target"):
        CovarianceAttribution(uf, Saliency).attribute(x, target=1.0)
    with pytest.raises(ValueError, match="target must be one int or one per input"):
        CovarianceAttribution(uf, Saliency).attribute(x, target=[0, 1])
    with pytest.raises(ValueError, match="return_convergence_delta"):
        CovarianceAttribution(uf, IntegratedGradients).attribute(x, return_convergence_delta=True)


# ----------------------------------------------------------------------------- devices


DEVICE_CASES = {
    # Captum's IntegratedGradients itself builds its step sizes without ``device=``, so the
    # meta-device check runs with Gradient x Input (CovGI) and Saliency
    "covgi marginal": lambda w: CovarianceAttribution(w["gaussian"], InputXGradient).attribute(w["x"]),
    "covgi diagonal tuple": lambda w: CovarianceAttribution(w["two"], InputXGradient).attribute(
        (w["x"][:, :2], w["x"][:, 2:]), mode="diagonal"
    ),
    "saliency head": lambda w: CovarianceAttribution(w["gaussian"], Saliency).attribute(w["x"], target=1, abs=False),
    "classifier default target": lambda w: CovarianceAttribution(w["classifier"], InputXGradient).attribute(w["x"]),
}


@pytest.fixture(scope="module")
def world():
    generator = torch.Generator().manual_seed(1)
    return {
        "gaussian": gaussian([make_regressor(seed) for seed in range(3)]),
        "two": gaussian([TwoInputs(seed) for seed in range(3)]),
        "classifier": UncertaintyForward([classifier(seed) for seed in range(3)], "epistemic"),
        "x": torch.randn(4, 5, generator=generator, dtype=torch.float64),
    }


def flat(result):
    return list(result) if isinstance(result, tuple) else [result]


@pytest.mark.parametrize("name", list(DEVICE_CASES))
def test_no_tensor_is_made_off_the_inputs_device(world, name):
    expected = flat(DEVICE_CASES[name](world))
    with default_device("meta"):
        got = flat(DEVICE_CASES[name](world))
    assert len(got) == len(expected)
    assert_same_tensors(got, expected)
