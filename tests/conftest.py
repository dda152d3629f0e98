"""Shared fixtures for the convcore test suite.

The tests import the *installed* convcore (the package under python/ has no compiled _core
and is not on sys.path from the repository root).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import convcore
from convcore import _core

sys.path.insert(0, os.path.dirname(__file__))  # `import reference` from any test file


def pytest_configure(config):
    # Hypothesis' failure report can touch a deprecated mypy_extensions API on some
    # installations; with filterwarnings=error that would hide the real failure behind an
    # INTERNALERROR.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")


# --- hypothesis ---------------------------------------------------------------------------
# A modest number of examples keeps the whole suite well under a minute on two cores;
# CONVCORE_HYPOTHESIS_EXAMPLES raises (or lowers) it for a deeper run.
_EXAMPLES = int(os.environ.get("CONVCORE_HYPOTHESIS_EXAMPLES", "200"))
settings.register_profile(
    "convcore",
    deadline=None,
    max_examples=_EXAMPLES,
    derandomize=False,
    print_blob=True,
    # The isa/threads fixtures set process-wide state once per test; every example of a
    # test runs under the same setting, which is what we want.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("CONVCORE_HYPOTHESIS_PROFILE", "convcore"))


def pytest_report_header(config):
    cfg = convcore.show_config()
    return [f"convcore {cfg['version']} from {convcore.__file__}",
            f"isa={cfg['isa']} available={_core.available_isas()} threads={cfg['threads']} "
            f"hypothesis max_examples={_EXAMPLES}"]


# --- fixtures -----------------------------------------------------------------------------
ISAS = list(_core.available_isas())


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per instruction-set path this CPU has; restores the original."""
    original = _core.get_isa()
    _core.set_isa(request.param)
    assert _core.get_isa() == request.param
    try:
        yield request.param
    finally:
        _core.set_isa(original)


@pytest.fixture
def restore_threads():
    """Restores convcore's thread count after a test that changes it."""
    original = convcore.get_num_threads()
    try:
        yield original
    finally:
        convcore.set_num_threads(original)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)

