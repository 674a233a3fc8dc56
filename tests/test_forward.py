"""The entropy decomposition and UncertaintyForward against hand computations."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_uncertainty import Bernoulli, Categorical, UncertaintyForward, entropy_decomposition, per_class_uncertainty
from captum_uncertainty.forward import MEASURES


def hand_decomposition(probs):
    """Plain-Python entropies of a list (over samples) of probability lists, one input."""
    n_samples = len(probs)
    mean = [sum(p[c] for p in probs) / n_samples for c in range(len(probs[0]))]
    h = lambda q: -sum(v * math.log(v) for v in q if v > 0)  # noqa: E731
    total = h(mean)
    aleatoric = sum(h(p) for p in probs) / n_samples
    return total, aleatoric, total - aleatoric


def test_decomposition_matches_hand_computation_from_probabilities():
    probs = [[0.8, 0.2], [0.4, 0.6], [0.5, 0.5]]
    d = entropy_decomposition(torch.tensor(probs, dtype=torch.float64).unsqueeze(1), probabilities=True)
    total, aleatoric, epistemic = hand_decomposition(probs)
    assert d.total.item() == pytest.approx(total, abs=1e-12)
    assert d.aleatoric.item() == pytest.approx(aleatoric, abs=1e-12)
    assert d.epistemic.item() == pytest.approx(epistemic, abs=1e-12)


def test_decomposition_from_logits_matches_softmax_probabilities():
    logits = torch.tensor([[[2.0, 0.0, -1.0]], [[-0.5, 1.5, 0.0]]], dtype=torch.float64)
    probs = torch.softmax(logits, -1)
    d = entropy_decomposition(logits)
    expected = hand_decomposition(probs[:, 0].tolist())
    assert torch.allclose(torch.stack(list(d)).squeeze(1), torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_per_class_terms_sum_to_scalars_and_match_eq4():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 5, dtype=torch.float64)
    terms = per_class_uncertainty(logits)
    scalars = entropy_decomposition(logits)
    for term, scalar in zip(terms, scalars):
        assert term.shape == (6, 5)
        assert torch.allclose(term.sum(-1), scalar, atol=1e-12)
    p = torch.softmax(logits, -1)
    mean = p.mean(0)
    assert torch.allclose(terms.total, -mean * mean.log(), atol=1e-12)  # Eq. 4a
    assert torch.allclose(terms.aleatoric, (-p * p.log()).mean(0), atol=1e-12)  # Eq. 4b
    assert torch.allclose(terms.epistemic, terms.total - terms.aleatoric)  # Eq. 4c


def test_members_that_agree_have_zero_epistemic():
    logits = torch.randn(1, 3, 4).repeat(5, 1, 1)
    d = entropy_decomposition(logits)
    assert torch.allclose(d.epistemic, torch.zeros(3), atol=1e-6)
    assert torch.allclose(d.total, d.aleatoric, atol=1e-6)


@pytest.mark.parametrize("probabilities", [False, True])
def test_one_hot_members_give_exact_zero_and_finite_gradients(probabilities):
    if probabilities:
        outputs = torch.tensor([[[1.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]]], requires_grad=True)
    else:
        outputs = torch.tensor([[[1e4, 0.0, -1e4]], [[1e4, 5.0, 0.0]]], requires_grad=True)
    d = entropy_decomposition(outputs, probabilities=probabilities)
    for value in d:
        assert value.item() == 0.0
    for measure in MEASURES:
        (grad,) = torch.autograd.grad(d.select(measure).sum(), outputs, retain_graph=True)
        assert torch.isfinite(grad).all()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(2, 5),
    st.lists(st.sampled_from([-1e4, -30.0, -1.0, 0.0, 0.5, 3.0, 1e4]), min_size=60, max_size=60),
    st.floats(-50, 50),
)
def test_fuzz_random_and_saturated_logits_stay_finite(n_samples, batch, classes, pool, shift):
    values = torch.tensor(pool[: n_samples * batch * classes]) + torch.randn(n_samples * batch * classes) * 0.1
    logits = (values.reshape(n_samples, batch, classes) + shift).requires_grad_()
    d = entropy_decomposition(logits, validate=False)
    for measure in MEASURES:
        value = d.select(measure)
        assert torch.isfinite(value).all()
        (grad,) = torch.autograd.grad(value.sum(), logits, retain_graph=True)
        assert torch.isfinite(grad).all()
    assert (d.epistemic >= -1e-5).all()
    assert (d.aleatoric >= -1e-6).all()
    assert (d.total <= math.log(classes) + 1e-5).all()
    assert torch.allclose(d.total, d.aleatoric + d.epistemic)


@pytest.mark.parametrize(
    "outputs, probabilities, message",
    [
        (torch.tensor([[[0.3, 0.7]], [[0.5, 0.5]]]), False, "look like probabilities"),
        (torch.tensor([[[0.3, 0.9]]]), True, "do not sum to 1"),
        (torch.tensor([[[2.0, -1.0]]]), True, "outside \\[0, 1\\]"),
        (torch.randn(3, 4), False, "shape \\(S, N, C\\)"),
        (torch.tensor([[[float("nan"), 0.0]]]), False, "NaN or inf"),
        (torch.randn(2, 3, 1), False, "at least 2 classes"),
    ],
)
def test_bad_outputs_raise_clear_errors(outputs, probabilities, message):
    with pytest.raises(ValueError, match=message):
        entropy_decomposition(outputs, probabilities=probabilities)


def make_members(n=3, classes=4, features=5, seed=0):
    torch.manual_seed(seed)
    return [nn.Sequential(nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, classes)) for _ in range(n)]


def test_uncertainty_forward_shapes_and_measures():
    members = make_members()
    x = torch.randn(7, 5)
    stacked = torch.stack([m(x) for m in members])
    expected = entropy_decomposition(stacked)
    for measure in MEASURES:
        uf = UncertaintyForward(members, measure=measure)
        u = uf(x)
        assert u.shape == (7,)
        assert torch.allclose(u, expected.select(measure), atol=1e-6)
    uf = UncertaintyForward(members, measure="epistemic")
    p = uf.predictive(x)
    assert p.shape == (3, 7, 4)
    assert torch.allclose(p, torch.softmax(stacked, -1), atol=1e-6)
    assert torch.allclose(p.sum(-1), torch.ones(3, 7))
    assert torch.allclose(torch.stack(list(uf.decompose(x))), torch.stack(list(expected)), atol=1e-6)
    assert uf.with_measure("aleatoric").measure == "aleatoric"
    assert uf.with_measure("aleatoric").posterior is uf.posterior


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def test_uncertainty_forward_with_probability_members():
    members = make_members()
    prob_members = [nn.Sequential(m, nn.Softmax(-1)) for m in members]
    x = torch.randn(4, 5)
    from_logits = UncertaintyForward(members, "total")(x)
    from_probs = UncertaintyForward(prob_members, "total", probabilities=True)(x)
    assert torch.allclose(from_logits, from_probs, atol=1e-5)
    with pytest.raises(ValueError, match="look like probabilities"):
        UncertaintyForward(prob_members, "total")(x)
    with pytest.raises(ValueError, match=r"Categorical\(outputs=.probabilities.\) but"):
        UncertaintyForward(members, "total", probabilities=True)(x)
    halved = [nn.Sequential(m, nn.Softmax(-1), Scale(0.9)) for m in members]
    with pytest.raises(ValueError, match="do not sum to 1"):
        UncertaintyForward(halved, "total", probabilities=True)(x)


def test_uncertainty_forward_rejects_unknown_measure_and_bad_flags():
    with pytest.raises(ValueError, match="measure must be one of"):
        UncertaintyForward(make_members(), measure="variance")
    with pytest.raises(TypeError, match="probabilities must be a bool"):
        UncertaintyForward(make_members(), probabilities="yes")


def test_uncertainty_forward_gradient_matches_finite_difference():
    members = [m.double() for m in make_members()]
    uf = UncertaintyForward(members, "epistemic")
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(uf, (x,))


# ----------------------------------------------------------------------------- binary classifiers
class OneLogit(nn.Module):
    def __init__(self, seed, squeeze):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 1)).double()
        self.squeeze = squeeze

    def forward(self, x):
        z = self.net(x)
        return z.squeeze(-1) if self.squeeze else z


class TwoLogits(nn.Module):
    """The explicit two-class form of a one-logit model: logits [0, z]."""

    def __init__(self, one):
        super().__init__()
        self.one = one

    def forward(self, x):
        z = self.one.net(x)
        return torch.cat([torch.zeros_like(z), z], dim=-1)


class OneProbability(nn.Module):
    def __init__(self, one):
        super().__init__()
        self.one = one

    def forward(self, x):
        return torch.sigmoid(self.one.net(x))


@pytest.mark.parametrize("measure", ["total", "aleatoric", "epistemic"])
def test_binary_option_equals_the_explicit_two_class_form(measure):
    from captum_uncertainty import UABackprop, UncertaintyIntegratedGradients

    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64) * 2
    ones = [OneLogit(seed, squeeze=seed % 2 == 0) for seed in range(3)]  # (N,) and (N, 1) outputs
    binary = UncertaintyForward(ones, measure=measure, binary=True)
    explicit = UncertaintyForward([TwoLogits(m) for m in ones], measure=measure, likelihood=Categorical())
    probabilities = UncertaintyForward(
        [OneProbability(m) for m in ones], measure=measure, binary=True, probabilities=True
    )
    assert torch.allclose(binary(x), explicit(x), atol=1e-12)
    assert torch.allclose(probabilities(x), explicit(x), atol=1e-10)
    for method in (
        lambda f: UncertaintyIntegratedGradients(f).attribute(x, n_steps=16),
        lambda f: UABackprop(f).attribute(x, path="inputgrad", tau1=0.1, tau2=0.5),
    ):
        assert torch.allclose(method(binary), method(explicit), atol=1e-10)
    assert binary.likelihood == Bernoulli()
    with pytest.raises(ValueError, match="Bernoulli"):
        UncertaintyForward(ones)(x)  # one class without a declaration: a clear error naming it
    with pytest.raises(ValueError, match="one score per input"):
        UncertaintyForward([TwoLogits(m) for m in ones], binary=True)(x)


def test_explanation_distribution_of_binary_members_equals_the_two_class_form():
    from captum.attr import Saliency

    from captum_uncertainty import ExplanationDistribution

    torch.manual_seed(1)
    x = torch.randn(4, 5, dtype=torch.float64)
    ones = [OneLogit(seed, squeeze=True) for seed in range(3)]
    binary = ExplanationDistribution(UncertaintyForward(ones, binary=True), Saliency).attribute(x)
    two_class = UncertaintyForward([TwoLogits(m) for m in ones], likelihood=Categorical())
    explicit = ExplanationDistribution(two_class, Saliency).attribute(x)
    assert torch.equal(binary.target, explicit.target)
    assert torch.allclose(binary.samples, explicit.samples, atol=1e-12)


def test_integer_images_and_members_of_mixed_dtypes_or_devices_get_clear_type_errors():
    def member(seed, dtype=torch.float32, device="cpu"):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).to(dtype=dtype, device=device)

    images = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"inputs\[0\] has dtype torch.uint8.*no embedding layer"):
        UncertaintyForward([member(0), member(1)])(images)
    assert UncertaintyForward([member(0), member(1)])(images.float() / 255).shape == (2,)
    with pytest.raises(TypeError, match=r"mix dtypes: modules\[0\] is torch.float32, modules\[1\] is torch.float64"):
        UncertaintyForward([member(0), member(1, torch.float64)])(images.float())
    with pytest.raises(TypeError, match=r"different devices: modules\[0\] on cpu, modules\[1\] on meta"):
        UncertaintyForward([member(0), member(1, device="meta")])(images.float())


def test_a_vit_with_torchvisions_zero_initialised_head_gets_a_warning_not_flat_maps_in_silence():
    import warnings

    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vits = [
        VisionTransformer(
            image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16, num_classes=3
        )
        for _ in range(2)
    ]
    images = torch.rand(3, 3, 16, 16)
    with pytest.warns(UserWarning, match=r"samples \[0, 1\] return the same outputs for every input"):
        UncertaintyForward(vits)(images)
    for vit in vits:
        torch.nn.init.normal_(vit.heads.head.weight)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        UncertaintyForward(vits)(images)
        UncertaintyForward(vits)(images[:1].expand(3, -1, -1, -1))  # identical inputs: nothing to say
