"""Bad input raises the documented exception, with a message naming the argument, and never
crashes the process (README, "Arguments and decisions")."""
from __future__ import annotations

import numpy as np
import pytest

import convcore
from convcore import ShapeError


@pytest.fixture
def xw():
    return np.zeros((2, 3, 8, 8)), np.zeros((4, 3, 3, 3))


DY = (2, 4, 6, 6)  # the output shape of xw with the defaults

# --- ndim -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8,), (3, 8), (1, 2, 3, 8, 8)])
def test_x_wrong_ndim(shape):
    with pytest.raises(ValueError, match=r"x must be 4-D"):
        convcore.conv2d(np.zeros(shape), np.zeros((4, 3, 3, 3)))


@pytest.mark.parametrize("shape", [(3, 3), (4, 3, 3), (4, 3, 3, 3, 1)])
def test_weight_wrong_ndim(shape):
    with pytest.raises(ValueError, match=r"weight must be 4-D"):
        convcore.conv2d(np.zeros((2, 3, 8, 8)), np.zeros(shape))


def test_backward_wrong_ndim(xw):
    x, w = xw
    with pytest.raises(ValueError, match=r"x must be 4-D"):
        convcore.conv2d_backward(np.zeros(DY), x[0, 0], w)
    with pytest.raises(ValueError, match=r"weight must be 4-D"):
        convcore.conv2d_backward(np.zeros(DY), x, w[0])
    with pytest.raises(ValueError, match=r"weight must be 4-D"):
        convcore.conv2d_backward_input(np.zeros(DY), w[0], x.shape)
    with pytest.raises(ValueError, match=r"input shape"):
        convcore.conv2d_backward_input(np.zeros(DY), w, x.shape[:2])
    with pytest.raises(ValueError, match=r"weight shape"):
        convcore.conv2d_backward_weight(np.zeros(DY), x, w.shape[:3])


# --- channels and groups ----------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_channel_mismatch(layout):
    x = np.zeros((2, 3, 8, 8)) if layout == "NCHW" else np.zeros((2, 8, 8, 3))
    w = np.zeros((4, 5, 3, 3)) if layout == "NCHW" else np.zeros((4, 3, 3, 5))
    with pytest.raises(ValueError, match=r"channel"):
        convcore.conv2d(x, w, layout=layout)
    with pytest.raises(ValueError, match=r"channel"):
        convcore.conv2d_output_shape(x.shape, w.shape, layout=layout)


def test_layout_mismatch_is_a_channel_error():
    # an NHWC tensor passed with the default layout: 8 "channels" vs the weight's 3
    with pytest.raises(ValueError, match=r"channel"):
        convcore.conv2d(np.zeros((2, 8, 8, 3)), np.zeros((4, 3, 3, 3)))


def test_groups_not_dividing_in_channels():
    # 6 input channels, groups=4: no weight shape can match
    with pytest.raises(ValueError, match=r"groups"):
        convcore.conv2d(np.zeros((1, 6, 8, 8)), np.zeros((4, 2, 3, 3)), groups=4)
    with pytest.raises(ValueError, match=r"groups"):
        convcore.conv2d(np.zeros((1, 6, 8, 8)), np.zeros((4, 1, 3, 3)), groups=4)


def test_groups_not_dividing_out_channels():
    with pytest.raises(ValueError, match=r"groups must divide out_channels"):
        convcore.conv2d(np.zeros((1, 6, 8, 8)), np.zeros((5, 3, 3, 3)), groups=2)


@pytest.mark.parametrize("groups,exc", [(0, ValueError), (-2, ValueError), (1.0, TypeError),
                                        ("2", TypeError)])
def test_bad_groups_value(xw, groups, exc):
    x, w = xw
    with pytest.raises(exc, match=r"groups"):
        convcore.conv2d(x, w, groups=groups)


# --- stride, dilation, padding --------------------------------------------------------------

@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("value", [0, -1, (1, 0), (0, 1), (-2, 2)])
def test_zero_or_negative_stride_dilation(xw, name, value):
    x, w = xw
    with pytest.raises(ValueError, match=name):
        convcore.conv2d(x, w, **{name: value})
    with pytest.raises(ValueError, match=name):
        convcore.conv2d_backward(np.zeros(DY), x, w, **{name: value})


@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("value", [1.5, "2", (1, 2, 3), (1.0, 1), True, None])
def test_non_integer_stride_dilation(xw, name, value):
    x, w = xw
    with pytest.raises((TypeError, ValueError), match=name):
        convcore.conv2d(x, w, **{name: value})


@pytest.mark.parametrize("padding", [-1, (0, -1), (-1, 0, 0, 0), (0, 0, 0, -3)])
def test_negative_padding(xw, padding):
    x, w = xw
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        convcore.conv2d(x, w, padding=padding)


@pytest.mark.parametrize("padding,exc", [((1, 2, 3), ValueError), ((1, 2, 3, 4, 5), ValueError),
                                         (1.5, TypeError), ((1.0, 1), TypeError),
                                         (None, TypeError)])
def test_malformed_padding(xw, padding, exc):
    x, w = xw
    with pytest.raises(exc, match=r"padding"):
        convcore.conv2d(x, w, padding=padding)


@pytest.mark.parametrize("padding", ["full", "SAME", "", "causal"])
def test_unknown_padding_string(xw, padding):
    x, w = xw
    with pytest.raises(ValueError, match=r"padding"):
        convcore.conv2d(x, w, padding=padding)


@pytest.mark.parametrize("stride", [2, (1, 2), (2, 1)])
def test_padding_same_with_stride(xw, stride):
    x, w = xw
    with pytest.raises(ValueError, match=r"padding='same'.*stride"):
        convcore.conv2d(x, w, padding="same", stride=stride)


# --- sizes that do not fit ------------------------------------------------------------------

@pytest.mark.parametrize("kernel,padding,dilation,axis", [
    ((9, 3), 0, 1, "height"), ((3, 10), 0, 1, "width"), ((11, 3), 1, 1, "height"),
    ((3, 3), 0, (1, 4), "width"), ((5, 5), 0, 2, "height"),
])
def test_kernel_larger_than_padded_input(kernel, padding, dilation, axis):
    x = np.zeros((1, 2, 8, 8))
    w = np.zeros((3, 2) + kernel)
    with pytest.raises(ShapeError, match=rf"kernel {axis}.*larger than the padded input"):
        convcore.conv2d(x, w, padding=padding, dilation=dilation)
    with pytest.raises(ShapeError):
        convcore.conv2d_output_shape(x.shape, w.shape, padding=padding, dilation=dilation)
    # A bigger padding makes the same kernel fit.
    big = tuple(k * (dilation if isinstance(dilation, int) else max(dilation)) for k in kernel)
    convcore.conv2d_output_shape(x.shape, w.shape, padding=max(big), dilation=dilation,
                                 shape_rule="crop")


@pytest.mark.parametrize("wshape", [(4, 3, 0, 3), (4, 3, 3, 0)])
def test_zero_size_kernel(xw, wshape):
    x, _ = xw
    with pytest.raises(ValueError, match=r"kernel"):
        convcore.conv2d(x, np.zeros(wshape))


def test_zero_filters_or_channels(xw):
    x, _ = xw
    with pytest.raises(ValueError, match=r"out_channels"):
        convcore.conv2d(x, np.zeros((0, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"in_channels"):
        convcore.conv2d(np.zeros((1, 0, 8, 8)), np.zeros((4, 0, 3, 3)))


def test_zero_size_image(xw):
    _, w = xw
    with pytest.raises(ValueError, match=r"height"):
        convcore.conv2d(np.zeros((1, 3, 0, 8)), w)
    with pytest.raises(ValueError, match=r"width"):
        convcore.conv2d(np.zeros((1, 3, 8, 0)), w)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_non_integer_output_in_strict_mode(layout):
    x = np.zeros((1, 2, 10, 9)) if layout == "NCHW" else np.zeros((1, 10, 9, 2))
    w = np.zeros((3, 2, 3, 3)) if layout == "NCHW" else np.zeros((3, 3, 3, 2))
    with pytest.raises(ShapeError, match=r"height.*shape_rule") as info:
        convcore.conv2d(x, w, stride=2, layout=layout)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ShapeError, match=r"width"):
        convcore.conv2d(x, w, stride=(1, 4), layout=layout)
    with pytest.raises(ShapeError):
        convcore.conv2d_backward(np.zeros((1, 3, 4, 4)), x, w, stride=2, layout=layout)
    with pytest.raises(ShapeError):
        convcore.conv2d_backward_input(np.zeros((1, 3, 4, 4)), w, x.shape, stride=2, layout=layout)
    with pytest.raises(ShapeError):
        convcore.conv2d_backward_weight(np.zeros((1, 3, 4, 4)), x, w.shape, stride=2, layout=layout)


# --- dtypes and non-arrays --------------------------------------------------------------------

BAD_DTYPES = [np.int32, np.int64, np.float16, np.complex64, np.complex128, np.bool_, object,
              np.uint8]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bad_dtype_x(dtype):
    x = np.zeros((1, 3, 8, 8), dtype=dtype)
    w = np.zeros((4, 3, 3, 3), dtype=dtype)
    with pytest.raises(TypeError, match=r"\bx\b.*dtype"):
        convcore.conv2d(x, w)
    with pytest.raises(TypeError, match=r"\bx\b.*dtype"):
        convcore.conv2d(x, np.zeros((4, 3, 3, 3)))
    with pytest.raises(TypeError, match=r"grad_output"):
        convcore.conv2d_backward_input(np.zeros((1, 4, 6, 6), dtype=dtype), w, x.shape)


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bad_dtype_weight_bias_grad(dtype):
    x = np.zeros((1, 3, 8, 8))
    with pytest.raises(TypeError, match=r"weight"):
        convcore.conv2d(x, np.zeros((4, 3, 3, 3), dtype=dtype))
    with pytest.raises(TypeError, match=r"bias"):
        convcore.conv2d(x, np.zeros((4, 3, 3, 3)), np.zeros(4, dtype=dtype))
    with pytest.raises(TypeError, match=r"grad_output"):
        convcore.conv2d_backward(np.zeros((1, 4, 6, 6), dtype=dtype), x, np.zeros((4, 3, 3, 3)))


def test_python_lists_and_scalars_are_type_errors():
    x = np.zeros((1, 3, 8, 8))
    w = np.zeros((4, 3, 3, 3))
    with pytest.raises(TypeError, match=r"\bx\b.*ndarray"):
        convcore.conv2d(x.tolist(), w)
    with pytest.raises(TypeError, match=r"weight.*ndarray"):
        convcore.conv2d(x, w.tolist())
    with pytest.raises(TypeError, match=r"bias.*ndarray"):
        convcore.conv2d(x, w, [0.0] * 4)
    with pytest.raises(TypeError, match=r"grad_output"):
        convcore.conv2d_backward(np.zeros((1, 4, 6, 6)).tolist(), x, w)
    with pytest.raises(TypeError):
        convcore.conv2d(1.0, w)
    with pytest.raises(TypeError):
        convcore.conv2d(None, w)
    with pytest.raises(TypeError, match=r"\ba\b"):
        convcore.gemm([[1.0]], np.ones((1, 1)))


@pytest.mark.parametrize("first,second", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mixed_float_dtypes(first, second):
    x = np.zeros((1, 3, 8, 8), dtype=first)
    w = np.zeros((4, 3, 3, 3), dtype=first)
    dy = np.zeros((1, 4, 6, 6), dtype=first)
    with pytest.raises(TypeError, match=r"weight.*dtype"):
        convcore.conv2d(x, w.astype(second))
    with pytest.raises(TypeError, match=r"bias.*dtype"):
        convcore.conv2d(x, w, np.zeros(4, dtype=second))
    with pytest.raises(TypeError, match=r"out.*dtype"):
        convcore.conv2d(x, w, out=np.zeros(dy.shape, dtype=second))
    with pytest.raises(TypeError, match=r"grad_output.*dtype"):
        convcore.conv2d_backward(dy.astype(second), x, w)
    with pytest.raises(TypeError, match=r"weight.*dtype"):
        convcore.conv2d_backward(dy, x, w.astype(second))
    with pytest.raises(TypeError, match=r"dtype"):
        convcore.conv2d_backward_input(dy, w.astype(second), x.shape)
    with pytest.raises(TypeError, match=r"dtype"):
        convcore.conv2d_backward_weight(dy.astype(second), x, w.shape)


# --- bias -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3,), (5,), (4, 1), (1, 4), (), (0,)])
def test_bias_wrong_shape(xw, shape):
    x, w = xw
    with pytest.raises(ValueError, match=r"bias"):
        convcore.conv2d(x, w, np.zeros(shape))


def test_backward_bias_flag_must_be_bool(xw):
    x, w = xw
    with pytest.raises(TypeError, match=r"bias"):
        convcore.conv2d_backward(np.zeros(DY), x, w, bias=np.zeros(4))


# --- string options -------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["nchw", "NCWH", "CHW", "", None, 0])
def test_unknown_layout(xw, layout):
    x, w = xw
    with pytest.raises(ValueError, match=r"layout"):
        convcore.conv2d(x, w, layout=layout)
    with pytest.raises(ValueError, match=r"layout"):
        convcore.conv2d_output_shape(x.shape, w.shape, layout=layout)


@pytest.mark.parametrize("rule", ["Strict", "floor", "ceil", "", None])
def test_unknown_shape_rule(xw, rule):
    x, w = xw
    with pytest.raises(ValueError, match=r"shape_rule"):
        convcore.conv2d(x, w, shape_rule=rule)
    with pytest.raises(ValueError, match=r"shape_rule"):
        convcore.conv2d_backward(np.zeros(DY), x, w, shape_rule=rule)


@pytest.mark.parametrize("act", ["ReLU", "sigmoid", "", "none", True])
def test_unknown_activation(xw, act):
    x, w = xw
    with pytest.raises(ValueError, match=r"activation"):
        convcore.conv2d(x, w, activation=act)


# --- grad_output ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 4, 6, 5), (2, 4, 5, 6), (2, 3, 6, 6), (1, 4, 6, 6),
                                   (4, 6, 6), (2, 6, 6, 4)])
def test_wrong_grad_output_shape(xw, shape):
    x, w = xw
    dy = np.zeros(shape)
    with pytest.raises(ValueError, match=r"grad_output"):
        convcore.conv2d_backward(dy, x, w)
    with pytest.raises(ValueError, match=r"grad_output"):
        convcore.conv2d_backward_input(dy, w, x.shape)
    with pytest.raises(ValueError, match=r"grad_output"):
        convcore.conv2d_backward_weight(dy, x, w.shape)


# --- out= -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 4, 6, 7), (2, 4, 36), (4, 6, 6), (1, 2, 4, 6, 6), (0,)])
def test_out_wrong_shape(xw, shape):
    x, w = xw
    out = np.zeros(shape)
    with pytest.raises(ValueError, match=r"out.*shape"):
        convcore.conv2d(x, w, out=out)


def test_out_wrong_dtype(xw):
    x, w = xw
    for dtype in (np.float32, np.int64, np.float16):
        with pytest.raises(TypeError, match=r"out.*dtype"):
            convcore.conv2d(x, w, out=np.zeros(DY, dtype=dtype))


def test_out_not_an_array(xw):
    x, w = xw
    with pytest.raises(TypeError, match=r"out"):
        convcore.conv2d(x, w, out=np.zeros(DY).tolist())


def test_out_read_only(xw):
    x, w = xw
    out = np.zeros(DY)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"out.*read-only"):
        convcore.conv2d(x, w, out=out)
    assert (out == 0).all()


def test_out_must_be_exact(xw):
    """out= is written in place: a non-contiguous, Fortran or misaligned array is refused
    rather than silently copied; so is one that overlaps an input."""
    x, w = xw
    for out in (np.zeros((2, 4, 6, 12))[..., ::2], np.asfortranarray(np.zeros(DY)),
                np.zeros(DY).transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)):
        with pytest.raises(ValueError, match=r"out"):
            convcore.conv2d(x, w, out=out)
    buf = np.zeros(int(np.prod(DY)) * 8 + 1, np.uint8)
    with pytest.raises(ValueError, match=r"out"):
        convcore.conv2d(x, w, out=buf[1:].view(np.float64).reshape(DY))
    # an out that overlaps an input
    nx, ny = 2 * 3 * 8 * 8, int(np.prod(DY))
    buf = np.zeros(nx + ny)
    x_in = buf[:nx].reshape(2, 3, 8, 8)
    out = buf[nx - 10:nx - 10 + ny].reshape(DY)
    with pytest.raises(ValueError, match=r"out"):
        convcore.conv2d(x_in, w, out=out)
    assert (x_in == 0).all()


# --- sizes too large --------------------------------------------------------------------------

def test_huge_batch_output_shape():
    with pytest.raises((MemoryError, ValueError)):
        convcore.conv2d_output_shape((2**62, 3, 8, 8), (4, 3, 3, 3))
    with pytest.raises((MemoryError, ValueError)):
        convcore.conv2d_output_shape((2**40, 2**10, 2**10, 2**10), (4, 2**10, 1, 1))
    with pytest.raises((MemoryError, ValueError)):
        convcore.conv2d_output_shape((1, 1, 8, 8), (2**62, 1, 3, 3))
    with pytest.raises((MemoryError, ValueError)):
        convcore.conv2d_output_shape((1, 3, 2**62, 8), (4, 3, 3, 3))


@pytest.mark.parametrize("kw", [dict(stride=2**64), dict(padding=2**63), dict(dilation=2**63),
                                dict(padding=(0, 2**70, 0, 0))], ids=str)
def test_huge_hyperparameters_are_size_errors(kw):
    """Integers beyond 64 bits are sizes that overflow (MemoryError) or bad values
    (ValueError) -- not a TypeError about the binding's signature."""
    with pytest.raises((MemoryError, ValueError)):
        convcore.conv2d_output_shape((1, 3, 8, 8), (4, 3, 3, 3), **kw)


def test_huge_dimension_beyond_64_bits():
    with pytest.raises((MemoryError, ValueError)):
        convcore.conv2d_output_shape((2**64, 3, 8, 8), (4, 3, 3, 3))


def test_huge_input_through_zero_stride_view():
    """Broadcast views have no memory behind them; the sizes still overflow or cannot be
    allocated, and the process survives."""
    w = np.ones((1, 1, 1, 1), np.float32)
    x = np.broadcast_to(np.zeros((), np.float32), (2**20, 1, 2**20, 2**20))  # 2**60 elements
    with pytest.raises((MemoryError, ValueError)):
        convcore.conv2d(x, w)
    # a plan that fits (a 4 MiB output) but an input whose contiguous copy would be 1 EiB
    x = np.broadcast_to(np.zeros((), np.float32), (2**20, 1, 2**20, 2**18))
    with pytest.raises((MemoryError, ValueError)):
        convcore.conv2d(x, w, stride=(2**20, 2**18), shape_rule="crop")
    # still alive and working
    y = convcore.conv2d(np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 3, 3), np.float32))
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 9


def test_huge_weight_through_zero_stride_view():
    # 2**40 input elements times 2**30 filters: the output's element count overflows
    x = np.broadcast_to(np.zeros(()), (2**20, 1, 2**10, 2**10))
    w = np.broadcast_to(np.zeros(()), (2**30, 1, 1, 1))
    with pytest.raises((MemoryError, ValueError)):
        convcore.conv2d(x, w)


# --- gemm -------------------------------------------------------------------------------------

@pytest.mark.parametrize("a_shape,b_shape", [((3,), (3, 3)), ((2, 3), (3,)), ((1, 2, 3), (3, 3)),
                                             ((), (1, 1))])
def test_gemm_not_2d(a_shape, b_shape):
    with pytest.raises(ValueError, match=r"2-D"):
        convcore.gemm(np.zeros(a_shape), np.zeros(b_shape))


def test_gemm_inner_dimensions():
    with pytest.raises(ValueError, match=r"a.shape\[1\] must equal b.shape\[0\]"):
        convcore.gemm(np.zeros((2, 3)), np.zeros((4, 3)))


def test_gemm_dtypes():
    with pytest.raises(TypeError, match=r"dtype"):
        convcore.gemm(np.zeros((2, 3)), np.zeros((3, 3), np.float32))
    with pytest.raises(TypeError, match=r"dtype"):
        convcore.gemm(np.zeros((2, 3), np.float32), np.zeros((3, 3)))
    with pytest.raises(TypeError, match=r"dtype"):
        convcore.gemm(np.zeros((2, 3), int), np.zeros((3, 3), int))
    with pytest.raises(TypeError, match=r"dtype"):
        convcore.gemm(np.zeros((2, 3), np.complex128), np.zeros((3, 3), np.complex128))
    with pytest.raises(TypeError, match=r"out.*dtype"):
        convcore.gemm(np.zeros((2, 3)), np.zeros((3, 3)), out=np.zeros((2, 3), np.float32))


def test_gemm_out_errors():
    a, b = np.zeros((2, 3)), np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"out.*shape"):
        convcore.gemm(a, b, out=np.zeros((4, 2)))
    ro = np.zeros((2, 4))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"out.*read-only"):
        convcore.gemm(a, b, out=ro)
    with pytest.raises(ValueError, match=r"out"):
        convcore.gemm(a, b, out=np.zeros((4, 2)).T)
    with pytest.raises(ValueError, match=r"out"):
        sq = np.zeros((3, 3))
        convcore.gemm(sq, sq, out=sq)


# --- threads, ISA, layer ------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, -1, -100])
def test_set_num_threads_invalid(restore_threads, n):
    with pytest.raises(ValueError, match=r"n must be >= 1"):
        convcore.set_num_threads(n)
    assert convcore.get_num_threads() == restore_threads


@pytest.mark.parametrize("n", [1.0, "2", None])
def test_set_num_threads_type(restore_threads, n):
    with pytest.raises(TypeError):
        convcore.set_num_threads(n)


def test_set_isa_unknown():
    before = convcore._core.get_isa()
    with pytest.raises(ValueError, match=r"isa"):
        convcore._core.set_isa("sse9")
    assert convcore._core.get_isa() == before


def test_num_params_errors():
    with pytest.raises(ValueError, match=r"kernel_size"):
        convcore.conv2d_num_params(3, 4, 0)
    with pytest.raises(ValueError, match=r"groups"):
        convcore.conv2d_num_params(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"in_channels"):
        convcore.conv2d_num_params(0, 4, 3)
    with pytest.raises(TypeError, match=r"out_channels"):
        convcore.conv2d_num_params(3, 4.0, 3)


def test_layer_construction_errors():
    with pytest.raises(TypeError, match=r"dtype"):
        convcore.Conv2d(3, 4, 3, dtype="int32")
    with pytest.raises(ValueError, match=r"padding"):
        convcore.Conv2d(3, 4, 3, padding="foo")
    with pytest.raises(ValueError, match=r"padding='same'"):
        convcore.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"layout"):
        convcore.Conv2d(3, 4, 3, layout="CHWN")
    with pytest.raises(ValueError, match=r"activation"):
        convcore.Conv2d(3, 4, 3, activation="tanh")
    with pytest.raises(ValueError, match=r"groups"):
        convcore.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(TypeError, match=r"rng"):
        convcore.Conv2d(3, 4, 3, rng="seed")


def test_layer_forward_errors():
    layer = convcore.Conv2d(3, 4, 3, rng=0)
    with pytest.raises(TypeError, match=r"dtype"):
        layer.forward(np.zeros((1, 3, 8, 8)))  # float64 into a float32 layer
    with pytest.raises(ValueError, match=r"channel"):
        layer.forward(np.zeros((1, 5, 8, 8), np.float32))
    with pytest.raises(TypeError):
        layer.forward(np.zeros((1, 3, 8, 8)).tolist())
