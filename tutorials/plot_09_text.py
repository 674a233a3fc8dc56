"""
Text models: which words make the ensemble unsure?
==================================================

A text classifier maps token ids to embeddings and embeddings to classes. Token ids are
integers, so gradients cannot flow into them: attributions are computed in the *embedding*
space, along a path from the embeddings of a baseline sentence (all padding) to those of the
sentence, and summed over the embedding dimension to give one value per token.

In an ensemble every member has its own embedding layer. The uncertainty depends on all of them,
so all of them must move along the path together. This tutorial

1. generates a small, seeded, sentiment-like data set of token sequences with ambiguous
   sentences (aleatoric uncertainty) and words never seen in training (epistemic uncertainty),
2. trains a deep ensemble of five bag-of-embeddings classifiers for a few epochs,
3. shows that Captum's ``LayerIntegratedGradients`` on one member's embedding explains only
   part of the uncertainty, and
4. explains the most uncertain test sentences per token with
   :class:`~captum_uncertainty.LayerUncertaintyIntegratedGradients` (``sum_embedding=True``),
   split into total, aleatoric and epistemic uncertainty.

It runs in a few seconds on a CPU.
"""

# %%
# A synthetic sentiment data set
# ------------------------------
# Sentences of 4 to 8 words from a 24-word vocabulary, padded with ``<pad>`` (id 0) to 8
# tokens. The label is positive when the sentence has more positive than negative words,
# negative when it has fewer, and a coin flip on a tie: tied sentences are genuinely ambiguous.
# Two words, "zany" and "quirky", never occur in the training sentences, so the members'
# embeddings of them stay at their (different) random initialisations.

import matplotlib.pyplot as plt
import torch
from captum.attr import LayerIntegratedGradients
from torch import nn

from captum_uncertainty import Categorical, LayerUncertaintyIntegratedGradients, UncertaintyForward

POSITIVE = ["good", "great", "superb", "lovely", "moving"]
NEGATIVE = ["bad", "awful", "boring", "poor", "dull"]
NEUTRAL = ["the", "a", "movie", "plot", "actor", "film", "was", "is", "and", "this", "very", "ending"]
UNSEEN = ["zany", "quirky"]
WORDS = ["<pad>"] + POSITIVE + NEGATIVE + NEUTRAL + UNSEEN
INDEX = {word: i for i, word in enumerate(WORDS)}
LENGTH = 8


def make_sentences(count: int, generator: torch.Generator, unseen_rate: float = 0.0):
    """Token ids ``(count, LENGTH)`` and labels (1 = positive, 0 = negative)."""
    pools = [POSITIVE, NEGATIVE, NEUTRAL, NEUTRAL, UNSEEN]
    width = max(len(pool) for pool in pools)
    table = torch.tensor([[INDEX[w] for w in pool] + [0] * (width - len(pool)) for pool in pools])
    sizes = torch.tensor([len(pool) for pool in pools])
    pool = torch.randint(0, 4, (count, LENGTH), generator=generator)
    pool[torch.rand(count, LENGTH, generator=generator) < unseen_rate] = len(pools) - 1
    choice = (torch.rand(count, LENGTH, generator=generator) * sizes[pool]).long()
    tokens = table[pool, choice]
    lengths = torch.randint(4, LENGTH + 1, (count, 1), generator=generator)
    tokens[torch.arange(LENGTH) >= lengths] = 0  # pad after the last word
    ids = {name: torch.tensor([INDEX[w] for w in words]) for name, words in (("+", POSITIVE), ("-", NEGATIVE))}
    score = torch.isin(tokens, ids["+"]).sum(1) - torch.isin(tokens, ids["-"]).sum(1)
    coin = torch.randint(0, 2, (count,), generator=generator)
    return tokens, torch.where(score == 0, coin, (score > 0).long())


generator = torch.Generator().manual_seed(0)
train_tokens, train_labels = make_sentences(2000, generator)
test_tokens, test_labels = make_sentences(300, generator, unseen_rate=0.15)
print(f"{len(train_tokens)} training and {len(test_tokens)} test sentences, vocabulary of {len(WORDS)} words")

# %%
# A deep ensemble of bag-of-embeddings classifiers
# ------------------------------------------------
# Each member embeds the tokens (``padding_idx=0``: the pad embedding is zero), averages the
# eight embeddings and classifies the average with a small MLP. Five members from five seeds,
# each trained for three epochs with Adam. They return two class logits per sentence, which
# ``likelihood=Categorical()`` declares: two numbers per input could as well be a regressor's
# mean and noise head, so the forward does not read them without a declaration.


class BagOfEmbeddings(nn.Module):
    def __init__(self, vocabulary: int, dim: int = 8, classes: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocabulary, dim, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(tokens).mean(1))


def train_member(seed: int, epochs: int = 3) -> BagOfEmbeddings:
    torch.manual_seed(seed)
    model = BagOfEmbeddings(len(WORDS))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.03)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(train_tokens), generator=order).split(100):
            loss = nn.functional.cross_entropy(model(train_tokens[batch]), train_labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


members = [train_member(seed) for seed in range(5)]
uf = UncertaintyForward(members, measure="total", likelihood=Categorical())
with torch.no_grad():
    accuracy = (uf.predictive(test_tokens).mean(0).argmax(1) == test_labels).float().mean()
print(f"ensemble test accuracy: {float(accuracy):.3f} (ties are coin flips, so 1.0 is out of reach)")

# %%
# The most uncertain test sentences
# ---------------------------------
# ``uf.decompose`` gives total, aleatoric and epistemic uncertainty (nats; at most
# :math:`\log 2 \approx 0.69` for two classes) of every test sentence in one pass.


def sentence(ids: torch.Tensor) -> str:
    return " ".join(WORDS[int(i)] for i in ids if int(i) != 0)


with torch.no_grad():
    decomposition = uf.decompose(test_tokens)
top = decomposition.total.argsort(descending=True)[:3]
# and the sentence whose uncertainty is most epistemic (the members disagree most)
most_epistemic = decomposition.epistemic.argmax()
if most_epistemic not in top:
    top = torch.cat([top, most_epistemic.view(1)])
for i in top.tolist():
    print(
        f"total {float(decomposition.total[i]):.3f}  aleatoric {float(decomposition.aleatoric[i]):.3f}  "
        f"epistemic {float(decomposition.epistemic[i]):.3f}  | {sentence(test_tokens[i])}"
    )

# %%
# One member's embedding is not enough
# ------------------------------------
# Captum's ``LayerIntegratedGradients(uf, members[0].emb)`` replaces only member 0's embeddings
# along the path; the other four members keep seeing the full sentence. The attributions then
# explain only the part of ``U(x) - U(pad)`` that runs through member 0, which the convergence
# delta (``sum(attributions) - (U(x) - U(pad))``, zero for a complete attribution) reveals.
# :class:`~captum_uncertainty.LayerUncertaintyIntegratedGradients` moves every member's
# embedding together, so its attributions add up to the whole difference.

inputs = test_tokens[top]
pad = torch.zeros_like(inputs)
with torch.no_grad():
    print(f"uncertainty of the all-padding baseline: {float(uf(pad[:1])):.3f} nats")
_, one_member_delta = LayerIntegratedGradients(uf, members[0].emb).attribute(
    inputs, baselines=pad, n_steps=32, return_convergence_delta=True
)
lig = LayerUncertaintyIntegratedGradients(uf, lambda member: member.emb)
_, all_members_delta = lig.attribute(inputs, baselines=pad, n_steps=32, return_convergence_delta=True)
print("convergence delta, member 0's embedding only:", [round(float(d), 4) for d in one_member_delta])
print("convergence delta, every member's embedding: ", [round(float(d), 6) for d in all_members_delta])

# %%
# Token attributions of total, aleatoric and epistemic uncertainty
# ----------------------------------------------------------------
# ``decompose=True`` returns the three maps from the same forward passes (epistemic = total -
# aleatoric) and ``sum_embedding=True`` sums each token's embedding dimensions: one value per
# token. A positive value means the word raises that uncertainty relative to an all-padding
# sentence, a negative value that it lowers it. Padding positions have identical embeddings at
# both ends of the path, so their attributions are exactly zero.

maps, deltas = lig.attribute(
    inputs, baselines=pad, n_steps=32, decompose=True, sum_embedding=True, return_convergence_delta=True
)
print(f"largest |delta| of the three measures: {float(torch.stack(deltas).abs().max()):.2e}")
for k in range(len(inputs)):
    words = [WORDS[int(i)] for i in inputs[k] if int(i) != 0]
    print(f"\n{sentence(inputs[k])}")
    print(f"{'':>10}" + "".join(f"{w:>9}" for w in words))
    for measure in ("total", "aleatoric", "epistemic"):
        row = maps.select(measure)[k, : len(words)]
        print(f"{measure:>10}" + "".join(f"{float(v):9.3f}" for v in row))

# %%
# The same numbers as heat maps, one panel per sentence (red raises, blue lowers the measure).
# Each panel shares one colour scale across its three rows.

fig, axes = plt.subplots(len(inputs), 1, figsize=(7, 1.3 * len(inputs)))
for k, ax in enumerate(axes):
    words = [WORDS[int(i)] for i in inputs[k] if int(i) != 0]
    grid = torch.stack([maps.select(m)[k, : len(words)] for m in ("total", "aleatoric", "epistemic")])
    limit = max(float(grid.abs().max()), 1e-12)
    ax.imshow(grid.detach().numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(words)), words, fontsize=8)
    ax.set_yticks(range(3), ["total", "aleatoric", "epistemic"], fontsize=7)
for ax in axes[:-1]:
    ax.tick_params(labelbottom=True)
fig.tight_layout()

# %%
# Reading the result
# ------------------
# The all-padding baseline is itself almost maximally uncertain (printed above), so the maps
# explain how each word *changes* the uncertainty from there. In a sentence that balances a
# positive and a negative word the two get large attributions of opposite sign that nearly
# cancel, mostly in the aleatoric row: along the path the members agree, and the sentence ends
# as ambiguous as it started. Where a sentence contains a word never seen in training ("zany",
# "quirky"), each member reads that word through its own random embedding, they disagree, and
# the epistemic row marks it (often while its aleatoric value is negative: each member alone
# becomes surer, the ensemble does not). Padding positions get nothing, and every row sums, up
# to the printed delta, to the change of its measure between the baseline and the sentence.
