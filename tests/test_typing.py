"""Static typing: mypy --strict rejects misspelt layouts, padding strings, activations and
shape rules, non-int strides and mixed dtypes (tests/typecheck/bad_calls.py), and accepts
the typed example (examples/python/typed_example.py) against the *installed* package (so
its py.typed marker and the stub of the compiled core are what mypy reads). Skipped when
mypy is not installed (CI installs it)."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD = os.path.join("tests", "typecheck", "bad_calls.py")
EXAMPLE = os.path.join("examples", "python", "typed_example.py")

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed")


def _mypy(path):
    # From the repo root (its pyproject.toml holds the mypy settings); convcore resolves to
    # the installed package: python/ is not on mypy's search path.
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
                           "--show-error-codes", path], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    errors = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"(.+?):(\d+): error: (.*)", line)
        if m:
            errors.setdefault(int(m.group(2)), []).append(m.group(3))
    return proc, errors


def test_mypy_rejects_bad_calls():
    proc, errors = _mypy(BAD)
    assert not any("py.typed" in e or "import-" in e for es in errors.values() for e in es), \
        proc.stdout
    with open(os.path.join(ROOT, BAD), encoding="utf-8") as f:
        lines = f.read().splitlines()
    expected = {}
    for no, text in enumerate(lines, 1):
        if "# E: " in text:
            expected[no] = text.split("# E: ", 1)[1].strip()
    assert len(expected) >= 15
    missing = [(no, lines[no - 1].strip(), frag) for no, frag in expected.items()
               if not any(frag in e for e in errors.get(no, []))]
    assert not missing, f"mypy accepted (or gave another error for) these lines:\n" \
        + "\n".join(f"  {no}: {src}  (expected an error containing {frag})"
                    for no, src, frag in missing) + "\nmypy said:\n" + proc.stdout
    unexpected = {no: es for no, es in errors.items() if no not in expected}
    assert not unexpected, f"errors on lines that should type-check:\n{proc.stdout}"


def test_mypy_accepts_typed_example():
    proc, errors = _mypy(EXAMPLE)
    assert proc.returncode == 0 and not errors, proc.stdout + proc.stderr
