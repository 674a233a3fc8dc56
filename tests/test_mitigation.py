"""Uncertainty mitigation with attention (Wang et al. 2023, Eq. 12, App. B.2.2 and D.2.4)."""

import math

import pytest
import torch
from torch import nn

from captum_uncertainty.experiments.mitigation_study import (
    MitigationCNN,
    evaluate,
    mitigation_study,
    stratified_subset,
    train_with_attention,
)
from captum_uncertainty.mitigation import UncertaintyAttention, attention_weights, last_conv_layer


def capture_output(layer, model, x):
    """The output of ``layer`` during ``model(x)``, with a temporary hook of our own."""
    captured = []
    handle = layer.register_forward_hook(lambda module, args, output: captured.append(output.detach().clone()))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[0]


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MitigationCNN(in_channels=1, image_size=12).eval()


def test_attention_weights_by_hand_on_a_2x2_map():
    maps = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    z = 1 + math.e + math.e**2 + math.e**3
    m = [1 / z, math.e / z, math.e**2 / z, math.e**3 / z]
    expected = torch.tensor([[[[(1 - m[0]) * m[0], (1 - m[1]) * m[1]], [(1 - m[2]) * m[2], (1 - m[3]) * m[3]]]]])
    assert torch.allclose(attention_weights(maps), expected, atol=1e-7)
    # min-max option: M = (0, 1/3, 2/3, 1)
    assert torch.allclose(attention_weights(maps, "minmax").flatten(), torch.tensor([0, 2 / 9, 2 / 9, 0]))


def test_attention_weights_shape_and_sum_properties():
    maps = torch.rand(5, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    attention = attention_weights(maps)
    assert attention.shape == (5, 1, 6, 7)
    # channels are summed first
    assert torch.allclose(attention, attention_weights(maps.sum(1, keepdim=True)))
    # sum of (1 - M) M = 1 - sum M^2 with sum M = 1 (the softmax); each value is in (0, 1/4]
    m = maps.sum(1).flatten(1).softmax(1)
    assert torch.allclose(attention.flatten(1).sum(1), 1 - (m**2).sum(1))
    assert (attention > 0).all() and (attention <= 0.25).all()
    # a constant map gives the uniform softmax: A = (1 - 1/HW) / HW everywhere
    assert torch.allclose(attention_weights(torch.full((1, 1, 2, 2), 7.0)), torch.full((1, 1, 2, 2), 0.75 / 4))
    # per-image normalisation: an image's attention does not depend on the others in the batch
    assert torch.allclose(attention_weights(maps[2:3]), attention[2:3])


def test_alpha_zero_is_exactly_the_plain_model(model):
    x = torch.rand(3, 1, 12, 12)
    attention = attention_weights(torch.rand(3, 1, 12, 12))
    assert torch.equal(UncertaintyAttention(model, alpha=0.0)(x, attention), model(x))
    assert torch.equal(UncertaintyAttention(model, alpha=0.0, space="input")(x, attention), model(x))


@pytest.mark.parametrize("attend_activation", [False, True])
def test_latent_attention_scales_the_layer_output_by_hand(model, attend_activation):
    x = torch.rand(3, 1, 12, 12)
    attention = attention_weights(torch.randn(3, 1, 12, 12) * 3)
    assert last_conv_layer(model) is model.features[2]
    index = 3 if attend_activation else 2  # the last convolution or its ReLU
    layer, following = model.features[index], model.features[index + 1]
    h = capture_output(layer, model, x)  # (3, 32, 6, 6): 12 - 3 - 3
    assert h.shape == (3, 32, 6, 6)
    resized = nn.functional.interpolate(attention, size=(6, 6), mode="bilinear", align_corners=False)
    expected = (1 + 0.7 * resized) * h
    # the next module's input is the modulated output of the attended layer
    seen = []
    handle = following.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        logits = UncertaintyAttention(model, layer, alpha=0.7)(x, attention)
    finally:
        handle.remove()
    assert torch.allclose(seen[0], expected, atol=1e-6)
    assert not torch.allclose(seen[0], h, atol=1e-6)
    assert torch.allclose(logits, model.classifier(model.features[index + 1 :](expected)), atol=1e-5)
    assert not layer._forward_hooks and all(not m._forward_hooks for m in model.modules())


def test_input_attention_equals_the_model_on_scaled_inputs(model):
    x = torch.rand(2, 1, 12, 12)
    attention = attention_weights(torch.rand(2, 1, 12, 12), "minmax")
    net = UncertaintyAttention(model, alpha=0.5, space="input")
    assert torch.allclose(net(x, attention), model((1 + 0.5 * attention) * x))
    assert torch.equal(net(x, None), model(x))


def test_no_hooks_remain_after_a_call_and_after_a_call_that_raises(model):
    layer = last_conv_layer(model)
    net = UncertaintyAttention(model)
    net(torch.rand(2, 1, 12, 12), attention_weights(torch.rand(2, 1, 12, 12)))
    assert not layer._forward_hooks
    with pytest.raises(RuntimeError):  # 3 channels into a 1-channel convolution
        net(torch.rand(2, 3, 12, 12), attention_weights(torch.rand(2, 1, 12, 12)))
    assert not layer._forward_hooks
    with pytest.raises(ValueError, match="feature maps"):  # the hooked layer's output is not 4D
        UncertaintyAttention(model, model.classifier[2])(torch.rand(2, 1, 12, 12), torch.rand(2, 1, 12, 12))
    assert all(not module._forward_hooks for module in model.modules())


def test_bad_inputs_raise_value_errors(model):
    with pytest.raises(ValueError, match="maps contains NaN"):
        attention_weights(torch.tensor([[[[0.0, float("nan")]]]]))
    with pytest.raises(ValueError, match="maps contains NaN or inf"):
        attention_weights(torch.tensor([[[[0.0, float("inf")]]]]))
    with pytest.raises(ValueError, match=r"maps must have shape \(N, C, H, W\)"):
        attention_weights(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="maps is empty"):
        attention_weights(torch.rand(0, 1, 4, 4))
    with pytest.raises(ValueError, match="normalization"):
        attention_weights(torch.rand(1, 1, 2, 2), "sigmoid")
    for alpha in (-0.1, float("nan"), "0.2"):
        with pytest.raises(ValueError, match="alpha"):
            UncertaintyAttention(model, alpha=alpha)
    with pytest.raises(ValueError, match="space"):
        UncertaintyAttention(model, space="hidden")
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        UncertaintyAttention(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="not a submodule"):
        UncertaintyAttention(model, nn.Conv2d(1, 1, 1))
    net, x = UncertaintyAttention(model), torch.rand(2, 1, 12, 12)
    with pytest.raises(ValueError, match=r"attention must have shape \(N, 1, H, W\)"):
        net(x, torch.rand(2, 12, 12))
    with pytest.raises(ValueError, match=r"attention must have shape \(N, 1, H, W\)"):
        net(x, torch.rand(2, 3, 12, 12))
    with pytest.raises(ValueError, match="3 maps for a batch of 2"):
        net(x, torch.rand(3, 1, 12, 12))
    with pytest.raises(ValueError, match="attention contains NaN"):
        net(x, torch.full((2, 1, 12, 12), float("nan")))
    with pytest.raises(ValueError, match="inputs must have shape"):
        net(torch.rand(2, 144), torch.rand(2, 1, 12, 12))
    with pytest.raises(ValueError, match="image_size"):
        MitigationCNN(image_size=7)
    with pytest.raises(ValueError, match="epochs"):
        train_with_attention(x, torch.tensor([0, 1]), epochs=0, progress=False)
    with pytest.raises(ValueError, match="y_train"):
        train_with_attention(x, torch.tensor([0, 1, 2]), progress=False)


def test_mitigation_cnn_shapes():
    assert MitigationCNN()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert MitigationCNN(in_channels=3, image_size=32, num_classes=100)(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    assert MitigationCNN(image_size=8)(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    dense = [m for m in MitigationCNN().modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in dense] == [128, 128, 10]


def test_stratified_subset_is_balanced_and_seeded():
    y = torch.arange(10).repeat_interleave(30)
    subset = stratified_subset(y, 55, seed=1)
    counts = torch.bincount(y[subset], minlength=10)
    assert len(subset.unique()) == 55 and counts.max() - counts.min() <= 1
    assert torch.equal(subset, stratified_subset(y, 55, seed=1))
    assert not torch.equal(subset, stratified_subset(y, 55, seed=2))
    skewed = torch.cat([torch.zeros(3, dtype=torch.long), torch.ones(30, dtype=torch.long)])
    assert torch.bincount(skewed[stratified_subset(skewed, 20, seed=0)]).tolist() == [3, 17]


def small_cnn():
    """A fast-learning stand-in for MitigationCNN (whose 8x8 version learns slowly with SGD)."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))


def test_training_is_reproducible_with_the_same_seed(digits):
    x, y = digits.x_train[:200], digits.y_train[:200]
    attention = attention_weights(torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    state = torch.get_rng_state()
    runs = [train_with_attention(x, y, attention, epochs=2, batch_size=64, seed=3, progress=False) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    assert isinstance(runs[0], MitigationCNN) and not runs[0].training
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        assert torch.equal(a, b)
    other = train_with_attention(x, y, attention, epochs=2, batch_size=64, seed=4, progress=False)
    assert not torch.equal(next(other.parameters()), next(runs[0].parameters()))


def test_training_learns_and_evaluate_restores_the_flag(digits):
    x, y = digits.x_train[:200], digits.y_train[:200]
    attention = attention_weights(torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)), "minmax")
    torch.manual_seed(0)
    trained = train_with_attention(
        x, y, attention, alpha=0.5, epochs=10, batch_size=20, lr=0.1, seed=3, progress=False, model=small_cnn()
    )
    test_attention = attention_weights(torch.rand(len(digits.x_test), 1, 8, 8), "minmax")
    trained.train()
    scores = evaluate(trained, digits.x_test, digits.y_test, test_attention, alpha=0.5)
    assert trained.training and all(module.training for module in trained.modules())
    assert scores["accuracy"] > 50 and 0 < scores["nll"] < math.log(10)  # chance: 10 %, log 10
    trained.eval()
    assert evaluate(trained, digits.x_test, digits.y_test, test_attention, alpha=0.5) == scores
    assert not any(module.training for module in trained.modules())


def test_study_returns_mean_and_std_and_alpha_zero_matches_plain(digits):
    maps_train = torch.rand(len(digits.x_train), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    maps_test = torch.rand(len(digits.x_test), 1, 8, 8, generator=torch.Generator().manual_seed(1))
    result = mitigation_study(
        digits.x_train,
        digits.y_train,
        digits.x_test,
        digits.y_test,
        maps_train,
        maps_test,
        seeds=(0, 1),
        alpha=0.0,
        epochs=2,
        n_train=100,
        progress=False,
    )
    assert list(result) == ["no attention", "attention"]
    for row in result.values():
        assert set(row) == {"accuracy_mean", "accuracy_std", "nll_mean", "nll_std"}
        assert row["accuracy_std"] >= 0 and row["nll_std"] >= 0
    # alpha = 0 and the same seed: the attention run is the plain run
    assert result["attention"] == result["no attention"]
    with pytest.raises(ValueError, match="same length"):
        mitigation_study(
            digits.x_train,
            digits.y_train,
            digits.x_test,
            digits.y_test,
            maps_train[:5],
            maps_test,
            seeds=(0,),
            epochs=1,
            n_train=20,
            progress=False,
        )
