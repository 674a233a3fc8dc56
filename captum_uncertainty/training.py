"""The one minibatch training loop of the package (ensemble members, the VAE, the mitigation
study's classifiers), classifier training with cross-entropy, and the training of ensemble
members one thread each, in parallel worker processes when asked."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TypeVar

import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_choice, check_positive_int

__all__ = ["OPTIMIZERS", "fit", "train_members", "train_model", "training_workers"]

OPTIMIZERS = ("adam", "sgd")

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


def _make_optimizer(model: nn.Module, optimizer: str, lr: float, momentum: float) -> torch.optim.Optimizer:
    if check_choice(optimizer, "optimizer", OPTIMIZERS) == "adam":
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


def training_workers() -> int:
    """The CPUs this process may run on (its affinity where the system reports one), at least 1:
    the command line's ``workers`` for training ensemble members."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _trained_member(
    build: Callable[[], nn.Module],
    x: Tensor,
    y: Tensor,
    seed: int,
    training: Dict[str, Any],
    progress: bool,
    description: str,
) -> nn.Module:
    """Build a member under ``seed`` and train it on one thread (:func:`train_model`)."""
    with _one_thread():
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            fresh = build()
        return train_model(fresh, x, y, seed=seed, progress=progress, description=description, **training)


def train_members(
    build: Callable[[], nn.Module],
    x: Tensor,
    y: Tensor,
    seeds: Sequence[int],
    training: Dict[str, Any],
    *,
    workers: int = 1,
    progress: bool = False,
) -> List[nn.Module]:
    """Train one classifier per seed: built by ``build`` under its seed, trained by
    :func:`train_model` with ``training`` and that seed, on one CPU thread.

    One thread per member makes the weights independent of the machine's core count and lets
    ``workers > 1`` train that many members at once in spawned processes with the same weights
    as ``workers=1``. A small network gains little from a second thread, so this halves the
    wall time of an ensemble on two cores (RESULTS.md, "The quick run"). The processes import
    the calling script again, as :mod:`multiprocessing`'s spawn does: a script that trains with
    ``workers > 1`` must guard its entry point with ``if __name__ == "__main__":``. When the
    processes cannot start (``build`` cannot be pickled, a daemonic caller), the members are
    trained here instead, with a :class:`RuntimeWarning`.

    Args:
        build (callable): makes a fresh, untrained member (picklable when ``workers > 1``).
        x, y (Tensor): training inputs and integer labels.
        seeds (sequence of int): one seed per member.
        training (dict): keyword arguments of :func:`train_model` (``epochs``, ``lr``, ...).
        workers (int): members trained at once. Default: 1.
        progress (bool): show a progress bar over the members (and, with one worker, over the
            epochs).

    Returns:
        list of nn.Module: the members in ``seeds``' order, in eval mode.
    """
    from tqdm.auto import tqdm

    check_positive_int(workers, "workers")
    seeds = list(seeds)
    bar = tqdm(total=len(seeds), desc="ensemble members", disable=not progress)
    with bar:
        if workers > 1 and len(seeds) > 1:
            try:
                return _in_processes(build, x, y, seeds, training, min(workers, len(seeds)), bar.update)
            except (BrokenProcessPool, pickle.PicklingError, AttributeError, OSError) as error:
                warnings.warn(
                    f"training the members in {workers} processes failed ({error!r}); training them here, one by one",
                    RuntimeWarning,
                    stacklevel=2,
                )
                bar.reset()
        members = []
        for index, seed in enumerate(seeds):
            description = f"member {index + 1}/{len(seeds)}"
            members.append(_trained_member(build, x, y, seed, training, progress, description))
            bar.update()
        return members


def _in_processes(
    build: Callable[[], nn.Module],
    x: Tensor,
    y: Tensor,
    seeds: List[int],
    training: Dict[str, Any],
    workers: int,
    done: Callable[[], Any],
) -> List[nn.Module]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_trained_member, build, x, y, seed, training, False, "") for seed in seeds]
        for future in futures:
            future.add_done_callback(lambda _: done())
        return [future.result() for future in futures]
