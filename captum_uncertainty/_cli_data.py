"""The ``--data`` of ``python -m captum_uncertainty attribute``: a user's inputs as one tensor.

:func:`load_cli_data` reads the bundled test splits (``mnist``, ``digits``), a tensor or array
file (``.pt``, ``.npy``, ``.npz``), a table (``.csv``, ``.parquet``), an image folder (one
sub-folder per class, as torchvision's ``ImageFolder``) or ``MODULE:FUNCTION`` returning a
``Dataset``, a tensor or an array. What it cannot read raises ``ValueError`` with one line naming
the path and what was expected; the command line prints it as its error.
"""

from __future__ import annotations

import importlib
import numbers
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BUNDLED",
    "CliData",
    "TABLE_SUFFIXES",
    "TENSOR_SUFFIXES",
    "imported_function",
    "load_cli_data",
    "load_tensor_file",
]

#: The bundled test splits ``--data`` names.
BUNDLED = ("mnist", "digits")
#: Suffixes of the tensor and array files ``--data`` reads.
TENSOR_SUFFIXES = (".pt", ".pth", ".npy", ".npz")
#: Suffixes of the tables ``--data`` reads (numeric columns are the features).
TABLE_SUFFIXES = (".csv", ".parquet")
#: Keys of a ``.pt`` dict or an ``.npz`` archive holding the inputs, in order of preference.
_INPUT_KEYS = ("inputs", "x")
_EXPECTED = (
    "expected mnist, digits, a .pt, .npy or .npz file, a .csv or .parquet table, an image folder (one sub-folder "
    "per class) or MODULE:FUNCTION"
)


class CliData(NamedTuple):
    """The inputs of ``--data`` and what is carried to the output beside them.

    Args:
        inputs (Tensor): the inputs ``(N, ...)``, floating point.
        ids (list, optional): one identifier per input (a table's ``--id`` column, an image's
            path relative to its folder); ``None`` if the data has none.
        labels (list, optional): one label per input (a table's ``--label`` column, an image's
            class index, a bundled split's digit, a dataset's ``(x, y)`` targets); ``None`` if
            the data has none.
        feature_names (list of str, optional): a table's feature columns, in the order of the
            inputs' second dimension; ``None`` for other data.
    """

    inputs: Tensor
    ids: Optional[List[Any]]
    labels: Optional[List[Any]]
    feature_names: Optional[List[str]]


def load_cli_data(
    spec: str,
    id_column: Optional[str] = None,
    label_column: Optional[str] = None,
    grayscale: bool = False,
) -> CliData:
    """Read the inputs that ``--data`` names.

    ``spec`` is tried in this order: a bundled split (``mnist``, ``digits``: their test inputs
    and digits), an existing file or folder, ``MODULE:FUNCTION``. Files:

    * ``.pt`` / ``.pth``: a tensor, or a dict whose ``inputs`` (else ``x``) is one (read with
      ``torch.load(weights_only=True)``: no arbitrary objects are unpickled);
    * ``.npy``: an array; ``.npz``: its ``inputs`` (else ``x``, else its only) array;
    * ``.csv`` / ``.parquet``: a table; its numeric columns, except ``id_column`` and
      ``label_column``, are the features (float32 ``(N, F)``, in the table's column order);
      other columns are ignored with a warning, missing values are refused;
    * a folder with one sub-folder per class (torchvision's ``ImageFolder``): the images as
      ``transforms.ToTensor()`` makes them (``(N, C, H, W)`` in [0, 1], all of one size), the
      class indices as labels and the paths relative to the folder as ids.

    ``MODULE:FUNCTION`` is imported (from ``sys.path``) and called with no arguments; it returns
    a tensor, an array, or a ``torch.utils.data.Dataset`` whose items are inputs or
    ``(input, target, ...)`` tuples (scalar targets become the labels). Integer inputs become
    float32; floating ones keep their dtype.

    Args:
        spec (str): what ``--data`` says.
        id_column (str, optional): a table's column of input identifiers (not a feature).
        label_column (str, optional): a table's column of labels (not a feature).
        grayscale (bool): convert an image folder's images to one channel. Default: ``False``
            (three channels, RGB).

    Returns:
        CliData: ``(inputs, ids, labels, feature_names)``.

    Raises:
        ValueError: one line naming ``spec`` and what was expected, for anything unreadable;
            also for ``id_column`` / ``label_column`` with data that is not a table and
            ``grayscale`` with data that is not an image folder.

    Examples::

        >>> data = load_cli_data("patients.csv", id_column="patient", label_column="outcome")
        >>> data.inputs.shape, data.feature_names[:2]
        (torch.Size([120, 5]), ['age', 'bmi'])
        >>> load_cli_data("scans/", grayscale=True).ids[:1]
        ['healthy/0001.png']
    """
    spec = str(spec)
    path = Path(spec)
    is_table = path.is_file() and path.suffix.lower() in TABLE_SUFFIXES
    if (id_column is not None or label_column is not None) and not is_table:
        raise ValueError(f"--id and --label name columns of a .csv or .parquet table, but --data is {spec!r}")
    if grayscale and not path.is_dir():
        raise ValueError(f"--grayscale applies to an image folder, but --data is {spec!r}")
    if spec in BUNDLED and not path.exists():
        return _bundled(spec)
    if path.is_dir():
        return _image_folder(path, grayscale)
    if path.is_file():
        suffix = path.suffix.lower()
        if is_table:
            return _table(path, id_column, label_column)
        if suffix in TENSOR_SUFFIXES:
            return CliData(_checked_inputs(load_tensor_file(spec), f"--data {spec}"), None, None, None)
        raise ValueError(f"--data {spec}: cannot read files of type {suffix or '(no suffix)'!r}; {_EXPECTED}")
    module_name, colon, attribute = spec.partition(":")
    if colon and module_name and attribute and "/" not in module_name and os.sep not in module_name:
        return _imported(spec, module_name, attribute)
    raise ValueError(f"--data {spec}: no such file or folder; {_EXPECTED}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _bundled(name: str) -> CliData:
    from captum_uncertainty.data import load_digits, load_mnist

    data = load_mnist() if name == "mnist" else load_digits()
    return CliData(data.x_test, None, data.y_test.tolist(), None)


def _as_tensor(value: Any, where: str, what: str) -> Tensor:
    """A tensor or array as a floating tensor; anything else is refused naming ``what`` it is."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{where}: {what} is an array of dtype {value.dtype}; expected numbers")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, Tensor):
        raise ValueError(f"{where}: {what} is a {type(value).__name__}; expected a tensor or an array")
    if value.is_complex():
        raise ValueError(f"{where}: {what} is a complex tensor; expected real numbers")
    return value if value.is_floating_point() else value.float()


def _checked_inputs(inputs: Tensor, where: str) -> Tensor:
    if inputs.dim() < 2:
        raise ValueError(
            f"{where}: the inputs have shape {tuple(inputs.shape)}; expected (N, ...) with one input per row "
            "(a single feature per input is (N, 1))"
        )
    if inputs.shape[0] == 0:
        raise ValueError(f"{where}: the inputs have shape {tuple(inputs.shape)}, no input to explain")
    return inputs.detach().contiguous()


def _pick(container: Any, keys: Sequence[str], where: str, kind: str) -> Any:
    """The inputs of a dict / archive: the first of ``keys`` present, else its only entry."""
    names = list(container.keys())
    for key in keys:
        if key in names:
            return container[key]
    if len(names) == 1:
        return container[names[0]]
    shown = ", ".join(repr(str(name)) for name in names[:10]) or "nothing"
    raise ValueError(f"{where}: expected {kind} with key 'inputs' or 'x' (or a single entry), found {shown}")


def load_tensor_file(path: str, option: str = "--data") -> Tensor:
    """A tensor or array file as a floating tensor (integers become float32), of any shape.

    Args:
        path (str): a ``.pt`` / ``.pth`` file (a tensor, or a dict whose ``inputs``, else ``x``,
            else only entry is one; read with ``torch.load(weights_only=True)``), an ``.npy``
            file, or an ``.npz`` archive (its ``inputs``, else ``x``, else only array).
        option (str): the command-line option that named the file, for the error messages.
            Default: ``"--data"``.

    Returns:
        Tensor: the file's tensor.

    Raises:
        ValueError: one line naming ``option``, ``path`` and what was expected.

    Examples::

        >>> load_tensor_file("baseline.npy", "--baseline").shape
        torch.Size([1, 28, 28])
    """
    spec = f"{option} {path}"
    suffix = Path(path).suffix.lower()
    if suffix not in TENSOR_SUFFIXES:
        raise ValueError(f"{spec}: expected a .pt, .npy or .npz file, not {suffix or '(no suffix)'!r}")
    try:
        if suffix == ".npy":
            return _as_tensor(np.load(path, allow_pickle=False), spec, "the array")
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _as_tensor(_pick(archive, _INPUT_KEYS, spec, "an .npz archive"), spec, "the array")
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except ValueError as error:
        if str(error).startswith(spec):
            raise
        raise ValueError(f"{spec}: cannot read it as {suffix} ({_first_line(error)})") from None
    except Exception as error:  # a missing or damaged file, pickled objects, a file of another format
        raise ValueError(
            f"{spec}: cannot read it as {suffix}: expected a tensor or a dict of tensors with key 'inputs' or 'x' "
            f"({_first_line(error)}); for other objects use --data MODULE:FUNCTION"
        ) from None
    if isinstance(loaded, dict):
        loaded = _pick(loaded, _INPUT_KEYS, spec, "a dict")
    return _as_tensor(loaded, spec, "its content")


def _table(path: Path, id_column: Optional[str], label_column: Optional[str]) -> CliData:
    import pandas as pd

    spec = str(path)
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as error:  # a parser or format error of pandas / pyarrow
        raise ValueError(
            f"--data {spec}: cannot read it as a {path.suffix.lower()} table ({_first_line(error)})"
        ) from None
    columns = [str(column) for column in frame.columns]
    frame.columns = columns
    for option, column in (("--id", id_column), ("--label", label_column)):
        if column is not None and column not in columns:
            shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
            raise ValueError(f"--data {spec}: {option} {column!r} is not a column; the columns are {shown}")
    carried = {column for column in (id_column, label_column) if column is not None}
    rest = [column for column in columns if column not in carried]
    features = [
        column
        for column in rest
        if pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column])
    ]
    ignored = [column for column in rest if column not in features]
    if not features:
        raise ValueError(f"--data {spec}: expected numeric feature columns, found none (columns: {', '.join(columns)})")
    if len(frame) == 0:
        raise ValueError(f"--data {spec}: the table has no rows, no input to explain")
    if ignored:
        warnings.warn(
            f"--data {spec}: ignoring columns that are not numeric: {', '.join(ignored)} (name them with --id or "
            "--label to carry them to the output)",
            UserWarning,
            stacklevel=2,
        )
    values = frame[features]
    missing = [column for column in features if values[column].isna().any()]
    if missing:
        raise ValueError(f"--data {spec}: feature columns with missing values: {', '.join(missing)}; fill or drop them")
    inputs = torch.from_numpy(values.to_numpy(dtype=np.float32, copy=True))
    ids = None if id_column is None else frame[id_column].tolist()
    labels = None if label_column is None else frame[label_column].tolist()
    return CliData(inputs, ids, labels, features)


def _image_folder(path: Path, grayscale: bool) -> CliData:
    from torchvision import datasets, transforms

    spec = str(path)
    steps: List[Any] = [transforms.Grayscale(num_output_channels=1)] if grayscale else []
    try:
        folder = datasets.ImageFolder(str(path), transform=transforms.Compose(steps + [transforms.ToTensor()]))
    except (FileNotFoundError, OSError, RuntimeError) as error:
        raise ValueError(
            f"--data {spec}: expected an image folder with one sub-folder of images per class ({_first_line(error)})"
        ) from None
    images: List[Tensor] = []
    for position, (file, _) in enumerate(folder.samples):
        try:
            image, _ = folder[position]
        except Exception as error:  # PIL's errors of a damaged or unknown image
            raise ValueError(f"--data {spec}: cannot read the image {file} ({_first_line(error)})") from None
        if images and image.shape != images[0].shape:
            raise ValueError(
                f"--data {spec}: the images differ in size: {folder.samples[0][0]} is {_size(images[0])}, {file} is "
                f"{_size(image)}; resize them to one size first"
            )
        images.append(image)
    ids = [Path(os.path.relpath(file, path)).as_posix() for file, _ in folder.samples]
    labels = [int(target) for _, target in folder.samples]
    return CliData(torch.stack(images), ids, labels, None)


def _size(image: Tensor) -> str:
    return "x".join(str(size) for size in image.shape)


def imported_function(where: str, module_name: str, attribute: str, hint: str = "") -> Callable[[], Any]:
    """The function ``module_name:attribute`` (uvicorn's convention; dotted attributes allowed)
    that an option (``where``, e.g. ``--data x:f``) names; a ``ValueError`` naming ``where`` when
    the module cannot be imported (with ``hint`` appended), lacks the attribute, or it is not callable."""
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{where}: cannot import {module_name!r} ({_first_line(error)}){hint}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{where}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{where} is a {type(target).__name__}, not a function")
    return target


def _imported(spec: str, module_name: str, attribute: str) -> CliData:
    value = imported_function(f"--data {spec}", module_name, attribute, f"; {_EXPECTED}")()
    if isinstance(value, (Tensor, np.ndarray)):
        where = f"--data {spec}"
        return CliData(_checked_inputs(_as_tensor(value, where, "the result"), where), None, None, None)
    if isinstance(value, torch.utils.data.Dataset):
        return _dataset(value, spec)
    raise ValueError(
        f"--data {spec} returned a {type(value).__name__}; expected a torch.utils.data.Dataset, a tensor or an array"
    )


def _dataset(dataset: Any, spec: str) -> CliData:
    """Every item of a torch ``Dataset`` (map-style by index, else iterated), stacked."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        items: Iterable[Any] = iter(dataset)
    elif hasattr(dataset, "__len__"):
        items = (dataset[position] for position in range(len(dataset)))
    else:
        raise ValueError(
            f"--data {spec}: the dataset has no length; expected a map-style Dataset or an IterableDataset"
        )
    inputs: List[Tensor] = []
    targets: List[Any] = []
    for position, item in enumerate(items):
        target: Any = None
        if isinstance(item, (tuple, list)):
            if not item:
                raise ValueError(f"--data {spec}: item {position} of the dataset is empty; expected an input")
            item, target = item[0], (item[1] if len(item) > 1 else None)
        tensor = _as_tensor(item, f"--data {spec}", f"item {position} of the dataset")
        if inputs and tensor.shape != inputs[0].shape:
            raise ValueError(
                f"--data {spec}: item {position} of the dataset has shape {tuple(tensor.shape)}, item 0 "
                f"{tuple(inputs[0].shape)}; expected inputs of one shape"
            )
        inputs.append(tensor)
        targets.append(target)
    if not inputs:
        raise ValueError(f"--data {spec}: the dataset is empty, no input to explain")
    labels = [_scalar(target) for target in targets]
    carried = None if any(label is None for label in labels) else labels
    return CliData(_checked_inputs(torch.stack(inputs), f"--data {spec}"), None, carried, None)


def _scalar(value: Any) -> Any:
    """A target as a Python number or string (``None`` if it is not one)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (np.ndarray, np.generic)) and value.size == 1:
        return value.item()
    if isinstance(value, (numbers.Number, str)) and not isinstance(value, bool):
        return value
    return None
