"""Outputs whose windows lie wholly in the padding (a padding wider than the kernel's reach).

They only ever meet padding: in the forward pass each is the empty sum's epilogue (0 + bias,
then the activation), and they add nothing to dx or dw. The functional calls compute the
band of outputs that do reach the input as a smaller convolution (``_Problem.band``), so a
huge padding costs the outputs it must write and no more. Checked here against the float64
reference, with NaN where the dropped outputs' gradients are, on every ISA path.
"""
from __future__ import annotations

import numpy as np
import pytest

import convcore
import reference as ref
from convcore._conv import _axis_band, _problem


def _touching(n_out, size, taps, stride, dilation, pad_lo):
    """Outputs along one axis with at least one tap on a real input pixel (brute force)."""
    return [o for o in range(n_out)
            if any(0 <= o * stride + t * dilation - pad_lo < size for t in range(taps))]


def test_axis_band_keeps_every_output_that_reaches_the_input():
    rng = np.random.default_rng()
    for _ in range(3000):
        size, taps = int(rng.integers(1, 9)), int(rng.integers(1, 5))
        stride, dilation = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        pad_lo, pad_hi = int(rng.integers(0, 25)), int(rng.integers(0, 25))
        span = (taps - 1) * dilation + 1
        if size + pad_lo + pad_hi < span:
            continue
        n_out = (size + pad_lo + pad_hi - span) // stride + 1          # shape_rule "crop"
        o0, o1, lo, hi = _axis_band(n_out, size, taps, stride, dilation, pad_lo)
        case = (size, taps, stride, dilation, pad_lo, pad_hi)
        touching = _touching(n_out, size, taps, stride, dilation, pad_lo)
        if touching:   # (with stride > size, every tap can miss the input)
            assert o0 <= touching[0] and touching[-1] < o1, case
        # Tight: from the first window that does not end before the input (or earlier,
        # where that keeps the leading padding >= 0) to the last that does not start after.
        ends_in = [o for o in range(n_out) if o * stride - pad_lo + span > 0]
        starts_in = [o for o in range(n_out) if o * stride - pad_lo < size]
        assert o0 == min(ends_in[0] if ends_in else n_out, pad_lo // stride), case
        assert o1 == (starts_in[-1] + 1 if starts_in else 0), case
        assert lo >= 0 and hi >= 0 and lo == pad_lo - o0 * stride, case
        # The new padding gives exactly the band's outputs under "crop".
        assert (size + lo + hi - span) // stride + 1 == o1 - o0, case


BAND_CASES = [
    # x (N, C, H, W), w (K, C/g, R, S), stride, padding (t, b, l, r), dilation, groups, rule
    ((2, 3, 5, 4), (4, 3, 3, 2), (1, 1), (7, 2, 1, 9), (1, 1), 1, "crop"),
    ((1, 4, 3, 6), (6, 2, 2, 3), (2, 3), (9, 11, 6, 0), (2, 1), 2, "pad"),
    ((3, 2, 7, 3), (2, 1, 3, 3), (3, 1), (10, 4, 5, 5), (1, 2), 2, "crop"),
    ((2, 5, 4, 4), (3, 5, 1, 1), (1, 2), (3, 3, 2, 7), (1, 1), 1, "strict"),
    ((1, 3, 6, 2), (4, 3, 2, 2), (2, 2), (0, 13, 12, 0), (3, 1), 1, "crop"),
    ((2, 4, 6, 6), (5, 4, 3, 3), (1, 1), (8, 8, 8, 8), (1, 1), 1, "strict"),   # Winograd's
]


def _setup(case, layout, dtype):
    (n, c, h, wd), (k, cg, r, s), stride, padding, dilation, groups, rule = BAND_CASES[case]
    x_shape, w_shape = (n, c, h, wd), (k, cg, r, s)
    if layout == "NHWC":
        x_shape, w_shape = (n, h, wd, c), (k, r, s, cg)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
              layout=layout, shape_rule=rule)
    prob = _problem(x_shape, w_shape, stride, padding, dilation, groups, layout, rule,
                    "float32" if dtype == np.float32 else "float64")
    band = prob.band()
    assert band is not None, "the case has outputs wholly in the padding"
    out_shape = convcore.conv2d_output_shape(x_shape, w_shape, **kw)
    # reach: the outputs with at least one tap on the input; all must be in the band.
    spatial = (2, 3) if layout == "NCHW" else (1, 2)
    rows = _touching(out_shape[spatial[0]], h, r, stride[0], dilation[0], padding[0])
    cols = _touching(out_shape[spatial[1]], wd, s, stride[1], dilation[1], padding[2])
    reach = np.zeros(out_shape, bool)
    index = [slice(None)] * 4
    index[spatial[0]], index[spatial[1]] = np.array(rows)[:, None], np.array(cols)[None, :]
    reach[tuple(index)] = True
    keep = np.zeros(out_shape, bool)
    prob._in_band(keep, band[1])[...] = True
    assert not (reach & ~keep).any(), "the band drops an output that reaches the input"
    return x_shape, w_shape, kw, out_shape, reach, prob


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", range(len(BAND_CASES)))
def test_forward_with_padding_only_outputs_matches_reference(isa, case, layout, dtype):
    x_shape, w_shape, kw, out_shape, _, prob = _setup(case, layout, dtype)
    sub = prob.band()[0]
    assert 2 * sub.plan.out_h * sub.plan.out_w <= prob.plan.out_h * prob.plan.out_w, \
        "most outputs in the padding: the forward takes the band"
    rng = np.random.default_rng()
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    what = f"{BAND_CASES[case]} {layout}"
    for bias, act in ((None, None), (b, None), (b, "relu")):
        y = convcore.conv2d(x, w, bias, activation=act, **kw)
        ref.check_forward(y, x, w, bias, activation=act, dtype=dtype, what=f"{what} {act}",
                          **kw)
        out = np.full(out_shape, 7.0, dtype)    # every entry written, the band's and not
        assert convcore.conv2d(x, w, bias, activation=act, out=out, **kw) is out
        np.testing.assert_array_equal(out, y)
    # A NaN bias reaches every output of its filter, the padding's too (ReLU keeps NaN).
    b_nan = b.copy()
    b_nan[0] = np.nan
    y_nan = convcore.conv2d(x, w, b_nan, activation="relu", **kw)
    k_axis = 1 if layout == "NCHW" else 3
    assert np.isnan(np.take(y_nan, 0, axis=k_axis)).all()
    np.testing.assert_array_equal(np.take(y_nan, np.arange(1, w_shape[0]), axis=k_axis),
                                  np.take(y, np.arange(1, w_shape[0]), axis=k_axis))
    # One image (3-D arrays) crops the same way.
    y1 = convcore.conv2d(x[1 % x.shape[0]], w, b, activation="relu", **kw)
    ref.check_forward(y1, x[1 % x.shape[0]], w, b, activation="relu", dtype=dtype,
                      what=f"3-D {what}", **kw)
    if BAND_CASES[case][2:5] == ((1, 1), (8, 8, 8, 8), (1, 1)):
        yw = convcore.conv2d(x, w, b, algorithm="winograd", **kw)
        ref.check_forward(yw, x, w, b, dtype=dtype, what=f"winograd {what}", **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", range(len(BAND_CASES)))
def test_backward_with_padding_only_outputs_matches_reference(isa, case, layout, dtype):
    x_shape, w_shape, kw, out_shape, reach, _ = _setup(case, layout, dtype)
    rng = np.random.default_rng()
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    dy = rng.standard_normal(out_shape).astype(dtype)
    # The dropped outputs' gradients only ever meet padding: make them NaN, and they must
    # not reach dx or dw (the reference skips padding taps too).
    dy_nan = np.where(reach, dy, np.nan).astype(dtype)
    what = f"{BAND_CASES[case]} {layout}"
    dx = convcore.conv2d_backward_input(dy_nan, w, x_shape, **kw)
    ref.check_backward_input(dx, dy, w, x_shape, dtype=dtype, what=f"dx {what}", **kw)
    dw = convcore.conv2d_backward_weight(dy_nan, x, w_shape, **kw)
    ref.check_backward_weight(dw, dy, x, w_shape, dtype=dtype, what=f"dw {what}", **kw)
    g = convcore.conv2d_backward(dy, x, w, **kw)
    np.testing.assert_array_equal(g.input, convcore.conv2d_backward_input(dy, w, x_shape, **kw))
    np.testing.assert_array_equal(g.weight, convcore.conv2d_backward_weight(dy, x, w_shape, **kw))
    ref.check_backward_bias(g.bias, dy, layout, dtype=dtype, what=f"db {what}")
    n = x_shape[0]
    dx1 = convcore.conv2d_backward_input(dy_nan[1 % n], w, x_shape[1:], **kw)
    ref.check_backward_input(dx1, dy[1 % n], w, x_shape[1:], dtype=dtype, what=f"dx 3-D {what}",
                             **kw)


def _huge_broadcast_case(layout, dtype=np.float64):
    """A 3×3 convolution with a top padding of 10^8 rows and grad_output one random row
    broadcast over all its outputs (800 MB if copied): (x, w, row, dy, kw)."""
    big = 10**8
    x_shape, w_shape = ((2, 3, 6, 5), (4, 3, 3, 3)) if layout == "NCHW" else \
        ((2, 6, 5, 3), (4, 3, 3, 3))
    kw = dict(padding=(big, 2, 1, 1), layout=layout)
    rng = np.random.default_rng()
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    row = rng.standard_normal((1, 4, 1, 5) if layout == "NCHW" else (1, 1, 5, 4)).astype(dtype)
    dy = np.broadcast_to(row, convcore.conv2d_output_shape(x_shape, w_shape, **kw))
    return x, w, row, dy, kw


def _peak_bytes(fn):
    """fn()'s result and the peak of the memory Python allocated while it ran."""
    import tracemalloc
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_huge_padding_reads_only_the_band_of_a_broadcast_grad_output(layout):
    """A broadcast grad_output of 10^8 rows (800 MB if copied) with a padding of 10^8: the
    gradients read the few rows whose windows reach the image, never copying the rest."""
    x, w, row, dy, kw = _huge_broadcast_case(layout)
    (dx, dw), peak = _peak_bytes(lambda: (
        convcore.conv2d_backward_input(dy, w, x.shape, **kw),
        convcore.conv2d_backward_weight(dy, x, w.shape, **kw)))
    assert peak < 2**20, f"peak {peak} bytes: the padding-only rows were copied"
    # The same convolution without the padding rows above the image's reach.
    kw_small = dict(padding=(2, 2, 1, 1), layout=layout)
    small_shape = convcore.conv2d_output_shape(x.shape, w.shape, **kw_small)
    dy_small = np.ascontiguousarray(np.broadcast_to(row, small_shape))
    ref.check_backward_input(dx, dy_small, w, x.shape, **kw_small)
    ref.check_backward_weight(dw, dy_small, x, w.shape, **kw_small)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bias_gradient_of_a_huge_broadcast_grad_output_sums_without_copying(layout, dtype):
    """conv2d_backward's bias gradient sums every output, the padding-only ones too; over a
    broadcast grad_output of 10^8 rows it must not copy them (800 MB) to do so."""
    x, w, row, dy, kw = _huge_broadcast_case(layout, dtype)
    grads, peak = _peak_bytes(lambda: convcore.conv2d_backward(dy, x, w, **kw))
    assert peak < 2**20, f"peak {peak} bytes: the padding-only rows were copied"
    # Every one of the 2 images' Ho rows holds the same row: db[k] = 2 * Ho * sum of row k.
    ho = dy.shape[2] if layout == "NCHW" else dy.shape[1]
    per_row = row.astype(np.float64).sum(axis=(0, 2, 3) if layout == "NCHW" else (0, 1, 2))
    expected = 2 * ho * per_row
    assert grads.bias.dtype == dtype and grads.bias.shape == (4,)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(grads.bias, expected, rtol=tol, atol=0)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bias_gradient_of_a_strided_view_with_a_band(layout, batched):
    """A padding-only band taken by conv2d_backward with a strided, partly broadcast
    grad_output (a reversed, sliced view, broadcast over the images; 3-D too): every
    gradient equals the float64 loops on a contiguous copy."""
    rng = np.random.default_rng()
    x_shape, w_shape = ((3, 4, 7, 6), (5, 4, 3, 2)) if layout == "NCHW" else \
        ((3, 7, 6, 4), (5, 3, 2, 4))
    if not batched:
        x_shape = x_shape[1:]
    kw = dict(padding=(9, 3, 1, 7), stride=(1, 2), layout=layout, shape_rule="crop")
    out_shape = convcore.conv2d_output_shape(x_shape, w_shape, **kw)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    # every second element of a reversed array, then broadcast along the batch
    one = out_shape[1:] if batched else out_shape
    base = rng.standard_normal(tuple(2 * n for n in one))[(slice(None, None, -2),) * len(one)]
    dy = np.broadcast_to(base, out_shape)
    assert _problem(x_shape, w_shape, kw["stride"], kw["padding"], 1, 1, layout, "crop",
                    "float64").band() is not None
    grads = convcore.conv2d_backward(dy, x, w, **kw)
    dense = np.ascontiguousarray(dy)
    ref.assert_close(grads.bias, ref.conv2d_backward_bias(dense, layout), np.float64, "db")
    ref.check_backward_input(grads.input, dense, w, x_shape, **kw)
    ref.check_backward_weight(grads.weight, dense, x, w_shape, **kw)


def test_forward_band_is_used_only_when_most_outputs_are_padding():
    """The forward's band costs a buffer and a copy: taken when at least half the outputs
    lie wholly in the padding, else the whole problem runs (same results either way)."""
    x = np.random.default_rng().standard_normal((1, 2, 8, 8))
    w = np.ones((3, 2, 1, 1))
    few = _problem(x.shape, w.shape, 1, 1, 1, 1, "NCHW", "strict", "float64")  # 64 of 100
    many = _problem(x.shape, w.shape, 1, 3, 1, 1, "NCHW", "strict", "float64")  # 64 of 196
    assert few.band() is not None and many.band() is not None
    y = np.empty(few.y_shape)
    assert not few.forward_by_band(x, w, None, y, False)
    y = np.empty(many.y_shape)
    assert many.forward_by_band(x, w, None, y, False)
    ref.check_forward(y, x, w, padding=3)


def test_conv2d_computes_through_the_band(monkeypatch):
    """conv2d itself takes the band (the results alone cannot show it: they are the same)."""
    from convcore._conv import _Problem
    taken = []
    original = _Problem.forward_by_band

    def spy(self, *args):
        taken.append(original(self, *args))
        return taken[-1]
    monkeypatch.setattr(_Problem, "forward_by_band", spy)
    x = np.random.default_rng().standard_normal((1, 2, 8, 8))
    w = np.random.default_rng().standard_normal((3, 2, 1, 1))
    ref.check_forward(convcore.conv2d(x, w, padding=3), x, w, padding=3)
    ref.check_forward(convcore.conv2d(x, w, padding=1), x, w, padding=1)
    assert taken == [True, False]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_layer_with_padding_only_outputs_matches_reference(isa, layout, dtype):
    """The Conv2d layer takes the band in forward and then in backward, with the weights
    it packed; a new weight is used by the next forward, and gradients accumulate."""
    kw = dict(stride=(2, 1), padding=(9, 4, 2, 11), dilation=(1, 2), groups=2, layout=layout,
              shape_rule="crop")
    layer = convcore.Conv2d(4, 6, (3, 2), activation="relu", dtype=dtype, rng=7, **kw)
    rng = np.random.default_rng()
    xs = (2, 4, 5, 6) if layout == "NCHW" else (2, 5, 6, 4)
    x = rng.standard_normal(xs).astype(dtype)
    dt = np.dtype(dtype)
    grads = []
    for step in range(2):
        if step:
            layer.weight = rng.standard_normal(layer.weight.shape).astype(dtype)
        y = layer.forward(x)
        assert layer._band_weight is not None, "most outputs in the padding: the band"
        pre = ref.conv2d(x, layer.weight, layer.bias, **kw)
        ref.assert_close(y, np.maximum(pre, 0), dt, what=f"forward {step}")
        dy = rng.standard_normal(y.shape).astype(dtype)
        masked = np.where(y > 0, dy, 0)
        dx = layer.backward(dy)
        ref.assert_close(dx, ref.conv2d_backward_input(masked, layer.weight, xs, **kw), dt,
                         what=f"dx {step}")
        grads.append((ref.conv2d_backward_weight(masked, x, layer.weight.shape, **kw),
                      ref.conv2d_backward_bias(masked, layout)))
    ref.assert_close(layer.grad_weight, grads[0][0] + grads[1][0], dt, what="accumulated dw")
    ref.assert_close(layer.grad_bias, grads[0][1] + grads[1][1], dt, what="accumulated db")
    # A padding that leaves most outputs reaching the input: the prepacked primitive.
    layer2 = convcore.Conv2d(4, 6, 3, padding=1, layout=layout, dtype=dtype, rng=1)
    layer2.forward(x)
    assert layer2._band_weight is None
