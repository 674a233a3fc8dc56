"""The one minibatch training loop of the package (ensemble members, the VAE, the mitigation
study's classifiers) and classifier training with cross-entropy."""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_choice, check_positive_int

__all__ = ["OPTIMIZERS", "SUPPORTED_OPTIMIZERS", "fit", "train_model"]

_Model = TypeVar("_Model", bound=nn.Module)


def fit(
    model: _Model,
    size: int,
    batch_loss: Callable[[Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    schedule: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
    end_of_epoch: Optional[Callable[[], None]] = None,
    progress: bool = False,
    description: str = "training",
) -> _Model:
    """Train ``model`` in place for ``epochs`` passes over ``size`` examples; returns it in eval mode.

    Each epoch draws a random order of the example indices from ``generator`` (on the CPU) and
    takes minibatches of ``batch_size``; ``batch_loss(indices)`` returns the scalar loss of one
    minibatch, which is minimised with ``optimizer``. ``schedule`` steps once per epoch and
    ``end_of_epoch`` is called after it. The caller owns the global random state (dropout): wrap
    the call in ``torch.random.fork_rng`` with a seed for reproducible training. Gradients are
    cleared at the end, so no ``.grad`` is left on the parameters.
    """
    from tqdm.auto import tqdm

    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    model.train()
    bar = tqdm(range(epochs), desc=description, disable=not progress, leave=False)
    for _ in bar:
        for indices in torch.randperm(size, generator=generator, device="cpu").split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(indices)
            loss.backward()
            optimizer.step()
        if schedule is not None:
            schedule.step()
        if end_of_epoch is not None:
            end_of_epoch()
        bar.set_postfix(loss=float(loss.detach()))
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


#: The ``optimizer`` choices of :func:`train_model` (and of
#: :func:`~captum_uncertainty.data.train_ensemble`).
SUPPORTED_OPTIMIZERS = ("adam", "sgd")
#: Deprecated alias of :data:`SUPPORTED_OPTIMIZERS`, kept for one release.
OPTIMIZERS = SUPPORTED_OPTIMIZERS


def _make_optimizer(model: nn.Module, optimizer: str, lr: float, momentum: float) -> torch.optim.Optimizer:
    if check_choice(optimizer, "optimizer", SUPPORTED_OPTIMIZERS) == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def train_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    description: str = "training",
    optimizer: str = "adam",
    momentum: float = 0.0,
) -> nn.Module:
    """Train a classifier with cross-entropy; returns it in eval mode.

    The paper trains its MNIST CNN with SGD (lr 0.1, momentum 0.9, batch 128) for 30 epochs on
    60,000 digits (``WANG_RECIPE``); on 4,000 bundled digits and a CPU the default is Adam
    (lr 1e-3) for a few epochs, which reaches about 95-97% test accuracy. The data order and
    dropout are seeded with ``seed`` without touching the caller's random state.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    chosen = _make_optimizer(model, optimizer, lr, momentum)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fit(
            model,
            x.shape[0],
            lambda index: nn.functional.cross_entropy(model(x[index]), y[index]),
            chosen,
            epochs=epochs,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(seed),
            progress=progress,
            description=description,
        )
