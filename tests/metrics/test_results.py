"""The common face of the metric results: ``score`` is the headline field, ``higher_is_better`` its
direction (a perfect map beats a wrong one in that direction), and the named tuples still unpack."""

import pytest
import torch

from captum_uncertainty.metrics import (
    BlurringResult,
    DeletionResult,
    InformationCurve,
    InsertionDeletionResult,
    InsertionResult,
    LocalizationResult,
    ReductionCurve,
    anomaly_localization,
    blurring_test,
    entropy_information_curve,
    insertion_deletion,
    uncertainty_reduction_curve,
)
from captum_uncertainty.metrics._utils.results import MetricResult
from tests.helpers.metric_toys import (
    DT,
    WEIGHTS,
    bright_pixel_images,
    linear_probabilities,
    map_with_pixel_at_rank,
    one_pixel_uncertainty,
)

RIGHT, WRONG = map_with_pixel_at_rank(0), map_with_pixel_at_rank(15)  # the bright pixel first / last


def better(result, other):
    """``result`` is the better of the two in its metric's direction."""
    return result.score > other.score if result.higher_is_better else result.score < other.score


def by_map(metric):
    return metric(RIGHT), metric(WRONG)


def test_blurring_score_is_murr_and_higher_is_better():
    x = bright_pixel_images()
    right, wrong = by_map(lambda m: blurring_test(one_pixel_uncertainty, x, m, fraction=0.25, max_sigma=2.0))
    assert isinstance(right, BlurringResult) and BlurringResult.higher_is_better is True
    assert right.score == right.murr and wrong.score == wrong.murr
    assert better(right, wrong) and not better(wrong, right)


def test_reduction_curves_scores_and_higher_is_better():
    x = bright_pixel_images()
    right, wrong = by_map(lambda m: uncertainty_reduction_curve(one_pixel_uncertainty, x, m, fraction=0.25))
    assert isinstance(right, ReductionCurve) and ReductionCurve.higher_is_better is True
    assert right.score == right[0] and better(right, wrong)
    right, wrong = by_map(lambda m: entropy_information_curve(one_pixel_uncertainty, x, m))
    assert isinstance(right, InformationCurve) and InformationCurve.higher_is_better is True
    assert right.score == right.area_over and wrong.score == wrong.area_over
    assert better(right, wrong)


def test_insertion_deletion_score_is_auc_and_direction_follows_the_mode():
    x = torch.ones(1, 1, 2, 2, dtype=DT)
    good, bad = WEIGHTS.view(1, 1, 2, 2), 1 - WEIGHTS.view(1, 1, 2, 2)
    for mode, kind, higher in (("deletion", DeletionResult, False), ("insertion", InsertionResult, True)):
        right, wrong = (
            insertion_deletion(linear_probabilities, x, m, mode=mode, steps=4, probabilities=True) for m in (good, bad)
        )
        assert type(right) is kind and isinstance(right, InsertionDeletionResult)
        assert kind.higher_is_better is higher and right.higher_is_better is higher
        assert right.score == right.auc and wrong.score == wrong.auc
        assert better(right, wrong) and not better(wrong, right)


def test_localization_score_is_iou_and_higher_is_better():
    maps = torch.zeros(1, 1, 8, 8)
    maps[:, :, 2:5, 3:6] = 1.0
    right = anomaly_localization(maps, torch.tensor([[2, 3, 5, 6]]))
    wrong = anomaly_localization(maps, torch.tensor([[5, 0, 8, 3]]))
    assert isinstance(right, LocalizationResult) and LocalizationResult.higher_is_better is True
    assert right.score == right.iou == 1.0 and wrong.score == wrong.iou == 0.0
    assert better(right, wrong)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: blurring_test(one_pixel_uncertainty, x, RIGHT, fraction=0.25, max_sigma=1.0),
        lambda x: uncertainty_reduction_curve(one_pixel_uncertainty, x, RIGHT, fraction=0.25),
        lambda x: entropy_information_curve(one_pixel_uncertainty, x, RIGHT, steps=4),
        lambda x: insertion_deletion(
            lambda z: torch.stack([z[:, 0, 1, 2], 1 - z[:, 0, 1, 2]], 1), x, RIGHT, steps=4, probabilities=True
        ),
        lambda x: anomaly_localization(RIGHT, torch.tensor([[0, 0, 1, 1]]), patch_size=1),
    ],
    ids=["blurring", "urc", "eic", "deletion", "localization"],
)
def test_every_result_is_a_metric_result_and_still_a_named_tuple(make):
    result = make(bright_pixel_images())
    assert isinstance(result, MetricResult) and isinstance(result.higher_is_better, bool)
    fields = result._asdict()
    assert list(fields) == list(type(result)._fields) and "higher_is_better" not in fields
    assert tuple(result) == tuple(fields.values()) and len(result) == len(fields)
    first, *rest = result  # tuple unpacking keeps the old fields in order
    assert first == result.score and len(rest) == len(fields) - 1
    assert type(result)._make(tuple(result)).score == result.score and not hasattr(result, "__dict__")


def test_a_smaller_budget_is_the_larger_results_prefix():
    """``truncated`` equals the metric run with the smaller budget: the URC always, the blurring test
    with each image's sigma fixed (given, or the map-independent "full" search); with random maps so
    that the curves move at every step."""
    from captum_uncertainty.metrics import full_blur_sigma, pixel_budget

    torch.manual_seed(0)
    x = torch.rand(6, 1, 9, 9, dtype=DT)
    maps = torch.rand(6, 1, 9, 9, dtype=DT)

    def uncertainty(images):
        return (images[:, 0, 2:5, 2:5].sum((1, 2)) + 0.1 * images.flatten(1).sum(1)).to(DT)

    small, large = pixel_budget(0.1, 9, 9), pixel_budget(0.4, 9, 9)
    assert (small, large) == (8, 32)
    urc = uncertainty_reduction_curve(uncertainty, x, maps, fraction=0.4)
    cut = urc.truncated(small)
    expected = uncertainty_reduction_curve(uncertainty, x, maps, fraction=0.1)
    assert cut.score == expected.score and torch.equal(cut.curve, expected.curve)
    assert torch.equal(cut.per_image, expected.per_image) and cut.score != urc.score
    sigma = full_blur_sigma(uncertainty, x, sigma_step=0.5, max_sigma=3.0)
    blur = blurring_test(uncertainty, x, maps, fraction=0.4, sigma=sigma).truncated(small)
    expected = blurring_test(uncertainty, x, maps, fraction=0.1, sigma_step=0.5, max_sigma=3.0, sigma_selection="full")
    assert (blur.murr, blur.auc_urr) == (expected.murr, expected.auc_urr)
    assert torch.equal(blur.curve, expected.curve) and torch.equal(blur.sigma, expected.sigma)
    with pytest.raises(ValueError, match="steps"):
        urc.truncated(large + 1)
