"""UA-Backprop says when a call is costly: one warning naming the cheaper methods and a progress bar
over the class relevances; short calls stay silent."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import captum_uncertainty.attr._utils.ua_backprop as ua_utils
import captum_uncertainty.attr.ua_backprop as ua_module
from captum_uncertainty import UABackprop, UncertaintyForward


def _forward():
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 10)).eval() for _ in range(3)]
    return UncertaintyForward(members, "epistemic")


def _recorded_bars(monkeypatch):
    """Every progress bar UA-Backprop makes, shown as on a terminal."""
    bars = []
    real = ua_utils.progress_bar

    def recording(*args, **kwargs):
        bar = real(*args, **kwargs)
        bars.append(bar)
        return bar

    monkeypatch.setattr(ua_utils, "PROGRESS_DISABLE", False)
    monkeypatch.setattr(ua_utils, "progress_bar", recording)
    monkeypatch.setattr(ua_module, "progress_bar", recording)
    return bars


def test_a_costly_call_warns_once_and_shows_its_progress(monkeypatch, capsys):
    bars = _recorded_bars(monkeypatch)
    x = torch.rand(2, 6)
    # 10 classes x 100 path points = 1,000 backward passes: 20x Blur IG's default 50
    with pytest.warns(UserWarning, match=r"1000 passes of the posterior.*20x.*BlurIntegratedGradients") as caught:
        maps = UABackprop(_forward()).attribute(x, path="integrated_gradients", n_steps=100, tau1=0.1, tau2=0.5)
    (warning,) = [w for w in caught if "passes of the posterior" in str(w.message)]
    assert warning.filename == __file__, "the warning points at the line that called attribute"
    assert torch.isfinite(maps).all()
    (bar,) = bars  # the path points, chunk by chunk
    assert bar.desc == "UABackprop path points" and bar.n == bar.total == 100
    assert "UABackprop path points" in capsys.readouterr().err
    bars.clear()
    # the class paths count the class x sample relevances: 1,000 classes by gradient
    wide = UncertaintyForward([nn.Linear(6, 1000).eval() for _ in range(2)], "epistemic")
    with pytest.warns(UserWarning, match="1000 passes"):
        UABackprop(wide).attribute(x, path="grad", tau1=0.1, tau2=0.5, classes_per_pass=250)
    (bar,) = bars
    assert bar.desc == "UABackprop class x sample relevances" and bar.n == bar.total == 2000


def test_a_short_call_neither_warns_nor_shows_a_bar(monkeypatch, capsys):
    bars = _recorded_bars(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        UABackprop(_forward()).attribute(torch.rand(2, 6), path="integrated_gradients", n_steps=99, tau1=0.1, tau2=0.5)
    assert bars == [None] and "UABackprop" not in capsys.readouterr().err
