"""The convolutional VAE of Perez et al. (2022, supplement Sec. 4.1), its trainer, save and load."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_uncertainty._hashing import tensor_sha256
from captum_uncertainty._validation import check_positive_int, check_tensor
from captum_uncertainty.cache import USER_CACHE, CacheDir, cache_file, resolve_cache_dir
from captum_uncertainty.training import fit

__all__ = ["VAE", "train_vae", "vae_loss", "save_vae", "load_vae", "load_or_train_vae"]


class VAE(nn.Module):
    r"""A small convolutional variational autoencoder for 28x28 or 32x32 images in [0, 1].

    The architecture of Perez et al.'s supplement (Sec. 4.1, MNIST), written for any image whose
    sides are multiples of 4 and any channel count (1 for MNIST, 3 for 32x32 colour images):

    * encoder: two 3x3 convolutions with stride 2 and ReLU (32 and 64 filters), a dense layer of
      128 ReLU units, and two dense heads giving the mean and the log standard deviation of
      q(z|x);
    * decoder: a dense ReLU layer to a (64, H/4, W/4) volume, two 3x3 transposed convolutions
      with stride 2 and ReLU (64 and 32 filters), and a 3x3 transposed convolution with stride 1
      to the image channels; :meth:`decode` applies the sigmoid, :meth:`decode_logits` does not
      (the trainer's binary cross-entropy uses the logits for numerical stability).

    It follows :class:`~captum_uncertainty.generative.LatentGenerativeModel`: :meth:`encode`
    returns the mean of q(z|x) (deterministic) and :meth:`decode` images in [0, 1].

    Args:
        image_shape (tuple of int): ``(C, H, W)`` with H and W multiples of 4.
            Default: ``(1, 28, 28)``.
        latent_dim (int): size of the latent space (Perez et al. study 4 to 256; 32 is the
            supplement's reference). Default: 32.
        hidden (int): width of the dense layer. Default: 128.

    Examples::

        >>> vae = VAE(image_shape=(1, 28, 28), latent_dim=32)
        >>> z = vae.encode(x)           # (N, 32) posterior means
        >>> x_hat = vae.decode(z)       # (N, 1, 28, 28) in [0, 1]
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        channels, height, width = self.image_shape
        self.volume = (64, height // 4, width // 4)
        flat = math.prod(self.volume)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(flat, hidden),
            nn.ReLU(),
        )
        self.mean_head = nn.Linear(hidden, latent_dim)
        self.log_std_head = nn.Linear(hidden, latent_dim)
        self.decoder_input = nn.Sequential(nn.Linear(latent_dim, flat), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 3, stride=1, padding=1),
        )
        self.history: List[Dict[str, float]] = []

    def encode_distribution(self, inputs: Tensor) -> Tuple[Tensor, Tensor]:
        """Mean and log standard deviation of q(z|x), each ``(N, latent_dim)``."""
        _check_vae_inputs(inputs, self.image_shape)
        features = self.encoder(inputs)
        return self.mean_head(features), self.log_std_head(features)

    def encode(self, inputs: Tensor) -> Tensor:
        """The mean of q(z|x): a deterministic latent code ``(N, latent_dim)``."""
        return self.encode_distribution(inputs)[0]

    def decode_logits(self, latents: Tensor) -> Tensor:
        """Pixel logits ``(N, C, H, W)`` (before the sigmoid)."""
        if latents.dim() != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"latents must have shape (N, {self.latent_dim}), got {tuple(latents.shape)}")
        return self.decoder(self.decoder_input(latents).view((-1,) + self.volume))

    def decode(self, latents: Tensor) -> Tensor:
        """Images ``(N, C, H, W)`` in [0, 1]."""
        return torch.sigmoid(self.decode_logits(latents))

    def forward(self, inputs: Tensor, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """One reparameterised pass: reconstruction logits, mean and log standard deviation."""
        mean, log_std = self.encode_distribution(inputs)
        device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype).to(mean.device)
        return self.decode_logits(mean + noise * log_std.exp()), mean, log_std

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, latent_dim={self.latent_dim}"


def _check_image_shape(image_shape: Sequence[int]) -> Tuple[int, int, int]:
    shape = tuple(int(side) for side in image_shape)
    if len(shape) != 3 or min(shape) < 1 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"image_shape must be (C, H, W) with H and W multiples of 4, got {tuple(image_shape)}")
    return shape


def _check_vae_inputs(inputs: Tensor, image_shape: Tuple[int, int, int], name: str = "inputs") -> None:
    check_tensor(inputs, name)
    if inputs.dim() != 4 or tuple(inputs.shape[1:]) != image_shape:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, image_shape))}), got {tuple(inputs.shape)}")


def vae_loss(vae: VAE, images: Tensor, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """Per-image reconstruction binary cross-entropy (summed over pixels) and KL(q(z|x) || N(0, I)).

    Returns:
        tuple of Tensor: ``(reconstruction, kl)``, each ``(N,)``; the training loss is their sum
        (the negative evidence lower bound).
    """
    logits, mean, log_std = vae(images, generator)
    reconstruction = F.binary_cross_entropy_with_logits(logits, images, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mean.pow(2) + (2 * log_std).exp() - 2 * log_std - 1).sum(1)
    return reconstruction, kl


def train_vae(
    vae: VAE,
    images: Tensor,
    epochs: int = 50,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> VAE:
    r"""Fit a :class:`VAE` by the negative ELBO: reconstruction binary cross-entropy + KL.

    Adam with a constant learning rate, minibatches drawn in a seeded random order, and seeded
    reparameterisation noise, as in Perez et al.'s supplement (Sec. 4.1: Adam, learning rate
    1e-3, batch size 32, 50 epochs). The per-epoch mean reconstruction and KL terms (nats per
    image) are appended to ``vae.history``. The model is trained in place and returned in eval
    mode.

    Args:
        vae (VAE): the model to train.
        images (Tensor): training images ``(N, C, H, W)`` with values in [0, 1].
        epochs (int): passes over the data. Default: 50.
        batch_size (int): minibatch size. Default: 32.
        lr (float): Adam learning rate. Default: 1e-3.
        seed (int): seeds the data order and the reparameterisation noise. Default: 0.
        progress (bool): show a tqdm progress bar over epochs. Default: ``True``.

    Returns:
        VAE: the same model, trained, in eval mode.

    Examples::

        >>> data = load_mnist()
        >>> vae = train_vae(VAE(image_shape=(1, 28, 28), latent_dim=32), data.x_train, epochs=20)
        >>> vae.history[-1]["reconstruction"]
    """
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be a captum_uncertainty.generative.VAE, got {type(vae).__name__}")
    _check_vae_inputs(images, vae.image_shape, "images")
    if images.shape[0] == 0:
        raise ValueError("images must contain at least one image")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError(
            "images must be finite and scaled to [0, 1] (the reconstruction loss is a binary cross-entropy)"
        )
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    generator = torch.Generator().manual_seed(seed)  # data order and reparameterisation noise
    images = images.detach()
    sums = [0.0, 0.0]  # this epoch's summed reconstruction and KL terms

    def batch_loss(index: Tensor) -> Tensor:
        reconstruction, kl = vae_loss(vae, images[index], generator)
        sums[0] += float(reconstruction.detach().sum())
        sums[1] += float(kl.detach().sum())
        return (reconstruction + kl).mean()

    def record_epoch() -> None:
        vae.history.append({"reconstruction": sums[0] / images.shape[0], "kl": sums[1] / images.shape[0]})
        sums[0] = sums[1] = 0.0

    return fit(
        vae,
        images.shape[0],
        batch_loss,
        torch.optim.Adam(vae.parameters(), lr=lr),
        epochs=epochs,
        batch_size=batch_size,
        generator=generator,
        end_of_epoch=record_epoch,
        progress=progress,
        description="VAE epochs",
    )


def save_vae(vae: VAE, path: Union[str, Path]) -> None:
    """Save a VAE's configuration, weights and training history to ``path``."""
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be a captum_uncertainty.generative.VAE, got {type(vae).__name__}")
    config = {"image_shape": list(vae.image_shape), "latent_dim": vae.latent_dim, "hidden": vae.mean_head.in_features}
    torch.save({"config": config, "state_dict": vae.state_dict(), "history": vae.history}, Path(path))


def load_vae(path: Union[str, Path], map_location: Optional[Union[str, torch.device]] = None) -> VAE:
    """Load a VAE saved by :func:`save_vae` (weights only: no pickled code is executed)."""
    saved = torch.load(Path(path), map_location=map_location, weights_only=True)
    vae = VAE(**saved["config"])
    vae.load_state_dict(saved["state_dict"])
    vae.history = list(saved["history"])
    return vae.eval()


def load_or_train_vae(
    images: Tensor,
    latent_dim: int = 32,
    epochs: int = 50,
    seed: int = 0,
    cache_dir: CacheDir = USER_CACHE,
    progress: bool = True,
) -> VAE:
    """A :class:`VAE` for ``images`` trained by :func:`train_vae`, cached on disk.

    The cache key holds every setting and a fingerprint of the images, so a changed dataset or
    setting trains a new model; ``cache_dir=None`` always trains. Initialisation is seeded with
    ``seed`` (without touching the global random state).

    Examples::

        >>> vae = load_or_train_vae(load_mnist().x_train, latent_dim=32, epochs=20)
    """
    config = {
        "shape": list(images.shape[1:]),
        "latent_dim": latent_dim,
        "epochs": epochs,
        "seed": seed,
        "images": tensor_sha256(images)[:16],
    }
    folder = resolve_cache_dir(cache_dir)
    path = cache_file(folder, "vae", config) if folder is not None else None
    if path is not None and path.exists():
        return load_vae(path)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = VAE(image_shape=tuple(images.shape[1:]), latent_dim=latent_dim)
    vae = train_vae(vae, images, epochs=epochs, seed=seed, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_vae(vae, path)
    return vae
