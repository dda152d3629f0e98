"""Gradients checked without the reference: central finite differences of
L = <conv2d(x, w, b), dy> in float64, and the adjoint identities of the linear maps
x ↦ conv(x, w), w ↦ conv(x, w)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import convcore
from strategies import problems

F64 = np.float64


def vdot(a, b) -> float:
    return float(np.dot(np.asarray(a, F64).ravel(), np.asarray(b, F64).ravel()))


def loss(x, w, b, dy, kw) -> float:
    return vdot(convcore.conv2d(x, w, b, **kw), dy)


# --- finite differences -------------------------------------------------------------------

CONFIGS = [
    dict(stride=1, padding=0),
    dict(stride=2, padding=1),
    dict(stride=(2, 3), padding=(1, 0, 2, 1), dilation=(2, 1), size=(12, 12)),
    dict(stride=3, padding=0, shape_rule="crop"),
    dict(stride=3, padding=1, shape_rule="pad"),
    dict(padding="same", dilation=2),
    dict(stride=2, padding=1, groups=2),
    dict(padding=1, groups=4),  # depthwise
    dict(stride=2, padding=(1, 0, 2, 1), dilation=(1, 2), groups=4, shape_rule="crop"),  # depthwise, strided
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_finite_differences(layout, cfg, rng):
    kw = dict(cfg, layout=layout)
    h, w_ = kw.pop("size", (11, 11))
    g = cfg.get("groups", 1)
    n, c, k, r, s = 2, 4, 8, 3, 3
    x = rng.standard_normal((n, c, h, w_) if layout == "NCHW" else (n, h, w_, c))
    w = rng.standard_normal((k, c // g, r, s) if layout == "NCHW" else (k, r, s, c // g))
    b = rng.standard_normal(k)
    y = convcore.conv2d(x, w, b, **kw)
    dy = rng.standard_normal(y.shape)
    grads = convcore.conv2d_backward(dy, x, w, **kw)
    eps = 1e-3  # L is affine in each argument: central differences are exact up to rounding

    def check(analytic, fd, what):
        assert abs(analytic - fd) <= 1e-7 * (abs(fd) + abs(analytic) + 1.0), (what, analytic, fd)

    # a random direction for each argument
    for arg in ("x", "w", "b"):
        base = {"x": x, "w": w, "b": b}[arg]
        grad = {"x": grads.input, "w": grads.weight, "b": grads.bias}[arg]
        v = rng.standard_normal(base.shape)
        args_p = {"x": x, "w": w, "b": b}
        args_m = dict(args_p)
        args_p[arg] = base + eps * v
        args_m[arg] = base - eps * v
        fd = (loss(args_p["x"], args_p["w"], args_p["b"], dy, kw)
              - loss(args_m["x"], args_m["w"], args_m["b"], dy, kw)) / (2 * eps)
        check(vdot(grad, v), fd, f"direction {arg}")
    # a few single coordinates of x and w (including a corner, often next to padding)
    for arg, base, grad in (("x", x, grads.input), ("w", w, grads.weight)):
        coords = [tuple(0 for _ in base.shape), tuple(d - 1 for d in base.shape)]
        coords += [tuple(int(rng.integers(d)) for d in base.shape) for _ in range(3)]
        for idx in coords:
            plus, minus = base.copy(), base.copy()
            plus[idx] += eps
            minus[idx] -= eps
            if arg == "x":
                fd = (loss(plus, w, b, dy, kw) - loss(minus, w, b, dy, kw)) / (2 * eps)
            else:
                fd = (loss(x, plus, b, dy, kw) - loss(x, minus, b, dy, kw)) / (2 * eps)
            check(grad[idx], fd, f"{arg}{idx}")


# --- adjoint identities --------------------------------------------------------------------

@given(p=problems(dtypes=(np.float64,)))
def test_adjoint_identities(isa, p):
    """<conv(x, w), dy> = <x, backward_input(dy, w)> = <w, backward_weight(dy, x)>, and
    <1, dy> per filter = backward_bias."""
    x, w, _ = p.arrays()
    dy = p.grad_output()
    y = convcore.conv2d(x, w, **p.kw)
    dx = convcore.conv2d_backward_input(dy, w, x.shape, **p.kw)
    dw = convcore.conv2d_backward_weight(dy, x, w.shape, **p.kw)
    lhs = vdot(y, dy)
    via_x = vdot(x, dx)
    via_w = vdot(w, dw)
    scale = max(np.linalg.norm(y) * np.linalg.norm(dy), np.linalg.norm(x) * np.linalg.norm(dx),
                np.linalg.norm(w) * np.linalg.norm(dw), 1e-300)
    assert abs(lhs - via_x) <= 1e-12 * scale, (lhs, via_x, p)
    assert abs(lhs - via_w) <= 1e-12 * scale, (lhs, via_w, p)
    # bias: L = <conv(x, w) + b, dy> is affine in b with slope Σ dy per filter
    b = np.random.default_rng(p.seed + 7).standard_normal(p.out_channels)
    yb = convcore.conv2d(x, w, b, **p.kw)
    db = convcore.conv2d_backward(dy, x, w, **p.kw).bias
    assert abs((vdot(yb, dy) - lhs) - vdot(b, db)) <= 1e-12 * (np.linalg.norm(yb) * np.linalg.norm(dy) + 1)


# --- strides that do not divide -----------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_crop_dropped_rows_get_zero_gradient(isa, layout, rng):
    # H = 12, W = 13, F = 3, S = 4: rows used 0 .. (⌊9/4⌋)·4 + 2 = 10, columns 0 .. 10 as well
    # (⌊10/4⌋·4 + 2 = 10): row 11 and columns 11, 12 are dropped.
    n, c, h, w_, k = 2, 3, 12, 13, 4
    x = rng.standard_normal((n, c, h, w_) if layout == "NCHW" else (n, h, w_, c))
    w = rng.standard_normal((k, c, 3, 3) if layout == "NCHW" else (k, 3, 3, c))
    kw = dict(stride=4, shape_rule="crop", layout=layout)
    y = convcore.conv2d(x, w, **kw)
    dy = rng.standard_normal(y.shape)
    grads = convcore.conv2d_backward(dy, x, w, **kw)
    dx = grads.input if layout == "NCHW" else np.moveaxis(grads.input, 3, 1)
    assert (dx[:, :, 11, :] == 0).all()
    assert (dx[:, :, :, 11:] == 0).all()
    assert (np.abs(dx[:, :, :11, :11]) > 0).any()
    # Changing the dropped pixels changes neither the output nor the weight gradient.
    x2 = x.copy()
    if layout == "NCHW":
        x2[:, :, 11, :] = 1e3
        x2[:, :, :, 11:] = -1e3
    else:
        x2[:, 11, :, :] = 1e3
        x2[:, :, 11:, :] = -1e3
    np.testing.assert_array_equal(convcore.conv2d(x2, w, **kw), y)
    np.testing.assert_array_equal(convcore.conv2d_backward(dy, x2, w, **kw).weight, grads.weight)
    # and the finite-difference/adjoint view: <y, dy> == <x, dx>
    assert abs(vdot(y, dy) - vdot(x, grads.input)) <= 1e-12 * np.linalg.norm(y) * np.linalg.norm(dy)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_pad_rule_gradients_match_explicit_padding(isa, layout, rng):
    # H = 12, F = 3, S = 4: span 9 → 3 more zero rows at the bottom ((9 + 3)/4 + 1 = 4 rows);
    # W = 13: span 10 → 2 more columns at the right.
    n, c, h, w_, k = 2, 3, 12, 13, 4
    x = rng.standard_normal((n, c, h, w_) if layout == "NCHW" else (n, h, w_, c))
    w = rng.standard_normal((k, c, 3, 3) if layout == "NCHW" else (k, 3, 3, c))
    kw_rule = dict(stride=4, shape_rule="pad", layout=layout)
    kw_explicit = dict(stride=4, padding=(0, 3, 0, 2), layout=layout)
    y = convcore.conv2d(x, w, **kw_rule)
    assert y.shape == convcore.conv2d_output_shape(x.shape, w.shape, **kw_explicit)
    assert (y.shape[2:] if layout == "NCHW" else y.shape[1:3]) == (4, 4)
    dy = rng.standard_normal(y.shape)
    a = convcore.conv2d_backward(dy, x, w, **kw_rule)
    b = convcore.conv2d_backward(dy, x, w, **kw_explicit)
    for ga, gb in zip(a, b):
        np.testing.assert_allclose(ga, gb, rtol=1e-12, atol=1e-12)
    # Nothing is dropped under 'pad': every pixel has a gradient path.
    assert abs(vdot(y, dy) - vdot(x, a.input)) <= 1e-12 * np.linalg.norm(y) * np.linalg.norm(dy)
    assert abs(vdot(y, dy) - vdot(w, a.weight)) <= 1e-12 * np.linalg.norm(y) * np.linalg.norm(dy)
