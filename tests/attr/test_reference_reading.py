"""Perez et al.'s reference-code reading (Featurespace uncertainty-attribution): the
LossNotDecreasing stopping rule, the class-averaged BCE, the EIC normalised by the fully replaced
image and the sigma = 1.5 replacement. The reference in-class fiducial and the refined latents
are tested with the other CounterfactualPathIG tests in test_counterfactual.py."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from captum_uncertainty.attr import LossNotDecreasing
from captum_uncertainty.attr._utils.latent_search import class_averaged_bce, search_latents
from captum_uncertainty.attr.counterfactual_path import reference_in_class_settings
from captum_uncertainty.metrics import entropy_information_curve, uncertainty_reduction_curve


def tfp_stop_step(losses, atol=0.0, rtol=0.0, window_size=10, min_steps=20):
    """The first step at which tfp's LossNotDecreasing reports convergence, written out."""
    previous, average, initial = losses[0], 0.0, 0.0
    decay = 1 - 1 / window_size
    for step, loss in enumerate(losses, start=1):
        decrease = previous - loss
        average = decrease + decay * (average - decrease)
        converged = average < max(atol, rtol * initial)
        if step <= window_size:
            initial = average
        previous = loss
        if converged and step >= min_steps:
            return step
    return None


@pytest.mark.parametrize("atol,rtol", [(None, 1e-3), (1e-3, None), (0.05, 0.01)])
def test_loss_not_decreasing_stops_where_tfp_would(atol, rtol):
    """Two inputs with different loss histories stop at the steps the scalar rule gives."""
    histories = [
        [100.0 * 0.8**t + 1.0 for t in range(300)],
        [50.0 / (1 + t) + 0.01 * math.sin(t) for t in range(300)],
    ]
    rule = LossNotDecreasing(atol=atol, rtol=rtol)
    state = rule.start(torch.zeros(2, dtype=torch.float64))
    stopped = [None, None]
    for step in range(1, 301):
        losses = torch.tensor([h[step - 1] for h in histories], dtype=torch.float64)
        done = state.stop(torch.arange(2), losses, step)
        for row in range(2):
            if done[row] and stopped[row] is None:
                stopped[row] = step
    expected = [tfp_stop_step(h, atol or 0.0, rtol or 0.0) for h in histories]
    assert stopped == expected
    assert all(step is not None and step >= 20 for step in expected)


def test_search_with_loss_not_decreasing_stops_each_row_on_its_own():
    target = torch.tensor([[1.0, -2.0], [30.0, 5.0]], dtype=torch.float64)

    def objective(latents, rows):
        return (latents - target[rows]).square().sum(1)

    start = torch.zeros(2, 2, dtype=torch.float64)
    found = search_latents(objective, start, lr=0.1, max_iterations=2000, stopping=LossNotDecreasing(atol=1e-4))
    assert (found.iterations >= 20).all() and (found.iterations < 2000).all()
    assert found.iterations[0] != found.iterations[1]
    assert torch.allclose(found.latents[0], target[0], atol=0.05)
    alone = search_latents(objective, start[:1], lr=0.1, max_iterations=2000, stopping=LossNotDecreasing(atol=1e-4))
    assert alone.iterations[0] == found.iterations[0]  # a row stops the same with or without the others


def test_loss_not_decreasing_rejects_bad_settings():
    with pytest.raises(ValueError, match="atol or rtol"):
        LossNotDecreasing()
    with pytest.raises(ValueError, match="window_size"):
        LossNotDecreasing(atol=1e-3, window_size=0)
    with pytest.raises(TypeError, match="stopping"):
        search_latents(lambda z, rows: z.sum(1), torch.zeros(1, 2), stopping="tfp")


def test_class_averaged_bce_by_hand():
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], dtype=torch.float64)
    target = torch.tensor([0, 2])
    expected = torch.tensor(
        [-(math.log(0.7) + math.log(0.8) + math.log(0.9)) / 3, -(2 * math.log(0.75) + math.log(0.5)) / 3],
        dtype=torch.float64,
    )
    assert torch.allclose(class_averaged_bce(probabilities.log(), target), expected)


def test_reference_settings_scale_with_the_image():
    settings = reference_in_class_settings(torch.zeros(2, 1, 28, 28))
    assert settings["class_weight"] == 1e4 * 784
    assert settings["class_loss"] == "class_averaged_bce" and settings["max_iterations"] == 2000
    assert settings["stopping"].rtol == 1e-3 and settings["stopping"].atol == 0.0


def pixel_sum(images):
    return images.flatten(1).sum(1)


def test_eic_normalised_by_the_fully_replaced_image_by_hand():
    """U = pixel sum, 2x2 images, replacement 0.5 everywhere: r(k) = U(x_k) / U(x_4), no clipping."""
    images = torch.tensor([[[[1.0, 0.0], [0.2, 0.9]]], [[[0.1, 0.4], [0.3, 0.8]]]], dtype=torch.float64)
    maps = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]], [[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    result = entropy_information_curve(pixel_sum, images, maps, baseline=0.5, normalization="replaced")
    order = [[(0, 0), (0, 1), (1, 0), (1, 1)], [(1, 1), (1, 0), (0, 1), (0, 0)]]
    expected = []
    for image, pixels in zip(images[:, 0], order):
        current, values = image.clone(), [float(image.sum())]
        for row, column in pixels:
            current[row, column] = 0.5
            values.append(float(current.sum()))
        expected.append([v / values[-1] for v in values])
    expected = torch.tensor(expected, dtype=torch.float64)
    assert torch.allclose(result.per_image, expected)
    assert expected.max() > 1  # the reference reading is not clipped
    curve = expected.median(0).values if expected.shape[0] % 2 else expected.mean(0)
    area = float(np.trapezoid(curve.numpy(), np.linspace(0, 1, 5)))
    assert result.area_over == pytest.approx(1 - area)
    with pytest.raises(ValueError, match="normalization"):
        entropy_information_curve(pixel_sum, images, maps, baseline=0.5, normalization="blurred")


def test_urc_with_sigma_1_5_replaces_by_scipys_gaussian_filter():
    """The reference's replacement is scipy's gaussian_filter(sigma=1.5) (reflect, truncate 4)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 12, 12, generator=generator, dtype=torch.float64)
    maps = torch.rand(3, 1, 12, 12, generator=generator, dtype=torch.float64)
    blurred = torch.from_numpy(gaussian_filter(images.numpy(), sigma=(0, 0, 1.5, 1.5)))
    result = uncertainty_reduction_curve(pixel_sum, images, maps, fraction=0.05, sigma=1.5)
    with_baseline = uncertainty_reduction_curve(pixel_sum, images, maps, fraction=0.05, baseline=blurred)
    assert torch.allclose(result.per_image, with_baseline.per_image, atol=1e-12)


def test_above_median_sample_draws_only_above_the_median():
    from captum_uncertainty.experiments.reference_reading import above_median_sample

    uncertainty = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.2, 0.8])  # median (lower middle) 0.5
    drawn = above_median_sample(uncertainty, images=2, seed=0)
    assert drawn.numel() == 2 and set(drawn.tolist()) <= {1, 3, 5}
    assert torch.equal(drawn, above_median_sample(uncertainty, images=2, seed=0))
    assert above_median_sample(uncertainty, images=10, seed=1).tolist() == [1, 3, 5]


def test_cli_reference_reading_needs_a_vae_study(capsys):
    from captum_uncertainty.__main__ import main

    assert main(["benchmark", "--reading", "reference", "--out", "unused"]) == 2
    assert "--vae-latent-sizes" in capsys.readouterr().err
