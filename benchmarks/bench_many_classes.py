"""Where UA-Backprop stops paying: time and memory of every attribution method at 10, 100 and 1,000 classes.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_many_classes.py``

UA-Backprop costs one backward pass per class (through every member and input at once); Blur
IG and the other path methods cost one backward pass per path point, whatever the class count.
This benchmark measures both on real many-class posteriors:

* trained deep ensembles of 5 CNNs: the 10-class bundled MNIST (``train_ensemble``), and the
  2-digit (C = 100) and 3-digit (C = 1000) numbers of ``load_multidigit_mnist`` with
  ``train_multidigit_ensemble`` (defaults; trained once and cached);
* random-initialised torchvision ``resnet18(num_classes=C)`` ensembles of 3 members on
  ``3 x 32 x 32`` uniform-noise images, C in {10, 100, 1000} (cost only: nothing is learnt).

For every (setting, method) a child process of its own loads the members and the 4 most
epistemically uncertain test images (saved by the parent) and runs the method once on that
batch, so that its peak resident set size (``VmHWM``) belongs to that method alone; the
"load only" child gives each setting's baseline. Methods (epistemic uncertainty, one thread):
UABackprop on each path (fullgrad, grad, inputgrad, integrated_gradients and
blur_integrated_gradients with 32 steps), BlurIntegratedGradients, UncertaintyIntegratedGradients
and GuidedIntegratedGradients (32 steps each), SmoothGrad (Captum ``NoiseTunnel(Saliency)``, 32
noisy copies, stdev 0.1) and CounterfactualPathIG (CLUE fiducial, 32 steps per segment, with a
32-dimensional VAE: trained on the bundled digits, on 5,000 composed training numbers for the
multi-digit settings, and on noise images for the random ResNets). One timed run per (setting,
method), after a warm-up on one image at C = 10 only; a run whose estimate (the same method's
time at the family's previous C, scaled by the class ratio for UA-Backprop and by the pixel
ratio) exceeds 5 minutes is skipped and its estimate printed; a borderline estimate (at most 15
minutes) of a method with steps is first checked by a 4-step run (its time times 8). A run whose
estimated peak memory (scaled the same way) exceeds 60% of the memory available at the start is
skipped too: UABackprop's integrated_gradients and blur_integrated_gradients paths hold every
class's gradient at every path point, ``C x S x points x pixels`` floats (use their
``internal_batch_size`` to bound it), about 19 GiB for 4 images at C = 1000.

Then: the ratio UA-Backprop (default path) / Blur IG per C and the class count where it reaches 1
(interpolated linearly in log C between measured C), and how Eq. 8's ``U_{z_i^s}`` spreads over
the classes for the trained ensembles (top-k shares of ``sum_i U_{z_i^s}``, and the classes
needed for 90%), over the 8 most uncertain test inputs, at the paper's two temperatures tau1.
Not a test.
"""

from __future__ import annotations

import datetime
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

SKIP_SECONDS = 300.0  # a (setting, method) estimated above 5 minutes is not run
CHILD_TIMEOUT = 1200.0
BATCH = 4  # images explained per (setting, method)
SPREAD_INPUTS = 8
PROBE_STEPS = 4  # steps of the run that checks a borderline estimate
MEMORY_SHARE = 0.6  # a (setting, method) whose estimated peak exceeds this share of the free memory is not run
TAU1S = (0.08, 0.55)  # Wang et al. App. B.1.2: grayscale and colour

METHODS = (
    "load only",
    "UA-Backprop fullgrad (default)",
    "UA-Backprop grad",
    "UA-Backprop inputgrad",
    "UA-Backprop integrated_gradients (32)",
    "UA-Backprop blur_integrated_gradients (32)",
    "Blur IG (32)",
    "Uncertainty IG (32)",
    "Guided IG (32)",
    "SmoothGrad (32)",
    "CF-path IG (CLUE, 32)",
)

#: The methods whose time is proportional to their 32 steps (or noisy copies), which a probe can run
#: with fewer (not CF-path IG, whose CLUE search costs the same whatever the steps).
STEPPED = tuple(name for name in METHODS if "(32)" in name)

#: (name, family, C, digits): ``digits`` 1 is the bundled MNIST, 0 a ResNet on noise images.
SETTINGS = (
    ("MNIST CNN, C=10", "cnn", 10, 1),
    ("2-digit CNN, C=100", "cnn", 100, 2),
    ("3-digit CNN, C=1000", "cnn", 1000, 3),
    ("ResNet18 (random), C=10", "resnet", 10, 0),
    ("ResNet18 (random), C=100", "resnet", 100, 0),
    ("ResNet18 (random), C=1000", "resnet", 1000, 0),
)


# ----------------------------------------------------------------------------- the child: one method
def _build_members(spec: Dict[str, Any]) -> List[nn.Module]:
    from captum_uncertainty.data import MNISTCNN, MultiDigitCNN

    members: List[nn.Module] = []
    for state in spec["states"]:
        if spec["digits"] == 1:
            model: nn.Module = MNISTCNN()
        elif spec["digits"] in (2, 3):
            model = MultiDigitCNN(spec["digits"])
        else:
            from torchvision.models import resnet18

            model = resnet18(num_classes=spec["classes"])
        model.load_state_dict(state)
        members.append(model.eval())
    return members


def _method(name: str, uf: Any, vae: Any, steps: int = 32) -> Callable[[Tensor], object]:
    """The attribution call of ``name``; ``steps`` replaces the 32 steps (or noisy copies) in probes."""
    from captum.attr import NoiseTunnel, Saliency

    from captum_uncertainty import (
        BlurIntegratedGradients,
        CounterfactualPathIG,
        GuidedIntegratedGradients,
        UABackprop,
        UncertaintyIntegratedGradients,
    )

    ua = UABackprop(uf)
    runs: Dict[str, Callable[[Tensor], object]] = {
        "load only": lambda x: None,
        "UA-Backprop fullgrad (default)": lambda x: ua.attribute(x, path="fullgrad"),
        "UA-Backprop grad": lambda x: ua.attribute(x, path="grad"),
        "UA-Backprop inputgrad": lambda x: ua.attribute(x, path="inputgrad"),
        "UA-Backprop integrated_gradients (32)": lambda x: ua.attribute(x, path="integrated_gradients", n_steps=steps),
        "UA-Backprop blur_integrated_gradients (32)": lambda x: ua.attribute(
            x, path="blur_integrated_gradients", n_steps=steps
        ),
        "Blur IG (32)": lambda x: BlurIntegratedGradients(uf).attribute(x, n_steps=steps),
        "Uncertainty IG (32)": lambda x: UncertaintyIntegratedGradients(uf).attribute(x, n_steps=steps),
        "Guided IG (32)": lambda x: GuidedIntegratedGradients(uf).attribute(x, n_steps=steps),
        "SmoothGrad (32)": lambda x: NoiseTunnel(Saliency(uf)).attribute(
            x, nt_type="smoothgrad", nt_samples=steps, stdevs=0.1
        ),
        "CF-path IG (CLUE, 32)": lambda x: CounterfactualPathIG(uf, vae).attribute(x, fiducial="clue", n_steps=steps),
    }
    return runs[name]


def run_child(spec_path: str, name: str, warm_up: bool, steps: int) -> Dict[str, Any]:
    from captum_uncertainty import UncertaintyForward
    from captum_uncertainty.attr import FiducialWarning
    from captum_uncertainty.generative import load_vae

    warnings.simplefilter("ignore", FiducialWarning)
    warnings.filterwarnings("ignore", message=".*batching rule.*")
    spec = torch.load(spec_path, weights_only=True)
    uf = UncertaintyForward(_build_members(spec), measure="epistemic")
    vae = load_vae(spec["vae"]) if spec.get("vae") else None
    x = spec["x"]
    run = _method(name, uf, vae, steps)
    if warm_up:
        run(x[:1])
    start = time.perf_counter()
    run(x)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mib": _peak_rss_mib()}


def _peak_rss_mib() -> float:
    """This process's peak resident set size since its ``exec``.

    ``VmHWM`` of ``/proc/self/status`` (Linux): unlike ``ru_maxrss``, which keeps the parent's
    peak across ``fork`` + ``exec`` (the parent here holds every data set), it counts this
    process's own memory only. Falls back to ``ru_maxrss`` elsewhere.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ----------------------------------------------------------------------------- the parent: settings
def _most_uncertain(uf: Any, x: Tensor, k: int) -> Tensor:
    with torch.no_grad():
        scores = torch.cat([uf(chunk) for chunk in x.split(250)])
    return x[scores.argsort(descending=True)[:k]]


def _stacked_logits(members: List[nn.Module], x: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.stack([member(x) for member in members])  # (S, N, C)


def prepare(folder: Path) -> List[Dict[str, Any]]:
    """Train or load every ensemble and VAE, save each setting's members, inputs and VAE in
    ``folder`` for the children, and return per setting its facts (accuracies, the logits of the
    spread inputs)."""
    from torchvision.models import resnet18

    from captum_uncertainty import UncertaintyForward
    from captum_uncertainty.data import (
        accuracy,
        load_mnist,
        load_multidigit_mnist,
        train_ensemble,
        train_multidigit_ensemble,
    )
    from captum_uncertainty.generative import VAE, load_or_train_vae, save_vae, train_vae

    facts: List[Dict[str, Any]] = []
    for index, (name, family, classes, digits) in enumerate(SETTINGS):
        fact: Dict[str, Any] = {"name": name, "family": family, "classes": classes, "trained": family == "cnn"}
        if family == "cnn":
            if digits == 1:
                data = load_mnist()
                members = train_ensemble(n_members=5, data=data, progress=False)
                vae = load_or_train_vae(data.x_train, latent_dim=32, epochs=20, seed=0, progress=False)
                fact["vae"] = "VAE latent 32, 20 epochs on the 4,000 training digits"
            else:
                data = load_multidigit_mnist(digits)
                members = train_multidigit_ensemble(digits, progress=False)
                vae = load_or_train_vae(data.x_train[:5000], latent_dim=32, epochs=10, seed=0, progress=False)
                fact["vae"] = "VAE latent 32, 10 epochs on the first 5,000 training numbers"
            fact["test_accuracy"] = accuracy(members, data.x_test, data.y_test)
            fact["train_accuracy"] = accuracy(members, data.x_train, data.y_train)
            fact["member_test_accuracy"] = statistics.mean(accuracy(m, data.x_test, data.y_test) for m in members)
            fact["n_train"], fact["n_test"] = data.x_train.shape[0], data.x_test.shape[0]
            pool = data.x_test
        else:
            members = []
            for member in range(3):
                with torch.random.fork_rng():
                    torch.manual_seed(member)
                    members.append(resnet18(num_classes=classes).eval())
            pool = torch.rand(256, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            with torch.random.fork_rng():
                torch.manual_seed(0)
                vae = train_vae(VAE(image_shape=(3, 32, 32), latent_dim=32), pool, epochs=5, seed=0, progress=False)
            fact["vae"] = "VAE latent 32, 5 epochs on the 256 noise images (cost only)"
            fact["n_test"] = pool.shape[0]
        uf = UncertaintyForward(members, measure="epistemic")
        spread_inputs = _most_uncertain(uf, pool, SPREAD_INPUTS)
        fact["spread_logits"] = _stacked_logits(members, spread_inputs)
        fact["input_shape"] = tuple(pool.shape[1:])
        fact["members"] = len(members)
        fact["parameters"] = sum(p.numel() for p in members[0].parameters())
        vae_path = folder / f"vae-{index}.pt"
        save_vae(vae, vae_path)
        spec = {
            "digits": digits,
            "classes": classes,
            "states": [member.state_dict() for member in members],
            "x": spread_inputs[:BATCH].clone(),
            "vae": str(vae_path),
        }
        fact["spec"] = str(folder / f"setting-{index}.pt")
        torch.save(spec, fact["spec"])
        facts.append(fact)
    return facts


def _child(spec: str, name: str, warm_up: bool, steps: int = 32) -> Dict[str, Any]:
    command = [sys.executable, __file__, "--child", spec, name, "1" if warm_up else "0", str(steps)]
    try:
        done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out (> {CHILD_TIMEOUT:.0f} s)"}
    except subprocess.CalledProcessError as error:
        if error.returncode < 0:
            return {"status": f"failed: killed by signal {-error.returncode} (9: out of memory?)"}
        last = (error.stderr or "").strip().splitlines()[-1:] or ["no message"]
        return {"status": f"failed (exit {error.returncode}): {last[0][:150]}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]), status="ok")


def _estimate(
    results: Dict[Tuple[str, str], Dict[str, Any]], facts: List[Dict[str, Any]], index: int, name: str, key: str
) -> Optional[float]:
    """``key`` (``"seconds"`` or ``"above_mib"``, the peak above loading) of ``name`` at setting
    ``index``, from the family's previous setting scaled by the pixel ratio (and the class ratio
    for UA-Backprop); ``None`` for a family's first setting."""
    fact = facts[index]
    previous = [j for j in range(index) if facts[j]["family"] == fact["family"]]
    if not previous:
        return None
    before = facts[previous[-1]]
    known = results[(before["name"], name)]
    value: Optional[float] = known.get(key, known.get(f"{key}_estimate"))
    if value is None:
        return None
    scale = math.prod(fact["input_shape"]) / math.prod(before["input_shape"])
    if name.startswith("UA-Backprop"):
        scale *= fact["classes"] / before["classes"]
    return max(value, 0.0) * scale


def _available_mib() -> float:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux), else infinity."""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return math.inf


# ----------------------------------------------------------------------------- the spread of U_{z_i^s}
def spread_rows(facts: List[Dict[str, Any]]) -> List[str]:
    from captum_uncertainty.attr._utils.ua_backprop import logit_uncertainties

    rows = []
    for fact in facts:
        classes = fact["classes"]
        for tau1 in TAU1S:
            shares = logit_uncertainties(fact["spread_logits"], tau1, True, ("epistemic",))[0]  # (S, N, C)
            ordered = shares.sort(dim=-1, descending=True).values
            cumulative = ordered.cumsum(-1) / ordered.sum(-1, keepdim=True)
            needed = (cumulative < 0.9).sum(-1) + 1  # classes covering 90% per (s, n)
            per_class = shares.sum(0)  # (N, C): the class's weight summed over the members
            summed = per_class.sort(dim=-1, descending=True).values.cumsum(-1) / per_class.sum(-1, keepdim=True)
            needed_summed = (summed < 0.9).sum(-1) + 1
            cells = [fact["name"] + (" (random init)" if not fact["trained"] else ""), f"{tau1}"]
            for k in (1, 5, 10, max(1, round(0.1 * classes))):
                cells.append(f"{float(cumulative[..., min(k, classes) - 1].mean()):.3f}")
            cells += [f"{float(needed.float().median()):.0f}", f"{float(needed_summed.float().median()):.0f}"]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def _crossing(points: List[Tuple[int, float]]) -> str:
    """Where the ratio reaches 1, interpolated linearly in log C between measured C."""
    for (c0, r0), (c1, r1) in zip(points, points[1:]):
        if r0 < 1 <= r1:
            log_c = math.log10(c0) + (1 - r0) / (r1 - r0) * (math.log10(c1) - math.log10(c0))
            power = math.log10(c0) + math.log10(1 / r0) / math.log10(r1 / r0) * (math.log10(c1) - math.log10(c0))
            return (
                f"between C = {c0} and C = {c1}: about C = {10**log_c:.0f} (interpolation, ratio linear in log C; "
                f"a power law through the two points gives C = {10**power:.0f})"
            )
    if points and points[0][1] >= 1:
        return f"already at the smallest measured C = {points[0][0]} (ratio {points[0][1]:.2f})"
    return "not within the measured C (UA-Backprop stays cheaper)"


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        torch.set_num_threads(1)
        print(json.dumps(run_child(sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5]))))
        return
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*batching rule.*")
    wall = time.perf_counter()
    print(f"Command: OMP_NUM_THREADS=1 .venv/bin/python {' '.join(sys.argv)}")
    print(f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); batch {BATCH}, epistemic uncertainty\n")
    folder = Path(tempfile.mkdtemp(prefix="bench_many_classes_"))
    try:
        facts = prepare(folder)
        print(f"Setting up (training or loading, VAEs): {time.perf_counter() - wall:.0f} s\n")
        print("## Ensembles\n")
        print(
            "| setting | members | input | params / member | train acc (ensemble) | test acc (ensemble) "
            "| test acc (mean member) | CF-path IG's VAE |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for fact in facts:
            accuracy_cells = (
                [f"{fact['train_accuracy']:.3f}", f"{fact['test_accuracy']:.3f}", f"{fact['member_test_accuracy']:.3f}"]
                if fact["trained"]
                else ["random init", "random init", "random init"]
            )
            shape = " x ".join(map(str, fact["input_shape"]))
            cells = [fact["name"], str(fact["members"]), shape, f"{fact['parameters']:,}"] + accuracy_cells
            print("| " + " | ".join(cells + [fact["vae"]]) + " |")
        sys.stdout.flush()

        results: Dict[Tuple[str, str], Dict[str, Any]] = {}
        memory_limit = MEMORY_SHARE * _available_mib()
        for index, fact in enumerate(facts):
            for name in METHODS:
                key = (fact["name"], name)
                if name != "load only":
                    load_mib = results[(fact["name"], "load only")].get("peak_mib", 0.0)
                    memory = _estimate(results, facts, index, name, "above_mib")
                    if memory is not None and load_mib + memory > memory_limit:
                        reason = (
                            f"est. peak ~{(load_mib + memory) / 1024:.1f} GiB > {MEMORY_SHARE:.0%} of the "
                            f"{memory_limit / MEMORY_SHARE / 1024:.1f} GiB available, from the previous C, scaled"
                        )
                        results[key] = {"status": "skipped", "reason": reason, "above_mib_estimate": memory}
                        continue
                estimate = _estimate(results, facts, index, name, "seconds") if name != "load only" else None
                source = "the previous C, scaled"
                if estimate is not None and SKIP_SECONDS < estimate <= 3 * SKIP_SECONDS and name in STEPPED:
                    probe = _child(fact["spec"], name, warm_up=False, steps=PROBE_STEPS)  # borderline: measure
                    if probe["status"] == "ok":
                        estimate, source = probe["seconds"] * 32 / PROBE_STEPS, f"a {PROBE_STEPS}-step run"
                if estimate is not None and estimate > SKIP_SECONDS:
                    reason = f"> 5 min est.: ~{estimate:.0f} s per batch, from {source}"
                    results[key] = {"status": "skipped", "reason": reason, "seconds_estimate": estimate}
                    continue
                started = time.perf_counter()
                outcome = _child(fact["spec"], name, warm_up=fact["classes"] == 10)
                outcome["child_seconds"] = time.perf_counter() - started
                if outcome["status"] == "ok" and name != "load only":
                    outcome["above_mib"] = outcome["peak_mib"] - results[(fact["name"], "load only")]["peak_mib"]
                results[key] = outcome
                print(
                    f"  [{fact['name']} | {name}: {outcome.get('seconds', float('nan')):.2f} s, {outcome['status']}]",
                    file=sys.stderr,
                    flush=True,
                )

        names = [fact["name"] for fact in facts]

        def cell(key: Tuple[str, str], what: str) -> str:
            outcome = results[key]
            if outcome["status"] == "skipped":
                return f"skipped ({outcome['reason']})"
            if outcome["status"] != "ok":
                return outcome["status"]
            if what == "time":
                return f"{outcome['seconds'] / BATCH:.3f}"
            base = results[(key[0], "load only")].get("peak_mib", float("nan"))
            return f"{outcome['peak_mib']:.0f} (+{outcome['peak_mib'] - base:.0f})"

        print("\n## Seconds per image (batch of 4, one run)\n")
        print("| method | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        for name in METHODS[1:]:
            print(f"| {name} | " + " | ".join(cell((n, name), "time") for n in names) + " |")
        print("\n## Peak RSS of the child process, MiB (above the setting's load-only child)\n")
        print("| method | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        for name in METHODS:
            if name == "load only":
                row = [f"{results[(n, name)].get('peak_mib', float('nan')):.0f}" for n in names]
            else:
                row = [cell((n, name), "memory") for n in names]
            print(f"| {name} | " + " | ".join(row) + " |")
        print(
            "\nCF-path IG: the VAE (latent 32) fits every shape here (sides multiples of 4: 28 x 56, 28 x 84, "
            "32 x 32), so it ran everywhere; for the random ResNets it is trained on noise images and only "
            "the cost means anything."
        )

        print("\n## UA-Backprop (default path, fullgrad) / Blur IG (32 steps)\n")
        print("| family | C | UA-Backprop s / image | Blur IG s / image | ratio |")
        print("|---|---|---|---|---|")
        conclusions = []
        for family, label in (
            ("cnn", "trained CNNs (architecture and input size change with C)"),
            ("resnet", "random ResNet18, 3 x 32 x 32"),
        ):
            points = []
            for fact in (f for f in facts if f["family"] == family):
                ua = results[(fact["name"], "UA-Backprop fullgrad (default)")]
                blur = results[(fact["name"], "Blur IG (32)")]
                if ua["status"] == "ok" and blur["status"] == "ok":
                    ratio = ua["seconds"] / blur["seconds"]
                    points.append((fact["classes"], ratio))
                    print(
                        f"| {label} | {fact['classes']} | {ua['seconds'] / BATCH:.3f} | "
                        f"{blur['seconds'] / BATCH:.3f} | {ratio:.2f} |"
                    )
            conclusions.append(f"{label}: UA-Backprop stops being cheaper than Blur IG {_crossing(points)}.")
        print("\n" + "\n".join(f"* {line}" for line in conclusions))

        print(f"\n## How U_{{z_i^s}} spreads over the classes ({SPREAD_INPUTS} most uncertain test inputs)\n")
        print(
            "Share of sum_i U_{z_i^s} in the top-k classes (mean over members s and inputs), and the median "
            "number of classes covering 90%: per (s, input), and of the member-summed weight sum_s U_{z_i^s} "
            "per input (the classes one backward pass per class would have to cover). logit_uncertainties, "
            "normalize=True, epistemic.\n"
        )
        print(
            "| setting | tau1 | top 1 | top 5 | top 10 | top 0.1 C | median classes for 90% (per s) "
            "| median classes for 90% (sum over s) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(spread_rows(facts)))
        print(f"\nWall time: {time.perf_counter() - wall:.0f} s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
