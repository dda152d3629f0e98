"""conv2d_backward, conv2d_backward_input and conv2d_backward_weight against the float64
reference, on every ISA path."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import convcore
import reference as ref
from strategies import problems


@given(p=problems())
def test_backward_all_grads_match_reference(isa, p):
    x, w, _ = p.arrays()
    dy = p.grad_output()
    grads = convcore.conv2d_backward(dy, x, w, bias=p.bias, **p.kw)
    assert isinstance(grads, convcore.Conv2dGrads)
    assert grads.input.shape == x.shape and grads.input.dtype == p.dtype
    assert grads.weight.shape == w.shape and grads.weight.dtype == p.dtype
    ref.check_backward_input(grads.input, dy, w, x.shape, dtype=p.dtype,
                             what=f"grad input {p}", **p.kw)
    ref.check_backward_weight(grads.weight, dy, x, w.shape, dtype=p.dtype,
                              what=f"grad weight {p}", **p.kw)
    if p.bias:
        assert grads.bias.shape == (p.out_channels,) and grads.bias.dtype == p.dtype
        ref.check_backward_bias(grads.bias, dy, p.layout, dtype=p.dtype, what=f"grad bias {p}")
    else:
        assert grads.bias is None
    # The named-tuple fields are also positional.
    gi, gw, gb = grads
    assert gi is grads.input and gw is grads.weight and gb is grads.bias


@given(p=problems())
def test_backward_input_matches_reference(isa, p):
    _, w, _ = p.arrays()
    dy = p.grad_output()
    dx = convcore.conv2d_backward_input(dy, w, p.x_shape, **p.kw)
    assert dx.shape == p.x_shape and dx.dtype == p.dtype
    ref.check_backward_input(dx, dy, w, p.x_shape, dtype=p.dtype, what=f"backward_input {p}",
                             **p.kw)


@given(p=problems())
def test_backward_weight_matches_reference(isa, p):
    x, _, _ = p.arrays()
    dy = p.grad_output()
    dw = convcore.conv2d_backward_weight(dy, x, p.w_shape, **p.kw)
    assert dw.shape == p.w_shape and dw.dtype == p.dtype
    ref.check_backward_weight(dw, dy, x, p.w_shape, dtype=p.dtype,
                              what=f"backward_weight {p}", **p.kw)


@given(p=problems(max_hw=8))
def test_separate_passes_equal_combined(p):
    """conv2d_backward's input/weight grads are the ones the separate functions give."""
    x, w, _ = p.arrays()
    dy = p.grad_output()
    grads = convcore.conv2d_backward(dy, x, w, bias=False, **p.kw)
    assert grads.bias is None
    np.testing.assert_array_equal(grads.input,
                                  convcore.conv2d_backward_input(dy, w, x.shape, **p.kw))
    np.testing.assert_array_equal(grads.weight,
                                  convcore.conv2d_backward_weight(dy, x, w.shape, **p.kw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_backward_bias_is_sum_over_images_and_positions(isa, dtype, layout, rng):
    x_shape = (3, 4, 9, 7) if layout == "NCHW" else (3, 9, 7, 4)
    w_shape = (5, 4, 2, 2) if layout == "NCHW" else (5, 2, 2, 4)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    dy = rng.standard_normal(convcore.conv2d_output_shape(x_shape, w_shape, layout=layout)).astype(dtype)
    grads = convcore.conv2d_backward(dy, x, w, layout=layout)
    axes = (0, 2, 3) if layout == "NCHW" else (0, 1, 2)
    ref.assert_close(grads.bias, dy.astype(np.float64).sum(axis=axes), dtype)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_backward_accepts_list_shapes(layout, rng):
    x_shape = (2, 3, 6, 6) if layout == "NCHW" else (2, 6, 6, 3)
    w_shape = (4, 3, 3, 3)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    dy = rng.standard_normal(convcore.conv2d_output_shape(x_shape, w_shape, layout=layout))
    dx = convcore.conv2d_backward_input(dy, w, list(x_shape), layout=layout)
    dw = convcore.conv2d_backward_weight(dy, x, list(w_shape), layout=layout)
    ref.assert_close(dx, ref.conv2d_backward_input(dy, w, x_shape, layout=layout))
    ref.assert_close(dw, ref.conv2d_backward_weight(dy, x, w_shape, layout=layout))


# --- outputs whose windows lie wholly in the padding --------------------------------------
# The dx and dw passes skip them (they only meet padding), so a huge padding costs nothing.

def _touching(n_out, size, taps, stride, dilation, pad_lo):
    """Outputs along one axis with at least one tap on a real input pixel (brute force)."""
    return [o for o in range(n_out)
            if any(0 <= o * stride + t * dilation - pad_lo < size for t in range(taps))]


def test_axis_band_keeps_every_output_that_reaches_the_input():
    from convcore._conv import _axis_band
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
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", range(len(BAND_CASES)))
def test_backward_with_padding_only_outputs_matches_reference(isa, case, layout, dtype):
    (n, c, h, wd), (k, cg, r, s), stride, padding, dilation, groups, rule = BAND_CASES[case]
    x_shape, w_shape = (n, c, h, wd), (k, cg, r, s)
    if layout == "NHWC":
        x_shape, w_shape = (n, h, wd, c), (k, r, s, cg)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
              layout=layout, shape_rule=rule)
    rng = np.random.default_rng()
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    dy = rng.standard_normal(convcore.conv2d_output_shape(x_shape, w_shape, **kw)).astype(dtype)
    prob = convcore._conv._problem(x_shape, w_shape, stride, padding, dilation, groups, layout,
                                   rule, "float32" if dtype == np.float32 else "float64")
    band = prob.band()
    assert band is not None, "the case has outputs wholly in the padding"
    rows, cols = band[1]
    # Those outputs' gradients only ever meet padding: make them NaN, and they must not
    # reach dx or dw (the reference skips padding taps too).
    spatial = (2, 3) if layout == "NCHW" else (1, 2)
    keep = np.zeros(dy.shape, bool)
    index = [slice(None)] * 4
    index[spatial[0]], index[spatial[1]] = rows, cols
    keep[tuple(index)] = True
    touching_h = _touching(dy.shape[spatial[0]], h, r, stride[0], dilation[0], padding[0])
    touching_w = _touching(dy.shape[spatial[1]], wd, s, stride[1], dilation[1], padding[2])
    reach = np.zeros(dy.shape, bool)
    if layout == "NHWC":
        index = [slice(None), np.array(touching_h)[:, None], np.array(touching_w)[None, :],
                 slice(None)]
    else:
        index = [slice(None), slice(None), np.array(touching_h)[:, None],
                 np.array(touching_w)[None, :]]
    reach[tuple(index)] = True
    assert not (reach & ~keep).any(), "the band drops an output that reaches the input"
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
    # One image (3-D arrays) crops the same way.
    dx1 = convcore.conv2d_backward_input(dy_nan[1 % n], w, x_shape[1:], **kw)
    ref.check_backward_input(dx1, dy[1 % n], w, x_shape[1:], dtype=dtype, what=f"dx 3-D {what}",
                             **kw)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_huge_padding_reads_only_the_band_of_a_broadcast_grad_output(layout):
    """A broadcast grad_output of 10^8 rows (800 MB if copied) with a padding of 10^8: the
    gradients read the few rows whose windows reach the image, never copying the rest."""
    import tracemalloc
    big = 10**8
    x_shape, w_shape = ((2, 3, 6, 5), (4, 3, 3, 3)) if layout == "NCHW" else \
        ((2, 6, 5, 3), (4, 3, 3, 3))
    kw = dict(padding=(big, 2, 1, 1), layout=layout)
    out_shape = convcore.conv2d_output_shape(x_shape, w_shape, **kw)
    rng = np.random.default_rng()
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    row = rng.standard_normal((1, 4, 1, 5) if layout == "NCHW" else (1, 1, 5, 4))
    dy = np.broadcast_to(row, out_shape)
    tracemalloc.start()
    try:
        dx = convcore.conv2d_backward_input(dy, w, x_shape, **kw)
        dw = convcore.conv2d_backward_weight(dy, x, w_shape, **kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"peak {peak} bytes: the padding-only rows were copied"
    # The same convolution without the padding rows above the image's reach.
    kw_small = dict(padding=(2, 2, 1, 1), layout=layout)
    small_shape = convcore.conv2d_output_shape(x_shape, w_shape, **kw_small)
    dy_small = np.ascontiguousarray(np.broadcast_to(row, small_shape))
    ref.check_backward_input(dx, dy_small, w, x_shape, **kw_small)
    ref.check_backward_weight(dw, dy_small, x, w_shape, **kw_small)
