"""Uncertainty mitigation: attribution maps as attention (Wang et al., 2023, Sec. 4 and App. B.2.2).

An uncertainty map ``M(x)`` is normalised, turned into the attention ``A(x) = (1 - M(x)) M(x)``,
and multiplied as ``(1 + alpha A(x))`` into the feature maps of the classifier's last
convolutional layer (or into the input), and the classifier is retrained with it on limited data.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "UncertaintyAttention",
    "attention_weights",
    "evaluate",
    "last_conv_layer",
    "mitigation_study",
    "train_with_attention",
]

NORMALIZATIONS = ("softmax", "minmax")
SPACES = ("latent", "input")


def attention_weights(maps: Tensor, normalization: str = "softmax") -> Tensor:
    r"""The attention ``A(x) = (1 - M(x)) * M(x)`` of Wang et al.'s Eq. 12, one map per image.

    Channels are summed first, then each image's map is normalised:

    * ``"softmax"`` (default, App. B.2.2: "normalized using the element-wise softmax function"):
      a softmax over the ``H * W`` pixels of the image, so ``M`` sums to 1 and ``A ~ M`` is of
      order ``1 / (H W)``;
    * ``"minmax"``: ``(m - min) / (max - min)`` per image (0 where the map is constant), the
      reading under which Eq. 12's motivation holds literally: ``A`` is 0 on the background
      (``M = 0``) and on the most uncertain pixels (``M = 1``) and largest in between.

    Args:
        maps (Tensor): attribution maps ``(N, C, H, W)`` (typically ``C = 1``).
        normalization (str): ``"softmax"`` or ``"minmax"``. Default: ``"softmax"``.

    Returns:
        Tensor: ``(N, 1, H, W)`` attention weights in ``[0, 1/4]``.

    Examples::

        >>> maps = UABackprop(UncertaintyForward(models, measure="epistemic")).attribute(x)
        >>> attention = attention_weights(maps)
    """
    if not isinstance(maps, Tensor) or maps.dim() != 4:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a tensor of shape (N, C, H, W), got {shape}")
    if maps.shape[0] == 0:
        raise ValueError("maps must contain at least one map")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or inf")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    summed = maps.detach().sum(1, keepdim=True)
    flat = summed.flatten(1)
    if normalization == "softmax":
        normalised = flat.softmax(1)
    else:
        low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        normalised = (flat - low) / (high - low).where(high > low, torch.ones_like(high))
    return ((1 - normalised) * normalised).view_as(summed)


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` of ``model`` in registration order."""
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convolutions:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer; pass layer= or use space='input'")
    return convolutions[-1]


class UncertaintyAttention(nn.Module):
    r"""A classifier whose last convolutional features (or inputs) are modulated by ``1 + alpha A(x)``.

    With ``space="latent"`` (the paper's main setting) the output ``h`` of ``layer`` (default:
    the model's last ``nn.Conv2d``) becomes ``(1 + alpha A) * h``, with ``A`` bilinearly resized
    to ``h``'s spatial size; the forward hook that does it exists only during the call and is
    removed even when the call raises. Because ReLU and max-pooling commute with multiplication
    by a positive factor, modulating the convolution's output equals modulating its activation.
    With ``space="input"`` the input becomes ``(1 + alpha A) * x``: Wang et al.'s App. D.2.4
    writes ``A(x) * x``, but ``A`` is of order ``1 / (H W)`` after a softmax, which would scale
    the input down ~1000-fold; ``1 + alpha A`` is the counterpart of the latent form and keeps
    the input's scale (a documented choice).

    Args:
        model (nn.Module): the classifier (returns logits); it is trained through this wrapper.
        alpha (float): attention strength (>= 0; the paper uses 0.2). Default: 0.2.
        space (str): ``"latent"`` or ``"input"``. Default: ``"latent"``.
        layer (nn.Module, optional): the layer whose output is modulated (latent space).

    Examples::

        >>> attention = attention_weights(epistemic_maps)
        >>> net = UncertaintyAttention(MNISTCNN(), alpha=0.2)
        >>> logits = net(x, attention)
    """

    def __init__(self, model: nn.Module, alpha: float = 0.2, space: str = "latent", layer: Optional[nn.Module] = None) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        self.model = model
        self.alpha = float(alpha)
        self.space = space
        self.layer = (layer if layer is not None else last_conv_layer(model)) if space == "latent" else None

    def forward(self, inputs: Tensor, attention: Optional[Tensor]) -> Tensor:
        """Logits of ``model`` with the attention applied (``attention=None``: the plain model)."""
        if attention is None:
            return self.model(inputs)
        check_attention(attention, inputs)
        factor = lambda size: 1 + self.alpha * F.interpolate(attention, size=size, mode="bilinear", align_corners=False)
        if self.space == "input":
            return self.model(inputs * factor(inputs.shape[-2:]))
        handle = self.layer.register_forward_hook(lambda module, args, output: output * factor(output.shape[-2:]))
        try:
            return self.model(inputs)
        finally:
            handle.remove()


def check_attention(attention: Tensor, inputs: Tensor) -> None:
    if not isinstance(attention, Tensor) or attention.dim() != 4 or attention.shape[1] != 1:
        shape = tuple(attention.shape) if isinstance(attention, Tensor) else type(attention).__name__
        raise ValueError(f"attention must have shape (N, 1, H, W) (see attention_weights), got {shape}")
    if attention.shape[0] != inputs.shape[0]:
        raise ValueError(f"attention has {attention.shape[0]} maps for {inputs.shape[0]} inputs")
    if not torch.isfinite(attention).all():
        raise ValueError("attention contains NaN or inf")


def train_with_attention(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attention: Optional[Tensor] = None,
    alpha: float = 0.2,
    space: str = "latent",
    epochs: int = 120,
    batch_size: int = 128,
    lr: float = 0.1,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    r"""Train ``model`` with the attention (or plainly, ``attention=None``), Wang et al.'s recipe.

    App. B.2.2: SGD with learning rate 0.1 and momentum 0.9, batch size 128, 120 epochs, the
    learning rate multiplied by 0.2 at 25%, 50% and 75% of the epochs (epochs 30, 60, 90),
    cross-entropy. Data order and dropout are seeded with ``seed`` without touching the global
    random state. Returns the model in eval mode.

    Args:
        model (nn.Module): a freshly initialised classifier (trained in place).
        x, y (Tensor): training inputs ``(N, C, H, W)`` and labels ``(N,)``.
        attention (Tensor, optional): ``(N, 1, H, W)`` from :func:`attention_weights`.
        alpha, space: as in :class:`UncertaintyAttention`.
        epochs, batch_size, lr (int, int, float): the schedule above.
        seed (int): seed of the data order and dropout.
        progress (bool): tqdm bar over epochs.

    Returns:
        nn.Module: ``model``, trained, in eval mode.
    """
    from tqdm.auto import tqdm

    if x.shape[0] != y.shape[0] or (attention is not None and attention.shape[0] != x.shape[0]):
        raise ValueError("x, y and attention must have the same number of examples")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    net = UncertaintyAttention(model, alpha, space)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    milestones = sorted({max(1, round(epochs * share)) for share in (0.25, 0.5, 0.75)})
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.2)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in tqdm(range(epochs), desc="training", disable=not progress, leave=False):
            for batch in torch.randperm(x.shape[0], generator=generator).split(batch_size):
                logits = net(x[batch], None if attention is None else attention[batch])
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(logits, y[batch]).backward()
                optimizer.step()
            schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attention: Optional[Tensor] = None,
    alpha: float = 0.2,
    space: str = "latent",
    batch_size: int = 500,
) -> Dict[str, float]:
    """Accuracy (percent) and mean negative log-likelihood, in eval mode (the mode is restored)."""
    net = UncertaintyAttention(model, alpha, space)
    modes = [module.training for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            logits = torch.cat([
                net(x[i : i + batch_size], None if attention is None else attention[i : i + batch_size])
                for i in range(0, x.shape[0], batch_size)
            ])
    finally:
        for module, mode in zip(model.modules(), modes):
            module.training = mode
    return {
        "accuracy": 100.0 * float((logits.argmax(1) == y).double().mean()),
        "nll": float(F.cross_entropy(logits, y)),
    }


def stratified_subset(y: Tensor, size: int, seed: int) -> Tensor:
    """``size`` indices with (nearly) equal counts per class, drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(y)
    per_class = [torch.nonzero(y == c).flatten() for c in classes]
    shuffled = [members[torch.randperm(len(members), generator=generator)] for members in per_class]
    quota = [size // len(classes) + (k < size % len(classes)) for k in range(len(classes))]
    chosen = torch.cat([members[:q] for members, q in zip(shuffled, quota)])
    return chosen[torch.randperm(len(chosen), generator=generator)]


def mitigation_study(
    make_model: Callable[[], nn.Module],
    x_train: Tensor,
    y_train: Tensor,
    maps_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    maps_test: Tensor,
    n_train: int = 500,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    alpha: float = 0.2,
    space: str = "latent",
    normalizations: Sequence[str] = ("softmax",),
    epochs: int = 120,
    progress: bool = True,
) -> Dict[str, Dict[str, float]]:
    r"""Wang et al.'s Table 2 protocol: train on ``n_train`` images with and without attention.

    For every seed: a class-stratified subset of ``n_train`` training images, a fresh model from
    ``make_model()`` (seeded) trained plainly and another trained with the attention of the
    pre-generated maps (:func:`train_with_attention`), one per map normalisation, all evaluated
    on the whole test set (the attention models with the test images' maps). Every model of a
    seed starts from the same initial weights.

    Args:
        make_model (callable): returns a fresh classifier (called under ``torch.manual_seed(seed)``).
        x_train, y_train, maps_train (Tensor): training pool, labels and its maps ``(N, 1, H, W)``.
        x_test, y_test, maps_test (Tensor): test images, labels and their maps.
        n_train (int): training images per seed (the paper: 500 for MNIST). Default: 500.
        seeds (sequence of int): one run per seed. Default: five seeds.
        alpha, space: as in :class:`UncertaintyAttention`.
        normalizations (sequence of str): map normalisations of :func:`attention_weights` to
            compare. Default: ``("softmax",)``, the paper's.
        epochs (int): training epochs (the paper: 120). Default: 120.
        progress (bool): tqdm bar over seeds.

    Returns:
        dict: ``"no attention"`` and ``"attention (<normalization>)"`` rows, each with the mean
        and the standard deviation over seeds of ``accuracy`` (percent) and ``nll``.
    """
    from tqdm.auto import tqdm

    variants = {"no attention": (None, None)}
    for normalization in normalizations:
        variants[f"attention ({normalization})"] = (
            attention_weights(maps_train, normalization), attention_weights(maps_test, normalization)
        )
    runs: Dict[str, list] = {name: [] for name in variants}
    for seed in tqdm(list(seeds), desc="mitigation seeds", disable=not progress):
        subset = stratified_subset(y_train, n_train, seed)
        for name, (attention_train, attention_test) in variants.items():
            train_attention = None if attention_train is None else attention_train[subset]
            test_attention = attention_test
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model = make_model()
            train_with_attention(model, x_train[subset], y_train[subset], train_attention, alpha, space, epochs, seed=seed)
            runs[name].append(evaluate(model, x_test, y_test, test_attention, alpha, space))
    return {name: summarise(values) for name, values in runs.items()}


def summarise(values: Sequence[Dict[str, float]]) -> Dict[str, float]:
    summary: Dict[str, float] = {}
    for key in values[0]:
        column = torch.tensor([value[key] for value in values], dtype=torch.float64)
        summary[key] = float(column.mean())
        summary[f"{key}_std"] = float(column.std()) if len(values) > 1 else math.nan
    return summary
