"""The documentation's own checks: every docstring example and every example on the
documentation pages (docs/*.rst) runs as a doctest against the installed package, and every
public name has a numpydoc docstring with the sections the API reference shows.

The docstring rules checked here (without needing numpydoc installed): a one-line summary;
for functions, methods and classes that take arguments, a ``Parameters`` section naming
every argument of the signature and nothing else; ``Returns`` for functions that return a
value; ``Raises`` for every public function and class that checks its arguments; and an
``Examples`` section (which the doctests below then run) on every public function and
class. The Sphinx build (docs/, ``-W``) checks the markup itself.
"""
from __future__ import annotations

import dataclasses
import doctest
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

import convcore
import convcore.cs231n

DOCS = Path(__file__).resolve().parent.parent / "docs"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Modules whose docstrings hold no examples to run (command-line entry points).
_SKIP_MODULES = {"convcore.__main__"}
# The integrations need their optional extras: without one, that module's examples are not
# collected (tests/test_torch.py and tests/test_dask.py skip the same way).
_OPTIONAL = {"convcore.torch": "torch", "convcore.dask": "dask"}


# -- collecting the doctests ---------------------------------------------------------------

def _package_doctests() -> List[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests: List[doctest.DocTest] = []
    names = sorted(m.name for m in pkgutil.walk_packages(convcore.__path__, "convcore."))
    for name in ["convcore"] + names:
        if name in _SKIP_MODULES:
            continue
        if name in _OPTIONAL and importlib.util.find_spec(_OPTIONAL[name]) is None:
            continue
        module = importlib.import_module(name)
        tests += finder.find(module, name)
    # Defined in the compiled core, so the module walk above does not find its docstring.
    tests += finder.find(convcore.ShapeError, "convcore.ShapeError", module=False,
                         globs={})
    return sorted((t for t in tests if t.examples), key=lambda t: t.name)


def _page_doctests() -> List[doctest.DocTest]:
    parser = doctest.DocTestParser()
    tests = []
    for page in sorted(DOCS.glob("*.rst")):
        text = page.read_text(encoding="utf-8")
        test = parser.get_doctest(text, {}, f"docs/{page.name}", str(page), 0)
        if test.examples:
            tests.append(test)
    return tests


PACKAGE_TESTS = _package_doctests()
PAGE_TESTS = _page_doctests() if DOCS.is_dir() else []


def _run(test: doctest.DocTest) -> None:
    saved_threads = convcore.get_num_threads()
    saved_print = np.get_printoptions()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out: List[str] = []
    try:
        test.globs = dict(test.globs)   # a fresh namespace each run
        runner.run(test, out=out.append)
    finally:
        convcore.set_num_threads(saved_threads)
        np.set_printoptions(**saved_print)
    failed = runner.summarize(verbose=False).failed
    assert failed == 0, "".join(out)


@pytest.mark.parametrize("test", PACKAGE_TESTS, ids=[t.name for t in PACKAGE_TESTS])
def test_docstring_examples(test: doctest.DocTest) -> None:
    _run(test)


@pytest.mark.skipif(not DOCS.is_dir(), reason="docs/ is not beside tests/ (not a checkout)")
@pytest.mark.parametrize("test", PAGE_TESTS, ids=[t.name for t in PAGE_TESTS])
def test_documentation_pages(test: doctest.DocTest) -> None:
    _run(test)


def test_examples_were_found() -> None:
    # A broken collector must not pass by finding nothing.
    assert len(PACKAGE_TESTS) >= 25
    if DOCS.is_dir():
        assert {t.name for t in PAGE_TESTS} >= {"docs/conv_layer.rst"}


# -- the docstrings' shape -------------------------------------------------------------------

def _public() -> List[Tuple[str, Any]]:
    objs = [(f"convcore.{n}", getattr(convcore, n)) for n in convcore.__all__ if n != "cs231n"]
    objs += [(f"convcore.cs231n.{n}", getattr(convcore.cs231n, n))
             for n in convcore.cs231n.__all__]
    return objs


PUBLIC = _public()

# Public methods of the layer classes (documented in the API reference) and what they need.
_LAYER_METHODS = ["forward", "backward", "zero_grad", "parameters", "named_parameters",
                  "state_dict", "load_state_dict", "weight_changed"]


# Classes the library constructs itself (summary()'s results): nothing to raise.
_NO_CHECKS = {"convcore.LayerSummary", "convcore.Summary"}


def _sections(doc: str) -> Dict[str, List[str]]:
    """numpydoc sections of a docstring: {title: lines}; the text before the first is
    under ''."""
    lines = doc.splitlines()
    out: Dict[str, List[str]] = {"": []}
    title = ""
    i = 0
    while i < len(lines):
        if (i + 1 < len(lines) and lines[i].strip() and
                re.fullmatch(r"-{3,}", lines[i + 1].strip()) and
                len(lines[i + 1].strip()) == len(lines[i].strip())):
            title = lines[i].strip()
            out[title] = []
            i += 2
            continue
        out[title].append(lines[i])
        i += 1
    return out


def _documented_params(lines: List[str]) -> List[str]:
    names: List[str] = []
    for line in lines:
        if line and not line[0].isspace():
            head = line.split(" : ")[0]
            names += [n.strip().lstrip("*") for n in head.split(",") if n.strip()]
    return names


def _signature_params(obj: Any) -> List[str]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = inspect.signature(target).parameters.values()
    return [p.name for p in params if p.name not in ("self", "cls")
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _check(name: str, obj: Any, need_examples: bool) -> List[str]:
    doc = inspect.getdoc(obj)
    if not doc:
        return [f"{name}: no docstring"]
    problems = []
    sec = _sections(doc)
    intro = [ln for ln in sec[""]]
    if not intro or not intro[0].strip() or (len(intro) > 1 and intro[1].strip()):
        problems.append(f"{name}: the summary is not one line followed by a blank line")
    is_class = inspect.isclass(obj)
    is_exception = is_class and issubclass(obj, BaseException)
    takes_args = not is_exception and (is_class and "__init__" in vars(obj)
                                       or not is_class) and _signature_params(obj)
    if takes_args and dataclasses.is_dataclass(obj):
        # A record made by the library (LayerSummary): its fields are its Attributes.
        documented = _documented_params(sec.get("Attributes", []))
        missing = [p for p in _signature_params(obj) if p not in documented]
        if missing:
            problems.append(f"{name}: Attributes does not describe {missing}")
    elif takes_args:
        if "Parameters" not in sec:
            problems.append(f"{name}: no Parameters section")
        else:
            documented = _documented_params(sec["Parameters"])
            wanted = _signature_params(obj)
            missing = [p for p in wanted if p not in documented]
            extra = [p for p in documented if p not in wanted]
            if missing:
                problems.append(f"{name}: Parameters does not describe {missing}")
            if extra:
                problems.append(f"{name}: Parameters describes {extra}, not in the signature")
    if not is_class:
        ret = inspect.signature(obj).return_annotation
        if ret not in (None, "None", inspect.Signature.empty) and "Returns" not in sec:
            problems.append(f"{name}: no Returns section")
    if need_examples:
        if "Examples" not in sec or ">>>" not in "\n".join(sec["Examples"]):
            problems.append(f"{name}: no Examples section with a doctest")
        if takes_args and "Raises" not in sec and name not in _NO_CHECKS:
            problems.append(f"{name}: no Raises section")
    return problems


def test_public_docstrings_are_numpydoc() -> None:
    problems: List[str] = []
    for name, obj in PUBLIC:
        problems += _check(name, obj, need_examples=True)
    for cls in (convcore.Conv2d, convcore.LocallyConnected2d):
        for m in _LAYER_METHODS + ["output_shape"]:
            if hasattr(cls, m):
                problems += _check(f"convcore.{cls.__name__}.{m}", getattr(cls, m),
                                   need_examples=False)
    assert not problems, "\n".join(problems)


def test_api_page_lists_every_public_name() -> None:
    if not DOCS.is_dir():
        pytest.skip("docs/ is not beside tests/ (not a checkout)")
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\.\. auto(?:function|class|exception|module):: (\S+)", text,
                            re.M))
    missing = [name for name, _ in PUBLIC if name not in listed]
    assert not missing, f"docs/api.rst does not document {missing}"


def test_doctests_run_against_the_installed_package() -> None:
    # What the doctests above imported is the package pip installed, not python/ here.
    src = (Path(__file__).resolve().parent.parent / "python" / "convcore").resolve()
    here = Path(convcore.__file__).resolve().parent
    assert here != src, f"convcore was imported from the source tree {src}"
    assert os.path.exists(convcore._core.__file__)
