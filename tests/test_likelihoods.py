"""Likelihood objects: every output declared once, read, checked and decomposed by its object;
every ambiguous or contradicting output refused with the fix, never a plausible wrong number."""

from __future__ import annotations

import ast
import pathlib

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

import captum_uncertainty
from captum_uncertainty import (
    Bernoulli,
    Categorical,
    DeepEnsemble,
    Gaussian,
    MCDropout,
    SampleCallable,
    UncertaintyForward,
    UncertaintyIntegratedGradients,
)
from tests.helpers import assert_untouched, model_state

FEATURES = 3
PACKAGE = pathlib.Path(captum_uncertainty.__file__).parent


def mlps(count: int, width: int, seed: int = 0, final: nn.Module | None = None) -> list:
    torch.manual_seed(seed)
    layers = lambda: [nn.Linear(FEATURES, 6), nn.Tanh(), nn.Linear(6, width)]  # noqa: E731
    return [nn.Sequential(*layers(), *([final] if final is not None else [])).double().eval() for _ in range(count)]


def inputs(n: int = 5, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(n, FEATURES, dtype=torch.float64)


class Structured(nn.Module):
    """A regressor returning its mean and noise as a tuple or a dict (heads built from one MLP)."""

    def __init__(self, body: nn.Module, kind: str, container: str) -> None:
        super().__init__()
        self.body, self.kind, self.container = body, kind, container

    def heads(self, x: torch.Tensor):
        out = self.body(x)
        variance = nn.functional.softplus(out[:, 1]) + 0.05
        head = {"variance": variance, "std": variance.sqrt(), "log_variance": variance.log()}[self.kind]
        return out[:, 0], head, variance

    def forward(self, x: torch.Tensor):
        mean, head, _ = self.heads(x)
        if self.container == "tuple":
            return mean, head
        key = {"variance": "variance", "std": "scale", "log_variance": "log_var"}[self.kind]
        return {"loc": mean, key: head}


def total_variance_by_hand(means: list, variances: list) -> tuple:
    count = len(means)
    average = sum(means) / count
    epistemic = sum((m - average) ** 2 for m in means) / count
    aleatoric = sum(variances) / count
    return aleatoric + epistemic, aleatoric, epistemic


def two_class_entropies_by_hand(p_positive: list) -> tuple:
    """Total, aleatoric, epistemic of Bernoulli members with the given P(class 1) per input, by loops."""

    def entropy(p: torch.Tensor) -> torch.Tensor:
        return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))

    mean = sum(p_positive) / len(p_positive)
    total = entropy(mean)
    aleatoric = sum(entropy(p) for p in p_positive) / len(p_positive)
    return total, aleatoric, total - aleatoric


# ----------------------------------------------------------------------------- undeclared outputs


def test_a_mean_and_log_variance_pair_without_a_likelihood_is_refused_naming_both_readings():
    members = mlps(4, width=2, seed=3)
    uf = UncertaintyForward(members, "epistemic")
    with pytest.raises(ValueError, match=r"2 numbers per input.*2-class classifier.*Gaussian\(variance="):
        uf(inputs())
    declared = UncertaintyForward(members, "epistemic", likelihood=Gaussian(variance="log_variance"))
    means = [m(inputs())[:, 0].detach() for m in members]
    torch.testing.assert_close(declared(inputs()), total_variance_by_hand(means, [0 * mu for mu in means])[2])


def test_one_score_per_input_without_a_likelihood_is_refused_naming_bernoulli_and_gaussian():
    uf = UncertaintyForward(mlps(3, width=1))
    with pytest.raises(ValueError, match=r"Bernoulli.*Gaussian\(variance=None\)"):
        uf(inputs())


def test_tuple_outputs_without_a_gaussian_are_refused_with_a_hint_that_works():
    members = [Structured(m, "variance", "tuple") for m in mlps(3, width=2, seed=4)]
    with pytest.raises(TypeError, match=r"\(mean, variance\) pair.*likelihood=Gaussian\(variance=") as refused:
        UncertaintyForward(members)(inputs())
    assert "output_kl" in str(refused.value) and "drops kl" in str(refused.value)
    # the fix the message names gives the law of total variance, not the 0 of dropping the variance
    uf = UncertaintyForward(members, "total", likelihood=Gaussian(variance="variance"))
    means = [m.heads(inputs())[0].detach() for m in members]
    variances = [m.heads(inputs())[2].detach() for m in members]
    torch.testing.assert_close(uf(inputs()), total_variance_by_hand(means, variances)[0])


class _SharedNoiseRegressor(nn.Module):
    """Returns (mean, variance) with a random offset of the mean shared by every row of a call."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor):
        out = self.body(x)
        shift = torch.randn((), dtype=x.dtype)
        return out[:, 0] + shift, nn.functional.softplus(out[:, 1] * (1 + shift))


def test_output_kl_refuses_a_variance_it_would_drop_and_a_list_of_pairs_is_read():
    model = _SharedNoiseRegressor(mlps(1, width=2, seed=3)[0])  # a stochastic (mean, variance) regressor
    x = inputs(4)
    dropped = SampleCallable(model, layout="output_kl", num_samples=4, seed=0)
    with pytest.raises(TypeError, match=r"output_kl.*lose its variance.*layout='list'.*Gaussian\(variance="):
        UncertaintyForward(dropped, likelihood=Gaussian(variance="variance"))(x)
    listed = SampleCallable(lambda z: [model(z) for _ in range(4)], layout="list", seed=0, modules=[model])
    uf = UncertaintyForward(listed, likelihood=Gaussian(variance="variance"))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pairs = [model(x) for _ in range(4)]
    expected = total_variance_by_hand([m.detach() for m, _ in pairs], [v.detach() for _, v in pairs])
    for got, want in zip(uf.decompose(x), expected):
        torch.testing.assert_close(got.detach(), want)


# ----------------------------------------------------------------------------- Gaussian


@pytest.mark.parametrize("kind", ["log_variance", "variance", "std"])
@pytest.mark.parametrize("container", ["tensor", "tuple", "dict"])
def test_gaussian_heads_and_containers_follow_the_law_of_total_variance(kind, container):
    bodies = mlps(4, width=2, seed=7)
    members = [Structured(m, kind, "tuple" if container == "tensor" else container) for m in bodies]
    if container == "tensor":
        members = [nn.Sequential(Structured(m, kind, "tuple"), _Stack()) for m in bodies]
    x = inputs(6)
    means = [m.heads(x)[0].detach() for m in (members if container != "tensor" else [s[0] for s in members])]
    heads = [m.heads(x)[2].detach() for m in (members if container != "tensor" else [s[0] for s in members])]
    expected = total_variance_by_hand(means, heads)
    uf = UncertaintyForward(members, likelihood=Gaussian(variance=kind))
    for got, want in zip(uf.decompose(x), expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(uf.predictive_mean(x), sum(means) / len(means))


class _Stack(nn.Module):
    def forward(self, pair):
        return torch.stack(pair, -1)


def test_a_dict_whose_head_key_names_another_kind_is_refused_naming_the_declaration():
    members = [Structured(m, "std", "dict") for m in mlps(2, width=2)]  # {"loc", "scale"}
    with pytest.raises(ValueError, match=r"variance='variance'.*'scale' \(std\).*Gaussian\(variance='std'\)"):
        UncertaintyForward(members, likelihood=Gaussian(variance="variance"))(inputs())


def test_gaussian_has_no_default_head():
    for error in (TypeError, ValueError):  # a missing argument and an invalid configuration alike
        with pytest.raises(error, match="Gaussian needs variance= declared"):
            Gaussian()
        with pytest.raises(error, match="Gaussian needs variance= declared"):
            UncertaintyForward(mlps(2, width=2), likelihood="gaussian")


@pytest.mark.parametrize("kind", ["variance", "std"])
def test_negative_values_declared_as_a_variance_or_std_are_refused(kind):
    members = mlps(3, width=2, seed=11)  # a raw linear head: negative values for some inputs
    uf = UncertaintyForward(members, likelihood=Gaussian(variance=kind))
    with pytest.raises(ValueError, match=rf"Gaussian\(variance='{kind}'\).*negative value.*log_variance"):
        uf(inputs(20))


def test_noise_variance_beside_a_noise_head_is_refused():
    for kind in ("log_variance", "variance", "std"):
        with pytest.raises(ValueError, match="noise_variance.*means-only.*variance=None"):
            Gaussian(variance=kind, noise_variance=0.5)
    with pytest.raises(ValueError, match="noise_variance"):
        UncertaintyForward(mlps(2, width=2), likelihood="gaussian", variance="variance", noise_variance=0.5)


def test_two_means_per_input_are_refused_as_one_target_and_explained_as_two():
    members = mlps(5, width=2, seed=5)
    x = inputs(4)
    with pytest.raises(ValueError, match="targets=2"):
        UncertaintyForward(members, "epistemic", likelihood=Gaussian(variance=None))(x)
    means = torch.stack([m(x).detach() for m in members])  # (S, N, 2)
    per_target = means.var(0, unbiased=False)  # (N, 2)
    summed = UncertaintyForward(members, "epistemic", likelihood=Gaussian(variance=None, targets=2))
    torch.testing.assert_close(summed(x), per_target.sum(-1))
    torch.testing.assert_close(summed.terms(x).epistemic, per_target)
    second = UncertaintyForward(members, "epistemic", likelihood=Gaussian(variance=None, targets=2, explain=1))
    torch.testing.assert_close(second(x), per_target[:, 1])
    # the aleatoric part of means-only members is 0, never exp(a mean)
    torch.testing.assert_close(summed.decompose(x).aleatoric, torch.zeros(4, dtype=torch.float64))
    summary = summed.summary(x)
    assert tuple(summary) == ("predicted_mean_0", "predicted_mean_1", "total", "aleatoric", "epistemic")
    torch.testing.assert_close(summary["predicted_mean_1"], means[..., 1].mean(0))


def test_several_targets_with_heads_have_the_documented_layout():
    torch.manual_seed(2)
    outputs = torch.randn(3, 4, 4, dtype=torch.float64)  # (S, N, 2K): K = 2 means, then 2 log-variances
    x = torch.zeros(4, 1, dtype=torch.float64)
    posterior = SampleCallable(lambda z: outputs[:, : z.shape[0]] + 0 * z.sum(), layout="samples_first")
    uf = UncertaintyForward(posterior, likelihood=Gaussian(variance="log_variance", targets=2))
    for k in range(2):
        expected = total_variance_by_hand(list(outputs[:, :, k]), list(outputs[:, :, 2 + k].exp()))
        for got, want in zip(uf.terms(x), expected):
            torch.testing.assert_close(got[:, k], want)
    with pytest.raises(ValueError, match=r"targets=1\) reads 2 columns.*pass targets=2"):
        UncertaintyForward(posterior, likelihood=Gaussian(variance="log_variance"))(x)


def test_integrated_gradients_is_complete_on_a_several_target_regressor():
    members = mlps(4, width=2, seed=9)
    uf = UncertaintyForward(members, "epistemic", likelihood=Gaussian(variance=None, targets=2))
    x, baseline = inputs(3), torch.zeros(3, FEATURES, dtype=torch.float64)
    attributions, delta = IntegratedGradients(uf).attribute(x, baseline, n_steps=64, return_convergence_delta=True)
    assert float(delta.abs().max()) < 1e-6
    torch.testing.assert_close(attributions.sum(1), uf(x) - uf(baseline), atol=1e-6, rtol=0)


def test_means_only_members_give_a_zero_aleatoric_map_under_decompose():
    members = mlps(4, width=1, seed=2)
    uf = UncertaintyForward(members, "epistemic", likelihood=Gaussian(variance=None, noise_variance=0.3))
    x, baseline = inputs(3), torch.zeros(3, FEATURES, dtype=torch.float64)
    maps = UncertaintyIntegratedGradients(uf).attribute(x, baselines=baseline, n_steps=16, decompose=True)
    assert torch.equal(maps.aleatoric, torch.zeros_like(x))
    torch.testing.assert_close(maps.total, maps.epistemic)
    assert float(maps.epistemic.abs().sum()) > 0


def test_mc_dropout_reads_a_gaussian_tuple_through_the_likelihood():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2)).double()
    model = Structured(body, "std", "tuple")
    before = model_state([model])
    uf = UncertaintyForward(MCDropout(model, num_samples=6), likelihood=Gaussian(variance="std"))
    x = inputs(4)
    with uf.posterior.reading(uf.likelihood.read):
        outputs = torch.stack([uf.posterior.forward_single(s, x).detach() for s in range(6)])
    assert outputs.shape == (6, 4, 2)  # each mask's (mean, std) pair, read as two columns
    expected = total_variance_by_hand(list(outputs[..., 0]), list(outputs[..., 1].square()))
    torch.testing.assert_close(uf(x).detach(), expected[0])
    assert float(expected[2].min()) > 0  # the masks differ: an epistemic part
    assert_untouched(before, [model])


def test_loop_and_vmap_read_a_gaussian_dict_alike():
    members = [Structured(m, "log_variance", "dict") for m in mlps(3, width=2, seed=6)]
    x = inputs(5)
    loop = UncertaintyForward(DeepEnsemble(members, "loop"), likelihood=Gaussian(variance="log_variance"))
    vmap = UncertaintyForward(DeepEnsemble(members, "vmap"), likelihood=Gaussian(variance="log_variance"))
    for a, b in zip(loop.decompose(x), vmap.decompose(x)):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- Bernoulli


def test_sigmoid_probabilities_declared_as_logits_are_refused():
    members = mlps(3, width=1, seed=8, final=nn.Sigmoid())
    with pytest.raises(ValueError, match=r"every output is in \[0, 1\].*Bernoulli\(outputs='probability'\)"):
        UncertaintyForward(members, likelihood=Bernoulli())(inputs(8))
    with pytest.raises(ValueError, match=r"Bernoulli\(outputs='probability'\)"):
        UncertaintyForward(members, binary=True)(inputs(8))  # the old flag spelling: the same object


def test_genuine_logits_in_the_unit_interval_after_the_first_call_are_accepted():
    torch.manual_seed(0)
    members = [nn.Linear(FEATURES, 1, bias=False).double().eval() for _ in range(3)]
    for k, m in enumerate(members):
        m.weight.data = torch.full((1, FEATURES), 1.0 + k, dtype=torch.float64)
    uf = UncertaintyForward(members, likelihood=Bernoulli())
    uf(torch.full((2, FEATURES), -2.0, dtype=torch.float64))  # logits -6 .. -18: clearly logits
    small = torch.full((2, FEATURES), 0.05, dtype=torch.float64)  # logits 0.15 .. 0.45, all in [0, 1]
    p = [torch.sigmoid(m(small)[:, 0]).detach() for m in members]
    torch.testing.assert_close(uf(small), two_class_entropies_by_hand(p)[0])
    with pytest.raises(ValueError, match=r"every output is in \[0, 1\]"):
        UncertaintyForward(members, likelihood=Bernoulli())(small)  # a first call with them: refused


def test_bernoulli_probabilities_against_a_hand_computation_and_the_old_flags():
    members = mlps(4, width=1, seed=8, final=nn.Sigmoid())
    x = inputs(6)
    p = [m(x)[:, 0].detach() for m in members]
    expected = two_class_entropies_by_hand(p)
    uf = UncertaintyForward(members, likelihood=Bernoulli(outputs="probability"))
    old = UncertaintyForward(members, binary=True, probabilities=True)
    assert old.likelihood == uf.likelihood
    for got, flag, want in zip(uf.decompose(x), old.decompose(x), expected):
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(flag, want)


def test_bernoulli_logits_against_a_hand_computation_and_the_old_flags():
    members = mlps(4, width=1, seed=12)
    for m in members:
        m[2].weight.data.mul_(6)  # logits well outside [0, 1]
    x = inputs(6)
    p = [torch.sigmoid(m(x)[:, 0]).detach() for m in members]
    expected = two_class_entropies_by_hand(p)
    uf = UncertaintyForward(members, likelihood=Bernoulli())
    for got, flag, want in zip(uf.decompose(x), UncertaintyForward(members, binary=True).decompose(x), expected):
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(flag, want)
    torch.testing.assert_close(uf.predictive(x)[..., 1], torch.stack(p))
    assert torch.equal(uf.summary(x)["predicted"], (sum(p) / 4 > 0.5).long())


def test_bernoulli_probabilities_outside_the_unit_interval_and_wrong_widths_are_refused():
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*Bernoulli\(outputs='logit'\)"):
        UncertaintyForward(mlps(2, width=1, seed=12), likelihood=Bernoulli("probability"))(inputs(10))
    with pytest.raises(ValueError, match="one score per input.*Categorical"):
        UncertaintyForward(mlps(2, width=3), likelihood=Bernoulli())(inputs())


# ----------------------------------------------------------------------------- Categorical


def test_two_class_logits_declared_as_categorical_equal_the_entropy_by_hand():
    members = mlps(3, width=2, seed=13)
    x = inputs(4)
    p = [torch.softmax(m(x), -1)[:, 1].detach() for m in members]
    expected = two_class_entropies_by_hand(p)
    for likelihood in (Categorical(), "categorical"):
        uf = UncertaintyForward(members, likelihood=likelihood)
        for got, want in zip(uf.decompose(x), expected):
            torch.testing.assert_close(got, want)


def test_categorical_probabilities_and_logits_are_checked_against_the_declaration():
    members = mlps(3, width=4, seed=14)
    softmax_members = [nn.Sequential(m, nn.Softmax(-1)) for m in members]
    with pytest.raises(ValueError, match=r"look like probabilities.*Categorical\(outputs='probabilities'\)"):
        UncertaintyForward(softmax_members, likelihood=Categorical())(inputs())
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*Categorical\(outputs='logits'\)"):
        UncertaintyForward(members, likelihood=Categorical("probabilities"))(inputs())
    declared = UncertaintyForward(softmax_members, likelihood=Categorical("probabilities")).decompose(inputs())
    for a, b in zip(declared, UncertaintyForward(members).decompose(inputs())):
        torch.testing.assert_close(a, b)


def test_one_class_declared_categorical_is_refused_naming_bernoulli():
    with pytest.raises(ValueError, match="at least 2 classes.*Bernoulli"):
        UncertaintyForward(mlps(2, width=1), likelihood=Categorical())(inputs())


# ----------------------------------------------------------------------------- declarations


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"likelihood": Categorical(), "probabilities": True}, "declare the outputs once"),
        ({"likelihood": Gaussian(variance=None), "variance": "std"}, "declare the outputs once"),
        ({"likelihood": "poisson"}, "Categorical, Bernoulli or Gaussian"),
        ({"variance": "std"}, "variance describes a regressor's noise"),
        ({"likelihood": "gaussian", "variance": "std", "binary": True}, "binary=True describes a classifier"),
    ],
)
def test_contradicting_declarations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UncertaintyForward(mlps(2, width=2), **kwargs)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Categorical("logit"), "outputs must be one of"),
        (lambda: Bernoulli("logits"), "outputs must be one of"),
        (lambda: Gaussian(variance="softplus"), "variance must be one of"),
        (lambda: Gaussian(variance=None, targets=0), "targets must be a positive int"),
        (lambda: Gaussian(variance=None, targets=2, explain=2), "explain must be an int in"),
        (lambda: Gaussian(variance=None, explain="mean"), "explain must be 'sum' or a target index"),
        (lambda: Gaussian(variance=None, noise_variance=-1.0), "noise_variance"),
    ],
)
def test_bad_likelihood_arguments_name_the_argument(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_with_measure_keeps_the_likelihood_and_the_manifest_settings_are_json():
    likelihood = Gaussian(variance="std", targets=2, explain=0)
    assert likelihood.settings() == {"likelihood": "gaussian", "variance": "std", "targets": 2, "explain": 0}
    assert repr(likelihood) == "Gaussian(variance='std', targets=2, explain=0)"
    uf = UncertaintyForward(mlps(2, width=4), "total", likelihood=likelihood)
    assert uf.with_measure("epistemic").likelihood is likelihood
    with pytest.raises(ValueError, match="measure='aleatoric' needs a noise head"):
        UncertaintyForward(mlps(2, width=1), "aleatoric", likelihood=Gaussian(variance=None))


def test_likelihood_classes_are_exported_at_the_top_level():
    for name in ("Categorical", "Bernoulli", "Gaussian", "Likelihood"):
        assert name in captum_uncertainty.__all__


# ----------------------------------------------------------------------------- one home


def _likelihood_name_comparisons(tree: ast.AST) -> list:
    names = {"categorical", "bernoulli", "gaussian"}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        constants = [n for o in operands for n in ast.walk(o) if isinstance(n, ast.Constant)]
        if any(isinstance(c.value, str) and c.value.lower() in names for c in constants):
            found.append(node.lineno)
    return found


def test_no_module_outside_the_likelihoods_compares_a_likelihood_name():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "likelihoods" in path.parents:
            continue
        lines = _likelihood_name_comparisons(ast.parse(path.read_text()))
        if lines:
            offenders[str(path.relative_to(PACKAGE))] = lines
    assert offenders == {}, f"compare likelihood names only in likelihoods.py; ask the object instead: {offenders}"


def test_the_name_check_finds_a_comparison():
    tree = ast.parse("if forward.likelihood == 'gaussian':\n    pass\nok = name in ('categorical', 'other')\n")
    assert _likelihood_name_comparisons(tree) == [1, 3]


def test_a_refused_call_leaves_the_members_untouched():
    members = mlps(3, width=2)
    before = model_state(members)
    with pytest.raises(ValueError):
        UncertaintyForward(members)(inputs())
    assert_untouched(before, members)
