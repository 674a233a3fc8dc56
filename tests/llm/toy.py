"""A toy language, its word-level tokenizer and tiny GPT-2 models (random initialisation, no download)."""

from __future__ import annotations

from typing import List, Sequence

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

WORDS = ["<pad>", "<unk>", "<eos>", "the", "cat", "dog", "sat", "ran", "on", "mat", "rug", "a", "maybe", "zorp"]


def toy_tokenizer(words: Sequence[str] = WORDS) -> PreTrainedTokenizerFast:
    vocabulary = {word: index for index, word in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def tiny_gpt2(seed: int, vocab_size: int = len(WORDS), dropout: float = 0.0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=32,
        n_embd=16,
        n_layer=2,
        n_head=2,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=2,
        eos_token_id=2,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def tiny_ensemble(count: int = 3) -> List[GPT2LMHeadModel]:
    return [tiny_gpt2(seed) for seed in range(count)]


# ----------------------------------------------------------------------------- a toy language with known causes

#: the last prompt word decides the next word ...
NEXT = {"cat": "sat", "dog": "ran", "mat": "on", "rug": "the"}
#: ... unless "maybe" appears anywhere in the prompt: then the next word is either of these (aleatoric)
AMBIGUOUS = ("sat", "ran")
FILLERS = ("the", "a", "on", "cat", "dog", "mat", "rug")
PROMPT_LENGTH = 5


def toy_sentences(count: int, generator: torch.Generator, ambiguous_share: float = 0.3) -> List[List[str]]:
    """Prompts of 5 words and their next word; "zorp" never appears (it is the unseen token)."""
    def pick(options: Sequence[str]) -> str:
        return options[int(torch.randint(len(options), (1,), generator=generator))]

    sentences = []
    for _ in range(count):
        words = [pick(FILLERS) for _ in range(PROMPT_LENGTH - 1)] + [pick(tuple(NEXT))]
        if float(torch.rand((), generator=generator)) < ambiguous_share:
            words[int(torch.randint(PROMPT_LENGTH - 1, (1,), generator=generator))] = "maybe"
            words.append(pick(AMBIGUOUS))
        else:
            words.append(NEXT[words[-1]])
        sentences.append(words)
    return sentences


def train_toy_lm(seed: int, steps: int = 300, batch: int = 64) -> GPT2LMHeadModel:
    """A tiny GPT-2 trained on the toy language (next-word loss on the last position)."""
    tokenizer = toy_tokenizer()
    model = tiny_gpt2(seed)
    model.train()
    generator = torch.Generator().manual_seed(1000 + seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        ids = torch.tensor([tokenizer.convert_tokens_to_ids(s) for s in toy_sentences(batch, generator)])
        logits = model(input_ids=ids[:, :-1]).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, ids[:, -1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
