"""The one minibatch training loop of the package (ensemble members, the VAE, the mitigation
study's classifiers)."""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_positive_int

__all__ = ["fit"]

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
