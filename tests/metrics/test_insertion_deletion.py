"""Insertion and deletion AUCs against a hand-computed linear toy and brute force on features."""

import pytest
import torch
from torch import nn

from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.metrics import insertion_deletion
from tests.helpers.metric_toys import DT, WEIGHTS, bright_pixel_images, linear_probabilities


def test_insertion_deletion_linear_toy_hand_computed():
    x = torch.ones(1, 1, 2, 2, dtype=DT)
    good = WEIGHTS.view(1, 1, 2, 2)
    deletion = insertion_deletion(linear_probabilities, x, good, mode="deletion", steps=4, probabilities=True)
    assert torch.allclose(deletion.curve, torch.tensor([1, 0.6, 0.3, 0.1, 0], dtype=DT))
    assert deletion.auc == pytest.approx(0.25 * (0.5 + 0.6 + 0.3 + 0.1))  # 0.375
    worse = insertion_deletion(linear_probabilities, x, 1 - good, mode="deletion", steps=4, probabilities=True)
    assert worse.auc == pytest.approx(0.625)
    insertion = insertion_deletion(linear_probabilities, x, good, mode="insertion", steps=None, probabilities=True)
    assert torch.allclose(insertion.curve, torch.tensor([0, 0.4, 0.7, 0.9, 1], dtype=DT))
    assert insertion.auc == pytest.approx(0.625)
    other = insertion_deletion(linear_probabilities, x, good, target=1, steps=4, probabilities=True)
    assert other.auc == pytest.approx(0.625) and int(other.target[0]) == 1
    # logits through a softmax, and an UncertaintyForward's predictive mean, give the same curve
    logits = insertion_deletion(lambda z: linear_probabilities(z).log(), x, good, steps=4)
    assert torch.allclose(logits.curve, deletion.curve)

    class Member(nn.Module):
        def forward(self, z):
            return linear_probabilities(z)

    uf = UncertaintyForward([Member(), Member()], probabilities=True)
    assert torch.allclose(insertion_deletion(uf, x, good, steps=4).curve, deletion.curve)
    # a blurred constant image is the image itself: nothing is removed
    assert insertion_deletion(
        linear_probabilities, x, good, baseline="blur", steps=4, probabilities=True
    ).auc == pytest.approx(1.0)


def test_insertion_deletion_mean_over_images():
    x = torch.ones(2, 1, 2, 2, dtype=DT)
    maps = torch.stack([WEIGHTS.view(1, 2, 2), 1 - WEIGHTS.view(1, 2, 2)])
    result = insertion_deletion(linear_probabilities, x, maps, steps=4, probabilities=True, max_examples_per_batch=3)
    assert torch.allclose(result.per_image_auc, torch.tensor([0.375, 0.625], dtype=DT))
    assert result.auc == pytest.approx(0.5)


def test_bad_input_raises_naming_the_argument():
    x = bright_pixel_images(2)
    good = torch.rand(2, 1, 4, 4, dtype=DT)
    with pytest.raises(ValueError, match="mode"):
        insertion_deletion(linear_probabilities, x, good, mode="both")


def test_deletion_on_features_with_a_training_mean_baseline():
    torch.manual_seed(0)
    weights = torch.randn(5, 3, dtype=DT)

    def classifier(features):
        return features @ weights

    x = torch.randn(4, 5, dtype=DT)
    mean = torch.randn(5, dtype=DT)
    maps = torch.rand(4, 5, dtype=DT)
    result = insertion_deletion(classifier, x, maps, baseline=mean, steps=None)
    target = torch.softmax(classifier(x), 1).argmax(1)
    for n in range(4):  # brute force: remove the top-k features one image at a time
        order = torch.argsort(maps[n], descending=True, stable=True)
        for k in range(6):
            image = x[n].clone()
            image[order[:k]] = mean[order[:k]]
            expected = torch.softmax(classifier(image[None]), 1)[0, target[n]]
            assert torch.allclose(result.per_image[n, k], expected)
    with pytest.raises(ValueError, match="images"):
        insertion_deletion(classifier, x, maps, baseline="blur")
