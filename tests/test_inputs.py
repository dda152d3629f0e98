"""Input forms: unbatched images, memory layouts (non-contiguous, Fortran, misaligned),
out=, non-finite values, empty batches, both dtypes."""
from __future__ import annotations

import numpy as np
import pytest

import convcore
import reference as ref

DTYPES = [np.float32, np.float64]
LAYOUTS = ["NCHW", "NHWC"]


def shapes(layout, n=2, c=3, h=9, w=8, k=5, r=3, s=2):
    x = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    wt = (k, c, r, s) if layout == "NCHW" else (k, r, s, c)
    return x, wt


def misaligned_copy(a: np.ndarray) -> np.ndarray:
    """A writable copy of `a` whose data pointer is off by one byte (not aligned)."""
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    m = buf[1:].view(a.dtype).reshape(a.shape)
    m[...] = a
    assert not m.flags.aligned
    return m


def frombuffer_misaligned(a: np.ndarray) -> np.ndarray:
    """A read-only misaligned array made with np.frombuffer at byte offset 1."""
    raw = b"\0" + a.tobytes()
    m = np.frombuffer(raw, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    assert not m.flags.aligned and not m.flags.writeable
    return m


# --- unbatched ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_unbatched_input_gives_unbatched_output(dtype, layout, rng):
    xs, ws = shapes(layout, n=1)
    x = rng.standard_normal(xs[1:]).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y = convcore.conv2d(x, w, b, padding=1, layout=layout)
    assert y.ndim == 3
    batched = convcore.conv2d(x[None], w, b, padding=1, layout=layout)
    np.testing.assert_array_equal(y, batched[0])
    ref.assert_close(y, ref.conv2d(x, w, b, padding=1, layout=layout), dtype)
    assert convcore.conv2d_output_shape(x.shape, w.shape, padding=1, layout=layout) == y.shape
    dy = rng.standard_normal(y.shape).astype(dtype)
    grads = convcore.conv2d_backward(dy, x, w, padding=1, layout=layout)
    assert grads.input.shape == x.shape
    ref.assert_close(grads.input, ref.conv2d_backward_input(dy, w, x.shape, padding=1, layout=layout), dtype)
    ref.assert_close(grads.weight, ref.conv2d_backward_weight(dy, x, w.shape, padding=1, layout=layout), dtype)
    dx = convcore.conv2d_backward_input(dy, w, x.shape, padding=1, layout=layout)
    assert dx.shape == x.shape
    dw = convcore.conv2d_backward_weight(dy, x, w.shape, padding=1, layout=layout)
    np.testing.assert_array_equal(dw, grads.weight)


# --- memory layouts -------------------------------------------------------------------------

def _variants(a: np.ndarray, rng):
    """Same values, different memory: sliced, transposed view, Fortran, misaligned."""
    big = np.zeros(tuple(2 * d for d in a.shape), dtype=a.dtype)
    big[tuple(slice(None, None, 2) for _ in a.shape)] = a
    sliced = big[tuple(slice(None, None, 2) for _ in a.shape)]
    perm = rng.permutation(a.ndim)
    transposed = np.ascontiguousarray(a.transpose(perm)).transpose(np.argsort(perm))
    fortran = np.asfortranarray(a)
    rev = np.ascontiguousarray(a[..., ::-1])[..., ::-1]  # negative strides
    out = {"sliced": sliced, "transposed": transposed, "fortran": fortran, "negative": rev,
           "misaligned": misaligned_copy(a), "frombuffer": frombuffer_misaligned(a)}
    for name, v in out.items():
        np.testing.assert_array_equal(v, a, err_msg=name)
    assert not sliced.flags.c_contiguous
    assert a.ndim == 1 or not fortran.flags.c_contiguous
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_inputs_give_the_same_result(dtype, layout, rng):
    xs, ws = shapes(layout)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    kw = dict(stride=(2, 1), padding=(1, 1, 1, 0), layout=layout)
    y = convcore.conv2d(x, w, b, **kw)
    dy = rng.standard_normal(y.shape).astype(dtype)
    grads = convcore.conv2d_backward(dy, x, w, **kw)
    x_before = x.copy()
    for name, xv in _variants(x, rng).items():
        np.testing.assert_array_equal(convcore.conv2d(xv, w, b, **kw), y, err_msg=name)
        g = convcore.conv2d_backward(dy, xv, w, **kw)
        np.testing.assert_array_equal(g.weight, grads.weight, err_msg=name)
        np.testing.assert_array_equal(convcore.conv2d_backward_weight(dy, xv, w.shape, **kw),
                                      grads.weight, err_msg=name)
    for name, wv in _variants(w, rng).items():
        np.testing.assert_array_equal(convcore.conv2d(x, wv, b, **kw), y, err_msg=name)
        np.testing.assert_array_equal(convcore.conv2d_backward_input(dy, wv, x.shape, **kw),
                                      grads.input, err_msg=name)
    for name, bv in _variants(b, rng).items():
        np.testing.assert_array_equal(convcore.conv2d(x, w, bv, **kw), y, err_msg=name)
    for name, dyv in _variants(dy, rng).items():
        g = convcore.conv2d_backward(dyv, x, w, **kw)
        np.testing.assert_array_equal(g.input, grads.input, err_msg=name)
        np.testing.assert_array_equal(g.weight, grads.weight, err_msg=name)
        np.testing.assert_array_equal(g.bias, grads.bias, err_msg=name)
        np.testing.assert_array_equal(convcore.conv2d_backward_input(dyv, w, x.shape, **kw),
                                      grads.input, err_msg=name)
    np.testing.assert_array_equal(x, x_before)  # inputs are never written
    ref.assert_close(y, ref.conv2d(x, w, b, **kw), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_transposed_views(layout, rng):
    """An NCHW tensor viewed as NHWC (and vice versa) via transpose is a valid input."""
    x_nchw = rng.standard_normal((2, 3, 7, 6))
    w_nchw = rng.standard_normal((4, 3, 3, 3))
    y_nchw = convcore.conv2d(x_nchw, w_nchw, padding=1)
    y_nhwc = convcore.conv2d(x_nchw.transpose(0, 2, 3, 1), w_nchw.transpose(0, 2, 3, 1),
                             padding=1, layout="NHWC")
    ref.assert_close(y_nhwc, y_nchw.transpose(0, 2, 3, 1))


# --- out= -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", [None, "relu"])
def test_out_is_written_and_returned(dtype, layout, act, rng):
    xs, ws = shapes(layout)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    expected = convcore.conv2d(x, w, b, layout=layout, activation=act)
    # `out` lives inside a bigger buffer full of NaN: the result must not depend on its
    # previous contents and nothing outside it may be written.
    guard = 37
    buf = np.full(expected.size + 2 * guard, np.nan, dtype=dtype)
    out = buf[guard:guard + expected.size].reshape(expected.shape)
    assert out.flags.c_contiguous and out.flags.writeable
    got = convcore.conv2d(x, w, b, layout=layout, activation=act, out=out)
    assert got is out
    np.testing.assert_array_equal(out, expected)
    assert np.isnan(buf[:guard]).all() and np.isnan(buf[-guard:]).all()
    ref.assert_close(out, ref.conv2d(x, w, b, layout=layout, activation=act), dtype)


def test_out_unbatched(rng):
    x = rng.standard_normal((3, 6, 6))
    w = rng.standard_normal((2, 3, 3, 3))
    out = np.empty((2, 4, 4))
    assert convcore.conv2d(x, w, out=out) is out
    ref.assert_close(out, ref.conv2d(x, w))


# --- NaN / Inf ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_input_propagates_to_the_outputs_that_touch_it(isa, dtype, layout, value, rng):
    groups = 2
    xs, ws = shapes(layout, n=2, c=4, h=11, w=10, k=6, r=3, s=3)
    ws = (ws[0], ws[1] // groups, ws[2], ws[3]) if layout == "NCHW" else ws[:3] + (ws[3] // groups,)
    kw = dict(stride=2, padding=1, groups=groups, layout=layout, shape_rule="crop")
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.uniform(0.5, 1.5, ws).astype(dtype)   # strictly positive: no cancellation
    b = rng.standard_normal(ws[0]).astype(dtype)
    # one bad pixel in channel 3 (group 1) of image 1, at row 4 / column 0 (next to padding)
    idx = (1, 3, 4, 0) if layout == "NCHW" else (1, 4, 0, 3)
    x_bad = x.copy()
    x_bad[idx] = value
    y = convcore.conv2d(x_bad, w, b, **kw)
    # the outputs whose window reads that pixel: where a one-hot input reaches (reference)
    onehot = np.zeros(xs)
    onehot[idx] = 1.0
    touched = ref.conv2d(onehot, np.abs(w), **kw) != 0
    assert touched.any() and not touched.all()
    if np.isnan(value):
        assert np.isnan(y[touched]).all()
    else:
        assert np.all(y[touched] == value)
    assert np.isfinite(y[~touched]).all()
    clean = ref.conv2d(np.where(np.isfinite(x_bad), x_bad, 0), w, b, **kw)
    ref.assert_close(y[~touched], clean[~touched], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_grad_output_propagates(isa, dtype, rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    w = rng.uniform(0.5, 1.5, (4, 3, 3, 3)).astype(dtype)
    dy = rng.standard_normal((2, 4, 6, 6)).astype(dtype)
    dy[0, 2, 3, 3] = np.nan
    g = convcore.conv2d_backward(dy, x, w)
    # dx: image 0, every channel, rows/columns 3..5
    mask = np.zeros(x.shape, bool)
    mask[0, :, 3:6, 3:6] = True
    assert np.isnan(g.input[mask]).all() and np.isfinite(g.input[~mask]).all()
    # dw: filter 2 only; db: entry 2 only
    assert np.isnan(g.weight[2]).all() and np.isfinite(np.delete(g.weight, 2, axis=0)).all()
    assert np.isnan(g.bias[2]) and np.isfinite(np.delete(g.bias, 2)).all()


# --- empty batch --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_size_batch(isa, dtype, layout, rng):
    xs, ws = shapes(layout, n=0)
    x = np.empty(xs, dtype=dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    kw = dict(padding=1, layout=layout)
    expected_shape = ref.output_shape(xs, ws, **kw)
    assert expected_shape[0] == 0
    y = convcore.conv2d(x, w, b, activation="relu", **kw)
    assert y.shape == expected_shape and y.dtype == dtype
    assert convcore.conv2d_output_shape(xs, ws, **kw) == expected_shape
    dy = np.empty(expected_shape, dtype=dtype)
    g = convcore.conv2d_backward(dy, x, w, **kw)
    assert g.input.shape == xs and g.input.dtype == dtype
    # no images: the weight and bias gradients are exactly zero
    assert g.weight.shape == ws and g.weight.dtype == dtype
    np.testing.assert_array_equal(g.weight, np.zeros(ws))
    assert g.bias.shape == (ws[0],)
    np.testing.assert_array_equal(g.bias, np.zeros(ws[0]))
    assert convcore.conv2d_backward_input(dy, w, xs, **kw).shape == xs
    np.testing.assert_array_equal(convcore.conv2d_backward_weight(dy, x, ws, **kw), np.zeros(ws))


# --- dtypes -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_result_dtype_follows_input(dtype, rng):
    x = rng.standard_normal((1, 2, 5, 5)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    y = convcore.conv2d(x, w)
    assert y.dtype == dtype
    g = convcore.conv2d_backward(convcore.conv2d(x, w), x, w)
    assert g.input.dtype == g.weight.dtype == g.bias.dtype == dtype


def test_float32_uses_float32_arithmetic_precision(rng):
    """The float32 result is close to the float64 one at float32 accuracy, not bitwise
    (inputs exactly representable in both)."""
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    y32 = convcore.conv2d(x, w)
    y64 = convcore.conv2d(x.astype(np.float64), w.astype(np.float64))
    ref.assert_close(y32, y64, np.float32)
    ref.assert_close(y64, ref.conv2d(x, w), np.float64)
