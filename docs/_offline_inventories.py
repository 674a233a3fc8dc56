"""Small hand-written intersphinx inventories, so that the docs link to PyTorch, Captum, Python
and NumPy without network access.

Each project lists the few names our docs refer to, with their page on the project's site (we
write these lists by hand; no inventory is downloaded or copied). ``conf.py`` writes one Sphinx
v2 ``objects.inv`` per project under ``docs/_build/`` at build time (see
:func:`write_inventories`) and points ``intersphinx_mapping`` at it. A name missing here is an
unresolved reference, hence an error, in the nitpicky docs build: add it here.

:data:`AUTODOC_ALIASES` maps the names that autodoc prints for some base classes and type hints
(private paths such as ``torch._C.Generator``) to the public name whose page documents them;
``conf.py`` resolves them through intersphinx under that name.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import NamedTuple


class Project(NamedTuple):
    """The inventory of one documentation site."""

    name: str  #: shown in the links' tooltips, e.g. "(in PyTorch stable)"
    version: str  #: the documentation version the URL points at
    url: str  #: base URL; the entries' URIs are relative to it
    #: ``(name, "domain:type", uri)``; a ``$`` at the end of the URI stands for the name
    entries: tuple[tuple[str, str, str], ...]


PROJECTS = {
    "python": Project(
        "Python",
        "3",
        "https://docs.python.org/3",
        (
            ("pathlib.Path", "py:class", "library/pathlib.html#$"),
            ("typing.NamedTuple", "py:class", "library/typing.html#$"),
            ("typing.Protocol", "py:class", "library/typing.html#$"),
            ("UserWarning", "py:exception", "library/exceptions.html#$"),
            ("callable", "py:function", "library/functions.html#$"),
        ),
    ),
    "numpy": Project(
        "NumPy",
        "stable",
        "https://numpy.org/doc/stable",
        (("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html#$"),),
    ),
    "matplotlib": Project(
        "Matplotlib",
        "stable",
        "https://matplotlib.org/stable",
        (
            ("matplotlib.figure.Figure", "py:class", "api/_as_gen/matplotlib.figure.Figure.html#$"),
            ("matplotlib.axes.Axes", "py:class", "api/_as_gen/matplotlib.axes.Axes.html#$"),
            ("matplotlib.colors.TwoSlopeNorm", "py:class", "api/_as_gen/matplotlib.colors.TwoSlopeNorm.html#$"),
        ),
    ),
    "torch": Project(
        "PyTorch",
        "stable",
        "https://docs.pytorch.org/docs/stable",
        (
            ("torch.Tensor", "py:class", "tensors.html#$"),
            ("torch.device", "py:class", "tensor_attributes.html#$"),
            ("torch.dtype", "py:class", "tensor_attributes.html#$"),
            ("torch.Generator", "py:class", "generated/torch.Generator.html#$"),
            ("torch.nn.Module", "py:class", "generated/torch.nn.Module.html#$"),
            ("torch.nn.ModuleList", "py:class", "generated/torch.nn.ModuleList.html#$"),
        ),
    ),
    "captum": Project(
        "Captum",
        "latest",
        "https://captum.ai/api",
        (
            ("captum.attr.Attribution", "py:class", "base_classes.html#$"),
            ("captum.attr.GradientAttribution", "py:class", "base_classes.html#$"),
            ("captum.attr.PerturbationAttribution", "py:class", "base_classes.html#$"),
            ("captum.attr.IntegratedGradients", "py:class", "integrated_gradients.html#$"),
            ("captum.attr.NoiseTunnel", "py:class", "noise_tunnel.html#$"),
            ("captum.attr.LayerIntegratedGradients", "py:class", "layer.html#$"),
            ("captum.attr.Saliency", "py:class", "saliency.html#$"),
            ("captum.attr.Lime", "py:class", "lime.html#$"),
            ("captum.attr.KernelShap", "py:class", "kernel_shap.html#$"),
            ("captum.attr.InputXGradient", "py:class", "input_x_gradient.html#$"),
            ("captum.attr.visualization.visualize_image_attr", "py:function", "utilities.html#$"),
            ("captum.attr.LLMAttribution", "py:class", "llm_attr.html#$"),
            ("captum.attr.LLMGradientAttribution", "py:class", "llm_attr.html#$"),
            ("captum.attr.LLMAttributionResult", "py:class", "llm_attr.html#$"),
            ("captum.attr.TextTokenInput", "py:class", "llm_attr.html#$"),
            ("captum.attr.TextTemplateInput", "py:class", "llm_attr.html#$"),
            ("captum.attr.FeatureAblation", "py:class", "feature_ablation.html#$"),
        ),
    ),
}

#: name printed by autodoc -> public name in :data:`PROJECTS`
AUTODOC_ALIASES = {
    # the constructors that NamedTuple generates keep their annotations as unresolved strings
    "Tensor": "torch.Tensor",
    # private paths of base classes and type hints
    "torch._C.Generator": "torch.Generator",
    "torch.nn.modules.module.Module": "torch.nn.Module",
    "torch.nn.modules.container.ModuleList": "torch.nn.ModuleList",
    "captum.attr._utils.attribution.Attribution": "captum.attr.Attribution",
    "captum.attr._utils.attribution.GradientAttribution": "captum.attr.GradientAttribution",
    "captum.attr._utils.attribution.PerturbationAttribution": "captum.attr.PerturbationAttribution",
    "captum.attr._core.layer.layer_integrated_gradients.LayerIntegratedGradients": (
        "captum.attr.LayerIntegratedGradients"
    ),
    "captum.attr._utils.interpretable_input.TextTokenInput": "captum.attr.TextTokenInput",
    "captum.attr._utils.interpretable_input.TextTemplateInput": "captum.attr.TextTemplateInput",
    "captum.attr._core.llm_attr.LLMAttributionResult": "captum.attr.LLMAttributionResult",
    "np.ndarray": "numpy.ndarray",
    "Axes": "matplotlib.axes.Axes",
    "Figure": "matplotlib.figure.Figure",
}


def inventory_bytes(project: Project) -> bytes:
    """The Sphinx v2 ``objects.inv`` of ``project``: a plain header, then zlib-compressed lines
    ``name domain:type priority uri dispname`` (``-`` as dispname: the name itself)."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project.name}\n"
        f"# Version: {project.version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(f"{name} {kind} 1 {uri} -\n" for name, kind, uri in project.entries)
    return header.encode() + zlib.compress(body.encode())


def write_inventories(directory: Path) -> dict[str, tuple[str, Path]]:
    """Write every project's inventory to ``directory/<key>.inv``; returns ``{key: (base URL,
    inventory path)}``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for key, project in PROJECTS.items():
        path = directory / f"{key}.inv"
        path.write_bytes(inventory_bytes(project))
        written[key] = (project.url, path)
    return written
