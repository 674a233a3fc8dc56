"""The VAE, its trainer, save/load and the generative-model protocol."""

import pytest
import torch
import torch.nn.functional as F

from captum_uncertainty.data import load_mnist
from captum_uncertainty.generative import VAE, check_generative_model, load_vae, save_vae, train_vae, vae_loss


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_vae_shapes_range_and_deterministic_encoding(shape):
    torch.manual_seed(0)
    vae = VAE(image_shape=shape, latent_dim=16).eval()
    x = torch.rand((4,) + shape)
    z = vae.encode(x)
    assert z.shape == (4, 16)
    assert torch.equal(z, vae.encode_distribution(x)[0]) and torch.equal(z, vae.encode(x))
    images = vae.decode(z)
    assert images.shape == (4,) + shape and images.min() >= 0 and images.max() <= 1
    assert torch.allclose(images, torch.sigmoid(vae.decode_logits(z)))


def test_vae_loss_is_bce_plus_closed_form_kl():
    torch.manual_seed(0)
    vae = VAE(image_shape=(1, 8, 8), latent_dim=3)
    x = torch.rand(5, 1, 8, 8)
    reconstruction, kl = vae_loss(vae, x, torch.Generator().manual_seed(1))
    mean, log_std = vae.encode_distribution(x)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    probabilities = vae.decode(mean + noise * log_std.exp())
    expected_bce = -(x * probabilities.log() + (1 - x) * (1 - probabilities).log()).flatten(1).sum(1)
    posterior = torch.distributions.Normal(mean, log_std.exp())
    expected_kl = torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(reconstruction, expected_bce, rtol=1e-4)
    assert torch.allclose(kl, expected_kl, rtol=1e-4, atol=1e-6)


def test_training_on_bundled_mnist_lowers_the_reconstruction_loss_and_is_seeded():
    images = load_mnist().x_train[:600]
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(train_vae(VAE(latent_dim=8), images, epochs=3, seed=3, progress=False))
    history = [epoch["reconstruction"] for epoch in runs[0].history]
    assert len(history) == 3 and history[-1] < 0.8 * history[0]
    assert not runs[0].training
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        assert torch.equal(a, b)
    with torch.no_grad():
        reconstruction = F.binary_cross_entropy(runs[0].decode(runs[0].encode(images)), images, reduction="sum") / len(
            images
        )
        torch.manual_seed(0)
        untrained = VAE(latent_dim=8).eval()
        before = F.binary_cross_entropy(untrained.decode(untrained.encode(images)), images, reduction="sum") / len(
            images
        )
    assert reconstruction < 0.8 * before


def test_save_and_load_round_trip(tmp_path, digits_vae, digits):
    path = tmp_path / "vae.pt"
    save_vae(digits_vae, path)
    loaded = load_vae(path)
    x = digits.x_test[:5]
    assert loaded.latent_dim == digits_vae.latent_dim and loaded.image_shape == digits_vae.image_shape
    assert loaded.history == digits_vae.history
    assert torch.equal(loaded.decode(loaded.encode(x)), digits_vae.decode(digits_vae.encode(x)))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="multiples of 4"):
        VAE(image_shape=(1, 30, 30))
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(latent_dim=0)
    vae = VAE(image_shape=(1, 8, 8), latent_dim=2)
    with pytest.raises(ValueError, match=r"inputs must have shape \(N, 1, 8, 8\)"):
        vae.encode(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"latents must have shape \(N, 2\)"):
        vae.decode(torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_vae(vae, torch.rand(4, 1, 8, 8) * 2, epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train_vae(vae, torch.rand(4, 1, 8, 8), epochs=0, progress=False)
    with pytest.raises(TypeError, match="VAE"):
        train_vae(torch.nn.Linear(2, 2), torch.rand(4, 1, 8, 8))


def test_protocol_check_names_what_is_missing():
    with pytest.raises(ValueError, match="needs a generative model"):
        check_generative_model(None, "CLUE")

    class EncoderOnly:
        def encode(self, x):
            return x.flatten(1)

    with pytest.raises(TypeError, match="lacks decode"):
        check_generative_model(EncoderOnly(), "CLUE")
    vae = VAE(image_shape=(1, 8, 8), latent_dim=2)
    assert check_generative_model(vae, "CLUE") is vae
