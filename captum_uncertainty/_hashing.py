"""The one place that hashes: tensors (any device and dtype), their rows, and JSON-ready values.

Every digest is sha256. A tensor's bytes are read on the CPU through a ``uint8`` view, so CUDA,
bfloat16, half, complex (conjugated or negated views resolved), sparse and non-contiguous
tensors hash as the dense tensor of their values; a tensor on the ``meta`` device has no values
and hashes as its shape and dtype only, marked so.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "json_sha256",
    "new_digest",
    "row_bytes",
    "tensor_bytes",
    "tensor_sha256",
    "update_with_tensor",
    "values_sha256",
]


def new_digest() -> Any:
    """A fresh sha256 hash object."""
    return hashlib.sha256()


def _dense_cpu(tensor: Tensor) -> Tensor:
    data = tensor.detach()
    if data.layout != torch.strided:
        data = data.to_dense()
    return data.cpu().resolve_conj().resolve_neg().contiguous()


def tensor_bytes(tensor: Tensor) -> np.ndarray:
    """A tensor's values as a flat ``uint8`` numpy array, read on the CPU (any dtype and layout).

    Raises:
        ValueError: the tensor is on the ``meta`` device (it has no values).
    """
    if tensor.device.type == "meta":
        raise ValueError("a tensor on the meta device has no values to read; hash it with tensor_sha256")
    return _dense_cpu(tensor).reshape(-1).view(torch.uint8).numpy()


def row_bytes(tensor: Tensor) -> np.ndarray:
    """The bytes of each row (first dimension) of a tensor, ``(n, row bytes)`` ``uint8``, on the CPU."""
    rows = _dense_cpu(tensor)
    count = int(rows.shape[0])
    return rows.reshape(count, math.prod(rows.shape[1:])).view(torch.uint8).numpy()


def update_with_tensor(digest: Any, label: str, tensor: Tensor) -> None:
    """Feed a tensor's label, shape, dtype and bytes to ``digest`` (a lazy parameter not yet
    materialised, or a ``meta`` tensor, feeds its label and what is known of it instead)."""
    if torch.nn.parameter.is_lazy(tensor):
        digest.update(json.dumps([label, "uninitialized"]).encode())
        return
    if tensor.device.type == "meta":
        digest.update(json.dumps([label, list(tensor.shape), str(tensor.dtype), "meta"]).encode())
        return
    raw = tensor_bytes(tensor)
    digest.update(json.dumps([label, list(tensor.shape), str(tensor.dtype), int(raw.size)]).encode())
    digest.update(raw)


def tensor_sha256(tensor: Tensor) -> str:
    """The sha256 hex digest of a tensor's shape, dtype and values (:func:`update_with_tensor`)."""
    digest = new_digest()
    update_with_tensor(digest, "tensor", tensor)
    return digest.hexdigest()


def values_sha256(value: Any) -> str:
    """The sha256 hex digest of a tensor's or numpy array's values alone (C order), for records that
    store the shape and dtype beside it."""
    if isinstance(value, Tensor):
        return hashlib.sha256(tensor_bytes(value).tobytes()).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()


def json_sha256(value: Any) -> str:
    """The sha256 hex digest of a JSON-ready value, keys sorted."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
