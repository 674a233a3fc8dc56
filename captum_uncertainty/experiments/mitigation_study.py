"""Wang et al.'s mitigation study (Sec. 4, Table 2, App. B.2.2, D.2): experiment code.

The paper's classifier (:class:`MitigationCNN`), retraining with uncertainty attention on limited
data (:func:`train_with_attention`), the evaluation and the repeated study. The attention itself
is library code: :mod:`captum_uncertainty.mitigation`.

Examples::

    >>> model = train_with_attention(x_train, y_train, attention_weights(maps_train))
    >>> evaluate(model, x_test, y_test, attention_weights(maps_test))
    {'accuracy': ..., 'nll': ...}
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_uncertainty._validation import check_positive_int, check_positive_number
from captum_uncertainty.mitigation import (
    UncertaintyAttention,
    attention_weights,
    check_attention,
)
from captum_uncertainty.training import fit

__all__ = [
    "MitigationCNN",
    "evaluate",
    "mitigation_study",
    "stratified_subset",
    "train_with_attention",
]


class MitigationCNN(nn.Module):
    r"""The classifier of Wang et al.'s mitigation experiments (App. B.2.2), returning logits.

    ``Conv2D(32, 4x4)-ReLU-Conv2D(32, 4x4)-ReLU-MaxPool(2)-Dropout(0.5)-Dense(128)-ReLU-
    Dropout(0.5)-Dense(128)-ReLU-Dense(num_classes)`` (the paper's final softmax is left to the
    loss). ``features`` is the convolutional part, ``classifier`` the dense head. Images need a
    side of at least 8 pixels (8x8 gives 1x1 pooled features).

    Args:
        in_channels (int): image channels. Default: 1.
        image_size (int or tuple of int): image side, or ``(height, width)``. Default: 28.
        num_classes (int): number of classes. Default: 10.
        dropout (float): dropout probability. Default: 0.5.

    Examples::

        >>> logits = MitigationCNN(in_channels=1, image_size=28)(torch.rand(4, 1, 28, 28))  # (4, 10)
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: Union[int, Tuple[int, int]] = 28,
        num_classes: int = 10,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        side_h, side_w = (height - 6) // 2, (width - 6) // 2
        if side_h < 1 or side_w < 1:
            raise ValueError(f"image_size must be at least 8 pixels per side, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 4), nn.ReLU(), nn.Conv2d(32, 32, 4), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(32 * side_h * side_w, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------- training


def train_with_attention(
    x_train: Tensor,
    y_train: Tensor,
    attention: Optional[Tensor] = None,
    *,
    alpha: float = 0.2,
    space: str = "latent",
    epochs: int = 120,
    batch_size: int = 128,
    lr: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    model: Optional[nn.Module] = None,
    layer: Optional[nn.Module] = None,
) -> nn.Module:
    r"""Train a classifier with the uncertainty attention (or plainly), Wang et al.'s recipe.

    App. B.2.2: a fresh :class:`MitigationCNN` (initialised under ``torch.manual_seed(seed)``),
    cross-entropy, SGD with learning rate ``lr`` (0.1) and momentum 0.9, batch size 128, 120
    epochs, the learning rate multiplied by 0.2 after 25%, 50% and 75% of the epochs (epochs 30,
    60 and 90 of 120). Batches are shuffled with a ``torch.Generator`` seeded with ``seed`` and
    dropout draws from the global generator seeded with ``seed``, inside
    ``torch.random.fork_rng`` so the caller's random state is left untouched: the same seed gives
    the same parameters.

    Args:
        x_train (Tensor): training images ``(N, C, H, W)``.
        y_train (Tensor): integer labels ``(N,)`` in ``[0, num_classes)``; ``num_classes`` of
            the default model is ``y_train.max() + 1``.
        attention (Tensor, optional): ``(N, 1, H, W)`` from :func:`~captum_uncertainty.mitigation.attention_weights`;
            ``None`` trains plainly. Default: ``None``.
        alpha (float): attention strength (see
            :class:`~captum_uncertainty.mitigation.UncertaintyAttention`). Default: 0.2.
        space (str): ``"latent"`` or ``"input"``. Default: ``"latent"``.
        epochs (int): training epochs. Default: 120.
        batch_size (int): minibatch size. Default: 128.
        lr (float): initial learning rate. Default: 0.1.
        seed (int): seed of the initialisation, the data order and dropout. Default: 0.
        progress (bool): show a tqdm bar over the epochs. Default: ``True``.
        model (nn.Module, optional): train this classifier (in place) instead of a fresh
            :class:`MitigationCNN`.
        layer (nn.Module, optional): the attended layer of ``model`` (latent space). Default:
            its last ``nn.Conv2d``.

    Returns:
        nn.Module: the trained classifier, in eval mode.

    Examples::

        >>> model = train_with_attention(x, y, attention_weights(maps), epochs=120, seed=0)
        >>> plain = train_with_attention(x, y, None, seed=0)
    """
    _check_training_data(x_train, y_train, attention)
    _check_schedule(epochs, batch_size, lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model is None:
            model = _default_model(x_train, y_train)
        net = UncertaintyAttention(model, layer, alpha=alpha, space=space)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        milestones = [max(1, round(epochs * share)) for share in (0.25, 0.5, 0.75)]
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.2)

        def batch_loss(index: Tensor) -> Tensor:
            index = index.to(x_train.device)
            logits = net(x_train[index], None if attention is None else attention[index])
            return F.cross_entropy(logits, y_train[index])

        return fit(
            model,
            x_train.shape[0],
            batch_loss,
            optimizer,
            epochs=epochs,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(seed),
            schedule=schedule,
            progress=progress,
        )


def _default_model(x_train: Tensor, y_train: Tensor) -> MitigationCNN:
    """A :class:`MitigationCNN` sized for ``x_train`` with ``y_train.max() + 1`` classes."""
    channels, height, width = x_train.shape[1:]
    model = MitigationCNN(int(channels), (int(height), int(width)), int(y_train.max()) + 1)
    return model.to(x_train.device)


def _check_training_data(x: Tensor, y: Tensor, attention: Optional[Tensor]) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(
            f"x_train must be a non-empty (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}"
        )
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
        raise ValueError(
            f"y_train must be an integer tensor of shape ({x.shape[0]},), got {getattr(y, 'shape', type(y).__name__)}"
        )
    if attention is not None:
        check_attention(attention, x)


def _check_schedule(epochs: int, batch_size: int, lr: float) -> None:
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    check_positive_number(lr, "lr")


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attention: Optional[Tensor] = None,
    *,
    alpha: float = 0.2,
    space: str = "latent",
    layer: Optional[nn.Module] = None,
    batch_size: int = 500,
) -> Dict[str, float]:
    """Accuracy and mean negative log-likelihood of ``model`` (with the attention) on ``(x, y)``.

    Runs in eval mode without gradients; the ``training`` flag of every submodule of ``model`` is
    restored afterwards (also when the call raises).

    Args:
        model (nn.Module): the classifier (returns logits).
        x (Tensor): images ``(N, C, H, W)``.
        y (Tensor): labels ``(N,)``.
        attention (Tensor, optional): ``(N, 1, H, W)`` test-set attention; ``None``: plain model.
        alpha (float): attention strength, as in training. Default: 0.2.
        space (str): ``"latent"`` or ``"input"``, as in training. Default: ``"latent"``.
        layer (nn.Module, optional): the attended layer. Default: the last ``nn.Conv2d``.
        batch_size (int): evaluation batch size. Default: 500.

    Returns:
        dict: ``{"accuracy": percent correct, "nll": mean negative log-likelihood}``.

    Examples::

        >>> evaluate(model, data.x_test, data.y_test, attention_weights(maps_test))
        {'accuracy': 91.3, 'nll': 0.31}
    """
    if attention is not None:
        check_attention(attention, x)
    net = UncertaintyAttention(model, layer, alpha=alpha, space=space)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            logits = torch.cat(
                [
                    net(x[i : i + batch_size], None if attention is None else attention[i : i + batch_size])
                    for i in range(0, x.shape[0], batch_size)
                ]
            )
    finally:
        for module, mode in modes:
            module.training = mode
    return {
        "accuracy": 100.0 * float((logits.argmax(1) == y).double().mean()),
        "nll": float(F.cross_entropy(logits.double(), y)),
    }


# ----------------------------------------------------------------------------- study


def stratified_subset(y: Tensor, size: int, seed: int) -> Tensor:
    """``size`` indices into ``y`` with (nearly) equal counts per class, drawn with ``seed``.

    Classes with too few examples contribute all of them, the remainder going to the others.
    """
    if not 1 <= size <= len(y):
        raise ValueError(f"n_train must be in [1, {len(y)}], got {size}")
    generator = torch.Generator().manual_seed(seed)
    pools = [
        members[torch.randperm(len(members), generator=generator, device="cpu")]
        for members in (torch.nonzero(y.cpu() == c).flatten() for c in torch.unique(y.cpu()))
    ]
    quotas = [0] * len(pools)
    remaining = size
    while remaining:
        open_classes = [k for k, pool in enumerate(pools) if quotas[k] < len(pool)]
        for rank, k in enumerate(open_classes):
            share = remaining // len(open_classes) + (rank < remaining % len(open_classes))
            quotas[k] += min(share, len(pools[k]) - quotas[k])
        remaining = size - sum(quotas)
    chosen = torch.cat([pool[:quota] for pool, quota in zip(pools, quotas)])
    return chosen[torch.randperm(len(chosen), generator=generator, device="cpu")]


def mitigation_study(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    maps_train: Tensor,
    maps_test: Tensor,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    alpha: float = 0.2,
    space: str = "latent",
    epochs: int = 120,
    n_train: int = 500,
    normalization: str = "softmax",
    progress: bool = True,
) -> Dict[str, Dict[str, float]]:
    r"""Wang et al.'s uncertainty-mitigation protocol (Table 2): limited data, with and without attention.

    For every seed, a class-stratified subset of ``n_train`` training images is drawn with that
    seed; a :class:`MitigationCNN` is trained on it plainly and another with the attention
    :func:`~captum_uncertainty.mitigation.attention_weights` of the subset's pre-generated maps
    (:func:`train_with_attention`,
    both initialised from the same seed, so they start from identical weights and see the same
    batches); both are evaluated on the whole test set, the attention model with the attention
    of ``maps_test``.

    Args:
        x_train (Tensor): training pool ``(N, C, H, W)``.
        y_train (Tensor): its labels ``(N,)``.
        x_test (Tensor): test images ``(M, C, H, W)``.
        y_test (Tensor): their labels ``(M,)``.
        maps_train (Tensor): uncertainty maps of the training pool ``(N, 1, H, W)``; only the
            rows of the drawn subsets are used (others may be placeholders, e.g. zeros).
        maps_test (Tensor): uncertainty maps of the test images ``(M, 1, H, W)``.
        seeds (sequence of int): one run per seed. Default: ``(0, 1, 2, 3, 4)``.
        alpha (float): attention strength. Default: 0.2.
        space (str): ``"latent"`` or ``"input"``. Default: ``"latent"``.
        epochs (int): training epochs. Default: 120.
        n_train (int): training images per run (500 for MNIST in the paper). Default: 500.
        normalization (str): map normalisation of :func:`~captum_uncertainty.mitigation.attention_weights`. Default:
            ``"softmax"``, the paper's.
        progress (bool): show a tqdm bar over the runs. Default: ``True``.

    Returns:
        dict: ``{"no attention": row, "attention": row}``, each row holding the mean and the
        standard deviation (``ddof=1``; NaN for a single seed) over seeds:
        ``{"accuracy_mean", "accuracy_std", "nll_mean", "nll_std"}`` (accuracy in percent).

    Examples::

        >>> result = mitigation_study(d.x_train, d.y_train, d.x_test, d.y_test, maps_train, maps_test)
        >>> result["attention"]["accuracy_mean"], result["no attention"]["accuracy_mean"]
    """
    from tqdm.auto import tqdm

    _check_study_inputs(x_train, y_train, maps_train, "train")
    _check_study_inputs(x_test, y_test, maps_test, "test")
    test_attention = attention_weights(maps_test, normalization)
    runs: Dict[str, List[Dict[str, float]]] = {"no attention": [], "attention": []}
    for seed in tqdm(list(seeds), desc="mitigation seeds", disable=not progress):
        subset = stratified_subset(y_train, n_train, seed).to(x_train.device)
        x, y = x_train[subset], y_train[subset]
        attention = attention_weights(maps_train[subset], normalization)
        settings: Dict[str, Any] = dict(alpha=alpha, space=space)
        plain = train_with_attention(x, y, None, epochs=epochs, seed=seed, progress=False, **settings)
        runs["no attention"].append(evaluate(plain, x_test, y_test, None, **settings))
        attended = train_with_attention(x, y, attention, epochs=epochs, seed=seed, progress=False, **settings)
        runs["attention"].append(evaluate(attended, x_test, y_test, test_attention, **settings))
    return {name: _summarise(values) for name, values in runs.items()}


def _check_study_inputs(x: Tensor, y: Tensor, maps: Tensor, split: str) -> None:
    if not (len(x) == len(y) == len(maps)):
        raise ValueError(
            f"x_{split}, y_{split} and maps_{split} must have the same length, got {len(x)}, {len(y)}, {len(maps)}"
        )


def _summarise(values: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Mean and standard deviation (``ddof=1``) over runs of every metric."""
    summary: Dict[str, float] = {}
    for key in values[0]:
        column = torch.tensor([value[key] for value in values], dtype=torch.float64)
        summary[f"{key}_mean"] = float(column.mean())
        summary[f"{key}_std"] = float(column.std()) if len(values) > 1 else math.nan
    return summary
