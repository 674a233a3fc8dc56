"""
Quickstart: why is the ensemble unsure?
=======================================

A deep ensemble gives one probability vector per member. Their disagreement and their own
hesitation add up to the *predictive uncertainty* of the ensemble. This tutorial

1. trains a small deep ensemble on the MNIST digits bundled with the package (once; later runs
   load it from the cache in ``~/.cache/captum_uncertainty``),
2. wraps it in :class:`~captum_uncertainty.UncertaintyForward`, which returns one uncertainty
   value per input and is an ordinary Captum forward function,
3. finds the test digits the ensemble is most unsure about, and
4. explains their uncertainty with Captum's own ``IntegratedGradients`` and ``NoiseTunnel``
   (SmoothGrad), drawn with :func:`~captum_uncertainty.visualization.plot_attribution` (a colour bar in nats).
"""

# %%
# A small deep ensemble
# ---------------------
# :func:`~captum_uncertainty.data.load_mnist` returns 4,000 training and 1,000 test digits as
# ``(N, 1, 28, 28)`` tensors in [0, 1]; :func:`~captum_uncertainty.data.train_ensemble` trains
# ``n_members`` copies of a small CNN from different seeds.

import matplotlib.pyplot as plt
import torch
from captum.attr import IntegratedGradients, NoiseTunnel

from captum_uncertainty import UncertaintyForward
from captum_uncertainty.data import accuracy, load_mnist, train_ensemble
from captum_uncertainty.visualization import plot_attribution

torch.manual_seed(0)
data = load_mnist(test_size=1000, seed=0)
members = train_ensemble(n_members=5, data=data, epochs=2, seed=0, progress=False)
print(f"{len(members)} members, ensemble test accuracy: {accuracy(members, data.x_test, data.y_test):.3f}")

# %%
# Uncertainty as a Captum forward function
# ----------------------------------------
# ``UncertaintyForward(members, measure=...)`` computes, for each input, one of
#
# * ``"total"``: the entropy of the averaged prediction, :math:`H[\frac1S\sum_s p_s]`,
# * ``"aleatoric"``: the average entropy of the members, :math:`\frac1S\sum_s H[p_s]`,
# * ``"epistemic"``: their difference, the mutual information (member disagreement).
#
# ``decompose`` returns all three from one forward pass. We rank the test digits by total
# uncertainty (in nats; the maximum for 10 classes is :math:`\log 10 \approx 2.30`).

uf = UncertaintyForward(members, measure="total")
with torch.no_grad():
    decomposition = uf.decompose(data.x_test)
    predicted = uf.predictive(data.x_test).mean(0).argmax(1)

top = decomposition.total.argsort(descending=True)[:4]
print(f"{'index':>5} {'label':>5} {'pred':>4} {'total':>6} {'aleat.':>6} {'epist.':>6}")
for i in top.tolist():
    print(
        f"{i:>5} {int(data.y_test[i]):>5} {int(predicted[i]):>4} {float(decomposition.total[i]):6.3f} "
        f"{float(decomposition.aleatoric[i]):6.3f} {float(decomposition.epistemic[i]):6.3f}"
    )
print(f"median total uncertainty over the test set: {float(decomposition.total.median()):.4f}")

# %%
# Choosing a baseline
# -------------------
# Integrated gradients attributes the *difference* ``U(x) - U(x')`` between the input and a
# baseline ``x'`` (completeness). For uncertainty the usual black baseline is a poor choice: an
# empty image is itself an input the ensemble knows nothing about. Let us look at its
# uncertainty.

black = torch.zeros(1, 1, 28, 28)
with torch.no_grad():
    print(f"uncertainty of a black image: {float(uf(black)):.3f} nats")

# %%
# A baseline the ensemble is *sure* about explains what makes ``x`` uncertain relative to a
# certain digit. For each uncertain digit we take, as its baseline, the test digit of the same
# predicted class with the lowest total uncertainty.

inputs = data.x_test[top]
baseline_index = []
for i in top.tolist():
    same_class = (predicted == predicted[i]).nonzero().flatten()
    baseline_index.append(int(same_class[decomposition.total[same_class].argmin()]))
baselines = data.x_test[baseline_index]
with torch.no_grad():
    print("baseline uncertainties:", [round(float(u), 4) for u in uf(baselines)])

# %%
# Integrated gradients and SmoothGrad, straight from Captum
# ---------------------------------------------------------
# ``UncertaintyForward`` returns one scalar per input, so no ``target`` is needed.

ig = IntegratedGradients(uf)
ig_maps, delta = ig.attribute(inputs, baselines=baselines, n_steps=32, return_convergence_delta=True)
with torch.no_grad():
    explained = uf(inputs) - uf(baselines)
for k in range(len(top)):
    print(
        f"digit {int(top[k])}: sum of IG map {float(ig_maps[k].sum()):.4f}, "
        f"U(x) - U(x') = {float(explained[k]):.4f}, convergence delta {float(delta[k]):.1e}"
    )

smoothgrad = NoiseTunnel(IntegratedGradients(uf))
sg_maps = smoothgrad.attribute(inputs, baselines=baselines, n_steps=16, nt_type="smoothgrad", nt_samples=8, stdevs=0.1)

# %%
# :func:`~captum_uncertainty.visualization.plot_attribution` draws a map over its image with a colour
# bar in the uncertainty's units (nats) and limits at the map's own range, so maps of different
# digits are comparable in size, not only in shape. Red pixels raise the uncertainty relative to
# the baseline, blue ones lower it.

fig, axes = plt.subplots(len(top), 4, figsize=(9.5, 1.9 * len(top)))
for k in range(len(top)):
    for ax, image, title in (
        (axes[k, 0], inputs[k], f"#{int(top[k])}: U={float(decomposition.total[top[k]]):.2f}"),
        (axes[k, 1], baselines[k], "baseline"),
    ):
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    plot_attribution(ig_maps[k], inputs[k], units="nats", ax=axes[k, 2], title="IG")
    plot_attribution(sg_maps[k], inputs[k], units="nats", ax=axes[k, 3], title="SmoothGrad IG")
fig.tight_layout()

# %%
# Next steps
# ----------
# * :doc:`plot_02_aleatoric_vs_epistemic` separates the two kinds of uncertainty and attributes
#   each of them.
# * Any other Captum method works the same way on ``uf``: ``Saliency``, ``Lime``,
#   ``KernelShap`` (with a ``feature_mask``), ``Occlusion``, ...
# * The package's own methods (see :doc:`/methods`) add baselines and paths designed for
#   uncertainty.
