"""Every Python code block of README.md and docs/*.rst runs as written.

Which blocks run:

* Markdown (``README.md``): fences (```` ``` ```` or ``~~~``) with the language ``python`` (or
  ``py``, ``python3``, ``pycon``).
* reStructuredText (``docs/*.rst``): ``.. code-block::`` / ``.. code::`` / ``.. sourcecode::``
  directives with one of those languages, and Sphinx's ``.. testcode::`` / ``.. doctest::``.
* Not run: blocks in a shell or text language (``bash``, ``sh``, ``shell``, ``console``, ``text``,
  ``none``), untyped blocks (a fence without a language, an rST ``::`` literal block, a
  ``code-block`` without a language) and nothing else. So that no Python block escapes, the
  guard test below fails on an untyped block that parses as Python ("mark it python") and on a
  language outside both lists.

How they run:

* The blocks of one document run in order in one namespace, as a reader builds a page up; each
  block is its own test case named ``<file>:<line of its fence or directive>``, and a case
  first runs the earlier blocks of its page if they have not run yet (so ``-k "guide.rst:42"``
  works on its own). Code is compiled with the document's path and real line numbers, so a
  traceback points at the failing line of the document.
* A block whose first line starts with ``>>>`` is a doctest: it runs with :mod:`doctest` in the
  page's namespace and its printed outputs are checked (``ELLIPSIS``, ``NORMALIZE_WHITESPACE``).
* A block whose first line is ``# needs: network ...`` is skipped with that reason.
* Each document runs in its own temporary working directory (snippets writing ``out/...`` write
  there), with one torch thread. Blocks that ``import ray`` carry the suite's ``ray`` mark (a
  local Ray runtime takes seconds to start; ``-m "not ray"`` deselects them); a runtime they
  start is shut down after the module.
* To stay within seconds, two entry points are cheaper for these tests only (see
  ``_cheap_entry_points``): :func:`captum_uncertainty.data.load_mnist` returns a stratified
  200-digit subset of the bundled digits (150 train, 50 test) and
  :func:`captum_uncertainty.data.train_ensemble` trains for one epoch without the cache (once
  per configuration; later calls get copies). Every other call in the snippets runs for real.
"""

from __future__ import annotations

import ast
import copy
import doctest
import hashlib
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import torch

import captum_uncertainty.data as cu_data

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst"))]

PYTHON = frozenset({"python", "py", "python3", "pycon"})
NOT_PYTHON = frozenset({"bash", "sh", "shell", "console", "text", "none"})
NEEDS = re.compile(r"^#\s*needs:\s*(.+)$")

_FENCE = re.compile(r"^(\s*)(```|~~~)\s*([\w+-]*)\s*$")
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+(code-block|code|sourcecode|testcode|doctest)::\s*(\S*)\s*$")
_PYTHON_DIRECTIVES = ("testcode", "doctest")  # Sphinx's doctest extension: always Python
_ANY_DIRECTIVE = re.compile(r"^\s*\.\.\s+[\w:-]+::")


@dataclass(frozen=True)
class Block:
    """One code block: its document, the line of its fence / directive, language and code."""

    path: Path
    line: int
    first_code_line: int
    language: str
    code: str

    @property
    def id(self) -> str:
        try:
            name = self.path.relative_to(ROOT).as_posix()
        except ValueError:
            name = self.path.name
        return f"{name}:{self.line}"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indented_body(lines: List[str], start: int, parent_indent: int) -> tuple:
    """The block of lines after ``start`` indented deeper than ``parent_indent`` (rST rules):
    returns ``(index of its first line, dedented text, index after it)``; options lines
    (``:name: value``) directly under a directive are skipped."""
    index = start
    while index < len(lines) and lines[index].strip().startswith(":") and _indent(lines[index]) > parent_indent:
        index += 1
    body: List[str] = []
    first: Optional[int] = None
    while index < len(lines):
        line = lines[index]
        if line.strip() and _indent(line) <= parent_indent:
            break
        if line.strip() and first is None:
            first = index
        if first is not None:
            body.append(line)
        index += 1
    while body and not body[-1].strip():
        body.pop()
    return (first if first is not None else start), textwrap.dedent("\n".join(body)), index


def _rst_blocks(path: Path, text: str) -> List[Block]:
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _DIRECTIVE.match(line)
        literal = not directive and line.rstrip().endswith("::") and not _ANY_DIRECTIVE.match(line)
        if directive or literal:
            parent = _indent(line)
            first, code, end = _indented_body(lines, index + 1, parent)
            if code.strip():
                language = directive.group(3).lower() if directive else ""
                if directive and directive.group(2) in _PYTHON_DIRECTIVES:
                    language = "python"
                blocks.append(Block(path, index + 1, first + 1, language, code))
            index = max(end, index + 1)
            continue
        index += 1
    return blocks


def _markdown_blocks(path: Path, text: str) -> List[Block]:
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence.group(2):
            end += 1
        code = textwrap.dedent("\n".join(lines[index + 1 : end]))
        blocks.append(Block(path, index + 1, index + 2, fence.group(3).lower(), code))
        index = end + 1
    return blocks


def extract_blocks(path: Path) -> List[Block]:
    """Every code block of a Markdown or reStructuredText document, in order."""
    text = path.read_text(encoding="utf-8")
    return _markdown_blocks(path, text) if path.suffix == ".md" else _rst_blocks(path, text)


def python_blocks(path: Path) -> List[Block]:
    return [block for block in extract_blocks(path) if block.language in PYTHON]


def unmarked_python(blocks: List[Block]) -> List[str]:
    """Problems that would let a Python block escape: untyped blocks that parse as Python and
    blocks in a language the rule does not know."""
    problems = []
    for block in blocks:
        if block.language in PYTHON or block.language in NOT_PYTHON:
            continue
        if block.language:
            problems.append(f"{block.id}: language {block.language!r} is neither run nor known to be shell/text")
            continue
        try:
            ast.parse(block.code)
        except SyntaxError:
            continue
        problems.append(f"{block.id}: an untyped block that parses as Python; mark it python (or text/bash)")
    return problems


class SnippetError(AssertionError):
    """A documentation block failed; the message starts with ``<file>:<line>``."""


@dataclass
class Page:
    """The state of one document while its blocks run: one namespace, one working directory."""

    blocks: List[Block]
    workdir: Path
    namespace: Dict[str, Any] = field(default_factory=lambda: {"__name__": "__docs__"})
    done: int = 0
    failed: Optional[str] = None


def _run_block(block: Block, namespace: Dict[str, Any]) -> None:
    first = block.code.lstrip().splitlines()[0] if block.code.strip() else ""
    needs = NEEDS.match(first.strip())
    if needs:
        pytest.skip(f"{block.id} needs {needs.group(1)}")
    filename = str(block.path)
    if first.startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(block.code, namespace, block.id, filename, block.first_code_line - 1)
        output: List[str] = []
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        runner.run(test, out=output.append, clear_globs=False)
        if runner.failures:
            raise SnippetError(f"{block.id} failed (doctest):\n" + "".join(output))
        return
    source = "\n" * (block.first_code_line - 1) + block.code
    try:
        exec(compile(source, filename, "exec"), namespace)
    except Exception as error:
        line = _innermost_line(error, filename)
        where = f" at line {line}" if line > 0 else ""
        raise SnippetError(f"{block.id} failed{where}: {type(error).__name__}: {error}") from error


def _innermost_line(error: BaseException, filename: str) -> int:
    """The line of the deepest traceback frame in ``filename`` (-1 if none; a syntax error's own
    line)."""
    if isinstance(error, SyntaxError) and error.filename == filename and error.lineno:
        return error.lineno
    line = -1
    traceback = error.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == filename:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def run_blocks(page: Page, upto: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the page's blocks up to ``upto`` (inclusive) that have not run yet, in its namespace
    and folder. A failed earlier block fails the later ones without running them."""
    target = page.blocks[upto]
    if page.failed is not None:
        raise SnippetError(f"{target.id}: not run, {page.failed} of the same page failed")
    monkeypatch.chdir(page.workdir)
    while page.done <= upto:
        block = page.blocks[page.done]
        page.done += 1
        try:
            _run_block(block, page.namespace)
        except pytest.skip.Exception:
            if block is target:
                raise
        except BaseException:
            page.failed = block.id
            if block is target:
                raise
            raise SnippetError(f"{target.id}: not run, {block.id} of the same page failed") from None


# ----------------------------------------------------------------------------- cheap entry points
_REAL_LOAD_MNIST = cu_data.load_mnist
_REAL_TRAIN_ENSEMBLE = cu_data.train_ensemble
_SPLITS: Dict[int, cu_data.DataSplit] = {}
_ENSEMBLES: Dict[tuple, list] = {}  # (n_members, data digest, other arguments) -> trained members


def _small_mnist(test_size: int = 1000, seed: int = 0) -> cu_data.DataSplit:
    """A stratified 200-digit subset of the bundled MNIST (150 train, 50 test; ``test_size`` is
    ignored): the same kind of data as :func:`load_mnist`, small enough to train on in a second.
    Loaded once per seed; every call returns fresh copies."""
    if seed not in _SPLITS:
        full = _REAL_LOAD_MNIST(seed=seed)
        images = torch.cat([full.x_train, full.x_test])
        labels = torch.cat([full.y_train, full.y_test])
        _, chosen = cu_data.stratified_split(labels.numpy(), 200, seed)
        train, test = cu_data.stratified_split(labels[chosen].numpy(), 50, seed)
        x, y = images[chosen], labels[chosen]
        _SPLITS[seed] = cu_data.DataSplit(x[train], y[train], x[test], y[test])
    return cu_data.DataSplit(*(tensor.clone() for tensor in _SPLITS[seed]))


def _one_epoch_ensemble(n_members: int = 5, data: Optional[cu_data.DataSplit] = None, **kwargs: Any) -> list:
    """:func:`train_ensemble` with one epoch, no cache and no progress bars. Trained once per
    configuration and data (several pages train the same ensemble); every call returns fresh
    deep copies of the members, so a page cannot change another page's models."""
    data = _small_mnist() if data is None else data
    kwargs.update(epochs=1, cache_dir=None, progress=False)
    digest = hashlib.sha1(data.x_train.numpy().tobytes() + data.y_train.numpy().tobytes()).hexdigest()
    key = (n_members, digest, repr(sorted(kwargs.items())))
    if key not in _ENSEMBLES:
        _ENSEMBLES[key] = _REAL_TRAIN_ENSEMBLE(n_members=n_members, data=data, **kwargs)
    return copy.deepcopy(_ENSEMBLES[key])


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture(scope="module")
def _cheap_entry_points():
    """The cheap entry points and one torch thread while the snippets run; afterwards the
    thread count is restored and a Ray runtime the snippets started is shut down."""
    threads = torch.get_num_threads()
    ray_before = _ray_running()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cu_data, "load_mnist", _small_mnist)
            patch.setattr(cu_data, "train_ensemble", _one_epoch_ensemble)
            patch.setenv("OMP_NUM_THREADS", "1")
            yield
    finally:
        torch.set_num_threads(threads)
        if _ray_running() and not ray_before:
            sys.modules["ray"].shutdown()


_PAGES: Dict[Path, Page] = {}


@pytest.fixture
def page_of(tmp_path_factory, _cheap_entry_points):
    def get(path: Path) -> Page:
        if path not in _PAGES:
            _PAGES[path] = Page(python_blocks(path), tmp_path_factory.mktemp(path.stem))
        return _PAGES[path]

    return get


def _case(block: Block, index: int) -> Any:
    """A parametrized case named after the block; blocks importing Ray get the suite's ``ray``
    mark (a local Ray runtime takes seconds to start)."""
    marks = [pytest.mark.ray] if re.search(r"^\s*import ray\b", block.code, re.M) else []
    return pytest.param(block.path, index, id=block.id, marks=marks)


CASES = [_case(block, index) for path in DOCUMENTS for index, block in enumerate(python_blocks(path))]


@pytest.mark.parametrize("path,index", CASES)
def test_block_runs(path, index, page_of, monkeypatch):
    run_blocks(page_of(path), index, monkeypatch)


def test_no_python_block_escapes():
    """No untyped block that parses as Python, no block in an unknown language, and the run
    covers the README and every page with Python blocks."""
    blocks = [block for path in DOCUMENTS for block in extract_blocks(path)]
    assert unmarked_python(blocks) == []
    run = {block.path.name for block in blocks if block.language in PYTHON}
    assert {"README.md", "index.rst", "text.rst", "works_with.rst", "dataset.rst"} <= run


# ----------------------------------------------------------------------------- the runner can fail
BROKEN = """\
Broken page
===========

.. code-block:: python

   value = 41

Some prose, then a block with an undefined name:

.. code-block:: python

   value += 1
   print(undefined_name)

.. code-block:: python

   raise RuntimeError("boom")

.. code-block:: python

   # needs: network (a download)
   import urllib.request

A doctest whose output is wrong:

.. code-block:: python

   >>> value + 1
   0
"""


def _line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.fixture
def broken(tmp_path):
    path = tmp_path / "broken.rst"
    path.write_text(BROKEN, encoding="utf-8")
    return path


def test_extraction_finds_the_blocks_and_their_lines(broken):
    blocks = python_blocks(broken)
    directives = [number for number, line in enumerate(BROKEN.splitlines(), 1) if line.startswith(".. code-block::")]
    assert len(directives) == 5
    assert [block.line for block in blocks] == directives
    assert [block.first_code_line for block in blocks] == [block.line + 2 for block in blocks]
    assert blocks[1].code == "value += 1\nprint(undefined_name)"
    assert [block.id for block in blocks][:2] == [f"broken.rst:{blocks[0].line}", f"broken.rst:{blocks[1].line}"]


def test_runner_fails_on_an_undefined_name_naming_file_and_line(broken, tmp_path, monkeypatch):
    page = Page(python_blocks(broken), tmp_path)
    run_blocks(page, 0, monkeypatch)
    assert page.namespace["value"] == 41
    block, line = page.blocks[1].line, _line_of(BROKEN, "print(undefined_name)")
    with pytest.raises(SnippetError, match=rf"^broken\.rst:{block} failed at line {line}: NameError: .*undefined_name"):
        run_blocks(page, 1, monkeypatch)
    assert page.namespace["value"] == 42  # the block ran in the page's namespace up to the error
    # a later block of the failed page is not run on a broken namespace
    with pytest.raises(SnippetError, match=rf"^broken\.rst:{page.blocks[2].line}: not run, broken\.rst:{block} "):
        run_blocks(page, 2, monkeypatch)


def test_runner_fails_on_a_raising_block_and_runs_earlier_blocks_first(broken, tmp_path, monkeypatch):
    blocks = python_blocks(broken)
    page = Page([blocks[0], blocks[2]], tmp_path)
    line = _line_of(BROKEN, 'raise RuntimeError("boom")')
    with pytest.raises(SnippetError, match=rf"^broken\.rst:{blocks[2].line} failed at line {line}: RuntimeError: boom"):
        run_blocks(page, 1, monkeypatch)  # block 0 runs first, as a prerequisite
    assert page.namespace["value"] == 41
    assert Path.cwd() == tmp_path  # the blocks run in the page's working directory


def test_network_blocks_are_skipped_and_doctests_checked(broken, tmp_path, monkeypatch):
    blocks = python_blocks(broken)
    page = Page([blocks[0], blocks[3], blocks[4]], tmp_path)
    with pytest.raises(pytest.skip.Exception, match="needs network"):
        run_blocks(page, 1, monkeypatch)
    assert "urllib" not in page.namespace
    with pytest.raises(
        SnippetError, match=rf"^broken\.rst:{blocks[4].line} failed \(doctest\):(.|\n)*Expected:\s+0\s+Got:\s+42"
    ):
        run_blocks(page, 2, monkeypatch)
    passing = Block(broken, 1, 1, "python", ">>> value + 1\n42")
    _run_block(passing, {"value": 41})


def test_guard_flags_untyped_python_and_unknown_languages(tmp_path):
    page = tmp_path / "page.rst"
    page.write_text(
        "Text::\n\n    maps = explain(x)\n\nShell::\n\n    pip install x[y]\n\n"
        ".. code-block:: ipython\n\n   x = 1\n\n.. code-block:: bash\n\n   make demo\n",
        encoding="utf-8",
    )
    assert unmarked_python(extract_blocks(page)) == [
        "page.rst:1: an untyped block that parses as Python; mark it python (or text/bash)",
        "page.rst:9: language 'ipython' is neither run nor known to be shell/text",
    ]
    readme = tmp_path / "README.md"
    readme.write_text("```\nprint(1)\n```\n\n```\nmake demo   # shell\n```\n\n~~~python\nx = 1\n~~~\n")
    blocks = extract_blocks(readme)
    assert [(block.line, block.language, block.code) for block in blocks] == [
        (1, "", "print(1)"),
        (5, "", "make demo   # shell"),
        (9, "python", "x = 1"),
    ]
    assert unmarked_python(blocks) == [
        "README.md:1: an untyped block that parses as Python; mark it python (or text/bash)"
    ]
