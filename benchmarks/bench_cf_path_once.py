"""CounterfactualPathIG: seconds per image and work per call, to compare code versions (each
encoding, uncertainty and predicted class computed once).

Usage: python benchmarks/bench_cf_path_once.py [--images 20] [--steps 25] [--repeats 5]

Explains the most epistemically uncertain bundled-MNIST test digits with the cached 5-CNN
ensemble and the benchmark's cached VAE (latent size 32, 5 epochs, as ``make demo`` trains it),
with the CLUE fiducial (default search) and with a tensor fiducial (the CLUE fiducials' latent
codes, so no search runs), with and without the convergence delta. Prints, per call: the inputs
run through the posterior (exact), the inputs run through the encoder (exact) and the median
seconds per image over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from captum_uncertainty import CounterfactualPathIG, UncertaintyForward
from captum_uncertainty.data import load_mnist, train_ensemble
from captum_uncertainty.generative import load_or_train_vae


def _counter(module: torch.nn.Module) -> list:
    rows = [0]
    module.register_forward_pre_hook(lambda _module, inputs: rows.__setitem__(0, rows[0] + len(inputs[0])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = load_mnist()
    uf = UncertaintyForward(train_ensemble(n_members=5, data=data, progress=False), measure="epistemic")
    vae = load_or_train_vae(data.x_train, latent_dim=32, epochs=5, seed=0, progress=False)
    with torch.no_grad():
        x = data.x_test[uf(data.x_test).argsort(descending=True)[: args.images]]
    cpig = CounterfactualPathIG(uf, vae)
    latents = cpig.fiducials(x, "clue").latents
    posterior_rows, encoder_rows = _counter(uf.posterior), _counter(vae.encoder)
    print("| fiducial | delta | posterior inputs per call | encoder inputs per call | s / image (median) |")
    print("|---|---|---:|---:|---:|")
    for name, fiducial in (("clue", "clue"), ("latent codes", latents)):
        for delta in (False, True):

            def call(fiducial=fiducial, delta=delta) -> None:
                cpig.attribute(x, fiducial, n_steps=args.steps, return_convergence_delta=delta)

            cpig.attribute(x[:2], fiducial if isinstance(fiducial, str) else fiducial[:2], n_steps=2)  # warm-up
            posterior_rows[0] = encoder_rows[0] = 0
            call()
            counted = posterior_rows[0], encoder_rows[0]
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                call()
                times.append((time.perf_counter() - start) / len(x))
            print(f"| {name} | {delta} | {counted[0]} | {counted[1]} | {statistics.median(times):.4f} |")


if __name__ == "__main__":
    main()
