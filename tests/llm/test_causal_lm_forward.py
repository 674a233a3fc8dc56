"""CausalLMUncertaintyForward: per-position decomposition by hand, padding, keyword inputs, LM posteriors."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from captum_uncertainty import MCDropout
from captum_uncertainty.llm import CausalLMUncertaintyForward, from_peft
from captum_uncertainty.llm.toy import tiny_gpt2, toy_tokenizer
from tests.llm.toy import tiny_ensemble

VOCAB = 14


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.log()).sum(-1)


def _hand(models, ids: torch.Tensor, start: int, count: int):
    """Total, aleatoric and epistemic at positions start..start+count-1 (predicting the next token)."""
    with torch.no_grad():
        probabilities = torch.stack([m(ids).logits[:, start : start + count].softmax(-1) for m in models])
    total = _entropy(probabilities.mean(0))
    aleatoric = _entropy(probabilities).mean(0)
    return total, aleatoric, total - aleatoric


@pytest.fixture(scope="module")
def members():
    return tiny_ensemble(3)


def test_per_position_decomposition_equals_hand_computation(members):
    ids = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))
    targets = torch.randint(3, VOCAB, (2, 3), generator=torch.Generator().manual_seed(1))
    forward = CausalLMUncertaintyForward(members, reduction="none")
    terms = forward.position_decomposition(ids, target_ids=targets)
    total, aleatoric, epistemic = _hand(members, torch.cat([ids, targets], 1), 4, 3)
    torch.testing.assert_close(terms.total, total, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms.aleatoric, aleatoric, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms.epistemic, epistemic, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms.total, terms.aleatoric + terms.epistemic)
    assert (terms.epistemic > -1e-6).all()
    summed = CausalLMUncertaintyForward(members, "epistemic")(ids, target_ids=targets)
    torch.testing.assert_close(summed, epistemic.sum(1), atol=1e-5, rtol=1e-5)
    mean = CausalLMUncertaintyForward(members, "aleatoric", reduction="mean")(ids, target_ids=targets)
    torch.testing.assert_close(mean, aleatoric.mean(1), atol=1e-5, rtol=1e-5)


def test_next_token_without_target(members):
    ids = torch.randint(3, VOCAB, (3, 4), generator=torch.Generator().manual_seed(2))
    total, _, epistemic = _hand(members, ids, 3, 1)
    torch.testing.assert_close(CausalLMUncertaintyForward(members)(ids), total[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        CausalLMUncertaintyForward(members, "epistemic")(ids), epistemic[:, 0], atol=1e-5, rtol=1e-5
    )


def test_one_member_total_is_the_models_own_entropy():
    model = tiny_gpt2(7)
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = _entropy(model(input_ids=ids).logits[:, -1].softmax(-1))
    forward = CausalLMUncertaintyForward([model])
    torch.testing.assert_close(forward(ids), expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(CausalLMUncertaintyForward([model], "epistemic")(ids), torch.zeros(2), atol=1e-6)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_changes_nothing_and_rows_are_independent(members, side):
    generator = torch.Generator().manual_seed(4)
    short = torch.randint(3, VOCAB, (1, 3), generator=generator)
    long = torch.randint(3, VOCAB, (1, 5), generator=generator)
    targets = torch.randint(3, VOCAB, (2, 2), generator=generator)
    pad = torch.zeros(1, 2, dtype=torch.long)
    padded = torch.cat([pad, short], 1) if side == "left" else torch.cat([short, pad], 1)
    mask = torch.cat([torch.zeros_like(pad), torch.ones_like(short)], 1)
    mask = mask if side == "left" else mask.flip(1)
    ids = torch.cat([padded, long])
    attention = torch.cat([mask, torch.ones_like(long)])
    forward = CausalLMUncertaintyForward(members, reduction="none")
    batched = forward.position_decomposition(ids, attention, target_ids=targets)
    alone_short = forward.position_decomposition(short, target_ids=targets[:1])
    alone_long = forward.position_decomposition(long, target_ids=targets[1:])
    for part in range(3):
        torch.testing.assert_close(batched[part][:1], alone_short[part], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched[part][1:], alone_long[part], atol=1e-5, rtol=1e-5)
    next_batched = CausalLMUncertaintyForward(members)(ids, attention)
    torch.testing.assert_close(next_batched[0], CausalLMUncertaintyForward(members)(short)[0], atol=1e-5, rtol=1e-5)


def test_target_padding_is_zero_and_not_counted(members):
    ids = torch.randint(3, VOCAB, (2, 4), generator=torch.Generator().manual_seed(5))
    targets = torch.randint(3, VOCAB, (2, 3), generator=torch.Generator().manual_seed(6))
    target_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    per_position = CausalLMUncertaintyForward(members, reduction="none")(
        ids, target_ids=targets, target_mask=target_mask
    )
    assert per_position[1, 2] == 0
    shorter = CausalLMUncertaintyForward(members, reduction="none")(ids[1:], target_ids=targets[1:, :2])
    torch.testing.assert_close(per_position[1, :2], shorter[0], atol=1e-5, rtol=1e-5)
    mean = CausalLMUncertaintyForward(members, reduction="mean")(ids, target_ids=targets, target_mask=target_mask)
    torch.testing.assert_close(mean[1], shorter[0].mean(), atol=1e-5, rtol=1e-5)


def test_tokenizer_output_is_accepted(members):
    tokenizer = toy_tokenizer()
    tokenizer.padding_side = "left"
    encoding = tokenizer(["the cat sat on", "a dog"], return_tensors="pt", padding=True)
    forward = CausalLMUncertaintyForward(members, "epistemic")
    expected = forward(encoding["input_ids"], encoding["attention_mask"])
    torch.testing.assert_close(forward(**encoding), expected)
    torch.testing.assert_close(forward(encoding), expected)
    with pytest.raises(TypeError, match="unexpected keyword argument 'pixel_values'"):
        forward(**encoding, pixel_values=torch.zeros(1))


def test_bad_inputs_are_refused(members):
    forward = CausalLMUncertaintyForward(members)
    with pytest.raises(TypeError, match="input_ids must hold integer token ids"):
        forward(torch.rand(1, 4))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        forward(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="no real token in row 0"):
        forward(torch.ones(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        CausalLMUncertaintyForward(members, reduction="max")


def test_greedy_generation_follows_the_posterior_predictive(members):
    ids = torch.randint(3, VOCAB, (1, 4), generator=torch.Generator().manual_seed(8))
    forward = CausalLMUncertaintyForward(members)
    targets, mask = forward.generate(ids, max_new_tokens=3)
    assert targets.shape == (1, 3) and bool(mask.all())
    sequence = ids
    for step in range(3):
        with torch.no_grad():
            mean = torch.stack([m(sequence).logits[:, -1].softmax(-1) for m in members]).mean(0)
        assert int(mean.argmax(-1)) == int(targets[0, step])
        sequence = torch.cat([sequence, targets[:, step : step + 1]], 1)


def test_mc_dropout_feature_masks_do_not_depend_on_the_length():
    model = tiny_gpt2(3, dropout=0.2)
    model.train()  # the user's mode must come back
    posterior = MCDropout(model, num_samples=4, seed=0, mask_layout="feature")
    forward = CausalLMUncertaintyForward(posterior, "epistemic")
    short = torch.randint(3, VOCAB, (1, 3), generator=torch.Generator().manual_seed(9))
    long = torch.cat([short, torch.randint(3, VOCAB, (1, 4))], 1)
    first = forward(short)
    forward(long)  # another length: same masks, no refusal
    torch.testing.assert_close(forward(short), first)
    assert float(first.detach()) > 0
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    element = CausalLMUncertaintyForward(MCDropout(tiny_gpt2(3, dropout=0.2), num_samples=2), "epistemic")
    element(short)
    with pytest.raises(ValueError, match="mask_layout='feature'"):
        element(long)


def test_captum_layer_method_on_an_expanding_posterior_is_refused():
    from captum.attr import LayerIntegratedGradients
    from torch import nn

    from captum_uncertainty import UncertaintyForward

    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Dropout(0.3), nn.Linear(12, 5)).eval()
    forward = UncertaintyForward(MCDropout(model, num_samples=4))
    tokens = torch.randint(0, 10, (2, 3))
    with pytest.raises(ValueError, match="LLMGradientUncertaintyAttribution"):
        LayerIntegratedGradients(forward, model[0]).attribute(tokens, baselines=torch.zeros_like(tokens))
    assert not any(m._forward_hooks for m in model.modules())
    assert forward(tokens).shape == (2,)


def _peft_model():
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights=False, lora_dropout=0.0, fan_in_fan_out=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notes on adapter names and GPT-2's Conv1D
        model = get_peft_model(tiny_gpt2(11), config, adapter_name="first")
        for name in ("second", "third"):
            torch.manual_seed(len(name))
            model.add_adapter(name, config)
    return model.eval()


def test_lora_adapters_equal_an_ensemble_of_merged_models_and_share_the_base():
    model = _peft_model()
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    posterior = from_peft(model)
    assert posterior.adapter_names == ["first", "second", "third"]
    ids = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(12))
    targets = torch.randint(3, VOCAB, (2, 2), generator=torch.Generator().manual_seed(13))
    lora = CausalLMUncertaintyForward(posterior, reduction="none").position_decomposition(ids, target_ids=targets)
    merged = []
    for name in posterior.adapter_names:
        copied = copy.deepcopy(model)
        copied.set_adapter(name)
        merged.append(copied.merge_and_unload().eval())
    full = CausalLMUncertaintyForward(merged, reduction="none").position_decomposition(ids, target_ids=targets)
    for part in range(3):
        torch.testing.assert_close(lora[part], full[part], atol=1e-5, rtol=1e-4)
    assert float(lora.epistemic.detach().max()) > 0
    # the model is unchanged: active adapter, requires_grad flags
    assert model.active_adapter == "first"
    assert flags == {name: p.requires_grad for name, p in model.named_parameters()}
    # the base weights are held once: the posterior's storage is the model's, not S copies
    storages = {p.untyped_storage().data_ptr() for m in posterior.sample_modules() for p in m.parameters()}
    assert storages == {p.untyped_storage().data_ptr() for p in model.parameters()}
    posterior_bytes = sum(p.numel() * p.element_size() for p in posterior.parameters())
    ensemble_bytes = sum(p.numel() * p.element_size() for m in merged for p in m.parameters())
    assert posterior_bytes < ensemble_bytes / 2


def test_lora_restores_the_model_after_an_error():
    model = _peft_model()
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    forward = CausalLMUncertaintyForward(from_peft(model, ["third", "second"]))
    with pytest.raises(IndexError):
        forward(torch.full((1, 3), 10_000, dtype=torch.long))  # ids outside the vocabulary
    assert model.active_adapter == "first"
    assert flags == {name: p.requires_grad for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match="not adapters of model"):
        from_peft(model, ["first", "fourth"])
