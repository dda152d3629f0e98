"""float32/float64 arrays whose dtype object is not NumPy's canonical one are still float32
/float64: dtypes are compared by value (kind, size, native byte order) everywhere — in the
Python argument checks and in the core module.

Non-canonical dtypes come from pickle (every protocol, including protocol 5 with
out-of-band buffers: so everything a spawn-mode multiprocessing pool or a Dask worker
returns), from dtypes with metadata, and from an explicit native byte order.
"""
from __future__ import annotations

import multiprocessing as mp
import pickle
import sys

import numpy as np
import pytest

import convcore
import reference as ref

NATIVE = "<" if sys.byteorder == "little" else ">"
FOREIGN = ">" if sys.byteorder == "little" else "<"


def _pickled(a, protocol):
    return pickle.loads(pickle.dumps(a, protocol=protocol))


def _pickled_out_of_band(a):
    buffers = []
    data = pickle.dumps(a, protocol=5, buffer_callback=buffers.append)
    return pickle.loads(data, buffers=buffers)


def _view(dt):
    return lambda a: a.view(dt(a.dtype))


VARIANTS = {
    **{f"pickle protocol {p}": (lambda p: lambda a: _pickled(a, p))(p)
       for p in range(2, pickle.HIGHEST_PROTOCOL + 1)},
    "pickle protocol 5 out-of-band": _pickled_out_of_band,
    "metadata": _view(lambda d: np.dtype(d.type, metadata={"unit": "volt"})),
    "explicit native order": _view(lambda d: d.newbyteorder(NATIVE)),
    "'=' order": _view(lambda d: d.newbyteorder("=")),
    "string '<f4'/'<f8'": _view(lambda d: np.dtype(f"{NATIVE}f{d.itemsize}")),
    "string '=f4'/'=f8'": _view(lambda d: np.dtype(f"=f{d.itemsize}")),
}


def test_variants_really_are_not_the_canonical_object():
    a = np.ones(3, np.float32)
    odd = [name for name, f in VARIANTS.items() if f(a).dtype is not np.dtype(np.float32)]
    # the pickle, metadata and explicit-order variants are new dtype objects
    assert len(odd) >= len(VARIANTS) - 2, odd
    for f in VARIANTS.values():
        assert f(a).dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_entry_point_accepts_non_canonical_dtypes(dtype, variant):
    f = VARIANTS[variant]
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    dy = rng.standard_normal(convcore.conv2d_output_shape(x.shape, w.shape)).astype(dtype)
    xv, wv, bv, dyv = f(x), f(w), f(b), f(dy)

    y = convcore.conv2d(xv, wv, bv, activation="relu")
    assert np.array_equal(y, convcore.conv2d(x, w, b, activation="relu"))
    ref.assert_close(y, ref.conv2d(x, w, b, activation="relu"), dtype)
    out = f(np.empty_like(y))
    assert convcore.conv2d(xv, wv, bv, out=out) is out
    assert np.array_equal(out, convcore.conv2d(x, w, b))

    assert np.array_equal(convcore.conv2d_backward_input(dyv, wv, x.shape),
                          convcore.conv2d_backward_input(dy, w, x.shape))
    assert np.array_equal(convcore.conv2d_backward_weight(dyv, xv, w.shape),
                          convcore.conv2d_backward_weight(dy, x, w.shape))
    g, g0 = convcore.conv2d_backward(dyv, xv, wv), convcore.conv2d_backward(dy, x, w)
    for got, want in zip(g, g0):
        assert np.array_equal(got, want)

    a2 = rng.standard_normal((5, 7)).astype(dtype)
    assert np.array_equal(convcore.gemm(f(a2), f(a2.T.copy())), convcore.gemm(a2, a2.T.copy()))
    gout = f(np.empty((5, 5), dtype))
    assert convcore.gemm(f(a2), f(a2.T.copy()), out=gout) is gout

    layer = convcore.Conv2d(3, 4, (3, 2), dtype=f(np.empty(0, dtype)).dtype, rng=0)
    plain = convcore.Conv2d(3, 4, (3, 2), dtype=dtype, rng=0)
    assert np.array_equal(layer(xv), plain(x))
    assert np.array_equal(layer.backward(dyv), plain.backward(dy))
    layer.weight = f(plain.weight.copy())
    assert np.array_equal(layer(xv), plain(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_foreign_byte_order_is_refused_with_a_clear_message(dtype):
    x = np.ones((1, 1, 3, 3), np.dtype(dtype).newbyteorder(FOREIGN))
    w = np.ones((1, 1, 2, 2), dtype)
    with pytest.raises(TypeError, match=r"x must have dtype float32 or float64"):
        convcore.conv2d(x, w)


def test_spawn_pool_results_are_accepted():
    """Arrays returned by a spawn-mode pool (pickled on the way back) go straight into
    every entry point."""
    ctx = mp.get_context("spawn")
    jobs = [((2, 3, 6, 6), 0.5, np.float32), ((4, 3, 3, 3), 0.25, np.float32),
            ((2, 4, 4, 4), 1.0, np.float32)]
    with ctx.Pool(1) as pool:
        x, w, dy = pool.starmap_async(np.full, jobs).get(timeout=120)
    assert x.dtype == np.float32 and x.dtype is not np.dtype(np.float32)
    y = convcore.conv2d(x, w)
    assert np.array_equal(y, np.full((2, 4, 4, 4), 0.5 * 0.25 * 27, np.float32))
    g = convcore.conv2d_backward(dy, x, w)
    assert np.array_equal(g.weight, np.full((4, 3, 3, 3), 0.5 * 2 * 16, np.float32))
