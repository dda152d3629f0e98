"""Depthwise convolution (groups == in_channels, K = C·multiplier): the dwconv executors
(depthwise_nchw / depthwise_nhwc, cpp/src/conv/depthwise.cpp) of every pass, forced on every
ISA, against the float64 direct loops; shapes that cross their edges (vector tails, border
chunks, channel blocks, stride phases, maps smaller than the kernel); Inf/NaN never meeting
padding; bitwise results for any thread count. Also grouped_nhwc (NHWC groups of 2, 4, 8
channels with as many filters: the same kernels with lane permutations)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import convcore
from convcore._conv import _algorithms, _force_implementations
from reference import (check_backward_input, check_backward_weight, check_forward,
                       conv2d as ref_conv2d, conv2d_backward_input as ref_backward_input,
                       conv2d_backward_weight as ref_backward_weight)

ENTRY = {"NCHW": "depthwise_nchw", "NHWC": "depthwise_nhwc"}


def arrays(n, c, h, w, m, r, s, layout, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((c * m, 1, r, s))
    b = rng.standard_normal(c * m)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wt = np.ascontiguousarray(wt.transpose(0, 2, 3, 1))
    return x.astype(dtype), wt.astype(dtype), b.astype(dtype)


def forced(layout):
    e = ENTRY[layout]
    return _force_implementations(forward=e, backward_data=e, backward_weight=e)


def check_all(x, wt, b, dtype, what, **kw):
    with forced(kw["layout"]):
        assert set(_algorithms(x.shape, wt.shape, dtype=np.dtype(dtype).name, **kw).values()) \
            == {ENTRY[kw["layout"]]}
        y = convcore.conv2d(x, wt, b, activation="relu", **kw)
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
        dx = convcore.conv2d_backward_input(dy, wt, x.shape, **kw)
        dw = convcore.conv2d_backward_weight(dy, x, wt.shape, **kw)
    check_forward(y, x, wt, b, activation="relu", dtype=dtype, what=f"{what} fwd", **kw)
    check_backward_input(dx, dy, wt, x.shape, dtype=dtype, what=f"{what} bwd-data", **kw)
    check_backward_weight(dw, dy, x, wt.shape, dtype=dtype, what=f"{what} bwd-weight", **kw)


# (stride, dilation, padding) × multiplier: strides 1/2/3 (the NCHW phases), dilation,
# asymmetric padding; rows of 19 and 37 columns cross the vector tails of every ISA.
GEOMETRIES = [
    (1, 1, 1), (2, 1, 1), (3, 1, (0, 2, 1, 2)), (1, 2, 2), ((2, 1), (1, 3), (1, 0, 3, 2)),
    ((1, 3), 1, (2, 1, 0, 1)),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_every_isa_against_the_direct_loops(isa, layout, m, geometry):
    stride, dilation, padding = geometry
    kw = dict(stride=stride, dilation=dilation, padding=padding, groups=5, layout=layout,
              shape_rule="crop")
    for dtype, (h, w) in ((np.float64, (9, 19)), (np.float32, (7, 37))):
        x, wt, b = arrays(2, 5, h, w, m, 3, 3, layout, dtype, seed=m)
        check_all(x, wt, b, dtype, f"{isa} {layout} m={m} {geometry} {np.dtype(dtype).name}", **kw)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("shape", [
    # (N, C, H, W, m, R, S, kw)
    (3, 4, 1, 1, 2, 3, 3, dict(padding=1)),                     # 1×1 maps
    (2, 3, 2, 3, 1, 5, 7, dict(padding=(2, 2, 3, 3))),          # kernel larger than the map
    (1, 2, 3, 2, 3, 5, 5, dict(padding=4, shape_rule="crop")),  # padding beyond the kernel
    # rows and columns that no tap reaches (bias and ReLU only), on every side
    (2, 3, 4, 5, 2, 3, 3, dict(padding=(3, 4, 5, 40))),
    (2, 70, 5, 6, 1, 3, 3, dict(padding=1)),                    # channel blocks (NHWC)
    (1, 300, 4, 3, 1, 3, 1, dict(padding=(1, 1, 0, 0))),        # > 256 channels: 2 blocks
    (1, 40, 4, 5, 2, 3, 3, dict(padding=1)),                    # multiplier, 2 blocks
    (1, 2, 7, 9, 8, 5, 5, dict(padding=2)),                     # 200 taps (> masks kept)
    (2, 3, 4, 70, 1, 1, 1, dict()),                             # 1×1 kernel, long rows
    (1, 3, 6, 81, 2, 3, 3, dict(stride=2, padding=1, shape_rule="crop")),  # long rows, phases
])
def test_edges(isa, layout, shape):
    n, c, h, w, m, r, s, kw = shape
    kw = dict(kw, groups=c, layout=layout)
    for dtype in (np.float64, np.float32):
        x, wt, b = arrays(n, c, h, w, m, r, s, layout, dtype, seed=c + m)
        check_all(x, wt, b, dtype, f"{isa} {layout} {shape} {np.dtype(dtype).name}", **kw)


def _same(got, ref, what):
    got = np.asarray(got, np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(ref)), (what, int(np.isnan(got).sum()),
                                                         int(np.isnan(ref).sum()))
    inf = np.isinf(ref)
    assert np.array_equal(np.isinf(got), inf) and np.array_equal(got[inf], ref[inf]), what
    fin = np.isfinite(ref)
    scale = 1.0 + np.max(np.abs(ref[fin]), initial=0.0)
    assert np.max(np.abs(got[fin] - ref[fin]), initial=0.0) <= 1e-9 * scale, what


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("stride", [1, 2])
def test_nonfinite_never_meets_padding(isa, layout, stride):
    """Inf/NaN on the border of x, in w and in dy: results equal the definition (taps in
    the image only) — NaN/Inf exactly where a non-finite value meets a real operand."""
    kw = dict(stride=stride, padding=2, dilation=(1, 2), groups=3, layout=layout,
              shape_rule="crop")
    x, wt, _ = arrays(2, 3, 7, 9, 2, 3, 3, layout, np.float64, seed=4)
    y_shape = convcore.conv2d_output_shape(x.shape, wt.shape, **kw)
    dy = np.random.default_rng(2).standard_normal(y_shape)
    xi, wi, dyi = x.copy(), wt.copy(), dy.copy()
    xi.reshape(-1)[[0, -1, 5]] = [np.inf, -np.inf, np.nan]   # corners: next to the padding
    wi.reshape(-1)[[0, 4, -1]] = [np.inf, np.nan, -np.inf]
    dyi.reshape(-1)[[0, -1]] = [np.inf, np.nan]
    with forced(layout), np.errstate(invalid="ignore", over="ignore"):
        for xv, wv, dyv, which in ((xi, wt, dy, "x"), (x, wi, dyi, "w, dy")):
            _same(convcore.conv2d(xv, wv, **kw), ref_conv2d(xv, wv, **kw), (which, "fwd"))
            _same(convcore.conv2d_backward_input(dyv, wv, x.shape, **kw),
                  ref_backward_input(dyv, wv, x.shape, **kw), (which, "bwd-data"))
            _same(convcore.conv2d_backward_weight(dyv, xv, wt.shape, **kw),
                  ref_backward_weight(dyv, xv, wt.shape, **kw), (which, "bwd-weight"))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bitwise_across_thread_counts(layout, restore_threads):
    """The weight gradient sums fixed chunks of the batch in a fixed order: results do not
    depend on the thread count (nor do forward and backward-data)."""
    kw = dict(padding=1, groups=24, layout=layout)
    x, wt, b = arrays(9, 24, 12, 13, 2, 3, 3, layout, np.float32, seed=9)
    dy = np.cos(np.arange(9 * 48 * 12 * 13, dtype=np.float32)).reshape(
        convcore.conv2d_output_shape(x.shape, wt.shape, **kw))
    results = []
    for threads in (1, 2, 3, 4, 7):
        convcore.set_num_threads(threads)
        g = convcore.conv2d_backward(dy, x, wt, **kw)
        results.append((convcore.conv2d(x, wt, b, **kw), g.input, g.weight, g.bias))
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert np.array_equal(a, c)


def test_chosen_automatically_and_gemm_still_reachable():
    """Depthwise problems pick the dwconv entries; the GEMM entries still apply when forced
    (and agree)."""
    for layout, gemm in (("NCHW", ("im2col_per_image", "col2im", "im2col")),
                         ("NHWC", ("im2col_nhwc", "col2im", "im2col"))):
        kw = dict(padding=1, groups=6, layout=layout)
        x, wt, b = arrays(2, 6, 8, 9, 2, 3, 3, layout, np.float64)
        assert set(_algorithms(x.shape, wt.shape, dtype="float64", **kw).values()) == \
            {ENTRY[layout]}
        y = convcore.conv2d(x, wt, b, **kw)
        with _force_implementations(*gemm):
            y2 = convcore.conv2d(x, wt, b, **kw)
        np.testing.assert_allclose(y, y2, rtol=1e-12, atol=1e-12)
        # not depthwise: the entries say why, and forcing one fails naming the rule
        kw2 = dict(padding=1, groups=3, layout=layout)
        x2 = np.ones((2, 6, 8, 9) if layout == "NCHW" else (2, 8, 9, 6))
        w2 = np.ones((6, 2, 3, 3) if layout == "NCHW" else (6, 3, 3, 2))
        assert ENTRY[layout] not in _algorithms(x2.shape, w2.shape, **kw2).values()
        with _force_implementations(forward=ENTRY[layout]):
            with pytest.raises(ValueError, match="depthwise only"):
                convcore.conv2d(x2, w2, **kw2)


# --- grouped_nhwc ------------------------------------------------------------------------------

def grouped_arrays(n, c, h, w, g, r, s, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(rng.standard_normal((n, h, w, c)).astype(dtype))
    wt = rng.standard_normal((c, r, s, c // g)).astype(dtype)
    return x, wt, rng.standard_normal(c).astype(dtype)


@pytest.mark.parametrize("cg", [2, 4, 8])
@pytest.mark.parametrize("geometry", GEOMETRIES[:4], ids=str)
def test_grouped_nhwc_every_isa(isa, cg, geometry):
    stride, dilation, padding = geometry
    for dtype, c, (h, w) in ((np.float32, 8 * cg, (9, 11)), (np.float64, 3 * cg, (7, 13))):
        if dtype == np.float64 and cg == 8:
            continue  # needs 8 lanes: float64 has 4 on some targets (see the next test)
        kw = dict(stride=stride, dilation=dilation, padding=padding, groups=c // cg,
                  layout="NHWC", shape_rule="crop")
        x, wt, b = grouped_arrays(2, c, h, w, c // cg, 3, 3, dtype, seed=cg)
        e = "grouped_nhwc"
        with _force_implementations(forward=e, backward_data=e, backward_weight=e):
            y = convcore.conv2d(x, wt, b, activation="relu", **kw)
            dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
            dx = convcore.conv2d_backward_input(dy, wt, x.shape, **kw)
            dw = convcore.conv2d_backward_weight(dy, x, wt.shape, **kw)
        what = f"{isa} cg={cg} {geometry} {np.dtype(dtype).name}"
        check_forward(y, x, wt, b, activation="relu", dtype=dtype, what=what, **kw)
        check_backward_input(dx, dy, wt, x.shape, dtype=dtype, what=what, **kw)
        check_backward_weight(dw, dy, x, wt.shape, dtype=dtype, what=what, **kw)


def test_grouped_nhwc_applies_and_says_why_not():
    kw = dict(padding=1, layout="NHWC")
    assert _algorithms((2, 9, 9, 256), (256, 3, 3, 8), groups=32, **kw)["forward"] == \
        "grouped_nhwc"
    for x_shape, w_shape, groups, dtype, why in (
            ((2, 9, 9, 64), (64, 3, 3, 8), 8, "float64", "groups of 2 or 4"),
            ((2, 9, 9, 48), (48, 3, 3, 6), 8, "float32", "groups of 2, 4 or 8"),
            ((2, 9, 9, 64), (32, 3, 3, 8), 8, "float32", "as many filters as channels")):
        x, w = np.ones(x_shape, dtype), np.ones(w_shape, dtype)
        assert _algorithms(x.shape, w.shape, groups=groups, dtype=dtype, **kw)["forward"] != \
            "grouped_nhwc"
        with _force_implementations(forward="grouped_nhwc"):
            with pytest.raises(ValueError, match=why):
                convcore.conv2d(x, w, groups=groups, **kw)


def test_grouped_nhwc_bitwise_across_thread_counts(restore_threads):
    kw = dict(padding=1, groups=6, layout="NHWC")
    x, wt, b = grouped_arrays(5, 24, 10, 11, 6, 3, 3, np.float32, seed=3)
    dy = np.sin(np.arange(5 * 10 * 11 * 24, dtype=np.float32)).reshape(5, 10, 11, 24)
    results = []
    for threads in (1, 2, 3, 5):
        convcore.set_num_threads(threads)
        g = convcore.conv2d_backward(dy, x, wt, **kw)
        results.append((convcore.conv2d(x, wt, b, **kw), g.input, g.weight))
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert np.array_equal(a, c)
