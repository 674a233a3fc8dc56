"""
Tabular uncertainty attribution
===============================

Uncertainty attribution is not only for images. This tutorial trains a deep ensemble of five
small MLPs on scikit-learn's bundled breast-cancer features (30 per patient), finds the
patients the ensemble is most unsure about, and asks which *features* make it unsure: with
Integrated Gradients of the uncertainty (signed, complete against a baseline patient) and with
UA-Backprop (a non-negative distribution of the uncertainty over the features). A deletion
test then checks the maps: replacing the top-ranked features by the training mean should lower
the uncertainty faster than a random order.
"""

# %%
# A deep ensemble of MLPs
# -----------------------
# Features are standardised with the training statistics; each member sees the same data
# with its own initialisation and batch order. Each member returns two class logits (malignant,
# benign) per patient, declared with ``likelihood=Categorical()``: two numbers per input
# could as well be a regressor's mean and noise head, so the forward does not guess.

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

from captum_uncertainty import Categorical, UABackprop, UncertaintyForward, UncertaintyIntegratedGradients
from captum_uncertainty.metrics import uncertainty_reduction_curve
from captum_uncertainty.visualization import plot_attribution_summary

data = load_breast_cancer()
generator = torch.Generator().manual_seed(0)
order = torch.randperm(len(data.target), generator=generator)
features = torch.tensor(data.data, dtype=torch.float32)[order]
labels = torch.tensor(data.target)[order]
x_train, y_train, x_test = features[:400], labels[:400], features[400:]
mean, std = x_train.mean(0), x_train.std(0)
x_train, x_test = (x_train - mean) / std, (x_test - mean) / std


def train_member(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 2))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        for batch in torch.randperm(400).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimiser.step()
    return model.eval()


members = [train_member(seed) for seed in range(5)]
uf = UncertaintyForward(members, measure="total", likelihood=Categorical())
with torch.no_grad():
    u_test = uf(x_test)
x = x_test[u_test.argsort(descending=True)[:5]]  # the five most uncertain patients
print("total uncertainty of the five patients:", uf(x).detach().numpy().round(3))

# %%
# Integrated Gradients of the uncertainty
# ---------------------------------------
# The baseline is the average training patient (zero after standardisation). The attributions
# are signed and sum to ``U(x) - U(baseline)``: the convergence delta is the quadrature error.

ig = UncertaintyIntegratedGradients(uf)
attributions, delta = ig.attribute(x, baselines=0.0, n_steps=64, return_convergence_delta=True)
print("largest |convergence delta|:", float(delta.abs().max()))

# %%
# UA-Backprop on features
# -----------------------
# On inputs of any shape UA-Backprop's softmax over "pixels" runs over the features. The paper's
# temperatures are for images, so ``tau1`` and ``tau2`` are given explicitly; the maps are
# non-negative and each sums to the patient's uncertainty.

maps = UABackprop(uf).attribute(x, path="integrated_gradients", baselines=0.0, tau1=0.1, tau2=0.5, n_steps=32)
print("map sums:", maps.sum(1).numpy().round(3))

names = [name.replace(" ", "\n", 1) for name in data.feature_names]
top = maps.mean(0).argsort(descending=True)[:8]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].bar(range(8), attributions.mean(0)[top].detach().numpy())
axes[0].set_title("IG of total uncertainty (mean of 5 patients)")
axes[1].bar(range(8), maps.mean(0)[top].numpy())
axes[1].set_title("UA-Backprop (mean of 5 patients)")
for axis in axes:
    axis.set_xticks(range(8))
    axis.set_xticklabels([names[i] for i in top], rotation=60, fontsize=7)
fig.tight_layout()

# %%
# Which features drive the uncertainty across the test set?
# ---------------------------------------------------------
# The same IG on every test patient, split into aleatoric and epistemic parts from one pass
# (``decompose=True``), summarised per feature by
# :func:`~captum_uncertainty.visualization.plot_attribution_summary`: the distribution of each
# feature's attributions over the patients, features sorted by mean absolute attribution.

everyone = ig.attribute(x_test, baselines=0.0, n_steps=32, decompose=True)
fig = plot_attribution_summary(
    {"aleatoric": everyone.aleatoric.detach(), "epistemic": everyone.epistemic.detach()},
    list(data.feature_names),
    max_features=10,
    units="nats",
)

# %%
# Does removing the top features remove the uncertainty?
# ------------------------------------------------------
# Perez et al.'s uncertainty reduction curve on features: the top 20% of the features are
# replaced, one at a time in map order, by the training mean (zero here), and the median
# largest relative reduction of the uncertainty is reported. A random order is the floor.

random_maps = torch.rand(x.shape, generator=generator)
for name, candidate in (("UA-Backprop", maps), ("IG (|attribution|)", attributions.abs()), ("random", random_maps)):
    result = uncertainty_reduction_curve(uf, x, candidate, fraction=0.2, baseline=torch.zeros(30))
    print(f"{name:>20}: URC at 20% = {result.score:.3f}")
