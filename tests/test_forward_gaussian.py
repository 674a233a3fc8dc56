"""The variance decomposition of Gaussian (regression) members, and the methods that only need
the forward, on it."""

from __future__ import annotations

import pytest
import torch
from captum.attr import FeatureAblation, IntegratedGradients, KernelShap, NoiseTunnel
from torch import nn

from captum_uncertainty import (
    CounterfactualPathIG,
    Gaussian,
    LayerUncertaintyIntegratedGradients,
    UABackprop,
    UncertaintyForward,
    UncertaintyIntegratedGradients,
)
from captum_uncertainty.forward import variance_decomposition
from captum_uncertainty.posterior import SampleCallable
from tests.helpers import assert_untouched, model_state

FEATURES = 4

#: The members of ``regressors()`` return (N, 2) = the mean and log sigma^2 of each input.
LOG_VARIANCE = Gaussian(variance="log_variance")


def regressors(count=4, width=2, seed=0):
    torch.manual_seed(seed)
    return [nn.Sequential(nn.Linear(FEATURES, 8), nn.Tanh(), nn.Linear(8, width)).double().eval() for _ in range(count)]


def fixed_outputs(outputs):
    """A posterior returning the given ``(S, N, C)`` outputs whatever the inputs (for hand computations)."""
    return SampleCallable(lambda x: outputs[:, : x.shape[0]] + 0 * x.sum(), layout="samples_first")


def hand_decomposition(means, variances):
    """The law of total variance, written out with loops over samples."""
    count = len(means)
    average = sum(means) / count
    epistemic = sum((m - average) ** 2 for m in means) / count
    aleatoric = sum(variances) / count
    return aleatoric + epistemic, aleatoric, epistemic


HEADS = {
    "log_variance": lambda variance: variance.log(),
    "variance": lambda variance: variance,
    "std": lambda variance: variance.sqrt(),
}


@pytest.mark.parametrize("head", sorted(HEADS))
def test_three_variances_against_a_hand_computation(head):
    means = [torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) * k for k in (1, 2, 4)]
    variances = [torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64) * k for k in (1, 3, 0.5)]
    outputs = torch.stack([torch.stack([m, HEADS[head](v)], -1) for m, v in zip(means, variances)])
    expected = hand_decomposition(means, variances)
    uf = UncertaintyForward(fixed_outputs(outputs), likelihood=Gaussian(variance=head))
    x = torch.zeros(3, 1, dtype=torch.float64)
    shorthand = UncertaintyForward(fixed_outputs(outputs), likelihood="gaussian", variance=head)
    assert shorthand.likelihood == uf.likelihood
    for got, want in zip(shorthand.decompose(x), expected):
        torch.testing.assert_close(got, want)
    for got, want in zip(uf.decompose(x), expected):
        torch.testing.assert_close(got, want)
    for measure, want in zip(("total", "aleatoric", "epistemic"), expected):
        torch.testing.assert_close(uf.with_measure(measure)(x), want)
    for got, want in zip(variance_decomposition(outputs, head), expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(uf.predictive_mean(x), sum(means) / 3)
    torch.testing.assert_close(uf.sample_means(x), torch.stack(means))


def test_means_only_members_have_the_variance_of_their_means():
    means = torch.tensor([[1.0, 2.0], [3.0, 2.0], [8.0, 2.0]], dtype=torch.float64)  # (S, N)
    x = torch.zeros(2, 1, dtype=torch.float64)
    uf = UncertaintyForward(fixed_outputs(means.unsqueeze(-1)), "epistemic", likelihood=Gaussian(variance=None))
    expected = torch.tensor([((1 - 4) ** 2 + (3 - 4) ** 2 + (8 - 4) ** 2) / 3, 0.0], dtype=torch.float64)
    torch.testing.assert_close(uf(x), expected)
    total, aleatoric, epistemic = uf.decompose(x)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(aleatoric, torch.zeros(2, dtype=torch.float64))
    with_noise = UncertaintyForward(
        fixed_outputs(means.unsqueeze(-1)), likelihood=Gaussian(variance=None, noise_variance=0.25)
    )
    total, aleatoric, epistemic = with_noise.decompose(x)
    torch.testing.assert_close(aleatoric, torch.full((2,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(total, epistemic + 0.25)
    with pytest.raises(ValueError, match="measure='aleatoric' needs a noise head"):
        with_noise.with_measure("aleatoric")(x)


def test_members_returning_one_value_per_input_are_means():
    members = [nn.Sequential(member, nn.Flatten(0)) for member in regressors(width=1)]  # (N,) each
    x = torch.randn(5, FEATURES, dtype=torch.float64)
    means = torch.stack([m(x) for m in members])
    uf = UncertaintyForward(members, "epistemic", likelihood=Gaussian(variance=None))
    torch.testing.assert_close(uf(x), means.var(0, unbiased=False))


def test_decompose_equals_the_three_single_measure_forwards_on_real_members():
    members = regressors()
    x = torch.randn(5, FEATURES, dtype=torch.float64)
    uf = UncertaintyForward(members, likelihood=LOG_VARIANCE)
    decomposition = uf.decompose(x)
    outputs = torch.stack([m(x) for m in members])
    expected = hand_decomposition(list(outputs[..., 0]), list(outputs[..., 1].exp()))
    for measure, got, want in zip(("total", "aleatoric", "epistemic"), decomposition, expected):
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(uf.with_measure(measure)(x), want)
    torch.testing.assert_close(decomposition.total, decomposition.aleatoric + decomposition.epistemic)
    assert (decomposition.epistemic >= 0).all()


def test_summary_holds_the_predictive_mean_and_the_three_variances():
    members = regressors()
    x = torch.randn(3, FEATURES, dtype=torch.float64)
    uf = UncertaintyForward(members, likelihood=LOG_VARIANCE)
    summary = uf.summary(x)
    assert tuple(summary) == uf.summary_columns == ("predicted_mean", "total", "aleatoric", "epistemic")
    torch.testing.assert_close(summary["predicted_mean"], uf.predictive_mean(x))
    for name, value in zip(("total", "aleatoric", "epistemic"), uf.decompose(x)):
        torch.testing.assert_close(summary[name], value)


@pytest.mark.parametrize(
    "outputs, head, message",
    [
        (torch.ones(2, 3, 3), "log_variance", "reads 2 columns per input"),
        (torch.tensor([[[1.0, -1.0]], [[1.0, 1.0]]]), "variance", "negative value"),
        (torch.tensor([[[1.0, -0.5]], [[1.0, 1.0]]]), "std", "negative value"),
        (torch.tensor([[[1.0, float("nan")]], [[1.0, 1.0]]]), "log_variance", "NaN or inf"),
    ],
)
def test_bad_gaussian_outputs_are_refused(outputs, head, message):
    uf = UncertaintyForward(fixed_outputs(outputs), likelihood=Gaussian(variance=head))
    with pytest.raises(ValueError, match=message):
        uf(torch.zeros(outputs.shape[1], 1))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"binary": True}, ValueError, "binary=True describes a classifier"),
        ({"probabilities": True}, ValueError, "probabilities=True describes a classifier"),
        ({"variance": "softplus"}, ValueError, "variance"),
        ({"likelihood": "poisson"}, ValueError, "likelihood"),
        ({"variance": None, "noise_variance": -1.0}, ValueError, "noise_variance"),
    ],
)
def test_bad_settings_are_refused(kwargs, error, message):
    settings = {"likelihood": "gaussian", **kwargs}
    with pytest.raises(error, match=message):
        UncertaintyForward(regressors(), **settings)


def test_noise_variance_belongs_to_a_gaussian_likelihood():
    with pytest.raises(ValueError, match="noise_variance describes a regressor's noise.*Gaussian"):
        UncertaintyForward(regressors(width=3), noise_variance=0.1)


def test_one_output_per_input_names_both_readings():
    uf = UncertaintyForward(regressors(width=1))
    with pytest.raises(ValueError, match="Bernoulli.*Gaussian\\(variance=None\\)"):
        uf(torch.randn(2, FEATURES, dtype=torch.float64))


def test_classifier_only_methods_refuse_a_gaussian_forward_and_name_what_works():
    uf = UncertaintyForward(regressors(), likelihood=LOG_VARIANCE)
    x = torch.randn(2, FEATURES, dtype=torch.float64)
    for call in (uf.per_class, uf.predictive, uf.predicted_class):
        with pytest.raises(ValueError, match="classifiers.*Gaussian\\(variance='log_variance'\\)"):
            call(x)
    with pytest.raises(ValueError, match="UncertaintyIntegratedGradients.*CovarianceAttribution"):
        UABackprop(uf)
    with pytest.raises(ValueError, match="CounterfactualPathIG is built on a classifier's predicted class"):
        CounterfactualPathIG(uf, None)
    classifier = UncertaintyForward(regressors(width=3))
    with pytest.raises(ValueError, match="regressors \\(Gaussian\\).*Categorical"):
        classifier.sample_means(x)


@pytest.mark.parametrize("measure", ["total", "aleatoric", "epistemic"])
def test_captum_integrated_gradients_is_complete_on_each_variance(measure):
    members = regressors()
    before = model_state(members)
    uf = UncertaintyForward(members, measure, likelihood=LOG_VARIANCE)
    x = torch.randn(3, FEATURES, dtype=torch.float64)
    baseline = torch.zeros_like(x)
    attributions, delta = IntegratedGradients(uf).attribute(
        x, baselines=baseline, n_steps=100, return_convergence_delta=True
    )
    torch.testing.assert_close(attributions.sum(1), uf(x) - uf(baseline), rtol=1e-6, atol=1e-8)
    assert delta.abs().max() < 1e-6
    uig = UncertaintyIntegratedGradients(uf).attribute(x, baselines=baseline, n_steps=100)
    torch.testing.assert_close(uig, attributions, rtol=1e-6, atol=1e-9)
    assert_untouched(before, members)


def test_uig_decompose_total_is_aleatoric_plus_epistemic():
    uf = UncertaintyForward(regressors(), likelihood=LOG_VARIANCE)
    x = torch.randn(3, FEATURES, dtype=torch.float64)
    total, aleatoric, epistemic = UncertaintyIntegratedGradients(uf).attribute(x, n_steps=64, decompose=True)
    torch.testing.assert_close(total, aleatoric + epistemic)
    torch.testing.assert_close(total.sum(1), uf(x) - uf(torch.zeros_like(x)), rtol=1e-5, atol=1e-8)


def test_layer_uig_is_complete_on_the_members_first_layer():
    members = regressors()
    uf = UncertaintyForward(members, "epistemic", likelihood=LOG_VARIANCE)
    x = torch.randn(3, FEATURES, dtype=torch.float64)
    baseline = torch.zeros_like(x)
    lig = LayerUncertaintyIntegratedGradients(uf, lambda member: member[0])
    attributions, delta = lig.attribute(x, baselines=baseline, n_steps=100, return_convergence_delta=True)
    assert attributions.shape == (3, 8)
    torch.testing.assert_close(attributions.sum(1), uf(x) - uf(baseline), rtol=1e-5, atol=1e-8)
    assert delta.abs().max() < 1e-5


def test_perturbation_methods_and_noise_tunnel_run_on_a_gaussian_forward():
    uf = UncertaintyForward(regressors(), "epistemic", likelihood=LOG_VARIANCE)
    x = torch.randn(2, FEATURES, dtype=torch.float64)
    baseline = torch.zeros_like(x)
    ablation = FeatureAblation(uf).attribute(x, baselines=baseline)
    # one feature at a time: U(x) - U(x with feature i set to the baseline)
    for i in range(FEATURES):
        ablated = x.clone()
        ablated[:, i] = 0
        torch.testing.assert_close(ablation[:, i], uf(x) - uf(ablated))
    shap = KernelShap(uf).attribute(x, baselines=baseline, n_samples=200)
    # Captum fits KernelShap's linear model in float32; its attributions sum to the difference
    torch.testing.assert_close(shap.double().sum(1), uf(x) - uf(baseline), rtol=1e-3, atol=1e-6)
    smooth = NoiseTunnel(IntegratedGradients(uf)).attribute(
        x, nt_type="smoothgrad", nt_samples=4, stdevs=0.1, baselines=baseline, n_steps=16
    )
    assert smooth.shape == x.shape and torch.isfinite(smooth).all()


def noisy_in_feature_zero(count, seed):
    """y = x1 + noise whose standard deviation grows with |x0|: only feature 0 sets the noise."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(count, FEATURES, generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(count, generator=generator, dtype=torch.float64) * (0.05 + 1.5 * x[:, 0].abs())
    return x, (x[:, 1] + noise).unsqueeze(1)


def test_the_aleatoric_map_puts_most_mass_on_the_feature_that_sets_the_noise():
    x, y = noisy_in_feature_zero(2000, seed=0)
    members = regressors(count=3, seed=1)
    for member in members:
        optimiser = torch.optim.Adam(member.parameters(), lr=0.02)
        member.train()
        for _ in range(300):
            optimiser.zero_grad()
            mean, log_variance = member(x).unbind(1)
            loss = nn.functional.gaussian_nll_loss(mean, y[:, 0], log_variance.exp())
            loss.backward()
            optimiser.step()
        member.eval()
    uf = UncertaintyForward(members, "aleatoric", likelihood=LOG_VARIANCE)
    test, _ = noisy_in_feature_zero(50, seed=2)
    test = test[test[:, 0].abs() > 0.5]  # points whose noise is well above the floor
    baseline = test.clone()
    baseline[:, 0] = 0.0  # the quietest value of feature 0; the other features as they are
    baseline[:, 1:] = 0.0
    attributions = IntegratedGradients(uf).attribute(test, baselines=baseline, n_steps=64).abs()
    share = attributions[:, 0] / attributions.sum(1)
    assert (share > 0.5).float().mean() > 0.8, share


def test_feature_metrics_run_on_a_gaussian_forward_with_a_per_feature_baseline():
    from captum_uncertainty.metrics import (
        entropy_information_curve,
        insertion_deletion,
        uncertainty_reduction_curve,
    )

    members = regressors()
    uf = UncertaintyForward(members, "epistemic", likelihood=LOG_VARIANCE)
    x = torch.randn(6, FEATURES, dtype=torch.float64) * 2
    baseline = torch.zeros(FEATURES, dtype=torch.float64)
    maps = IntegratedGradients(uf).attribute(x, baselines=baseline.expand_as(x), n_steps=32)
    urc = uncertainty_reduction_curve(uf, x, maps, fraction=0.5, baseline=baseline)
    # the reduction after removing the top-ranked feature, by hand
    top = maps.argmax(1)
    removed = x.clone()
    removed[torch.arange(6), top] = 0.0
    by_hand = (1 - uf(removed) / uf(x)).clamp_min(0)
    torch.testing.assert_close(urc.per_image[:, 0], by_hand.to(urc.per_image.dtype))
    eic = entropy_information_curve(uf, x, maps, baseline=baseline)
    assert 0.0 <= eic.score <= 1.0
    deletion = insertion_deletion(uf, x, maps, baseline=baseline, steps=FEATURES)
    # the score is the predictive mean: at k = 0 the unmodified inputs', at k = F the baseline's
    torch.testing.assert_close(deletion.per_image[:, 0], uf.predictive_mean(x).to(deletion.per_image.dtype))
    torch.testing.assert_close(
        deletion.per_image[:, -1], uf.predictive_mean(baseline.expand_as(x)).to(deletion.per_image.dtype)
    )


def test_attribute_dataset_stores_the_predictive_mean_and_three_variances(tmp_path):
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from torch.utils.data import TensorDataset

    from captum_uncertainty import attribute_dataset

    members = regressors()
    uf = UncertaintyForward(members, "epistemic", likelihood=LOG_VARIANCE)
    x = torch.randn(10, FEATURES, dtype=torch.float64)
    attribute_dataset(
        IntegratedGradients(uf), TensorDataset(x), tmp_path / "out", batch_size=4, progress=False, n_steps=8
    )
    table = pandas.read_parquet(tmp_path / "out").sort_values("index")
    assert {"predicted_mean", "total", "aleatoric", "epistemic"} <= set(table.columns)
    assert "predicted" not in table.columns
    decomposition = uf.decompose(x)
    torch.testing.assert_close(torch.tensor(table["epistemic"].to_numpy()), decomposition.epistemic.detach())
    torch.testing.assert_close(torch.tensor(table["predicted_mean"].to_numpy()), uf.predictive_mean(x).detach())
