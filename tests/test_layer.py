"""The Conv2d layer object."""
from __future__ import annotations

import numpy as np
import pytest

import convcore
import reference as ref


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("groups", [1, 2, 6])
@pytest.mark.parametrize("kernel", [3, (2, 5)])
def test_parameter_shapes_and_count(layout, groups, kernel):
    r, s = (kernel, kernel) if isinstance(kernel, int) else kernel
    layer = convcore.Conv2d(6, 12, kernel, groups=groups, layout=layout, rng=0)
    expected_w = (12, 6 // groups, r, s) if layout == "NCHW" else (12, r, s, 6 // groups)
    assert layer.weight.shape == expected_w
    assert layer.bias.shape == (12,)
    assert layer.weight.dtype == layer.bias.dtype == np.float32
    assert layer.num_params == 12 * (6 // groups) * r * s + 12
    assert layer.num_params == layer.weight.size + layer.bias.size
    assert layer.num_params == convcore.conv2d_num_params(6, 12, kernel, groups=groups)
    no_bias = convcore.Conv2d(6, 12, kernel, groups=groups, layout=layout, bias=False, rng=0)
    assert no_bias.bias is None
    assert no_bias.num_params == 12 * (6 // groups) * r * s
    assert convcore.conv2d_num_params(6, 12, kernel, groups=groups, bias=False) == no_bias.num_params


def test_initialisation_bounds():
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = (C/groups)·R·S (the layer's documented init)
    layer = convcore.Conv2d(8, 16, (3, 2), groups=2, rng=1)
    bound = 1 / np.sqrt(4 * 3 * 2)
    assert np.abs(layer.weight).max() <= bound
    assert np.abs(layer.bias).max() <= bound
    assert layer.weight.std() > bound / 4  # not all zero / degenerate


def test_rng_seed_determinism():
    a = convcore.Conv2d(3, 8, 3, rng=42)
    b = convcore.Conv2d(3, 8, 3, rng=42)
    c = convcore.Conv2d(3, 8, 3, rng=43)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    assert not np.array_equal(a.weight, c.weight)
    g1 = np.random.default_rng(7)
    g2 = np.random.default_rng(7)
    np.testing.assert_array_equal(convcore.Conv2d(3, 8, 3, rng=g1).weight,
                                  convcore.Conv2d(3, 8, 3, rng=g2).weight)


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_forward_equals_conv2d(dtype, layout, rng):
    kw = dict(stride=2, padding=1, dilation=1, groups=2, layout=layout, shape_rule="crop")
    layer = convcore.Conv2d(4, 6, 3, dtype=dtype, rng=3, **kw)
    assert layer.weight.dtype == np.dtype(dtype)
    xs = (2, 4, 9, 10) if layout == "NCHW" else (2, 9, 10, 4)
    x = rng.standard_normal(xs).astype(dtype)
    y = layer.forward(x)
    np.testing.assert_array_equal(y, convcore.conv2d(x, layer.weight, layer.bias, **kw))
    np.testing.assert_array_equal(layer(x), y)
    ref.assert_close(y, ref.conv2d(x, layer.weight, layer.bias, **kw), np.dtype(dtype))
    assert layer.output_shape(xs) == y.shape


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("bias", [True, False])
def test_backward_equals_conv2d_backward(dtype, layout, bias, rng):
    kw = dict(stride=(1, 2), padding=(1, 0), layout=layout, shape_rule="pad")
    layer = convcore.Conv2d(3, 5, (3, 2), bias=bias, dtype=dtype, rng=4, **kw)
    xs = (2, 3, 8, 9) if layout == "NCHW" else (2, 8, 9, 3)
    x = rng.standard_normal(xs).astype(dtype)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    g = convcore.conv2d_backward(dy, x, layer.weight, bias=bias, **kw)
    np.testing.assert_array_equal(dx, g.input)
    np.testing.assert_array_equal(layer.grad_weight, g.weight)
    if bias:
        np.testing.assert_array_equal(layer.grad_bias, g.bias)
    else:
        assert layer.grad_bias is None
    ref.assert_close(dx, ref.conv2d_backward_input(dy, layer.weight, xs, **kw), np.dtype(dtype))
    ref.assert_close(layer.grad_weight, ref.conv2d_backward_weight(dy, x, layer.weight.shape, **kw),
                     np.dtype(dtype))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_relu_backward_masks_by_the_output(layout, rng):
    kw = dict(padding=1, layout=layout)
    layer = convcore.Conv2d(3, 4, 3, activation="relu", dtype="float64", rng=5, **kw)
    xs = (2, 3, 7, 7) if layout == "NCHW" else (2, 7, 7, 3)
    x = rng.standard_normal(xs)
    y = layer.forward(x)
    pre = ref.conv2d(x, layer.weight, layer.bias, **kw)
    ref.assert_close(y, np.maximum(pre, 0))
    assert (y == 0).any() and (y > 0).any()
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    masked = np.where(y > 0, dy, 0.0)
    ref.assert_close(dx, ref.conv2d_backward_input(masked, layer.weight, xs, **kw))
    ref.assert_close(layer.grad_weight, ref.conv2d_backward_weight(masked, x, layer.weight.shape, **kw))
    ref.assert_close(layer.grad_bias, ref.conv2d_backward_bias(masked, layout))
    # the unmasked gradient differs
    assert ref.rel_err(dx, ref.conv2d_backward_input(dy, layer.weight, xs, **kw)) > 1e-3


def test_relu_layer_finite_differences(rng):
    """L = <relu(conv(x)), dy>: away from kinks the layer's gradient is the derivative."""
    layer = convcore.Conv2d(2, 3, 3, padding=1, activation="relu", dtype="float64", rng=6)
    x = rng.standard_normal((1, 2, 6, 6))
    dy = rng.standard_normal((1, 3, 6, 6))
    layer.forward(x)
    dx = layer.backward(dy)
    v = rng.standard_normal(x.shape)
    eps = 1e-6
    fd = (np.vdot(layer.forward(x + eps * v), dy) - np.vdot(layer.forward(x - eps * v), dy)) / (2 * eps)
    assert abs(fd - np.vdot(dx, v)) <= 1e-5 * (abs(fd) + 1)


def test_backward_before_forward_raises():
    layer = convcore.Conv2d(3, 4, 3, rng=0)
    with pytest.raises(RuntimeError, match=r"forward"):
        layer.backward(np.zeros((1, 4, 6, 6), np.float32))


def test_backward_uses_the_last_forward(rng):
    layer = convcore.Conv2d(2, 3, 3, dtype="float64", rng=0)
    x1 = rng.standard_normal((1, 2, 5, 5))
    x2 = rng.standard_normal((2, 2, 7, 7))
    layer.forward(x1)
    layer.forward(x2)
    dy = rng.standard_normal((2, 3, 5, 5))
    dx = layer.backward(dy)
    assert dx.shape == x2.shape
    ref.assert_close(layer.grad_weight, ref.conv2d_backward_weight(dy, x2, layer.weight.shape))


def test_unbatched_forward_backward(rng):
    layer = convcore.Conv2d(3, 4, 3, padding="same", layout="NHWC", dtype="float64", rng=0)
    x = rng.standard_normal((6, 5, 3))
    y = layer.forward(x)
    assert y.shape == (6, 5, 4)
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape
    ref.assert_close(layer.grad_bias, np.full(4, 30.0))


def test_layer_hyperparameters_and_repr():
    layer = convcore.Conv2d(4, 8, (3, 1), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                            groups=2, bias=False, layout="NHWC", activation="relu",
                            dtype="float64", rng=0)
    assert layer.kernel_size == (3, 1) and layer.stride == (2, 1) and layer.dilation == (1, 2)
    assert layer.groups == 2 and layer.layout == "NHWC" and layer.activation == "relu"
    text = repr(layer)
    assert text.startswith("Conv2d(") and "float64" in text


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_prepacked_weights_follow_every_documented_change(isa, layout, rng):
    """The layer keeps its weights prepacked per input shape; each documented way of
    changing them is seen by the next call (results equal the functional call bitwise)."""
    kw = dict(padding=1, layout=layout)
    layer = convcore.Conv2d(8, 16, 3, rng=5, **kw)
    xs = (2, 8, 7, 9) if layout == "NCHW" else (2, 7, 9, 8)
    x = rng.standard_normal(xs).astype(np.float32)
    x_other = rng.standard_normal((1,) + xs[1:]).astype(np.float32)

    def check():
        for inp in (x, x_other):  # two cached primitives
            y = layer.forward(inp)
            np.testing.assert_array_equal(y, convcore.conv2d(inp, layer.weight, layer.bias, **kw))
            dy = np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
            layer.zero_grad()  # gradients accumulate across backward calls otherwise
            dx = layer.backward(dy)
            g = convcore.conv2d_backward(dy, inp, layer.weight, **kw)
            np.testing.assert_array_equal(dx, g.input)
            np.testing.assert_array_equal(layer.grad_weight, g.weight)

    check()
    layer.weight = rng.standard_normal(layer.weight.shape).astype(np.float32)  # assignment
    check()
    layer.weight -= 0.5 * layer.grad_weight                                     # SGD step
    check()
    layer.weight[0] = 3.0                                                       # in place ...
    layer.weight_changed()                                                      # ... signalled
    check()
    with pytest.raises(ValueError, match="weight must have shape"):
        layer.weight = np.ones((1, 2, 3, 4), dtype=np.float32)


def test_layer_reuses_its_primitive():
    layer = convcore.Conv2d(3, 4, 3, rng=0)
    x = np.ones((1, 3, 6, 6), dtype=np.float32)
    layer.forward(x)
    layer.forward(x)
    assert len(layer._primitives) == 1
    for n in range(2, 9):
        layer.forward(np.ones((n, 3, 6, 6), dtype=np.float32))
    assert len(layer._primitives) == 4  # bounded
