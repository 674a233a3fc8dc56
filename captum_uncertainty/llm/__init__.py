"""Uncertainty attribution for causal language models: which prompt tokens make the model unsure,
split into aleatoric (the prompt is ambiguous) and epistemic (the model never learned this).

* :class:`CausalLMUncertaintyForward`: the uncertainty of the next token, or of every token of a
  continuation under teacher forcing, decomposed from ``S`` posterior samples of the LM: a list
  of models (an ensemble), :class:`~captum_uncertainty.MCDropout` with
  ``mask_layout="feature"``, or LoRA adapters on one base model (:func:`from_peft`).
* :class:`LLMUncertaintyAttribution`: Captum's perturbation methods (FeatureAblation, Shapley
  values, Lime, KernelShap) through Captum's LLM attribution API, the uncertainty as the target.
* :class:`LLMGradientUncertaintyAttribution`: Layer Integrated Gradients on every sample's token
  embeddings at once (complete).
"""

from captum_uncertainty.llm.forward import REDUCTIONS, SUPPORTED_REDUCTIONS, CausalLMUncertaintyForward
from captum_uncertainty.llm.gradient import LLMGradientUncertaintyAttribution
from captum_uncertainty.llm.peft import LoRAEnsemble, from_peft
from captum_uncertainty.llm.perturbation import LLMUncertaintyAttribution

__all__ = [
    "SUPPORTED_REDUCTIONS",
    "REDUCTIONS",
    "CausalLMUncertaintyForward",
    "LLMGradientUncertaintyAttribution",
    "LLMUncertaintyAttribution",
    "LoRAEnsemble",
    "from_peft",
]
