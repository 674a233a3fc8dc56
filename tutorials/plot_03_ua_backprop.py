"""
UA-Backprop and its z -> x options
==================================

UA-Backprop (Wang et al., 2023) passes the uncertainty backwards through the softmax
probabilities and the logits of every ensemble member to the pixels. Its maps are
non-negative and *complete*: each sums to the uncertainty it explains. The last step, from a
logit to the pixels, can use FullGrad (the paper's default), the plain gradient, input times
gradient, or integrated gradients. This tutorial compares them on the most epistemically
uncertain test digits and shows the aleatoric / epistemic split from one call.
"""

# %%
# The ensemble and the digits to explain
# --------------------------------------

import matplotlib.pyplot as plt
import torch

from captum_uncertainty import UABackprop, UncertaintyForward
from captum_uncertainty.data import load_mnist, train_ensemble

data = load_mnist(test_size=1000, seed=0)
members = train_ensemble(n_members=5, data=data, epochs=2, seed=0, progress=False)
uf = UncertaintyForward(members, measure="epistemic")
with torch.no_grad():
    x = data.x_test[uf(data.x_test).argsort(descending=True)[:4]]
    u = uf(x)

# %%
# Four z -> x options, one map each
# ---------------------------------
# The temperatures default to the paper's values for grayscale images (tau1 = 0.08,
# tau2 = 0.3). Whatever the path, every map sums to the epistemic uncertainty of its digit.

ua = UABackprop(uf)
paths = ["fullgrad", "grad", "inputgrad", "integrated_gradients"]
maps = {path: ua.attribute(x, path=path, n_steps=16) for path in paths}
for path, m in maps.items():
    error = float((m.flatten(1).sum(1) - u).abs().max())
    print(f"{path:>22}: largest |sum(map) - U(x)| = {error:.2e}")

fig, axes = plt.subplots(len(x), len(paths) + 1, figsize=(2 * (len(paths) + 1), 2 * len(x)))
for row in range(len(x)):
    axes[row, 0].imshow(x[row, 0], cmap="gray")
    axes[row, 0].set_title(f"U_e = {float(u[row]):.3f}", fontsize=8)
    for col, path in enumerate(paths, start=1):
        axes[row, col].imshow(maps[path][row, 0], cmap="inferno")
        if row == 0:
            axes[row, col].set_title(path, fontsize=8)
for axis in axes.flat:
    axis.axis("off")
fig.tight_layout()

# %%
# Aleatoric and epistemic maps from the same backward passes
# ----------------------------------------------------------
# Only the per-class terms of Eq. 4 differ between the measures, so ``decompose=True``
# returns all three maps for about the cost of one. Total = aleatoric + epistemic, pixel by
# pixel.

parts = ua.attribute(x, decompose=True)
print("max |total - (aleatoric + epistemic)|:", float((parts.total - parts.aleatoric - parts.epistemic).abs().max()))
fig, axes = plt.subplots(len(x), 3, figsize=(6, 2 * len(x)))
for row in range(len(x)):
    for col, name in enumerate(["total", "aleatoric", "epistemic"]):
        axes[row, col].imshow(parts.select(name)[row, 0], cmap="inferno")
        axes[row, col].axis("off")
        if row == 0:
            axes[row, col].set_title(name, fontsize=9)
fig.tight_layout()
plt.show()
