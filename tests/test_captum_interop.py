"""Captum's own attribution classes on UncertaintyForward, unchanged (issue 3's contract)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from captum.attr import (  # noqa: E402
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    Lime,
    NoiseTunnel,
    Saliency,
)
from captum.attr import visualization as viz  # noqa: E402

from captum_uncertainty import UncertaintyForward  # noqa: E402


def members_and_inputs():
    torch.manual_seed(0)
    members = [
        torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Softplus(), torch.nn.Flatten(), torch.nn.Linear(48, 4))
        for _ in range(3)
    ]
    return members, torch.rand(2, 1, 6, 6) * 2


def hand_written_entropy(members, x):
    """Total predictive entropy written from scratch: softmax per member, mean, -sum p log p."""
    probabilities = torch.stack([torch.softmax(m(x), dim=1) for m in members]).mean(0)
    return -(probabilities * torch.log(probabilities)).sum(1)


def hand_written_ig(members, x, baseline, n_steps):
    """Trapezoid-rule IG of the hand-written entropy, one path point at a time."""
    total = torch.zeros_like(x)
    for k in range(n_steps):
        alpha = k / (n_steps - 1)
        weight = (0.5 if k in (0, n_steps - 1) else 1.0) / n_steps
        point = (baseline + alpha * (x - baseline)).requires_grad_()
        (gradient,) = torch.autograd.grad(hand_written_entropy(members, point).sum(), point)
        total += weight * gradient
    return total * (x - baseline)


def test_captum_ig_equals_hand_written_entropy_ig():
    members, x = members_and_inputs()
    uf = UncertaintyForward(members, measure="total")
    baseline = torch.full_like(x, 0.5)
    assert torch.allclose(uf(x), hand_written_entropy(members, x), atol=1e-6)
    ours = IntegratedGradients(uf).attribute(x, baselines=baseline, n_steps=30, method="riemann_trapezoid")
    assert torch.allclose(ours, hand_written_ig(members, x, baseline, 30), atol=1e-6)
    _, delta = IntegratedGradients(uf).attribute(x, baselines=baseline, n_steps=200, return_convergence_delta=True)
    assert float(delta.abs().max()) < 1e-3


def test_saliency_is_the_absolute_gradient_and_noise_tunnels_run():
    members, x = members_and_inputs()
    uf = UncertaintyForward(members, measure="epistemic")
    point = x.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(uf(point).sum(), point)
    assert torch.allclose(Saliency(uf).attribute(x), gradient.abs())
    assert torch.allclose(InputXGradient(uf).attribute(x), gradient * x)
    for method in (IntegratedGradients(uf), Saliency(uf)):
        extra = {"n_steps": 10} if isinstance(method, IntegratedGradients) else {}
        torch.manual_seed(0)
        smooth = NoiseTunnel(method).attribute(x, nt_type="smoothgrad", nt_samples=4, stdevs=0.05, **extra)
        assert smooth.shape == x.shape and torch.isfinite(smooth).all() and smooth.abs().sum() > 0


@pytest.mark.parametrize("method", [Lime, KernelShap])
def test_perturbation_methods_return_input_shaped_attributions(method):
    members, x = members_and_inputs()
    uf = UncertaintyForward(members, measure="total")
    feature_mask = (torch.arange(36).view(1, 1, 6, 6) // 12).expand(1, 1, 6, 6)
    # inputs large enough that removing a third of the image moves the entropy by > 0.1 nats
    # (Lime's default Lasso, alpha 0.01, zeroes smaller effects)
    image = x[:1] * 20
    assert float((uf(image) - uf(torch.zeros_like(image))).abs()) > 0.1
    torch.manual_seed(0)
    attributions = method(uf).attribute(image, feature_mask=feature_mask, n_samples=60)
    assert attributions.shape == image.shape and torch.isfinite(attributions).all()
    # one value per feature group, not all zero
    assert len(torch.unique(attributions)) <= 3 and attributions.abs().sum() > 0


def test_visualize_image_attr_draws_an_uncertainty_map():
    members, x = members_and_inputs()
    uf = UncertaintyForward(members, measure="epistemic")
    attributions = IntegratedGradients(uf).attribute(x, n_steps=10)
    figure, axis = viz.visualize_image_attr(
        attributions[0].permute(1, 2, 0).detach().numpy(),
        x[0].permute(1, 2, 0).numpy(),
        method="blended_heat_map",
        sign="absolute_value",
        use_pyplot=False,
    )
    assert len(axis.images) >= 1
    assert np.isfinite(axis.images[-1].get_array()).all()
    matplotlib.pyplot.close(figure)
