"""Quantus metrics on uncertainty maps, with the real quantus package: the one-output uncertainty
model, the explain-function adapter, and the softmax trap (constant curves) and its guard."""

import numpy as np
import pytest
import quantus
import torch
from captum.attr import IntegratedGradients
from torch import nn

from captum_uncertainty import UABackprop, UncertaintyForward
from captum_uncertainty.integrations import QuantusUncertaintyModel, quantus_batch, quantus_explain_func
from tests.helpers import assert_untouched, make_cnn, model_state

FEATURES_IN_STEP = 8  # 64 pixels of an 8x8 digit: 8 flipping steps


@pytest.fixture(scope="module")
def members():
    return [make_cnn(seed, classes=4) for seed in range(3)]


@pytest.fixture(scope="module")
def uf(members):
    return UncertaintyForward(members, measure="epistemic")


@pytest.fixture(scope="module")
def x(digits):
    return digits.x_test[:4].double()


@pytest.fixture(scope="module")
def maps(uf, x):
    return UABackprop(uf).attribute(x, path="fullgrad")


def pixel_flipping(**kwargs):
    return quantus.PixelFlipping(features_in_step=FEATURES_IN_STEP, disable_warnings=True, **kwargs)


def test_model_returns_the_uncertainty_as_one_score(uf, x, members):
    before = model_state(members)
    model = QuantusUncertaintyModel(uf)
    assert not model.training
    out = model(x.float())  # Quantus feeds float32 tensors made from numpy
    assert out.shape == (x.shape[0], 1) and out.dtype == torch.float64
    torch.testing.assert_close(out.as_subclass(torch.Tensor)[:, 0], uf(x), rtol=0, atol=0)
    model.train()
    model.eval()  # only the wrapper's flag: the members stay as they are
    assert_untouched(before, members)
    with pytest.raises(TypeError, match="UncertaintyForward"):
        QuantusUncertaintyModel(members[0])


def test_pixel_flipping_curve_is_finite_and_not_constant_with_softmax_false(uf, x, maps):
    np.random.seed(0)
    model = QuantusUncertaintyModel(uf)
    curves = np.asarray(pixel_flipping()(model=model, **quantus_batch(x), a_batch=maps.numpy(), softmax=False))
    assert curves.shape == (x.shape[0], 64 // FEATURES_IN_STEP)
    assert np.isfinite(curves).all()
    assert (curves.max(axis=1) - curves.min(axis=1) > 1e-6).all()
    # the curve reads U of the perturbed inputs: its first point is U after the first flip
    assert (curves > 0).all()


def test_softmax_over_the_single_output_makes_every_curve_constant_and_is_refused(uf, x, maps):
    class Bare(nn.Module):
        """What a user might write without the adapter: U as the only output."""

        def __init__(self, forward_func):
            super().__init__()
            self.forward_func = forward_func

        def forward(self, inputs):
            return self.forward_func(inputs.double()).unsqueeze(1)

    # PixelFlipping's default softmax=True: softmax over one output is 1.0 everywhere
    constant = np.asarray(pixel_flipping()(model=Bare(uf).eval(), **quantus_batch(x), a_batch=maps.numpy()))
    assert np.array_equal(constant, np.ones_like(constant))
    with pytest.raises(ValueError, match="softmax=False"):
        pixel_flipping()(model=QuantusUncertaintyModel(uf), **quantus_batch(x), a_batch=maps.numpy())


def test_faithfulness_correlation_with_precomputed_maps_and_with_the_explain_func(uf, x, maps):
    model = QuantusUncertaintyModel(uf)
    metric = quantus.FaithfulnessCorrelation(nr_runs=10, subset_size=8, disable_warnings=True, return_aggregate=False)
    np.random.seed(0)
    precomputed = np.asarray(metric(model=model, **quantus_batch(x), a_batch=maps.numpy(), softmax=False))
    np.random.seed(0)
    explained = np.asarray(
        metric(
            model=model,
            **quantus_batch(x),
            a_batch=None,
            softmax=False,
            explain_func=quantus_explain_func(UABackprop, path="fullgrad"),
        )
    )
    assert precomputed.shape == explained.shape == (x.shape[0],)
    assert np.isfinite(precomputed).all() and (np.abs(precomputed) <= 1).all()
    np.testing.assert_allclose(explained, precomputed, rtol=1e-6)  # the explain_func computes the same maps


def test_explain_func_adapts_captum_and_checks_its_arguments(uf, x):
    explain = quantus_explain_func(IntegratedGradients, n_steps=4)
    batch = quantus_batch(x)
    inputs = batch["x_batch"].astype(np.float32)  # Quantus may hand float32 arrays
    attributions = explain(model=QuantusUncertaintyModel(uf), inputs=inputs, targets=batch["y_batch"], device="cpu")
    expected = IntegratedGradients(uf).attribute(x, n_steps=4).detach().numpy()
    assert isinstance(attributions, np.ndarray) and attributions.shape == x.shape
    np.testing.assert_allclose(attributions, expected, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="targets must be all zeros"):
        explain(model=QuantusUncertaintyModel(uf), inputs=inputs, targets=np.arange(x.shape[0]))
    with pytest.raises(TypeError, match="QuantusUncertaintyModel"):
        explain(model=nn.Linear(2, 2), inputs=inputs, targets=batch["y_batch"])
    with pytest.raises(TypeError, match="decompose=True"):
        quantus_explain_func(UABackprop, decompose=True)(model=uf, inputs=inputs, targets=None)
    assert batch["y_batch"].dtype == np.int64 and not batch["y_batch"].any()
