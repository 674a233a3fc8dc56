"""A toy language whose causes of uncertainty are known, its word-level tokenizer and tiny GPT-2
models (random initialisation, trained in seconds on the CPU, nothing downloaded).

The language: a prompt of five words; the last one decides the next word (``cat -> sat``,
``dog -> ran``, ``mat -> on``, ``rug -> the``), unless ``"maybe"`` appears anywhere in the prompt:
then the next word is ``"sat"`` or ``"ran"`` at random, so the data itself is ambiguous
(aleatoric). ``"zorp"`` is in the vocabulary but never in the training data, so a prompt holding
it asks the models something they never learned (epistemic). Used by the language-model tests,
docs and tutorial; needs ``transformers`` and ``tokenizers``.
"""

from __future__ import annotations

from typing import Any, List, Sequence

import torch

__all__ = ["AMBIGUOUS", "NEXT", "WORDS", "tiny_gpt2", "toy_sentences", "toy_tokenizer", "train_toy_lm"]

WORDS = ["<pad>", "<unk>", "<eos>", "the", "cat", "dog", "sat", "ran", "on", "mat", "rug", "a", "maybe", "zorp"]


def toy_tokenizer(words: Sequence[str] = WORDS) -> Any:
    """A word-level ``transformers`` tokenizer over ``words`` (split on white space), with
    ``<pad>``, ``<unk>`` and ``<eos>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {word: index for index, word in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def tiny_gpt2(seed: int, vocab_size: int = len(WORDS), dropout: float = 0.0) -> Any:
    """A randomly initialised two-layer GPT-2 with 16-dimensional embeddings, in eval mode
    (``dropout`` for its residual, embedding and attention dropout layers)."""
    from transformers import GPT2Config, GPT2LMHeadModel

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


# ----------------------------------------------------------------------------- a toy language with known causes

#: The next word after each last prompt word (when the prompt holds no "maybe").
NEXT = {"cat": "sat", "dog": "ran", "mat": "on", "rug": "the"}
#: The two equally likely next words of a prompt holding "maybe" (the aleatoric cause).
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


def train_toy_lm(seed: int, steps: int = 400, batch: int = 64) -> Any:
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
