"""Shared by the causal-LM classes: token batches with padding, calling one posterior sample with
keyword arguments, and the per-position log-probabilities of the samples."""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_uncertainty.posterior import Posterior

__all__ = [
    "GENERATION_ARGUMENTS",
    "TokenBatch",
    "generated_target",
    "pretty_tokens",
    "prompt_ids",
    "target_token_ids",
    "call_causal_lm",
    "gathered_log_probabilities",
    "input_embeddings",
    "run_samples",
    "token_batch",
]


class TokenBatch(NamedTuple):
    """A prompt (and optional continuation) laid out for one teacher-forced pass.

    Attributes:
        input_ids (Tensor): ``(N, P + T)`` prompt then continuation ids.
        attention_mask (Tensor): ``(N, P + T)`` long, 1 on real tokens.
        position_ids (Tensor): ``(N, P + T)``: each real token's index among the real tokens of
            its row (padding anywhere does not shift them).
        predicting (Tensor): ``(N, T)`` the position whose logits predict each scored token: the
            last real token before it.
        valid (Tensor): ``(N, T)`` bool, the scored tokens that exist (not padding).
        prompt_length (int): ``P``.
    """

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    predicting: Tensor
    valid: Tensor
    prompt_length: int


def _check_ids(ids: Any, name: str) -> Tensor:
    if not isinstance(ids, Tensor):
        raise TypeError(f"{name} must be a LongTensor of token ids (N, L), got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2 or ids.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, L) with N >= 1, got {tuple(ids.shape)}")
    return ids


def _check_mask(mask: Optional[Tensor], ids: Tensor, name: str, ids_name: str) -> Tensor:
    if mask is None:
        return torch.ones_like(ids)
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a tensor of 0/1 like {ids_name}, got {type(mask).__name__}")
    mask = mask.unsqueeze(0) if mask.dim() == 1 else mask
    if tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, {ids_name} {tuple(ids.shape)}: they must match")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must hold only 0 (padding) and 1 (real token)")
    return mask.to(dtype=torch.long, device=ids.device)


def token_batch(
    input_ids: Any,
    attention_mask: Optional[Tensor] = None,
    target_ids: Optional[Tensor] = None,
    target_mask: Optional[Tensor] = None,
) -> TokenBatch:
    """Prompt and continuation in one batch; without a continuation the one scored position is
    the next token after each prompt's last real token (left or right padding alike)."""
    prompt = _check_ids(input_ids, "input_ids")
    prompt_mask = _check_mask(attention_mask, prompt, "attention_mask", "input_ids")
    if not bool(prompt_mask.any(1).all()):
        empty = int((~prompt_mask.bool().any(1)).nonzero()[0])
        raise ValueError(f"attention_mask marks no real token in row {empty}: every prompt needs at least one token")
    if target_ids is None:
        if target_mask is not None:
            raise ValueError("target_mask was given without target_ids")
        targets = prompt.new_zeros((prompt.shape[0], 0))
        target_valid = prompt_mask.new_zeros((prompt.shape[0], 0))
    else:
        targets = _check_ids(target_ids, "target_ids").to(prompt.device)
        if targets.shape[0] == 1 and prompt.shape[0] > 1:
            targets = targets.expand(prompt.shape[0], -1)
        if targets.shape[0] != prompt.shape[0]:
            raise ValueError(
                f"target_ids has {targets.shape[0]} rows, input_ids {prompt.shape[0]}: one continuation per prompt"
            )
        target_valid = _check_mask(target_mask, targets, "target_mask", "target_ids")
    ids = torch.cat([prompt, targets], 1)
    mask = torch.cat([prompt_mask, target_valid], 1)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    length = ids.shape[1]
    index = torch.arange(length, device=ids.device).expand_as(ids)
    last_real_up_to = torch.where(mask.bool(), index, torch.full_like(index, -1)).cummax(1).values
    if targets.shape[1]:
        scored = slice(prompt.shape[1], length)
        predicting = last_real_up_to[:, prompt.shape[1] - 1 : length - 1]
        valid = mask[:, scored].bool()
    else:
        predicting = last_real_up_to[:, -1:]
        valid = torch.ones_like(predicting, dtype=torch.bool)
    return TokenBatch(ids, mask, positions, predicting, valid, prompt.shape[1])


def _accepts(module: nn.Module, name: str) -> bool:
    forward = getattr(module, "forward", None)
    try:
        parameters = inspect.signature(forward).parameters if forward is not None else {}
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _logits_of(output: Any, sample: int) -> Tensor:
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if logits is None and isinstance(output, Tensor):
        logits = output
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"posterior sample {sample} returned {type(output).__name__}; a causal LM must return next-token "
            "logits (N, L, V): a tensor, a tuple whose first item is one, or an output with .logits"
        )
    if logits.dim() == 4 and logits.shape[1] == 1:  # some models add a head dimension
        logits = logits[:, 0]
    if logits.dim() != 3:
        raise ValueError(
            f"posterior sample {sample} returned logits of shape {tuple(logits.shape)}, expected (N, L, V)"
        )
    return logits


def call_causal_lm(module: nn.Module, sample: int, batch: TokenBatch, inputs_embeds: Optional[Tensor] = None) -> Tensor:
    """One sample's logits ``(N, L, V)`` on ``batch`` (token ids, or ``inputs_embeds``), with the
    attention mask, position ids where the model takes them, and no key-value cache."""
    kwargs: Dict[str, Any] = {"attention_mask": batch.attention_mask}
    if inputs_embeds is None:
        kwargs["input_ids"] = batch.input_ids
    else:
        kwargs["inputs_embeds"] = inputs_embeds
    if _accepts(module, "position_ids"):
        kwargs["position_ids"] = batch.position_ids
    if _accepts(module, "use_cache"):
        kwargs["use_cache"] = False
    return _logits_of(module(**kwargs), sample)


def input_embeddings(module: nn.Module, sample: int) -> nn.Module:
    """A sample's token-embedding layer (``get_input_embeddings()``, as Hugging Face models have)."""
    getter = getattr(module, "get_input_embeddings", None)
    layer = getter() if callable(getter) else None
    if not isinstance(layer, nn.Module):
        raise TypeError(
            f"posterior sample {sample} ({type(module).__name__}) has no get_input_embeddings(): gradient "
            "attribution moves each sample's token embeddings and needs a model that returns its embedding layer "
            "and accepts inputs_embeds"
        )
    return layer


def gathered_log_probabilities(logits: Tensor, predicting: Tensor) -> Tensor:
    """``log_softmax`` of the logits at the predicting positions: ``(N, T, V)``."""
    index = predicting.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    return torch.log_softmax(logits.gather(1, index), dim=-1)


def run_samples(posterior: Posterior, batch: TokenBatch, embeds: Optional[Sequence[Tensor]] = None) -> Tensor:
    """Every sample's next-token log-probabilities at the scored positions, ``(S, N, T, V)``;
    ``embeds[s]`` replaces sample ``s``'s token embeddings when given."""
    per_sample: List[Tensor] = []
    for s in range(posterior.num_samples):
        with posterior.sampling(s) as module:
            logits = call_causal_lm(module, s, batch, None if embeds is None else embeds[s])
        per_sample.append(gathered_log_probabilities(logits, batch.predicting))
    shapes = {tuple(t.shape) for t in per_sample}
    if len(shapes) > 1:
        raise ValueError(f"the posterior samples return different vocabularies: {sorted(shapes)}")
    return torch.stack(per_sample)


# ----------------------------------------------------------------------------- Captum's LLM inputs


def prompt_ids(model_input: Any, tokenizer: Any, device: torch.device) -> Tuple[Tensor, Optional[Tensor]]:
    """Token ids ``(1, L)`` (and an attention mask, when the input carries one) from what an
    ``InterpretableInput.to_model_input()`` returns: a string, ids, or a tokenizer's mapping."""
    if isinstance(model_input, str):
        return tokenizer.encode(model_input, return_tensors="pt").to(device), None
    if isinstance(model_input, Tensor):
        ids = model_input if model_input.dim() == 2 else model_input.reshape(1, -1)
        return ids.to(device), None
    if isinstance(model_input, Mapping) and "input_ids" in model_input:
        mask = model_input.get("attention_mask")
        return model_input["input_ids"].to(device), None if mask is None else mask.to(device)
    raise TypeError(
        f"the interpretable input gave a {type(model_input).__name__} to the model; expected a string, token ids or "
        "a tokenizer's output with input_ids"
    )


def target_token_ids(target: Any, tokenizer: Any, device: torch.device) -> Tensor:
    """A continuation given as a string (encoded without special tokens, as Captum does) or as ids,
    as a 1-D LongTensor."""
    if isinstance(target, str):
        ids = torch.tensor(tokenizer.encode(target, add_special_tokens=False), dtype=torch.long)
    elif isinstance(target, Tensor):
        ids = target.reshape(-1).long()
    else:
        raise TypeError(f"target must be a string, a tensor of token ids or None, got {type(target).__name__}")
    if ids.numel() == 0:
        raise ValueError("target has no tokens: give at least one, or None to generate the continuation")
    return ids.to(device)


#: The generation arguments the posterior predictive's greedy decoding reads.
GENERATION_ARGUMENTS = ("max_new_tokens", "eos_token_id")


def generated_target(forward: Any, ids: Tensor, mask: Optional[Tensor], tokenizer: Any, gen_args: Any) -> Tensor:
    """The greedy continuation of the posterior predictive (``forward.generate``), 1-D."""
    settings = dict(gen_args or {})
    unknown = sorted(set(settings) - set(GENERATION_ARGUMENTS))
    if unknown:
        raise ValueError(
            f"gen_args {unknown} are not read: the continuation is decoded greedily from the posterior predictive, "
            f"which takes {GENERATION_ARGUMENTS}"
        )
    eos = settings.get("eos_token_id", getattr(tokenizer, "eos_token_id", None))
    targets, valid = forward.generate(ids, mask, max_new_tokens=settings.get("max_new_tokens", 25), eos_token_id=eos)
    return targets[0][valid[0].bool()]


def pretty_tokens(ids: Tensor, tokenizer: Any) -> List[str]:
    """One readable string per token id (decoded one at a time)."""
    return [tokenizer.decode([int(i)]) for i in ids.reshape(-1)]
