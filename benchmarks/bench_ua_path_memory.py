"""Peak memory of UA-Backprop's path integrals: the bounded default against all points at once.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ua_path_memory.py``

UA-Backprop's ``path="integrated_gradients"`` keeps every class's gradient at every path point
of a chunk (``C x S x points x features`` numbers). Without ``internal_batch_size`` all points
used to form one chunk; now the default bounds a chunk to
``RELEVANCE_NUMBERS_PER_CHUNK`` numbers. On the cached two-digit (C = 100) and three-digit
(C = 1000) MNIST ensembles (``captum_uncertainty.data.train_multidigit_ensemble``), 32 steps,
the most epistemically uncertain test images: the default against
``internal_batch_size=10**9`` (every point in one chunk, the earlier behaviour; not run at
C = 1000, where it took 18.5 GB, see "Many classes" in RESULTS.md). Each configuration runs in
a child process of its own; the peak is the child's ``VmHWM`` minus that of a child that only
loads the ensemble and the images. Also checks that the maps agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

#: (digits, images, internal_batch_size or None for the default)
CONFIGURATIONS = [
    (2, 4, "load"),
    (2, 4, None),
    (2, 4, 10**9),
    (3, 1, "load"),
    (3, 1, None),
]


def peak_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(digits: int, images: int, internal_batch_size) -> dict:
    import torch

    from captum_uncertainty import UABackprop, UncertaintyForward
    from captum_uncertainty.data import load_multidigit_mnist, train_multidigit_ensemble

    data = load_multidigit_mnist(digits)
    uf = UncertaintyForward(train_multidigit_ensemble(digits, data=data, progress=False), "epistemic")
    with torch.no_grad():
        x = data.x_test[uf(data.x_test[:400]).argsort(descending=True)[:images]]
    seconds, total = 0.0, float("nan")
    if internal_batch_size != "load":
        start = time.perf_counter()
        maps = UABackprop(uf).attribute(
            x, path="integrated_gradients", n_steps=32, internal_batch_size=internal_batch_size
        )
        seconds = time.perf_counter() - start
        total = float(maps.sum())
    return {"seconds_per_image": seconds / images, "peak_mib": peak_mib(), "map_sum": total}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        digits, images, size = int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
        print(json.dumps(child(digits, images, size)))
        return
    print(f"UA-Backprop path='integrated_gradients', 32 steps, epistemic, one thread ({time.strftime('%Y-%m-%d')})\n")
    print("| C | images | internal_batch_size | s / image | peak above loading (MiB) | sum of the maps |")
    print("|---|---|---|---|---|---|")
    loaded = {}
    for digits, images, size in CONFIGURATIONS:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(digits), str(images), json.dumps(size)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        if size == "load":
            loaded[digits] = row["peak_mib"]
            continue
        label = "default (bounded)" if size is None else f"{size} (all points at once)"
        print(
            f"| {10**digits} | {images} | {label} | {row['seconds_per_image']:.2f} | "
            f"{row['peak_mib'] - loaded[digits]:.0f} | {row['map_sum']:.6f} |"
        )


if __name__ == "__main__":
    main()
