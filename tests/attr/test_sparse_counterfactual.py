"""SparseCounterfactualIG: IG from the input with the fewest positions replaced that removes its
uncertainty. The map is Captum's IG from that baseline, zero outside the replaced positions,
complete, and on a model whose uncertainty comes from a known patch it lies on the patch."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from captum_uncertainty import SparseCounterfactualIG, UncertaintyForward
from captum_uncertainty.generative import VAE

DT = torch.float64
PATCH = (slice(2, 5), slice(3, 6))  # rows 2-4, columns 3-5 of an 8 x 8 image


class PatchDisagreement(nn.Module):
    """Logits that depend on the patch through a member-specific weight, and on the rest of the
    image through weights shared by every member: the members disagree only about the patch."""

    def __init__(self, seed: int, shared: torch.Tensor) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        patch = torch.zeros(1, 8, 8, 3, dtype=DT)
        patch[0, PATCH[0], PATCH[1]] = 3 * torch.randn(3, 3, 3, generator=generator, dtype=DT)
        self.weight = nn.Parameter(shared + patch)

    def forward(self, x):
        return torch.einsum("nchw,chwk->nk", x, self.weight)


@pytest.fixture(scope="module")
def patch_forward():
    shared = torch.randn(1, 8, 8, 3, generator=torch.Generator().manual_seed(9), dtype=DT) * 0.2
    members = [PatchDisagreement(seed, shared).eval() for seed in range(4)]
    return UncertaintyForward(members, "epistemic")


@pytest.fixture(scope="module")
def images():
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=DT)
    return x


def test_the_map_is_captums_ig_from_the_counterfactual_zero_outside_it_and_complete(patch_forward, images):
    explainer = SparseCounterfactualIG(patch_forward)
    blank = torch.zeros(1, 8, 8, dtype=DT)
    maps, found = explainer.attribute(images, n_steps=16, replacement=blank, return_counterfactual=True)
    expected = IntegratedGradients(patch_forward).attribute(images, baselines=found.baselines, n_steps=16)
    torch.testing.assert_close(maps, expected, rtol=1e-7, atol=1e-9)  # the quadrature nodes, rounded alike
    assert torch.equal(maps[~found.positions.expand_as(maps)], torch.zeros_like(maps[~found.positions.expand_as(maps)]))
    assert torch.equal(found.baselines, torch.where(found.positions, blank, images))
    _, delta = explainer.attribute(images, n_steps=64, replacement=blank, return_convergence_delta=True)
    assert delta.abs().max() < 1e-6 * found.input_uncertainty.max()
    with torch.no_grad():
        torch.testing.assert_close(found.uncertainty, patch_forward(found.baselines))
        torch.testing.assert_close(found.input_uncertainty, patch_forward(images))


def test_a_known_cause_gets_the_mass_and_the_search_stops_at_the_target(patch_forward, images):
    explainer = SparseCounterfactualIG(patch_forward)
    blank = torch.zeros(1, 8, 8, dtype=DT)
    maps, found = explainer.attribute(
        images, n_steps=32, replacement=blank, target_fraction=0.05, step_fraction=1 / 64, return_counterfactual=True
    )
    inside = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    inside[..., PATCH[0], PATCH[1]] = True
    assert bool((found.positions <= inside).all())  # only patch pixels were replaced
    positive = maps.clamp(min=0)
    mass = (positive * inside).flatten(1).sum(1) / positive.flatten(1).sum(1)
    assert bool((mass > 0.999).all()), mass
    assert bool((found.uncertainty <= 0.05 * found.input_uncertainty).all())
    assert bool((found.positions.flatten(1).sum(1) <= 9).all())


def test_the_budget_caps_the_replaced_share_and_a_vae_reconstruction_is_the_default(patch_forward, images):
    torch.manual_seed(0)
    vae = VAE(image_shape=(1, 8, 8), latent_dim=3).to(DT).eval()
    explainer = SparseCounterfactualIG(patch_forward, vae)
    found = explainer.counterfactual(images, target_fraction=0.0, max_fraction=0.1, step_fraction=0.05)
    assert bool((found.positions.flatten(1).sum(1) <= 6).all())  # floor(0.1 * 64)
    with torch.no_grad():
        reconstruction = vae.decode(vae.encode(images))
    assert torch.equal(found.baselines, torch.where(found.positions, reconstruction, images))


def test_features_take_a_given_replacement_element_by_element():
    torch.manual_seed(1)
    members = [nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(DT).eval() for _ in range(3)]
    uf = UncertaintyForward(members, "epistemic")
    x = torch.randn(4, 5, dtype=DT)
    maps, found = SparseCounterfactualIG(uf).attribute(
        x, n_steps=8, replacement=x.mean(0), step_fraction=0.2, return_counterfactual=True
    )
    assert found.positions.shape == x.shape and maps.shape == x.shape
    assert bool((maps[~found.positions] == 0).all())


def test_bad_arguments_are_refused_naming_them(patch_forward, images):
    explainer = SparseCounterfactualIG(patch_forward)
    with pytest.raises(ValueError, match="replacement="):
        explainer.attribute(images)
    with pytest.raises(ValueError, match="replacement of shape"):
        explainer.attribute(images, replacement=torch.zeros(3, 3, dtype=DT))
    with pytest.raises(TypeError, match="replacement must be a Tensor"):
        explainer.attribute(images, replacement=0.0)
    for name, value in (("step_fraction", 0), ("target_fraction", 1.0), ("max_fraction", 1.5)):
        with pytest.raises(ValueError, match=name):
            explainer.attribute(images, replacement=images * 0, **{name: value})
    with pytest.raises(ValueError, match="cannot both be True"):
        explainer.attribute(images, replacement=images * 0, return_convergence_delta=True, return_counterfactual=True)
    with pytest.raises(TypeError):
        SparseCounterfactualIG(nn.Linear(2, 2))
