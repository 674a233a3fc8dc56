"""UA-Backprop's Eq. 8 shares: the closed form against the literal ``(S, N, C, C)`` tensor.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coefficients.py``

For S = 5 samples, N = 100 inputs (N = 8 at C = 4096) and C classes, computes
``U_{z_i^s} = sum_j c_{j->i}^s U_{g_j}`` for the three measures from random logits, once with
the library's closed form (``logit_uncertainties``) and once with the literal coefficient
tensor ``softmax_i((delta_ij - g_i) / tau1)`` followed by an einsum, and prints the seconds
(best of 3) and the largest tensor each creates (recorded by a ``TorchDispatchMode``), plus the
largest difference between the two. The literal form is skipped where its tensor would exceed
4 GB.
"""

from __future__ import annotations

import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from captum_uncertainty.attr._utils.ua_backprop import logit_uncertainties
from captum_uncertainty.forward import MEASURES, per_class_uncertainty

TAU1 = 0.08
LITERAL_LIMIT_BYTES = 4 * 2**30


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation returns inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel() * tensor.element_size())
        return out


def literal(logits: torch.Tensor) -> torch.Tensor:
    g = torch.softmax(logits, dim=-1)
    eye = torch.eye(g.shape[-1], dtype=g.dtype)
    coefficients = torch.softmax((eye - g.unsqueeze(-2)) / TAU1, dim=-1)  # (S, N, j, i)
    terms = per_class_uncertainty(logits)
    return torch.stack([torch.einsum("snji,nj->sni", coefficients, terms.select(m)) for m in MEASURES])


def closed(logits: torch.Tensor) -> torch.Tensor:
    return logit_uncertainties(logits, TAU1, True, MEASURES)


def measure(function, logits: torch.Tensor):
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        result = function(logits)
        seconds.append(time.perf_counter() - start)
    with LargestTensor() as mode:
        function(logits)
    return min(seconds), mode.largest, result


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), S = 5, tau1 = {TAU1}, float32\n")
    print(
        "| C | N | closed form (s) | literal (s) | speed-up | largest tensor, closed (MB) "
        "| largest tensor, literal (MB) | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for classes, batch in ((10, 100), (100, 100), (1000, 100), (4096, 8)):
        logits = torch.randn(5, batch, classes) * 3
        fast, fast_bytes, fast_result = measure(closed, logits)
        literal_bytes = 5 * batch * classes * classes * 4
        if literal_bytes > LITERAL_LIMIT_BYTES:
            literal_cells = ["skipped (> 4 GB)", "", f"{literal_bytes / 1e6:.0f} (not built)", ""]
        else:
            slow, slow_bytes, slow_result = measure(literal, logits)
            difference = float((fast_result - slow_result).abs().max())
            literal_cells = [f"{slow:.4f}", f"{slow / fast:.1f}x", f"{slow_bytes / 1e6:.1f}", f"{difference:.1e}"]
        speed, ratio, size, difference_cell = literal_cells
        print(
            f"| {classes} | {batch} | {fast:.4f} | {speed} | {ratio} | {fast_bytes / 1e6:.2f} | {size} | "
            f"{difference_cell} |"
        )


if __name__ == "__main__":
    main()
