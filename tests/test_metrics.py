"""Metrics against tiny hand-computed cases, plus random vs UA-Backprop on a trained ensemble."""

import pytest
import torch

from captum_uncertainty import UncertaintyForward
from captum_uncertainty.attr.blur_ig import gaussian_blur
from captum_uncertainty.attr.ua_backprop import UABackprop
from captum_uncertainty.data import load_digits, train_ensemble
from captum_uncertainty.metrics import (
    anomaly_localization,
    blurring_test,
    entropy_information_curve,
    insertion_deletion,
    make_anomalies,
    uncertainty_reduction_curve,
)


def one_pixel_uncertainty(images):
    """A 'model' whose uncertainty is the value of pixel (1, 2)."""
    return images[:, 0, 1, 2]


def bright_pixel_image():
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 2] = 1.0
    return x


def right_and_reversed_maps():
    right = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    right[0, 0, 1, 2] = 1.0
    reversed_ = 1.0 - right
    return right, reversed_


def test_blurring_test_hand_computed_right_and_reversed():
    x = bright_pixel_image()
    right, reversed_ = right_and_reversed_maps()
    result = blurring_test(one_pixel_uncertainty, x, right, fraction=0.25, sigma_step=0.5, max_sigma=20.0)
    # the sigma search keeps the blur that leaves the least of the bright pixel
    sigmas = torch.arange(0, 20.25, 0.5, dtype=torch.float64)
    values = torch.stack([gaussian_blur(x, float(s))[0, 0, 1, 2] for s in sigmas])
    assert float(result.sigma[0]) == float(sigmas[values.argmin()])
    r = 1 - float(values.min())
    assert r > 0.9
    assert result.curve.shape == (4,)
    assert torch.allclose(result.curve, torch.full((4,), r, dtype=torch.float64))
    assert result.murr == pytest.approx(r)
    # area under 1 - URR over t = 0..4 with URR(0) = 0: trapezoid by hand
    assert result.auc_urr == pytest.approx(0.25 * (0.5 * (1 + (1 - r)) + 3 * (1 - r)))
    wrong = blurring_test(one_pixel_uncertainty, x, reversed_, fraction=0.25, sigma_step=0.5)
    assert wrong.murr == pytest.approx(0.0) and wrong.auc_urr == pytest.approx(1.0)


def test_blurring_curve_is_running_max_median_over_images():
    x = bright_pixel_image().repeat(3, 1, 1, 1)
    right, reversed_ = right_and_reversed_maps()
    # image 0 and 1: right map; image 2: reversed. The bright pixel is ranked 1st, 1st, 16th.
    maps = torch.cat([right, right * 0.5 + 0.01 * torch.arange(16.0).view(1, 1, 4, 4), reversed_])
    result = blurring_test(one_pixel_uncertainty, x, maps, fraction=0.25, sigma_step=1.0, max_sigma=4.0)
    per_image = result.per_image
    assert (per_image[:, 1:] >= per_image[:, :-1]).all()  # running max
    assert torch.allclose(per_image[2], torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(result.curve, per_image.median(0).values)
    assert torch.allclose(result.curve, per_image[0])  # median of (r, r, 0) is r


def test_uncertainty_reduction_and_information_curves_hand_computed():
    x = bright_pixel_image()
    right, reversed_ = right_and_reversed_maps()
    v = float(gaussian_blur(x, 4.0)[0, 0, 1, 2])  # fully blurred: sigma = the larger side
    urc = uncertainty_reduction_curve(one_pixel_uncertainty, x, right, fraction=0.125)
    assert urc.score == pytest.approx(1 - v) and urc.curve.shape == (2,)
    assert uncertainty_reduction_curve(one_pixel_uncertainty, x, reversed_, fraction=0.125).score == pytest.approx(0)
    eic = entropy_information_curve(one_pixel_uncertainty, x, right, points=5)
    assert torch.allclose(eic.curve, torch.tensor([1, v, v, v, v], dtype=torch.float64))
    assert eic.area_over == pytest.approx(1 - 0.25 * (0.5 * (1 + v) + 3 * v))
    late = entropy_information_curve(one_pixel_uncertainty, x, reversed_, points=5)
    assert torch.allclose(late.curve, torch.tensor([1, 1, 1, 1, v], dtype=torch.float64))


def test_insertion_deletion_hand_computed():
    def classifier(images):
        total = images.flatten(1).sum(1)
        return torch.stack([total, torch.zeros_like(total)], dim=1)

    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    maps = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]], dtype=torch.float64)
    sums = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    deletion = insertion_deletion(classifier, x, maps, target=0, mode="deletion", steps=4)
    assert torch.allclose(deletion.curve, torch.sigmoid(sums))
    assert deletion.auc == pytest.approx(float(torch.trapezoid(torch.sigmoid(sums), dx=0.25)))
    insertion = insertion_deletion(classifier, x, maps, mode="insertion", steps=4)  # target = predicted = 0
    assert torch.allclose(insertion.curve, torch.sigmoid(sums.flip(0)))


def test_make_anomalies_boxes_hold_exactly_the_changed_pixels():
    x_test = torch.zeros(12, 1, 8, 8)
    x_train = torch.ones(5, 1, 8, 8)
    weights = torch.linspace(0, 1, 64).view(1, 1, 8, 8)

    def forward(images):  # the rise depends on where the patch lands
        return (images * weights).flatten(1).sum(1)

    anomalies = make_anomalies(forward, x_test, x_train, n_images=4, patch_size=3, seed=1)
    assert anomalies.images.shape == (4, 1, 8, 8) and anomalies.boxes.shape == (4, 4)
    assert (anomalies.rise[:-1] >= anomalies.rise[1:]).all()
    for image, (top, left, bottom, right) in zip(anomalies.images, anomalies.boxes.tolist()):
        assert (bottom - top, right - left) == (3, 3)
        expected = torch.zeros(1, 8, 8)
        expected[:, top:bottom, left:right] = 1
        assert torch.equal(image, expected)


def test_anomaly_localization_iou_hand_computed():
    maps = torch.zeros(2, 1, 8, 8)
    maps[:, 0, 2:5, 3:6] = 1.0
    truth = torch.tensor([[2, 3, 5, 6], [2, 4, 5, 7]])  # second one shifted one column
    result = anomaly_localization(maps, truth)
    assert result.predicted_boxes.tolist() == [[2, 3, 5, 6], [2, 3, 5, 6]]
    assert torch.allclose(result.per_image_iou, torch.tensor([1.0, 6 / 12], dtype=torch.float64))
    assert result.iou == pytest.approx(0.75) and result.ada == pytest.approx(0.5)


def test_bad_input():
    x = bright_pixel_image()
    right, _ = right_and_reversed_maps()
    with pytest.raises(ValueError, match="maps must have shape"):
        blurring_test(one_pixel_uncertainty, x, torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="NaN"):
        blurring_test(one_pixel_uncertainty, x, right * float("nan"))
    for fraction in (0, 1.5, -0.1, 5):
        with pytest.raises(ValueError, match="fraction"):
            blurring_test(one_pixel_uncertainty, x, right, fraction=fraction)
    with pytest.raises(ValueError, match="empty"):
        blurring_test(one_pixel_uncertainty, x[:0], right[:0])
    with pytest.raises(ValueError, match="mode"):
        insertion_deletion(one_pixel_uncertainty, x, right, mode="both")
    with pytest.raises(ValueError, match="boxes"):
        anomaly_localization(right, torch.zeros(2, 4))


def test_random_maps_score_worse_than_ua_backprop_on_a_trained_ensemble():
    data = load_digits(test_size=300, seed=0)
    members = train_ensemble(n_members=3, data=data, epochs=8, seed=0, cache_dir=None, progress=False)
    uf = UncertaintyForward(members, measure="epistemic")
    with torch.no_grad():
        x = data.x_test[uf(data.x_test).argsort(descending=True)[:40]]
    ua_maps = UABackprop(uf).attribute(x)
    random_maps = torch.rand(x.shape[0], 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ua = blurring_test(uf, x, ua_maps, fraction=0.1, sigma_step=0.5, max_sigma=8.0)
    rnd = blurring_test(uf, x, random_maps, fraction=0.1, sigma_step=0.5, max_sigma=8.0)
    assert ua.murr > rnd.murr and ua.auc_urr < rnd.auc_urr
