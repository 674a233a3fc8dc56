"""Every public attribution class of ``captum_uncertainty.attr`` through ``attribute_dataset``.

The classes are read from ``captum_uncertainty.attr.__all__`` (those with an ``attribute``
method), so a class added there is covered at once: it fails here until :data:`BUILDERS` says how
to build it and which ``attribute`` arguments to try. Each variant either runs, and then the
written rows are what ``attribute`` returns on the same batch under the batch's seed (so random
methods are compared too), or it is refused before any file is written, with a ``TypeError`` or
``ValueError`` naming the class.

The models are tiny and untrained (three 8x8 CNN members with 10 classes, a VAE with a
4-dimensional latent space): this checks the plumbing, not the quality of the maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import Tensor
from torch.utils.data import TensorDataset

import captum_uncertainty.attr as attr
from captum_uncertainty import UncertaintyForward, attribute_dataset
from captum_uncertainty.attr.counterfactual_path import FiducialWarning
from captum_uncertainty.attr.distribution import DistributionResult
from captum_uncertainty.dataset import read_manifest
from captum_uncertainty.dataset._batch import batch_seed
from captum_uncertainty.forward import MEASURES, Decomposition
from captum_uncertainty.generative import VAE
from tests.helpers import make_cnn

N = 4
BATCH = 2
SEED = 0


class Models(NamedTuple):
    uf: UncertaintyForward
    members: List[torch.nn.Module]
    vae: VAE


class Case(NamedTuple):
    """One way to run a class: ``build(models)`` gives the explainer, ``kwargs`` go to
    ``attribute_dataset`` (hence to every ``attribute`` call); ``refused`` is the regular
    expression the refusal's message must match (``None``: the variant runs)."""

    build: Callable[[Models], Any]
    kwargs: Dict[str, Any]
    refused: Optional[str] = None


FEW_STEPS = {"max_iterations": 5}
CPIG = {"n_steps": 4, "fiducial_kwargs": FEW_STEPS}

#: class name -> variant -> Case. A public attribution class missing here fails the test.
BUILDERS: Dict[str, Dict[str, Case]] = {
    "UncertaintyIntegratedGradients": {
        "plain": Case(lambda m: attr.UncertaintyIntegratedGradients(m.uf), {"n_steps": 8}),
        "decomposed_with_delta": Case(
            lambda m: attr.UncertaintyIntegratedGradients(m.uf),
            {"n_steps": 8, "return_convergence_delta": True, "decompose": True},
        ),
    },
    "LayerUncertaintyIntegratedGradients": {
        "first_conv_with_delta": Case(
            lambda m: attr.LayerUncertaintyIntegratedGradients(m.uf, lambda member: member[0]),
            {"n_steps": 8, "return_convergence_delta": True},
        ),
    },
    "UABackprop": {
        "fullgrad": Case(lambda m: attr.UABackprop(m.uf), {}),
        "inputgrad_decomposed": Case(lambda m: attr.UABackprop(m.uf), {"path": "inputgrad", "decompose": True}),
    },
    "FullGrad": {
        "uncertainty": Case(lambda m: attr.FullGrad(m.uf), {}),
        # FullGrad also explains a plain model, which has no uncertainty to store
        "plain_model": Case(lambda m: attr.FullGrad(m.members[0]), {}, refused=r"FullGrad explains Sequential"),
    },
    "BlurIntegratedGradients": {
        "with_delta": Case(
            lambda m: attr.BlurIntegratedGradients(m.uf), {"n_steps": 8, "return_convergence_delta": True}
        ),
    },
    "GuidedIntegratedGradients": {
        "plain": Case(lambda m: attr.GuidedIntegratedGradients(m.uf), {"n_steps": 8}),
    },
    "CounterfactualPathIG": {
        "clue": Case(lambda m: attr.CounterfactualPathIG(m.uf, m.vae), dict(CPIG)),
        "in_class_decomposed_with_delta": Case(
            lambda m: attr.CounterfactualPathIG(m.uf, m.vae),
            {**CPIG, "fiducial": "in_class", "decompose": True, "return_convergence_delta": True},
        ),
        "fiducial": Case(lambda m: attr.CounterfactualPathIG(m.uf, m.vae), {**CPIG, "return_fiducial": True}),
        "fiducial_with_delta": Case(
            lambda m: attr.CounterfactualPathIG(m.uf, m.vae),
            {**CPIG, "return_fiducial": True, "return_convergence_delta": True, "latent_end": "refined"},
        ),
    },
    "SparseCounterfactualIG": {
        "with_delta": Case(
            lambda m: attr.SparseCounterfactualIG(m.uf, m.vae), {"n_steps": 4, "return_convergence_delta": True}
        ),
        "counterfactual": Case(
            lambda m: attr.SparseCounterfactualIG(m.uf, m.vae),
            {"n_steps": 4, "return_counterfactual": True},
            refused=r"return_counterfactual=True",
        ),
    },
    "CLUE": {
        "maps": Case(lambda m: attr.CLUE(m.uf, m.vae), dict(FEW_STEPS)),
        "counterfactuals": Case(
            lambda m: attr.CLUE(m.uf, m.vae),
            {**FEW_STEPS, "return_counterfactuals": True},
            refused=r"CLUE\.attribute\(return_counterfactuals=True\).*leave return_counterfactuals out",
        ),
    },
    "DeltaCLUE": {
        "best": Case(lambda m: attr.DeltaCLUE(m.uf, m.vae), {**FEW_STEPS, "n_starts": 2}),
        "mean": Case(lambda m: attr.DeltaCLUE(m.uf, m.vae), {**FEW_STEPS, "n_starts": 2, "aggregate": "mean"}),
        "counterfactuals": Case(
            lambda m: attr.DeltaCLUE(m.uf, m.vae),
            {**FEW_STEPS, "n_starts": 2, "return_counterfactuals": True},
            refused=r"DeltaCLUE\.attribute\(return_counterfactuals=True\)",
        ),
    },
    "CovarianceAttribution": {
        "marginal_ig": Case(lambda m: attr.CovarianceAttribution(m.uf, IntegratedGradients), {"n_steps": 8}),
        "diagonal_saliency": Case(
            lambda m: attr.CovarianceAttribution(m.uf, Saliency), {"mode": "diagonal", "abs": False}
        ),
    },
    "ExplanationDistribution": {
        "saliency": Case(lambda m: attr.ExplanationDistribution(m.uf, Saliency), {"abs": False}),
        "ig_one_class": Case(
            lambda m: attr.ExplanationDistribution(m.uf, IntegratedGradients), {"n_steps": 8, "target": 3}
        ),
    },
}


def attribution_classes() -> List[str]:
    """The public names of ``captum_uncertainty.attr`` that are classes with an ``attribute`` method."""
    return [
        name
        for name in attr.__all__
        if isinstance(getattr(attr, name), type) and callable(getattr(getattr(attr, name), "attribute", None))
    ]


CASES = [(name, variant) for name in attribution_classes() for variant in BUILDERS.get(name, {"no builder": None})]


def test_every_attribution_class_is_found():
    found = attribution_classes()
    assert {"UABackprop", "CLUE", "ExplanationDistribution", "CounterfactualPathIG"} <= set(found)
    assert "ClueSettings" not in found and "Counterfactuals" not in found
    stale = sorted(set(BUILDERS) - set(found))
    assert not stale, f"BUILDERS names classes that are no longer public attribution classes: {stale}"


@pytest.fixture(scope="module")
def models() -> Models:
    members = [make_cnn(seed, classes=10, dtype=torch.float32).eval() for seed in range(3)]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = VAE(image_shape=(1, 8, 8), latent_dim=4, hidden=16).eval()
    return Models(UncertaintyForward(members, measure="epistemic"), members, vae)


@pytest.fixture(scope="module")
def x() -> Tensor:
    """Images in [0, 1] (the counterfactual methods' VAE decodes to [0, 1])."""
    return torch.rand((N, 1, 8, 8), generator=torch.Generator().manual_seed(1))


def named(value: Any, prefix: str) -> Dict[str, Tensor]:
    if isinstance(value, Decomposition):
        return {f"{prefix}_{measure}": tensor for measure, tensor in zip(MEASURES, value)}
    assert isinstance(value, Tensor), type(value)
    return {prefix: value}


def expected_columns(result: Any) -> Dict[str, Tensor]:
    """The documented columns of each return type of ``attribute``."""
    if isinstance(result, DistributionResult):  # the per-sample maps are not stored
        return {
            "target": result.target,
            "attribution_mean": result.mean,
            "attribution_std": result.std,
            "attribution_cv": result.cv,
        }
    if isinstance(result, (attr.CounterfactualPathResult, attr.CounterfactualPathResultWithDelta)):
        columns = {} if result.delta is None else named(result.delta, "delta")
        columns["fiducial_uncertainty"] = result.fiducials.uncertainty
        columns["fiducial_class"] = result.fiducials.fiducial_class
        return {**columns, **named(result.attributions, "attribution")}
    if isinstance(result, tuple) and not isinstance(result, Decomposition):
        maps, delta = result
        return {**named(delta, "delta"), **named(maps, "attribution")}
    return named(result, "attribution")


def direct_columns(explainer: Any, x: Tensor, kwargs: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """``attribute`` called batch by batch, each under the seed ``attribute_dataset`` gives it."""
    pieces = []
    for number, start in enumerate(range(0, N, BATCH)):
        with torch.random.fork_rng():
            torch.manual_seed(batch_seed(SEED, number))
            pieces.append(expected_columns(explainer.attribute(x[start : start + BATCH], **kwargs)))
    return {name: torch.cat([piece[name] for piece in pieces]).detach().numpy() for name in pieces[0]}


def written_columns(out: Path) -> Dict[str, np.ndarray]:
    """Every column of every shard, in row order (maps with their shape)."""
    tables = [pq.read_table(path) for path in sorted(out.glob("part-*.parquet"))]
    result: Dict[str, np.ndarray] = {}
    for name in tables[0].column_names:
        parts = []
        for table in tables:
            column = table.column(name).combine_chunks()
            parts.append(column.to_numpy_ndarray() if hasattr(column, "to_numpy_ndarray") else column.to_numpy())
        result[name] = np.concatenate(parts)
    return result


@pytest.mark.filterwarnings("ignore::captum_uncertainty.attr.counterfactual_path.FiducialWarning")
@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{name}-{variant}" for name, variant in CASES])
def test_every_explainer_runs_or_is_refused_up_front(name, variant, models, x, tmp_path):
    if name not in BUILDERS:
        pytest.fail(
            f"{name} is a public attribution class of captum_uncertainty.attr but has no entry in BUILDERS of "
            f"{Path(__file__).name}: add how to build it and whether attribute_dataset runs or refuses it"
        )
    case = BUILDERS[name][variant]
    explainer = case.build(models)
    assert type(explainer).__name__ == name
    out = tmp_path / "out"
    data = TensorDataset(x)
    if case.refused is not None:
        with pytest.raises((TypeError, ValueError), match=case.refused) as refusal:
            attribute_dataset(explainer, data, out, batch_size=BATCH, seed=SEED, progress=False, **case.kwargs)
        assert name in str(refusal.value)
        assert not out.exists() or not any(out.iterdir()), sorted(path.name for path in out.iterdir())
        return
    result = attribute_dataset(explainer, data, out, batch_size=BATCH, seed=SEED, progress=False, **case.kwargs)
    assert (result.num_inputs, result.shards_written, result.shards_skipped) == (N, N // BATCH, 0)
    written = written_columns(out)
    expected = direct_columns(explainer, x, case.kwargs)
    with torch.no_grad():
        summary = {key: value.numpy() for key, value in models.uf.summary(x).items()}
    numbers = [column for column, values in expected.items() if values.ndim == 1]
    maps = [column for column, values in expected.items() if values.ndim > 1]
    derived = ["baseline_uncertainty"] if maps == ["attribution"] and "delta" in expected else []
    assert list(written) == ["index", *summary, *numbers, *derived, *maps]
    if derived:  # U(x') from U(x), the map and its delta
        at_baseline = summary[models.uf.measure] - expected["attribution"].reshape(N, -1).sum(1) + expected["delta"]
        np.testing.assert_allclose(written["baseline_uncertainty"], at_baseline, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(written["index"], np.arange(N))
    for column, values in summary.items():
        np.testing.assert_allclose(written[column], values, rtol=1e-6, err_msg=column)
    for column, values in expected.items():
        assert written[column].shape == values.shape, column
        if values.dtype.kind in "iub":
            assert written[column].dtype == np.int64, column
            np.testing.assert_array_equal(written[column], values, err_msg=column)
        else:
            assert written[column].dtype == (values.dtype if values.ndim > 1 else np.float64), column
            np.testing.assert_allclose(written[column], values, rtol=1e-6, atol=1e-9, err_msg=column)
    manifest = read_manifest(out)
    assert manifest["explainer"] == name and manifest["complete"]
    assert manifest["map_columns"] == maps
    assert manifest["map_shape"] == list(expected[maps[0]].shape[1:])


def test_refusal_of_counterfactuals_comes_before_the_search(models, x, tmp_path, monkeypatch):
    """``return_counterfactuals=True`` is refused before the first (possibly long) search runs."""
    clue = attr.CLUE(models.uf, models.vae)

    def search(*args, **kwargs):
        raise AssertionError("the search ran")

    monkeypatch.setattr(clue, "counterfactuals", search)
    with pytest.raises(ValueError, match=r"CLUE\.attribute\(return_counterfactuals=True\)"):
        attribute_dataset(
            clue, TensorDataset(x), tmp_path / "out", batch_size=BATCH, progress=False, return_counterfactuals=True
        )
    assert not (tmp_path / "out").exists()  # refused before the folder was made


def test_fiducial_columns_say_which_fiducials_are_valid(models, x, tmp_path):
    """The stored fiducial columns give ``Fiducials.valid`` with the stored prediction and measure."""
    cpig = attr.CounterfactualPathIG(models.uf, models.vae)
    with pytest.warns(FiducialWarning):
        attribute_dataset(
            cpig, TensorDataset(x), tmp_path / "out", batch_size=N, progress=False, return_fiducial=True, **CPIG
        )
        found = cpig.attribute(x, return_fiducial=True, **CPIG).fiducials
    written = written_columns(tmp_path / "out")
    valid = (written["fiducial_class"] == written["predicted"]) & (
        written["fiducial_uncertainty"] < written[models.uf.measure]
    )
    np.testing.assert_array_equal(valid, found.valid.numpy())
