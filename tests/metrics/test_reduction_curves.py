"""Perez et al.'s URC and EIC against hand-computed cases, on images and on features."""

import pytest
import torch

from captum_uncertainty import gaussian_blur
from captum_uncertainty.metrics import entropy_information_curve, uncertainty_reduction_curve
from tests.helpers.metric_toys import DT, bright_pixel_images, map_with_pixel_at_rank, one_pixel_uncertainty


def test_uncertainty_reduction_curve_hand_computed():
    x = bright_pixel_images(3)
    maps = torch.cat([map_with_pixel_at_rank(0), map_with_pixel_at_rank(1), map_with_pixel_at_rank(15)])
    # fully blurred = per-channel mean: the bright pixel becomes 1/16, U drops by 15/16
    r = 15 / 16
    result = uncertainty_reduction_curve(one_pixel_uncertainty, x, maps, fraction=0.25)
    assert torch.allclose(result.per_image, torch.tensor([[r] * 4, [0, r, r, r], [0] * 4], dtype=DT))
    assert torch.allclose(result.curve, torch.tensor([0, r, r, r], dtype=DT))
    assert result.score == pytest.approx(r)
    tiny = uncertainty_reduction_curve(one_pixel_uncertainty, x, maps, fraction=0.01)  # round(0.16) -> at least 1
    assert tiny.curve.shape == (1,) and tiny.score == 0.0  # median of (r, 0, 0)
    same = uncertainty_reduction_curve(one_pixel_uncertainty, x, maps, percent=25)
    assert torch.equal(same.curve, result.curve)
    finite = uncertainty_reduction_curve(one_pixel_uncertainty, x[:1], maps[:1], fraction=0.25, sigma=10.0)
    assert finite.score == pytest.approx(1 - float(gaussian_blur(x[:1], 10.0)[0, 0, 1, 2]))


def test_entropy_information_curve_hand_computed():
    x = bright_pixel_images()
    right = entropy_information_curve(one_pixel_uncertainty, x, map_with_pixel_at_rank(0))
    expected = torch.tensor([1.0] + [1 / 16] * 16, dtype=DT)
    assert torch.allclose(right.curve, expected)
    assert torch.allclose(right.fractions, torch.arange(17, dtype=DT) / 16)
    assert right.area_over == pytest.approx(1 - (0.5 * (1 + 1 / 16) + 15 / 16) / 16)
    last = entropy_information_curve(one_pixel_uncertainty, x, map_with_pixel_at_rank(15))
    assert torch.allclose(last.curve, torch.tensor([1.0] * 16 + [1 / 16], dtype=DT))
    assert last.area_over == pytest.approx(1 - (15 + 0.5 * (1 + 1 / 16)) / 16)
    coarse = entropy_information_curve(one_pixel_uncertainty, x, map_with_pixel_at_rank(5), steps=4)
    # counts 0, 4, 8, 12, 16: the bright pixel (rank 5) is replaced from count 8 on
    assert torch.allclose(coarse.curve, torch.tensor([1, 1, 1 / 16, 1 / 16, 1 / 16], dtype=DT))
    assert coarse.area_over == pytest.approx(1 - 0.25 * (0.5 * 1 + 1 + 1 / 16 + 1 / 16 + 0.5 / 16))


def test_entropy_information_curve_is_running_minimum_and_clipped():
    x = bright_pixel_images()

    def rebounding(images):  # U falls to 0.2 when pixel 0 changes, then climbs back
        changed = (images.reshape(images.shape[0], -1) != x.reshape(1, -1)).sum(1).to(DT)
        return torch.where(changed == 1, torch.full_like(changed, 0.2), 1 + changed)

    x = x + torch.arange(16, dtype=DT).view(1, 1, 4, 4) / 100  # every pixel differs from the mean
    result = entropy_information_curve(rebounding, x, torch.zeros(1, 1, 4, 4, dtype=DT), steps=16)
    assert torch.allclose(result.curve, torch.tensor([1.0] + [0.2] * 16, dtype=DT))


def test_bad_input_raises_naming_the_argument():
    x = bright_pixel_images(2)
    good = torch.rand(2, 1, 4, 4, dtype=DT)
    f = one_pixel_uncertainty
    with pytest.raises(ValueError, match="attributions"):
        uncertainty_reduction_curve(f, x, torch.rand(3, 1, 4, 4))
    nan = good.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="attributions.*NaN"):
        entropy_information_curve(f, x, nan)
    for percent in (0, 150):
        with pytest.raises(ValueError, match="percent"):
            uncertainty_reduction_curve(f, x, good, percent=percent)
    with pytest.raises(ValueError, match="steps"):
        entropy_information_curve(f, x, good, steps=0)


def test_reduction_curves_on_features_by_hand():
    """U(x) = sum of squared features; the map ranks features; replacing with the (zero) mean
    removes a feature's square."""
    x = torch.tensor([[3.0, 1.0, 2.0, 0.5], [1.0, 2.0, 0.0, 4.0]], dtype=DT)
    maps = torch.tensor([[0.9, 0.1, 0.5, 0.0], [0.2, 0.1, 0.3, 0.8]], dtype=DT)

    def forward(features):
        return features.square().sum(1)

    u = forward(x)  # 14.25, 21
    urc = uncertainty_reduction_curve(forward, x, maps, fraction=0.5, baseline=torch.zeros(4, dtype=DT))
    # image 0: removes 9 then 4 -> 9/14.25, 13/14.25; image 1 (order 3, 2, 0, 1): 16/21, 16/21
    expected = torch.tensor([[9 / 14.25, 13 / 14.25], [16 / 21, 16 / 21]], dtype=DT)
    assert torch.allclose(urc.per_image, expected) and torch.allclose(urc.reference, u)
    eic = entropy_information_curve(forward, x, maps, baseline=0.0)
    assert eic.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert torch.allclose(eic.per_image[0], torch.tensor([1, 5.25 / 14.25, 1.25 / 14.25, 0.25 / 14.25, 0], dtype=DT))
    with pytest.raises(ValueError, match="baseline="):
        uncertainty_reduction_curve(forward, x, maps)
    with pytest.raises(ValueError, match="features' shape"):
        uncertainty_reduction_curve(forward, x, maps[:, :3], baseline=0.0)
