"""Sphinx configuration of the captum-uncertainty documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``). The
build works offline: the tutorials in ``tutorials/`` are executed by sphinx-gallery on the
bundled MNIST digits, and the intersphinx links to PyTorch, Captum, Python and NumPy come from
small inventories written by ``_offline_inventories.py``. The build is nitpicky: every
cross-reference must resolve.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS)]

from _offline_inventories import AUTODOC_ALIASES, write_inventories  # noqa: E402
from sphinx.ext import intersphinx  # noqa: E402

import captum_uncertainty  # noqa: E402

project = "captum-uncertainty"
author = "captum-uncertainty contributors"
copyright = "2025, captum-uncertainty contributors"
release = captum_uncertainty.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "sg_execution_times.rst"]

# -- autodoc / napoleon: Captum-form Google docstrings (Args: / Returns: / Examples:) ----------
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autoclass_content = "both"
# nn.Module.__init__ / forward docstrings would otherwise be shown on every posterior class.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
# Link the short type names of the docstrings ("x (Tensor, optional): ...").
napoleon_preprocess_types = True
napoleon_type_aliases = {
    "Tensor": ":class:`torch.Tensor`",
    "nn.Module": ":class:`torch.nn.Module`",
    "Path": ":class:`pathlib.Path`",
    "callable": ":func:`callable <callable>`",
    "LatentGenerativeModel": ":class:`~captum_uncertainty.generative.LatentGenerativeModel`",
    "Decomposition": ":class:`~captum_uncertainty.Decomposition`",
    "Posterior": ":class:`~captum_uncertainty.Posterior`",
    "TextTokenInput": ":class:`~captum.attr.TextTokenInput`",
    "TextTemplateInput": ":class:`~captum.attr.TextTemplateInput`",
    "PerturbationAttribution": ":class:`~captum.attr.PerturbationAttribution`",
    "LayerIntegratedGradients": ":class:`~captum.attr.LayerIntegratedGradients`",
    "LLMAttributionResult": ":class:`~captum.attr.LLMAttributionResult`",
    "peft.PeftModel": "``peft.PeftModel``",
}
# The default of every cache_dir argument (captum_uncertainty.cache.USER_CACHE).
nitpick_ignore_regex = [
    ("py:class", r"captum_uncertainty\.cache\.UserCache"),
    # the private NamedTuple field bases of the metric results (the public subclasses are documented)
    ("py:class", r"captum_uncertainty\.metrics\..*\._\w+Fields"),
    # the causal-LM forward's internal token batch, shown in the signatures of its helpers
    ("py:class", r"captum_uncertainty\.llm\._utils\.TokenBatch"),
    # type aliases and a private TypeVar printed in the attribution methods' signatures
    ("py:class", r"(FiducialType|TensorsOrMapping|_TensorOrTupleOfTensorsGeneric)"),
]

# -- cross-references: all must resolve ------------------------------------------------------
nitpicky = True
# Plain-English words in Google-style types ("sequence of Tensor", "scalar"): not classes.
nitpick_ignore = [
    ("py:class", "sequence"),
    ("py:class", "scalar"),
    ("py:class", "keyword only"),
    ("py:class", "mapping"),
]
# The attribution classes' argument aliases, shown as written in the signatures.
nitpick_ignore += [("py:class", alias) for alias in ("TensorOrTuple", "BaselineType", "TargetType")]

# -- intersphinx: offline by default -------------------------------------------------------
# The inventories are our own (docs/_offline_inventories.py), written under docs/_build/ at each
# build. With CAPTUM_UNCERTAINTY_DOCS_ONLINE=1 each project's live inventory is tried first and the
# local one is the fallback (an unreachable URL is then only an info message).
_online = os.environ.get("CAPTUM_UNCERTAINTY_DOCS_ONLINE") == "1"
intersphinx_mapping = {
    key: (url, (None, str(path)) if _online else (str(path),))
    for key, (url, path) in write_inventories(DOCS / "_build" / "intersphinx").items()
}
intersphinx_timeout = 5


def _resolve_autodoc_alias(app, env, node, contnode):
    """Resolve a name that autodoc prints for a base class or type hint but that the inventories
    know under another name (``torch.nn.modules.module.Module``) through intersphinx."""
    public = AUTODOC_ALIASES.get(node.get("reftarget"))
    if public is None:
        return None
    node["reftarget"] = public
    return intersphinx.missing_reference(app, env, node, contnode)


def setup(app):
    app.connect("missing-reference", _resolve_autodoc_alias)


# -- sphinx-gallery: run the tutorials at build time ---------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "tutorials"),
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "write_computation_times": False,
    "abort_on_example_error": True,
}

# -- HTML ------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"captum-uncertainty {release}"
html_static_path: list = []
