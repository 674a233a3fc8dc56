"""The one registry of how each attribution method is built (``captum_uncertainty._methods``): the
command line's ``--method`` table, and the benchmarks' LIME built by it with the ridge surrogate."""

from __future__ import annotations

import pytest
import torch
from captum._utils.models.linear_model import SkLearnLasso, SkLearnRidge
from captum.attr import IntegratedGradients, KernelShap, Lime, Saliency
from torch import nn

from captum_uncertainty import UncertaintyForward
from captum_uncertainty._methods import COMMAND_LINE_METHODS, build_lime, methods_taking, pixel_blocks
from captum_uncertainty.attr import (
    BlurIntegratedGradients,
    GuidedIntegratedGradients,
    UABackprop,
    UncertaintyIntegratedGradients,
)
from captum_uncertainty.experiments import _ground_truth_methods as ground_truth_methods
from captum_uncertainty.experiments import benchmark
from captum_uncertainty.experiments.ground_truth import GroundTruthConfig

#: The classes the ``--method`` names built before the registry moved out of ``_cli.py``, in its order.
CLASSES = {
    "ua_backprop": UABackprop,
    "integrated_gradients": UncertaintyIntegratedGradients,
    "uig": UncertaintyIntegratedGradients,
    "captum_integrated_gradients": IntegratedGradients,
    "saliency": Saliency,
    "blur_ig": BlurIntegratedGradients,
    "guided_ig": GuidedIntegratedGradients,
    "kernel_shap": KernelShap,
    "lime": Lime,
}


def _forward() -> UncertaintyForward:
    torch.manual_seed(0)
    return UncertaintyForward([nn.Sequential(nn.Flatten(), nn.Linear(16, 3)) for _ in range(2)], measure="total")


def _inputs() -> torch.Tensor:
    return torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))


def test_the_command_line_table_keeps_its_names_and_order():
    assert list(COMMAND_LINE_METHODS) == list(CLASSES)


@pytest.mark.parametrize("name", list(COMMAND_LINE_METHODS))
def test_every_command_line_method_builds_its_class_and_attributes(name):
    method = COMMAND_LINE_METHODS[name]
    uf, x = _forward(), _inputs()
    explainer = method.build(uf)
    assert type(explainer) is CLASSES[name]
    assert callable(getattr(explainer, "attribute", None))
    assert set(method.refuses) <= {"n_steps", "baselines"}
    assert all(isinstance(reason, str) and reason for reason in method.refuses.values())
    maps = explainer.attribute(x, **method.kwargs)
    maps = maps[0] if isinstance(maps, tuple) else maps
    assert maps.shape == x.shape and torch.isfinite(maps).all()


def test_the_options_each_method_takes_are_those_of_the_command_line_before():
    assert methods_taking("n_steps") == [
        "integrated_gradients",
        "uig",
        "captum_integrated_gradients",
        "blur_ig",
        "guided_ig",
    ]
    assert methods_taking("baselines") == [
        "integrated_gradients",
        "uig",
        "captum_integrated_gradients",
        "guided_ig",
        "kernel_shap",
        "lime",
    ]


def test_lime_has_a_ridge_surrogate_of_alpha_one():
    surrogate = build_lime(_forward()).interpretable_model
    assert type(surrogate) is SkLearnRidge
    assert surrogate.sklearn_module == "linear_model.Ridge"
    assert surrogate.construct_kwargs == {"alpha": 1.0}


def _seeded_by_hand(seed, attribute_one, x):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.cat([attribute_one(x[i : i + 1]) for i in range(x.shape[0])]).detach()


def test_the_benchmarks_lime_is_captums_lime_with_the_ridge_surrogate():
    uf, x = _forward(), _inputs()
    ctx = benchmark.Context(benchmark.BenchmarkConfig(lime_samples=40, seed=3), x_train=x)
    blocks = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]).view(1, 1, 4, 4)

    def by_hand(surrogate):
        lime = Lime(uf, interpretable_model=surrogate)
        return _seeded_by_hand(3, lambda one: lime.attribute(one, feature_mask=blocks, n_samples=40), x)

    maps = benchmark.seeded(benchmark.lime, uf, x, ctx)
    assert torch.equal(maps, by_hand(SkLearnRidge(alpha=1.0)))
    assert not torch.equal(maps, by_hand(SkLearnLasso(alpha=0.01)))  # Captum's default surrogate


def test_the_ground_truth_benchmarks_lime_is_captums_lime_with_the_ridge_surrogate():
    uf, x = _forward(), _inputs()
    config = GroundTruthConfig(shap_samples=30, seed=5)
    ctx = ground_truth_methods.Context(config, x_train=x, clean=torch.zeros_like(x))
    pixels = torch.arange(16).view(1, 1, 4, 4)  # single pixels on images up to 16 pixels a side

    def by_hand(surrogate):
        lime = Lime(uf, interpretable_model=surrogate)
        return _seeded_by_hand(
            5,
            lambda one: lime.attribute(
                one, baselines=0.0, feature_mask=pixels, n_samples=30, perturbations_per_eval=30
            ),
            x,
        )

    maps = ground_truth_methods.seeded(ground_truth_methods.METHODS["LIME"], uf, x, ctx)
    assert torch.equal(maps, by_hand(SkLearnRidge(alpha=1.0)))
    assert not torch.equal(maps, by_hand(SkLearnLasso(alpha=0.01)))  # Captum's default surrogate


def test_pixel_blocks_by_hand_with_a_narrower_last_block_on_the_inputs_device():
    x = torch.zeros(2, 1, 3, 5, device="meta")
    blocks = pixel_blocks(x, 2)
    assert blocks.device == x.device and blocks.shape == (1, 1, 3, 5)
    expected = torch.tensor([[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]]).view(1, 1, 3, 5)
    assert torch.equal(pixel_blocks(torch.zeros(2, 1, 3, 5), 2), expected)
    assert torch.equal(pixel_blocks(torch.zeros(1, 1, 2, 3), 1), torch.arange(6).view(1, 1, 2, 3))
