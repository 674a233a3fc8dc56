"""Type aliases shared across the package."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

__all__ = ["Forward"]

#: A forward function ``x -> (N,)``: one scalar (e.g. one uncertainty) per input, such as an
#: :class:`~captum_uncertainty.UncertaintyForward` or any callable of that form.
Forward = Callable[[Tensor], Tensor]
