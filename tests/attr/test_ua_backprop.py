"""UABackprop against a literal per-(s, i) implementation of Wang et al. Eq. 4-10, completeness,
positivity, decomposition, MC dropout, state invariance and bad input (FullGrad: test_fullgrad.py)."""

import pytest
import torch
from captum.attr import NoiseTunnel
from torch import nn

from captum_uncertainty import MCDropout, SampleCallable, UncertaintyForward
from captum_uncertainty.attr.ua_backprop import UABackprop
from tests.helpers import assert_untouched, literal_fullgrad_terms, literal_min_max, make_cnn, model_state, resized

MEASURES = ("total", "aleatoric", "epistemic")


def cnn(seed, channels=1, classes=4):
    return make_cnn(seed, channels, classes)


@pytest.fixture(scope="module")
def members():
    return [cnn(seed) for seed in range(3)]


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(5)
    return torch.rand(3, 1, 8, 8, dtype=torch.float64) * 2


# ------------------------------------------------------------------ a literal reference
def literal_per_class_terms(probabilities):
    """Eq. 4 by hand: probabilities (S, C) of one input -> U_{t,g}, U_{a,g}, U_{e,g} of shape (C,)."""
    mean = probabilities.mean(0)
    total = -mean * torch.log(mean)
    aleatoric = (-probabilities * torch.log(probabilities)).mean(0)
    return {"total": total, "aleatoric": aleatoric, "epistemic": total - aleatoric}


def literal_fullgrad_relevance(member, image, i, raw=False):
    """|dz_i/dx * x| + sum_l |dz_i/db_l * b_l| for one image, post-processed like FullGrad's
    reference, or (raw) as Eq. 10 is written: channel mean of the input term plus each bias
    term's channel sum, resized."""
    input_term, bias_terms = literal_fullgrad_terms([member], image, lambda logits: logits[0][0, i])
    scale = (lambda t: t) if raw else literal_min_max
    relevance = input_term.abs().mean(0) if raw else literal_min_max(input_term.abs()).sum(0)
    for term in bias_terms:
        relevance = relevance + resized(scale(term.abs()).sum(0), image.shape[1:])
    return relevance


def literal_relevance(member, image, i, path):
    if path.startswith("fullgrad"):
        return literal_fullgrad_relevance(member, image, i, raw=path == "fullgrad-raw")
    point = image.unsqueeze(0).clone().requires_grad_()
    (gradient,) = torch.autograd.grad(member(point)[0, i], point)
    gradient = gradient[0]
    relevance = gradient if path == "grad" else gradient * image
    return relevance.mean(0)  # psi: channel mean


def literal_ua_backprop(members, image, measure, path, tau1, tau2):
    """Wang et al. Eq. 4-10, one sample s and one class i at a time."""
    with torch.no_grad():
        logits = torch.stack([m(image.unsqueeze(0))[0] for m in members])
    g = torch.softmax(logits, dim=1)
    u_g = literal_per_class_terms(g)[measure]
    S, C = g.shape
    result = torch.zeros(image.shape[1:], dtype=image.dtype)
    for s in range(S):
        for i in range(C):
            u_z = 0.0
            for j in range(C):
                # Eq. 7: dg_j/dz_k for all k; Eq. 8: softmax over k of dg_j/dz_k / (g_j tau1)
                jac = torch.tensor([g[s, j] * ((1.0 if k == j else 0.0) - g[s, k]) for k in range(C)], dtype=g.dtype)
                c = torch.softmax(jac / (g[s, j] * tau1), dim=0)[i]
                u_z = u_z + c * u_g[j]
            relevance = literal_relevance(members[s], image, i, path)
            m_is = torch.softmax(relevance.flatten() / tau2, dim=0).view_as(relevance)
            result = result + u_z * m_is
    return result / S


@pytest.mark.parametrize("classes_per_pass", [1, None])
@pytest.mark.parametrize("path", ["grad", "inputgrad", "fullgrad", "fullgrad-raw"])
@pytest.mark.parametrize("measure", MEASURES)
def test_equals_literal_per_sample_per_class_implementation(members, x, path, measure, classes_per_pass):
    uf = UncertaintyForward(members, measure=measure)
    options = {"path": "fullgrad", "fullgrad_postprocess": "raw"} if path == "fullgrad-raw" else {"path": path}
    options.update({"fullgrad_postprocess": "reference"} if path == "fullgrad" else {})
    maps = UABackprop(uf).attribute(x, tau1=0.2, tau2=0.5, classes_per_pass=classes_per_pass, **options)
    assert maps.shape == (3, 1, 8, 8)
    for n in range(x.shape[0]):
        expected = literal_ua_backprop(members, x[n], measure, path, tau1=0.2, tau2=0.5)
        assert torch.allclose(maps[n, 0], expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("measure", MEASURES)
def test_the_default_fullgrad_reading_is_eq10_as_written(members, x, measure):
    """The default map equals a literal per-(s, i) implementation of Eq. 10 with raw terms, not
    the FullGrad reference's min-max post-processing."""
    uf = UncertaintyForward(members, measure=measure)
    maps = UABackprop(uf).attribute(x, tau1=0.2, tau2=0.5)
    for n in range(x.shape[0]):
        raw = literal_ua_backprop(members, x[n], measure, "fullgrad-raw", tau1=0.2, tau2=0.5)
        reference = literal_ua_backprop(members, x[n], measure, "fullgrad", tau1=0.2, tau2=0.5)
        assert torch.allclose(maps[n, 0], raw, rtol=1e-5, atol=1e-9)
        assert not torch.allclose(maps[n, 0], reference, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("path", ["fullgrad", "fullgrad-raw", "grad", "inputgrad", "integrated_gradients"])
@pytest.mark.parametrize("measure", MEASURES)
def test_completeness_every_measure_and_path(members, x, path, measure):
    uf = UncertaintyForward(members, measure=measure)
    options = {"path": "fullgrad", "fullgrad_postprocess": "raw"} if path == "fullgrad-raw" else {"path": path}
    maps = UABackprop(uf).attribute(x, n_steps=8, **options)
    with torch.no_grad():
        u = uf(x)
    assert torch.allclose(maps.flatten(1).sum(1), u, rtol=1e-5, atol=0)


@pytest.mark.parametrize("path", ["fullgrad", "grad", "inputgrad", "integrated_gradients"])
def test_epistemic_map_is_positive(members, x, path):
    """U_{e,g_j} >= 0 per class (Jensen), softmax coefficients and pixel distributions > 0."""
    uf = UncertaintyForward(members, measure="epistemic")
    maps = UABackprop(uf).attribute(x, path=path, n_steps=4)
    assert (maps > 0).all()


@pytest.mark.parametrize("path", ["fullgrad", "inputgrad", "integrated_gradients"])
def test_decomposition_equals_separate_calls(members, x, path):
    uf = UncertaintyForward(members, measure="epistemic")
    parts = UABackprop(uf).attribute(x, path=path, decompose=True, n_steps=4)
    assert (parts.epistemic >= 0).all() and (parts.aleatoric >= 0).all()
    assert torch.allclose(parts.total, parts.aleatoric + parts.epistemic, rtol=1e-12, atol=1e-15)
    for name in MEASURES:
        alone = UABackprop(uf.with_measure(name)).attribute(x, path=path, n_steps=4)
        assert torch.allclose(parts.select(name), alone, rtol=1e-12, atol=1e-15)


def test_ig_path_matches_hand_written_eq_22(members, x):
    """Eq. 22 with a 2-point left Riemann rule (alphas 0 and 1/2) checked against manual gradients."""
    uf = UncertaintyForward(members[:1], measure="total")
    baseline = torch.zeros_like(x)
    maps = UABackprop(uf).attribute(
        x[:1], path="integrated_gradients", tau1=0.3, tau2=0.4, n_steps=2, method="riemann_left"
    )
    with torch.no_grad():
        g = torch.softmax(members[0](x[:1]), 1)[0]
    u_g = -g * torch.log(g)
    expected = torch.zeros(8, 8, dtype=x.dtype)
    for i in range(4):
        grads = []
        for alpha in (0.0, 0.5):
            point = (baseline[:1] + alpha * x[:1]).requires_grad_()
            grads.append(torch.autograd.grad(members[0](point)[0, i], point)[0])
        relevance = (x[:1] * (grads[0] + grads[1]) / 2)[0, 0]
        u_z = sum(torch.softmax(((torch.arange(4) == j).double() - g) / 0.3, 0)[i] * u_g[j] for j in range(4))
        expected += u_z * torch.softmax(relevance.flatten() / 0.4, 0).view(8, 8)
    assert torch.allclose(maps[0, 0], expected, rtol=1e-6)


def test_ablation_without_normalization_breaks_completeness(members, x):
    uf = UncertaintyForward(members, measure="total")
    maps = UABackprop(uf).attribute(x, path="grad", normalize=False)
    with torch.no_grad():
        u = uf(x)
    assert not torch.allclose(maps.flatten(1).sum(1), u, rtol=1e-3)


def test_mc_dropout_posterior_and_state_restored():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(), nn.Linear(3 * 6 * 6, 4)
    ).double()
    model.train()
    uf = UncertaintyForward(MCDropout(model, num_samples=4, seed=1), measure="epistemic")
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())
    maps = UABackprop(uf).attribute(x)
    with torch.no_grad():
        u = uf(x)
    assert torch.allclose(maps.flatten(1).sum(1), u, rtol=1e-5)
    for path in ("fullgrad", "inputgrad"):  # one batched backward for all classes: same maps
        one = UABackprop(uf).attribute(x, path=path)
        assert torch.allclose(UABackprop(uf).attribute(x, path=path, classes_per_pass=None), one, atol=1e-14)
    assert model.training and all(m.training for m in model.modules())
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


class FailingHead(nn.Module):
    """A member that raises after its conv layers ran (with FullGrad's hooks in place)."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, inputs):
        self.body[:4](inputs)
        raise RuntimeError("member failed")


def test_ensemble_state_restored_after_success_and_errors(members, x):
    members[1].train()
    members[2][0].weight.requires_grad_(False)
    try:
        failing = FailingHead(members[2])
        before = model_state(members)
        UABackprop(UncertaintyForward(members, measure="total")).attribute(x)
        assert_untouched(before, members)
        with pytest.raises(ValueError):
            UABackprop(UncertaintyForward(members, measure="total")).attribute(x * float("nan"))
        assert_untouched(before, members)
        with pytest.raises(RuntimeError, match="member failed"):
            UABackprop(UncertaintyForward(members[:2] + [failing], measure="total")).attribute(x)
        assert_untouched(before, members)
        assert all(p.grad is None for member in members for p in member.parameters())
    finally:
        members[1].eval()
        members[2][0].weight.requires_grad_(True)


def test_fullgrad_path_needs_a_hookable_posterior(members, x):
    def stacked(inputs):
        return torch.stack([m(inputs) for m in members])

    opaque = UABackprop(
        UncertaintyForward(SampleCallable(stacked, layout="samples_first", num_samples=3), measure="total")
    )
    with pytest.raises(ValueError, match="path='fullgrad'"):
        opaque.attribute(x)
    listed = SampleCallable(stacked, layout="samples_first", num_samples=3, modules=members)
    with pytest.raises(ValueError, match="path='fullgrad'"):
        UABackprop(UncertaintyForward(listed, measure="total")).attribute(x)
    assert all(sum(len(m._forward_hooks) for m in member.modules()) == 0 for member in members)
    # the gradient paths work for any posterior and agree with the ensemble
    expected = UABackprop(UncertaintyForward(members, measure="total")).attribute(x, path="inputgrad")
    assert torch.allclose(opaque.attribute(x, path="inputgrad"), expected, atol=1e-12)


def test_noise_tunnel_over_ua_backprop(members, x):
    uf = UncertaintyForward(members, measure="total")
    torch.manual_seed(0)
    smooth = NoiseTunnel(UABackprop(uf)).attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.05, path="grad")
    assert smooth.shape == (3, 1, 8, 8) and (smooth >= 0).all()


def test_bad_input(members, x):
    ua = UABackprop(UncertaintyForward(members))
    with pytest.raises(ValueError, match="tau1"):
        ua.attribute(x, tau1=0.0, tau2=0.3)
    with pytest.raises(ValueError, match="tau2"):
        ua.attribute(x, tau1=0.1, tau2=-1)
    with pytest.raises(ValueError, match="path"):
        ua.attribute(x, path="lrp")
    with pytest.raises(ValueError, match="spatial layout"):
        ua.attribute(x.flatten(1))
    with pytest.raises(ValueError, match="n_steps"):
        ua.attribute(x, path="integrated_gradients", n_steps=0)
    with pytest.raises(ValueError, match="channels"):
        ua.attribute(torch.rand(2, 2, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="classes_per_pass"):
        ua.attribute(x, classes_per_pass=0)
    with pytest.raises(ValueError, match="fullgrad_postprocess"):
        ua.attribute(x, fullgrad_postprocess="none")
    assert not ua.has_convergence_delta() and ua.multiplies_by_inputs
    with pytest.raises(TypeError, match="UncertaintyForward"):
        UABackprop(members)


@pytest.mark.parametrize("path", ["fullgrad", "inputgrad"])
def test_noise_tunnel_keeps_the_decomposition(members, x, path):
    uf = UncertaintyForward(members, measure="total")
    kwargs = dict(nt_type="smoothgrad", nt_samples=3, stdevs=0.05, path=path)
    torch.manual_seed(2)
    total, aleatoric, epistemic = NoiseTunnel(UABackprop(uf)).attribute(x, decompose=True, **kwargs)
    for measure, smoothed in (("total", total), ("aleatoric", aleatoric), ("epistemic", epistemic)):
        torch.manual_seed(2)
        alone = NoiseTunnel(UABackprop(uf.with_measure(measure))).attribute(x, **kwargs)
        assert torch.allclose(smoothed, alone, atol=1e-12)


def test_captum_argument_order_and_target(members, x):
    uf = UncertaintyForward(members, measure="epistemic")
    ua = UABackprop(uf)
    # positional: inputs, baselines, target, additional_forward_args, n_steps
    positional = ua.attribute(x, 0.5, None, None, 6, path="integrated_gradients")
    assert torch.allclose(positional, ua.attribute(x, baselines=0.5, n_steps=6, path="integrated_gradients"))
    # target keeps one class's Eq. 4 term: the maps of all classes add up to the full map
    per_class = [ua.attribute(x, target=c, path="inputgrad") for c in range(4)]
    assert torch.allclose(sum(per_class), ua.attribute(x, path="inputgrad"), atol=1e-12)
    terms = uf.per_class(x).epistemic.detach()
    for c in range(4):
        assert torch.allclose(per_class[c].flatten(1).sum(1), terms[:, c], atol=1e-10)
    assert not ua.multiplies_by_inputs or ua.attribute(x, path="grad").shape == (3, 1, 8, 8)


class GatedMember(nn.Module):
    def __init__(self, seed):
        super().__init__()
        self.net = cnn(seed)

    def forward(self, image, gate):
        return self.net(image) * gate.view(-1, 1)


@pytest.mark.parametrize("path", ["fullgrad", "grad", "integrated_gradients"])
def test_additional_forward_args_follow_their_rows(x, path):
    uf = UncertaintyForward([GatedMember(seed) for seed in range(3)], measure="total")
    gate = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    maps = UABackprop(uf).attribute(x, additional_forward_args=gate, n_steps=4, path=path)
    assert torch.allclose(maps.flatten(1).sum(1), uf(x, gate).detach(), atol=1e-10)  # completeness
    for i in range(3):  # each row alone, with its own gate
        alone = UABackprop(uf).attribute(x[i : i + 1], additional_forward_args=gate[i : i + 1], n_steps=4, path=path)
        assert torch.allclose(maps[i : i + 1], alone, atol=1e-12)


def tabular_members():
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double())
    return members


@pytest.mark.parametrize("path", ["grad", "inputgrad", "integrated_gradients"])
@pytest.mark.parametrize("measure", MEASURES)
def test_tabular_inputs_are_complete_and_match_the_literal_reference(path, measure):
    members = tabular_members()
    torch.manual_seed(4)
    features = torch.randn(5, 6, dtype=torch.float64)
    uf = UncertaintyForward(members, measure=measure)
    maps = UABackprop(uf).attribute(features, path=path, tau1=0.1, tau2=0.5, n_steps=64)
    assert maps.shape == features.shape
    assert torch.allclose(maps.sum(1), uf(features).detach(), atol=1e-10)  # completeness
    if path != "integrated_gradients":  # literal Eq. 4-10 with psi = softmax over the features
        for n in range(5):
            expected = literal_tabular(members, features[n], measure, path, 0.1, 0.5)
            assert torch.allclose(maps[n], expected, atol=1e-12)
    with pytest.raises(ValueError, match="tau1 and tau2"):
        UABackprop(uf).attribute(features, path=path)


def literal_tabular(members, row, measure, path, tau1, tau2):
    with torch.no_grad():
        logits = torch.stack([m(row.unsqueeze(0))[0] for m in members])
    g = torch.softmax(logits, dim=1)
    u_g = literal_per_class_terms(g)[measure]
    result = torch.zeros_like(row)
    for s, member in enumerate(members):
        for i in range(g.shape[1]):
            u_z = sum(
                torch.softmax(
                    torch.tensor([g[s, j] * (float(k == j) - g[s, k]) for k in range(g.shape[1])], dtype=g.dtype)
                    / (g[s, j] * tau1),
                    dim=0,
                )[i]
                * u_g[j]
                for j in range(g.shape[1])
            )
            point = row.unsqueeze(0).clone().requires_grad_()
            (gradient,) = torch.autograd.grad(member(point)[0, i], point)
            relevance = gradient[0] if path == "grad" else gradient[0] * row
            result = result + u_z * torch.softmax(relevance / tau2, dim=0)
    return result / len(members)


def test_fullgrad_refuses_layers_whose_bias_it_cannot_see(x):
    class WithLayerNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = cnn(0)
            self.norm = nn.LayerNorm(4).double()

        def forward(self, image):
            return self.norm(self.net(image))

    members = [WithLayerNorm(), WithLayerNorm()]
    before = model_state(members)
    with pytest.raises(ValueError, match=r"modules\[0\]\.norm \(LayerNorm: bias\)"):
        UABackprop(UncertaintyForward(members)).attribute(x)
    assert_untouched(before, members)
    maps = UABackprop(UncertaintyForward(members)).attribute(x, path="inputgrad")  # the other paths work
    assert torch.allclose(maps.flatten(1).sum(1), UncertaintyForward(members)(x).detach(), atol=1e-10)


def test_fullgrad_refusal_is_short_names_the_working_paths_and_hints_only_where_it_helps(x):
    class ManyNorms(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = cnn(0)
            self.norms = nn.ModuleList([nn.LayerNorm(4).double() for _ in range(21)])

        def forward(self, image):
            out = self.net(image)
            for norm in self.norms:
                out = norm(out)
            return out

    with pytest.raises(ValueError) as refused:
        UABackprop(UncertaintyForward([ManyNorms(), ManyNorms()])).attribute(x)
    message = str(refused.value)
    assert "42 layer(s)" in message and "and 39 more" in message
    assert message.count("LayerNorm") == 3  # the first three are named, not all 42
    assert "path='inputgrad'" in message and "from_bayesian_torch" not in message
    assert len(message) < 500 and message.count("\n") <= 2


def test_fullgrad_refuses_a_posterior_that_runs_copies_of_its_listed_modules(members, x):
    import copy

    copies = [copy.deepcopy(m) for m in members]
    hidden = SampleCallable(
        lambda inputs: torch.stack([m(inputs) for m in copies]), layout="samples_first", modules=members
    )
    with pytest.raises(ValueError, match="none of them ran"):
        UABackprop(UncertaintyForward(hidden)).attribute(x)


@pytest.mark.parametrize("measure", MEASURES)
def test_blur_ig_path_is_complete_and_uses_blur_ig_of_each_logit(members, x, measure):
    from captum_uncertainty import BlurIntegratedGradients
    from captum_uncertainty.attr._utils.ua_backprop import path_relevances, scale_space_path

    uf = UncertaintyForward(members, measure=measure)
    maps = UABackprop(uf).attribute(x, path="blur_integrated_gradients", n_steps=6, max_sigma=1.5)
    assert torch.allclose(maps.flatten(1).sum(1), uf(x).detach(), rtol=1e-6)  # completeness
    assert (maps > 0).all()
    # the relevance of z_i^s is Blur IG of member s's logit i, as BlurIntegratedGradients computes it
    chunks = path_relevances(uf, x, (), scale_space_path(x, 1.5, 6), None, 1)
    next(chunks)
    _, _, _, relevance = next(chunks)  # (C, S, N, 1, 8, 8)
    for s in (0, 2):
        for i in (1, 3):
            expected = BlurIntegratedGradients(members[s]).attribute(x, target=i, max_sigma=1.5, n_steps=6)
            assert torch.allclose(relevance[i, s], expected, atol=1e-12)
    with pytest.raises(ValueError, match="max_sigma"):
        UABackprop(uf).attribute(x, path="blur_integrated_gradients", max_sigma=-1.0)
    with pytest.raises(ValueError, match="spatial layout"):
        UABackprop(uf).attribute(x.flatten(1), path="blur_integrated_gradients", tau1=0.1, tau2=0.1)


ALL_PATHS = ("fullgrad", "grad", "inputgrad", "integrated_gradients", "blur_integrated_gradients")


@pytest.mark.parametrize("path", ALL_PATHS)
def test_every_path_checks_the_outputs_against_their_declaration(members, x, path):
    """As uf(x): probabilities passed as logits, or logits declared as probabilities, are refused
    unless the forward has validate=False."""
    softmax_members = [nn.Sequential(member, nn.Softmax(dim=-1)) for member in members]
    options = dict(path=path, n_steps=3, max_sigma=1.5)
    with pytest.raises(ValueError, match="look like probabilities"):
        UABackprop(UncertaintyForward(softmax_members)).attribute(x, **options)
    with pytest.raises(ValueError, match=r"Categorical\(outputs=.probabilities.\) but"):
        UABackprop(UncertaintyForward(members, probabilities=True)).attribute(x, **options)
    unchecked = [
        UncertaintyForward(softmax_members, validate=False),
        UncertaintyForward(members, probabilities=True, validate=False),
    ]
    for uf in unchecked:
        maps = UABackprop(uf).attribute(x, **options)
        assert maps.shape == (3, 1, 8, 8) and bool(maps.isfinite().all())
    declared = UncertaintyForward(softmax_members, probabilities=True)  # declared correctly: runs, complete
    maps = UABackprop(declared).attribute(x, **options)
    assert torch.allclose(maps.flatten(1).sum(1), declared(x).detach(), rtol=1e-6)
