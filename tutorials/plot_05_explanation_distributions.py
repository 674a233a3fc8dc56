"""
Explanation distributions with MC dropout
=========================================

A Bayesian model does not give one explanation but one per posterior sample. Following
arXiv 2403.17224, :class:`~captum_uncertainty.ExplanationDistribution` explains each MC-dropout
subnetwork's score for the class predicted by the posterior mean and summarises the maps by
their mean, standard deviation and coefficient of variation: where the std is large, the
explanation itself is uncertain.
"""

# %%
import matplotlib.pyplot as plt
import torch
from captum.attr import IntegratedGradients

from captum_uncertainty import ExplanationDistribution, MCDropout, UncertaintyForward
from captum_uncertainty.data import load_mnist, train_ensemble

data = load_mnist(test_size=1000, seed=0)
model = train_ensemble(n_members=1, data=data, epochs=2, seed=0, progress=False)[0]

# %%
# Twenty dropout masks, sampled once and reused by every call (and every IG path point).

uf = UncertaintyForward(MCDropout(model, num_samples=20, seed=0), measure="epistemic")
with torch.no_grad():
    x = data.x_test[uf(data.x_test).argsort(descending=True)[:3]]

result = ExplanationDistribution(uf, IntegratedGradients).attribute(x, n_steps=16)
print("per-sample maps:", tuple(result.samples.shape), "targets:", result.target.tolist())

fig, axes = plt.subplots(len(x), 4, figsize=(8, 2 * len(x)))
for row in range(len(x)):
    panels = [x[row, 0], result.mean[row, 0], result.std[row, 0], result.cv[row, 0]]
    for col, (panel, title) in enumerate(zip(panels, ["digit", "mean", "std", "CV"])):
        axes[row, col].imshow(panel, cmap="gray" if col == 0 else "inferno")
        axes[row, col].axis("off")
        if row == 0:
            axes[row, col].set_title(title, fontsize=9)
fig.tight_layout()
plt.show()

# %%
# Do the summary maps point at the pixels the prediction needs?
# -------------------------------------------------------------
# The paper scores a summary map with pixel deletion and insertion (Petsiuk et al.): delete the
# top pixels of the map (set them to 0, the MNIST background) and follow the posterior-mean
# probability of the predicted class; or insert them into a blurred copy. A map that finds the
# evidence gives a low deletion AUC and a high insertion AUC. A random map is the reference.

from captum_uncertainty.metrics import insertion_deletion

random_map = torch.rand(result.mean.shape, generator=torch.Generator().manual_seed(0))
print(f"{'map':>6} {'deletion AUC (lower is better)':>31} {'insertion AUC (higher is better)':>33}")
for name, summary in [("mean", result.mean), ("std", result.std), ("random", random_map)]:
    deletion = insertion_deletion(uf, x, summary, mode="deletion", baseline=0.0)
    insertion = insertion_deletion(uf, x, summary, mode="insertion", baseline="blur")
    print(f"{name:>6} {deletion.auc:>31.3f} {insertion.auc:>33.3f}")
