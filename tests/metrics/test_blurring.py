"""The Gaussian blur and Wang et al.'s blurring test against hand-computed cases and brute force."""

import math

import pytest
import torch
from torch import nn

from captum_uncertainty import gaussian_blur
from captum_uncertainty.attr.ua_backprop import UABackprop
from captum_uncertainty.forward import UncertaintyForward
from captum_uncertainty.metrics import blurring_test, full_blur_sigma
from captum_uncertainty.metrics._utils.curves import area_over_curve_remaining, median_over_images
from tests.helpers.metric_toys import (
    DT,
    blurred_value,
    bright_pixel_images,
    map_with_pixel_at_rank,
    one_pixel_uncertainty,
)


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
        counting,
        x,
        maps,
        fraction=3 / 16,
        sigma_step=0.5,
        max_sigma=1.5,
        max_examples_per_batch=5,
        sigma_selection=selection,
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


def test_bad_input_raises_naming_the_argument():
    x = bright_pixel_images(2)
    good = torch.rand(2, 1, 4, 4, dtype=DT)
    f = one_pixel_uncertainty
    with pytest.raises(ValueError, match="attributions"):
        blurring_test(f, x, torch.rand(2, 1, 4, 5))
    for fraction in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            blurring_test(f, x, good, fraction=fraction)
    with pytest.raises(ValueError, match="inputs.*empty"):
        blurring_test(f, x[:0], good[:0])
    with pytest.raises(ValueError, match="max_examples_per_batch"):
        blurring_test(f, x, good, max_examples_per_batch=0)
    with pytest.raises(ValueError, match="sigma_selection"):
        blurring_test(f, x, good, sigma_selection="per_pixel")
    with pytest.raises(ValueError, match="forward_func"):
        blurring_test(lambda z: z.sum(1), x, good)  # (B, H, W) output, not (B,)
    features = torch.tensor([[3.0, 1.0, 2.0, 0.5], [1.0, 2.0, 0.0, 4.0]], dtype=DT)
    with pytest.raises(ValueError, match="insertion_deletion"):
        blurring_test(lambda z: z.square().sum(1), features, torch.rand(2, 4, dtype=DT))


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
