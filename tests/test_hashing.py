"""The one hashing home: sha256 of tensors of any dtype, layout and device."""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import pytest
import torch

import captum_uncertainty
from captum_uncertainty._hashing import (
    json_sha256,
    row_bytes,
    tensor_bytes,
    tensor_sha256,
    values_sha256,
)

PACKAGE = pathlib.Path(captum_uncertainty.__file__).parent


def test_values_are_hashed_not_layouts():
    torch.manual_seed(0)
    dense = torch.randn(4, 6)
    assert tensor_sha256(dense.t().contiguous().t()) == tensor_sha256(dense)  # non-contiguous
    assert tensor_sha256(dense.to_sparse()) == tensor_sha256(dense)
    complex_values = torch.randn(3, dtype=torch.complex64)
    assert tensor_sha256(complex_values.conj()) == tensor_sha256(complex_values.conj().resolve_conj())
    assert tensor_sha256(dense) != tensor_sha256(dense + 1e-6)
    assert tensor_sha256(dense) != tensor_sha256(dense.reshape(6, 4))  # the shape is part of it
    assert tensor_sha256(dense) == hashlib.sha256(_expected_stream(dense)).hexdigest()


def _expected_stream(tensor: torch.Tensor) -> bytes:
    """What ``update_with_tensor`` feeds for a plain float32 tensor, written out."""
    import json

    raw = tensor.numpy().tobytes()
    return json.dumps(["tensor", list(tensor.shape), str(tensor.dtype), len(raw)]).encode() + raw


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.bool])
def test_every_dtype_hashes_and_the_dtype_counts(dtype):
    values = torch.tensor([[0, 1], [1, 0]]).to(dtype)
    digest = tensor_sha256(values)
    assert len(digest) == 64 and digest != tensor_sha256(values.to(torch.float32))
    assert tensor_bytes(values).nbytes == values.numel() * values.element_size()


def test_a_meta_tensor_hashes_its_shape_and_dtype_and_has_no_bytes():
    meta = torch.empty(3, 4, device="meta")
    assert tensor_sha256(meta) == tensor_sha256(torch.empty(3, 4, device="meta"))
    assert tensor_sha256(meta) != tensor_sha256(torch.empty(4, 3, device="meta"))
    with pytest.raises(ValueError, match="meta device has no values"):
        tensor_bytes(meta)


def test_rows_and_values_and_json():
    rows = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    assert row_bytes(rows).shape == (3, 8)
    assert values_sha256(rows) == hashlib.sha256(rows.view(torch.int16).numpy().tobytes()).hexdigest()
    array = np.arange(6).reshape(2, 3)
    assert values_sha256(array.T) == hashlib.sha256(np.ascontiguousarray(array.T).tobytes()).hexdigest()
    assert json_sha256({"b": 1, "a": [2]}) == json_sha256({"a": [2], "b": 1})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_cuda_tensor_hashes_as_its_cpu_copy():
    values = torch.randn(5, dtype=torch.bfloat16)
    assert tensor_sha256(values.cuda()) == tensor_sha256(values)


def test_the_package_hashes_only_in_its_hashing_module():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_hashing.py" and ("import hashlib" in path.read_text() or ".sha1(" in path.read_text())
    ]
    assert offenders == []
