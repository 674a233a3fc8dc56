"""Planted anomalies and their localisation (IoU, ADA) against hand-computed boxes."""

import pytest
import torch

from captum_uncertainty.metrics import anomaly_localization, default_patch_size, make_anomalies
from tests.helpers.metric_toys import DT, bright_pixel_images, one_pixel_uncertainty


def test_anomaly_localization_exact_iou():
    maps = torch.zeros(2, 1, 8, 8)
    maps[:, :, 2:5, 3:6] = 1.0  # bright 3x3 window at (2, 3)
    boxes = torch.tensor([[2, 3, 5, 6], [3, 4, 6, 7]])  # exact, and shifted by one row and column
    result = anomaly_localization(maps, boxes)
    assert result.predicted_boxes.tolist() == [[2, 3, 5, 6], [2, 3, 5, 6]]
    assert result.per_image_iou.tolist() == pytest.approx([1.0, 4 / 14])  # overlap 2x2, union 9 + 9 - 4
    assert result.iou == pytest.approx((1 + 4 / 14) / 2) and result.ada == 0.5
    ties = anomaly_localization(torch.zeros(1, 8, 8), torch.tensor([[0, 0, 3, 3]]))
    assert ties.predicted_boxes.tolist() == [[0, 0, 3, 3]] and ties.iou == 1.0
    bigger = anomaly_localization(maps[:1], boxes[:1], patch_size=4)  # windows of 4 containing the 3x3
    assert bigger.per_image_iou.tolist() == pytest.approx([9 / 16])


def test_make_anomalies_boxes_hold_exactly_the_changed_pixels():
    torch.manual_seed(0)
    x_test, x_train = torch.rand(6, 2, 8, 8, dtype=DT), torch.rand(5, 2, 8, 8, dtype=DT)

    def total(images):
        return images.sum((1, 2, 3))

    a = make_anomalies(total, x_test, x_train, n_images=3, seed=3)
    assert a.images.shape == (3, 2, 8, 8) and a.boxes.dtype == torch.long
    for image, box, index, donor in zip(a.images, a.boxes, a.indices, a.donors):
        top, left, bottom, right = box.tolist()
        assert bottom - top == right - left == default_patch_size(8) == 3
        changed = (image != x_test[index]).any(0)
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert torch.equal(changed, inside)
        assert torch.equal(image[:, inside], x_train[donor][:, inside])
    assert torch.allclose(a.rise, total(a.images) - total(x_test[a.indices]))
    everyone = make_anomalies(total, x_test, x_train, n_images=6, seed=3)
    assert bool((everyone.rise[:-1] >= everyone.rise[1:]).all())
    assert torch.equal(everyone.boxes[:3], a.boxes) and torch.equal(everyone.indices[:3], a.indices)
    few = make_anomalies(total, x_test, x_train, n_images=2, candidates=torch.tensor([4, 5]), seed=3)
    assert sorted(few.indices.tolist()) == [4, 5]
    assert (default_patch_size(28), default_patch_size(32)) == (9, 10)


def test_bad_input_raises_naming_the_argument():
    x = bright_pixel_images(2)
    good = torch.rand(2, 1, 4, 4, dtype=DT)
    f = one_pixel_uncertainty
    with pytest.raises(ValueError, match="boxes"):
        anomaly_localization(good, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="attributions"):
        anomaly_localization(good[:0], torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="n_images"):
        make_anomalies(f, x, x, n_images=3)
    with pytest.raises(ValueError, match="x_train"):
        make_anomalies(f, x, torch.rand(2, 1, 5, 5, dtype=DT), n_images=1)
