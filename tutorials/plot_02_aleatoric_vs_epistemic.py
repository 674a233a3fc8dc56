"""
Aleatoric vs epistemic uncertainty
==================================

The total uncertainty of a Bayesian classifier splits into two parts (see :doc:`/index`):

* **aleatoric** :math:`U_a = \\frac1S\\sum_s H[p_s]`: every posterior sample is unsure by itself.
  This is expected where the *input* is ambiguous, e.g. a digit that looks like two classes.
* **epistemic** :math:`U_e = H[\\frac1S\\sum_s p_s] - U_a`: the samples are individually sure
  but *disagree*. This is expected where the *training data* did not pin the model down, e.g.
  on inputs unlike any training digit.

Those are expectations, not guarantees: an ensemble may well be confidently wrong on an
out-of-distribution input. This tutorial builds inputs of both kinds, measures the two parts on
each group, shows the members' predictions, and attributes the aleatoric and the epistemic part
separately with Captum's ``IntegratedGradients``. All statements about the outcome are printed
from the run itself.
"""

# %%
# The ensemble and four groups of inputs
# --------------------------------------
# The same cached ensemble as in :doc:`plot_01_quickstart`.

import matplotlib.pyplot as plt
import torch
from captum.attr import IntegratedGradients
from captum.attr import visualization as viz

from captum_uncertainty import UncertaintyForward
from captum_uncertainty.data import load_mnist, train_ensemble
from captum_uncertainty.visualization import plot_posterior_predictive

torch.manual_seed(0)
data = load_mnist(test_size=1000, seed=0)
members = train_ensemble(n_members=5, data=data, epochs=2, seed=0, progress=False)
uf = UncertaintyForward(members, measure="total")

# %%
# * **clean**: test digits as they are;
# * **blends**: ``0.5 * a + 0.5 * b`` of two test digits with different labels, an ambiguous
#   input built from in-distribution strokes;
# * **inverted**: ``1 - x``, white digits on a black-ink background;
# * **rotated**: test digits turned by 90 degrees;
# * **noise**: uniform random pixels.

n = 200
generator = torch.Generator().manual_seed(0)
x, y = data.x_test, data.y_test
first = torch.randperm(len(x), generator=generator)[:n]
second = torch.randperm(len(x), generator=generator)[:n]
different = y[first] != y[second]
first, second = first[different], second[different]

groups = {
    "clean": x[first],
    "blends": 0.5 * x[first] + 0.5 * x[second],
    "inverted": 1.0 - x[first],
    "rotated": torch.rot90(x[first], k=1, dims=(2, 3)),
    "noise": torch.rand(len(first), 1, 28, 28, generator=generator),
}

# %%
# Mean uncertainty per group
# --------------------------
# One forward pass per group gives all three measures (in nats).

means = {}
print(f"{'group':>9} {'n':>4} {'total':>7} {'aleatoric':>9} {'epistemic':>9} {'epist./total':>12}")
with torch.no_grad():
    for name, inputs in groups.items():
        d = uf.decompose(inputs)
        means[name] = {m: float(d.select(m).mean()) for m in ("total", "aleatoric", "epistemic")}
        share = means[name]["epistemic"] / max(means[name]["total"], 1e-12)
        print(
            f"{name:>9} {len(inputs):>4} {means[name]['total']:7.3f} {means[name]['aleatoric']:9.3f} "
            f"{means[name]['epistemic']:9.3f} {share:12.2f}"
        )

# %%
# What the table says, read from the numbers above rather than assumed. Entropy of single
# members is usually the larger part everywhere, so the informative comparison is how each
# group's *share* of epistemic uncertainty compares with that of clean digits.


def share(m):
    return m["epistemic"] / max(m["total"], 1e-12)


for name in ("blends", "inverted", "rotated", "noise"):
    m = means[name]
    print(
        f"{name:>9}: total {m['total'] / max(means['clean']['total'], 1e-12):.1f}x that of clean digits, "
        f"aleatoric {m['aleatoric'] / max(means['clean']['aleatoric'], 1e-12):.1f}x, "
        f"epistemic {m['epistemic'] / max(means['clean']['epistemic'], 1e-12):.1f}x; "
        f"epistemic share {share(m):.2f} vs {share(means['clean']):.2f} for clean digits"
    )

# %%
# The members' predictions
# ------------------------
# The most uncertain input of each group and the class probabilities of the five members (dots)
# around their mean (bars). Members that agree on a flat distribution produce aleatoric
# uncertainty; members that each pick a different class produce epistemic uncertainty.

examples, names = [], []
with torch.no_grad():
    for name, inputs in groups.items():
        examples.append(inputs[uf(inputs).argmax()])
        names.append(name)
examples = torch.stack(examples)
with torch.no_grad():
    decomposition = uf.decompose(examples)
    predictive = uf.predictive(examples)
fig = plot_posterior_predictive(
    examples, predictive, {"tot": decomposition.total, "ale": decomposition.aleatoric, "epi": decomposition.epistemic}
)
for ax, name in zip(fig.axes[: len(names)], names):
    ax.set_title(f"{name}\n" + ax.get_title(), fontsize=7)

# %%
# Attributing each part separately
# --------------------------------
# ``uf.with_measure("aleatoric")`` and ``uf.with_measure("epistemic")`` are forward functions
# over the same ensemble, so Captum's ``IntegratedGradients`` attributes each part on its own.
# Integrated gradients is linear in the explained function: with the same baseline and path,
# the total map is the sum of the aleatoric and epistemic maps (checked below).
#
# As baseline we use, for each example, the least uncertain clean test digit, so the maps
# explain ``U(x) - U(x')`` relative to an input the ensemble is sure about.

with torch.no_grad():
    most_certain = x[uf(x).argmin()]
baselines = most_certain.expand_as(examples).clone()

maps = {}
for measure in ("total", "aleatoric", "epistemic"):
    forward = uf.with_measure(measure)
    maps[measure] = IntegratedGradients(forward).attribute(examples, baselines=baselines, n_steps=32)

gap = (maps["total"] - maps["aleatoric"] - maps["epistemic"]).abs().max()
print(f"largest |total - aleatoric - epistemic| over all pixels: {float(gap):.2e}")
with torch.no_grad():
    for measure in ("aleatoric", "epistemic"):
        forward = uf.with_measure(measure)
        explained = forward(examples) - forward(baselines)
        sums = maps[measure].flatten(1).sum(1)
        print(f"{measure:>9}: map sums {[round(float(v), 3) for v in sums]}")
        print(f"{'':>9}  U(x)-U(x') {[round(float(v), 3) for v in explained]}")

# %%
# Red pixels raise the measure relative to the baseline, green ones lower it. Each map is
# scaled on its own; compare the sums printed above for magnitudes. The straight path from the
# baseline also removes the baseline's own strokes, so they appear in the maps too.


def hwc(t: torch.Tensor):
    return t.detach().permute(1, 2, 0).numpy()


fig, axes = plt.subplots(len(names), 3, figsize=(5.4, 1.8 * len(names)))
for k, name in enumerate(names):
    axes[k, 0].imshow(examples[k, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    axes[k, 0].set_title(name, fontsize=8)
    axes[k, 0].axis("off")
    for c, measure in enumerate(("aleatoric", "epistemic"), start=1):
        attribution = hwc(maps[measure][k])
        if abs(attribution).max() > 0:
            viz.visualize_image_attr(
                attribution,
                hwc(examples[k]),
                method="blended_heat_map",
                sign="all",
                plt_fig_axis=(fig, axes[k, c]),
                use_pyplot=False,
                title=measure,
            )
        else:
            axes[k, c].set_title(f"{measure}: all zero", fontsize=8)
            axes[k, c].axis("off")
fig.tight_layout()

# %%
# Reading the result
# ------------------
# Compare each group's row of the table with its maps. Where a group's uncertainty grew mostly
# in its aleatoric part (the members agree that the input is ambiguous), the aleatoric map
# marks the strokes responsible; where its epistemic share grew (the members disagree), the
# epistemic map marks what they disagree about. A small ensemble trained for a few epochs is
# unsure about many inputs in both ways, so the split is a matter of degree. If an
# out-of-distribution group showed *low* total uncertainty, the ensemble would be confidently
# wrong there, and no uncertainty attribution could point at what the model does not register:
# these maps explain the model's uncertainty, not the true novelty of the input.
