"""
Regression: explaining a variance
=================================

A regressor's uncertainty is a variance, not an entropy. This tutorial trains a deep ensemble
of five heteroscedastic MLPs on scikit-learn's bundled diabetes data (ten features per patient,
the disease progression one year later as the target); every member predicts a mean and a
log-variance, and the law of total variance splits the ensemble's predictive variance into an
aleatoric part (the members' mean noise variance) and an epistemic part (the variance of their
means). We then ask which *features* make the prediction uncertain: with Integrated Gradients
of each of the three variances, the explanation distribution of the mean, the covariance of
the members' explanations, a feature-flipping test, and finally MC DropConnect in place of the
ensemble.
"""

# %%
# Five heteroscedastic MLPs
# -------------------------
# Features and target are standardised with the training statistics, so the training mean is
# the zero vector and variances are in units of the target's variance. Each member is a
# 10 -> 32 -> 2 MLP returning ``(N, 2)``: the mean and the log-variance of a Gaussian, trained
# full-batch by the Gaussian negative log-likelihood (``torch.nn.functional.gaussian_nll_loss``).

import math

import matplotlib.pyplot as plt
import torch
from captum.attr import IntegratedGradients
from sklearn.datasets import load_diabetes
from torch import nn
from torch.func import functional_call

from captum_uncertainty import (
    CovarianceAttribution,
    ExplanationDistribution,
    Gaussian,
    MCDropConnect,
    UncertaintyForward,
)

data = load_diabetes()
names = list(data.feature_names)
generator = torch.Generator().manual_seed(0)
order = torch.randperm(len(data.target), generator=generator)
features = torch.tensor(data.data, dtype=torch.float32)[order]
targets = torch.tensor(data.target, dtype=torch.float32)[order]
x_train, y_train, x_test, y_test = features[:342], targets[:342], features[342:], targets[342:]
x_mean, x_std, y_mean, y_std = x_train.mean(0), x_train.std(0), y_train.mean(), y_train.std()
x_train, x_test = (x_train - x_mean) / x_std, (x_test - x_mean) / x_std
y_train, y_test = (y_train - y_mean) / y_std, (y_test - y_mean) / y_std
print(f"{len(x_train)} training and {len(x_test)} test patients, features: {', '.join(names)}")


def train_member(seed: int, dropconnect: float = 0.0) -> nn.Module:
    """A 10 -> 32 -> 2 MLP (mean, log-variance) trained by the Gaussian NLL; with ``dropconnect > 0``
    every step drops each weight with that probability (DropConnect training)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        optimiser.zero_grad()
        if dropconnect > 0:
            weights = {
                name: w * (torch.rand_like(w) >= dropconnect) / (1 - dropconnect)
                for name, w in model.named_parameters()
                if name.endswith("weight")
            }
            out = functional_call(model, weights, (x_train,))
        else:
            out = model(x_train)
        nn.functional.gaussian_nll_loss(out[:, 0], y_train, out[:, 1].exp()).backward()
        optimiser.step()
    return model.eval()


members = [train_member(seed) for seed in range(5)]

# %%
# The three variances of the test set
# -----------------------------------
# ``UncertaintyForward(members, likelihood=Gaussian(variance="log_variance"))`` reads column 0 of
# each member's output as its mean ``mu_s`` and column 1 as ``log sigma_s^2``. The head's kind
# must be declared: a tensor cannot tell a log-variance from a variance or a standard deviation
# (nor two columns from a two-class classifier's logits). Then ``aleatoric = mean_s sigma_s^2``,
# ``epistemic = mean_s (mu_s - mean_t mu_t)^2`` and ``total = aleatoric + epistemic``
# (:meth:`UncertaintyForward.decompose <captum_uncertainty.UncertaintyForward.decompose>`).

gaussian = Gaussian(variance="log_variance")
uf = UncertaintyForward(members, likelihood=gaussian)
with torch.no_grad():
    variances = uf.decompose(x_test)
    predicted = uf.predictive_mean(x_test)
rmse = float((predicted - y_test).square().mean().sqrt())
nll = 0.5 * (2 * math.pi * variances.total).log() + (y_test - predicted).square() / (2 * variances.total)
nll = float(nll.mean())  # of the Gaussian with the predictive mean and the total variance
print(f"test RMSE {rmse:.3f} (standardised target), Gaussian NLL {nll:.3f} per patient")
for measure in ("total", "aleatoric", "epistemic"):
    values = variances.select(measure)
    print(f"{measure:>9} variance: mean {float(values.mean()):.4f}, max {float(values.max()):.4f}")
share = float(variances.epistemic.sum() / variances.total.sum())
print(f"epistemic share of the test set's total variance: {share:.1%}")

# %%
# Which features make the prediction uncertain?
# ---------------------------------------------
# Captum's :class:`~captum.attr.IntegratedGradients` on the forward of each measure, for the five
# test patients of highest total variance. The baseline is the average training patient (zero
# after standardising); each map sums to ``V(x) - V(baseline)``, which the convergence delta
# checks.

patients = variances.total.argsort(descending=True)[:5]
x = x_test[patients]
baseline = torch.zeros_like(x)
measures = ("total", "aleatoric", "epistemic")
maps = {}
for measure in measures:
    ig = IntegratedGradients(uf.with_measure(measure))
    maps[measure], delta = ig.attribute(x, baselines=baseline, n_steps=64, return_convergence_delta=True)
    print(f"IG of the {measure:>9} variance: largest |convergence delta| {float(delta.abs().max()):.2e}")
print("variances of the five patients (total / aleatoric / epistemic):")
for index in patients.tolist():
    print(f"  test patient {index:3d}: " + " / ".join(f"{float(variances.select(m)[index]):.3f}" for m in measures))


def feature_bars(axis, patient_maps: torch.Tensor, title: str) -> None:
    """Bars of the mean over patients per feature, one dot per patient."""
    patient_maps = patient_maps.detach()
    axis.bar(range(len(names)), patient_maps.mean(0).numpy(), color="tab:blue", alpha=0.7)
    for row in patient_maps:
        axis.plot(range(len(names)), row.numpy(), "k.", markersize=3)
    axis.axhline(0.0, color="gray", linewidth=0.5)
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, rotation=60, fontsize=8)
    axis.set_title(title, fontsize=9)


fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for axis, measure in zip(axes, measures):
    feature_bars(axis, maps[measure], f"IG of the {measure} variance")
fig.tight_layout()
plt.show()

# %%
# Where the aleatoric and epistemic maps disagree
# -----------------------------------------------
# The two maps have different scales (the variances above say by how much), so each patient's
# map is divided by its sum of absolute values: the shares below are comparable. A feature whose
# shares have opposite signs raises one kind of variance and lowers the other; the rank
# correlation of the absolute shares says how much the two maps agree on which features matter.


def shares(patient_maps: torch.Tensor) -> torch.Tensor:
    patient_maps = patient_maps.detach()
    return patient_maps / patient_maps.abs().sum(1, keepdim=True)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two vectors (no ties in continuous values)."""
    ranks_a, ranks_b = (v.argsort().argsort().float() for v in (a, b))
    return float(torch.corrcoef(torch.stack([ranks_a, ranks_b]))[0, 1])


aleatoric_shares, epistemic_shares = shares(maps["aleatoric"]), shares(maps["epistemic"])
opposite = (aleatoric_shares.sign() != epistemic_shares.sign()).sum(0)
print(f"{'feature':>8} {'aleatoric share':>16} {'epistemic share':>16} {'patients with opposite signs':>29}")
for i, name in enumerate(names):
    a, e = float(aleatoric_shares[:, i].mean()), float(epistemic_shares[:, i].mean())
    print(f"{name:>8} {a:>16.3f} {e:>16.3f} {int(opposite[i]):>25d} / {len(x)}")
top = {m: [names[i] for i in shares(maps[m]).abs().mean(0).argsort(descending=True)[:3]] for m in measures[1:]}
print("top-3 features by mean |share|: aleatoric", top["aleatoric"], "- epistemic", top["epistemic"])
mostly_opposite = [names[i] for i in range(len(names)) if int(opposite[i]) > len(x) // 2]
print(
    "features with opposite signs in most patients:",
    ", ".join(mostly_opposite) if mostly_opposite else "none",
)
correlations = [rank_correlation(a.abs(), e.abs()) for a, e in zip(aleatoric_shares, epistemic_shares)]
print("rank correlation of |aleatoric| and |epistemic| per patient:", [round(c, 2) for c in correlations])

# %%
# The explanation distribution of the mean
# ----------------------------------------
# The variance maps explain the *uncertainty*. :class:`~captum_uncertainty.ExplanationDistribution`
# asks a different question: how uncertain is the explanation of the *prediction*? On a Gaussian
# forward it explains each member's mean ``mu_s`` with IG (same baseline) and returns the mean
# and standard deviation of the five explanations per feature; the mean explanation sums to
# the change of the predictive mean from the baseline.

distribution = ExplanationDistribution(uf, IntegratedGradients).attribute(x, baselines=baseline, n_steps=64)
with torch.no_grad():
    change = uf.predictive_mean(x) - uf.predictive_mean(baseline)
gap = float((distribution.mean.sum(1) - change).abs().max())
print(f"largest |sum of the mean map - change of the predictive mean|: {gap:.2e}")
print(f"patient {int(patients[0])}: {'feature':>8} {'mean':>8} {'std':>8}")
for i, name in enumerate(names):
    print(f"{'':>12}{name:>8} {float(distribution.mean[0, i]):>8.3f} {float(distribution.std[0, i]):>8.3f}")
print(
    "coefficient of variation std / |mean| per feature, mean over the five patients:",
    {name: round(float(v), 2) for name, v in zip(names, distribution.cv.mean(0))},
)

fig, axis = plt.subplots(figsize=(6, 3))
positions = torch.arange(len(names)).float()
axis.bar(positions.numpy(), distribution.mean[0].numpy(), yerr=distribution.std[0].numpy(), capsize=3, alpha=0.7)
for member_map in distribution.samples[:, 0]:
    axis.plot(positions.numpy(), member_map.numpy(), "k.", markersize=3)
axis.axhline(0.0, color="gray", linewidth=0.5)
axis.set_xticks(range(len(names)))
axis.set_xticklabels(names, rotation=60, fontsize=8)
axis.set_title(f"IG of the mean, patient {int(patients[0])}: mean +- std over members (dots)", fontsize=9)
fig.tight_layout()
plt.show()

# %%
# The covariance of the members' explanations
# -------------------------------------------
# The epistemic variance is the variance of the members' means, and each member's IG map sums
# to ``mu_s(x) - mu_s(x0)``. :class:`~captum_uncertainty.CovarianceAttribution` therefore splits
# ``Var_s[mu_s(x) - mu_s(x0)]`` over the features: ``mode="marginal"`` gives feature ``i`` the
# covariance of its explanation with the summed one (the map sums to that variance, and can be
# negative), ``mode="diagonal"`` the variance of its explanation (non-negative, equal to the
# squared std of the explanation distribution above, without the cross terms). The epistemic IG
# map instead sums to ``Var_s[mu_s(x)] - Var_s[mu_s(x0)]``; the two targets coincide when the
# members agree at the baseline.

covariance = CovarianceAttribution(uf, IntegratedGradients)
marginal = covariance.attribute(x, mode="marginal", baselines=baseline, n_steps=64)
diagonal = covariance.attribute(x, mode="diagonal", baselines=baseline, n_steps=64)
with torch.no_grad():
    differences = uf.sample_means(x) - uf.sample_means(baseline)  # (S, N)
    target_variance = differences.var(0, unbiased=False)
    at_baseline = float(uf.with_measure("epistemic")(baseline[:1]))
print("Var_s[mu_s(x) - mu_s(x0)] per patient:", target_variance.numpy().round(4))
print("sum of the marginal map per patient:  ", marginal.sum(1).numpy().round(4))
gap = float((marginal.sum(1) - target_variance).abs().max())
print(f"largest |difference|: {gap:.2e} (IG's quadrature error at n_steps=64)")
print("sum of the epistemic IG map:          ", maps["epistemic"].detach().sum(1).numpy().round(4))
print(f"epistemic variance at the baseline: {at_baseline:.4f}")
gap = float((diagonal - distribution.std**2).abs().max())
print(f"largest |diagonal - std^2 of the explanation distribution|: {gap:.2e}")
for name, candidate in (("CovIG marginal", marginal), ("CovIG diagonal", diagonal)):
    agreement = [rank_correlation(a, b) for a, b in zip(maps["epistemic"].detach(), candidate)]
    print(f"rank correlation of {name} with the epistemic IG map per patient:", [round(c, 2) for c in agreement])

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
feature_bars(axes[0], maps["epistemic"], "IG of the epistemic variance")
feature_bars(axes[1], marginal, "CovIG, marginal")
feature_bars(axes[2], diagonal, "CovIG, diagonal")
fig.tight_layout()
plt.show()

# %%
# Feature flipping: does removing the top features remove the variance?
# ---------------------------------------------------------------------
# The uncertainty reduction curve over features: for the 20 test patients of highest epistemic
# variance, the features are replaced one at a time, in the order of a map (largest attribution
# first), by the baseline (the training mean), and the epistemic variance is recomputed after
# each step. :func:`~captum_uncertainty.metrics.entropy_information_curve` (with features,
# ``baseline=`` is the replacement) reports the median over patients of the remaining share
# ``min_{i <= k} V(x_i) / V(x)`` after ``k`` features, and
# :func:`~captum_uncertainty.metrics.uncertainty_reduction_curve` the URC: the median largest
# relative reduction within the first 30% of the features (three). Random orders are the
# reference; after all ten features every order ends at the baseline patient.

from captum_uncertainty.metrics import entropy_information_curve, uncertainty_reduction_curve

epistemic = uf.with_measure("epistemic")
flip_x = x_test[variances.epistemic.argsort(descending=True)[:20]]
removed = torch.zeros(10)  # what replaces a removed feature: the training mean


def flipping(order_map: torch.Tensor):
    """The median remaining-variance curve, the area over it and the URC at 30% of the features."""
    curve = entropy_information_curve(epistemic, flip_x, order_map, baseline=removed)
    urc = uncertainty_reduction_curve(epistemic, flip_x, order_map, fraction=0.3, baseline=removed)
    return curve.curve, curve.area_over, urc.score


curves = {
    "epistemic IG": flipping(IntegratedGradients(epistemic).attribute(flip_x, baselines=0.0, n_steps=64).detach()),
    "CovIG marginal": flipping(CovarianceAttribution(uf, IntegratedGradients).attribute(flip_x, baselines=0.0)),
}
random_orders = [flipping(torch.rand(flip_x.shape, generator=generator)) for _ in range(10)]
curves["random (mean of 10 orders)"] = (
    torch.stack([r[0] for r in random_orders]).mean(0),
    sum(r[1] for r in random_orders) / len(random_orders),
    sum(r[2] for r in random_orders) / len(random_orders),
)
print(f"{'order':>27} {'remaining after 1, 2, 3 features':>34} {'area over the curve':>20} {'URC at 30%':>11}")
for name, (curve, area, urc) in curves.items():
    after = ", ".join(f"{float(v):.2f}" for v in curve[1:4])
    print(f"{name:>27} {after:>34} {area:>20.3f} {urc:>11.3f}")

fig, axis = plt.subplots(figsize=(5, 3.2))
for name, (curve, _, _) in curves.items():
    axis.plot(range(11), curve.numpy(), marker=".", label=name)
axis.set_xlabel("features replaced by the training mean")
axis.set_ylabel("remaining epistemic variance (median share)")
axis.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# MC DropConnect instead of an ensemble
# -------------------------------------
# One more MLP, trained with DropConnect (every weight dropped with probability 0.1 at each
# step), becomes a posterior of 30 frozen weight masks with
# :class:`~captum_uncertainty.MCDropConnect`; the same forward and the same IG explain its
# epistemic variance. Its scale need not match the ensemble's: the two posteriors approximate
# the weight uncertainty differently, so compare the rankings of the patients and of the
# features rather than the raw values.

dropconnect_model = train_member(5, dropconnect=0.1)
posterior = MCDropConnect(dropconnect_model, p=0.1, num_samples=30, seed=0)
mc = UncertaintyForward(posterior, "epistemic", likelihood=gaussian)
with torch.no_grad():
    mc_variances = mc.decompose(x_test)
    mc_rmse = float((mc.predictive_mean(x_test) - y_test).square().mean().sqrt())
print(f"MC DropConnect: test RMSE {mc_rmse:.3f}, mean epistemic variance {float(mc_variances.epistemic.mean()):.4f}")
print(f"ensemble:       test RMSE {rmse:.3f}, mean epistemic variance {float(variances.epistemic.mean()):.4f}")
print(
    "rank correlation of the test patients' epistemic variances (ensemble vs MC DropConnect):",
    f"{rank_correlation(variances.epistemic.detach(), mc_variances.epistemic.detach()):.2f}",
)
mc_map, mc_delta = IntegratedGradients(mc).attribute(x, baselines=baseline, n_steps=64, return_convergence_delta=True)
print(f"IG of MC DropConnect's epistemic variance: largest |convergence delta| {float(mc_delta.abs().max()):.2e}")
agreement = [rank_correlation(a, b) for a, b in zip(maps["epistemic"].detach(), mc_map.detach())]
print("rank correlation of the two epistemic IG maps per patient:", [round(c, 2) for c in agreement])
top_mc = [names[i] for i in shares(mc_map).abs().mean(0).argsort(descending=True)[:3]]
print("top-3 features by mean |share|: ensemble", top["epistemic"], "- MC DropConnect", top_mc)

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
axes[0].loglog(variances.epistemic.detach().numpy(), mc_variances.epistemic.detach().numpy(), ".", markersize=4)
axes[0].set_xlabel("ensemble epistemic variance")
axes[0].set_ylabel("MC DropConnect epistemic variance")
axes[0].set_title("test patients", fontsize=9)
feature_bars(axes[1], maps["epistemic"], "IG of the epistemic variance: ensemble")
feature_bars(axes[2], mc_map, "IG of the epistemic variance: MC DropConnect")
fig.tight_layout()
plt.show()
