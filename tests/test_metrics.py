"""captum_uncertainty.metrics against tiny hand-computed cases and brute-force references."""

import math

import pytest
import torch
from torch import nn

from captum_uncertainty import gaussian_blur
from captum_uncertainty.attr.ua_backprop import UABackprop
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.metrics import (
    anomaly_localization,
    blurring_test,
    default_patch_size,
    entropy_information_curve,
    full_blur_sigma,
    insertion_deletion,
    make_anomalies,
    uncertainty_reduction_curve,
)
from captum_uncertainty.metrics.blurring import area_over_curve_remaining, median_over_images

DT = torch.float64
PIXEL = (1, 2)  # the bright pixel; raster index 1 * 4 + 2 = 6


# ---------------------------------------------------------------------------------------------
# toy "models"
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# gaussian blur
# ---------------------------------------------------------------------------------------------
def test_gaussian_blur_matches_scipy_identity_and_mean_limit():
    ndimage = pytest.importorskip("scipy.ndimage")
    torch.manual_seed(0)
    x = torch.rand(2, 3, 5, 7, dtype=DT)
    for sigma in (0.7, 2.0, 20.0):  # 20: kernel much wider than the image
        reference = torch.stack(
            [
                torch.stack(
                    [
                        torch.from_numpy(ndimage.gaussian_filter(x[i, c].numpy(), sigma, mode="reflect"))
                        for c in range(3)
                    ]
                )
                for i in range(2)
            ]
        )
        assert torch.allclose(gaussian_blur(x, sigma), reference, atol=1e-12)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    assert torch.allclose(gaussian_blur(x, math.inf), x.mean((2, 3), keepdim=True).expand_as(x), atol=1e-12)
    mixed = gaussian_blur(x, torch.tensor([0.0, 2.0], dtype=DT))
    assert torch.equal(mixed[0], x[0]) and torch.allclose(mixed[1], gaussian_blur(x[1:], 2.0)[0])
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, -1.0)


# ---------------------------------------------------------------------------------------------
# blurring test
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("selection", ["final", "image", "step"])
def test_blurring_test_right_and_reversed_maps(selection):
    x = bright_pixel_images()
    sigmas = [0.5 * k for k in range(41)]
    r = 1 - min(blurred_value(s) for s in sigmas)  # best reduction reachable by the search
    assert r > 0.9
    right = map_with_pixel_at_rank(0)
    result = blurring_test(
        one_pixel_uncertainty, x, right, fraction=0.25, sigma_step=0.5, max_sigma=20.0, sigma_selection=selection
    )
    assert result.curve.shape == (4,) and result.per_image.shape == (1, 4)
    assert torch.allclose(result.curve, torch.full((4,), r, dtype=DT))
    assert result.murr == pytest.approx(r)
    # trapezoid under 1 - URR over t = 0..4 (URR(0) = 0), t axis normalised to [0, 1]
    assert result.auc_urr == pytest.approx(0.25 * (0.5 * 1 + 3 * (1 - r) + 0.5 * (1 - r)))
    assert 1 - blurred_value(float(result.sigma[0])) == pytest.approx(r)
    reversed_ = 1 - right  # the bright pixel last: never blurred within the budget
    wrong = blurring_test(one_pixel_uncertainty, x, reversed_, fraction=0.25, sigma_step=0.5, sigma_selection=selection)
    assert wrong.murr == 0.0 and wrong.auc_urr == pytest.approx(1.0)


def test_blurring_median_over_three_and_four_images_and_tie_order():
    x = bright_pixel_images(4)
    maps = torch.cat(
        [map_with_pixel_at_rank(0), map_with_pixel_at_rank(1), map_with_pixel_at_rank(15), map_with_pixel_at_rank(15)]
    )
    kwargs = dict(fraction=0.25, sigma_step=10.0, max_sigma=10.0)  # sigmas {0, 10}
    r = 1 - blurred_value(10.0)
    three = blurring_test(one_pixel_uncertainty, x[:3], maps[:3], **kwargs)
    assert torch.allclose(three.per_image, torch.tensor([[r, r, r, r], [0, r, r, r], [0, 0, 0, 0]], dtype=DT))
    assert torch.allclose(three.curve, torch.tensor([0, r, r, r], dtype=DT))
    assert three.murr == pytest.approx(r)
    assert three.auc_urr == pytest.approx(0.25 * (0.5 + 1 + 3 * (1 - r) - 0.5 * (1 - r)))
    four = blurring_test(one_pixel_uncertainty, x, maps, **kwargs)  # even count: mean of the two middle values
    assert torch.allclose(four.curve, torch.tensor([0, r / 2, r / 2, r / 2], dtype=DT))
    # ties keep raster order: an all-zero map blurs pixels 0, 1, ..., so the bright one (index 6) 7th
    ties = blurring_test(
        one_pixel_uncertainty, x[:1], torch.zeros(1, 1, 4, 4, dtype=DT), fraction=0.5, sigma_step=10.0, max_sigma=10.0
    )
    assert torch.allclose(ties.curve, torch.tensor([0.0] * 6 + [r, r], dtype=DT))


def reference_blurring(forward, x, maps, budget, sigmas, selection):
    """Brute force: loop over images, sigmas and t; build each blurred image separately."""
    n = x.shape[0]
    u = torch.zeros(len(sigmas), budget, n, dtype=DT)
    for i in range(n):
        order = sorted(range(16), key=lambda j: (-float(maps[i].view(-1)[j]), j))
        for s, sigma in enumerate(sigmas):
            blurred = gaussian_blur(x[i : i + 1], sigma)
            for t in range(1, budget + 1):
                image = x[i : i + 1].clone()
                for j in order[:t]:
                    image.view(-1)[j] = blurred.view(-1)[j]
                u[s, t - 1, i] = forward(image)[0]
    ref = forward(x)
    red = 1 - u / ref  # (S, T, N)
    if selection == "step":
        return torch.cummax(red.max(0).values.t(), dim=1).values
    if selection == "final":
        best = u[:, -1, :].argmin(0)
    elif selection == "full":  # U of the fully blurred image, the map plays no part
        fully = torch.stack(
            [torch.stack([forward(gaussian_blur(x[i : i + 1], s))[0] for i in range(n)]) for s in sigmas]
        )
        best = fully.argmin(0)
    else:
        best = torch.cummax(red, dim=1).values[:, -1, :].argmax(0)
    return torch.stack([torch.cummax(red[best[i], :, i], 0).values for i in range(n)])


@pytest.mark.parametrize("selection", ["final", "image", "step", "full"])
def test_blurring_matches_brute_force_and_is_batch_size_invariant(selection):
    torch.manual_seed(1)
    x = torch.rand(3, 1, 4, 4, dtype=DT)
    maps = torch.rand(3, 1, 4, 4, dtype=DT)
    w = torch.randn(16, dtype=DT)

    def forward(images):
        return nn.functional.softplus(images.reshape(images.shape[0], -1) @ w) + 0.1

    expected = reference_blurring(forward, x, maps, 3, [0.0, 0.5, 1.0, 1.5], selection)
    sizes = []

    def counting(images):
        sizes.append(images.shape[0])
        return forward(images)

    result = blurring_test(
        counting, x, maps, fraction=3 / 16, sigma_step=0.5, max_sigma=1.5, batch_size=5, sigma_selection=selection
    )
    assert max(sizes) <= 5
    assert torch.allclose(result.per_image, expected, atol=1e-12)
    assert bool((result.per_image[:, 1:] >= result.per_image[:, :-1]).all())  # running max: monotone
    whole = blurring_test(forward, x, maps, fraction=3 / 16, sigma_step=0.5, max_sigma=1.5, sigma_selection=selection)
    assert torch.allclose(whole.per_image, result.per_image) and whole.murr == pytest.approx(result.murr)


def test_full_sigma_selection_does_not_depend_on_the_map():
    """Hand-computed: U(x) = mean of the image's top-left 2x2 corner. Blurring spreads a bright
    corner outwards, so the fully blurred corner mean falls with sigma up to the flat limit; the
    chosen sigma is the grid value minimising it, whatever map is judged."""
    x = torch.zeros(2, 1, 4, 4, dtype=DT)
    x[0, 0, :2, :2] = 1.0  # bright corner: more blur, lower corner mean
    x[1, 0, 2:, 2:] = 1.0  # dark corner: more blur, higher corner mean -> sigma 0

    def forward(images):
        return images[:, 0, :2, :2].mean((1, 2)) + 0.5

    grid = [0.0, 0.5, 1.0, 1.5]
    corner = [[float(forward(gaussian_blur(x[i : i + 1], s))[0]) for s in grid] for i in range(2)]
    expected = torch.tensor([grid[min(range(4), key=lambda k: (corner[i][k], k))] for i in range(2)], dtype=DT)
    assert expected[1] == 0.0 and expected[0] > 0.0
    chosen = []
    for seed in range(3):
        torch.manual_seed(seed)
        maps = torch.rand(2, 1, 4, 4, dtype=DT)
        result = blurring_test(forward, x, maps, fraction=0.25, sigma_step=0.5, max_sigma=1.5, sigma_selection="full")
        chosen.append(result.sigma)
    for sigma in chosen:
        assert torch.equal(sigma, expected)
    final = [
        blurring_test(
            forward,
            x,
            torch.rand(2, 1, 4, 4, dtype=DT),
            fraction=0.0625,
            sigma_step=0.5,
            max_sigma=1.5,
            sigma_selection="final",
        ).sigma
        for _ in range(6)
    ]
    assert any(not torch.equal(s, final[0]) for s in final)  # the map-dependent reading moves
    # one search for many maps: full_blur_sigma, then sigma= gives the "full" reading's results
    assert torch.equal(full_blur_sigma(forward, x, sigma_step=0.5, max_sigma=1.5), expected)
    maps = torch.rand(2, 1, 4, 4, dtype=DT)
    searched = blurring_test(forward, x, maps, fraction=0.25, sigma_step=0.5, max_sigma=1.5, sigma_selection="full")
    given = blurring_test(forward, x, maps, fraction=0.25, sigma=expected)
    assert torch.equal(given.per_image, searched.per_image) and torch.equal(given.sigma, expected)
    with pytest.raises(ValueError, match="one blur per image"):
        blurring_test(forward, x, maps, sigma=expected[:1])
    with pytest.raises(ValueError, match="finite blurs"):
        blurring_test(forward, x, maps, sigma=torch.tensor([1.0, -1.0], dtype=DT))
    with pytest.raises(ValueError, match="sigma= replaces the search"):
        blurring_test(forward, x, maps, sigma=expected, sigma_selection="step")


def test_area_and_median_helpers_by_hand():
    assert area_over_curve_remaining(torch.tensor([0.5, 1.0])) == pytest.approx(0.5)  # points 1, .5, 0
    assert area_over_curve_remaining(torch.tensor([0.2])) == pytest.approx(0.9)
    assert torch.allclose(median_over_images(torch.tensor([[1.0], [3.0], [10.0], [4.0]])), torch.tensor([3.5]))


def test_blurring_accepts_channel_maps_and_uncertainty_forward():
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(2 * 16, 3)).double() for _ in range(3)]
    uf = UncertaintyForward(members, measure="epistemic")
    x = torch.rand(2, 2, 4, 4, dtype=DT)
    maps = torch.rand(2, 2, 4, 4, dtype=DT)
    a = blurring_test(uf, x, maps, fraction=0.25, sigma_step=1.0, max_sigma=2.0)
    b = blurring_test(uf, x, maps.sum(1, keepdim=True), fraction=0.25, sigma_step=1.0, max_sigma=2.0)
    assert torch.equal(a.per_image, b.per_image)
    assert a.per_image[:, -1].min() >= 0  # sigma 0 is in the search: URR(T) >= 0
    assert torch.allclose(a.reference, uf(x).detach())


# ---------------------------------------------------------------------------------------------
# Perez's URC and EIC
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# insertion / deletion
# ---------------------------------------------------------------------------------------------
WEIGHTS = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=DT)


def linear_probabilities(images):
    s = images.reshape(images.shape[0], -1) @ WEIGHTS
    return torch.stack([s, 1 - s], dim=1)


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
    result = insertion_deletion(linear_probabilities, x, maps, steps=4, probabilities=True, batch_size=3)
    assert torch.allclose(result.per_image_auc, torch.tensor([0.375, 0.625], dtype=DT))
    assert result.auc == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# anomaly localisation
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_input_raises_naming_the_argument():
    x = bright_pixel_images(2)
    good = torch.rand(2, 1, 4, 4, dtype=DT)
    f = one_pixel_uncertainty
    with pytest.raises(ValueError, match="maps"):
        blurring_test(f, x, torch.rand(2, 1, 4, 5))
    with pytest.raises(ValueError, match="maps"):
        uncertainty_reduction_curve(f, x, torch.rand(3, 1, 4, 4))
    nan = good.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="maps.*NaN"):
        entropy_information_curve(f, x, nan)
    for fraction in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            blurring_test(f, x, good, fraction=fraction)
    for percent in (0, 150):
        with pytest.raises(ValueError, match="percent"):
            uncertainty_reduction_curve(f, x, good, percent=percent)
    with pytest.raises(ValueError, match="inputs.*empty"):
        blurring_test(f, x[:0], good[:0])
    with pytest.raises(ValueError, match="batch_size"):
        blurring_test(f, x, good, batch_size=0)
    with pytest.raises(ValueError, match="sigma_selection"):
        blurring_test(f, x, good, sigma_selection="per_pixel")
    with pytest.raises(ValueError, match="forward_func"):
        blurring_test(lambda z: z.sum(1), x, good)  # (B, H, W) output, not (B,)
    with pytest.raises(ValueError, match="mode"):
        insertion_deletion(linear_probabilities, x, good, mode="both")
    with pytest.raises(ValueError, match="steps"):
        entropy_information_curve(f, x, good, steps=0)
    with pytest.raises(ValueError, match="boxes"):
        anomaly_localization(good, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="maps"):
        anomaly_localization(good[:0], torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="n_images"):
        make_anomalies(f, x, x, n_images=3)
    with pytest.raises(ValueError, match="x_train"):
        make_anomalies(f, x, torch.rand(2, 1, 5, 5, dtype=DT), n_images=1)


def test_random_maps_score_worse_than_ua_backprop_on_a_trained_ensemble(digits, digits_ensemble):
    data = digits
    uf = UncertaintyForward(digits_ensemble, measure="epistemic")
    with torch.no_grad():
        x = data.x_test[uf(data.x_test).argsort(descending=True)[:40]]
    ua_maps = UABackprop(uf).attribute(x)
    random_maps = torch.rand(x.shape[0], 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ua = blurring_test(uf, x, ua_maps, fraction=0.1, sigma_step=0.5, max_sigma=8.0)
    rnd = blurring_test(uf, x, random_maps, fraction=0.1, sigma_step=0.5, max_sigma=8.0)
    assert ua.murr > rnd.murr and ua.auc_urr < rnd.auc_urr


# ---------------------------------------------------------------------------------------------
# tabular inputs: a feature plays a pixel's part, a per-feature baseline the blur's
# ---------------------------------------------------------------------------------------------
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
    with pytest.raises(ValueError, match="insertion_deletion"):
        blurring_test(forward, x, maps)
    with pytest.raises(ValueError, match="features' shape"):
        uncertainty_reduction_curve(forward, x, maps[:, :3], baseline=0.0)


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
