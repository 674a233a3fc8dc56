"""The API reference documents every public name (fast: parses docs/api.rst, builds nothing)."""

from __future__ import annotations

import importlib
import re
import sys
import zlib
from pathlib import Path

import pytest

import captum_uncertainty

DOCS = Path(__file__).resolve().parents[1] / "docs"
DIRECTIVE = re.compile(r"^\.\. (autoclass|autofunction|autodata|automodule|autoexception)::\s+(\S+)\s*$", re.M)


def documented_entries(text: str) -> list:
    """``(directive, dotted name)`` of every autodoc directive at the start of a line."""
    return DIRECTIVE.findall(text)


def documented_names(text: str) -> set:
    """Names documented directly under ``captum_uncertainty`` (``captum_uncertainty.X`` -> ``X``)."""
    names = set()
    for directive, target in documented_entries(text):
        parts = target.split(".")
        if directive != "automodule" and parts[0] == "captum_uncertainty" and len(parts) == 2:
            names.add(parts[1])
    return names


def resolve(dotted: str):
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(dotted)


def test_parser_reads_directives_and_ignores_comments():
    text = (
        ".. autoclass:: captum_uncertainty.A\n"
        "   :members:\n"
        ".. autofunction:: captum_uncertainty.b\n"
        ".. automodule:: captum_uncertainty.data\n"
        ".. .. autoclass:: captum_uncertainty.Commented\n"
        "   .. autoclass:: captum_uncertainty.Indented\n"
        "text .. autoclass:: captum_uncertainty.Inline\n"
    )
    assert documented_names(text) == {"A", "b"}


def test_every_public_name_is_in_the_api_reference():
    documented = documented_names((DOCS / "api.rst").read_text())
    missing = sorted(set(captum_uncertainty.__all__) - documented)
    assert not missing, f"add to docs/api.rst (one '.. autoclass::'/'.. autofunction::' each): {missing}"


@pytest.mark.parametrize("directive,target", documented_entries((DOCS / "api.rst").read_text()))
def test_every_api_entry_exists(directive, target):
    """A stale entry would only fail the (slow) Sphinx build; catch it here."""
    obj = resolve(target)
    if directive == "autoclass":
        assert isinstance(obj, type), f"{target} is not a class"
    elif directive == "autofunction":
        assert callable(obj) and not isinstance(obj, type), f"{target} is not a function"


def test_api_reference_is_in_the_toctree():
    index = (DOCS / "index.rst").read_text()
    toctree = index[index.index(".. toctree::") :]
    for page in ("api", "methods", "benchmark", "auto_tutorials/index"):
        assert re.search(rf"^\s+{re.escape(page)}\s*$", toctree, re.M), f"{page} missing from the toctree"


def test_offline_inventories_are_sphinx_v2_files(tmp_path):
    """docs/_offline_inventories.py writes what intersphinx reads, and every alias has an entry."""
    sys.path.insert(0, str(DOCS))
    try:
        inventories = importlib.import_module("_offline_inventories")
    finally:
        sys.path.remove(str(DOCS))
    names = {name for project in inventories.PROJECTS.values() for name, _, _ in project.entries}
    assert set(inventories.AUTODOC_ALIASES.values()) <= names
    for key, (url, path) in inventories.write_inventories(tmp_path).items():
        project = inventories.PROJECTS[key]
        *header, body = path.read_bytes().split(b"\n", 4)
        assert [line.decode() for line in header] == [
            "# Sphinx inventory version 2",
            f"# Project: {project.name}",
            f"# Version: {project.version}",
            "# The remainder of this file is compressed using zlib.",
        ]
        lines = [line.split(" ") for line in zlib.decompress(body).decode().splitlines()]
        assert [(name, kind, uri) for name, kind, _, uri, _ in lines] == list(project.entries)
        assert url == project.url and url.startswith("https://")
