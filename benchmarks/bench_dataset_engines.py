"""Throughput of attribute_dataset: the local engine against the Ray engine with 1 and 2 workers.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dataset_engines.py [--inputs 1024] [--width 32]``

Setting: ``--inputs`` random ``1x28x28`` inputs (seed 0), an ensemble of 5 randomly initialised
``captum_uncertainty.data.MNISTCNN`` (``width`` filters, seeds 0-4), Captum's
``IntegratedGradients`` over ``UncertaintyForward(members, measure="epistemic")`` with
``n_steps=8``, batches of 64 inputs, shards of 128 rows. Each job writes to a fresh folder.
One thread per worker: ``OMP_NUM_THREADS=1`` in the command and ``torch.set_num_threads(1)``
here, and ``OMP_NUM_THREADS=1`` in the Ray workers (``runtime_env``; Ray also gives each
1-CPU actor one thread); the local Ray runtime has 2 CPUs.

Jobs: the local engine; the Ray engine with ``concurrency=1`` and ``concurrency=2`` (the workers
write the shards); and, to show the fixed cost, the Ray engine with 2 workers on one shard's
worth of inputs (128). Ray's own start-up (``ray.init``) is outside the timings; the actors'
start-up (a process each, importing torch and unpickling the ensemble) is inside, as a user
pays it on every call. Each Ray output is checked against the local one (same rows, maps equal
to 1e-5). Prints a Markdown table, throughput in inputs per second and its ratio to the local
engine, and the load average of the machine before and after (other jobs on the same cores
slow every row). Not a test; takes 2-4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow.dataset as pads
import torch
from captum.attr import IntegratedGradients
from torch.utils.data import TensorDataset

from captum_uncertainty import UncertaintyForward, attribute_dataset
from captum_uncertainty.data import MNISTCNN

BATCH = 64
SHARD = 128
MEMBERS = 5
KWARGS = {"n_steps": 8}


def make_explainer(width: int) -> IntegratedGradients:
    members = []
    for seed in range(MEMBERS):
        torch.manual_seed(seed)
        members.append(MNISTCNN(in_channels=1, image_size=28, num_classes=10, width=width).eval())
    return IntegratedGradients(UncertaintyForward(members, measure="epistemic"))


def read_back(folder: Path) -> Tuple[np.ndarray, np.ndarray]:
    """``(index, maps)`` of an output folder, sorted by index."""
    table = pads.dataset(folder).to_table().sort_by("index")
    return table.column("index").to_numpy(), table.column("attribution").combine_chunks().to_numpy_ndarray()


def timed_job(
    explainer: IntegratedGradients, inputs: torch.Tensor, folder: Path, engine: str, workers: Optional[int]
) -> float:
    options: Dict[str, Any] = {} if engine == "local" else {"concurrency": workers}
    start = time.perf_counter()
    result = attribute_dataset(
        explainer,
        TensorDataset(inputs),
        folder,
        batch_size=BATCH,
        shard_size=SHARD,
        engine=engine,
        progress=False,
        **options,
        **KWARGS,
    )
    seconds = time.perf_counter() - start
    assert result.num_inputs == len(inputs) and result.shards_skipped == 0
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1024, help="random 1x28x28 inputs")
    parser.add_argument("--width", type=int, default=32, help="MNISTCNN filters (32: the paper's CNN)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    started = time.perf_counter()
    inputs = torch.rand(args.inputs, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    explainer = make_explainer(args.width)
    explainer.attribute(inputs[:2], n_steps=2)  # warm-up of this process

    rows: List[Tuple[str, int, int, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        rows.append(("local", 1, args.inputs, timed_job(explainer, inputs, root / "local", "local", None)))
        expected = read_back(root / "local")

        import ray

        ray_started = time.perf_counter()
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
        )
        ray_init = time.perf_counter() - ray_started
        try:
            for workers in (1, 2):
                folder = root / f"ray-{workers}"
                rows.append(("ray", workers, args.inputs, timed_job(explainer, inputs, folder, "ray", workers)))
                index, maps = read_back(folder)
                np.testing.assert_array_equal(index, expected[0])
                np.testing.assert_allclose(maps, expected[1], rtol=0, atol=1e-5)
            small = inputs[:SHARD]
            rows.append(("ray", 2, SHARD, timed_job(explainer, small, root / "ray-small", "ray", 2)))
        finally:
            ray.shutdown()

    local_rate = rows[0][2] / rows[0][3]
    print(
        f"{args.inputs} random 1x28x28 inputs, {MEMBERS}x MNISTCNN(width={args.width}), IntegratedGradients "
        f"n_steps=8, batch {BATCH}, shard {SHARD}, 1 thread per worker; ray.init took {ray_init:.1f} s (not timed)\n"
    )
    print("| engine | workers | inputs | seconds | inputs / s | vs local |")
    print("|---|---|---|---|---|---|")
    for engine, workers, count, seconds in rows:
        rate = count / seconds
        print(f"| {engine} | {workers} | {count} | {seconds:.1f} | {rate:.1f} | {rate / local_rate:.2f} |")
    load_after = os.getloadavg()
    print(
        f"\nload average (1, 5, 15 min) before {load_before[0]:.1f}, {load_before[1]:.1f}, {load_before[2]:.1f}; "
        f"after {load_after[0]:.1f}, {load_after[1]:.1f}, {load_after[2]:.1f} on {os.cpu_count()} CPUs; "
        f"total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
