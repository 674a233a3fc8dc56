"""Ensembles and weight samples that differ only in some layers run the rest once (``share_trunk``),
with the same outputs and maps as running every member on its own, for every method; the user's
models are left as they were."""

from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel
from torch import nn

from captum_uncertainty import (
    CLUE,
    BlurIntegratedGradients,
    CounterfactualPathIG,
    CovarianceAttribution,
    DeepEnsemble,
    ExplanationDistribution,
    FullGrad,
    GuidedIntegratedGradients,
    MCDropout,
    UABackprop,
    UncertaintyForward,
    UncertaintyIntegratedGradients,
    WeightSamples,
)
from captum_uncertainty.generative import VAE

DT = torch.float64


class RowRecorder(nn.Module):
    """Identity that notes how many rows it saw (a module, not a hook: hooks make ensembles run
    member by member)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list = []

    def forward(self, x):
        self.rows.append(int(x.shape[0]))
        return x


def backbone(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = [RowRecorder(), nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(108, 12)]
    net = nn.Sequential(*layers, nn.ReLU()).to(DT)
    net[2].running_mean.uniform_(-0.3, 0.3)
    net[2].running_var.uniform_(0.5, 1.5)
    return net.eval()


def last_layer_samples(count: int = 4) -> WeightSamples:
    """Weight samples of one model differing in its last layer only, as last-layer Laplace draws them."""
    model = nn.Sequential(backbone(), nn.Linear(12, 5).to(DT)).eval()
    generator = torch.Generator().manual_seed(1)
    states = []
    for _ in range(count):
        state = copy.deepcopy(model.state_dict())
        state["1.weight"] = state["1.weight"] + 0.5 * torch.randn(
            state["1.weight"].shape, generator=generator, dtype=DT
        )
        states.append(state)
    return model, states


def multi_head(count: int = 4):
    """Heads trained on one frozen backbone: every member holds the same backbone object."""
    shared = backbone()
    torch.manual_seed(2)
    return [nn.Sequential(shared, nn.Linear(12, 5).to(DT)).eval() for _ in range(count)]


def twins(kind: str):
    """The same posterior shared (default ``"auto"``) and member by member."""
    if kind == "last_layer":
        model, states = last_layer_samples()
        return WeightSamples(model, states), WeightSamples(model, states, share_trunk=False)
    if kind == "multi_head":
        members = multi_head()
        return DeepEnsemble(members), DeepEnsemble(members, share_trunk=False)
    if kind == "mc_dropout":  # dropout before the head: the trunk is everything before it
        torch.manual_seed(8)
        model = nn.Sequential(backbone(), nn.Dropout(0.5), nn.Linear(12, 5).to(DT)).eval()
        return MCDropout(model, num_samples=4), MCDropout(model, num_samples=4, share_trunk=False)
    return laplace_twins()


def laplace_twins():
    """laplace-torch's default (last-layer, Kronecker) on a small CNN, as fixed weight samples."""
    laplace = pytest.importorskip("laplace")
    from captum_uncertainty.integrations import from_laplace

    model = nn.Sequential(backbone(3), nn.Linear(12, 5).to(DT)).eval()
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(48, 1, 8, 8, generator=generator, dtype=DT)
    y = torch.randint(0, 5, (48,), generator=generator)
    la = laplace.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="kron")
    la.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16))
    shared = from_laplace(la, num_samples=4, seed=0)
    plain = WeightSamples(model, [m.state_dict() for m in shared.members], share_trunk=False)
    return shared, plain


KINDS = ["last_layer", "multi_head", "laplace_last_layer"]


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=DT)


@pytest.mark.parametrize("kind", KINDS)
def test_the_shared_run_equals_the_members_run_alone_and_runs_the_trunk_once(kind, x):
    shared, plain = twins(kind)
    with torch.no_grad():
        shared(x)  # the first call per input layout also runs the members alone, to check the shared run
        for member in shared.members:
            member[0][0].rows.clear()
        outputs = shared(x)
    recorder = shared.members[0][0][0]
    assert recorder.rows == [x.shape[0]]
    assert recorder.rows[-1] == x.shape[0]  # the trunk saw N rows, not S x N, nor once per member
    if kind != "multi_head":  # (the multi-head members hold one recorder between them)
        assert all(not member[0][0].rows for member in shared.members[1:])
    with torch.no_grad():
        torch.testing.assert_close(outputs, plain(x), rtol=1e-10, atol=1e-12)
    layers = shared._trunk.layers(list(shared.members))
    assert layers == ["1"]


def _vae():
    with torch.random.fork_rng():
        torch.manual_seed(7)
        return VAE(image_shape=(1, 8, 8), latent_dim=3).to(DT).eval()


def _maps(uf, x):
    """Every method's map (or summary) of the posterior behind ``uf``."""
    maps = {"uig": UncertaintyIntegratedGradients(uf).attribute(x, n_steps=8)}
    maps["blur_ig"] = BlurIntegratedGradients(uf).attribute(x, n_steps=8)
    maps["guided_ig"] = GuidedIntegratedGradients(uf).attribute(x, n_steps=8)
    fiducial = torch.zeros(x.shape[0], 3, dtype=DT)
    maps["cf_path_ig"] = CounterfactualPathIG(uf, _vae()).attribute(x, fiducial=fiducial, n_steps=8)
    maps["clue"] = CLUE(uf, _vae()).attribute(x, max_iterations=3)
    for path in ("grad", "inputgrad", "fullgrad", "integrated_gradients", "blur_integrated_gradients"):
        maps[f"ua_{path}"] = UABackprop(uf).attribute(x, path=path, n_steps=4)
    ig = IntegratedGradients(uf)
    maps["captum_ig"] = ig.attribute(x, baselines=x * 0, n_steps=8)
    torch.manual_seed(0)
    maps["noise_tunnel"] = NoiseTunnel(ig).attribute(x, nt_samples=3, stdevs=0.1, baselines=x * 0, n_steps=4)
    maps["fullgrad"] = FullGrad(uf).attribute(x)
    maps["distribution_std"] = ExplanationDistribution(uf, IntegratedGradients).attribute(x, n_steps=8).std
    maps["covariance"] = CovarianceAttribution(uf, IntegratedGradients).attribute(x, n_steps=8)
    return maps


@pytest.mark.parametrize("kind", KINDS + ["mc_dropout"])
def test_every_method_gives_the_members_alone_maps(kind, x):
    shared, plain = twins(kind)
    shared_maps = _maps(UncertaintyForward(shared, "epistemic"), x)
    plain_maps = _maps(UncertaintyForward(plain, "epistemic"), x)
    for name, expected in plain_maps.items():
        torch.testing.assert_close(shared_maps[name], expected, rtol=1e-7, atol=1e-10, msg=name)
    verdicts = shared._trunk_checked if kind == "mc_dropout" else shared._trunk_agrees
    assert verdicts and all(verdicts.values())  # the shared run was taken


def test_the_users_models_are_left_as_they_were_also_when_a_call_raises(x):
    members = multi_head()
    members[0].train()  # a flag the call must restore (no random layer: accepted)
    flags = [(m, m.training) for member in members for m in member.modules()]
    posterior = DeepEnsemble(members, share_trunk=True)
    UncertaintyForward(posterior)(x)
    with pytest.raises(RuntimeError):
        posterior(torch.rand(2, 1, 9, 9, dtype=DT))  # the wrong size fails inside the trunk
    assert all(m.training == flag for m, flag in flags)
    assert not any(m._forward_hooks or m._forward_pre_hooks for member in members for m in member.modules())


class MixesRows(nn.Module):
    """Subtracts the batch mean after the differing layer: its value depends on how rows are grouped."""

    def __init__(self, head: nn.Module, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk, self.head = trunk, head

    def forward(self, x):
        out = self.head(self.trunk(x))
        return out - out.mean(0, keepdim=True)


def test_auto_keeps_the_members_alone_run_where_the_shared_one_differs(x):
    trunk = backbone()
    torch.manual_seed(3)
    members = [MixesRows(nn.Linear(12, 5).to(DT), trunk).eval() for _ in range(3)]
    auto, plain, forced = (DeepEnsemble(members, share_trunk=s) for s in ("auto", False, True))
    with torch.no_grad():
        torch.testing.assert_close(auto(x), plain(x))
        assert not torch.allclose(forced(x), plain(x))  # unchecked, the grouping is wrong
    assert list(auto._trunk_agrees.values()) == [False]


def test_weights_changed_in_place_are_seen_and_hooks_of_others_make_members_run_alone(x):
    model, states = last_layer_samples()
    shared, plain = WeightSamples(model, states), WeightSamples(model, states, share_trunk=False)
    with torch.no_grad():
        shared(x)
        for posterior in (shared, plain):
            posterior.members[1][0][1].weight.add_(0.1)  # now the samples differ in the first conv too
        torch.testing.assert_close(shared(x), plain(x), rtol=1e-10, atol=1e-12)
    assert shared._trunk.layers(list(shared.members)) == ["0.1", "1"]  # found again: both differ now
    # Captum's layer methods hook a member's layer: the members run alone and the layer sees N rows
    seen = []
    handle = shared.members[0][1].register_forward_hook(lambda _m, _a, out: seen.append(out.shape[0]))
    try:
        with torch.no_grad():
            torch.testing.assert_close(shared(x), plain(x), rtol=1e-10, atol=1e-12)
    finally:
        handle.remove()
    assert seen == [x.shape[0]]


def test_share_trunk_is_checked():
    with pytest.raises(ValueError, match="share_trunk must be True, False or 'auto'"):
        DeepEnsemble(multi_head(), share_trunk=1)


def test_an_explicit_trunk_runs_once_under_heads_of_different_architectures(x):
    shared_backbone = backbone()
    torch.manual_seed(6)
    heads = [
        nn.Linear(12, 5).to(DT),
        nn.Sequential(nn.Linear(12, 7), nn.Tanh(), nn.Linear(7, 5)).to(DT),
        nn.Sequential(nn.Linear(12, 3), nn.ReLU(), nn.Linear(3, 5)).to(DT),
    ]
    explicit = DeepEnsemble([h.eval() for h in heads], trunk=shared_backbone)
    plain = DeepEnsemble([nn.Sequential(shared_backbone, h).eval() for h in heads], share_trunk=False)
    assert explicit._trunk.layers(list(explicit.members)) is None  # the weights cannot show it
    recorder = shared_backbone[0]
    with torch.no_grad():
        recorder.rows.clear()
        outputs = explicit(x)
        assert recorder.rows == [x.shape[0]]
        torch.testing.assert_close(outputs, plain(x), rtol=1e-12, atol=1e-12)
    explicit_maps = _maps(UncertaintyForward(explicit, "epistemic"), x)
    plain_maps = _maps(UncertaintyForward(plain, "epistemic"), x)
    for name, expected in plain_maps.items():
        torch.testing.assert_close(explicit_maps[name], expected, rtol=1e-7, atol=1e-10, msg=name)
    with pytest.raises(TypeError, match="trunk must be an nn.Module"):
        DeepEnsemble(heads, trunk="backbone")
