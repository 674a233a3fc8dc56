"""Posterior sources: ensembles, MC dropout, weight samples, sample callables, and model-state invariance."""

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from captum_uncertainty import (
    DeepEnsemble,
    MCDropout,
    SampleCallable,
    UncertaintyForward,
    WeightSamples,
    entropy_decomposition,
)
from tests.helpers import assert_untouched, model_state


class SmallCNN(nn.Module):
    def __init__(self, classes=4, dropout=0.5):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.drop2d = nn.Dropout2d(0.25)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * 3 * 3, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, classes)
        )

        self.eval()  # a trained model, as explained; train() mode is tested where it matters

    def forward(self, x):
        return self.head(self.drop2d(self.features(x)))


def make_cnns(n=3, seed=0):
    torch.manual_seed(seed)
    models = [SmallCNN() for _ in range(n)]
    for m in models:  # non-trivial BatchNorm statistics
        m.features[1].running_mean.uniform_(-0.5, 0.5)
        m.features[1].running_var.uniform_(0.5, 2.0)
    return models


x = torch.rand(6, 1, 8, 8)


# ------------------------------------------------------------------ bad input


def test_bad_posteriors_raise_clear_errors():
    with pytest.raises(ValueError, match="empty ensemble"):
        UncertaintyForward([])
    with pytest.raises(TypeError, match=r"posterior\[1\] is a str"):
        UncertaintyForward([SmallCNN(), "model"])
    with pytest.raises(TypeError, match="MCDropout"):
        UncertaintyForward(SmallCNN())
    with pytest.raises(TypeError, match="SampleCallable"):
        UncertaintyForward(lambda x: x)


def test_members_with_different_class_counts():
    uf = UncertaintyForward([SmallCNN(classes=4), SmallCNN(classes=5)])
    with pytest.raises(ValueError, match="different class counts"):
        uf(x)


def test_member_outputs_not_n_by_c():
    flat = nn.Sequential(nn.Flatten(0))
    with pytest.raises(ValueError, match=r"expected \(N, C\)"):
        UncertaintyForward([flat])(x)
    with pytest.raises(TypeError, match="output_kl"):
        UncertaintyForward([TupleModel()])(x)


class TupleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = SmallCNN()

    def forward(self, x):
        return self.net(x), torch.tensor(0.0)


def test_bad_inputs():
    uf = UncertaintyForward(make_cnns())
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"inputs\[0\] contains NaN"):
        uf(bad)
    with pytest.raises(ValueError, match="inf"):
        uf(x + float("inf"))
    with pytest.raises(TypeError, match="dtype torch.float64"):
        uf(x.double())
    with pytest.raises(ValueError, match="device meta"):
        uf(x.to("meta"))
    with pytest.raises(ValueError, match="non-empty batch"):
        uf(x[:0])


# ------------------------------------------------------------------ ensembles


def test_loop_and_vmap_ensembles_agree_in_values_and_gradients():
    members = make_cnns(4)
    xr = x.clone().requires_grad_()
    outs = {}
    grads = {}
    for strategy in ("loop", "vmap", "auto"):
        uf = UncertaintyForward(DeepEnsemble(members, strategy=strategy), "epistemic")
        u = uf(xr)
        (g,) = torch.autograd.grad(u.sum(), xr)
        outs[strategy], grads[strategy] = u.detach(), g
    for strategy in ("vmap", "auto"):
        assert torch.allclose(outs[strategy], outs["loop"], atol=1e-6)
        assert torch.allclose(grads[strategy], grads["loop"], atol=1e-6)


def test_per_sample_forward_feeds_each_member_its_own_input():
    members = make_cnns(3)
    for strategy in ("loop", "vmap"):
        posterior = DeepEnsemble(members, strategy=strategy)
        inputs = torch.rand(3, 5, 1, 8, 8)
        out = posterior.forward_per_sample(inputs)
        with torch.no_grad():
            expected = torch.stack([m.eval()(inputs[s]) for s, m in enumerate(members)])
        assert torch.allclose(out, expected, atol=1e-6)


def test_vmap_needs_same_architecture():
    with pytest.raises(ValueError, match="same architecture"):
        DeepEnsemble([SmallCNN(classes=4), SmallCNN(classes=5)], strategy="vmap")
    with pytest.raises(ValueError, match="strategy must be one of"):
        DeepEnsemble([SmallCNN()], strategy="fast")


def test_ensemble_runs_members_in_eval_mode_and_restores_flags():
    members = make_cnns(2)
    for m in members:
        m.drop2d.p = 0.0  # no active random layer: only BatchNorm differs between the modes
        m.head[3].p = 0.0
        m.train()
    before = model_state(members)
    u_train_mode = UncertaintyForward(members)(x)
    for m in members:
        m.eval()
    u_eval_mode = UncertaintyForward(members)(x)
    for m in members:
        m.train()
    assert torch.equal(u_train_mode, u_eval_mode)  # BatchNorm in eval during the call
    assert_untouched(before, members)


@pytest.mark.parametrize("layer", [nn.Dropout(0.3), nn.AlphaDropout(0.2), nn.RReLU()])
def test_a_member_in_train_mode_with_an_active_random_layer_is_refused_naming_both_fixes(layer):
    torch.manual_seed(1)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(64, 16), layer, nn.Linear(16, 4)) for _ in range(3)]
    for m in members:
        m.train()
    before = model_state(members)
    with pytest.raises(ValueError, match=r"members\[0\] is in train\(\) mode.*MCDropout.*eval\(\)"):
        UncertaintyForward(members, "epistemic")(x)
    assert all(sub.training for m in members for sub in m.modules())  # no mode changed
    assert_untouched(before, members)
    # what the message recommends works: eval() members are deterministic, MCDropout samples masks
    for m in members:
        m.eval()
    assert torch.isfinite(UncertaintyForward(members, "epistemic")(x)).all()
    if isinstance(layer, nn.Dropout):
        members[0].train()
        mc = UncertaintyForward(MCDropout(members[0], num_samples=8), "epistemic")(x)
        assert bool((mc > 1e-4).all())  # the masks give the posterior spread the user meant


def test_a_member_with_dropout_of_zero_probability_in_train_mode_is_accepted():
    members = make_cnns(2)
    for m in members:
        m.drop2d.p = 0.0
        m.head[3].p = 0.0
        m.train()
    assert UncertaintyForward(members)(x).shape == (6,)


def test_state_restored_after_error_inside_forward():
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = SmallCNN()

        def forward(self, x):
            self.net(x)
            raise RuntimeError("boom")

    members = [SmallCNN(), Exploding()]
    for m in members:
        for sub in m.modules():
            if isinstance(sub, (nn.Dropout, nn.Dropout2d)):
                sub.p = 0.0  # BatchNorm alone: switched to eval during the call, then restored
        m.train()
    before = model_state(members)
    with pytest.raises(RuntimeError, match="boom"):
        UncertaintyForward(members)(x)
    assert_untouched(before, members)


# ------------------------------------------------------------------ MC dropout


def test_mc_dropout_masks_are_frozen_seeded_and_resampled():
    model = make_cnns(1)[0]
    model.train()
    before = model_state([model])
    uf = UncertaintyForward(MCDropout(model, num_samples=8, seed=3), "epistemic")
    first, second = uf(x), uf(x)
    assert torch.equal(first, second)
    assert (first > 0).all()  # the masks differ between samples
    again = UncertaintyForward(MCDropout(model, num_samples=8, seed=3), "epistemic")(x)
    assert torch.equal(first, again)
    uf.posterior.resample()
    assert not torch.allclose(uf(x), first)
    assert_untouched(before, [model])


def test_mc_dropout_sample_is_a_fixed_subnetwork_shared_by_all_rows():
    model = make_cnns(1)[0]
    posterior = MCDropout(model, num_samples=5, seed=0)
    together = posterior(x)
    split = torch.cat([posterior(x[:2]), posterior(x[2:])], dim=1)
    assert torch.allclose(together, split, atol=1e-6)  # internal_batch_size chunks see the same masks
    for s in range(5):
        assert torch.allclose(posterior.sample_module(s)(x), together[s], atol=1e-6)
    # Sample s is the eval-mode network with dropout replaced by its mask (manual computation).
    masks = [m.float() for m in posterior._masks.values()]
    with torch.no_grad():
        model.eval()
        features = model.features(x) * masks[0][2]
        hidden = model.head[2](model.head[1](model.head[0](features)))
        manual = model.head[4](hidden * masks[1][2])
    assert torch.allclose(manual, together[2], atol=1e-5)
    assert masks[0].shape == (5, 4, 1, 1)  # Dropout2d: channel masks
    assert masks[1].shape == (5, 16)


def test_mc_dropout_ig_is_reproducible_and_exact():
    model = make_cnns(1)[0]
    model.train()
    results = []
    for _ in range(2):
        uf = UncertaintyForward(MCDropout(model, num_samples=6, seed=1), "epistemic")
        ig = IntegratedGradients(uf)
        attr, delta = ig.attribute(
            x, baselines=torch.zeros_like(x), n_steps=64, internal_batch_size=10, return_convergence_delta=True
        )
        results.append(attr)
        assert delta.abs().max() < 1e-2  # a fixed posterior: the path integral converges
    assert torch.equal(results[0], results[1])
    assert model.training and model.head[3].training


def test_mc_dropout_rejects_models_without_dropout_and_shape_changes():
    with pytest.raises(ValueError, match="no nn.Dropout"):
        MCDropout(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="num_samples"):
        MCDropout(SmallCNN(), num_samples=0)
    for seed in (0.5, "0", True):  # checked as MCDropConnect checks it
        with pytest.raises(ValueError, match="seed must be an int"):
            MCDropout(SmallCNN(), seed=seed)
    dropout_model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    with pytest.raises(
        TypeError, match=r"dropouts must be a sequence of modules, got a single Dropout; pass \[dropout\]"
    ):
        MCDropout(dropout_model, dropouts=dropout_model[1])
    with pytest.raises(ValueError, match="seed must be an int"):
        MCDropout(dropout_model).resample(seed=1.5)
    posterior = MCDropout(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.LazyLinear(3)), num_samples=2)
    posterior(torch.rand(2, 4))
    with pytest.raises(ValueError, match="resample"):
        posterior(torch.rand(2, 5))


# ------------------------------------------------------------------ weight samples and callables


def test_weight_samples_equal_an_ensemble_of_loaded_models_and_leave_model_alone():
    models = make_cnns(3)
    base = make_cnns(1, seed=9)[0]
    before = model_state([base])
    posterior = WeightSamples(base, [m.state_dict() for m in models])
    assert torch.allclose(posterior(x), DeepEnsemble(models)(x), atol=1e-6)
    assert_untouched(before, [base])
    with pytest.raises(ValueError, match=r"state_dicts\[0\] does not fit"):
        WeightSamples(base, [{"nope": torch.zeros(1)}])
    generated = WeightSamples.from_factory(lambda: iter(models), num_samples=2)
    assert generated.num_samples == 2


def test_sample_callable_layouts():
    members = make_cnns(3)
    ensemble = DeepEnsemble(members)
    expected = ensemble(x)

    def samples_first(inp):
        return ensemble(inp)

    def flat(inp):
        return ensemble(inp).reshape(-1, 4)

    def as_list(inp):
        return list(ensemble(inp))

    calls = iter(range(100))

    def output_kl(inp):
        return members[next(calls) % 3].eval()(inp), torch.tensor(1.0)

    for posterior in (
        SampleCallable(samples_first, "samples_first"),
        SampleCallable(flat, "flat", num_samples=3),
        SampleCallable(as_list, "list"),
        SampleCallable(output_kl, "output_kl", num_samples=3),
    ):
        assert torch.allclose(posterior(x), expected, atol=1e-6)
        assert posterior.num_samples == 3


def test_sample_callable_wrong_layout_is_an_error_not_a_reshape():
    ensemble = DeepEnsemble(make_cnns(3))
    with pytest.raises(ValueError, match="layout='flat'"):
        SampleCallable(lambda inp: ensemble(inp).reshape(-1, 4), "samples_first")(x)
    with pytest.raises(ValueError, match=r"\(S \* N, C\)"):
        SampleCallable(ensemble, "flat", num_samples=3)(x)
    with pytest.raises(ValueError, match=r"\(S \* N, C\)"):
        SampleCallable(lambda inp: ensemble(inp).reshape(-1, 4), "flat", num_samples=2)(x)
    with pytest.raises(TypeError, match="output_kl"):
        SampleCallable(lambda inp: (ensemble(inp), 0.0), "samples_first")(x)
    with pytest.raises(TypeError, match="pair"):
        SampleCallable(ensemble, "output_kl", num_samples=3)(x)
    with pytest.raises(ValueError, match="needs num_samples"):
        SampleCallable(ensemble, "flat")


def test_seeded_stochastic_callable_draws_the_same_samples_every_call():
    model = SmallCNN()
    model.train()  # stochastic dropout in the callable itself, like a Bayes-by-backprop layer

    def stochastic(inp):
        return model(inp), torch.tensor(0.0)

    posterior = SampleCallable(stochastic, "output_kl", num_samples=4, seed=0)
    first = posterior(x)
    assert torch.equal(first, posterior(x))
    assert not torch.allclose(first[0], first[1])
    d = entropy_decomposition(first)
    assert (d.epistemic > 0).all()


# ------------------------------------------------------------------ the determinism guard


def stochastic_members(models):
    """Sample outputs with fresh noise on every call (an unseeded stochastic source)."""
    return lambda inputs: torch.stack([m(inputs) + torch.randn(1, 4, dtype=inputs.dtype) for m in models])


def per_row_noise(models):
    """Seeded, but with noise drawn per input row: an input's value depends on its batch."""
    return lambda inputs: torch.stack([m(inputs) + torch.randn(inputs.shape[0], 4, dtype=inputs.dtype) for m in models])


@pytest.mark.parametrize("attribute", ["uig", "ua", "captum"])
def test_unseeded_and_per_row_sources_are_refused_at_the_first_attribution(attribute):
    from captum_uncertainty import UABackprop, UncertaintyIntegratedGradients

    models = [m.eval() for m in make_cnns(2)]
    images = x[:3]

    def run(posterior):
        uf = UncertaintyForward(posterior, measure="total")
        if attribute == "uig":
            return UncertaintyIntegratedGradients(uf).attribute(images, n_steps=4)
        if attribute == "ua":
            return UABackprop(uf).attribute(images, path="grad")
        return IntegratedGradients(uf).attribute(images, n_steps=4)

    with pytest.raises(ValueError, match="different samples for the same inputs.*seed"):
        run(SampleCallable(stochastic_members(models), layout="samples_first", num_samples=2))
    # an unseeded source draws from the caller's random state by design; the check's own passes do not
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match="depends on the other inputs of its batch"):
        run(SampleCallable(per_row_noise(models), layout="samples_first", num_samples=2, seed=0))
    assert torch.equal(torch.get_rng_state(), state)
    # seeded noise shared by all rows is a fixed posterior: accepted, and the maps repeat
    shared = SampleCallable(stochastic_members(models), layout="samples_first", num_samples=2, seed=0)
    assert torch.equal(run(shared), run(shared))


def test_a_random_layer_inside_an_ensemble_member_is_refused():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = SmallCNN()

        def forward(self, inputs):
            return self.net(inputs) + torch.randn_like(self.net(inputs))

    with pytest.raises(ValueError, match="different samples"):
        UncertaintyForward([Noisy(), SmallCNN()])(x)
    # checked once per posterior: a verified posterior is not re-run three times on every call
    uf = UncertaintyForward(make_cnns(2))
    uf(x)
    assert uf.posterior.verified


def test_the_first_call_check_costs_one_forward_of_one_row():
    """The check runs the posterior once more on the first row alone, before the real call (so
    the last pass a layer hook sees is the real one), and never again once it has passed."""
    members = make_cnns(2)
    rows_seen = []
    handles = [m.register_forward_pre_hook(lambda _, args: rows_seen.append(args[0].shape[0])) for m in members]
    try:
        uf = UncertaintyForward(members)
        uf(x[:6])
        assert rows_seen == [1, 1, 6, 6]  # two members on the row alone, then on the six inputs
        rows_seen.clear()
        uf(x[:6])
        assert rows_seen == [6, 6]
        # a method that checks before running the posterior its own way looks at two rows
        fresh = UncertaintyForward(members)
        rows_seen.clear()
        fresh.posterior.check_deterministic((x[:6],))
        assert rows_seen == [1, 1, 2, 2] and fresh.posterior.verified
    finally:
        for handle in handles:
            handle.remove()


def test_mc_dropout_masks_each_call_of_a_reused_module_separately():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(64, 64)
            self.drop = nn.Dropout(0.5)
            self.head = nn.Linear(64, 4)

        def forward(self, inputs):
            hidden = self.drop(torch.relu(self.inner(inputs.flatten(1))))
            return self.head(self.drop(hidden))  # the same module, a second dropout site

    torch.manual_seed(0)
    model = Twice()
    posterior = MCDropout(model, num_samples=3, seed=0)
    first = posterior(x)
    assert torch.equal(first, posterior(x))
    assert len(posterior._masks) == 2  # two sites, two mask sets
    sites = list(posterior._masks.values())
    assert not torch.equal(sites[0], sites[1])
    listed = MCDropout(model, num_samples=3, seed=0, dropouts=[model.drop])
    assert torch.equal(listed(x), first)
    with pytest.raises(ValueError, match="dropouts\\[0\\]"):
        MCDropout(model, num_samples=3, dropouts=[nn.Dropout(0.1)])


# ----------------------------------------------------------------------------- MC dropout: shared trunk


class _HeadDropoutCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(144, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class _BatchReadingModel(nn.Module):
    """Reads its batch size before the dropout: sharing the trunk would change its output."""

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.dropout, self.out = nn.Linear(6, 6), nn.Dropout(0.3), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        return self.out(self.dropout(self.linear(x)))[:rows]


def test_shared_trunk_equals_the_unshared_run_values_and_gradients():
    torch.manual_seed(0)
    model = _HeadDropoutCNN().eval()
    x = torch.rand(3, 1, 8, 8)
    shared = UncertaintyForward(MCDropout(model, num_samples=6, seed=1, share_trunk=True), "epistemic")
    plain = UncertaintyForward(MCDropout(model, num_samples=6, seed=1, share_trunk=False), "epistemic")
    torch.testing.assert_close(shared.posterior(x), plain.posterior(x))
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.testing.assert_close(
        torch.autograd.grad(shared(a).sum(), a)[0], torch.autograd.grad(plain(b).sum(), b)[0], atol=1e-6, rtol=1e-5
    )
    rows = []
    handle = model.trunk[0].register_forward_hook(lambda module, args, output: rows.append(output.shape[0]))
    try:
        with shared.posterior.hookable():  # hooks that expect S x N rows get them
            shared.posterior(x)
    finally:
        handle.remove()
    assert rows == [18]
    counted = []
    handle = model.trunk[0].register_forward_pre_hook(lambda module, args: counted.append(args[0].shape[0]))
    try:
        shared.posterior(x)
    finally:
        handle.remove()
    assert counted == [3]  # the trunk ran once, on the N inputs


def test_shared_trunk_auto_falls_back_where_it_would_differ():
    torch.manual_seed(0)
    posterior = MCDropout(_BatchReadingModel().eval(), num_samples=3)
    x = torch.rand(5, 6)
    unshared = MCDropout(posterior.model, num_samples=3, share_trunk=False)
    torch.testing.assert_close(posterior(x), unshared(x))
    assert list(posterior._trunk_checked.values()) == [False]
    good = MCDropout(_HeadDropoutCNN().eval(), num_samples=4)
    good(torch.rand(2, 1, 8, 8))
    assert list(good._trunk_checked.values()) == [True]
    with pytest.raises(ValueError, match="share_trunk"):
        MCDropout(_HeadDropoutCNN(), share_trunk="yes")
