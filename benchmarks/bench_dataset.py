"""attribute_dataset throughput and memory against a plain loop, and the Ray engine against the local one.

Run: ``.venv/bin/python benchmarks/bench_dataset.py [--inputs 1000] [--repeats 5] [--no-ray]``

Setting: the bundled-digits ensemble of the tests at full size, ``train_ensemble(n_members=5,
data=load_digits(), epochs=8, seed=0, cache_dir=None)``; UABackprop with the ``inputgrad`` path
(epistemic uncertainty), batches of 64 inputs, shards of 64 rows; the inputs are all 1,797
scikit-learn digits, repeated to the requested count.

* throughput: ``attribute_dataset`` (local engine, writing to a temporary folder) against a
  plain loop over a ``DataLoader`` that calls ``UABackprop.attribute`` and keeps the maps in a
  list; best of ``--repeats`` interleaved runs after a warm-up, in images per second, and their
  ratio (target >= 0.9);
* memory: a fresh subprocess per run loads the weights, warms up on one batch, resets its peak
  resident set size (``/proc/self/clear_refs``), runs ``attribute_dataset`` on 1,000 or 4,000
  inputs and reports the peak during the job against its size just before;
* Ray: the same job with ``engine="ray"`` on a local runtime (``ray.init(num_cpus=2)``, two
  actors) for ``--inputs`` and 4 times as many inputs, wall time including actor start-up
  (the local time for the larger job comes from its memory run);
* per-batch costs: what one batch of 64 spends in ``attribute``, in the extra no-grad forward
  pass for the uncertainties and the prediction, and in writing its Parquet shard.

Prints markdown tables. Not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from captum_uncertainty import UABackprop, UncertaintyForward, attribute_dataset
from captum_uncertainty.data import MNISTCNN, load_digits, train_ensemble
from captum_uncertainty.dataset._batch import attribute_batch
from captum_uncertainty.dataset._shards import arrow_table

BATCH = 64
KWARGS = {"path": "inputgrad"}


def digits_inputs(count: int) -> Tensor:
    """All 1,797 digits (train and test split), repeated to ``count`` inputs."""
    data = load_digits()
    everything = torch.cat([data.x_train, data.x_test])
    repeats = -(-count // everything.shape[0])
    return everything.repeat(repeats, 1, 1, 1)[:count].contiguous()


def trained_members() -> List[MNISTCNN]:
    return train_ensemble(n_members=5, data=load_digits(), epochs=8, seed=0, cache_dir=None, progress=False)


def members_from(path: Path) -> List[MNISTCNN]:
    members = []
    for state in torch.load(path, weights_only=True):
        member = MNISTCNN(in_channels=1, image_size=8, num_classes=10)
        member.load_state_dict(state)
        members.append(member.eval())
    return members


def plain_loop(explainer: UABackprop, inputs: Tensor) -> List[Tensor]:
    """The baseline: a DataLoader, one attribute call per batch, every map kept in memory."""
    return [explainer.attribute(batch, **KWARGS) for (batch,) in DataLoader(TensorDataset(inputs), batch_size=BATCH)]


def dataset_job(explainer: UABackprop, inputs: Tensor, engine: str = "local", **options: object) -> None:
    with tempfile.TemporaryDirectory() as folder:
        attribute_dataset(
            explainer,
            TensorDataset(inputs),
            Path(folder) / "out",
            batch_size=BATCH,
            engine=engine,
            progress=False,
            **options,
            **KWARGS,
        )


def best_seconds(jobs: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Best-of-``repeats`` wall time of each job, runs interleaved round-robin after one warm-up
    round, so that load from other processes on the shared CPU hits every job alike."""
    times: Dict[str, List[float]] = {name: [] for name in jobs}
    for round_index in range(repeats + 1):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            if round_index:
                times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def resident_mb(field: str = "VmRSS") -> float:
    """A memory figure of this process from ``/proc/self/status``, in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(count: int, weights: Path) -> None:
    """Run attribute_dataset in this (fresh) process; print its RSS before, peak and seconds as JSON."""
    explainer = UABackprop(UncertaintyForward(members_from(weights), measure="epistemic"))
    inputs = digits_inputs(count)
    dataset_job(explainer, inputs[:BATCH])
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets the peak RSS (VmHWM) to the current RSS
    before = resident_mb()
    start = time.perf_counter()
    dataset_job(explainer, inputs)
    seconds = time.perf_counter() - start
    print(json.dumps({"before": before, "peak": resident_mb("VmHWM"), "seconds": seconds}))


def measure_memory(count: int, weights: Path) -> Dict[str, float]:
    command = [sys.executable, __file__, "--memory-child", str(count), str(weights)]
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def per_batch_costs(explainer: UABackprop, inputs: Tensor, repeats: int) -> Dict[str, float]:
    forward = explainer.forward_func
    batch = inputs[:BATCH]
    columns = attribute_batch(explainer, forward, batch, 0, 0, 0, KWARGS)

    def write() -> None:
        import pyarrow.parquet as pq

        with tempfile.TemporaryDirectory() as folder:
            pq.write_table(arrow_table(columns, list(columns)), Path(folder) / "shard.parquet")

    def summary() -> None:
        with torch.no_grad():
            forward.summary(batch)

    jobs = {
        "attribute (UABackprop inputgrad)": lambda: explainer.attribute(batch, **KWARGS),
        "uncertainties + prediction (one forward)": summary,
        "Parquet shard write (64 rows)": write,
        "attribute_batch (all of the above but the write)": lambda: attribute_batch(
            explainer, forward, batch, 0, 0, 0, KWARGS
        ),
    }
    return best_seconds(jobs, max(repeats, 5))


def ray_seconds(explainer: UABackprop, sizes: Sequence[int]) -> Dict[int, float]:
    """Wall time of the Ray engine job on each number of inputs (a fresh actor pool each time)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        seconds = {}
        for count in sizes:
            inputs = digits_inputs(count)
            start = time.perf_counter()
            dataset_job(explainer, inputs, engine="ray", concurrency=2)
            seconds[count] = time.perf_counter() - start
        return seconds
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1000, help="inputs of the throughput and Ray jobs")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per job (best is kept)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray engine")
    parser.add_argument("--memory-child", nargs=2, metavar=("COUNT", "WEIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(int(args.memory_child[0]), Path(args.memory_child[1]))
        return

    started = time.perf_counter()
    members = trained_members()
    explainer = UABackprop(UncertaintyForward(members, measure="epistemic"))
    inputs = digits_inputs(args.inputs)
    large = 4 * args.inputs
    print(
        f"digits 1x8x8, batch {BATCH}, 5-member ensemble, UABackprop path=inputgrad, "
        f"torch threads {torch.get_num_threads()}; training took {time.perf_counter() - started:.0f} s\n"
    )

    seconds = best_seconds(
        {"loop": lambda: plain_loop(explainer, inputs), "local": lambda: dataset_job(explainer, inputs)}, args.repeats
    )
    print(f"| job, {args.inputs} inputs (best of {args.repeats}) | seconds | images / s | vs plain loop |")
    print("|---|---|---|---|")
    for name, label in (
        ("loop", "plain DataLoader loop, maps kept in memory"),
        ("local", "attribute_dataset, local engine (writes Parquet)"),
    ):
        print(
            f"| {label} | {seconds[name]:.2f} | {args.inputs / seconds[name]:.0f} | "
            f"{seconds['loop'] / seconds[name]:.2f} |"
        )

    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "members.pt"
        torch.save([member.state_dict() for member in members], weights)
        memory = {count: measure_memory(count, weights) for count in (1000, 4000)}
    print("\n| attribute_dataset, local | RSS before (MB) | peak RSS during the job (MB) | growth (MB) | seconds |")
    print("|---|---|---|---|---|")
    for count, figures in memory.items():
        print(
            f"| {count} inputs | {figures['before']:.0f} | {figures['peak']:.0f} | "
            f"{figures['peak'] - figures['before']:.1f} | {figures['seconds']:.2f} |"
        )

    if not args.no_ray:
        ray = ray_seconds(explainer, (args.inputs, large))
        local = {args.inputs: seconds["local"], large: memory[large]["seconds"] if large in memory else float("nan")}
        print("\n| inputs | local engine (s) | Ray engine, 2 actors, incl. start-up (s) | Ray / local |")
        print("|---|---|---|---|")
        for count, value in ray.items():
            print(f"| {count} | {local[count]:.2f} | {value:.2f} | {value / local[count]:.1f} |")
        slope = (ray[large] - ray[args.inputs]) / (large - args.inputs) * BATCH
        print(
            f"\nRay: {1000 * slope:.0f} ms per extra batch of {BATCH} (2 actors), "
            f"fixed cost {ray[args.inputs] - slope * args.inputs / BATCH:.1f} s"
        )

    costs = per_batch_costs(explainer, inputs, args.repeats)
    print("\n| step, one batch of 64 | ms |")
    print("|---|---|")
    for name, value in costs.items():
        print(f"| {name} | {1000 * value:.1f} |")
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
