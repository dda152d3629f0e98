"""conv2d and conv2d_output_shape against the float64 reference, on every ISA path."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import convcore
import reference as ref
from strategies import problems


def blocking(dtype) -> dict:
    return convcore.show_config()["blocking"][np.dtype(dtype).name]


# --- random problems ----------------------------------------------------------------------

@given(p=problems())
def test_forward_matches_reference(isa, p):
    x, w, b = p.arrays()
    act = "relu" if p.relu else None
    y = convcore.conv2d(x, w, b, activation=act, **p.kw)
    assert y.dtype == p.dtype
    assert y.shape == ref.output_shape(p.x_shape, p.w_shape, **p.kw)
    assert y.flags.c_contiguous
    ref.check_forward(y, x, w, b, activation=act, dtype=p.dtype, what=f"conv2d {p}", **p.kw)
    if p.relu:
        assert (y >= 0).all()


@given(p=problems())
def test_output_shape_matches_reference(p):
    expected = ref.output_shape(p.x_shape, p.w_shape, **p.kw)
    assert convcore.conv2d_output_shape(p.x_shape, p.w_shape, **p.kw) == expected
    assert convcore.conv2d_output_shape(list(p.x_shape), list(p.w_shape), **p.kw) == expected


@given(h=st.integers(1, 14), w=st.integers(1, 14), r=st.integers(1, 5), s=st.integers(1, 5),
       stride=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(*[st.integers(0, 3)] * 4),
       rule=st.sampled_from(["strict", "crop", "pad"]),
       layout=st.sampled_from(["NCHW", "NHWC"]))
def test_output_shape_rule_and_errors_agree_with_reference(h, w, r, s, stride, dilation,
                                                          padding, rule, layout):
    """Unconstrained sizes: convcore raises ShapeError exactly when the reference says the
    problem does not fit, and otherwise gives the reference's size."""
    x_shape = (2, 3, h, w) if layout == "NCHW" else (2, h, w, 3)
    w_shape = (4, 3, r, s) if layout == "NCHW" else (4, r, s, 3)
    kw = dict(stride=stride, dilation=dilation, padding=padding, shape_rule=rule, layout=layout)
    try:
        expected = ref.output_shape(x_shape, w_shape, **kw)
    except ref.RefShapeError:
        with pytest.raises(convcore.ShapeError):
            convcore.conv2d_output_shape(x_shape, w_shape, **kw)
        return
    assert convcore.conv2d_output_shape(x_shape, w_shape, **kw) == expected


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_shape_rules_on_one_axis(layout):
    # W = 10, F = 3, S = 4: span 7 → strict fails, crop ⌊7/4⌋ + 1 = 2, pad (7 + 1)/4 + 1 = 3.
    x_shape = (1, 1, 5, 10) if layout == "NCHW" else (1, 5, 10, 1)
    w_shape = (1, 1, 1, 3) if layout == "NCHW" else (1, 1, 3, 1)
    with pytest.raises(convcore.ShapeError, match="width"):
        convcore.conv2d_output_shape(x_shape, w_shape, stride=(1, 4), layout=layout)
    crop = convcore.conv2d_output_shape(x_shape, w_shape, stride=(1, 4), layout=layout,
                                        shape_rule="crop")
    pad = convcore.conv2d_output_shape(x_shape, w_shape, stride=(1, 4), layout=layout,
                                       shape_rule="pad")
    if layout == "NCHW":
        assert crop == (1, 1, 5, 2) and pad == (1, 1, 5, 3)
    else:
        assert crop == (1, 5, 2, 1) and pad == (1, 5, 3, 1)


@given(p=problems(max_hw=9))
def test_pad_rule_equals_explicit_bottom_right_padding(p):
    """'pad' zero-pads the bottom/right by just enough: the same as asking for that padding."""
    geo = ref.Geometry(p.x_shape, p.w_shape, **dict(p.kw, shape_rule="pad"))
    explicit = (geo.pt, geo.pb_total, geo.pl, geo.pr_total)
    kw = dict(p.kw, padding=explicit, shape_rule="strict")
    x, w, b = p.arrays()
    y_rule = convcore.conv2d(x, w, b, **dict(p.kw, shape_rule="pad"))
    y_explicit = convcore.conv2d(x, w, b, **kw)
    assert y_rule.shape == y_explicit.shape
    ref.check_forward(y_rule, x, w, b, dtype=p.dtype, **kw)
    ref.check_forward(y_explicit, x, w, b, dtype=p.dtype, **kw)


# --- sizes around the microkernel tile and cache blocks ----------------------------------

def _edge_cases(dtype):
    """(N, C, H, W, K, (R, S), stride, padding, dilation, groups) that cross MR / NR / KC
    of the active ISA in each of the GEMM orientations the passes use:
    forward NCHW (K × HoWo × CRS), forward NHWC (N·HoWo × K × CRS),
    backward-data (CRS × HoWo × K), backward-weight (K × CRS × N·HoWo)."""
    b = blocking(dtype)
    mr, nr, kc = b["MR"], b["NR"], b["KC"]
    c_big = kc // 9 + 2                      # C·3·3 > KC: the reduction is blocked
    return [
        # K just above MR, HoWo just above NR, blocked reduction
        (2, c_big, 2, nr + 1, mr + 1, (3, 3), 1, 1, 1, 1),
        # K just below MR and 2·MR + 1, HoWo just below 2·NR
        (1, 3, 1, 2 * nr - 1, max(mr - 1, 1), (3, 3), 1, 1, 1, 1),
        (1, 5, 3, nr - 1, 2 * mr + 1, (1, 3), 1, (0, 1), 1, 1),
        # NHWC: N·HoWo around MR, K around NR
        (1, 4, 1, mr + 1, nr + 1, (1, 1), 1, 0, 1, 1),
        (3, 6, 2, mr - 1, 2 * nr - 1, (2, 2), 1, (1, 0, 0, 1), 1, 1),
        # grouped with a blocked per-group reduction, stride and dilation
        (2, 2 * c_big, 7, nr + 3, 2 * (mr + 1), (3, 3), 2, 2, (2, 1), 2),
        # depthwise, many channels
        (2, mr + 3, 6, nr + 2, 2 * (mr + 3), (3, 3), 1, 1, 1, mr + 3),
        # long reduction for backward-weight (N·HoWo > KC), rectangular kernel
        (4, 3, 13, kc // 26 + 7, mr + 1, (2, 3), 1, (1, 1), 1, 1),
        # a big 1×1 with C > KC
        (1, kc + 5, 3, 5, nr + 1, (1, 1), 1, 0, 1, 1),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", range(9))
def test_tile_edges_all_passes(isa, dtype, layout, case):
    n, c, h, w_, k, (r, s), stride, padding, dilation, groups = _edge_cases(dtype)[case]
    rng = np.random.default_rng(1000 + case)
    x_shape = (n, c, h, w_) if layout == "NCHW" else (n, h, w_, c)
    w_shape = (k, c // groups, r, s) if layout == "NCHW" else (k, r, s, c // groups)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, layout=layout,
              shape_rule="crop")
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    y = convcore.conv2d(x, w, b, activation="relu", **kw)
    ref.check_forward(y, x, w, b, activation="relu", dtype=dtype, **kw)
    dy = rng.standard_normal(y.shape).astype(dtype)
    grads = convcore.conv2d_backward(dy, x, w, **kw)
    ref.check_backward_input(grads.input, dy, w, x_shape, dtype=dtype, **kw)
    ref.check_backward_weight(grads.weight, dy, x, w_shape, dtype=dtype, **kw)
    ref.check_backward_bias(grads.bias, dy, layout, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_bias_no_activation_vs_bias(isa, dtype, rng):
    """The fused epilogue (bias / relu) and the plain path agree with each other."""
    x = rng.standard_normal((2, 5, 9, 8)).astype(dtype)
    w = rng.standard_normal((7, 5, 3, 3)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    plain = convcore.conv2d(x, w).astype(np.float64)
    with_bias = convcore.conv2d(x, w, b).astype(np.float64)
    relu = convcore.conv2d(x, w, b, activation="relu").astype(np.float64)
    expected_bias = plain + b.astype(np.float64)[None, :, None, None]
    ref.assert_close(with_bias, expected_bias, dtype)
    ref.assert_close(relu, np.maximum(expected_bias, 0), dtype)
    relu_nobias = convcore.conv2d(x, w, activation="relu").astype(np.float64)
    ref.assert_close(relu_nobias, np.maximum(plain, 0), dtype)


def test_cross_correlation_not_convolution():
    """No kernel flip: a one-hot kernel at tap (0, 0) picks the top-left of each window."""
    x = np.arange(1.0, 26.0).reshape(1, 1, 5, 5)
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 0, 0] = 1.0
    y = convcore.conv2d(x, w)
    np.testing.assert_array_equal(y[0, 0], x[0, 0, :3, :3])
    w2 = np.zeros((1, 1, 3, 3))
    w2[0, 0, 2, 1] = 1.0
    np.testing.assert_array_equal(convcore.conv2d(x, w2)[0, 0], x[0, 0, 2:5, 1:4])
