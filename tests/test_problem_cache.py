"""The functional calls' primitive cache: a repeated problem reuses its primitive, and the
cache never lets an argument skip its validation or run on a stale ISA."""
import numpy as np
import pytest

import convcore
from convcore import _conv, _core
from reference import conv2d as conv2d_ref


def _arrays(rng, dtype=np.float32):
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    return x, w


def test_repeated_problem_reuses_its_primitive():
    rng = np.random.default_rng(0)
    x, w = _arrays(rng)
    _conv._clear_cache()
    convcore.conv2d(x, w, padding=1)
    convcore.conv2d(x, w, padding=1)
    assert len(_conv._CACHE) == 1
    convcore.conv2d(x, w, padding=(1, 1))   # another spelling: its own entry
    assert len(_conv._CACHE) == 2


@pytest.mark.parametrize("bad", [1.0, True, np.float64(1.0)])
def test_cached_problem_does_not_skip_validation(bad):
    rng = np.random.default_rng(1)
    x, w = _arrays(rng)
    convcore.conv2d(x, w, stride=1)         # stride=1 cached
    with pytest.raises(TypeError, match="stride"):
        convcore.conv2d(x, w, stride=bad)


def test_results_follow_the_arrays_not_the_cache():
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        for _ in range(3):                  # same problem, fresh data each time
            x, w = _arrays(rng, dtype)
            y = convcore.conv2d(x, w, padding=1)
            ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64), padding=1)
            np.testing.assert_allclose(y, ref, rtol=1e-4 if dtype == np.float32 else 1e-12,
                                       atol=1e-4 if dtype == np.float32 else 1e-12)


def test_isa_change_makes_a_new_primitive():
    isas = _core.available_isas()
    if len(isas) < 2:
        pytest.skip("one ISA on this machine")
    rng = np.random.default_rng(3)
    x, w = _arrays(rng)
    saved = _core.get_isa()
    _conv._clear_cache()
    try:
        for isa in isas:
            _core.set_isa(isa)
            convcore.conv2d(x, w)
            prob = _conv._problem(x.shape, w.shape, 1, 0, 1, 1, "NCHW", "strict",
                                  array_shapes=True)
            assert prob.plan.isa == isa
    finally:
        _core.set_isa(saved)
    assert len(_conv._CACHE) == len(isas)


def test_cache_is_bounded():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((2, 1, 1, 1)).astype(np.float32)
    for h in range(1, _conv._CACHE_SIZE + 20):
        convcore.conv2d(np.ones((1, 1, h, 1), np.float32), w)
    assert len(_conv._CACHE) <= _conv._CACHE_SIZE


def test_last_problem_shortcut_follows_shapes_and_dtypes():
    """The same hyperparameter objects with other shapes or another dtype never reuse the
    previous call's problem (the shortcut compares the shapes and the dtype)."""
    rng = np.random.default_rng(5)
    stride, padding = (1, 2), (1, 2)
    cases = [((2, 3, 7, 7), (4, 3, 3, 3), np.float32), ((2, 3, 8, 7), (4, 3, 3, 3), np.float32),
             ((2, 3, 8, 7), (5, 3, 3, 3), np.float32), ((2, 3, 8, 7), (5, 3, 3, 3), np.float64),
             ((3, 7, 7), (4, 3, 3, 3), np.float64), ((2, 3, 7, 7), (4, 3, 3, 3), np.float32)]
    for xs, ws, dtype in cases * 2:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        y = convcore.conv2d(x, w, stride=stride, padding=padding)
        x4 = x if x.ndim == 4 else x[None]
        ref = conv2d_ref(x4.astype(np.float64), w.astype(np.float64), stride=stride,
                         padding=padding)
        assert y.dtype == dtype
        tol = 1e-4 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(y, ref if x.ndim == 4 else ref[0], rtol=tol, atol=tol)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx = convcore.conv2d_backward_input(dy, w, x.shape, stride=stride, padding=padding)
        dw = convcore.conv2d_backward_weight(dy, x, w.shape, stride=stride, padding=padding)
        assert dx.shape == x.shape and dw.shape == w.shape


def test_last_problem_shortcut_keeps_validation_and_mutable_arguments_out():
    """A list hyperparameter is never remembered by identity (it can change in place), and
    a shape given as a list or with NumPy integers takes the full key."""
    rng = np.random.default_rng(6)
    x, w = _arrays(rng)
    stride = [1, 1]
    y1 = convcore.conv2d(x, w, stride=stride)
    stride[0] = 2
    y2 = convcore.conv2d(x, w, stride=stride)
    assert y1.shape == (2, 4, 5, 4) and y2.shape == (2, 4, 3, 4)
    dy = rng.standard_normal(y1.shape).astype(np.float32)
    convcore.conv2d_backward_input(dy, w, x.shape)   # the shortcut remembers this one
    for shape in ([2, 3, 7, 6], tuple(np.int64(v) for v in x.shape)):
        dx = convcore.conv2d_backward_input(dy, w, shape)
        assert dx.shape == x.shape
    with pytest.raises(TypeError, match="shape"):
        convcore.conv2d_backward_input(dy, w, (2, 3, 7.0, 6))
    with pytest.raises(ValueError, match="shape"):
        convcore.conv2d_backward_input(dy, w, (2, 3, 7, 6, 1))


def test_forced_implementations_bypass_the_last_problem():
    rng = np.random.default_rng(7)
    x, w = _arrays(rng)
    convcore.conv2d(x, w)   # remembered
    default = _conv._algorithms(x.shape, w.shape)["forward"]
    forced = "im2col_per_image" if default != "im2col_per_image" else "im2col_multi_image"
    with _conv._force_implementations(forward=forced):
        prob = _conv._problem(x.shape, w.shape, 1, 0, 1, 1, "NCHW", "strict",
                              array_shapes=True)
        assert prob.plan.algorithms["forward"] == forced
        y = convcore.conv2d(x, w)
    np.testing.assert_allclose(y, conv2d_ref(x.astype(np.float64), w.astype(np.float64)),
                               rtol=1e-4, atol=1e-4)
    prob = _conv._problem(x.shape, w.shape, 1, 0, 1, 1, "NCHW", "strict", array_shapes=True)
    assert prob.plan.algorithms["forward"] == default


def test_transposed_and_locally_connected_calls_reuse_their_problem():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    wt = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    wl = rng.standard_normal((4, 3, 2, 3, 3, 3)).astype(np.float32)   # (Ho, Wo, K, C, R, S)
    _conv._clear_cache()
    y1 = convcore.conv_transpose2d(x, wt, stride=2)
    y2 = convcore.conv_transpose2d(x, wt, stride=2)
    assert len(_conv._CACHE) == 1
    np.testing.assert_array_equal(y1, y2)
    with pytest.raises(TypeError, match="stride"):
        convcore.conv_transpose2d(x, wt, stride=2.0)
    z1 = convcore.locally_connected2d(x, wl)
    z2 = convcore.locally_connected2d(x, wl)
    np.testing.assert_array_equal(z1, z2)
    assert len(_conv._CACHE) == 2
    with pytest.raises(TypeError, match="stride"):
        convcore.locally_connected2d(x, wl, stride=True)


@pytest.mark.parametrize("kind", ["conv", "transposed", "local"])
def test_layers_of_one_shape_never_share_a_primitive(kind):
    """Each layer prepacks its own weights into its primitive: two layers of the same
    shapes (and the functional call between them) must not see each other's weights."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    if kind == "conv":
        make = lambda: convcore.Conv2d(3, 4, 3, padding=1, rng=rng)             # noqa: E731
        func = lambda layer: convcore.conv2d(x, layer.weight, layer.bias, padding=1)  # noqa: E731
    elif kind == "transposed":
        make = lambda: convcore.ConvTranspose2d(3, 4, 3, stride=2, rng=rng)     # noqa: E731
        func = lambda layer: convcore.conv_transpose2d(x, layer.weight, layer.bias,  # noqa: E731
                                                       stride=2)
    else:
        make = lambda: convcore.LocallyConnected2d(3, 4, 3, (6, 5), rng=rng)   # noqa: E731
        func = lambda layer: convcore.locally_connected2d(x, layer.weight,   # noqa: E731
                                                          layer.bias)
    a, b = make(), make()
    ya, yb = a.forward(x), b.forward(x)
    ya_again = a.forward(x)
    np.testing.assert_allclose(ya, func(a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(yb, func(b), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ya, ya_again)
    assert not np.allclose(ya, yb)
