"""One naming scheme for the tuples of allowed string values of an argument: ``SUPPORTED_<ARGUMENT>``,
exported, with the old names kept as deprecated aliases of the same objects."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "captum_uncertainty"

#: (module, new name, old name) of every renamed tuple, including the modules re-exporting it.
RENAMED = [
    ("captum_uncertainty.attr.ua_backprop", "SUPPORTED_PATHS", "PATHS"),
    ("captum_uncertainty.attr.ua_backprop", "SUPPORTED_FULLGRAD_POSTPROCESS", "FULLGRAD_POSTPROCESS"),
    ("captum_uncertainty.attr._utils.path", "SUPPORTED_METHODS", "INTEGRATION_METHODS"),
    ("captum_uncertainty.attr._utils.formatting", "SUPPORTED_BASELINE_NAMES", "BASELINE_NAMES"),
    ("captum_uncertainty.metrics.reduction_curves", "SUPPORTED_EIC_NORMALIZATIONS", "EIC_NORMALIZATIONS"),
    ("captum_uncertainty.mitigation", "SUPPORTED_NORMALIZATIONS", "NORMALIZATIONS"),
    ("captum_uncertainty.mitigation", "SUPPORTED_SPACES", "SPACES"),
    ("captum_uncertainty.training", "SUPPORTED_OPTIMIZERS", "OPTIMIZERS"),
    ("captum_uncertainty.data", "SUPPORTED_OPTIMIZERS", "OPTIMIZERS"),
    ("captum_uncertainty.llm.forward", "SUPPORTED_REDUCTIONS", "REDUCTIONS"),
    ("captum_uncertainty.llm", "SUPPORTED_REDUCTIONS", "REDUCTIONS"),
    ("captum_uncertainty.posterior.callable", "SUPPORTED_LAYOUTS", "LAYOUTS"),
    ("captum_uncertainty.posterior", "SUPPORTED_LAYOUTS", "LAYOUTS"),
    ("captum_uncertainty.posterior.dropout", "SUPPORTED_MASK_LAYOUTS", "MASK_LAYOUTS"),
    ("captum_uncertainty.integrations.torch_uncertainty", "SUPPORTED_DIST_FAMILIES", "DIST_FAMILIES"),
    ("captum_uncertainty.experiments.ground_truth", "SUPPORTED_DATASETS", "DATASETS"),
    ("captum_uncertainty.experiments.reference_reading", "SUPPORTED_READINGS", "METHOD_READINGS"),
    ("captum_uncertainty._known_causes", "SUPPORTED_TABULAR_CAUSES", "TABULAR_CAUSES"),
    ("captum_uncertainty.data", "SUPPORTED_TABULAR_CAUSES", "TABULAR_CAUSES"),
    ("captum_uncertainty.dataset._engines", "SUPPORTED_ENGINES", "ENGINES"),
    ("captum_uncertainty.dataset", "SUPPORTED_ENGINES", "ENGINES"),
    ("captum_uncertainty._plot_inputs", "SUPPORTED_LAYOUTS", "LAYOUTS"),
]


@pytest.mark.parametrize("module_name,new,old", RENAMED, ids=[f"{m}.{old}" for m, _, old in RENAMED])
def test_old_name_is_an_exported_alias_of_the_new_one(module_name, new, old):
    module = importlib.import_module(module_name)
    assert getattr(module, old) is getattr(module, new)
    assert isinstance(getattr(module, new), tuple)
    assert new in module.__all__ and old in module.__all__


#: The module-level choices tuples whose names keep the package's shared vocabulary.
VOCABULARY = {"MEASURES", "VARIANCE_HEADS", "LIKELIHOOD_NAMES"}
#: named in the command-line and benchmark modules (another naming pass owns them); none of them
#: is passed to ``check_choice`` as a bare name at present.
FOREIGN_FILES = {
    PACKAGE / "_cli.py",
    PACKAGE / "_methods.py",
    PACKAGE / "experiments" / "benchmark.py",
    PACKAGE / "experiments" / "_ground_truth_methods.py",
}
FOREIGN_NAMES: set = set()


def _package_trees():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path, ast.parse(path.read_text())


def _choice_names(call: ast.Call):
    """The names a ``check_choice(value, "name", CHOICES)`` call passes as its choices: a bare name,
    or the names of a ``+`` concatenation of them (``A + tuple(B)``)."""
    name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)
    if name != "check_choice" or len(call.args) < 3:
        return []
    choices = call.args[2]
    operands = [choices]
    while any(isinstance(o, ast.BinOp) for o in operands):
        operands = [part for o in operands for part in ((o.left, o.right) if isinstance(o, ast.BinOp) else (o,))]
    return [o.id for o in operands if isinstance(o, ast.Name)]


def _string_tuples(tree: ast.Module):
    """Module-level ``NAME = ("a", "b", ...)`` assignments (``None`` allowed among the strings)."""
    found = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Tuple):
            values = node.value.elts
            if values and all(isinstance(v, ast.Constant) and isinstance(v.value, (str, type(None))) for v in values):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found |= {t.id for t in targets if isinstance(t, ast.Name)}
    return found


def test_the_scan_finds_choices_names():
    call = ast.parse('check_choice(x, "name", A + tuple(B))').body[0].value
    assert _choice_names(call) == ["A"]
    assert _choice_names(ast.parse('check_choice(x, "name", C)').body[0].value) == ["C"]
    assert _choice_names(ast.parse('other(x, "name", C)').body[0].value) == []
    assert _string_tuples(ast.parse('A = ("a", None)\nB = (1, 2)\nC = ("c",)\n_D = ["d"]')) == {"A", "C"}


def test_choices_tuples_are_named_supported():
    trees = list(_package_trees())
    string_tuples = {}
    for path, tree in trees:
        for name in _string_tuples(tree):
            string_tuples.setdefault(name, set()).add(path)
    used = set()
    for _, tree in trees:
        used |= {name for node in ast.walk(tree) if isinstance(node, ast.Call) for name in _choice_names(node)}
    assert {"SUPPORTED_PATHS", "SUPPORTED_ENGINES", "MEASURES"} <= used, "the scan no longer finds check_choice calls"
    plural_string_tuples = sorted(name for name in used if name in string_tuples and name.endswith("S"))
    wrong = [
        name
        for name in plural_string_tuples
        if not name.startswith(("SUPPORTED_", "_"))
        and name not in VOCABULARY | FOREIGN_NAMES
        and not string_tuples[name] <= FOREIGN_FILES
    ]
    assert not wrong, f"name the choices of an argument SUPPORTED_<ARGUMENT> (keep the old name as an alias): {wrong}"
