"""The docs' "Add a posterior source" example, run as written, through every method: its maps equal
those of the same samples as WeightSamples, so a new source needs nothing beyond what the example
shows."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from captum_uncertainty import (
    CounterfactualPathIG,
    CovarianceAttribution,
    ExplanationDistribution,
    UABackprop,
    UncertaintyForward,
    UncertaintyIntegratedGradients,
    WeightSamples,
    attribute_dataset,
)
from captum_uncertainty.generative import VAE

DOCS = Path(__file__).resolve().parents[1] / "docs" / "works_with.rst"
DT = torch.float64


def _example_namespace() -> dict:
    """The section's code block, run as the docs show it."""
    text = DOCS.read_text()
    section = text[text.index("Add a posterior source") :]
    block = section[section.index(".. code-block:: python") :].split("\n", 2)[2]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("   "):
            break  # the first unindented line ends the block
        lines.append(line)
    code = textwrap.dedent("\n".join(lines))
    assert re.search(r"class WeightNoise\(Posterior\)", code)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def sources():
    """The example's source on a small float64 CNN and the same samples as WeightSamples."""
    weight_noise = _example_namespace()["WeightNoise"]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(108, 4)).to(DT).eval()
    example = weight_noise(net, num_samples=4, scale=0.3, seed=1)
    states = []
    for noise in example.noise:
        state = {name: p.detach() + noise[name] for name, p in net.named_parameters()}
        states.append(dict(net.state_dict(), **state))
    return example, WeightSamples(net, states)


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=DT)


def _maps(posterior, x):
    uf = UncertaintyForward(posterior, "epistemic")
    maps = {"uig": UncertaintyIntegratedGradients(uf).attribute(x, n_steps=8)}
    for path in ("fullgrad", "grad", "inputgrad", "integrated_gradients", "blur_integrated_gradients"):
        maps[f"ua_{path}"] = UABackprop(uf).attribute(x, path=path, n_steps=4)
    torch.manual_seed(3)
    vae = VAE(image_shape=(1, 8, 8), latent_dim=3).to(DT).eval()
    fiducial = torch.zeros(x.shape[0], 3, dtype=DT)
    maps["cf_path_ig"] = CounterfactualPathIG(uf, vae).attribute(x, fiducial=fiducial, n_steps=8)
    maps["distribution"] = ExplanationDistribution(uf, IntegratedGradients).attribute(x, n_steps=8).samples
    maps["covariance"] = CovarianceAttribution(uf, IntegratedGradients).attribute(x, n_steps=8)
    return maps


def test_the_example_source_gives_every_methods_maps_of_the_same_samples(sources, x):
    example, reference = sources
    with torch.no_grad():
        torch.testing.assert_close(example(x), reference(x), rtol=1e-12, atol=1e-12)
    found, expected = _maps(example, x), _maps(reference, x)
    for name, maps in expected.items():
        torch.testing.assert_close(found[name], maps, rtol=1e-8, atol=1e-12, msg=name)


def test_the_example_source_explains_a_data_set_and_its_fingerprint_names_its_scale(sources, x, tmp_path):
    example, reference = sources
    results = [
        attribute_dataset(
            UncertaintyIntegratedGradients(UncertaintyForward(posterior, "epistemic")),
            torch.utils.data.TensorDataset(x),
            tmp_path / name,
            batch_size=2,
            progress=False,
            n_steps=8,
        ).to_pandas()
        for name, posterior in (("example", example), ("reference", reference))
    ]
    for column in ("total", "aleatoric", "epistemic"):
        assert results[0][column].tolist() == pytest.approx(results[1][column].tolist(), rel=1e-9)
    for found, expected in zip(results[0]["attribution"], results[1]["attribution"]):
        torch.testing.assert_close(torch.as_tensor(found), torch.as_tensor(expected), rtol=1e-7, atol=1e-12)
    weight_noise = type(example)
    net = example.model
    assert example.fingerprint() == weight_noise(net, num_samples=4, scale=0.3, seed=1).fingerprint()
    assert example.fingerprint() != weight_noise(net, num_samples=4, scale=0.2, seed=1).fingerprint()
    assert example.fingerprint() != weight_noise(net, num_samples=4, scale=0.3, seed=2).fingerprint()
