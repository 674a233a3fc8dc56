"""Captum's LLM attribution API with the uncertainty as the target: completeness, efficiency,
decomposition, Captum's result type, the toy language whose causes are known."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from captum.attr import (
    FeatureAblation,
    KernelShap,
    LayerIntegratedGradients,
    LLMAttributionResult,
    ShapleyValues,
    TextTokenInput,
)

from captum_uncertainty import Decomposition
from captum_uncertainty.llm import (
    CausalLMUncertaintyForward,
    LLMGradientUncertaintyAttribution,
    LLMUncertaintyAttribution,
)
from captum_uncertainty.llm.toy import toy_tokenizer, train_toy_lm
from tests.llm.toy import tiny_ensemble

matplotlib.use("Agg")

PROMPT = "the cat sat on the"


@pytest.fixture(scope="module")
def tokenizer():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def members():
    return tiny_ensemble(3)


def _change(forward, inp, targets):
    ids = inp.to_model_input()
    removed = inp.to_model_input(torch.zeros(1, inp.n_itp_features))
    with torch.no_grad():
        return float(forward(ids, target_ids=targets) - forward(removed, target_ids=targets))


@pytest.mark.parametrize("measure", ["total", "epistemic"])
def test_layer_integrated_gradients_is_complete(members, tokenizer, measure):
    forward = CausalLMUncertaintyForward(members, measure)
    inp = TextTokenInput(PROMPT, tokenizer, baselines="a")
    targets = torch.tensor(tokenizer.encode("mat rug", add_special_tokens=False))
    result, delta = LLMGradientUncertaintyAttribution(forward, tokenizer).attribute(
        inp, target=targets, n_steps=64, return_convergence_delta=True
    )
    assert isinstance(result, LLMAttributionResult)
    assert result.seq_attr.shape == (5,) and result.token_attr.shape == (2, 5)
    torch.testing.assert_close(result.seq_attr, result.token_attr.sum(0))
    change = _change(forward, inp, targets)
    assert abs(float(result.seq_attr.sum()) - change) < 1e-3
    assert abs(delta) < 1e-3


def test_gradient_decomposition_and_captum_swap(members, tokenizer):
    forward = CausalLMUncertaintyForward(members)
    inp = TextTokenInput(PROMPT, tokenizer, baselines="a")
    parts, deltas = LLMGradientUncertaintyAttribution(forward, tokenizer).attribute(
        inp, target="mat", n_steps=16, return_convergence_delta=True, decompose=True
    )
    assert isinstance(parts, Decomposition)
    torch.testing.assert_close(parts.total.seq_attr, parts.aleatoric.seq_attr + parts.epistemic.seq_attr)
    alone = LLMGradientUncertaintyAttribution(forward.with_measure("aleatoric"), tokenizer).attribute(
        inp, target="mat", n_steps=16
    )
    torch.testing.assert_close(parts.aleatoric.seq_attr, alone.seq_attr, atol=1e-6, rtol=1e-5)
    # code written for Captum's LLMGradientAttribution: swap the class, keep the LayerIntegratedGradients
    swapped = LLMGradientUncertaintyAttribution(
        LayerIntegratedGradients(forward, members[0].transformer.wte), tokenizer
    )
    chunked = swapped.attribute(inp, target="mat", n_steps=16, internal_batch_size=5)
    torch.testing.assert_close(chunked.seq_attr, parts.total.seq_attr, atol=1e-6, rtol=1e-4)


def test_shapley_values_are_efficient_and_feature_ablation_decomposes(members, tokenizer):
    forward = CausalLMUncertaintyForward(members, "total")
    inp = TextTokenInput(PROMPT, tokenizer, baselines="a")
    targets = torch.tensor(tokenizer.encode("mat rug", add_special_tokens=False))
    shapley = LLMUncertaintyAttribution(ShapleyValues(forward), tokenizer).attribute(inp, target=targets)
    assert abs(float(shapley.seq_attr.sum()) - _change(forward, inp, targets)) < 1e-4
    torch.testing.assert_close(shapley.seq_attr, shapley.token_attr.sum(0), atol=1e-5, rtol=1e-4)
    ablation = LLMUncertaintyAttribution(FeatureAblation(forward), tokenizer)
    parts = ablation.attribute(inp, target=targets, decompose=True)
    torch.testing.assert_close(parts.total.seq_attr, parts.aleatoric.seq_attr + parts.epistemic.seq_attr)
    alone = LLMUncertaintyAttribution(FeatureAblation(forward.with_measure("aleatoric")), tokenizer)
    torch.testing.assert_close(parts.aleatoric.seq_attr, alone.attribute(inp, target=targets).seq_attr)
    figure, _ = parts.epistemic.plot_token_attr()
    assert figure is not None


def test_surrogates_give_sequence_attributions_only_and_generation_fills_the_target(members, tokenizer):
    forward = CausalLMUncertaintyForward(members, "epistemic")
    inp = TextTokenInput(PROMPT, tokenizer, baselines="a")
    result = LLMUncertaintyAttribution(KernelShap(forward), tokenizer).attribute(inp, target="mat", n_samples=30)
    assert result.token_attr is None and result.seq_attr.shape == (5,)
    generated = LLMUncertaintyAttribution(FeatureAblation(forward), tokenizer).attribute(
        inp, gen_args={"max_new_tokens": 2}
    )
    targets, _ = forward.generate(inp.to_model_input(), max_new_tokens=2)
    assert generated.output_tokens == [tokenizer.decode([int(t)]) for t in targets[0]]
    with pytest.raises(ValueError, match="gen_args"):
        LLMUncertaintyAttribution(FeatureAblation(forward), tokenizer).attribute(inp, gen_args={"do_sample": True})


def test_wrong_methods_and_forwards_are_refused(members, tokenizer):
    forward = CausalLMUncertaintyForward(members)
    with pytest.raises(TypeError, match="CausalLMUncertaintyForward"):
        LLMUncertaintyAttribution(FeatureAblation(members[0]), tokenizer)
    with pytest.raises(TypeError, match="attr_method must be one of"):
        LLMUncertaintyAttribution(LayerIntegratedGradients(forward, members[0].transformer.wte), tokenizer)
    with pytest.raises(TypeError, match="CausalLMUncertaintyForward"):
        LLMGradientUncertaintyAttribution(members[0], tokenizer)


def test_models_are_unchanged_after_attribution(members, tokenizer):
    flags = [(p.requires_grad, m.training) for m in members for p in m.parameters()]
    forward = CausalLMUncertaintyForward(members)
    inp = TextTokenInput(PROMPT, tokenizer, baselines="a")
    LLMGradientUncertaintyAttribution(forward, tokenizer).attribute(inp, target="mat", n_steps=4)
    assert flags == [(p.requires_grad, m.training) for m in members for p in m.parameters()]
    assert all(p.grad is None for m in members for p in m.parameters())
    assert not any(mod._forward_hooks for m in members for mod in m.modules())


@pytest.fixture(scope="module")
def toy_members():
    return [train_toy_lm(seed, steps=400) for seed in range(3)]


AMBIGUOUS_PROMPTS = [
    "the maybe a on cat",
    "a the maybe mat dog",
    "maybe on the a rug",
    "on a the maybe mat",
    "a maybe rug the cat",
    "the a on maybe dog",
]
UNSEEN_PROMPTS = [
    "the zorp a on cat",
    "a the zorp mat dog",
    "zorp on the a rug",
    "on a the zorp mat",
    "a zorp rug the cat",
    "the a on zorp dog",
]


def test_toy_language_maps_point_at_the_known_causes(toy_members, tokenizer):
    """ "maybe" makes the next word ambiguous in training (aleatoric); "zorp" is never seen (epistemic)."""
    hits = {"aleatoric": 0, "epistemic": 0}
    for measure, prompts, cause in (("aleatoric", AMBIGUOUS_PROMPTS, "maybe"), ("epistemic", UNSEEN_PROMPTS, "zorp")):
        attribution = LLMUncertaintyAttribution(
            FeatureAblation(CausalLMUncertaintyForward(toy_members, measure)), tokenizer
        )
        for prompt in prompts:
            result = attribution.attribute(TextTokenInput(prompt, tokenizer, baselines="a"), target="sat")
            hits[measure] += int(int(result.seq_attr.argmax()) == prompt.split().index(cause))
    assert hits["aleatoric"] >= 5 and hits["epistemic"] >= 5, hits


def test_reduction_none_attributes_the_sum_of_the_positions(members, tokenizer):
    inp = TextTokenInput(PROMPT, tokenizer, baselines="a")
    kept = CausalLMUncertaintyForward(members, reduction="none")
    summed = CausalLMUncertaintyForward(members, reduction="sum")
    none = LLMUncertaintyAttribution(FeatureAblation(kept), tokenizer).attribute(inp, target="mat rug")
    total = LLMUncertaintyAttribution(FeatureAblation(summed), tokenizer).attribute(inp, target="mat rug")
    torch.testing.assert_close(none.seq_attr, total.seq_attr)
    torch.testing.assert_close(none.token_attr, total.token_attr)
