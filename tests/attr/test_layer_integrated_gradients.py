"""LayerUncertaintyIntegratedGradients: all members' embeddings on one path (text ensembles)."""

import warnings

import pytest
import torch
from captum.attr import LayerIntegratedGradients
from torch import nn

from captum_uncertainty import (
    Categorical,
    Decomposition,
    DeepEnsemble,
    LayerUncertaintyIntegratedGradients,
    MCDropout,
    UncertaintyForward,
)
from tests.helpers import assert_untouched, model_state

VOCAB, DIM, CLASSES, N, L = 20, 6, 4, 5, 7
MEASURES = ("total", "aleatoric", "epistemic")


class BagOfEmbeddings(nn.Module):
    """Token ids (N, L) -> embedding (N, L, D) -> mean over tokens -> tanh -> linear (N, C)."""

    def __init__(self, seed, dim=DIM, fail_above=None):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(VOCAB, dim, padding_idx=0)
        self.emb.weight.data.mul_(2.0)
        self.fc = nn.Linear(dim, CLASSES)
        self.fc.bias.data.mul_(4.0)  # the all-pad baseline is fairly certain: U(x) - U(pad) is not small
        self.unused = nn.Linear(dim, dim)
        self.fail_above = fail_above  # raise on batches larger than this (after the embedding ran)

    def forward(self, tokens):
        embedded = self.emb(tokens)
        if self.fail_above is not None and tokens.shape[0] > self.fail_above:
            raise RuntimeError("member failed on the path")
        return self.fc(torch.tanh(2 * embedded.mean(1)))


def make_members(count=3, dim=DIM):
    return [BagOfEmbeddings(seed, dim).double() for seed in range(count)]


@pytest.fixture(scope="module")
def members():
    return make_members()


@pytest.fixture(scope="module")
def tokens():
    generator = torch.Generator().manual_seed(7)
    return torch.randint(1, VOCAB, (N, L), generator=generator)


@pytest.fixture(scope="module")
def pad(tokens):
    return torch.zeros_like(tokens)


def difference(uf, tokens, pad):
    with torch.no_grad():
        return uf(tokens) - uf(pad)


def embeddings(members):
    return [m.emb for m in members]


# ----------------------------------------------------------------------------- completeness


@pytest.mark.parametrize("measure", MEASURES)
def test_complete_for_every_measure_and_delta_matches(members, tokens, pad, measure):
    uf = UncertaintyForward(members, measure=measure)
    attributions, delta = LayerUncertaintyIntegratedGradients(uf, embeddings(members)).attribute(
        tokens, baselines=pad, n_steps=64, return_convergence_delta=True
    )
    assert attributions.shape == (N, L, DIM)
    expected = difference(uf, tokens, pad)
    assert expected.abs().min() > 1e-3  # a non-trivial difference to explain
    assert torch.allclose(attributions.sum((1, 2)), expected, atol=1e-3, rtol=0)
    assert torch.allclose(delta, attributions.sum((1, 2)) - expected, atol=1e-12, rtol=0)
    assert delta.abs().max() < 1e-3


def test_decompose_is_complete_and_epistemic_is_total_minus_aleatoric(members, tokens, pad):
    uf = UncertaintyForward(members, measure="total")
    lig = LayerUncertaintyIntegratedGradients(uf, embeddings(members))
    maps, deltas = lig.attribute(tokens, pad, n_steps=64, return_convergence_delta=True, decompose=True)
    assert isinstance(maps, Decomposition) and isinstance(deltas, Decomposition)
    assert torch.allclose(maps.epistemic, maps.total - maps.aleatoric, atol=1e-12)
    with torch.no_grad():
        at_x, at_pad = uf.decompose(tokens), uf.decompose(pad)
    for measure in MEASURES:
        expected = at_x.select(measure) - at_pad.select(measure)
        assert torch.allclose(maps.select(measure).sum((1, 2)), expected, atol=1e-3, rtol=0)
        assert deltas.select(measure).abs().max() < 1e-3
        alone = LayerUncertaintyIntegratedGradients(uf.with_measure(measure), embeddings(members))
        assert torch.allclose(maps.select(measure), alone.attribute(tokens, pad, n_steps=64), atol=1e-12)


def test_class_targets_sum_to_the_scalar_attribution(members, tokens, pad):
    uf = UncertaintyForward(members, measure="epistemic")
    lig = LayerUncertaintyIntegratedGradients(uf, embeddings(members))
    scalar = lig.attribute(tokens, pad, n_steps=16)
    per_class = [lig.attribute(tokens, pad, target=c, n_steps=16) for c in range(CLASSES)]
    assert not torch.allclose(per_class[0], scalar)
    assert torch.allclose(sum(per_class), scalar, atol=1e-12)


# ----------------------------------------------------------------------------- against Captum


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_one_member_equals_captum_layer_integrated_gradients(members, tokens, pad, method):
    member = members[1]
    uf = UncertaintyForward([member], measure="total")
    ours, delta = LayerUncertaintyIntegratedGradients(uf, [member.emb]).attribute(
        tokens, pad, n_steps=20, method=method, return_convergence_delta=True
    )
    theirs, their_delta = LayerIntegratedGradients(uf, member.emb).attribute(
        tokens, pad, n_steps=20, method=method, return_convergence_delta=True
    )
    # Captum weighs the steps in float32: agreement to ~1e-9, not to float64 rounding
    assert torch.allclose(ours, theirs, atol=1e-8, rtol=0)
    assert torch.allclose(delta, their_delta, atol=1e-8)


@pytest.mark.parametrize("measure", MEASURES)
def test_member_zero_alone_is_incomplete_and_all_members_are_not(members, tokens, pad, measure):
    """The bug: Captum's LayerIntegratedGradients(uf, members[0].emb) moves one embedding only."""
    uf = UncertaintyForward(members, measure=measure)
    ours, delta = LayerUncertaintyIntegratedGradients(uf, embeddings(members)).attribute(
        tokens, pad, n_steps=64, return_convergence_delta=True
    )
    one, one_delta = LayerIntegratedGradients(uf, members[0].emb).attribute(
        tokens, pad, n_steps=64, return_convergence_delta=True
    )
    assert delta.abs().max() < 1e-3
    assert one_delta.abs().max() > 0.02
    assert (ours - one).norm() > 0.3 * ours.norm()


def test_equals_captum_with_every_members_layer_listed(members, tokens, pad):
    """Captum's list-of-layers form moves all layers too; the sum of its maps is ours."""
    uf = UncertaintyForward(members, measure="epistemic")
    ours = LayerUncertaintyIntegratedGradients(uf, embeddings(members)).attribute(tokens, pad, n_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Captum's "layers must be independent" note
        theirs = LayerIntegratedGradients(uf, embeddings(members)).attribute(tokens, pad, n_steps=20)
    assert torch.allclose(ours, sum(theirs), atol=1e-8, rtol=0)


# ----------------------------------------------------------------------------- arguments


def test_layer_function_equals_list(members, tokens, pad):
    uf = UncertaintyForward(members, measure="total")
    listed = LayerUncertaintyIntegratedGradients(uf, embeddings(members)).attribute(tokens, pad, n_steps=16)
    mapped = LayerUncertaintyIntegratedGradients(uf, lambda member: member.emb).attribute(tokens, pad, n_steps=16)
    assert torch.equal(listed, mapped)


def test_sum_embedding_sums_the_last_dimension(members, tokens, pad):
    lig = LayerUncertaintyIntegratedGradients(UncertaintyForward(members), embeddings(members))
    full = lig.attribute(tokens, pad, n_steps=16)
    per_token, delta = lig.attribute(tokens, pad, n_steps=16, sum_embedding=True, return_convergence_delta=True)
    assert per_token.shape == (N, L)
    assert torch.allclose(per_token, full.sum(-1), atol=1e-14)
    assert torch.allclose(delta, lig.attribute(tokens, pad, n_steps=16, return_convergence_delta=True)[1], atol=1e-14)


@pytest.mark.parametrize("internal_batch_size", [1, N, 3 * N + 2])
def test_internal_batch_size_does_not_change_results(members, tokens, pad, internal_batch_size):
    lig = LayerUncertaintyIntegratedGradients(UncertaintyForward(members, measure="epistemic"), embeddings(members))
    whole = lig.attribute(tokens, pad, n_steps=12)
    chunked = lig.attribute(tokens, pad, n_steps=12, internal_batch_size=internal_batch_size)
    assert torch.allclose(whole, chunked, atol=1e-12, rtol=0)


def test_baselines_none_is_pad_zero_and_other_baselines_move_the_start(members, tokens, pad):
    lig = LayerUncertaintyIntegratedGradients(UncertaintyForward(members), embeddings(members))
    assert torch.equal(lig.attribute(tokens, n_steps=8), lig.attribute(tokens, pad, n_steps=8))
    assert torch.equal(lig.attribute(tokens, 0, n_steps=8), lig.attribute(tokens, pad, n_steps=8))
    other = torch.full_like(tokens, 3)
    moved, delta = lig.attribute(tokens, other, n_steps=64, return_convergence_delta=True)
    assert not torch.allclose(moved, lig.attribute(tokens, pad, n_steps=64))
    assert delta.abs().max() < 1e-3


def test_local_attribution_is_the_bare_integral_sum(members, tokens, pad):
    uf = UncertaintyForward(members)
    local = LayerUncertaintyIntegratedGradients(uf, embeddings(members), multiply_by_inputs=False)
    assert not local.multiplies_by_inputs
    captum = LayerIntegratedGradients(UncertaintyForward(members[:1]), members[0].emb, multiply_by_inputs=False)
    one = LayerUncertaintyIntegratedGradients(
        UncertaintyForward(members[:1]), [members[0].emb], multiply_by_inputs=False
    )
    assert torch.allclose(one.attribute(tokens, pad, n_steps=8), captum.attribute(tokens, pad, n_steps=8), atol=1e-8)
    assert not torch.allclose(local.attribute(tokens, pad, n_steps=8), one.attribute(tokens, pad, n_steps=8))


def test_vmap_ensembles_run_as_a_loop_so_the_hooks_fire(members, tokens, pad):
    looped = LayerUncertaintyIntegratedGradients(UncertaintyForward(members), embeddings(members))
    posterior = DeepEnsemble(members, strategy="vmap")
    batched = LayerUncertaintyIntegratedGradients(UncertaintyForward(posterior), embeddings(members))
    assert torch.allclose(
        batched.attribute(tokens, pad, n_steps=8), looped.attribute(tokens, pad, n_steps=8), atol=1e-12
    )
    assert posterior.strategy == "vmap"


def test_float32_members_give_float32_attributions(tokens, pad):
    members = [m.float() for m in make_members()]
    maps, delta = LayerUncertaintyIntegratedGradients(UncertaintyForward(members), embeddings(members)).attribute(
        tokens, pad, n_steps=32, return_convergence_delta=True
    )
    assert maps.dtype == torch.float32 and delta.dtype == torch.float32
    assert delta.abs().max() < 1e-3


# ----------------------------------------------------------------------------- the user's modules


def test_modules_untouched_after_a_call_and_after_a_failing_call(tokens, pad):
    members = make_members()
    members[2].train()
    members[0].emb.weight.grad = torch.ones_like(members[0].emb.weight)
    before = model_state(members)
    uf = UncertaintyForward(members, measure="epistemic")
    LayerUncertaintyIntegratedGradients(uf, embeddings(members)).attribute(tokens, pad, n_steps=8, decompose=True)
    assert_untouched(before, members)
    members[1].fail_above = N  # fails on the path, with every member's hook in place
    with pytest.raises(RuntimeError, match="failed on the path"):
        LayerUncertaintyIntegratedGradients(uf, embeddings(members)).attribute(tokens, pad, n_steps=8)
    assert_untouched(before, members)
    with pytest.raises(ValueError, match="layer"):
        LayerUncertaintyIntegratedGradients(uf, [m.unused for m in members]).attribute(tokens, pad, n_steps=8)
    assert_untouched(before, members)


# ----------------------------------------------------------------------------- bad input


def test_wrong_length_layer_list(members):
    with pytest.raises(ValueError, match="layer.*3 members, got 2"):
        LayerUncertaintyIntegratedGradients(UncertaintyForward(members), embeddings(members)[:2])


def test_layer_not_in_its_member(members):
    with pytest.raises(ValueError, match=r"layer\[0\].*not a submodule of member 0"):
        LayerUncertaintyIntegratedGradients(
            UncertaintyForward(members), [nn.Embedding(VOCAB, DIM)] + embeddings(members)[1:]
        )
    swapped = [members[1].emb, members[0].emb, members[2].emb]
    with pytest.raises(ValueError, match=r"layer\[0\]"):
        LayerUncertaintyIntegratedGradients(UncertaintyForward(members), swapped)


def test_single_module_or_shared_layer_is_refused(members):
    with pytest.raises(TypeError, match="layer must be one module per member"):
        LayerUncertaintyIntegratedGradients(UncertaintyForward(members), members[0].emb)
    with pytest.raises(ValueError, match=r"layer\[0\] and layer\[1\] are the same module"):
        LayerUncertaintyIntegratedGradients(UncertaintyForward([members[0], members[0]]), [members[0].emb] * 2)


def test_layer_that_does_not_run(members, tokens, pad):
    lig = LayerUncertaintyIntegratedGradients(UncertaintyForward(members), [m.unused for m in members])
    with pytest.raises(ValueError, match=r"layer\[0\] did not run"):
        lig.attribute(tokens, pad, n_steps=4)


def test_members_with_differently_shaped_layer_outputs(tokens, pad):
    members = make_members(2) + [BagOfEmbeddings(5, dim=DIM + 2).double()]
    lig = LayerUncertaintyIntegratedGradients(UncertaintyForward(members), embeddings(members))
    with pytest.raises(ValueError, match="layer outputs differ in shape"):
        lig.attribute(tokens, pad, n_steps=4)


def test_posterior_without_one_module_per_sample():
    model = nn.Sequential(nn.Embedding(VOCAB, DIM), nn.Dropout(0.5), nn.Flatten(), nn.Linear(DIM * L, CLASSES))
    with pytest.raises(ValueError, match="forward_func must run one module per posterior sample"):
        LayerUncertaintyIntegratedGradients(UncertaintyForward(MCDropout(model, num_samples=4)), lambda m: m[0])


def test_named_baselines_and_non_uncertainty_forward_are_refused(members, tokens):
    lig = LayerUncertaintyIntegratedGradients(UncertaintyForward(members), embeddings(members))
    with pytest.raises(ValueError, match="baselines must be reference inputs"):
        lig.attribute(tokens, baselines="black", n_steps=4)
    with pytest.raises(TypeError, match="UncertaintyForward"):
        LayerUncertaintyIntegratedGradients(members[0], embeddings(members))


# ----------------------------------------------------------------------------- binary members


class BinaryBag(nn.Module):
    """Token ids (N, L) -> embedding bag (N, D) -> tanh -> linear: one logit per input (N,)."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.EmbeddingBag(VOCAB, DIM, mode="mean", padding_idx=0)
        self.emb.weight.data.mul_(2.0)
        self.fc = nn.Linear(DIM, 1)
        self.fc.bias.data.mul_(4.0)

    def forward(self, tokens):
        return self.fc(torch.tanh(2 * self.emb(tokens))).squeeze(-1)


class TwoLogits(nn.Module):
    """The same classifier with its two classes spelled out: logits ``[0, z]``."""

    def __init__(self, binary):
        super().__init__()
        self.binary = binary

    def forward(self, tokens):
        z = self.binary(tokens).unsqueeze(-1)
        return torch.cat([torch.zeros_like(z), z], dim=-1)


@pytest.mark.parametrize("measure", MEASURES)
def test_binary_members_with_one_logit_are_complete_and_equal_two_logit_members(tokens, pad, measure):
    members = [BinaryBag(seed).double() for seed in range(3)]
    uf = UncertaintyForward(members, measure=measure, binary=True)
    attributions, delta = LayerUncertaintyIntegratedGradients(uf, embeddings(members)).attribute(
        tokens, pad, n_steps=64, return_convergence_delta=True
    )
    assert attributions.shape == (N, DIM)
    expected = difference(uf, tokens, pad)
    assert expected.abs().min() > 1e-4
    assert torch.allclose(attributions.sum(1), expected, atol=1e-3, rtol=0)
    assert delta.abs().max() < 1e-3
    explicit = [TwoLogits(m) for m in members]
    two = UncertaintyForward(explicit, measure=measure, likelihood=Categorical())
    assert torch.allclose(difference(two, tokens, pad), expected, atol=1e-12, rtol=0)
    theirs = LayerUncertaintyIntegratedGradients(two, [m.binary.emb for m in explicit]).attribute(
        tokens, pad, n_steps=64
    )
    assert torch.allclose(attributions, theirs, atol=1e-12, rtol=0)
