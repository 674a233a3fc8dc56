"""The integrations with laplace-torch, torch-uncertainty and bayesian-torch on regressors, against
the real packages: the posteriors return UncertaintyForward's Gaussian layout ((N, 2) = mean and
log-variance, or (N, 1) means), their decomposition matches a literal computation from the
libraries' own objects, and the user's models are left untouched."""

import copy
import math

import pytest
import torch
from bayesian_torch.layers import LinearReparameterization
from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn
from captum.attr import IntegratedGradients
from laplace import Laplace
from torch import nn
from torch.nn.utils import vector_to_parameters
from torch_uncertainty.methods import deep_ensembles, mc_dropout
from torch_uncertainty.models.mlp import mlp

from captum_uncertainty import DeepEnsemble, Gaussian, MCDropout, UncertaintyForward, WeightSamples
from captum_uncertainty.integrations import from_bayesian_torch, from_laplace, from_torch_uncertainty
from tests.helpers import assert_untouched, model_state

FEATURES = 3
SIGMA_NOISE = 0.3


def population_variance(columns):
    """``mean_s (m_s - mean_t m_t)^2`` of a list of per-sample ``(N,)`` means, by hand."""
    stacked = torch.stack(columns)
    centre = sum(columns) / len(columns)
    return sum((column - centre) ** 2 for column in columns) / stacked.shape[0]


@pytest.fixture(scope="module")
def x():
    return torch.randn(5, FEATURES, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# ----------------------------------------------------------------------------- laplace-torch
def regressor(seed, outputs=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.Tanh(), nn.Linear(8, outputs)).double().eval()


def fitted_regression_laplace(subset, structure, seed=0, outputs=1, sigma_noise=SIGMA_NOISE):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(48, FEATURES, generator=generator, dtype=torch.float64)
    targets = inputs.sum(1, keepdim=True).repeat(1, outputs) + 0.1 * torch.randn(48, outputs, generator=generator)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=16)
    model = regressor(seed, outputs)
    la = Laplace(model, "regression", subset_of_weights=subset, hessian_structure=structure, sigma_noise=sigma_noise)
    la.fit(loader)
    return model, la


LAPLACE_CASES = [("all", "diag"), ("last_layer", "kron")]


@pytest.fixture(scope="module", params=LAPLACE_CASES, ids=["all_diag", "last_layer_kron"])
def regression_laplace(request):
    subset, structure = request.param
    model, la = fitted_regression_laplace(subset, structure)
    return subset, model, la


def literal_laplace_means(model, la, subset, num_samples, seed, x):
    """Each weight sample's prediction, by hand: ``la.sample`` written into a fresh copy of the model."""
    vectors = la.sample(num_samples, generator=torch.Generator().manual_seed(seed))
    means = []
    for vector in vectors:
        sampled = copy.deepcopy(model)
        target = sampled.parameters() if subset == "all" else sampled[-1].parameters()
        vector_to_parameters(vector.to(torch.float64), target)
        with torch.no_grad():
            means.append(sampled(x)[:, 0])
    return means


def test_laplace_regression_decomposition(regression_laplace, x):
    subset, model, la = regression_laplace
    posterior = from_laplace(la, num_samples=6, seed=0)
    assert isinstance(posterior, WeightSamples) and isinstance(posterior, DeepEnsemble)
    uf = UncertaintyForward(posterior, "epistemic", likelihood=Gaussian(variance="log_variance"))
    total, aleatoric, epistemic = (t.detach() for t in uf.decompose(x))

    noise_variance = float(la.sigma_noise) ** 2
    assert noise_variance == pytest.approx(SIGMA_NOISE**2)
    torch.testing.assert_close(aleatoric, torch.full_like(aleatoric, noise_variance), rtol=1e-12, atol=0)

    with torch.no_grad():
        outputs = [member(x) for member in posterior.sample_modules()]
    assert all(out.shape == (x.shape[0], 2) for out in outputs)
    for out in outputs:
        torch.testing.assert_close(out[:, 1], torch.full_like(out[:, 1], math.log(SIGMA_NOISE**2)), rtol=0, atol=1e-12)
    member_means = [out[:, 0] for out in outputs]
    torch.testing.assert_close(epistemic, population_variance(member_means), rtol=1e-10, atol=1e-15)
    # the members' means are the model with la's weight samples, written in by hand
    for by_hand, member in zip(literal_laplace_means(model, la, subset, 6, 0, x), member_means):
        torch.testing.assert_close(member, by_hand, rtol=1e-12, atol=1e-12)
    assert not torch.equal(member_means[0], member_means[1])
    assert bool((epistemic > 0).all())
    torch.testing.assert_close(total, epistemic + noise_variance, rtol=1e-12, atol=0)


def test_laplace_regression_integrated_gradients_completeness(regression_laplace, x):
    _, _, la = regression_laplace
    posterior = from_laplace(la, num_samples=6, seed=0)
    uf = UncertaintyForward(posterior, "epistemic", likelihood=Gaussian(variance="log_variance"))
    baseline = torch.zeros_like(x)
    attributions = IntegratedGradients(uf).attribute(x, baselines=baseline, n_steps=100)
    assert attributions.dtype == torch.float64 and attributions.shape == x.shape
    expected = (uf(x) - uf(baseline)).detach()
    assert float(expected.abs().min()) > 1e-6  # the check is not vacuous
    torch.testing.assert_close(attributions.sum(1), expected, rtol=1e-6, atol=1e-10)
    # the homoscedastic noise does not depend on the input: its attribution is zero
    aleatoric = IntegratedGradients(uf.with_measure("aleatoric")).attribute(x, baselines=baseline, n_steps=8)
    assert bool((aleatoric == 0).all())


def test_laplace_regression_seeds(regression_laplace, x):
    _, _, la = regression_laplace
    a, b, c = (from_laplace(la, num_samples=4, seed=seed) for seed in (0, 0, 1))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x)[..., 0], c(x)[..., 0])
        assert torch.equal(a(x), a(x))


def test_laplace_regression_leaves_the_model_and_la_untouched(x):
    model, la = fitted_regression_laplace("all", "diag", seed=3)
    state, mean, sigma = model_state([model]), la.mean.clone(), la.sigma_noise.clone()
    draws_before = la.sample(3, generator=torch.Generator().manual_seed(5))
    posterior = from_laplace(la, num_samples=4, seed=0)
    uf = UncertaintyForward(posterior, "epistemic", likelihood=Gaussian(variance="log_variance"))
    uf.decompose(x)
    IntegratedGradients(uf).attribute(x, baselines=x * 0, n_steps=4)
    assert_untouched(state, [model])
    assert all(member.model is not model for member in posterior.sample_modules())
    assert torch.equal(la.mean, mean) and torch.equal(la.sigma_noise, sigma)
    assert torch.equal(la.sample(3, generator=torch.Generator().manual_seed(5)), draws_before)


def test_laplace_regression_errors():
    _, two_outputs = fitted_regression_laplace("all", "diag", seed=4, outputs=2)
    with pytest.raises(ValueError, match="2 output columns.*single-output"):
        from_laplace(two_outputs, num_samples=2)
    _, silent = fitted_regression_laplace("all", "diag", seed=5)
    silent.sigma_noise = 0.0
    with pytest.raises(ValueError, match="sigma_noise must be a positive"):
        from_laplace(silent, num_samples=2)
    unfitted = Laplace(regressor(6), "regression", subset_of_weights="all", hessian_structure="diag")
    with pytest.raises(ValueError, match="not fitted"):
        from_laplace(unfitted, num_samples=2)
    reward = Laplace(regressor(7), "reward_modeling", subset_of_weights="all", hessian_structure="diag")
    with pytest.raises(ValueError, match="likelihood 'reward_modeling'.*'classification' or 'regression'"):
        from_laplace(reward, num_samples=2)


# ----------------------------------------------------------------------------- torch-uncertainty
def tu_members(family, seeds=(0, 1, 2), **kwargs):
    members = []
    for seed in seeds:
        torch.manual_seed(seed)
        members.append(mlp(FEATURES, 1, [8], dist_family=family, **kwargs).double().eval())
    return members


@pytest.mark.parametrize("family, variance_of", [("normal", lambda s: s**2), ("laplace", lambda s: 2 * s**2)])
def test_torch_uncertainty_probabilistic_ensemble_matches_the_members(x, family, variance_of):
    members = tu_members(family)
    state = model_state(members)
    posterior = from_torch_uncertainty(deep_ensembles(members, task="regression", probabilistic=True))
    assert isinstance(posterior, DeepEnsemble) and posterior.num_samples == 3
    uf = UncertaintyForward(posterior, "epistemic", likelihood=Gaussian(variance="log_variance"))
    total, aleatoric, epistemic = (t.detach() for t in uf.decompose(x))
    with torch.no_grad():
        outputs = [member(x) for member in members]  # the core models: {"loc": (N, 1), "scale": (N, 1)}
    assert all(set(out) == {"loc", "scale"} for out in outputs)
    locs = [out["loc"][:, 0] for out in outputs]
    variances = [variance_of(out["scale"][:, 0]) for out in outputs]
    torch.testing.assert_close(aleatoric, sum(variances) / 3, rtol=1e-10, atol=0)
    torch.testing.assert_close(epistemic, population_variance(locs), rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(total, aleatoric + epistemic, rtol=1e-12, atol=0)
    assert bool((epistemic > 0).all())
    IntegratedGradients(uf).attribute(x, baselines=x * 0, n_steps=4)
    assert_untouched(state, members)


def test_torch_uncertainty_point_ensemble_gives_means(x):
    members = tu_members(None)
    posterior = from_torch_uncertainty(deep_ensembles(members, task="regression", probabilistic=False))
    uf = UncertaintyForward(posterior, "epistemic", likelihood=Gaussian(variance=None))
    with torch.no_grad():
        locs = [member(x)[:, 0] for member in members]
        assert posterior(x).shape == (3, x.shape[0], 1)
    total, aleatoric, epistemic = (t.detach() for t in uf.decompose(x))
    torch.testing.assert_close(epistemic, population_variance(locs), rtol=1e-10, atol=1e-15)
    assert torch.equal(aleatoric, torch.zeros_like(aleatoric)) and torch.equal(total, epistemic)


def test_torch_uncertainty_regression_mc_dropout(x):
    torch.manual_seed(3)
    net = mlp(FEATURES, 1, [8, 8], dropout_rate=0.3, dist_family="normal").double().eval()
    state = model_state([net])
    wrapper = mc_dropout(net, num_estimators=6, task="regression", probabilistic=True)
    posterior = from_torch_uncertainty(wrapper, seed=0)
    assert isinstance(posterior, MCDropout) and posterior.num_samples == 6
    uf = UncertaintyForward(posterior, "epistemic", likelihood=Gaussian(variance="log_variance"))
    first, second = uf.decompose(x), uf.decompose(x)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    for row in range(x.shape[0]):
        torch.testing.assert_close(uf(x[row : row + 1]), first.epistemic[row : row + 1], rtol=0, atol=1e-12)
    assert bool((first.epistemic > 0).all())
    samples = posterior(x)
    assert samples.shape == (6, x.shape[0], 2) and not torch.equal(samples[0], samples[1])
    assert bool(torch.isfinite(samples).all())
    torch.testing.assert_close(first.aleatoric, samples[..., 1].exp().mean(0), rtol=1e-12, atol=0)
    assert_untouched(state, [net])


class DictHead(nn.Module):
    """A regressor returning ``{"loc", "scale"}`` from its own head (no torch-uncertainty layer)."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Linear(FEATURES, 2).double()

    def forward(self, x):
        out = self.body(x)
        return {"loc": out[:, :1], "scale": nn.functional.softplus(out[:, 1:]) + 0.1}


def test_torch_uncertainty_dict_without_a_distribution_layer_needs_dist_family(x):
    members = [DictHead(seed) for seed in (0, 1)]
    wrapper = deep_ensembles(members, task="regression", probabilistic=True)
    with pytest.raises(ValueError, match=r"keys \['loc', 'scale'\].*dist_family"):
        from_torch_uncertainty(wrapper)(x)
    uf = UncertaintyForward(
        from_torch_uncertainty(wrapper, dist_family="normal"), likelihood=Gaussian(variance="log_variance")
    )
    with torch.no_grad():
        outputs = [member(x) for member in members]
    aleatoric = sum(out["scale"][:, 0] ** 2 for out in outputs) / 2
    torch.testing.assert_close(uf.decompose(x).aleatoric.detach(), aleatoric, rtol=1e-10, atol=0)


def test_torch_uncertainty_regression_errors(x):
    two_targets = [mlp(FEATURES, 2, [8]).double() for _ in range(2)]
    with pytest.raises(ValueError, match=r"shape \(5, 2\) \(2 targets\).*one target per input"):
        from_torch_uncertainty(deep_ensembles(two_targets, task="regression", probabilistic=False))(x)
    cauchy = tu_members("cauchy", seeds=(0, 1))
    with pytest.raises(ValueError, match="'cauchy' distribution head.*no finite variance"):
        from_torch_uncertainty(deep_ensembles(cauchy, task="regression", probabilistic=True))
    student = tu_members("student", seeds=(0, 1))  # df clamped at min_df = 2: infinite variance
    with pytest.raises(ValueError, match="df > 2"):
        from_torch_uncertainty(deep_ensembles(student, task="regression", probabilistic=True))(x)
    fixed_df = tu_members("student", seeds=(0, 1), dist_args={"fixed_df": 5.0})
    finite = from_torch_uncertainty(deep_ensembles(fixed_df, task="regression", probabilistic=True))
    assert bool(torch.isfinite(finite(x)).all())
    with pytest.raises(ValueError, match="dist_family"):
        from_torch_uncertainty(deep_ensembles(tu_members(None, seeds=(0, 1))), dist_family="normal")
    with pytest.raises(ValueError, match="dist_family must be one of"):
        from_torch_uncertainty(deep_ensembles(fixed_df, task="regression", probabilistic=True), dist_family="beta")


# ----------------------------------------------------------------------------- bayesian-torch
class BayesianRegressor(nn.Module):
    """A regressor written for bayesian-torch: ``(N, 2)`` = mean and log-variance, and the KL."""

    def __init__(self):
        super().__init__()
        self.hidden = LinearReparameterization(FEATURES, 8)
        self.head = LinearReparameterization(8, 2)

    def forward(self, x):
        h, kl_hidden = self.hidden(x)
        out, kl_head = self.head(torch.tanh(h))
        return out, kl_hidden + kl_head


class PairRegressor(BayesianRegressor):
    """Returns ``(mean, log_variance)``: a pair that is not ``(output, kl)``."""

    def forward(self, x):
        out, _ = super().forward(x)
        return out[:, :1], out[:, 1:]


def with_noise_buffers_drawn(net):
    """bayesian-torch allocates its eps buffers uninitialised; one forward fills them."""
    with torch.no_grad():
        net(torch.zeros(1, FEATURES, dtype=torch.float64))
    return net


def test_bayesian_torch_regressor_decomposes_deterministically(x):
    torch.manual_seed(7)
    model = with_noise_buffers_drawn(BayesianRegressor().double().eval())
    state = model_state([model])
    posterior = from_bayesian_torch(model, num_samples=5, seed=0)
    uf = UncertaintyForward(posterior, "epistemic", likelihood=Gaussian(variance="log_variance"))
    first, second = uf.decompose(x), uf.decompose(x)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    with torch.no_grad():
        outputs = [member(x) for member in posterior.sample_modules()]
    assert all(out.shape == (x.shape[0], 2) for out in outputs)
    torch.testing.assert_close(
        first.aleatoric.detach(), sum(out[:, 1].exp() for out in outputs) / 5, rtol=1e-10, atol=0
    )
    torch.testing.assert_close(
        first.epistemic.detach(), population_variance([out[:, 0] for out in outputs]), rtol=1e-10, atol=1e-15
    )
    assert bool((first.epistemic > 0).all())
    assert torch.equal(from_bayesian_torch(model, num_samples=5, seed=0)(x), posterior(x))
    IntegratedGradients(uf).attribute(x, baselines=x * 0, n_steps=4)
    assert_untouched(state, [model])


def test_bayesian_torch_dnn_to_bnn_regressor_with_one_output_per_input(x):
    torch.manual_seed(8)
    net = nn.Sequential(nn.Linear(FEATURES, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))
    prior = {"prior_mu": 0.0, "prior_sigma": 1.0, "posterior_mu_init": 0.0, "posterior_rho_init": -3.0}
    dnn_to_bnn(net, {**prior, "type": "Reparameterization", "moped_enable": False})
    net = with_noise_buffers_drawn(net.double().eval())
    assert net(x).shape == (x.shape[0],)
    posterior = from_bayesian_torch(net, num_samples=4, seed=0)
    uf = UncertaintyForward(posterior, "epistemic", likelihood=Gaussian(variance=None))
    with torch.no_grad():
        means = [member(x) for member in posterior.sample_modules()]
    d = uf.decompose(x)
    torch.testing.assert_close(d.epistemic.detach(), population_variance(means), rtol=1e-10, atol=1e-15)
    assert torch.equal(d.aleatoric, torch.zeros_like(d.aleatoric))
    assert torch.equal(uf(x), uf(x))


def test_bayesian_torch_mean_variance_pair_is_refused(x):
    torch.manual_seed(9)
    model = with_noise_buffers_drawn(PairRegressor().double().eval())
    posterior = from_bayesian_torch(model, num_samples=2, seed=0)
    for rows in (x, x[:1]):
        with pytest.raises(TypeError, match=r"second item has shape .* not a scalar KL.*one \(N, 2\) tensor"):
            posterior(rows)
