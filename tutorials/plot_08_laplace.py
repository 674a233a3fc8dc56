"""
Explaining a Laplace approximation (laplace-torch)
==================================================

A Laplace approximation turns one trained network into a Bayesian one after the fact: a
Gaussian around the trained weights, with a covariance from the curvature of the loss.
laplace-torch fits it in a few lines. This tutorial fits a last-layer Laplace approximation to
a small CNN on the 8x8 scikit-learn digits, converts it into a fixed set of weight samples with
:func:`~captum_uncertainty.integrations.from_laplace`, and explains the epistemic uncertainty of
the most uncertain test digits with UA-Backprop. It runs in well under a minute on a CPU.
"""

# %%
# A small CNN trained on the digits
# ---------------------------------
# The network has a BatchNorm layer, whose implicit bias FullGrad (UA-Backprop's default path)
# attributes along with the convolutions' biases.

import matplotlib.pyplot as plt
import torch
from laplace import Laplace
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_uncertainty import Categorical, SampleCallable, UABackprop, UncertaintyForward
from captum_uncertainty.data import load_digits, train_model
from captum_uncertainty.integrations import from_laplace

data = load_digits(test_size=300, seed=0)
torch.manual_seed(0)
net = nn.Sequential(
    nn.Conv2d(1, 16, 3),
    nn.BatchNorm2d(16),
    nn.ReLU(),
    nn.Conv2d(16, 32, 3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Linear(32 * 3 * 3, 10),
)
net = train_model(net, data.x_train, data.y_train, epochs=15, seed=0)
with torch.no_grad():
    accuracy = (net(data.x_test).argmax(1) == data.y_test).float().mean()
print(f"test accuracy of the trained network: {float(accuracy):.3f}")

# %%
# Fitting the Laplace approximation
# ---------------------------------
# Last-layer Laplace with a Kronecker-factored Hessian, the laplace-torch default, and a prior
# precision chosen by maximising the marginal likelihood.

train_loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=128)
la = Laplace(net, "classification", subset_of_weights="last_layer", hessian_structure="kron")
la.fit(train_loader)
la.optimize_prior_precision(method="marglik")
print(f"prior precision: {float(la.prior_precision):.2f}")

# %%
# A posterior that stays the same between calls
# ---------------------------------------------
# laplace-torch's ``predictive_samples`` draws new samples on every call, so the uncertainty of
# the same digit moves from call to call: an integration path, or any method that calls the
# model many times, would run through a different posterior at each step.
# :func:`~captum_uncertainty.integrations.from_laplace` draws ``S`` weight samples once, from a
# seeded generator, into private copies of the network: the same ``S`` networks on every call,
# each input computed independently of the rest of its batch, gradients through ordinary modules.

# ``UncertaintyForward`` checks that on its first call and refuses such a source with an error
# that says what to do; ``validate=False`` switches the check off, to show the drift itself.
# ``predictive_samples`` returns class probabilities, not logits, which the forward is told with
# ``likelihood=Categorical(outputs="probabilities")``.

x_test = data.x_test
sampler = SampleCallable(lambda images: la.predictive_samples(images, n_samples=20), layout="samples_first")
probabilities = Categorical(outputs="probabilities")
try:
    UncertaintyForward(sampler, measure="epistemic", likelihood=probabilities)(x_test[:100])
except ValueError as error:
    print("refused:", str(error).split(":")[0])
redrawn = UncertaintyForward(sampler, measure="epistemic", likelihood=probabilities, validate=False)
with torch.no_grad():
    change = (redrawn(x_test[:100]) - redrawn(x_test[:100])).abs().max()
print(f"predictive_samples: largest change of U_e between two calls = {float(change):.4f} nats (100 digits)")

posterior = from_laplace(la, num_samples=20, seed=0)
uf = UncertaintyForward(posterior, measure="epistemic")
with torch.no_grad():
    u_test = uf(x_test)
    change = (uf(x_test) - u_test).abs().max()
print(f"from_laplace:       largest change of U_e between two calls = {float(change):.4f} nats (all digits)")

# %%
# Explaining the most uncertain digits
# ------------------------------------
# UA-Backprop distributes each digit's epistemic uncertainty over its pixels; every map sums
# to the uncertainty it explains. FullGrad (the paper's default) adds the bias terms of the
# convolution and BatchNorm layers of every weight sample; input x gradient uses the input
# term only.

order = u_test.argsort(descending=True)[:4]
x = x_test[order]
u = u_test[order]
ua = UABackprop(uf)
maps = {"FullGrad": ua.attribute(x, path="fullgrad"), "InputGrad": ua.attribute(x, path="inputgrad")}
for name, m in maps.items():
    print(f"{name:>9}: largest |sum(map) - U_e(x)| = {float((m.flatten(1).sum(1) - u).abs().max()):.2e}")

with torch.no_grad():
    predicted = posterior(x).softmax(-1).mean(0).argmax(-1)
fig, axes = plt.subplots(len(x), 3, figsize=(6, 2 * len(x)))
for row in range(len(x)):
    axes[row, 0].imshow(x[row, 0], cmap="gray")
    axes[row, 0].set_title(
        f"label {int(data.y_test[order[row]])}, predicted {int(predicted[row])}\nU_e = {float(u[row]):.3f}", fontsize=8
    )
    for col, (name, m) in enumerate(maps.items(), start=1):
        axes[row, col].imshow(m[row, 0], cmap="inferno")
        if row == 0:
            axes[row, col].set_title(name, fontsize=9)
for axis in axes.flat:
    axis.axis("off")
fig.tight_layout()
plt.show()
