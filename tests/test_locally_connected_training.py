"""LocallyConnected2d as a layer that trains, like Conv2d (the machinery is shared through
layers._Layer): gradient accumulation and zero_grad(), parameters() for an optimiser
updating arrays in place (never stale prepacked weights), state_dict() / load_state_dict(),
requires_input_grad=False and init="he"."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import convcore
from reference import assert_close
from test_locally_connected import ref_backward, ref_forward


def _x_shape(layout, n, c, h, w):
    return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)


def _layer(rng_seed=1, *, layout="NCHW", bias=True, dtype="float64", **kw):
    """A small layer: 3 -> 4 channels, 3×3, input 6×7, stride (1, 2), padding 1."""
    return convcore.LocallyConnected2d(3, 4, 3, (6, 7), stride=(1, 2), padding=1,
                                       bias=bias, layout=layout, dtype=dtype, rng=rng_seed,
                                       **kw)


_KW = dict(stride=(1, 2), padding=1)


# --- accumulation ------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("bias", [True, False])
def test_lc_gradients_accumulate_until_zero_grad(layout, bias, rng):
    layer = _layer(layout=layout, bias=bias)
    assert layer.grad_weight is None and layer.grad_bias is None  # None until a backward
    x1 = rng.standard_normal(_x_shape(layout, 2, 3, 6, 7))
    x2 = rng.standard_normal(_x_shape(layout, 3, 3, 6, 7))  # another batch size too

    singles = []
    for x in (x1, x2):  # each gradient on its own (a fresh layer with the same weights)
        fresh = _layer(layout=layout, bias=bias)
        y = fresh.forward(x)
        dy = np.sin(np.arange(y.size, dtype=np.float64)).reshape(y.shape) + 0.25
        fresh.backward(dy)
        singles.append((dy, fresh.grad_weight, fresh.grad_bias))

    for x, (dy, _, _) in zip((x1, x2), singles):
        layer.forward(x)
        layer.backward(dy)
    (dy1, gw1, gb1), (dy2, gw2, gb2) = singles
    np.testing.assert_array_equal(layer.grad_weight, gw1 + gw2)  # float64: the same sum
    if bias:
        np.testing.assert_array_equal(layer.grad_bias, gb1 + gb2)
    else:
        assert layer.grad_bias is None
    # the sum is the gradient of the two-batch loss (the float64 reference, independently)
    kw = dict(layout=layout, **_KW)
    _, rdw1, rdb1 = ref_backward(dy1, x1, layer.weight, **kw)
    _, rdw2, rdb2 = ref_backward(dy2, x2, layer.weight, **kw)
    assert_close(layer.grad_weight, rdw1 + rdw2, np.float64, "accumulated dw")
    if bias:
        assert_close(layer.grad_bias, rdb1 + rdb2, np.float64, "accumulated db")

    layer.zero_grad()
    assert layer.grad_weight is None and layer.grad_bias is None
    layer.forward(x2)
    layer.backward(dy2)
    np.testing.assert_array_equal(layer.grad_weight, gw2)  # set, not added
    if bias:
        np.testing.assert_array_equal(layer.grad_bias, gb2)


def test_lc_zero_grad_keep_arrays_fills_zeros_in_place(rng):
    layer = _layer()
    x = rng.standard_normal((1, 3, 6, 7))
    layer.forward(x)
    dy = rng.standard_normal((1, 4, 6, 4))
    layer.backward(dy)
    gw, gb = layer.grad_weight, layer.grad_bias
    first = gw.copy()
    layer.zero_grad(set_to_none=False)
    assert layer.grad_weight is gw and layer.grad_bias is gb
    assert not gw.any() and not gb.any()
    layer.backward(dy)  # accumulates into the same (zeroed) arrays
    assert layer.grad_weight is gw
    np.testing.assert_array_equal(gw, first)


# --- parameters() and in-place optimiser updates ------------------------------------------

def test_lc_parameters_are_the_layers_arrays():
    layer = _layer(dtype="float32")
    (w, gw), (b, gb) = layer.parameters()
    assert w is layer.weight and b is layer.bias
    assert gw is None and gb is None  # before any backward
    assert [n for n, _, _ in layer.named_parameters()] == ["weight", "bias"]
    assert [n for n, _, _ in _layer(bias=False).named_parameters()] == ["weight"]
    y = layer.forward(np.ones((1, 3, 6, 7), np.float32))
    layer.backward(np.ones_like(y))
    (w, gw), (b, gb) = layer.parameters()
    assert gw is layer.grad_weight and gb is layer.grad_bias
    assert gw.shape == w.shape and gb.shape == b.shape
    assert sum(p.size for p, _ in layer.parameters()) == layer.num_params


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("update", ["isub", "ufunc_out", "setitem", "copyto"])
def test_lc_in_place_optimiser_step_is_seen_by_the_next_forward(isa, layout, update, rng):
    """`for p, g in layer.parameters(): p -= lr * g` edits the arrays in place, bypassing
    the weight setter; the next forward must not use the stale prepacked weights (for every
    cached input shape) and equals the functional locally_connected2d with the updated
    weights."""
    kw = dict(padding=1, layout=layout)
    layer = convcore.LocallyConnected2d(5, 6, 3, (7, 9), rng=3, **kw)
    x = rng.standard_normal(_x_shape(layout, 2, 5, 7, 9)).astype(np.float32)
    x_other = rng.standard_normal(_x_shape(layout, 1, 5, 7, 9)).astype(np.float32)
    y_other_before = layer.forward(x_other)  # a second cached primitive, packed before
    for step in range(3):
        layer.zero_grad()
        y = layer.forward(x)
        np.testing.assert_array_equal(
            y, convcore.locally_connected2d(x, layer.weight, layer.bias, **kw))
        layer.backward(y)  # grad of 0.5·|y|²
        w_before = layer.weight.copy()
        for p, g in layer.parameters():
            u = np.float32(0.01) * g
            if update == "isub":
                p -= u
            elif update == "ufunc_out":
                np.subtract(p, u, out=p)
            elif update == "setitem":
                p[...] = p - u
            else:
                np.copyto(p, p - u)
        assert not np.array_equal(layer.weight, w_before)
        y_next = layer.forward(x)
        np.testing.assert_array_equal(
            y_next, convcore.locally_connected2d(x, layer.weight, layer.bias, **kw))
        assert not np.array_equal(y_next, y)
    y_other = layer.forward(x_other)
    np.testing.assert_array_equal(
        y_other, convcore.locally_connected2d(x_other, layer.weight, layer.bias, **kw))
    assert not np.array_equal(y_other, y_other_before)
    assert_close(y_other, ref_forward(x_other, layer.weight, layer.bias, **kw), np.float32,
                 "after updates")


def test_lc_in_place_edit_of_a_training_layer_needs_no_weight_changed(rng):
    layer = _layer()
    x = rng.standard_normal((1, 3, 6, 7))
    y = layer.forward(x)
    layer.backward(np.ones_like(y))  # the layer is training now
    layer.weight[0] = 2.0             # no weight_changed()
    np.testing.assert_array_equal(
        layer.forward(x), convcore.locally_connected2d(x, layer.weight, layer.bias, **_KW))
    v = layer._weight_version
    layer.forward(x)
    assert layer._weight_version == v  # unchanged weights: not repacked


def test_lc_inference_layer_skips_the_comparison(rng):
    layer = _layer()
    x = rng.standard_normal((1, 3, 6, 7))
    layer.forward(x)
    assert not layer._tracking and layer._snapshot is None
    layer.weight -= 0.5               # assigns back through the setter
    np.testing.assert_array_equal(
        layer.forward(x), convcore.locally_connected2d(x, layer.weight, layer.bias, **_KW))


def test_lc_backward_uses_the_weights_of_its_forward(rng):
    layer = _layer()
    x = rng.standard_normal((2, 3, 6, 7))
    dy = rng.standard_normal((2, 4, 6, 4))
    layer.parameters()                # training
    layer.forward(x)
    w0 = layer.weight.copy()
    layer.weight[...] += 1.0          # in place, between forward and backward
    dx = layer.backward(dy)
    expected = convcore.locally_connected2d_backward(dy, x, w0, **_KW)
    np.testing.assert_array_equal(dx, expected.input)
    np.testing.assert_array_equal(layer.grad_weight, expected.weight)
    np.testing.assert_array_equal(layer.grad_bias, expected.bias)


# --- requires_input_grad -------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("bias", [True, False])
def test_lc_requires_input_grad_false_skips_dx(layout, bias, rng):
    full = _layer(2, layout=layout, bias=bias)
    first = _layer(2, layout=layout, bias=bias, requires_input_grad=False)
    x = rng.standard_normal(_x_shape(layout, 2, 3, 6, 7))
    y = full.forward(x)
    np.testing.assert_array_equal(first.forward(x), y)
    dy = rng.standard_normal(y.shape)
    dx = full.backward(dy)
    assert dx is not None and dx.shape == x.shape
    assert first.backward(dy) is None
    np.testing.assert_array_equal(first.grad_weight, full.grad_weight)
    if bias:
        np.testing.assert_array_equal(first.grad_bias, full.grad_bias)
    else:
        assert first.grad_bias is None and full.grad_bias is None
    first.backward(dy)  # accumulates like any layer
    np.testing.assert_array_equal(first.grad_weight, 2 * full.grad_weight)
    assert "requires_input_grad=False" in repr(first)


# --- construction --------------------------------------------------------------------------

def test_lc_new_constructor_arguments_are_validated():
    with pytest.raises(TypeError, match="requires_input_grad"):
        convcore.LocallyConnected2d(3, 4, 3, 6, requires_input_grad="no")
    with pytest.raises(ValueError, match="init must be one of 'pytorch', 'he'"):
        convcore.LocallyConnected2d(3, 4, 3, 6, init="xavier")


def test_lc_he_initialisation():
    layer = convcore.LocallyConnected2d(8, 16, 3, 10, padding=1, init="he", dtype="float64",
                                       rng=0)
    fan_in = 8 * 9
    std = layer.weight.std()
    assert abs(std - np.sqrt(2.0 / fan_in)) < 0.03 * np.sqrt(2.0 / fan_in)  # 115200 samples
    assert not layer.bias.any()
    assert "init='he'" in repr(layer)
    pt = convcore.LocallyConnected2d(8, 16, 3, 10, padding=1, dtype="float64", rng=0)
    bound = 1 / np.sqrt(fan_in)
    assert np.abs(pt.weight).max() <= bound and np.abs(pt.bias).max() <= bound


# --- state_dict ----------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("bias", [True, False])
def test_lc_state_dict_round_trip(layout, bias, rng):
    layer = _layer(0, layout=layout, bias=bias, dtype="float32")
    x = rng.standard_normal(_x_shape(layout, 2, 3, 6, 7)).astype(np.float32)
    y = layer.forward(x)
    layer.backward(y)
    for p, g in layer.parameters():
        p -= 0.1 * g
    sd = layer.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == (["weight", "bias"] if bias else ["weight"])
    np.testing.assert_array_equal(sd["weight"], layer.weight)
    assert sd["weight"] is not layer.weight  # a copy
    y_trained = layer.forward(x)

    fresh = _layer(99, layout=layout, bias=bias, dtype="float32")
    fresh.forward(x)  # packed with its own initial weights: loading must repack
    fresh.load_state_dict(sd)
    np.testing.assert_array_equal(fresh.forward(x), y_trained)
    sd["weight"][...] = 0  # the layer copied the values
    np.testing.assert_array_equal(fresh.forward(x), y_trained)
    layer.zero_grad()
    fresh.zero_grad()
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(fresh.backward(dy), layer.backward(dy))
    np.testing.assert_array_equal(fresh.grad_weight, layer.grad_weight)

    saved = layer.state_dict()
    for p, g in layer.parameters():
        p -= 0.1 * g
    layer.load_state_dict(saved)  # back to the saved state, on a training layer
    np.testing.assert_array_equal(layer.forward(x), y_trained)


def test_lc_load_state_dict_bad_inputs_name_the_key():
    layer = _layer(0, dtype="float32")
    good = layer.state_dict()
    before = layer.state_dict()
    bad = [
        ({"bias": good["bias"]}, KeyError, "missing key.*'weight'"),
        ({**good, "extra": good["bias"]}, KeyError, "unexpected key.*'extra'"),
        ({**good, "weight": good["weight"][:, :2]}, ValueError,
         r"'weight' has shape \(6, 2, 4, 3, 3, 3\), expected \(6, 4, 4, 3, 3, 3\)"),
        ({**good, "bias": np.zeros((4, 6), np.float32)}, ValueError, r"'bias' has shape \(4, 6\)"),
        ({**good, "weight": good["weight"].astype(np.float64)}, TypeError,
         "'weight' has dtype float64, but this layer is float32"),
    ]
    for d, exc, pattern in bad:
        with pytest.raises(exc, match=pattern):
            layer.load_state_dict(d)
    with pytest.raises(KeyError, match="'bias'.*no bias"):
        _layer(0, bias=False, dtype="float32").load_state_dict(good)
    for k in before:  # a failed load changed nothing
        np.testing.assert_array_equal(layer.state_dict()[k], before[k])


# --- training ------------------------------------------------------------------------------

def test_lc_regression_loss_decreases(rng):
    """A few SGD steps through parameters() on a fixed target reduce 0.5·|y - t|²."""
    layer = _layer(5, dtype="float64")
    x = rng.standard_normal((4, 3, 6, 7))
    target = ref_forward(x, _layer(6).weight, _layer(6).bias, **_KW)
    losses = []
    for _ in range(20):
        layer.zero_grad()
        y = layer.forward(x)
        losses.append(0.5 * float(((y - target) ** 2).sum()))
        layer.backward(y - target)
        for p, g in layer.parameters():
            p -= 0.02 * g  # below 2 / (largest curvature, about |x patch|² · batch)
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.5 * losses[0]
