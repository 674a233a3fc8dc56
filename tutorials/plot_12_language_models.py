"""
Language models: which prompt tokens make the model unsure?
============================================================

A causal language model gives a distribution over the next token at every position; ``S``
posterior samples of it (here a deep ensemble of three tiny GPT-2 models) give ``S`` of them, and
their entropy decomposition says how unsure the model is and why: aleatoric (the prompt is
ambiguous) or epistemic (the model never learned this). This tutorial

1. trains three tiny GPT-2 models on a toy language whose causes are known: the word ``maybe``
   makes the next word a coin flip between ``sat`` and ``ran``; the word ``zorp`` never appears
   in training;
2. measures the next token's uncertainty with
   :class:`~captum_uncertainty.llm.CausalLMUncertaintyForward`, and
3. attributes it to the prompt's tokens with Captum's FeatureAblation through
   :class:`~captum_uncertainty.llm.LLMUncertaintyAttribution`, which returns Captum's
   ``LLMAttributionResult``: the aleatoric map points at ``maybe``, the epistemic one at ``zorp``.

It runs in well under a minute on a CPU. The last section shows the same code on a Hugging Face
model for readers with a network (not run here).
"""

# %%
# Three tiny GPT-2 models on the toy language
# -------------------------------------------
import matplotlib.pyplot as plt
import torch
from captum.attr import FeatureAblation, TextTokenInput

from captum_uncertainty.llm import CausalLMUncertaintyForward, LLMUncertaintyAttribution
from captum_uncertainty.llm.toy import toy_tokenizer, train_toy_lm

torch.manual_seed(0)
tokenizer = toy_tokenizer()
members = [train_toy_lm(seed) for seed in range(3)]

# %%
# How unsure, and why
# -------------------
# One prompt of each kind. ``decompose`` gives total, aleatoric and epistemic uncertainty of the
# next token, in nats.
forward = CausalLMUncertaintyForward(members)
prompts = ["the cat a on rug", "the cat a maybe rug", "the zorp a on rug"]
encoding = tokenizer(prompts, return_tensors="pt")
with torch.no_grad():
    total, aleatoric, epistemic = forward.decompose(**encoding)
for prompt, t, a, e in zip(prompts, total, aleatoric, epistemic):
    print(f"{prompt:22s} total {float(t):.3f}  aleatoric {float(a):.3f}  epistemic {float(e):.3f}")

# %%
# Which token causes it
# ---------------------
# FeatureAblation replaces one token at a time by the baseline word ``a`` (one the models have
# seen) and records the change of the continuation's uncertainty; ``decompose=True`` gives the
# three maps from the same passes.
ablation = LLMUncertaintyAttribution(FeatureAblation(forward), tokenizer)
figure, axes = plt.subplots(1, 2, figsize=(9, 2.6))
for ax, (prompt, measure) in zip(axes, [("the cat a maybe rug", "aleatoric"), ("the zorp a on rug", "epistemic")]):
    inp = TextTokenInput(prompt, tokenizer, baselines="a")
    maps = ablation.attribute(inp, target="sat", decompose=True)
    values = maps.select(measure).seq_attr
    ax.bar(range(len(inp.values)), values.numpy())
    ax.set_xticks(range(len(inp.values)), inp.values)
    ax.set_ylabel(f"{measure} (nats)")
    ax.set_title(f"{measure}: largest at {inp.values[int(values.argmax())]!r}")
figure.tight_layout()

# %%
# Captum's own plots work on the result:
figure, _ = maps.epistemic.plot_token_attr()

# %%
# With a network: a Hugging Face model and LoRA adapters
# ------------------------------------------------------
# The same code on a real model; each LoRA adapter is one posterior sample on one base model
# (:func:`~captum_uncertainty.llm.from_peft`). Not run here (no downloads)::
#
#     from peft import PeftModel
#     from transformers import AutoModelForCausalLM, AutoTokenizer
#     from captum_uncertainty.llm import from_peft
#
#     tokenizer = AutoTokenizer.from_pretrained("gpt2")
#     model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("gpt2"), "my-org/lora-0",
#                                       adapter_name="0")
#     model.load_adapter("my-org/lora-1", adapter_name="1")
#     forward = CausalLMUncertaintyForward(from_peft(model), "epistemic")
#     result = LLMUncertaintyAttribution(FeatureAblation(forward), tokenizer).attribute(
#         TextTokenInput("The capital of Australia is", tokenizer), target=" Canberra")
