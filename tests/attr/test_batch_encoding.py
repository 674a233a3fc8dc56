"""A tokenizer's BatchEncoding (keyword inputs) through the forward and layer IG, on GPT-style and
BERT-style sequence classifiers whose second positional parameter differs."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerIntegratedGradients
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification

from captum_uncertainty import LayerUncertaintyIntegratedGradients, UncertaintyForward
from captum_uncertainty.llm.toy import WORDS, toy_tokenizer

SENTENCES = ["the cat sat on the mat", "a dog ran", "maybe the rug"]


def _gpt2(seed: int) -> GPT2ForSequenceClassification:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(WORDS), n_positions=16, n_embd=16, n_layer=1, n_head=2, num_labels=3, pad_token_id=0
    )
    return GPT2ForSequenceClassification(config).eval()


def _bert(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
        pad_token_id=0,
    )
    return BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module", params=["gpt2", "bert"])
def case(request):
    tokenizer = toy_tokenizer()
    tokenizer.padding_side = "left" if request.param == "gpt2" else "right"
    members = [(_gpt2 if request.param == "gpt2" else _bert)(seed) for seed in range(3)]
    embeddings = [m.get_input_embeddings() for m in members]
    encoding = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    return request.param, members, embeddings, encoding


def _positional(name, encoding):
    ids, mask = encoding["input_ids"], encoding["attention_mask"]
    return (ids, None, mask) if name == "gpt2" else (ids, mask)


def test_forward_takes_a_batch_encoding(case):
    name, members, _, encoding = case
    uf = UncertaintyForward(members, "epistemic")
    expected = uf(*_positional(name, encoding))
    torch.testing.assert_close(uf(**encoding), expected)
    torch.testing.assert_close(uf(encoding), expected)
    torch.testing.assert_close(uf.decompose(**encoding).total, uf.with_measure("total")(*_positional(name, encoding)))
    inputs, args = uf.bind(encoding)
    assert inputs is encoding["input_ids"] and len(args) == len(_positional(name, encoding)) - 1
    with pytest.raises(TypeError, match="not positional parameters"):
        uf(**encoding, colour=torch.zeros(3))


def test_layer_uig_on_a_batch_encoding_equals_the_positional_call_and_zeroes_padding(case):
    name, members, embeddings, encoding = case
    uf = UncertaintyForward(members, "total")
    lig = LayerUncertaintyIntegratedGradients(uf, embeddings)
    ids, mask = encoding["input_ids"], encoding["attention_mask"]
    unk = WORDS.index("<unk>")
    baselines = torch.where(mask.bool(), torch.full_like(ids, unk), ids)  # padding kept, words replaced
    keyword, delta = lig.attribute(
        encoding, baselines=baselines, n_steps=32, sum_embedding=True, return_convergence_delta=True
    )
    positional = lig.attribute(
        ids,
        baselines=baselines,
        additional_forward_args=_positional(name, encoding)[1:],
        n_steps=32,
        sum_embedding=True,
    )
    torch.testing.assert_close(keyword, positional)
    assert bool((keyword[~mask.bool()] == 0).all())
    assert float(delta.abs().max()) < 1e-2
    with pytest.raises(ValueError, match="leave additional_forward_args None"):
        lig.attribute(encoding, baselines=baselines, additional_forward_args=(mask,))


def test_captum_layer_ig_with_bound_arguments(case):
    name, members, embeddings, encoding = case
    uf = UncertaintyForward(members[:1], "total")
    inputs, args = uf.bind(encoding)
    ours = LayerUncertaintyIntegratedGradients(uf, embeddings[:1]).attribute(
        inputs, baselines=torch.zeros_like(inputs), additional_forward_args=args, n_steps=8
    )
    captum = LayerIntegratedGradients(uf, embeddings[0]).attribute(
        inputs, baselines=torch.zeros_like(inputs), additional_forward_args=args, n_steps=8
    )
    torch.testing.assert_close(ours, captum, atol=1e-5, rtol=1e-4)
