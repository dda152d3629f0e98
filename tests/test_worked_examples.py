"""Every worked number of the CS231n notes' convolutional-layer section, as a named test.

Expected values come from the arithmetic stated in the design (W2 = (W1 − F + 2P)/S + 1,
parameter counts) or from the independent reference in reference.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import convcore
import reference as ref
from convcore import ShapeError

MINUS = "\u2212"  # the C++ messages print the arithmetic with a real minus sign


def out_size(w1: int, f: int, s: int, p: int) -> float:
    """W2 = (W1 − F + 2P)/S + 1, as a real number (the CS231n notes)."""
    return (w1 - f + 2 * p) / s + 1


def square_shape(w1: int, f: int, s: int, p: int, **kw):
    """convcore's output (H, W) for a one-channel square image."""
    shape = convcore.conv2d_output_shape((1, 1, w1, w1), (1, 1, f, f), stride=s, padding=p, **kw)
    assert shape[:2] == (1, 1)
    return shape[2:]


def run_square(w1: int, f: int, s: int, p: int, rng, **kw):
    """Runs a real convolution and checks it against the reference."""
    x = rng.standard_normal((2, 3, w1, w1))
    w = rng.standard_normal((4, 3, f, f))
    b = rng.standard_normal(4)
    y = convcore.conv2d(x, w, b, stride=s, padding=p, **kw)
    ref.assert_close(y, ref.conv2d(x, w, b, stride=s, padding=p, **kw), what="conv2d")
    return y.shape[2:]


# --- 7×7 input, F=3 ----------------------------------------------------------------------

def test_7x7_f3_s1_gives_5x5(rng):
    assert out_size(7, 3, 1, 0) == 5
    assert square_shape(7, 3, 1, 0) == (5, 5)
    assert run_square(7, 3, 1, 0, rng) == (5, 5)


def test_7x7_f3_s2_gives_3x3(rng):
    assert out_size(7, 3, 2, 0) == 3
    assert square_shape(7, 3, 2, 0) == (3, 3)
    assert run_square(7, 3, 2, 0, rng) == (3, 3)


# --- W=5, F=3, P=1 -----------------------------------------------------------------------

def test_w5_f3_p1_s1_gives_5(rng):
    assert out_size(5, 3, 1, 1) == 5
    assert square_shape(5, 3, 1, 1) == (5, 5)
    assert run_square(5, 3, 1, 1, rng) == (5, 5)


def test_w5_f3_p1_s2_gives_3(rng):
    assert out_size(5, 3, 2, 1) == 3
    assert square_shape(5, 3, 2, 1) == (3, 3)
    assert run_square(5, 3, 2, 1, rng) == (3, 3)


def test_w5_f3_p1_s3_is_invalid(rng):
    assert out_size(5, 3, 3, 1) != int(out_size(5, 3, 3, 1))  # 7/3 + 1
    with pytest.raises(ShapeError):
        square_shape(5, 3, 3, 1)
    with pytest.raises(ShapeError):
        convcore.conv2d(rng.standard_normal((1, 1, 5, 5)), rng.standard_normal((1, 1, 3, 3)),
                        stride=3, padding=1)


# --- W=10, F=3, P=0, S=2 → 4.5 -----------------------------------------------------------

def test_w10_f3_s2_is_invalid_and_message_shows_the_arithmetic(rng):
    assert out_size(10, 3, 2, 0) == 4.5
    x = rng.standard_normal((1, 1, 10, 10))
    w = rng.standard_normal((1, 1, 3, 3))
    with pytest.raises(ShapeError) as info:
        convcore.conv2d(x, w, stride=2)
    msg = str(info.value)
    assert f"(10 {MINUS} 3 + 0)/2 + 1 = 4.5" in msg, msg
    assert "'crop'" in msg and "'pad'" in msg, msg
    assert "stride" in msg, msg


def test_shape_error_is_a_value_error():
    assert issubclass(ShapeError, ValueError)
    with pytest.raises(ValueError):
        convcore.conv2d_output_shape((1, 1, 10, 10), (1, 1, 3, 3), stride=2)


def test_w10_f3_s2_crop_and_pad(rng):
    # crop drops the last column that does not fit: ⌊7/2⌋ + 1 = 4; pad adds one: 5.
    assert square_shape(10, 3, 2, 0, shape_rule="crop") == (4, 4)
    assert square_shape(10, 3, 2, 0, shape_rule="pad") == (5, 5)
    assert run_square(10, 3, 2, 0, rng, shape_rule="crop") == (4, 4)
    assert run_square(10, 3, 2, 0, rng, shape_rule="pad") == (5, 5)


# --- AlexNet conv1 -----------------------------------------------------------------------

ALEX = dict(K=96, F=11, S=4, D=3)


def test_alexnet_conv1_output_shape():
    k, f, s, d = ALEX["K"], ALEX["F"], ALEX["S"], ALEX["D"]
    assert out_size(227, f, s, 0) == 55
    assert convcore.conv2d_output_shape((227, 227, d), (k, f, f, d), stride=s,
                                        layout="NHWC") == (55, 55, 96)
    assert convcore.conv2d_output_shape((1, d, 227, 227), (k, d, f, f), stride=s) == (1, 96, 55, 55)


def test_alexnet_conv1_parameter_counts():
    k, f, d = ALEX["K"], ALEX["F"], ALEX["D"]
    weights = f * f * d * k
    assert weights == 34_848
    assert weights + k == 34_944
    assert convcore.conv2d_num_params(d, k, f) == 34_944
    assert convcore.conv2d_num_params(d, k, (f, f), bias=False) == 34_848
    for layout in ("NCHW", "NHWC"):
        layer = convcore.Conv2d(d, k, f, stride=4, layout=layout, rng=0)
        assert layer.num_params == 34_944
        assert layer.weight.size + layer.bias.size == 34_944


def test_alexnet_conv1_without_parameter_sharing():
    k, f, s, d = ALEX["K"], ALEX["F"], ALEX["S"], ALEX["D"]
    ho, wo, kk = convcore.conv2d_output_shape((227, 227, d), (k, f, f, d), stride=s,
                                              layout="NHWC")
    assert ho * wo * kk * (f * f * d + 1) == 105_705_600


def test_alexnet_conv1_forward(rng):
    k, f, s, d = ALEX["K"], ALEX["F"], ALEX["S"], ALEX["D"]
    x = rng.standard_normal((227, 227, d)).astype(np.float32)
    w = rng.standard_normal((k, f, f, d)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    y = convcore.conv2d(x, w, b, stride=s, layout="NHWC")
    assert y.shape == (55, 55, 96)
    ref.assert_close(y, ref.conv2d(x, w, b, stride=s, layout="NHWC"), np.float32)


def test_alexnet_224_input_is_invalid_in_strict_mode():
    # (224 − 11)/4 + 1 = 54.25
    assert out_size(224, 11, 4, 0) == 54.25
    with pytest.raises(ShapeError, match="54.25"):
        convcore.conv2d_output_shape((1, 224, 224, 3), (96, 11, 11, 3), stride=4, layout="NHWC")


def test_alexnet_224_input_with_3_pixels_of_padding_gives_55(rng):
    # (224 − 11 + 3)/4 + 1 = 55, padding the bottom and the right only.
    assert (224 - 11 + 3) / 4 + 1 == 55
    assert convcore.conv2d_output_shape((1, 224, 224, 3), (96, 11, 11, 3), stride=4,
                                        padding=(0, 3, 0, 3), layout="NHWC") == (1, 55, 55, 96)
    x = rng.standard_normal((1, 3, 224, 224))
    w = rng.standard_normal((8, 3, 11, 11))
    y = convcore.conv2d(x, w, stride=4, padding=(0, 3, 0, 3))
    assert y.shape == (1, 8, 55, 55)
    ref.assert_close(y, ref.conv2d(x, w, stride=4, padding=(0, 3, 0, 3)))


def test_alexnet_224_input_crop_and_pad(rng):
    x = rng.standard_normal((1, 3, 224, 224))
    w = rng.standard_normal((8, 3, 11, 11))
    b = rng.standard_normal(8)
    # crop: ⌊213/4⌋ + 1 = 54 windows, using rows/columns 0 .. 53·4 + 10 = 222.
    crop = convcore.conv2d(x, w, b, stride=4, shape_rule="crop")
    assert crop.shape == (1, 8, 54, 54)
    ref.assert_close(crop, ref.conv2d(x, w, b, stride=4, shape_rule="crop"))
    ref.assert_close(crop, ref.conv2d(x[:, :, :223, :223], w, b, stride=4))
    # pad: 3 more zero rows/columns at the bottom/right → 55, the same as padding (0,3,0,3).
    pad = convcore.conv2d(x, w, b, stride=4, shape_rule="pad")
    assert pad.shape == (1, 8, 55, 55)
    ref.assert_close(pad, ref.conv2d(x, w, b, stride=4, padding=(0, 3, 0, 3)))
    explicit = convcore.conv2d(x, w, b, stride=4, padding=(0, 3, 0, 3))
    ref.assert_close(pad, explicit)


# --- X (11, 11, 4), F=5, S=2 → V (4, 4, K) ------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_11x11x4_nhwc_unbatched_example(rng, dtype):
    K, F, S = 3, 5, 2
    X = rng.standard_normal((11, 11, 4)).astype(dtype)
    W = rng.standard_normal((K, F, F, 4)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    assert W[0].shape == (5, 5, 4)
    V = convcore.conv2d(X, W, b, stride=S, layout="NHWC")
    assert V.shape == (4, 4, K)
    assert V.dtype == dtype
    X64, W64, b64 = X.astype(np.float64), W.astype(np.float64), b.astype(np.float64)
    tol = ref.tolerance(dtype)
    for i in range(4):
        for j in range(4):
            for d in range(K):
                expected = np.sum(X64[i * S:i * S + F, j * S:j * S + F, :] * W64[d]) + b64[d]
                scale = np.sum(np.abs(X64[i * S:i * S + F, j * S:j * S + F, :] * W64[d])) + abs(b64[d])
                assert abs(V[i, j, d] - expected) <= 10 * tol * scale, (i, j, d)


# --- P = (F − 1)/2 with S = 1 keeps the spatial size -------------------------------------

@pytest.mark.parametrize("f", [1, 3, 5, 7, 9])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_half_padding_keeps_spatial_size(rng, f, layout):
    p = (f - 1) // 2
    h, w = 9, 12
    x_shape = (2, 3, h, w) if layout == "NCHW" else (2, h, w, 3)
    w_shape = (4, 3, f, f) if layout == "NCHW" else (4, f, f, 3)
    shape = convcore.conv2d_output_shape(x_shape, w_shape, padding=p, layout=layout)
    spatial = shape[2:] if layout == "NCHW" else shape[1:3]
    assert spatial == (h, w)
    x = rng.standard_normal(x_shape)
    wt = rng.standard_normal(w_shape)
    y = convcore.conv2d(x, wt, padding=p, layout=layout)
    ref.assert_close(y, ref.conv2d(x, wt, padding=p, layout=layout))
    # padding='same' is the same thing for odd F.
    same = convcore.conv2d(x, wt, padding="same", layout=layout)
    ref.assert_close(same, ref.conv2d(x, wt, padding=p, layout=layout))


@pytest.mark.parametrize("kernel,dilation", [((2, 4), 1), ((3, 2), (2, 3)), ((4, 4), 2), ((1, 6), 1)])
def test_padding_same_keeps_spatial_size_for_any_kernel(rng, kernel, dilation):
    x = rng.standard_normal((1, 2, 8, 11))
    w = rng.standard_normal((3, 2) + kernel)
    y = convcore.conv2d(x, w, padding="same", dilation=dilation)
    assert y.shape == (1, 3, 8, 11)
    # An odd total puts the extra row/column at the bottom/right.
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    th, tw = dh * (kernel[0] - 1), dw * (kernel[1] - 1)
    explicit = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ref.assert_close(y, ref.conv2d(x, w, padding=explicit, dilation=dilation))


# --- parameter sharing: one weight set per depth slice -----------------------------------

def test_parameter_sharing_gradients_are_summed_over_positions(rng):
    # dL/dW[d] is the sum over every position (and image) of dL/dV[.., d, i, j] · window;
    # dL/db[d] is the sum of dL/dV over the slice.
    x = rng.standard_normal((2, 11, 11, 4))
    w = rng.standard_normal((3, 5, 5, 4))
    dy = rng.standard_normal((2, 4, 4, 3))
    grads = convcore.conv2d_backward(dy, x, w, stride=2, layout="NHWC")
    expected_w = np.zeros_like(w)
    for n in range(2):
        for i in range(4):
            for j in range(4):
                for d in range(3):
                    expected_w[d] += dy[n, i, j, d] * x[n, i * 2:i * 2 + 5, j * 2:j * 2 + 5, :]
    ref.assert_close(grads.weight, expected_w)
    ref.assert_close(grads.bias, dy.sum(axis=(0, 1, 2)))
