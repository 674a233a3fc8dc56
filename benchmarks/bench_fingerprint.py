"""What the resume checks of attribute_dataset cost: the posterior fingerprint and the shards' input hashes.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fingerprint.py [--inputs 512] [--repeats 1]``

Setting: ``--inputs`` random MNIST-sized inputs ``(1, 28, 28)``, a 5-member ensemble of untrained
``MNISTCNN`` (the weights do not change the cost), Captum's ``IntegratedGradients`` over an
epistemic ``UncertaintyForward`` with ``n_steps=8``, batches and shards of 64, the local engine,
one thread. Per repeat, in this order:

* a fresh run with the checks, timing the calls themselves: ``Posterior.fingerprint`` (once per
  run), the per-row input digests of every attributed batch and the per-shard hashes;
* the same fresh run without them (the fingerprint, the digests and the check patched to
  constants), for the wall-time difference;
* a resume of the finished folder (every shard skipped): its wall time and the check of the
  finished shards' inputs (read by index and hashed) within it.

Prints a markdown table. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch.utils.data import TensorDataset

import captum_uncertainty.dataset as dataset_module
import captum_uncertainty.dataset._engines as engines
import captum_uncertainty.dataset._shards as shards
from captum_uncertainty import UncertaintyForward, attribute_dataset
from captum_uncertainty.data import MNISTCNN
from captum_uncertainty.posterior import Posterior

BATCH = 64
KWARGS = {"n_steps": 8}


def timed(seconds: Dict[str, float], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

    return wrapper


@contextlib.contextmanager
def patched(replacements: Dict[Any, Dict[str, Any]]) -> Iterator[None]:
    saved = [(owner, name, getattr(owner, name)) for owner, names in replacements.items() for name in names]
    try:
        for owner, names in replacements.items():
            for name, value in names.items():
                setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def with_timers(seconds: Dict[str, float]) -> Dict[Any, Dict[str, Any]]:
    digests = timed(seconds, "row digests", shards.input_row_digests)
    return {
        Posterior: {"fingerprint": timed(seconds, "fingerprint", Posterior.fingerprint)},
        engines: {"input_row_digests": digests},
        shards: {"input_row_digests": digests, "inputs_hash": timed(seconds, "shard hashes", shards.inputs_hash)},
        dataset_module: {"check_finished_inputs": timed(seconds, "resume check", shards.check_finished_inputs)},
    }


def without_checks() -> Dict[Any, Dict[str, Any]]:
    def no_digests(inputs: torch.Tensor) -> np.ndarray:
        return np.zeros((int(inputs.shape[0]), 32), dtype=np.uint8)

    return {
        Posterior: {"fingerprint": lambda self: "0" * 64},
        engines: {"input_row_digests": no_digests},
        shards: {"input_row_digests": no_digests, "inputs_hash": lambda digests: "0" * 64},
        dataset_module: {"check_finished_inputs": lambda *args, **kwargs: None},
    }


def job(explainer: Any, inputs: torch.Tensor, folder: str) -> float:
    start = time.perf_counter()
    attribute_dataset(explainer, TensorDataset(inputs), folder, batch_size=BATCH, progress=False, **KWARGS)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    members = [MNISTCNN(in_channels=1, image_size=28, num_classes=10).eval() for _ in range(5)]
    inputs = torch.rand(args.inputs, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    explainer = IntegratedGradients(UncertaintyForward(members, measure="epistemic"))
    weights = sum(p.numel() * p.element_size() for m in members for p in m.parameters())

    rows: List[Dict[str, float]] = []
    with tempfile.TemporaryDirectory() as root:
        job(explainer, inputs[:BATCH], f"{root}/warm-up")
        for repeat in range(args.repeats):
            seconds: Dict[str, float] = {}
            with patched(with_timers(seconds)):
                checked = job(explainer, inputs, f"{root}/with-{repeat}")
            with patched(without_checks()):
                unchecked = job(explainer, inputs, f"{root}/without-{repeat}")
            resume_seconds: Dict[str, float] = {}
            with patched(with_timers(resume_seconds)):
                resumed = job(explainer, inputs, f"{root}/with-{repeat}")
            rows.append(
                {
                    "with": checked,
                    "without": unchecked,
                    "fingerprint": seconds.get("fingerprint", 0.0),
                    "digests": seconds.get("row digests", 0.0),
                    "shard hashes": seconds.get("shard hashes", 0.0),
                    "resume": resumed,
                    "resume check": resume_seconds.get("resume check", 0.0),
                    "resume fingerprint": resume_seconds.get("fingerprint", 0.0),
                }
            )

    print(
        f"{args.inputs} inputs (1, 28, 28), 5 MNISTCNN members ({weights / 1e6:.1f} MB of float32 weights), "
        f"IntegratedGradients n_steps=8, batches and shards of {BATCH}, local engine, 1 thread, "
        f"torch {torch.__version__}\n"
    )
    print(
        "| repeat | run with checks (s) | run without (s) | fingerprint (ms) | row digests (ms) | shard hashes (ms) "
        "| checks' share of the run | resume, all skipped (s) | its input check (ms) | its fingerprint (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for repeat, row in enumerate(rows):
        hashing = row["fingerprint"] + row["digests"] + row["shard hashes"]
        print(
            f"| {repeat} | {row['with']:.2f} | {row['without']:.2f} | {1e3 * row['fingerprint']:.1f} "
            f"| {1e3 * row['digests']:.1f} | {1e3 * row['shard hashes']:.2f} | {100 * hashing / row['with']:.2f}% "
            f"| {row['resume']:.3f} | {1e3 * row['resume check']:.1f} | {1e3 * row['resume fingerprint']:.1f} |"
        )


if __name__ == "__main__":
    main()
