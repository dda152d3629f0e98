"""Winograd F(4×4, 3×3) forward (algorithm="winograd"): accuracy against the float64
reference on every ISA, both layouts and dtypes, odd sizes, padding, groups, bias and ReLU;
determinism across thread counts; the non-finite rule; the layer object; errors."""
import numpy as np
import pytest

import convcore
from convcore._conv import _algorithms, _force_implementations, _implementations

import reference as ref

# Documented bounds (docs/design.md §3, conv2d's docstring): the largest error relative to
# the largest output, N(0, 1) data.
F32_BOUND = 1e-4
F64_BOUND = 1e-12

# The two schedules of the Winograd forward: tiles (U streamed per block of tiles) and
# filters (V of a block shared, the filters split, U transformed as it goes per call).
SCHEDULES = ("winograd_f4x3", "winograd_f4x3_filters")

# (x NCHW shape, (K, R, S), kwargs): padding 0 / 1 / asymmetric, sizes not multiples of 4,
# 1×1 and 5×5 maps, groups, more channels than KC.
CASES = {
    "pad0": ((2, 3, 8, 8), (5, 3, 3), dict()),
    "pad1_odd": ((2, 5, 13, 11), (7, 3, 3), dict(padding=1)),
    "asym": ((1, 6, 10, 9), (9, 3, 3), dict(padding=(0, 2, 1, 0))),
    "one_by_one_map": ((3, 4, 1, 1), (5, 3, 3), dict(padding=1)),
    "five_by_five": ((2, 8, 5, 5), (6, 3, 3), dict(padding=1)),
    "groups": ((2, 8, 9, 7), (12, 3, 3), dict(padding=(1, 1, 2, 0), groups=2)),
    "pad_beyond": ((1, 2, 3, 4), (3, 3, 3), dict(padding=(3, 2, 4, 3))),
    "many_channels": ((1, 600, 6, 6), (20, 3, 3), dict(padding=1)),
    "many_tiles": ((3, 4, 30, 41), (9, 3, 3), dict(padding=1)),
}


def _arrays(case, layout, dtype, seed=0):
    x_shape, (k, r, s), kw = CASES[case]
    n, c, h, w = x_shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    wt = rng.standard_normal((k, c // kw.get("groups", 1), r, s))
    b = rng.standard_normal(k)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wt = np.ascontiguousarray(wt.transpose(0, 2, 3, 1))
    return x.astype(dtype), wt.astype(dtype), b.astype(dtype), dict(kw, layout=layout)


def _rel_err(y, want):
    return float(np.max(np.abs(y.astype(np.float64) - want)) / max(np.max(np.abs(want)), 1e-300))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference(isa, case, layout, dtype, schedule):
    x, wt, b, kw = _arrays(case, layout, dtype)
    assert _algorithms(x.shape, wt.shape, dtype=np.dtype(dtype).name, algorithm="winograd",
                       **kw)["forward"] in SCHEDULES
    bound = F32_BOUND if dtype == np.float32 else F64_BOUND
    for bias, act in ((None, None), (b, "relu"), (b, None)):
        with _force_implementations(forward=schedule):
            y = convcore.conv2d(x, wt, bias, activation=act, algorithm="winograd", **kw)
        want = ref.conv2d(x.astype(np.float64), wt.astype(np.float64),
                          None if bias is None else bias.astype(np.float64), activation=act, **kw)
        assert y.dtype == dtype and y.shape == want.shape
        assert _rel_err(y, want) < bound, (case, layout, act)
        if act == "relu":
            assert np.all(y >= 0)


def test_float64_close_to_exact():
    x, wt, b, kw = _arrays("pad1_odd", "NCHW", np.float64)
    y = convcore.conv2d(x, wt, b, algorithm="winograd", **kw)
    exact = convcore.conv2d(x, wt, b, **kw)
    assert np.allclose(y, exact, rtol=0, atol=1e-13 * np.max(np.abs(exact)))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bitwise_across_threads(layout, schedule, restore_threads):
    x, wt, b, kw = _arrays("many_tiles", layout, np.float32)
    outs = []
    with _force_implementations(forward=schedule):
        for threads in (1, 2, 3, 4):
            convcore.set_num_threads(threads)
            outs.append(convcore.conv2d(x, wt, b, activation="relu", algorithm="winograd", **kw))
    for y in outs[1:]:
        assert np.array_equal(y, outs[0])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_filter_schedule_several_blocks_and_units(layout, restore_threads):
    """More tiles than one block (128) and more filters than one unit (32), filters not a
    multiple of the tile's MR, channels over two chunks of 128: per call (U transformed as
    it goes, from the caller's weights) and set once (the layer object) give the same bits,
    for any thread count, within the bound of the float64 definition."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 150, 27, 31))  # 3 · 7 · 8 = 168 tiles
    wt = rng.standard_normal((45, 150, 3, 3))
    b = rng.standard_normal(45)
    want = ref.conv2d(x, wt, b, padding=1, activation="relu")
    if layout == "NHWC":
        x, wt = x.transpose(0, 2, 3, 1).copy(), wt.transpose(0, 2, 3, 1).copy()
        want = want.transpose(0, 2, 3, 1)
    x, wt, b = x.astype(np.float32), wt.astype(np.float32), b.astype(np.float32)
    layer = convcore.Conv2d(150, 45, 3, padding=1, activation="relu", layout=layout,
                            algorithm="winograd")
    outs = []
    with _force_implementations(forward="winograd_f4x3_filters"):
        layer.weight, layer.bias = wt, b
        for threads in (1, 2, 3):
            convcore.set_num_threads(threads)
            outs.append(convcore.conv2d(x, wt, b, padding=1, activation="relu", layout=layout,
                                        algorithm="winograd"))
            outs.append(layer(x))
    assert _rel_err(outs[0], want) < F32_BOUND
    for y in outs[1:]:
        assert np.array_equal(y, outs[0])


def test_schedule_choice():
    """Deep layers and layers of few tiles take the filter schedule; many tiles over a small
    transformed weight keep the tile schedule."""
    def chosen(xs, k):
        return _algorithms(xs, (k, xs[1], 3, 3), padding=1, algorithm="winograd")["forward"]
    assert chosen((16, 512, 7, 7), 512) == "winograd_f4x3_filters"
    assert chosen((1, 512, 14, 14), 512) == "winograd_f4x3_filters"
    assert chosen((4, 128, 28, 28), 128) == "winograd_f4x3_filters"
    assert chosen((8, 128, 56, 56), 128) == "winograd_f4x3"
    assert chosen((16, 64, 56, 56), 64) == "winograd_f4x3"


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_non_finite_follow_the_definition(layout):
    """Winograd mixes a tile's taps; tiles whose outputs are not all finite are recomputed
    by the definition, so an Inf/NaN reaches exactly the outputs whose window holds it, and
    padding never meets an Inf weight."""
    x, wt, b, kw = _arrays("pad1_odd", layout, np.float64)
    x = x.copy()
    if layout == "NCHW":
        x[0, 1, 5, 6] = np.inf
        x[1, 2, 0, 0] = np.nan
    else:
        x[0, 5, 6, 1] = np.inf
        x[1, 0, 0, 2] = np.nan
    for dtype, schedule in ((np.float64, SCHEDULES[0]), (np.float32, SCHEDULES[0]),
                            (np.float64, SCHEDULES[1]), (np.float32, SCHEDULES[1])):
        xs, ws = x.astype(dtype), wt.astype(dtype)
        with _force_implementations(forward=schedule):
            y = convcore.conv2d(xs, ws, algorithm="winograd", **kw)
        want = ref.conv2d(xs.astype(np.float64), ws.astype(np.float64), **kw)
        assert np.array_equal(np.isnan(y), np.isnan(want))
        assert np.array_equal(np.isposinf(y), np.isposinf(want))
        fin = np.isfinite(want)
        assert fin.sum() > 0.5 * fin.size
        tol = F32_BOUND if dtype == np.float32 else F64_BOUND
        assert np.max(np.abs(y[fin] - want[fin])) < tol * np.max(np.abs(want[fin]))
    # An Inf weight: border outputs whose window puts that tap in the padding stay finite.
    x, wt, b, kw = _arrays("pad1_odd", layout, np.float64)
    wt = wt.copy()
    wt[(0, 0, 0, 0)] = np.inf     # tap (0, 0) of filter 0 (either layout)
    want = ref.conv2d(x, wt, b, **kw)
    fin = np.isfinite(want)
    for schedule in SCHEDULES:
        with _force_implementations(forward=schedule):
            y = convcore.conv2d(x, wt, b, algorithm="winograd", **kw)
        assert np.array_equal(np.isfinite(y), np.isfinite(want)), schedule
        assert np.max(np.abs(y[fin] - want[fin])) < F64_BOUND * np.max(np.abs(want[fin]))


def test_layer_object_prepacks_and_backward_is_exact():
    layer = convcore.Conv2d(6, 10, 3, padding=1, activation="relu", algorithm="winograd", rng=0)
    assert layer.algorithm == "winograd" and "algorithm='winograd'" in repr(layer)
    exact = convcore.Conv2d(6, 10, 3, padding=1, activation="relu", rng=0)
    x = np.random.default_rng(1).standard_normal((2, 6, 11, 9)).astype(np.float32)
    y = layer(x)
    want = ref.conv2d(x.astype(np.float64), layer.weight.astype(np.float64),
                      layer.bias.astype(np.float64), activation="relu", padding=1)
    assert _rel_err(y, want) < F32_BOUND
    assert np.array_equal(y, convcore.conv2d(x, layer.weight, layer.bias, padding=1,
                                             activation="relu", algorithm="winograd"))
    ye = exact(x)
    dy = np.ones_like(y)
    # Backward is the exact path (the ReLU mask comes from each layer's own forward).
    mask = (y > 0) == (ye > 0)
    if mask.all():
        assert np.array_equal(layer.backward(dy), exact.backward(dy))
        assert np.array_equal(layer.grad_weight, exact.grad_weight)
    # New weights are transformed again.
    layer.weight = layer.weight * 2
    assert _rel_err(layer(x), ref.conv2d(x.astype(np.float64), layer.weight.astype(np.float64),
                                         layer.bias.astype(np.float64), activation="relu",
                                         padding=1)) < F32_BOUND


def test_backward_functions_accept_the_algorithm_and_stay_exact():
    x, wt, b, kw = _arrays("groups", "NCHW", np.float32)
    y = convcore.conv2d(x, wt, **kw)
    dy = np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
    for fn, args in ((convcore.conv2d_backward_input, (dy, wt, x.shape)),
                     (convcore.conv2d_backward_weight, (dy, x, wt.shape))):
        assert np.array_equal(fn(*args, algorithm="winograd", **kw), fn(*args, **kw))
    g1 = convcore.conv2d_backward(dy, x, wt, algorithm="winograd", **kw)
    g0 = convcore.conv2d_backward(dy, x, wt, **kw)
    for a, c in zip(g1, g0):
        assert np.array_equal(a, c)
    algos = _algorithms(x.shape, wt.shape, algorithm="winograd", **kw)
    assert algos["forward"] in SCHEDULES
    assert algos["backward_data"] == _algorithms(x.shape, wt.shape, **kw)["backward_data"]


def test_default_is_exact_and_never_winograd():
    x, wt, b, kw = _arrays("pad1_odd", "NCHW", np.float32)
    assert _algorithms(x.shape, wt.shape, **kw)["forward"] not in SCHEDULES
    for name in SCHEDULES:
        entry = [e for e in _implementations(x.shape, wt.shape, **kw)["forward"]
                 if e["name"] == name][0]
        assert not entry["applies"] and "algorithm='winograd'" in entry["reason"]


@pytest.mark.parametrize("bad", ["Winograd", "fft", "exact", 1, True])
def test_bad_algorithm_names(bad):
    x = np.ones((1, 2, 6, 6), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="algorithm must be None .* or 'winograd'"):
        convcore.conv2d(x, w, algorithm=bad)
    with pytest.raises(ValueError, match="algorithm must be"):
        convcore.Conv2d(2, 3, 3, algorithm=bad)
    with pytest.raises(ValueError, match="algorithm must be"):
        convcore.conv2d_backward_input(np.ones((1, 3, 4, 4), np.float32), w, x.shape,
                                       algorithm=bad)


@pytest.mark.parametrize("kw, rule", [
    (dict(stride=2, shape_rule="crop"), "stride 1 only"),
    (dict(dilation=2), "dilation 1 only"),
    (dict(kernel=(5, 5)), "3×3 kernels only"),
    (dict(kernel=(1, 3)), "3×3 kernels only"),
])
def test_unsupported_layers_raise_naming_the_rule(kw, rule):
    kw = dict(kw)
    r, s = kw.pop("kernel", (3, 3))
    x = np.ones((1, 2, 12, 12), np.float32)
    w = np.ones((3, 2, r, s), np.float32)
    with pytest.raises(ValueError, match=f"algorithm='winograd' cannot compute this layer: {rule}"):
        convcore.conv2d(x, w, algorithm="winograd", **kw)
    with pytest.raises(ValueError, match=rule):
        convcore.Conv2d(2, 3, (r, s), algorithm="winograd", **kw)
    with pytest.raises(ValueError, match=rule):
        convcore.conv2d_backward_weight(np.ones((1, 3, 4, 4), np.float32), x, w.shape,
                                        algorithm="winograd", **kw)


# The suite's 3×3 stride-1 layers at batch 1 (a 56×56 map is cut to 28×28 to keep the
# test fast): the documented float32 bound, against convcore's exact float64 result
# (itself checked against the reference elsewhere).
SUITE_3X3 = [(128, 28, 128), (64, 28, 64), (512, 7, 512)]


@pytest.mark.parametrize("c, hw, k", SUITE_3X3)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_suite_layers_float32_error_bound(c, hw, k, layout):
    rng = np.random.default_rng(c)
    x = rng.standard_normal((1, c, hw, hw))
    w = rng.standard_normal((k, c, 3, 3))
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        w = np.ascontiguousarray(w.transpose(0, 2, 3, 1))
    want = convcore.conv2d(x, w, padding=1, layout=layout)
    y = convcore.conv2d(x.astype(np.float32), w.astype(np.float32), padding=1, layout=layout,
                        algorithm="winograd")
    assert _rel_err(y, want) < F32_BOUND
    y64 = convcore.conv2d(x, w, padding=1, layout=layout, algorithm="winograd")
    assert _rel_err(y64, want) < F64_BOUND
