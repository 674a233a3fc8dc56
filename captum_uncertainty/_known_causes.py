"""Data sets whose cause of uncertainty is known by construction, to check uncertainty attributions.

An uncertainty attribution is right when it points at what made the model uncertain. On real
data nobody knows that; here it is built in:

* :func:`make_epistemic_patch_images`: a checkerboard patch that no training image holds is
  pasted into the test images (epistemic: the posterior has never seen it).
* :func:`make_aleatoric_overlay_images`: a faint second digit of another class is overlaid on
  a share of the training images, which are then labelled with either class at random, and on
  every test image (aleatoric: the model learns that such images are ambiguous).
* :func:`make_tabular_known_causes`: a binary classification table whose test rows carry either
  a feature in a region where the label is a coin flip (aleatoric) or a feature far outside the
  training range (epistemic).

Each returns the caused test inputs, their ``clean`` versions (the same inputs without the cause)
and boolean ``masks`` marking where the cause is, so that ``x_test`` differs from ``clean`` only
inside ``masks``. Everything is seeded with a ``torch.Generator`` (the same ``seed`` gives the same
tensors, bit for bit) and is float32 (inputs) and int64 (labels) on the CPU.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from captum_uncertainty._validation import check_int, check_positive_int, check_unit_interval

__all__ = [
    "KnownCauseImages",
    "KnownCauseRegression",
    "KnownCauseTable",
    "SUPPORTED_TABULAR_CAUSES",
    "TABULAR_CAUSES",
    "make_aleatoric_overlay_images",
    "make_epistemic_patch_images",
    "make_regression_known_causes",
    "make_tabular_known_causes",
    "regression_target",
]

#: The causes of :func:`make_tabular_known_causes`, indexed by the ``cause`` tensor of its
#: :class:`KnownCauseTable`: ``SUPPORTED_TABULAR_CAUSES[0] == "noise"`` (aleatoric) and
#: ``SUPPORTED_TABULAR_CAUSES[1] == "out_of_range"`` (epistemic).
SUPPORTED_TABULAR_CAUSES = ("noise", "out_of_range")
#: Deprecated alias of :data:`SUPPORTED_TABULAR_CAUSES`, kept for one release.
TABULAR_CAUSES = SUPPORTED_TABULAR_CAUSES

#: How often a patch position is redrawn for a test image that the patch would leave unchanged.
_PATCH_REDRAWS = 10


class KnownCauseImages(NamedTuple):
    """Images with a known cause of uncertainty (see :func:`make_epistemic_patch_images`).

    Attributes:
        x_train (Tensor): training images ``(N_train, C, H, W)`` to fit the posterior on.
        y_train (Tensor): their int64 labels ``(N_train,)``.
        x_test (Tensor): test images carrying the cause ``(N_test, C, H, W)``.
        y_test (Tensor): the int64 labels of the clean test images ``(N_test,)``.
        masks (Tensor): bool, the shape of ``x_test``: ``True`` exactly where ``x_test``
            differs from ``clean`` (where the cause is).
        clean (Tensor): the test images without the cause.
        strength (float): how strongly the cause was applied.
        train_overlaid (Tensor, optional): bool ``(N_train,)``, the training images that carry a
            second digit (:func:`make_aleatoric_overlay_images`); ``None`` when the training set
            is unchanged.
        train_second_class (Tensor, optional): int64 ``(N_train,)``, the class of each overlaid
            training image's second digit, ``-1`` for the others; ``None`` when the training set
            is unchanged.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    masks: Tensor
    clean: Tensor
    strength: float
    train_overlaid: Optional[Tensor] = None
    train_second_class: Optional[Tensor] = None


class KnownCauseTable(NamedTuple):
    """A table with a known cause of uncertainty per test row (see :func:`make_tabular_known_causes`).

    Attributes:
        x_train (Tensor): float32 training features ``(N_train, F)``.
        y_train (Tensor): their int64 binary labels ``(N_train,)``.
        x_test (Tensor): float32 test rows carrying their cause ``(N_test, F)``.
        y_test (Tensor): int64 labels of the test rows as the data-generating process gives them.
        masks (Tensor): bool ``(N_test, F)``, ``True`` at the caused feature of each row (one per row).
        clean (Tensor): the test rows with the caused feature reset to a typical, non-noisy value.
        feature_names (list of str): ``x0, x1, ..., noise, out_of_range``.
        noise_feature (int): column of the noise feature, ``F - 2``.
        out_of_range_feature (int): column of the out-of-range feature, ``F - 1``.
        cause (Tensor): int64 ``(N_test,)``, each row's cause: ``0`` noise (aleatoric), ``1`` out of
            range (epistemic); ``SUPPORTED_TABULAR_CAUSES[cause[i]]`` names it.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    masks: Tensor
    clean: Tensor
    feature_names: List[str]
    noise_feature: int
    out_of_range_feature: int
    cause: Tensor


# ----------------------------------------------------------------------------- argument checks


def _check_split(data: Any) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``data``'s four tensors: images ``(N, C, H, W)`` floating point and int64 labels ``(N,)``."""
    if not isinstance(data, tuple) or len(data) != 4:
        raise TypeError(f"data must be a DataSplit (x_train, y_train, x_test, y_test), got {type(data).__name__}")
    names = ("x_train", "y_train", "x_test", "y_test")
    for name, tensor in zip(names, data):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"data.{name} must be a torch.Tensor, got {type(tensor).__name__}")
    x_train, y_train, x_test, y_test = data
    for name, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(
                f"data.x_{name} must be floating point images (N, C, H, W), got {images.dtype} of shape "
                f"{tuple(images.shape)}"
            )
        if labels.dim() != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise ValueError(f"data.y_{name} must be integer labels (N,) matching data.x_{name}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"data.x_train and data.x_test must hold images of one shape, got {tuple(x_train.shape[1:])} "
            f"and {tuple(x_test.shape[1:])}"
        )
    if x_test.shape[0] == 0:
        raise ValueError("data.x_test holds no images")
    as_cpu = [t.detach().to("cpu") for t in (x_train, y_train, x_test, y_test)]
    return (
        as_cpu[0].to(torch.float32).clone(),
        as_cpu[1].to(torch.int64).clone(),
        as_cpu[2].to(torch.float32).clone(),
        as_cpu[3].to(torch.int64).clone(),
    )


def _check_n_test(n_test: Any, available: int) -> int:
    """``None`` (all ``available`` test images) or an int in ``[1, available]``."""
    if n_test is None:
        return available
    if isinstance(n_test, bool) or not isinstance(n_test, int):
        raise TypeError(f"n_test must be an int or None, got {type(n_test).__name__}")
    if not 1 <= n_test <= available:
        raise ValueError(f"n_test must be in [1, {available}] (the test images available), got {n_test}")
    return n_test


def _load(data: Any) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    if data is None:
        from captum_uncertainty.data import load_mnist

        data = load_mnist()
    return _check_split(data)


# ----------------------------------------------------------------------------- images


def _checkerboard(size: int) -> Tensor:
    """``size x size`` float32 checkerboard of one-pixel cells: 1 where ``row + column`` is even, else 0."""
    index = torch.arange(size)
    return ((index[:, None] + index[None, :]) % 2 == 0).to(torch.float32)


def make_epistemic_patch_images(
    data: Optional[Any] = None,
    *,
    strength: float = 1.0,
    patch_size: Optional[int] = None,
    n_test: Optional[int] = None,
    seed: int = 0,
) -> KnownCauseImages:
    """Test images with a pattern never seen in training pasted in: a known epistemic cause.

    The pattern is a fixed checkerboard of one-pixel cells, ``patch_size x patch_size`` pixels,
    1 where ``row + column`` is even and 0 elsewhere (the same in every channel). No digit holds
    such a pattern, and the training set is returned unchanged, so the posterior has never seen
    it. Each of the first ``n_test`` test images gets the patch at a position drawn uniformly
    among those where it fits; a patch pixel becomes ``(1 - strength) * clean + strength *
    pattern`` (computed with ``torch.lerp``, exact at ``strength`` 0 and 1 and wherever the clean
    pixel already equals the pattern). ``masks`` is the set of patch pixels that changed, so
    ``(x_test != clean) == masks`` exactly. A position where the patch would change nothing
    (the clean pixels already form the checkerboard) is redrawn, up to 10 times, so for
    ``strength > 0`` every mask is non-empty in practice.

    Args:
        data (DataSplit, optional): images ``(N, C, H, W)`` in [0, 1] and labels. Default:
            :func:`~captum_uncertainty.data.load_mnist`.
        strength (float): blend weight of the pattern, in [0, 1]; 0 leaves the images clean, 1
            replaces the patch's pixels by the pattern. Default: 1.0.
        patch_size (int, optional): side of the square patch, at most ``min(H, W)``. Default:
            ``round(0.25 * min(H, W))`` (at least 1): 7 for MNIST, 2 for the 8x8 digits.
        n_test (int, optional): how many test images (the first ``n_test`` of ``data.x_test``).
            Default: all of them.
        seed (int): seed of the patch positions. Default: 0.

    Returns:
        KnownCauseImages: the unchanged training set, the patched test images, their labels,
        masks, clean versions and ``strength`` (``train_overlaid`` and ``train_second_class``
        are ``None``).

    Raises:
        ValueError: ``strength`` outside [0, 1], ``patch_size`` not in ``[1, min(H, W)]``,
            ``n_test`` not in ``[1, N_test]``, or ill-shaped data.
        TypeError: arguments of the wrong type.

    Examples::

        >>> data = load_digits()
        >>> known = make_epistemic_patch_images(data, patch_size=3)
        >>> bool(((known.x_test != known.clean) == known.masks).all())
        True
        >>> members = train_ensemble(3, data)          # the training set is unchanged
        >>> uf = UncertaintyForward(members, measure="epistemic")
        >>> rises = uf(known.x_test) > uf(known.clean)  # doctest: +SKIP
    """
    strength = check_unit_interval(strength, "strength", include_zero=True)
    check_int(seed, "seed", minimum=0)
    x_train, y_train, x_all, y_all = _load(data)
    count = _check_n_test(n_test, x_all.shape[0])
    height, width = int(x_all.shape[2]), int(x_all.shape[3])
    side = min(height, width)
    if patch_size is None:
        patch_size = max(1, round(0.25 * side))
    elif isinstance(patch_size, bool) or not isinstance(patch_size, int):
        raise TypeError(f"patch_size must be an int or None, got {type(patch_size).__name__}")
    elif not 1 <= patch_size <= side:
        raise ValueError(f"patch_size must be in [1, {side}] (the image is {height}x{width}), got {patch_size}")

    clean = x_all[:count]
    y_test = y_all[:count]
    pattern = _checkerboard(patch_size).expand(clean.shape[1], patch_size, patch_size)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(count)
    tops = torch.zeros(count, dtype=torch.int64)
    lefts = torch.zeros(count, dtype=torch.int64)
    pending = rows
    for attempt in range(_PATCH_REDRAWS + 1):
        tops[pending] = torch.randint(0, height - patch_size + 1, (len(pending),), generator=generator)
        lefts[pending] = torch.randint(0, width - patch_size + 1, (len(pending),), generator=generator)
        if strength == 0.0 or attempt == _PATCH_REDRAWS:
            break
        unchanged = [
            int(i)
            for i in pending
            if torch.equal(clean[i, :, tops[i] : tops[i] + patch_size, lefts[i] : lefts[i] + patch_size], pattern)
        ]
        if not unchanged:
            break
        pending = torch.tensor(unchanged, dtype=torch.int64)

    x_test = clean.clone()
    in_patch = torch.zeros_like(clean, dtype=torch.bool)
    for i in range(count):
        top, left = int(tops[i]), int(lefts[i])
        window = (i, slice(None), slice(top, top + patch_size), slice(left, left + patch_size))
        x_test[window] = torch.lerp(clean[window], pattern, strength).clamp(0.0, 1.0)
        in_patch[window] = True
    masks = (x_test != clean) & in_patch
    return KnownCauseImages(x_train, y_train, x_test, y_test, masks, clean, strength)


def _partners(labels: Tensor, pool_labels: Tensor, generator: torch.Generator, name: str) -> Tensor:
    """For each label, the index of an element of ``pool_labels`` of another class, drawn uniformly."""
    partners = torch.empty(labels.shape[0], dtype=torch.int64)
    for cls in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == cls).flatten()
        candidates = torch.nonzero(pool_labels != cls).flatten()
        if len(candidates) == 0:
            raise ValueError(f"{name} must hold at least two classes to overlay a digit of another class")
        partners[rows] = candidates[torch.randint(0, len(candidates), (len(rows),), generator=generator)]
    return partners


def make_aleatoric_overlay_images(
    data: Optional[Any] = None,
    *,
    strength: float = 0.5,
    share: float = 0.5,
    n_test: Optional[int] = None,
    seed: int = 0,
) -> KnownCauseImages:
    """Images overlaid with a faint second digit whose label is a coin flip: a known aleatoric cause.

    Construction (all draws from one ``torch.Generator`` seeded with ``seed``):

    1. Training set: ``round(share * N_train)`` training images, drawn uniformly without
       replacement, each get a second digit: another clean training image of a different class,
       drawn uniformly among those. The image becomes ``clip(clean + strength * other, 0, 1)``
       and its label either class with probability 0.5 each. A model fitted on it learns that
       overlaid images are ambiguous: their aleatoric uncertainty is high.
    2. Test set: every one of the first ``n_test`` test images gets the same overlay, with a
       second digit drawn uniformly among the images of the whole test split of a different
       class; ``y_test`` keeps the clean image's label and ``masks`` marks the pixels where the
       overlaid image differs from the clean one (``(x_test != clean) == masks`` exactly; a mask
       is empty only if ``strength`` is 0 or too small to change any pixel).

    Args:
        data (DataSplit, optional): images ``(N, C, H, W)`` in [0, 1] and labels of at least two
            classes. Default: :func:`~captum_uncertainty.data.load_mnist`.
        strength (float): intensity of the second digit, in [0, 1]. Default: 0.5.
        share (float): share of the training images overlaid, in [0, 1]. Default: 0.5.
        n_test (int, optional): how many test images (the first ``n_test`` of ``data.x_test``).
            Default: all of them.
        seed (int): seed of every draw. Default: 0.

    Returns:
        KnownCauseImages: the partly overlaid training set and its labels, the overlaid test
        images, their clean labels, masks and clean versions, ``strength``, ``train_overlaid``
        (which training images were overlaid) and ``train_second_class`` (their second digit's
        class, -1 for the others).

    Raises:
        ValueError: ``strength`` or ``share`` outside [0, 1], ``n_test`` not in ``[1, N_test]``,
            a split with a single class, or ill-shaped data.
        TypeError: arguments of the wrong type.

    Examples::

        >>> known = make_aleatoric_overlay_images(load_digits(), strength=0.5)
        >>> bool(((known.x_test != known.clean) == known.masks).all())
        True
        >>> members = train_ensemble(3, DataSplit(known.x_train, known.y_train, known.x_test, known.y_test))
        >>> uf = UncertaintyForward(members, measure="aleatoric")
        >>> rises = uf(known.x_test) > uf(known.clean)  # doctest: +SKIP
    """
    strength = check_unit_interval(strength, "strength", include_zero=True)
    share = check_unit_interval(share, "share", include_zero=True)
    check_int(seed, "seed", minimum=0)
    x_clean_train, y_clean_train, x_all, y_all = _load(data)
    count = _check_n_test(n_test, x_all.shape[0])
    generator = torch.Generator().manual_seed(seed)

    n_train = x_clean_train.shape[0]
    chosen = torch.randperm(n_train, generator=generator)[: round(share * n_train)]
    x_train, y_train = x_clean_train.clone(), y_clean_train.clone()
    overlaid = torch.zeros(n_train, dtype=torch.bool)
    second_class = torch.full((n_train,), -1, dtype=torch.int64)
    if len(chosen):
        partners = _partners(y_clean_train[chosen], y_clean_train, generator, "data.y_train")
        x_train[chosen] = (x_clean_train[chosen] + strength * x_clean_train[partners]).clamp(0.0, 1.0)
        coin = torch.rand(len(chosen), generator=generator) < 0.5
        y_train[chosen] = torch.where(coin, y_clean_train[partners], y_clean_train[chosen])
        overlaid[chosen] = True
        second_class[chosen] = y_clean_train[partners]

    clean, y_test = x_all[:count], y_all[:count]
    test_partners = _partners(y_test, y_all, generator, "data.y_test")
    x_test = (clean + strength * x_all[test_partners]).clamp(0.0, 1.0)
    masks = x_test != clean
    return KnownCauseImages(x_train, y_train, x_test, y_test, masks, clean, strength, overlaid, second_class)


# ----------------------------------------------------------------------------- table


def _truncated_normal(shape: Tuple[int, ...], bound: float, generator: torch.Generator) -> Tensor:
    """Standard normal draws restricted to ``[-bound, bound]`` (draws outside are redrawn)."""
    values = torch.randn(shape, generator=generator)
    outside = values.abs() > bound
    while bool(outside.any()):
        values[outside] = torch.randn(int(outside.sum()), generator=generator)
        outside = values.abs() > bound
    return values


def make_tabular_known_causes(
    n_train: int = 2000, n_test: int = 500, n_features: int = 6, *, seed: int = 0
) -> KnownCauseTable:
    """A binary classification table whose test rows carry a known aleatoric or epistemic cause.

    Features ``x0 ... x{F-3}``, ``noise`` (column ``F - 2``) and ``out_of_range`` (column ``F - 1``),
    for ``F = n_features``:

    * Training rows: every feature is standard normal, except ``out_of_range``, a standard normal
      truncated to [-4, 4] (so no training value comes near the test's out-of-range values). The
      label is ``1[x0 + x1 > 0]``, except where ``noise > 1`` (about 16% of the rows): there it
      is a fair coin. ``x2 ... x{F-3}`` and ``out_of_range`` do not affect the label.
    * Clean test rows: ``x0 ... x{F-3}`` standard normal, ``noise`` and ``out_of_range`` uniform
      in [-1, 1] (typical, in range and not noisy).
    * Caused test rows: ``n_test // 2`` rows, drawn uniformly, have ``out_of_range`` set to
      ``+-U(6, 8)`` (random sign; 6 to 8 standard deviations, never seen in training: the
      epistemic cause, ``cause == 1``); the other rows have ``noise`` set to ``U(1.5, 3)``, inside
      the region where training labels are coin flips (the aleatoric cause, ``cause == 0``).
    * ``y_test`` follows the training rule on the caused rows: a fair coin on the noise rows,
      ``1[x0 + x1 > 0]`` on the out-of-range rows.

    ``masks[i]`` is ``True`` at row ``i``'s caused column only, and ``x_test`` differs from
    ``clean`` only there.

    Args:
        n_train (int): training rows. Default: 2000.
        n_test (int): test rows (at least 2, so both causes occur). Default: 500.
        n_features (int): number of features, at least 4 (``x0``, ``x1``, ``noise``,
            ``out_of_range``). Default: 6.
        seed (int): seed of every draw. Default: 0.

    Returns:
        KnownCauseTable: the table, its masks, clean rows, feature names, the two caused columns
        and each test row's ``cause`` (``SUPPORTED_TABULAR_CAUSES[cause[i]]`` names it).

    Raises:
        ValueError: ``n_train < 1``, ``n_test < 2``, ``n_features < 4`` or ``seed < 0``.

    Examples::

        >>> table = make_tabular_known_causes(seed=0)
        >>> table.feature_names
        ['x0', 'x1', 'x2', 'x3', 'noise', 'out_of_range']
        >>> rows = table.cause == 1          # the out-of-range (epistemic) rows
        >>> bool((table.masks[rows, table.out_of_range_feature]).all())
        True
    """
    check_positive_int(n_train, "n_train")
    check_int(n_test, "n_test", minimum=2)
    check_int(n_features, "n_features", minimum=4)
    check_int(seed, "seed", minimum=0)
    noise, out_of_range = n_features - 2, n_features - 1
    names = [f"x{i}" for i in range(n_features - 2)] + list(SUPPORTED_TABULAR_CAUSES)
    generator = torch.Generator().manual_seed(seed)

    def label(rows: Tensor) -> Tensor:
        coin = torch.rand(rows.shape[0], generator=generator) < 0.5
        rule = rows[:, 0] + rows[:, 1] > 0
        return torch.where(rows[:, noise] > 1.0, coin, rule).to(torch.int64)

    x_train = torch.randn(n_train, n_features, generator=generator)
    x_train[:, out_of_range] = _truncated_normal((n_train,), 4.0, generator)
    y_train = label(x_train)

    clean = torch.randn(n_test, n_features, generator=generator)
    clean[:, noise:] = torch.rand(n_test, 2, generator=generator) * 2.0 - 1.0
    cause = torch.zeros(n_test, dtype=torch.int64)
    cause[torch.randperm(n_test, generator=generator)[: n_test // 2]] = 1
    sign = torch.where(torch.rand(n_test, generator=generator) < 0.5, -1.0, 1.0)
    far = sign * (6.0 + 2.0 * torch.rand(n_test, generator=generator))
    noisy = 1.5 + 1.5 * torch.rand(n_test, generator=generator)
    x_test = clean.clone()
    x_test[:, out_of_range] = torch.where(cause == 1, far, clean[:, out_of_range])
    x_test[:, noise] = torch.where(cause == 0, noisy, clean[:, noise])
    y_test = label(x_test)
    masks = torch.zeros(n_test, n_features, dtype=torch.bool)
    masks[:, noise] = cause == 0
    masks[:, out_of_range] = cause == 1
    return KnownCauseTable(x_train, y_train, x_test, y_test, masks, clean, names, noise, out_of_range, cause)


# ----------------------------------------------------------------------------- a regression with known causes


class KnownCauseRegression(NamedTuple):
    """The regression set of :func:`make_regression_known_causes`.

    Attributes:
        x_train (Tensor): float32 ``(N_train, 6)``, uniform in ``[-1, 1]``.
        y_train (Tensor): float32 ``(N_train,)`` targets with noise set by feature 0.
        x_test (dict of str to Tensor): three test sets of ``n_test`` rows each: ``"aleatoric"``
            (in range, ``|x0|`` in ``[0.7, 1]``: loud noise), ``"epistemic"`` (feature 5 in
            ``[2.5, 3.5]``, outside training, ``|x0| <= 0.1``) and ``"reference"`` (in range,
            ``|x0| <= 0.1``: neither cause).
        masks (dict of str to Tensor): bool ``(n_test, 6)`` per set, ``True`` at the cause
            (feature 0 for ``"aleatoric"``, feature 5 for ``"epistemic"``, none for ``"reference"``).
        aleatoric_feature (int): 0.
        epistemic_feature (int): 5.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Dict[str, Tensor]
    masks: Dict[str, Tensor]
    aleatoric_feature: int
    epistemic_feature: int


def regression_target(x: Tensor, generator: torch.Generator) -> Tensor:
    """``sin(pi x1) + x2^2 + 0.5 x3 + 0.5 tanh(2 x4) + eps`` with ``eps ~ N(0, (0.05 + |x0|)^2)``:
    feature 0 alone sets the noise, feature 5 is never used."""
    signal = torch.sin(math.pi * x[:, 1]) + x[:, 2].square() + 0.5 * x[:, 3] + 0.5 * torch.tanh(2 * x[:, 4])
    noise_std = 0.05 + 1.0 * x[:, 0].abs()
    return signal + noise_std * torch.randn(x.shape[0], generator=generator)


def make_regression_known_causes(n_train: int = 1000, n_test: int = 200, seed: int = 0) -> KnownCauseRegression:
    r"""A regression whose causes of uncertainty are known by construction (six features).

    Training inputs are uniform in ``[-1, 1]^6`` with targets from :func:`regression_target`:
    the noise grows with ``|x0|`` (aleatoric cause: feature 0) and feature 5 never affects the
    target. The test sets put the noise feature high (``"aleatoric"``) or feature 5 outside
    the training range (``"epistemic"``: a Gaussian ensemble's members disagree there), with a
    reference set carrying neither. One seeded generator draws the training inputs, their
    targets, then the test sets, in that order (so a fixed seed gives identical data).

    Args:
        n_train (int): training rows. Default: 1000.
        n_test (int): rows per test set. Default: 200.
        seed (int): the generator's seed. Default: 0.

    Returns:
        KnownCauseRegression: training data, the three test sets and their masks.

    Examples::

        >>> data = make_regression_known_causes(seed=0)
        >>> data.x_test["epistemic"][:, 5].min() > 2.4
        tensor(True)
    """
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test")
    generator = torch.Generator().manual_seed(check_int(seed, "seed"))

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    x_train = -1 + 2 * torch.rand(n_train, 6, generator=generator)
    y_train = regression_target(x_train, generator)
    sign = torch.where(torch.rand(n_test, generator=generator) < 0.5, -1.0, 1.0)
    aleatoric = uniform(-1, 1, n_test, 6)
    aleatoric[:, 0] = sign * uniform(0.7, 1.0, n_test)
    epistemic = uniform(-1, 1, n_test, 6)
    epistemic[:, 0] = uniform(-0.1, 0.1, n_test)
    epistemic[:, 5] = uniform(2.5, 3.5, n_test)
    reference = uniform(-1, 1, n_test, 6)
    reference[:, 0] = uniform(-0.1, 0.1, n_test)
    masks = {name: torch.zeros(n_test, 6, dtype=torch.bool) for name in ("aleatoric", "epistemic", "reference")}
    masks["aleatoric"][:, 0] = True
    masks["epistemic"][:, 5] = True
    sets = {"aleatoric": aleatoric, "epistemic": epistemic, "reference": reference}
    return KnownCauseRegression(x_train, y_train, sets, masks, 0, 5)
