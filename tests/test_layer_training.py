"""Conv2d as a layer that trains: gradient accumulation and zero_grad(), parameters() for
an optimiser updating arrays in place (never stale prepacked weights), state_dict() /
load_state_dict(), requires_input_grad=False, initialisation, and a small training loop."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import convcore
import reference as ref


def _x_shape(layout, n, c, h, w):
    return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)


# --- accumulation ------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_gradients_accumulate_until_zero_grad(layout, activation, bias, rng):
    kw = dict(padding=1, stride=(1, 2), layout=layout, shape_rule="pad")
    layer = convcore.Conv2d(3, 5, 3, bias=bias, activation=activation, dtype="float64",
                            rng=1, **kw)
    assert layer.grad_weight is None and layer.grad_bias is None  # None until a backward
    x1 = rng.standard_normal(_x_shape(layout, 2, 3, 7, 8))
    x2 = rng.standard_normal(_x_shape(layout, 3, 3, 7, 8))  # another batch size too

    singles = []
    for x in (x1, x2):  # each gradient on its own (a fresh layer with the same weights)
        fresh = convcore.Conv2d(3, 5, 3, bias=bias, activation=activation, dtype="float64",
                                rng=1, **kw)
        y = fresh.forward(x)
        dy = np.sin(np.arange(y.size, dtype=np.float64)).reshape(y.shape) + 0.25
        fresh.backward(dy)
        singles.append((dy, fresh.grad_weight, fresh.grad_bias))

    for x, (dy, _, _) in zip((x1, x2), singles):
        layer.forward(x)
        layer.backward(dy)
    (_, gw1, gb1), (_, gw2, gb2) = singles
    np.testing.assert_array_equal(layer.grad_weight, gw1 + gw2)  # float64: the same sum
    if bias:
        np.testing.assert_array_equal(layer.grad_bias, gb1 + gb2)
    else:
        assert layer.grad_bias is None
    # the sum is the gradient of the two-batch loss (the reference, independently)
    masked = [np.where(layer.forward(x) > 0, dy, 0.0) if activation else dy
              for x, (dy, _, _) in zip((x1, x2), singles)]
    ref.assert_close(layer.grad_weight,
                     ref.conv2d_backward_weight(masked[0], x1, layer.weight.shape, **kw)
                     + ref.conv2d_backward_weight(masked[1], x2, layer.weight.shape, **kw))

    layer.zero_grad()
    assert layer.grad_weight is None and layer.grad_bias is None
    layer.forward(x2)
    layer.backward(singles[1][0])
    np.testing.assert_array_equal(layer.grad_weight, gw2)  # set, not added
    if bias:
        np.testing.assert_array_equal(layer.grad_bias, gb2)


def test_zero_grad_keep_arrays_fills_zeros_in_place(rng):
    layer = convcore.Conv2d(2, 3, 3, dtype="float64", rng=0)
    x = rng.standard_normal((1, 2, 5, 5))
    dy = rng.standard_normal((1, 3, 3, 3))
    layer.forward(x)
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

def test_parameters_are_the_layers_arrays():
    layer = convcore.Conv2d(4, 6, 3, rng=0)
    pairs = layer.parameters()
    assert len(pairs) == 2
    (w, gw), (b, gb) = pairs
    assert w is layer.weight and b is layer.bias
    assert gw is None and gb is None  # before any backward
    names = [name for name, _, _ in layer.named_parameters()]
    assert names == ["weight", "bias"]
    assert [n for n, _, _ in convcore.Conv2d(4, 6, 3, bias=False, rng=0).named_parameters()] == ["weight"]
    layer.forward(np.ones((1, 4, 5, 5), np.float32))
    layer.backward(np.ones((1, 6, 3, 3), np.float32))
    (w, gw), (b, gb) = layer.parameters()
    assert gw is layer.grad_weight and gb is layer.grad_bias
    assert sum(p.size for p, _ in layer.parameters()) == layer.num_params


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("update", ["isub", "ufunc_out", "setitem", "copyto"])
def test_in_place_optimiser_step_is_seen_by_the_next_forward(isa, layout, update, rng):
    """`for p, g in layer.parameters(): p -= lr * g` edits the arrays in place, bypassing
    the weight setter; the next forward must not use the stale prepacked weights (for every
    cached input shape) and equals the functional conv2d with the updated weights."""
    kw = dict(padding=1, layout=layout)
    layer = convcore.Conv2d(8, 16, 3, rng=3, **kw)
    x = rng.standard_normal(_x_shape(layout, 2, 8, 7, 9)).astype(np.float32)
    x_other = rng.standard_normal(_x_shape(layout, 1, 8, 7, 9)).astype(np.float32)
    y_other_before = layer.forward(x_other)  # a second cached primitive, packed before
    for step in range(3):
        layer.zero_grad()
        y = layer.forward(x)
        np.testing.assert_array_equal(y, convcore.conv2d(x, layer.weight, layer.bias, **kw))
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
        np.testing.assert_array_equal(y_next, convcore.conv2d(x, layer.weight, layer.bias, **kw))
        assert not np.array_equal(y_next, y)
    y_other = layer.forward(x_other)
    np.testing.assert_array_equal(y_other, convcore.conv2d(x_other, layer.weight, layer.bias, **kw))
    assert not np.array_equal(y_other, y_other_before)
    ref.assert_close(y_other, ref.conv2d(x_other, layer.weight, layer.bias, **kw), np.float32)


def test_in_place_edit_of_a_training_layer_needs_no_weight_changed(rng):
    layer = convcore.Conv2d(3, 4, 3, dtype="float64", rng=0)
    x = rng.standard_normal((1, 3, 6, 6))
    layer.forward(x)
    layer.backward(np.ones((1, 4, 4, 4)))  # the layer is training now
    layer.weight[0] = 2.0                   # no weight_changed()
    np.testing.assert_array_equal(layer.forward(x), convcore.conv2d(x, layer.weight, layer.bias))
    layer.weight[...] = np.nan              # NaN compares equal to itself bitwise: no loop
    assert np.isnan(layer.forward(x)).all()
    v = layer._weight_version
    layer.forward(x)
    assert layer._weight_version == v       # unchanged weights: not repacked


def test_inference_layer_keeps_the_documented_contract(rng):
    """Without backward()/parameters() the layer does not compare weights on every call
    (no per-call cost); assignment and weight_changed() are seen."""
    layer = convcore.Conv2d(3, 4, 3, dtype="float64", rng=0)
    x = rng.standard_normal((1, 3, 6, 6))
    layer.forward(x)
    assert not layer._tracking and layer._snapshot is None
    layer.weight[0] = 2.0
    layer.weight_changed()
    np.testing.assert_array_equal(layer.forward(x), convcore.conv2d(x, layer.weight, layer.bias))
    layer.weight -= 0.5                     # assigns back through the setter
    np.testing.assert_array_equal(layer.forward(x), convcore.conv2d(x, layer.weight, layer.bias))


def test_readme_update_by_assignment_still_works(rng):
    layer = convcore.Conv2d(3, 96, 11, stride=4, activation="relu", rng=0)
    x = rng.standard_normal((2, 3, 31, 31)).astype(np.float32)
    y = layer.forward(x)
    layer.backward(np.ones_like(y))
    layer.weight -= 0.01 * layer.grad_weight
    np.testing.assert_array_equal(
        layer.forward(x), convcore.conv2d(x, layer.weight, layer.bias, stride=4, activation="relu"))


def test_backward_uses_the_weights_of_its_forward(rng):
    """An update between forward and backward (e.g. an optimiser run too early) does not
    mix weights: dx is that forward's derivative."""
    layer = convcore.Conv2d(3, 4, 3, padding=1, dtype="float64", rng=0)
    x = rng.standard_normal((2, 3, 6, 6))
    dy = rng.standard_normal((2, 4, 6, 6))
    w0 = layer.weight.copy()
    for p, _ in layer.parameters():
        pass
    layer.forward(x)
    layer.weight -= 1.0                     # assignment ...
    dx = layer.backward(dy)
    np.testing.assert_array_equal(dx, convcore.conv2d_backward_input(dy, w0, x.shape, padding=1))
    layer.forward(x)
    layer.weight[...] += 1.0                # ... or in place
    dx = layer.backward(dy)
    np.testing.assert_array_equal(
        dx, convcore.conv2d_backward_input(dy, layer.weight - 1.0, x.shape, padding=1))


# --- requires_input_grad -------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_requires_input_grad_false_skips_dx(layout, activation, rng):
    kw = dict(padding=1, layout=layout, activation=activation, dtype="float64")
    full = convcore.Conv2d(3, 4, 3, rng=2, **kw)
    first = convcore.Conv2d(3, 4, 3, rng=2, requires_input_grad=False, **kw)
    x = rng.standard_normal(_x_shape(layout, 2, 3, 6, 5))
    y = full.forward(x)
    np.testing.assert_array_equal(first.forward(x), y)
    dy = rng.standard_normal(y.shape)
    assert full.backward(dy) is not None
    assert first.backward(dy) is None
    np.testing.assert_array_equal(first.grad_weight, full.grad_weight)
    np.testing.assert_array_equal(first.grad_bias, full.grad_bias)
    first.backward(dy)  # accumulates like any layer
    np.testing.assert_array_equal(first.grad_weight, 2 * full.grad_weight)
    assert "requires_input_grad=False" in repr(first)


# --- construction --------------------------------------------------------------------------

def test_new_constructor_arguments_are_validated():
    with pytest.raises(TypeError, match="requires_input_grad"):
        convcore.Conv2d(3, 4, 3, requires_input_grad="no")
    with pytest.raises(ValueError, match="init must be one of 'pytorch', 'he'"):
        convcore.Conv2d(3, 4, 3, init="xavier")
    with pytest.raises(ValueError, match="init"):
        convcore.Conv2d(3, 4, 3, init=None)


def test_he_initialisation():
    layer = convcore.Conv2d(16, 64, 3, init="he", dtype="float64", rng=0)
    fan_in = 16 * 9
    std = layer.weight.std()
    assert abs(std - np.sqrt(2.0 / fan_in)) < 0.03 * np.sqrt(2.0 / fan_in)  # 9216 samples
    assert abs(layer.weight.mean()) < 0.05 * std
    assert not layer.bias.any()
    again = convcore.Conv2d(16, 64, 3, init="he", dtype="float64", rng=0)
    np.testing.assert_array_equal(again.weight, layer.weight)  # reproducible from the rng
    pt = convcore.Conv2d(16, 64, 3, dtype="float64", rng=0)     # default: PyTorch's bounds
    bound = 1 / np.sqrt(fan_in)
    assert np.abs(pt.weight).max() <= bound and np.abs(pt.bias).max() <= bound
    assert np.abs(pt.weight).max() > 0.9 * bound


# --- state_dict ----------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_round_trip(layout, bias, rng):
    kw = dict(padding=1, layout=layout, bias=bias)
    layer = convcore.Conv2d(4, 6, 3, rng=0, **kw)
    x = rng.standard_normal(_x_shape(layout, 2, 4, 6, 7)).astype(np.float32)
    y = layer.forward(x)
    layer.backward(y)
    for p, g in layer.parameters():
        p -= 0.1 * g
    sd = layer.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == (["weight", "bias"] if bias else ["weight"])
    np.testing.assert_array_equal(sd["weight"], layer.weight)
    assert sd["weight"] is not layer.weight  # a copy: training on does not change it
    y_trained = layer.forward(x)

    fresh = convcore.Conv2d(4, 6, 3, rng=99, **kw)
    fresh.forward(x)  # packed with its own initial weights: loading must repack
    fresh.load_state_dict(sd)
    np.testing.assert_array_equal(fresh.forward(x), y_trained)
    np.testing.assert_array_equal(fresh.weight, layer.weight)
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
    assert not np.array_equal(saved["weight"], layer.weight)
    layer.load_state_dict(saved)  # back to the saved state, on a training layer
    np.testing.assert_array_equal(layer.forward(x), y_trained)


def test_load_state_dict_bad_inputs_name_the_key():
    layer = convcore.Conv2d(4, 6, 3, rng=0)
    good = layer.state_dict()
    before = layer.state_dict()
    bad = [
        ([1, 2], TypeError, "state_dict must be a mapping"),
        ({"bias": good["bias"]}, KeyError, "missing key.*'weight'"),
        ({**good, "running_mean": good["bias"]}, KeyError, "unexpected key.*'running_mean'"),
        ({**good, "weight": good["weight"][:, :2]}, ValueError,
         r"'weight' has shape \(6, 2, 3, 3\), expected \(6, 4, 3, 3\)"),
        ({**good, "bias": np.zeros(5, np.float32)}, ValueError, r"'bias' has shape \(5,\)"),
        ({**good, "bias": good["bias"].astype(np.float64)}, TypeError,
         "'bias' has dtype float64, but this layer is float32"),
        ({**good, "weight": good["weight"].tolist()}, TypeError, "'weight' must be a numpy.ndarray"),
    ]
    for d, exc, pattern in bad:
        with pytest.raises(exc, match=pattern):
            layer.load_state_dict(d)
    with pytest.raises(KeyError, match="'bias'.*no bias"):
        convcore.Conv2d(4, 6, 3, bias=False, rng=0).load_state_dict(good)
    for k in before:  # a failed load changed nothing
        np.testing.assert_array_equal(layer.state_dict()[k], before[k])


# --- training ------------------------------------------------------------------------------

def _softmax_xent(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(p[np.arange(n), labels]).mean()
    g = p.copy()
    g[np.arange(n), labels] -= 1.0
    return loss, g / n


def test_small_convnet_trains():
    """conv(relu, first layer) → conv(relu) → global average pool → linear readout, on
    labels it can learn; 20 SGD steps lower the loss (every step, measured), and
    the layers' results equal a loop on the functional API (no stale prepacked weights)."""
    rng = np.random.default_rng(0)
    n, classes = 32, 3
    x = rng.standard_normal((n, 2, 8, 8))
    # labels a small ConvNet can learn: which of three pooled features is largest
    feats = np.stack([x[:, 0].mean(axis=(1, 2)), x[:, 1].mean(axis=(1, 2)),
                      -x.mean(axis=(1, 2, 3))], axis=1)
    labels = feats.argmax(axis=1)

    conv1 = convcore.Conv2d(2, 8, 3, padding=1, activation="relu", dtype="float64", rng=1,
                            init="he", requires_input_grad=False)
    conv2 = convcore.Conv2d(8, 8, 3, stride=2, padding=1, activation="relu", dtype="float64",
                            rng=2, init="he", shape_rule="crop")
    readout = rng.standard_normal((8, classes)) * 0.5
    # the same network on the functional API, with its own copies of the parameters
    fw = [(conv1.weight.copy(), conv1.bias.copy()), (conv2.weight.copy(), conv2.bias.copy())]
    lr, losses = 0.5, []
    for step in range(20):
        conv1.zero_grad()
        conv2.zero_grad()
        h1 = conv1.forward(x)
        h2 = conv2.forward(h1)
        pooled = h2.mean(axis=(2, 3))
        loss, dlogits = _softmax_xent(pooled @ readout, labels)
        losses.append(loss)
        dreadout = pooled.T @ dlogits
        dh2 = np.repeat(np.repeat((dlogits @ readout.T)[:, :, None, None], 4, 2), 4, 3) / 16
        dh1 = conv2.backward(dh2)
        assert conv1.backward(dh1) is None

        # functional reference of the same step
        (w1, b1), (w2, b2) = fw
        r1 = convcore.conv2d(x, w1, b1, padding=1, activation="relu")
        r2 = convcore.conv2d(r1, w2, b2, stride=2, padding=1, activation="relu",
                             shape_rule="crop")
        np.testing.assert_allclose(h2, r2, rtol=1e-12, atol=1e-12)
        g2 = convcore.conv2d_backward(np.where(r2 > 0, dh2, 0.0), r1, w2, stride=2, padding=1,
                                     shape_rule="crop")
        g1 = convcore.conv2d_backward(np.where(r1 > 0, g2.input, 0.0), x, w1, padding=1)
        np.testing.assert_allclose(conv2.grad_weight, g2.weight, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(conv1.grad_weight, g1.weight, rtol=1e-10, atol=1e-12)
        for (w, b), g in zip(fw, (g1, g2)):
            w -= lr * g.weight
            b -= lr * g.bias

        for layer in (conv1, conv2):
            for p, g in layer.parameters():
                p -= lr * g
        readout -= lr * dreadout

    increases = sum(b > a for a, b in zip(losses, losses[1:]))
    assert increases <= 1, losses                # (measured: none, 1.30 → 0.70)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("n", [5, 5 * 2000 + 1])   # byte strings; 32-bit words (40 KB)
def test_weight_comparison_is_bitwise(n):
    from convcore.layers import _BYTES_COMPARED_AS_BYTES, _same_bits
    a = np.arange(n * 27, dtype=np.float32).reshape(n, 3, 3, 3)
    assert (a.nbytes > _BYTES_COMPARED_AS_BYTES) == (n > 5)
    b = a.copy()
    assert _same_bits(a, b)
    b[n - 1, 2, 2, 2] = np.nextafter(b[n - 1, 2, 2, 2], np.float32(1e9))  # the last element
    assert not _same_bits(a, b)
    c = np.zeros(n * 4)
    c[0], c[-1] = np.nan, 1.0
    assert _same_bits(c, c.copy())                # NaN equals itself: no repack loop
    d = c.copy()
    d[1] = -0.0                                   # -0.0 differs from 0.0
    assert not _same_bits(c, d)
    assert not _same_bits(c, c.astype(np.float32))


def test_the_layers_copy_of_x_never_lands_just_past_x(rng, monkeypatch):
    """Conv2d.forward keeps its own copy of x (private_copy), equal to x, not sharing its
    memory, and never within 256 bytes past x modulo 4 KiB (where memcpy slows down
    several-fold): a copy the allocator would put there is moved to x's page offset."""
    import convcore._args as args
    from convcore._core import page_offset
    base = rng.standard_normal(3 * 8 * 48 * 48 + 64).astype(np.float32)
    plain_new_array = args.new_array

    def new_array_just_past(shape, dtype, name):   # the allocator's worst placement
        a = plain_new_array(shape, dtype, name)
        if name != "x" or a.nbytes < args._PLACED_COPY_BYTES:
            return a
        buf = plain_new_array((a.nbytes + 8192,), np.uint8, "buf")
        start = (page_offset(x) + 16 - page_offset(buf)) % 4096
        return buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)

    for bad in (False, True):
        if bad:
            monkeypatch.setattr(args, "new_array", new_array_just_past)
        for start in (0, 1, 4, 16, 17, 40):
            x = base[start:start + 3 * 8 * 48 * 48].reshape(3, 8, 48, 48)   # 216 KiB
            c = args.private_copy(x, "x")
            assert c.flags.c_contiguous and c.flags.aligned and c.flags.writeable
            assert not np.shares_memory(c, x)
            np.testing.assert_array_equal(c, x)
            assert not 0 < (page_offset(c) - page_offset(x)) % 4096 <= 256
    for a in (base[:1000].reshape(10, 100), base[:2 * 8 * 48 * 48 * 2:2]):  # small, strided
        c = args.private_copy(a, "x")
        assert c.flags.c_contiguous and not np.shares_memory(c, a)
        np.testing.assert_array_equal(c, a)

    layer = convcore.Conv2d(8, 4, 3, padding=1, rng=0, dtype=np.float64)
    x = base[17:17 + 3 * 8 * 48 * 48].reshape(3, 8, 48, 48).astype(np.float64)
    y = layer.forward(x)
    kept = layer._x
    assert not np.shares_memory(kept, x)
    x[...] = 0   # the layer's copy, not x, is what backward differentiates at
    dx = layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(layer._x, kept)
    assert dx.shape == x.shape
    ref_dw = ref.conv2d_backward_weight(np.ones_like(y), kept, layer.weight.shape, padding=1)
    np.testing.assert_allclose(layer.grad_weight, ref_dw, rtol=1e-10, atol=1e-9)
