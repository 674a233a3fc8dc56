"""Attention from uncertainty maps (Wang et al. Eq. 12) and the retraining routine."""

import pytest
import torch
from torch import nn

from captum_uncertainty.data import MNISTCNN
from captum_uncertainty.mitigation import (
    UncertaintyAttention,
    attention_weights,
    evaluate,
    last_conv_layer,
    mitigation_study,
    train_with_attention,
)
from captum_uncertainty.mitigation import stratified_subset


def test_attention_weights_by_hand():
    maps = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    e = torch.exp(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    m = e / e.sum()
    assert torch.allclose(attention_weights(maps).flatten(), (1 - m) * m)
    minmax = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])
    assert torch.allclose(attention_weights(maps, "minmax").flatten(), (1 - minmax) * minmax)
    # channels are summed first; a constant map gives zero min-max attention
    two_channels = torch.cat([maps, maps], 1)
    assert torch.allclose(attention_weights(two_channels), attention_weights(2 * maps))
    assert torch.equal(attention_weights(torch.ones(1, 1, 2, 2), "minmax"), torch.zeros(1, 1, 2, 2))


def features_of(model, x):
    captured = []
    handle = last_conv_layer(model).register_forward_hook(lambda m, a, out: captured.append(out))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[0]


def test_latent_attention_multiplies_the_last_conv_output():
    torch.manual_seed(0)
    model = MNISTCNN(image_size=8).eval()
    x = torch.rand(3, 1, 8, 8)
    attention = attention_weights(torch.rand(3, 1, 8, 8), "minmax")
    assert torch.equal(UncertaintyAttention(model, alpha=0.0)(x, attention), model(x))
    h = features_of(model, x)  # (3, 32, 4, 4): 8 - 2 * (3 - 1)
    resized = nn.functional.interpolate(attention, size=h.shape[-2:], mode="bilinear", align_corners=False)
    expected = model.classifier(model.features[3:]((1 + 0.7 * resized) * h))
    assert torch.allclose(UncertaintyAttention(model, alpha=0.7)(x, attention), expected, atol=1e-6)
    assert not last_conv_layer(model)._forward_hooks


def test_input_attention_and_plain_forward():
    torch.manual_seed(0)
    model = MNISTCNN(image_size=8).eval()
    x, attention = torch.rand(2, 1, 8, 8), attention_weights(torch.rand(2, 1, 8, 8), "minmax")
    net = UncertaintyAttention(model, alpha=0.5, space="input")
    assert torch.allclose(net(x, attention), model((1 + 0.5 * attention) * x))
    assert torch.equal(net(x, None), model(x))


def test_hook_is_removed_when_the_call_raises():
    torch.manual_seed(0)
    model = MNISTCNN(image_size=8).eval()
    net = UncertaintyAttention(model)
    with pytest.raises(RuntimeError):
        net(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8))  # 3 channels into a 1-channel conv
    assert all(not module._forward_hooks for module in model.modules())


def test_bad_input_errors():
    torch.manual_seed(0)
    model = MNISTCNN(image_size=8)
    with pytest.raises(ValueError, match="alpha"):
        UncertaintyAttention(model, alpha=-0.1)
    with pytest.raises(ValueError, match="space"):
        UncertaintyAttention(model, space="hidden")
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        UncertaintyAttention(nn.Linear(2, 2))
    net = UncertaintyAttention(model)
    with pytest.raises(ValueError, match=r"attention must have shape \(N, 1, H, W\)"):
        net(torch.rand(2, 1, 8, 8), torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="3 maps for 2 inputs"):
        net(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        attention_weights(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        attention_weights(torch.rand(2, 2))
    with pytest.raises(ValueError, match="at least one"):
        attention_weights(torch.rand(0, 1, 2, 2))
    with pytest.raises(ValueError, match="normalization"):
        attention_weights(torch.rand(1, 1, 2, 2), "sigmoid")


def test_stratified_subset_is_balanced_and_seeded():
    y = torch.arange(10).repeat_interleave(30)
    subset = stratified_subset(y, 55, seed=1)
    counts = torch.bincount(y[subset], minlength=10)
    assert len(subset.unique()) == 55 and counts.max() - counts.min() <= 1
    assert torch.equal(subset, stratified_subset(y, 55, seed=1))
    assert not torch.equal(subset, stratified_subset(y, 55, seed=2))


def test_training_is_seeded_learns_and_restores_modes(digits):
    x, y = digits.x_train[:300], digits.y_train[:300]
    attention = attention_weights(torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(train_with_attention(MNISTCNN(image_size=8), x, y, attention, epochs=30, batch_size=32, lr=0.05, seed=3))
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    test_attention = attention_weights(torch.rand(300, 1, 8, 8))
    models[0].train()
    scores = evaluate(models[0], digits.x_test, digits.y_test, test_attention)
    assert models[0].training and all(m.training for m in models[0].modules())
    assert scores["accuracy"] > 50 and 0 < scores["nll"] < 2.3


def test_study_rows_and_shared_initialisation(digits):
    maps_train = torch.rand(len(digits.x_train), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    maps_test = torch.rand(len(digits.x_test), 1, 8, 8, generator=torch.Generator().manual_seed(1))
    result = mitigation_study(
        lambda: MNISTCNN(image_size=8), digits.x_train, digits.y_train, maps_train,
        digits.x_test, digits.y_test, maps_test, n_train=100, seeds=(0, 1), alpha=0.0,
        normalizations=("softmax", "minmax"), epochs=2, progress=False,
    )
    assert list(result) == ["no attention", "attention (softmax)", "attention (minmax)"]
    # alpha = 0: the attention is a no-op, so every variant is the plain run
    for row in result.values():
        assert row["accuracy"] == pytest.approx(result["no attention"]["accuracy"])
        assert row["nll"] == pytest.approx(result["no attention"]["nll"], rel=1e-5)
        assert row["accuracy_std"] >= 0
