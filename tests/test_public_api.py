"""The public/private line, read from the source: every module declares ``__all__``, every
top-level function and class is either in it or underscored, nothing imports a name a module
does not export, and no attribution method module imports another."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "captum_uncertainty"
IMPORTING_FOLDERS = ("captum_uncertainty", "tests", "benchmarks", "tutorials", "docs")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _importing_files():
    files = []
    for folder in IMPORTING_FOLDERS:
        files += [
            p for p in (ROOT / folder).rglob("*.py") if not {"_build", "auto_tutorials", "__pycache__"} & set(p.parts)
        ]
    return sorted(files)


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def _declared_all(tree: ast.Module):
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if any(getattr(t, "id", None) == "__all__" for t in targets) and node.value is not None:
            return [ast.literal_eval(element) for element in node.value.elts]
    return None


@pytest.mark.parametrize("path", _package_files(), ids=_ids(_package_files()))
def test_every_module_declares_its_public_names(path):
    tree = ast.parse(path.read_text())
    exported = _declared_all(tree)
    assert exported is not None, f"{path.name} has no __all__"
    module = importlib.import_module(_module_name(path))
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"__all__ names what the module does not define: {missing}"
    public = [
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_")
    ]
    unexported = [name for name in public if name not in exported]
    assert not unexported, f"public-looking definitions not in __all__ (underscore them or export them): {unexported}"


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("captum_uncertainty"):
            for alias in node.names:
                yield node.module, alias.name


@pytest.mark.parametrize("path", _importing_files(), ids=_ids(_importing_files()))
def test_nothing_imports_a_name_its_module_does_not_export(path):
    wrong = []
    for module_name, name in _imports(path):
        module = importlib.import_module(module_name)
        try:
            importlib.import_module(f"{module_name}.{name}")
            continue  # a submodule
        except ModuleNotFoundError:
            pass
        if name not in getattr(module, "__all__", ()) and not (name.startswith("__") and name.endswith("__")):
            wrong.append(f"{module_name}.{name}")
    assert not wrong, f"imports of names outside their module's __all__: {wrong}"


METHOD_MODULES = sorted(p for p in (PACKAGE / "attr").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", METHOD_MODULES, ids=_ids(METHOD_MODULES))
def test_no_method_module_imports_another(path):
    others = {f"captum_uncertainty.attr.{p.stem}" for p in METHOD_MODULES} - {_module_name(path)}
    wrong = sorted({module for module, _ in _imports(path) if module in others})
    assert not wrong, f"{path.name} imports method modules {wrong}; shared pieces belong in attr/_utils"
