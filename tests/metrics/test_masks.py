"""Ground-truth mask metrics against hand computations, their extremes, broadcasting, argument
errors, and equality with Quantus's localisation metrics."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from captum_uncertainty import UncertaintyForward
from captum_uncertainty.integrations import QuantusUncertaintyModel, quantus_batch
from captum_uncertainty.metrics import (
    ConveyanceResult,
    MaskResult,
    conveyance,
    mask_auroc,
    pointing_game,
    relevance_mass,
    relevance_rank_accuracy,
)

DT = torch.float64
METRICS = (relevance_mass, relevance_rank_accuracy, pointing_game, mask_auroc)


def image_example():
    """Two 1x3x3 maps and masks of 3 pixels each, with the values hand-computed below."""
    maps = torch.tensor(
        [
            [[0.9, 0.1, 0.2], [0.8, 0.35, -0.3], [0.0, 0.4, 0.3]],
            [[-0.1, 0.2, 0.2], [0.0, 0.6, 0.2], [-0.4, 0.1, 0.0]],
        ],
        dtype=DT,
    ).unsqueeze(1)
    masks = torch.zeros(2, 1, 3, 3, dtype=torch.bool)
    masks[0, 0, 0, 0] = masks[0, 0, 1, 0] = masks[0, 0, 1, 1] = True  # 0.9, 0.8, 0.35
    masks[1, 0, 0, 1] = masks[1, 0, 0, 2] = masks[1, 0, 2, 2] = True  # 0.2, 0.2, 0.0
    return maps, masks


def feature_example():
    maps = torch.tensor([[0.5, -1.0, 2.0, 1.5], [-1.0, -2.0, -3.0, -0.5], [1.0, 1.0, 1.0, 1.0]], dtype=DT)
    masks = torch.tensor([[False, True, True, False], [True, False, False, False], [False, True, True, False]])
    return maps, masks


def test_results_are_named_tuples_with_a_mean_score():
    maps, masks = feature_example()
    for metric in METRICS:
        result = metric(maps, masks)
        assert isinstance(result, MaskResult) and result.higher_is_better
        assert result.per_input.dtype == DT and result.per_input.shape == (3,)
        assert result.score == pytest.approx(float(result.per_input.mean()))
    assert not hasattr(MaskResult(torch.zeros(1)), "__dict__")


def test_relevance_mass_by_hand():
    maps, masks = image_example()
    # positive mass 0.9+0.1+0.2+0.8+0.35+0.4+0.3 = 3.05, inside 0.9+0.8+0.35 = 2.05;
    # 0.2+0.2+0.6+0.2+0.1 = 1.3, inside 0.2+0.2+0.0 = 0.4
    assert relevance_mass(maps, masks).per_input.tolist() == pytest.approx([2.05 / 3.05, 0.4 / 1.3])
    maps, masks = feature_example()
    # 2 of 4 (the -1.0 inside is clamped); no positive mass -> 0; 2 of 4
    result = relevance_mass(maps, masks)
    assert result.per_input.tolist() == pytest.approx([0.5, 0.0, 0.5])
    assert result.score == pytest.approx(1 / 3)


def test_relevance_rank_accuracy_by_hand():
    maps, masks = image_example()
    # top 3: 0.9 (in), 0.8 (in), 0.4 (out); top 3: 0.6 (out), then the 0.2s in raster order (in, in)
    assert relevance_rank_accuracy(maps, masks).per_input.tolist() == pytest.approx([2 / 3, 2 / 3])
    maps, masks = feature_example()
    # top 2: 2.0 (in), 1.5 (out); top 1: -0.5 (out); constant: elements 0 (out) and 1 (in) by raster order
    assert relevance_rank_accuracy(maps, masks).per_input.tolist() == pytest.approx([0.5, 0.0, 0.5])


def test_pointing_game_by_hand():
    maps, masks = image_example()
    assert pointing_game(maps, masks).per_input.tolist() == [1.0, 0.0]  # 0.9 in; 0.6 out
    maps, masks = feature_example()
    # 2.0 in; -0.5 out; a constant map ties everywhere: a hit as some tied element is inside
    assert pointing_game(maps, masks).per_input.tolist() == [1.0, 0.0, 1.0]
    assert pointing_game(maps[2:], torch.tensor([[False, False, False, True]])).score == 1.0


def test_mask_auroc_by_hand():
    maps, masks = image_example()
    # (in, out) pairs of 3 x 6: 0.9 and 0.8 beat all 6, 0.35 beats 5 (not 0.4) -> 17 / 18;
    # each 0.2 beats -0.1, 0.0, -0.4, 0.1 and ties 0.2 (4.5), 0.0 beats -0.1, -0.4 and ties 0.0 (2.5)
    assert mask_auroc(maps, masks).per_input.tolist() == pytest.approx([17 / 18, 11.5 / 18])
    maps, masks = feature_example()
    # 2.0 beats both, -1.0 neither: 2 / 4; -1.0 beats -2.0 and -3.0: 2 / 3; constant: 0.5
    assert mask_auroc(maps, masks).per_input.tolist() == pytest.approx([0.5, 2 / 3, 0.5])


def test_conveyance_by_hand():
    # (3, 4) maps at 4 strengths; masses inside [1, 3, 2, 4] (rho = 1 - 6 * 2 / 60 = 0.8),
    # constant (0.0), and [2, 1, 1, 0] (ranks 4, 2.5, 2.5, 1: rho = -3 / sqrt(10))
    strengths = [0.0, 1.0, 2.0, 3.0]
    masses = torch.tensor([[1.0, 3.0, 2.0, 4.0], [2.0, 2.0, 2.0, 2.0], [2.0, 1.0, 1.0, 0.0]], dtype=DT)
    masks = torch.tensor([[True, True, False, False], [False, True, False, False], [False, False, True, True]])
    maps = []
    for level in range(4):
        # negative inside (clamped away), growing outside (not counted), then the mass
        m = torch.where(masks, torch.tensor(-5.0, dtype=DT), torch.tensor(7.0 * (level + 1), dtype=DT))
        m[0, 0] = masses[0, level]
        m[1, 1] = masses[1, level]
        m[2, 3] = masses[2, level]
        maps.append(m)
    result = conveyance(maps, masks, strengths)
    assert isinstance(result, ConveyanceResult) and result.higher_is_better
    assert result.per_input.dtype == DT
    assert result.per_input.tolist() == pytest.approx([0.8, 0.0, -3 / math.sqrt(10)])
    assert result.score == pytest.approx((0.8 - 3 / math.sqrt(10)) / 3)
    # one tensor (L, N, ...) and numpy strengths give the same
    same = conveyance(torch.stack(maps), masks, np.array(strengths))
    torch.testing.assert_close(same.per_input, result.per_input, rtol=0, atol=0)

    # (2, 1, 3, 3) at unsorted strengths [0.5, 0.1, 0.9] (ranks 2, 1, 3): masses [2, 1, 3]
    # (rho = 1) and [0.3, 0.3, 0.1] (ranks 2.5, 2.5, 1: rho = -1.5 / sqrt(2 * 1.5) = -sqrt(3) / 2)
    _, image_masks = image_example()
    image_maps = []
    for mass0, mass1 in [(2.0, 0.3), (1.0, 0.3), (3.0, 0.1)]:
        m = torch.where(image_masks, torch.tensor(0.0, dtype=DT), torch.tensor(9.0, dtype=DT))
        m[0, 0, 0, 0], m[1, 0, 2, 2] = mass0, mass1
        image_maps.append(m)
    rho = conveyance(image_maps, image_masks, torch.tensor([0.5, 0.1, 0.9])).per_input
    assert rho.tolist() == pytest.approx([1.0, -math.sqrt(3) / 2])


def test_relevance_mass_of_the_mask_is_one_and_of_its_outside_zero():
    _, masks = image_example()
    assert relevance_mass(masks.double(), masks).per_input.tolist() == [1.0, 1.0]
    outside = (~masks).double() - 2.0 * masks.double()  # positive outside, negative inside
    assert relevance_mass(outside, masks).per_input.tolist() == [0.0, 0.0]


def test_extremes_perfect_inverted_and_constant_maps():
    for _, masks in (image_example(), feature_example()):
        perfect = masks.double() + 0.01 * torch.rand(masks.shape, dtype=DT)
        inverted = (~masks).double() + 0.01 * torch.rand(masks.shape, dtype=DT)
        n = masks.shape[0]
        for metric in (relevance_rank_accuracy, pointing_game, mask_auroc):
            assert metric(perfect, masks).per_input.tolist() == [1.0] * n, metric.__name__
            assert metric(inverted, masks).per_input.tolist() == [0.0] * n, metric.__name__
        assert mask_auroc(torch.full(masks.shape, 3.0), masks).per_input.tolist() == [0.5] * n
        assert relevance_mass(perfect, masks).score == pytest.approx(1.0, abs=0.05)


def test_conveyance_is_one_when_the_mass_grows_and_minus_one_when_it_falls():
    torch.manual_seed(0)
    _, masks = image_example()
    base = torch.rand(2, 1, 3, 3, dtype=DT)
    strengths = [0.0, 0.25, 0.5, 1.0, 2.0]
    growing = [base + s * masks.double() for s in strengths]
    assert conveyance(growing, masks, strengths).per_input.tolist() == pytest.approx([1.0, 1.0])
    assert conveyance(growing, masks, strengths).score == pytest.approx(1.0)
    falling = [base + (3.0 - s) * masks.double() for s in strengths]
    assert conveyance(falling, masks, strengths).per_input.tolist() == pytest.approx([-1.0, -1.0])
    # the share inside stays at 1 while the mass grows: conveyance sees it, relevance mass does not
    scaled = [(1.0 + s) * masks.double() for s in strengths]
    assert [relevance_mass(m, masks).score for m in scaled] == [1.0] * len(strengths)
    assert conveyance(scaled, masks, strengths).score == pytest.approx(1.0)


def test_a_channel_broadcast_mask_equals_the_expanded_mask():
    torch.manual_seed(1)
    maps = torch.randn(2, 3, 3, 3, dtype=DT)
    _, masks = image_example()  # (2, 1, 3, 3)
    expanded = masks.expand(2, 3, 3, 3).clone()
    for metric in METRICS:
        torch.testing.assert_close(metric(maps, masks).per_input, metric(maps, expanded).per_input, rtol=0, atol=0)
    levels = [maps + s * expanded.double() * torch.rand(2, 3, 3, 3, dtype=DT) for s in range(4)]
    torch.testing.assert_close(
        conveyance(levels, masks, range(4)).per_input, conveyance(levels, expanded, range(4)).per_input
    )


def test_numpy_inputs_and_any_trailing_shape():
    maps, masks = feature_example()
    for metric in METRICS:
        torch.testing.assert_close(metric(maps.numpy(), masks.numpy()).per_input, metric(maps, masks).per_input)
    flat_maps, flat_masks = image_example()
    volume = relevance_mass(flat_maps.reshape(2, 1, 1, 9, 1), flat_masks.reshape(2, 1, 1, 9, 1)).per_input
    torch.testing.assert_close(volume, relevance_mass(flat_maps, flat_masks).per_input)


def test_argument_errors():
    maps, masks = image_example()
    for metric in METRICS:
        with pytest.raises(TypeError, match="masks must be a boolean"):
            metric(maps, masks.double())
        with pytest.raises(ValueError, match=r"\(2, 1, 3, 3\).*\(2, 1, 3, 2\)"):
            metric(maps, masks[..., :2])
        with pytest.raises(ValueError, match=r"\(2, 1, 3, 3\).*\(1, 1, 3, 3\)"):
            metric(maps, masks[:1])  # a different N does not broadcast
        with pytest.raises(ValueError, match="NaN or inf"):
            metric(maps.masked_fill(masks, math.nan), masks)
        with pytest.raises(TypeError, match="attributions"):
            metric(maps.tolist(), masks)
    empty = masks.clone()
    empty[1] = False
    for metric in (relevance_rank_accuracy, mask_auroc):
        with pytest.raises(ValueError, match="input 1 is all False"):
            metric(maps, empty)
    full = masks.clone()
    full[0] = True
    with pytest.raises(ValueError, match="input 0 is all True"):
        mask_auroc(maps, full)
    assert relevance_rank_accuracy(maps, full).per_input[0] == 1.0
    # defined on an all-False mask: nothing inside
    assert relevance_mass(maps, empty).per_input[1] == pointing_game(maps, empty).per_input[1] == 0.0
    with pytest.raises(ValueError, match="at least 2 strengths"):
        conveyance([maps], masks, [1.0])
    with pytest.raises(ValueError, match="one strength per attribution map"):
        conveyance([maps, maps, maps], masks, [1.0, 2.0])
    with pytest.raises(ValueError, match="not all be equal"):
        conveyance([maps, maps], masks, [1.0, 1.0])
    with pytest.raises(ValueError, match="one shape"):
        conveyance([maps, maps[:1]], masks, [1.0, 2.0])
    with pytest.raises(TypeError, match="masks must be a boolean"):
        conveyance([maps, maps], masks.long(), [1.0, 2.0])
    assert conveyance([maps, maps], masks, [1.0, 2.0]).per_input.tolist() == [0.0, 0.0]  # constant mass


# Equality with Quantus


@pytest.fixture(scope="module")
def quantus_setup():
    """A tiny uncertainty model on 1x6x6 images for Quantus's metric calls (which need a model)."""
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).double() for _ in range(2)]
    model = QuantusUncertaintyModel(UncertaintyForward(members, measure="epistemic"))
    x = torch.rand(5, 1, 6, 6, dtype=DT)
    masks = torch.rand(5, 1, 6, 6) < 0.3
    masks[:, 0, 0, 0], masks[:, 0, 5, 5] = True, False  # never all False or all True
    return model, x, masks


def quantus_scores(metric, model, x, maps, masks):
    scores = metric(model=model, **quantus_batch(x), a_batch=maps.numpy(), s_batch=masks.numpy(), softmax=False)
    return torch.as_tensor(np.asarray(scores, dtype=np.float64))


@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
def test_equal_to_quantus(quantus_setup, tied):
    quantus = pytest.importorskip("quantus")
    model, x, masks = quantus_setup
    generator = torch.Generator().manual_seed(3)
    maps = torch.rand(5, 1, 6, 6, generator=generator, dtype=DT)  # non-negative, as Quantus's mass needs
    if tied:  # few levels: ties at the maximum and across the mask border
        maps = torch.floor(maps * 4) / 4
        maps[0].fill_(0.5)
    options = {"abs": False, "normalise": False, "disable_warnings": True}
    pairs = [
        (relevance_mass, quantus.RelevanceMassAccuracy(**options)),
        (pointing_game, quantus.PointingGame(weighted=False, **options)),
        (mask_auroc, quantus.AUC(**options)),
    ]
    if not tied:  # Quantus ranks with an unstable argsort: equal when no tie straddles the K-th place
        pairs.append((relevance_rank_accuracy, quantus.RelevanceRankAccuracy(**options)))
    for ours, theirs in pairs:
        expected = quantus_scores(theirs, model, x, maps, masks)
        torch.testing.assert_close(ours(maps, masks).per_input, expected, rtol=0, atol=1e-6, msg=ours.__name__)
    if tied:
        assert pointing_game(maps, masks).per_input[0] == 1.0 and mask_auroc(maps, masks).per_input[0] == 0.5
