"""UABackprop(path="auto"): FullGrad where it reads every bias, input x gradient otherwise, said."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from captum_uncertainty import UABackprop, UncertaintyForward
from tests.helpers import make_cnn


def layer_norm_cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.LayerNorm(3 * 6 * 6), nn.Linear(3 * 6 * 6, 4)
    ).double()


def test_auto_runs_fullgrad_where_every_bias_is_visible_and_says_nothing():
    uf = UncertaintyForward([make_cnn(seed) for seed in range(2)])
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    ua = UABackprop(uf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto = ua.attribute(x, path="auto")
    assert ua.chosen_path == "fullgrad"
    torch.testing.assert_close(auto, ua.attribute(x, path="fullgrad"))


def test_auto_falls_back_to_inputgrad_for_layer_norm_models_with_a_warning():
    uf = UncertaintyForward([layer_norm_cnn(seed) for seed in range(2)])
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    ua = UABackprop(uf)
    with pytest.raises(ValueError, match="2 layer\\(s\\) carry biases"):
        ua.attribute(x)  # the default stays FullGrad, which refuses
    with pytest.warns(
        UserWarning, match="chose path='inputgrad': FullGrad cannot read the biases of 2 layer"
    ) as caught:
        auto = ua.attribute(x, path="auto")
    assert caught[0].filename == __file__, "the warning points at the line that called attribute"
    assert ua.chosen_path == "inputgrad"
    torch.testing.assert_close(auto, ua.attribute(x, path="inputgrad"))
    torch.testing.assert_close(auto.sum((1, 2, 3)), uf(x))  # still complete


def test_auto_on_flat_features_is_inputgrad():
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Linear(5, 3)).double() for _ in range(2)]
    ua = UABackprop(UncertaintyForward(members))
    x = torch.rand(3, 5, dtype=torch.float64)
    with pytest.warns(UserWarning, match="FullGrad needs images"):
        auto = ua.attribute(x, path="auto", tau1=0.08, tau2=0.3)
    torch.testing.assert_close(auto, ua.attribute(x, path="inputgrad", tau1=0.08, tau2=0.3))
