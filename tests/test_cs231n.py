"""convcore.cs231n: the CS231n assignment's conv API, checked against float64 direct loops
(tests/reference.py and the assignment-style loop below), central finite differences
(as the assignment's eval_numerical_gradient_array), adjoint identities, bad inputs, and
PyTorch where installed."""
from __future__ import annotations

import numpy as np
import pytest

import convcore
import reference as ref
from convcore.cs231n import (conv_backward_fast, conv_backward_naive, conv_forward_fast,
                             conv_forward_naive, conv_relu_backward, conv_relu_forward)

FORWARDS = [conv_forward_naive, conv_forward_fast]
BACKWARDS = [conv_backward_naive, conv_backward_fast]


def loop_conv(x, w, b, stride, pad):
    """The assignment's naive layer written as loops over images, filters and output
    positions (float64; output size 1 + (H + 2*pad - HH) // stride)."""
    n, c, h, wd = x.shape
    f, _, hh, ww = w.shape
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = 1 + (h + 2 * pad - hh) // stride
    wo = 1 + (wd + 2 * pad - ww) // stride
    out = np.zeros((n, f, ho, wo))
    for i in range(n):
        for k in range(f):
            for r in range(ho):
                for s in range(wo):
                    window = xp[i, :, r * stride:r * stride + hh, s * stride:s * stride + ww]
                    out[i, k, r, s] = np.sum(window * w[k]) + b[k]
    return out


def numerical_gradient_array(f, x, df, h=1e-5):
    """Central differences of sum(f(x) * df) w.r.t. every element of x (the assignment's
    eval_numerical_gradient_array, written here)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        idx = it.multi_index
        old = x[idx]
        x[idx] = old + h
        pos = f(x).copy()
        x[idx] = old - h
        neg = f(x).copy()
        x[idx] = old
        grad[idx] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def rel_error(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def operands(rng, x_shape, w_shape, dtype=np.float64):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w, b


# (x shape, w shape, stride, pad): divisible and non-divisible sizes, rectangular kernels
CASES = [
    ((2, 3, 4, 4), (3, 3, 4, 4), 2, 1),
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, 1),
    ((1, 2, 9, 8), (5, 2, 3, 2), 2, 0),
    ((3, 1, 8, 8), (2, 1, 3, 3), 3, 2),     # (8 + 4 - 3) = 9: divisible by 3
    ((2, 3, 10, 10), (4, 3, 3, 3), 2, 0),   # (10 - 3)/2 + 1 = 4.5: floored to 4
    ((1, 4, 11, 6), (3, 4, 5, 3), 3, 1),    # both axes non-divisible
]


@pytest.mark.parametrize("forward", FORWARDS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_loops(forward, case, rng):
    xs, ws, stride, pad = case
    x, w, b = operands(rng, xs, ws)
    out, _ = forward(x, w, b, {"stride": stride, "pad": pad})
    expected = loop_conv(x, w, b, stride, pad)
    assert out.shape == expected.shape
    assert out.shape[2] == 1 + (xs[2] + 2 * pad - ws[2]) // stride
    assert out.dtype == np.float64
    ref.check_forward(out, x, w, b, stride=stride, padding=pad, shape_rule="crop")
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_backward_matches_reference(dtype, case, rng):
    xs, ws, stride, pad = case
    x, w, b = operands(rng, xs, ws, dtype)
    out, cache = conv_forward_fast(x, w, b, {"stride": stride, "pad": pad})
    assert out.dtype == dtype
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = conv_backward_fast(dout, cache)
    assert (dx.shape, dw.shape, db.shape) == (x.shape, w.shape, b.shape)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    kw = dict(stride=stride, padding=pad, shape_rule="crop")
    ref.check_forward(out, x, w, b, **kw)
    ref.check_backward_input(dx, dout, w, x.shape, **kw)
    ref.check_backward_weight(dw, dout, x, w.shape, **kw)
    ref.check_backward_bias(db, dout)


def test_naive_and_fast_are_the_same_path_and_share_caches(rng):
    x, w, b = operands(rng, (2, 3, 8, 8), (4, 3, 3, 3))
    p = {"stride": 2, "pad": 1}
    out_n, cache_n = conv_forward_naive(x, w, b, p)
    out_f, cache_f = conv_forward_fast(x, w, b, p)
    np.testing.assert_array_equal(out_n, out_f)
    dout = rng.standard_normal(out_n.shape)
    for cache in (cache_n, cache_f):
        grads = [conv_backward_naive(dout, cache), conv_backward_fast(dout, cache)]
        for a, b_ in zip(*grads):
            np.testing.assert_array_equal(a, b_)
    # the cache keeps the assignment's (x, w, b, conv_param) in front
    cx, cw, cb, cp = cache_n[:4]
    assert cx is x and cw is w and cb is b and cp is p


@pytest.mark.parametrize("stride,pad,size", [(1, 1, 5), (2, 1, 5), (2, 0, 6), (3, 2, 6)])
def test_numerical_gradients(stride, pad, size, rng):
    """The assignment's gradient check: central differences in float64, element by element."""
    x, w, b = operands(rng, (2, 3, size, size), (3, 3, 3, 3))
    p = {"stride": stride, "pad": pad}
    out, cache = conv_forward_naive(x, w, b, p)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv_backward_naive(dout, cache)
    dx_num = numerical_gradient_array(lambda v: conv_forward_naive(v, w, b, p)[0], x, dout)
    dw_num = numerical_gradient_array(lambda v: conv_forward_naive(x, v, b, p)[0], w, dout)
    db_num = numerical_gradient_array(lambda v: conv_forward_naive(x, w, v, p)[0], b, dout)
    # The loss is affine in each argument: central differences are exact up to rounding.
    assert rel_error(dx, dx_num) < 1e-7
    assert rel_error(dw, dw_num) < 1e-7
    assert rel_error(db, db_num) < 1e-7


def test_relu_numerical_gradients(rng):
    x, w, b = operands(rng, (2, 3, 6, 6), (4, 3, 3, 3))
    p = {"stride": 1, "pad": 1}
    out, cache = conv_relu_forward(x, w, b, p)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv_relu_backward(dout, cache)
    h = 1e-6
    # One element moved by h moves a pre-activation by at most h·max(|x|, |w|, 1): no
    # difference may cross the ReLU's kink.
    pre = conv_forward_fast(x, w, b, p)[0]
    assert np.min(np.abs(pre)) > 10 * h * max(np.abs(x).max(), np.abs(w).max(), 1.0)
    dx_num = numerical_gradient_array(lambda v: conv_relu_forward(v, w, b, p)[0], x, dout, h)
    dw_num = numerical_gradient_array(lambda v: conv_relu_forward(x, v, b, p)[0], w, dout, h)
    db_num = numerical_gradient_array(lambda v: conv_relu_forward(x, w, v, p)[0], b, dout, h)
    assert rel_error(dx, dx_num) < 1e-6
    assert rel_error(dw, dw_num) < 1e-6
    assert rel_error(db, db_num) < 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_relu_matches_reference(dtype, rng):
    x, w, b = operands(rng, (2, 3, 9, 9), (5, 3, 3, 3), dtype)
    p = {"stride": 2, "pad": 1}
    out, cache = conv_relu_forward(x, w, b, p)
    assert isinstance(cache, tuple) and len(cache) == 2   # (conv_cache, relu_cache)
    ref.check_forward(out, x, w, b, activation="relu", stride=2, padding=1)
    assert (out >= 0).all()
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = conv_relu_backward(dout, cache)
    pre = ref.conv2d(x, w, b, stride=2, padding=1)
    da = np.where(pre > 0, dout.astype(np.float64), 0.0)
    ref.check_backward_input(dx, da, w, x.shape, stride=2, padding=1)
    ref.check_backward_weight(dw, da, x, w.shape, stride=2, padding=1)
    ref.check_backward_bias(db, da)
    # composed by hand from the plain conv, as the assignment's layer_utils does
    out2, conv_cache = conv_forward_fast(x, w, b, p)
    np.testing.assert_allclose(out, np.maximum(out2, 0), rtol=1e-6 if dtype == np.float32 else 0)


def test_adjoint_identities(rng):
    """<conv(x; w), g> == <x, dx> == <w, dw> (bias-free) and sum(g) == db."""
    x, w, _ = operands(rng, (3, 4, 9, 7), (5, 4, 3, 2))
    p = {"stride": 2, "pad": 1}
    out, cache = conv_forward_fast(x, w, np.zeros(5), p)
    g = rng.standard_normal(out.shape)
    dx, dw, db = conv_backward_fast(g, cache)
    lhs = float(np.vdot(out, g))
    assert np.isclose(lhs, float(np.vdot(x, dx)), rtol=1e-12)
    assert np.isclose(lhs, float(np.vdot(w, dw)), rtol=1e-12)
    np.testing.assert_allclose(db, g.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_bias_none_gives_no_bias_gradient(rng):
    x, w, _ = operands(rng, (1, 2, 5, 5), (3, 2, 3, 3))
    out, cache = conv_forward_fast(x, w, None, {"stride": 1, "pad": 0})
    dx, dw, db = conv_backward_fast(np.ones_like(out), cache)
    assert db is None and dx.shape == x.shape and dw.shape == w.shape


# --- sizes that do not divide --------------------------------------------------------------

def test_non_divisible_default_floors_and_strict_raises(rng):
    x, w, b = operands(rng, (1, 3, 224, 224), (2, 3, 11, 11))
    out, cache = conv_forward_fast(x, w, b, {"stride": 4, "pad": 0})
    assert out.shape == (1, 2, 54, 54)          # 1 + (224 - 11) // 4
    dx, _, _ = conv_backward_fast(np.ones_like(out), cache)
    assert not dx[:, :, -1, :].any() and not dx[:, :, :, -1].any()   # the dropped column
    with pytest.raises(convcore.ShapeError, match="54.25"):
        conv_forward_fast(x, w, b, {"stride": 4, "pad": 0, "shape_rule": "strict"})
    out, _ = conv_forward_naive(x, w, b, {"stride": 4, "pad": 0, "shape_rule": "pad"})
    assert out.shape == (1, 2, 55, 55)


# --- dtypes ----------------------------------------------------------------------------------

def test_dtype_promotion(rng):
    x, w, b = operands(rng, (1, 2, 5, 5), (3, 2, 3, 3))
    out, _ = conv_forward_fast(x, w.astype(np.float32), b.astype(np.float32),
                               {"stride": 1, "pad": 1})
    assert out.dtype == np.float64
    ref.check_forward(out, x, w.astype(np.float32), b.astype(np.float32), padding=1)
    xi = rng.integers(-3, 4, size=(1, 2, 5, 5))
    out, cache = conv_forward_fast(xi, w, b, {"stride": 1, "pad": 0})
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, loop_conv(xi, w, b, 1, 0), rtol=1e-12)
    out32, _ = conv_forward_fast(x.astype(np.float16), w.astype(np.float16),
                                 b.astype(np.float16), {"stride": 1, "pad": 0})
    assert out32.dtype == np.float32
    # dout of another dtype is converted to the cache's
    dx, dw, db = conv_backward_fast(np.ones(out.shape, np.float32), cache)
    assert dx.dtype == np.float64


def test_numpy_integer_hyperparameters_and_pairs(rng):
    x, w, b = operands(rng, (1, 2, 7, 9), (3, 2, 3, 3))
    out, _ = conv_forward_fast(x, w, b, {"stride": np.int64(2), "pad": np.int32(1)})
    np.testing.assert_allclose(out, loop_conv(x, w, b, 2, 1), rtol=1e-12, atol=1e-12)
    out, _ = conv_forward_fast(x, w, b, {"stride": (1, 2), "pad": (0, 1)})
    ref.check_forward(out, x, w, b, stride=(1, 2), padding=(0, 1), shape_rule="crop")


# --- bad inputs ------------------------------------------------------------------------------

@pytest.fixture
def ops(rng):
    return operands(rng, (2, 3, 6, 6), (4, 3, 3, 3))


@pytest.mark.parametrize("conv_param,exc,match", [
    ({"pad": 1}, ValueError, r"missing 'stride'"),
    ({"stride": 1}, ValueError, r"missing 'pad'"),
    ({}, ValueError, r"missing 'stride' and 'pad'"),
    ({"stride": 1, "pad": 0, "padding": 1}, ValueError, r"unknown key.*'padding'"),
    ({"stride": 0, "pad": 0}, ValueError, r"conv_param\['stride'\].*>= 1"),
    ({"stride": 1, "pad": -1}, ValueError, r"conv_param\['pad'\].*>= 0"),
    ({"stride": 1.5, "pad": 0}, TypeError, r"conv_param\['stride'\]"),
    ({"stride": 1, "pad": "same"}, TypeError, r"conv_param\['pad'\]"),
    ({"stride": 1, "pad": 0, "shape_rule": "floor"}, ValueError, r"conv_param\['shape_rule'\]"),
    ([1, 0], TypeError, r"conv_param must be a dict"),
])
@pytest.mark.parametrize("forward", FORWARDS + [conv_relu_forward], ids=lambda f: f.__name__)
def test_bad_conv_param(forward, conv_param, exc, match, ops):
    x, w, b = ops
    with pytest.raises(exc, match=match):
        forward(x, w, b, conv_param)


@pytest.mark.parametrize("which,value,exc,match", [
    ("x", np.zeros((3, 6, 6)), ValueError, r"x must be 4-D \(N, C, H, W\)"),
    ("w", np.zeros((4, 3, 3)), ValueError, r"w must be 4-D \(F, C, HH, WW\)"),
    ("w", np.zeros((4, 2, 3, 3)), ValueError, r"w has shape .* must equal the channels of x"),
    ("b", np.zeros(5), ValueError, r"b must have shape \(4,\)"),
    ("b", np.zeros((4, 1)), ValueError, r"b must have shape \(4,\)"),
    ("x", np.full((2, 3, 6, 6), "a"), TypeError, r"x must be an array of real numbers"),
    ("w", np.zeros((4, 3, 3, 3), complex), TypeError, r"w must be an array of real numbers"),
    ("w", np.zeros((4, 3, 7, 7)), convcore.ShapeError, r"larger than the padded input"),
])
def test_bad_arrays(which, value, exc, match, ops):
    args = dict(zip("xwb", ops))
    args[which] = value
    with pytest.raises(exc, match=match):
        conv_forward_fast(args["x"], args["w"], args["b"], {"stride": 1, "pad": 0})


def test_bad_backward_arguments(ops):
    x, w, b = ops
    out, cache = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    with pytest.raises(ValueError, match=r"dout has shape \(2, 4, 6, 5\), expected \(2, 4, 6, 6\)"):
        conv_backward_fast(out[..., :5], cache)
    with pytest.raises(TypeError, match="cache must be the cache returned"):
        conv_backward_naive(out, (x, w, b, {"stride": 1, "pad": 1}))
    with pytest.raises(TypeError, match="dout must be an array of real numbers"):
        conv_backward_fast(out.astype(complex), cache)
    rout, rcache = conv_relu_forward(x, w, b, {"stride": 1, "pad": 1})
    with pytest.raises(TypeError, match=r"\(conv_cache, relu_cache\)"):
        conv_relu_backward(rout, cache)
    with pytest.raises(ValueError, match="dout has shape"):
        conv_relu_backward(rout[:1], rcache)


# --- PyTorch ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=str)
def test_against_pytorch(case, rng):
    torch = pytest.importorskip("torch")
    xs, ws, stride, pad = case
    x, w, b = operands(rng, xs, ws)
    out, cache = conv_relu_forward(x, w, b, {"stride": stride, "pad": pad})
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.relu(torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=pad))
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    ty.backward(torch.tensor(dout))
    for got, want in zip(conv_relu_backward(dout, cache), (tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-11, atol=1e-11)
