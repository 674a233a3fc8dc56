"""Cost of uncertainty attribution on a causal LM: seconds and peak memory per prompt.

For prompt lengths and numbers of posterior samples S, each configuration runs in its own child
process (so the peak resident memory, ``ru_maxrss``, is its own): our
``LLMUncertaintyAttribution(FeatureAblation)`` and ``LLMGradientUncertaintyAttribution`` on an
ensemble of S random GPT-2s (4 layers, 128-d, 1,000 words), next to Captum's own
``LLMAttribution(FeatureAblation)`` and ``LLMGradientAttribution(LayerIntegratedGradients)`` on
one member's log-probability (the floor: ours runs S members). Then S LoRA adapters on one base
model against S full models, for the forward and FeatureAblation.

Run: ``python benchmarks/bench_llm_cost.py`` (a few minutes on 2 cores). Seconds are the median of
three calls after a warm-up call. Peak memory is the child's
maximum resident set; the last column subtracts what it held after importing torch,
transformers and captum (models, activations and the run).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import warnings
from typing import Any, Dict, List

import torch

WORDS = ["<pad>", "<unk>", "<eos>"] + [f"w{k}" for k in range(997)]
TARGET = 4
STEPS = 16


def _model(seed: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(WORDS), n_positions=128, n_embd=128, n_layer=4, n_head=4)
    return GPT2LMHeadModel(config).eval()


def _lora(samples: int) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False, fan_in_fan_out=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(_model(0), config, adapter_name="a0")
        for k in range(1, samples):
            model.add_adapter(f"a{k}", config)
    return model.eval()


def run_one(method: str, length: int, samples: int) -> Dict[str, Any]:
    from captum.attr import TextTokenInput

    from captum_uncertainty.llm import CausalLMUncertaintyForward, from_peft
    from captum_uncertainty.llm.toy import toy_tokenizer

    torch.set_num_threads(2)
    imported_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokenizer = toy_tokenizer(WORDS)
    prompt = " ".join(f"w{(7 * k) % 997}" for k in range(length))
    target = torch.tensor([10, 11, 12, 13][:TARGET])
    inp = TextTokenInput(prompt, tokenizer)
    subject: Any
    if method.startswith("lora"):
        subject = CausalLMUncertaintyForward(from_peft(_lora(samples)), "epistemic")
    elif method.startswith("captum"):
        subject = _model(0)
    else:
        subject = CausalLMUncertaintyForward([_model(s) for s in range(samples)], "epistemic")

    def attribute() -> None:
        _attribute(method, subject, tokenizer, inp, target)

    attribute()  # warm-up (first-call checks, allocator)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        attribute()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[1]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "length": length,
        "samples": samples,
        "seconds": seconds,
        "peak_mb": peak_mb,
        "above_imports_mb": peak_mb - imported_mb,
    }


def _attribute(method: str, subject: Any, tokenizer: Any, inp: Any, target: torch.Tensor) -> None:
    from captum.attr import FeatureAblation, LayerIntegratedGradients, LLMAttribution, LLMGradientAttribution

    from captum_uncertainty.llm import LLMGradientUncertaintyAttribution, LLMUncertaintyAttribution

    forward = model = subject
    if method in ("ours_feature_ablation", "lora_feature_ablation"):
        LLMUncertaintyAttribution(FeatureAblation(forward), tokenizer).attribute(inp, target=target)
    elif method == "ours_layer_ig":
        LLMGradientUncertaintyAttribution(forward, tokenizer).attribute(inp, target=target, n_steps=STEPS)
    elif method == "captum_feature_ablation":
        LLMAttribution(FeatureAblation(model), tokenizer).attribute(inp, target=target, forward_in_tokens=False)
    elif method == "captum_layer_ig":
        lig = LayerIntegratedGradients(model, model.transformer.wte)
        LLMGradientAttribution(lig, tokenizer).attribute(inp, target=target, n_steps=STEPS)
    elif method in ("ours_forward", "lora_forward"):
        with torch.no_grad():
            forward(inp.to_model_input(), target_ids=target)


def _child(method: str, length: int, samples: int) -> Dict[str, Any]:
    output = subprocess.run(
        [sys.executable, __file__, "--one", method, str(length), str(samples)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    rows: List[Dict[str, Any]] = []
    for length in (16, 64):
        rows.append(_child("captum_feature_ablation", length, 1))
        rows.append(_child("captum_layer_ig", length, 1))
        for samples in (1, 4):
            rows.append(_child("ours_feature_ablation", length, samples))
            rows.append(_child("ours_layer_ig", length, samples))
    for samples in (4,):
        for method in ("ours_forward", "lora_forward", "lora_feature_ablation"):
            rows.append(_child(method, 64, samples))
    print("| method | prompt tokens | S | seconds | peak memory (MB) | peak above the imports (MB) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['method']} | {row['length']} | {row['samples']} | {row['seconds']:.2f} | {row['peak_mb']:.0f} | "
            f"{row['above_imports_mb']:.0f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        print(json.dumps(run_one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
