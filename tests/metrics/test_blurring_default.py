"""The blurring test's default reading (map-independent) and its count of images no blur helps."""

from __future__ import annotations

import warnings

import pytest
import torch

from captum_uncertainty.metrics import UninformativeBlurWarning, blurring_test, full_blur_sigma


def detail(images):
    """Pixel variance per image: a blur lowers it."""
    return images.flatten(1).var(1)


def test_the_default_is_the_map_independent_reading():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    maps = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    uncertainty = lambda images: 1 + detail(images)  # noqa: E731 - blur lowers it
    default = blurring_test(uncertainty, x, maps, fraction=0.25, sigma_step=0.5, max_sigma=4.0)
    full = blurring_test(uncertainty, x, maps, fraction=0.25, sigma_step=0.5, max_sigma=4.0, sigma_selection="full")
    torch.testing.assert_close(default.per_image, full.per_image)
    torch.testing.assert_close(default.sigma, full_blur_sigma(uncertainty, x, 0.5, 4.0))
    assert default.no_blur == 0


def test_images_no_blur_helps_are_counted_and_warned_about():
    torch.manual_seed(0)
    x = torch.rand(4, 2, 8, 8, dtype=torch.float64)
    x[:, 1] = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64).view(4, 1, 1)  # a tag no blur changes
    maps = torch.rand(4, 1, 8, 8, dtype=torch.float64)

    def uncertainty(images):  # untagged images (0 and 1) only get more uncertain when blurred
        variance = detail(images[:, :1])
        return torch.where(images[:, 1].mean((1, 2)) > 0.5, 1 + variance, 2 - variance)

    with pytest.warns(UninformativeBlurWarning, match="2 of 4 images have no blur that lowers"):
        result = blurring_test(uncertainty, x, maps, fraction=0.25, sigma_step=0.5, max_sigma=4.0)
    assert result.no_blur == 2
    assert result.sigma[:2].eq(0).all() and result.sigma[2:].gt(0).all()
    assert result.per_image[:2].eq(0).all()  # reduction 0 whatever the map


def test_no_warning_below_a_quarter_of_the_images():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 8, 8, dtype=torch.float64)
    maps = torch.rand(8, 1, 8, 8, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = blurring_test(lambda images: 1 + detail(images), x, maps, fraction=0.25, max_sigma=2.0)
    assert result.no_blur == 0
