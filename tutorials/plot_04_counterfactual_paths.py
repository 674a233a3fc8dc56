"""
Counterfactual paths: CLUE, delta-CLUE and CounterfactualPathIG
===============================================================

Integrated gradients of the entropy from a black image explain the difference between ``x``
and an image that is itself very uncertain, along a line of impossible images. The
counterfactual methods use a generative model instead: CLUE (Antoran et al., 2021) finds the
nearest image the model is sure about in a VAE's latent space, delta-CLUE (Ley et al., 2021)
a diverse set of them, and CounterfactualPathIG (Perez et al., 2022) integrates the gradient of
the uncertainty along the decoded latent line from such a counterfactual to ``x``.
"""

# %%
# An ensemble and a VAE of the bundled digits
# -------------------------------------------
# The VAE is the supplement's MNIST architecture (two strided convolutions, a dense layer of
# 128, a 32-dimensional latent space); 10 epochs keep the tutorial short (the paper trains 50).

import matplotlib.pyplot as plt
import torch

from captum_uncertainty import (
    CLUE,
    CounterfactualPathIG,
    DeltaCLUE,
    UncertaintyForward,
    UncertaintyIntegratedGradients,
)
from captum_uncertainty.data import load_mnist, train_ensemble
from captum_uncertainty.generative import load_or_train_vae

data = load_mnist(test_size=1000, seed=0)
members = train_ensemble(n_members=5, data=data, epochs=2, seed=0, progress=False)
vae = load_or_train_vae(data.x_train, latent_dim=32, epochs=10, seed=0, progress=False)
print(
    f"VAE reconstruction loss per digit: epoch 1 {vae.history[0]['reconstruction']:.1f} nats, "
    f"epoch {len(vae.history)} {vae.history[-1]['reconstruction']:.1f} nats"
)

uf = UncertaintyForward(members, measure="total")
with torch.no_grad():
    x = data.x_test[uf(data.x_test).argsort(descending=True)[:4]]


def show_rows(rows, titles, cmap="gray"):
    fig, axes = plt.subplots(len(rows[0]), len(rows), figsize=(1.8 * len(rows), 1.8 * len(rows[0])))
    for col, (column, title) in enumerate(zip(rows, titles)):
        for row, image in enumerate(column):
            axes[row, col].imshow(image.detach().squeeze(0), cmap=cmap if col else "gray")
            axes[row, col].axis("off")
        axes[0, col].set_title(title, fontsize=8)
    fig.tight_layout()


# %%
# CLUE: the nearest certain look-alike
# ------------------------------------
# CLUE minimises ``U(dec(z)) + d(dec(z), x)`` from the encoder's code (Adam, learning rate
# 0.01, early stopping), with ``d`` the mean absolute pixel difference. Its map is
# ``|x - dec(z_CLUE)|``: what had to change for the ensemble to become sure.

maps, found = CLUE(uf, vae).attribute(x, return_counterfactuals=True)
for i in range(len(x)):
    print(
        f"digit {i}: U {found.input_uncertainty[i]:.3f} -> {found.uncertainty[i]:.3f} nats, "
        f"mean |change| {found.distance[i]:.3f}, {int(found.iterations[i])} iterations"
    )
show_rows([x, found.images, maps], ["x", "CLUE", "|x - CLUE|"], cmap="inferno")

# %%
# delta-CLUE: several answers within a latent ball
# ------------------------------------------------
# Five random starts inside the ball of radius 2 around the encoder's code, each projected back
# onto the ball after every step: a diverse set of certain counterfactuals for one digit.

diverse = DeltaCLUE(uf, vae).counterfactuals(x[:1], delta=2.0, n_starts=5, seed=0)
codes = vae.encode(x[:1]).detach()
print(
    "distance of each solution to the encoder's code:",
    [round(float(d), 3) for d in (diverse.latents[0] - codes).norm(dim=1)],
)
print("their uncertainty:", [round(float(u), 3) for u in diverse.uncertainty[0]])
fig, axes = plt.subplots(1, 6, figsize=(10, 1.9))
for axis, image, title in zip(axes, [x[0]] + list(diverse.images[0]), ["x"] + [f"start {k}" for k in range(5)]):
    axis.imshow(image.squeeze(0), cmap="gray")
    axis.set_title(title, fontsize=8)
    axis.axis("off")

# %%
# CounterfactualPathIG: integrate along the data manifold
# -------------------------------------------------------
# The in-class fiducial keeps the predicted class and lowers the entropy (Perez et al.'s
# source image); the path is ``dec(z_f + alpha (z_x - z_f))`` followed by the straight segment
# from the reconstruction ``dec(z_x)`` to ``x``, so the map sums to ``U(x) - U(dec(z_f))``.

cpig = CounterfactualPathIG(uf, vae)
parts, deltas, fiducials = cpig.attribute(
    x, fiducial="in_class", n_steps=50, decompose=True, return_convergence_delta=True, return_fiducial=True
)
for i in range(len(x)):
    print(
        f"digit {i}: class kept {bool(fiducials.fiducial_class[i] == fiducials.input_class[i])}, "
        f"U(x) {fiducials.input_uncertainty[i]:.3f}, U(fiducial) {fiducials.uncertainty[i]:.3f}, "
        f"convergence delta {deltas.total[i]:+.1e}"
    )

alphas = torch.linspace(0, 1, 5)
codes = vae.encode(x).detach()
path = [vae.decode(fiducials.latents + a * (codes - fiducials.latents)).detach() for a in alphas]
show_rows(path + [x], [f"alpha={a:.2f}" for a in alphas] + ["x"])

# %%
# Total, aleatoric and epistemic maps, next to plain IG from black
# ----------------------------------------------------------------
# Path integrals are linear in the integrand, so one call gives all three maps
# (total = aleatoric + epistemic). Plain integrated gradients from a black image spread
# signed attributions over the whole digit and the background.

black = UncertaintyIntegratedGradients(uf).attribute(x, baselines="black", n_steps=50)
show_rows(
    [x, parts.total, parts.aleatoric, parts.epistemic, black],
    ["x", "total", "aleatoric", "epistemic", "IG from black"],
    cmap="RdBu_r",
)
