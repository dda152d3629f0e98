"""The functional calls' primitive cache: a repeated problem reuses its primitive, and the
cache never lets an argument skip its validation or run on a stale ISA."""
import numpy as np
import pytest

import convcore
from convcore import _conv, _core
from reference import conv2d as conv2d_ref


def _arrays(rng, dtype=np.float32):
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    return x, w


def test_repeated_problem_reuses_its_primitive():
    rng = np.random.default_rng(0)
    x, w = _arrays(rng)
    _conv._CACHE.clear()
    convcore.conv2d(x, w, padding=1)
    convcore.conv2d(x, w, padding=1)
    assert len(_conv._CACHE) == 1
    convcore.conv2d(x, w, padding=(1, 1))   # another spelling: its own entry
    assert len(_conv._CACHE) == 2


@pytest.mark.parametrize("bad", [1.0, True, np.float64(1.0)])
def test_cached_problem_does_not_skip_validation(bad):
    rng = np.random.default_rng(1)
    x, w = _arrays(rng)
    convcore.conv2d(x, w, stride=1)         # stride=1 cached
    with pytest.raises(TypeError, match="stride"):
        convcore.conv2d(x, w, stride=bad)


def test_results_follow_the_arrays_not_the_cache():
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        for _ in range(3):                  # same problem, fresh data each time
            x, w = _arrays(rng, dtype)
            y = convcore.conv2d(x, w, padding=1)
            ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64), padding=1)
            np.testing.assert_allclose(y, ref, rtol=1e-4 if dtype == np.float32 else 1e-12,
                                       atol=1e-4 if dtype == np.float32 else 1e-12)


def test_isa_change_makes_a_new_primitive():
    isas = _core.available_isas()
    if len(isas) < 2:
        pytest.skip("one ISA on this machine")
    rng = np.random.default_rng(3)
    x, w = _arrays(rng)
    saved = _core.get_isa()
    _conv._CACHE.clear()
    try:
        for isa in isas:
            _core.set_isa(isa)
            convcore.conv2d(x, w)
            assert _conv._problem(x.shape, w.shape, 1, 0, 1, 1, "NCHW", "strict").plan.isa == isa
    finally:
        _core.set_isa(saved)
    assert len(_conv._CACHE) == len(isas)


def test_cache_is_bounded():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((2, 1, 1, 1)).astype(np.float32)
    for h in range(1, _conv._CACHE_SIZE + 20):
        convcore.conv2d(np.ones((1, 1, h, 1), np.float32), w)
    assert len(_conv._CACHE) <= _conv._CACHE_SIZE
