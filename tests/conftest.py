"""Session fixtures: a small trained ensemble and VAE on scikit-learn's bundled 8x8 digits."""

import pytest
import torch

from captum_uncertainty.data import load_digits, train_ensemble
from captum_uncertainty.generative import VAE, train_vae


@pytest.fixture(scope="session")
def digits():
    return load_digits(test_size=300, seed=0)


@pytest.fixture(scope="session")
def digits_ensemble(digits):
    """Three CNNs trained for 8 epochs on the digits (about 5 s, not cached)."""
    return train_ensemble(n_members=3, data=digits, epochs=8, seed=0, cache_dir=None, progress=False)


@pytest.fixture(scope="session")
def digits_vae(digits):
    """A VAE with an 8-dimensional latent space trained for 30 epochs on the digits (a few seconds)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = VAE(image_shape=(1, 8, 8), latent_dim=8)
    return train_vae(vae, digits.x_train, epochs=30, batch_size=64, seed=0, progress=False)
