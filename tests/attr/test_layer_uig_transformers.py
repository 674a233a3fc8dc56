"""LayerUncertaintyIntegratedGradients on ensembles of Hugging Face ``transformers`` classifiers.

Tiny random-initialised BERT and RoBERTa sequence classifiers built from config objects (no
download), float64, attributed to their word embeddings with an attention mask and a
neutral-token baseline. The members return ``SequenceClassifierOutput`` objects, read as their
``.logits``.
"""

import pytest
import torch
from captum.attr import LayerIntegratedGradients

transformers = pytest.importorskip("transformers")

from captum_uncertainty import (  # noqa: E402
    Decomposition,
    LayerUncertaintyIntegratedGradients,
    UncertaintyForward,
)
from tests.helpers import assert_untouched, model_state  # noqa: E402

VOCAB, CLASSES, N, L = 50, 3, 4, 10
NEUTRAL = 3  # the baseline's token for every non-padding position (a [MASK]-like id of the tiny vocabulary)
MEASURES = ("total", "aleatoric", "epistemic")
STEPS = 64
# The integrand along the path is analytic (GELU, softmax, LayerNorm, tanh pooler / head), so the
# Gauss-Legendre error falls geometrically with the number of nodes: with these models it is ~1e-4
# at 8 nodes and at float64 rounding (~1e-15) at 64. 1e-8 leaves room for other BLAS / attention
# kernels and is still far below the differences explained (each > 1e-3) and the 8-node error.
TOLERANCE = 1e-8
# Not DistilBERT: its classification head has a ReLU, whose kink makes the quadrature converge
# slowly (delta ~1e-2 at 64 nodes), so completeness could only be checked loosely.
SMALL = dict(vocab_size=VOCAB, max_position_embeddings=32, num_labels=CLASSES, initializer_range=0.4)
ENCODER = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
# A wider initialisation than the default 0.02 (near-uniform predictions, uncertainty differences
# ~1e-6) gives the members confident, disagreeing predictions: differences of 1e-3 to 0.5 nats.


def bert(seed):
    torch.manual_seed(seed)
    config = transformers.BertConfig(**ENCODER, **SMALL)
    return transformers.BertForSequenceClassification(config).double().eval()


def roberta(seed):
    torch.manual_seed(seed)
    config = transformers.RobertaConfig(**ENCODER, **SMALL)
    return transformers.RobertaForSequenceClassification(config).double().eval()


FAMILIES = {
    "bert": (bert, lambda member: member.bert.embeddings.word_embeddings),
    "roberta": (roberta, lambda member: member.roberta.embeddings.word_embeddings),
}


def make_members(family, count=3):
    factory, _ = FAMILIES[family]
    return [factory(seed) for seed in range(count)]


def text_batch(pad_id):
    """Token ids ``(N, L)`` (rows 1 and 2 padded at the end), their attention mask and the
    neutral-token baseline (padding kept, so the mask is the same at both ends of the path)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(NEUTRAL + 2, VOCAB, (N, L), generator=generator)
    ids[1, 7:] = pad_id
    ids[2, 4:] = pad_id
    mask = (ids != pad_id).long()
    baseline = torch.where(mask.bool(), torch.full_like(ids, NEUTRAL), ids)
    return ids, mask, baseline


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return request.param


@pytest.fixture(scope="module")
def ensemble(family):
    members = make_members(family)
    return members, FAMILIES[family][1], text_batch(members[0].config.pad_token_id)


@pytest.fixture(scope="module")
def bert_ensemble():
    members = make_members("bert")
    return members, FAMILIES["bert"][1], text_batch(members[0].config.pad_token_id)


def difference(uf, ids, baseline, mask):
    with torch.no_grad():
        return uf(ids, mask) - uf(baseline, mask)


# ----------------------------------------------------------------------------- completeness


@pytest.mark.parametrize("measure", MEASURES)
def test_complete_per_sentence_with_attention_mask(ensemble, measure):
    members, layer, (ids, mask, baseline) = ensemble
    uf = UncertaintyForward(members, measure=measure)
    lig = LayerUncertaintyIntegratedGradients(uf, layer)
    attributions, delta = lig.attribute(
        ids, baseline, additional_forward_args=(mask,), n_steps=STEPS, return_convergence_delta=True
    )
    assert attributions.shape == (N, L, ENCODER["hidden_size"]) and attributions.dtype == torch.float64
    expected = difference(uf, ids, baseline, mask)
    assert expected.abs().min() > 1e-3  # a non-trivial difference to explain, in every sentence
    assert torch.allclose(attributions.sum((1, 2)), expected, atol=TOLERANCE, rtol=0)
    assert torch.allclose(delta, attributions.sum((1, 2)) - expected, atol=1e-12, rtol=0)
    assert delta.abs().max() < TOLERANCE
    _, coarse = lig.attribute(ids, baseline, additional_forward_args=(mask,), n_steps=8, return_convergence_delta=True)
    assert coarse.abs().max() > 10 * TOLERANCE  # the tolerance is tight enough to see quadrature error


def test_padding_gets_exactly_zero_and_the_mask_reaches_the_model(ensemble):
    members, layer, (ids, mask, baseline) = ensemble
    uf = UncertaintyForward(members, measure="epistemic")
    args = dict(additional_forward_args=(mask,), n_steps=16)
    per_token = LayerUncertaintyIntegratedGradients(uf, layer).attribute(ids, baseline, sum_embedding=True, **args)
    padding = mask == 0
    assert padding.sum() == 9
    assert torch.equal(per_token[padding], torch.zeros(9, dtype=torch.float64))
    assert (per_token[~padding].abs() > 0).all()
    # the bare path integral of the gradient: zero at padding only because the mask is applied
    local = LayerUncertaintyIntegratedGradients(uf, layer, multiply_by_inputs=False)
    gradients = local.attribute(ids, baseline, **args)
    assert torch.equal(gradients[padding], torch.zeros_like(gradients[padding]))
    unmasked = local.attribute(ids, baseline, n_steps=16)
    assert unmasked[padding].abs().max() > 1e-6
    # without the mask the padding still gets zero: the baseline kept it, so e(x) - e(x') = 0 there
    kept = LayerUncertaintyIntegratedGradients(uf, layer).attribute(ids, baseline, n_steps=16, sum_embedding=True)
    assert torch.equal(kept[padding], torch.zeros(9, dtype=torch.float64))
    assert not torch.allclose(kept, per_token)


def test_decompose_total_is_aleatoric_plus_epistemic_and_each_part_complete(bert_ensemble):
    members, layer, (ids, mask, baseline) = bert_ensemble
    uf = UncertaintyForward(members, measure="total")
    maps, deltas = LayerUncertaintyIntegratedGradients(uf, layer).attribute(
        ids, baseline, additional_forward_args=(mask,), n_steps=STEPS, return_convergence_delta=True, decompose=True
    )
    assert isinstance(maps, Decomposition) and isinstance(deltas, Decomposition)
    assert torch.allclose(maps.total, maps.aleatoric + maps.epistemic, atol=1e-14, rtol=0)
    assert not torch.allclose(maps.aleatoric, maps.total)
    with torch.no_grad():
        at_ids, at_baseline = uf.decompose(ids, mask), uf.decompose(baseline, mask)
    for measure in MEASURES:
        expected = at_ids.select(measure) - at_baseline.select(measure)
        assert torch.allclose(maps.select(measure).sum((1, 2)), expected, atol=TOLERANCE, rtol=0)
        assert deltas.select(measure).abs().max() < TOLERANCE


# ----------------------------------------------------------------------------- against Captum


def test_one_member_equals_captum_layer_integrated_gradients(bert_ensemble):
    members, _, (ids, mask, baseline) = bert_ensemble
    member = members[1]
    uf = UncertaintyForward([member], measure="total")
    embedding = member.bert.embeddings.word_embeddings
    kwargs = dict(additional_forward_args=(mask,), n_steps=32, return_convergence_delta=True)
    ours, delta = LayerUncertaintyIntegratedGradients(uf, [embedding]).attribute(ids, baseline, **kwargs)
    theirs, their_delta = LayerIntegratedGradients(uf, embedding).attribute(ids, baselines=baseline, **kwargs)
    assert ours.abs().max() > 1e-2
    # Captum weighs the steps in float32: agreement to ~1e-9, not to float64 rounding
    assert torch.allclose(ours, theirs, atol=1e-7, rtol=0)
    assert torch.allclose(delta, their_delta, atol=1e-7, rtol=0)


def test_captum_with_member_zero_only_is_incomplete_for_the_ensemble(bert_ensemble):
    members, layer, (ids, mask, baseline) = bert_ensemble
    uf = UncertaintyForward(members, measure="epistemic")
    kwargs = dict(additional_forward_args=(mask,), n_steps=STEPS, return_convergence_delta=True)
    _, ours = LayerUncertaintyIntegratedGradients(uf, layer).attribute(ids, baseline, **kwargs)
    _, one = LayerIntegratedGradients(uf, layer(members[0])).attribute(ids, baselines=baseline, **kwargs)
    assert ours.abs().max() < TOLERANCE
    assert one.abs().max() > 1e-3


# ----------------------------------------------------------------------------- the user's models


def test_a_train_mode_member_with_dropout_is_refused_and_members_stay_untouched(bert_ensemble):
    """A member left in train mode with active dropout is refused, naming MCDropout and eval():
    the forward would switch its dropout off and explain another, deterministic model. The refused
    call and the later eval-mode call leave every submodule's flag and weight as they were."""
    members, layer, (ids, mask, baseline) = bert_ensemble
    kwargs = dict(additional_forward_args=(mask,), n_steps=8)
    expected = LayerUncertaintyIntegratedGradients(UncertaintyForward(members), layer).attribute(
        ids, baseline, **kwargs
    )
    fresh = make_members("bert")
    fresh[2].train()
    assert fresh[2].config.hidden_dropout_prob > 0
    fresh[0].bert.embeddings.word_embeddings.weight.grad = torch.ones(VOCAB, ENCODER["hidden_size"]).double()
    before = model_state(fresh)
    uf = UncertaintyForward(fresh)
    with pytest.raises(ValueError, match=r"members\[2\] is in train\(\) mode.*Dropout.*MCDropout.*eval\(\)"):
        LayerUncertaintyIntegratedGradients(uf, layer).attribute(ids, baseline, **kwargs)
    assert_untouched(before, fresh)
    assert fresh[2].training and not fresh[1].training
    fresh[2].eval()
    before = model_state(fresh)
    got = LayerUncertaintyIntegratedGradients(uf, layer).attribute(ids, baseline, decompose=True, **kwargs)
    assert torch.equal(got.total, expected)
    assert_untouched(before, fresh)
    # the encoder returns a ModelOutput, not a tensor: refused after its recording hooks ran
    with pytest.raises(ValueError, match="floating point tensor"):
        LayerUncertaintyIntegratedGradients(uf, lambda member: member.bert.encoder).attribute(ids, baseline, **kwargs)
    assert_untouched(before, fresh)


def test_the_vmap_strategy_reads_the_logits_of_hugging_face_outputs():
    from captum_uncertainty import DeepEnsemble

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=3,
    )
    members = [transformers.BertForSequenceClassification(config).double().eval() for _ in range(2)]
    ids = torch.tensor([[2, 7, 9, 11], [2, 8, 5, 0]])
    loop = UncertaintyForward(DeepEnsemble(members, strategy="loop"))(ids)
    batched = UncertaintyForward(DeepEnsemble(members, strategy="vmap"))(ids)
    torch.testing.assert_close(batched, loop)
