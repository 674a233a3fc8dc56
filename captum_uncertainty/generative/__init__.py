"""Generative models for the counterfactual attribution methods (CLUE, delta-CLUE, counterfactual paths)."""

from captum_uncertainty.generative.protocol import LatentGenerativeModel, check_generative_model
from captum_uncertainty.generative.vae import VAE, load_or_train_vae, load_vae, save_vae, train_vae, vae_loss

__all__ = [
    "LatentGenerativeModel",
    "VAE",
    "check_generative_model",
    "load_or_train_vae",
    "load_vae",
    "save_vae",
    "train_vae",
    "vae_loss",
]
