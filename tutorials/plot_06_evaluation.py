"""
Evaluating uncertainty maps: blurring test and anomaly localisation
===================================================================

A good uncertainty map points at the pixels that *cause* the uncertainty. Two tests from
Wang et al. (2023) check that without ground truth:

* the **blurring test** blurs the top-ranked pixels (2% or 5% of the image) and measures how
  much of the uncertainty disappears (MURR, higher is better; AUC-URR, lower is better);
* **anomaly localisation** pastes a patch of another digit into a test digit and asks whether
  the map's brightest window finds it (IoU, and ADA = share of images with IoU > 0.5).

Both take an :class:`~captum_uncertainty.UncertaintyForward`, the inputs and the maps, and
know nothing about the method that made the maps.
"""

# %%
import torch
from captum.attr import Saliency

from captum_uncertainty import UABackprop, UncertaintyForward
from captum_uncertainty.data import load_mnist, train_ensemble
from captum_uncertainty.metrics import anomaly_localization, blurring_test, make_anomalies

data = load_mnist(test_size=1000, seed=0)
members = train_ensemble(n_members=5, data=data, epochs=2, seed=0, progress=False)
uf = UncertaintyForward(members, measure="epistemic")
with torch.no_grad():
    x = data.x_test[uf(data.x_test).argsort(descending=True)[:20]]

methods = {
    "UA-Backprop (FullGrad)": lambda images: UABackprop(uf).attribute(images),
    "UA-Backprop (InputGrad)": lambda images: UABackprop(uf).attribute(images, path="inputgrad"),
    "Grad": lambda images: Saliency(uf).attribute(images, abs=True),
    "Random": lambda images: torch.rand(images.shape[0], 1, 28, 28, generator=torch.Generator().manual_seed(0)),
}

# %%
# Blurring test at 2% of the pixels
# ---------------------------------
# The blur's sigma is searched per image (here in steps of 1 to keep the tutorial fast; the
# paper uses 0.2). By default it is the sigma that lowers the uncertainty of the *fully*
# blurred image most, so every map is judged with the same perturbation; an image that no blur
# makes less uncertain gets sigma = 0 and reduction 0 for every map, and ``no_blur`` counts
# them. ``sigma_selection="final"`` is the paper's reading, which searches sigma with the
# map's own pixels blurred.

for name, explain in methods.items():
    result = blurring_test(uf, x, explain(x), fraction=0.02, sigma_step=1.0)
    paper = blurring_test(uf, x, explain(x), fraction=0.02, sigma_step=1.0, sigma_selection="final")
    print(f"{name:>12}: MURR {result.murr:.3f}  AUC-URR {result.auc_urr:.3f}  (paper's reading: MURR {paper.murr:.3f})")
print(f"images with no lowering blur: {result.no_blur} of {len(x)}")

# %%
# Anomaly localisation
# --------------------
# 9x9 patches (the paper's 10x10 at 32x32, scaled to 28x28) from training digits; we keep the
# 20 modified test digits whose epistemic uncertainty rose most.

anomalies = make_anomalies(uf, data.x_test[:300], data.x_train, n_images=20, seed=0)
print("uncertainty rise of the kept images:", [round(float(r), 3) for r in anomalies.rise[:5]], "...")
for name, explain in methods.items():
    result = anomaly_localization(explain(anomalies.images), anomalies.boxes)
    print(f"{name:>12}: IoU {result.iou:.3f}  ADA {result.ada:.3f}")
