"""Sphinx configuration of the captum-uncertainty documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``). The
build works offline: the tutorials in ``tutorials/`` are executed by sphinx-gallery on the
bundled MNIST digits, and intersphinx links to PyTorch / Captum are only configured when
``CAPTUM_UNCERTAINTY_DOCS_ONLINE=1`` is set (an unreachable inventory is a warning, and the build
treats warnings as errors).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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

# -- intersphinx: offline by default -------------------------------------------------------
# Fetching an inventory needs the network; a failed fetch is a warning and ``-W`` makes it an
# error, so the mapping is empty unless the builder opts in.
if os.environ.get("CAPTUM_UNCERTAINTY_DOCS_ONLINE") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "torch": ("https://pytorch.org/docs/stable", None),
        "captum": ("https://captum.ai/api", None),
    }
else:
    intersphinx_mapping = {}
intersphinx_timeout = 5

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
