"""Toy models, images and maps shared by the metric tests (hand-computable cases)."""

import pytest
import torch

DT = torch.float64
PIXEL = (1, 2)  # the bright pixel; raster index 1 * 4 + 2 = 6
WEIGHTS = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=DT)


def one_pixel_uncertainty(images):
    """U(x) = x[0, 1, 2]: blurring the bright pixel (1 among 0s) lowers U."""
    return images[:, 0, PIXEL[0], PIXEL[1]]


def bright_pixel_images(n=1):
    x = torch.zeros(n, 1, 4, 4, dtype=DT)
    x[:, 0, PIXEL[0], PIXEL[1]] = 1.0
    return x


def map_with_pixel_at_rank(rank):
    """A 4x4 map putting the bright pixel at the given rank (0 = first), others in raster order."""
    m = torch.zeros(1, 1, 4, 4, dtype=DT)
    order = [i for i in range(16) if i != 6]
    order.insert(rank, 6)
    for position, index in enumerate(order):
        m.view(-1)[index] = 16 - position
    return m


def blurred_value(sigma):
    """The bright pixel's value after a Gaussian blur (reference: scipy, mode reflect)."""
    ndimage = pytest.importorskip("scipy.ndimage")
    return float(ndimage.gaussian_filter(bright_pixel_images()[0, 0].numpy(), sigma, mode="reflect")[PIXEL])


def linear_probabilities(images):
    s = images.reshape(images.shape[0], -1) @ WEIGHTS
    return torch.stack([s, 1 - s], dim=1)
