"""The one place that checks arguments: clear ``ValueError``/``TypeError`` messages naming the argument.

Every public function and class of the package checks its arguments with these helpers, so the
same mistake gets the same message everywhere: ``"<name> must be <what>, got <value>"``, and the
same kind of mistake the same exception type:

* a value of the wrong type (a string, ``None`` or a ``bool`` where a number is expected, a
  list where a tensor is) raises ``TypeError``; for numbers it is an :class:`ArgumentTypeError`,
  also a ``ValueError``, as these checks raised before the distinction was made;
* a value of the right type outside what is allowed (a negative count, NaN, a probability above
  1, an unknown choice, a tensor of the wrong shape or with NaN) raises ``ValueError``.
"""

from __future__ import annotations

import math
from typing import Any, Collection, List, Optional, Sequence, TypeVar

from torch import Tensor, nn

__all__ = [
    "ArgumentTypeError",
    "check_bool",
    "check_choice",
    "check_finite_tensor",
    "check_floating_tensor",
    "check_int",
    "check_module_sequence",
    "check_non_negative_number",
    "check_optional_positive_int",
    "check_positive_int",
    "check_positive_number",
    "check_tensor",
    "check_unit_interval",
]

T = TypeVar("T")


class ArgumentTypeError(TypeError, ValueError):
    """A number argument of the wrong type (``bool``, ``str``, ``None``, ...): a ``TypeError``, and a
    ``ValueError`` for callers that catch what the number checks raised before."""


def _refuse(value: Any, name: str, what: str, right_type: bool) -> None:
    """Raise ``"<name> must be <what>, got <value>"``: a ``ValueError`` when ``value`` has the right
    type, else an :class:`ArgumentTypeError`."""
    error = ValueError if right_type else ArgumentTypeError
    raise error(f"{name} must be {what}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(value: Any, name: str, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """An ``int`` (not a ``bool``) in ``[minimum, maximum]``; the bounds are optional."""
    if not _is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            what = f"an int in [{minimum}, {maximum}]"
        elif minimum is not None:
            what = f"an int >= {minimum}"
        elif maximum is not None:
            what = f"an int <= {maximum}"
        else:
            what = "an int"
        _refuse(value, name, what, _is_int(value))
    return int(value)


def check_positive_int(value: Any, name: str) -> int:
    """An ``int >= 1`` (a ``bool`` is refused)."""
    if not _is_int(value) or value < 1:
        _refuse(value, name, "a positive int", _is_int(value))
    return int(value)


def check_optional_positive_int(value: Any, name: str) -> Optional[int]:
    """``None`` or an ``int >= 1``."""
    if value is not None and (not _is_int(value) or value < 1):
        _refuse(value, name, "a positive int or None", _is_int(value))
    return value


def check_positive_number(value: Any, name: str, allow_inf: bool = True) -> float:
    """A real number ``> 0`` (``inf`` only with ``allow_inf``; NaN and ``bool`` refused)."""
    if not _is_number(value) or not value > 0 or (not allow_inf and math.isinf(value)):
        _refuse(value, name, "a positive number", _is_number(value))
    return value


def check_unit_interval(value: Any, name: str, *, include_zero: bool = False, include_one: bool = True) -> float:
    """A real number in the interval from 0 to 1, each end included as asked (NaN and ``bool``
    refused); the message names the interval, e.g. ``(0, 1]``."""
    inside = _is_number(value) and (value >= 0 if include_zero else value > 0)
    inside = inside and (value <= 1 if include_one else value < 1)
    if not inside:
        interval = f"{'[' if include_zero else '('}0, 1{']' if include_one else ')'}"
        _refuse(value, name, f"in {interval}", _is_number(value))
    return value


def check_non_negative_number(value: Any, name: str) -> float:
    """A real number ``>= 0`` (NaN and ``bool`` refused)."""
    if not _is_number(value) or not value >= 0:
        _refuse(value, name, "a non-negative number", _is_number(value))
    return value


def check_bool(value: Any, name: str) -> bool:
    """Exactly ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_choice(value: Any, name: str, choices: Collection[T], extra: str = "") -> T:
    """One of ``choices`` (a module's ``SUPPORTED_*`` tuple).

    ``extra`` completes the message for arguments that also take other kinds of values
    (``"or a callable"``).
    """
    allowed = tuple(choices)
    try:
        accepted = value in allowed
    except TypeError:  # unhashable values are never a choice
        accepted = False
    if not accepted:
        tail = f" {extra}" if extra else ""
        raise ValueError(f"{name} must be one of {allowed}{tail}, got {value!r}")
    return value


def check_tensor(value: Any, name: str, shape: str = "") -> Tensor:
    """A ``torch.Tensor``; ``shape`` describes the expected layout in the message."""
    if not isinstance(value, Tensor):
        layout = f" of shape {shape}" if shape else ""
        raise TypeError(f"{name} must be a torch.Tensor{layout}, got {type(value).__name__}")
    return value


def check_floating_tensor(value: Any, name: str, shape: str = "") -> Tensor:
    """A floating-point ``torch.Tensor``."""
    check_tensor(value, name, shape)
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {value.dtype}")
    return value


def check_finite_tensor(value: Any, name: str, shape: str = "", dims: Optional[Sequence[int]] = None) -> Tensor:
    """A floating-point tensor without NaN or inf, with one of ``dims`` dimensions when given."""
    check_floating_tensor(value, name, shape)
    if dims is not None and value.dim() not in dims:
        layout = shape or " or ".join(f"{d} dimensions" for d in dims)
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(value.shape)}")
    if value.numel() and not bool(value.isfinite().all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return value


def check_module_sequence(value: Any, name: str, what: str = "modules", single_hint: str = "") -> List[Any]:
    """``value`` as a list: a sequence of ``what`` (an ``nn.ModuleList`` too), refusing a single
    module or a non-iterable with a ``TypeError``; emptiness and the elements are the caller's to
    check. ``single_hint`` ends the message about a single module (e.g. ``"; pass [layer]"``)."""
    if isinstance(value, nn.Module) and not isinstance(value, nn.ModuleList):
        raise TypeError(f"{name} must be a sequence of {what}, got a single {type(value).__name__}{single_hint}")
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of {what}, got {type(value).__name__}") from None
