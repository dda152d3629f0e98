"""The locally-connected layer (every output position has its own filters) against a float64
direct-loop reference written here, finite differences, adjoint identities, the conv2d
special case (all positions sharing one filter), parameter counts and bad inputs."""
from __future__ import annotations

import numpy as np
import pytest

import convcore
from convcore import _core
from reference import assert_close, axis_output, resolve_padding


# --- float64 direct-loop reference (NCHW internally) -------------------------------------

def _geometry(x_shape, r, s, stride, padding, shape_rule):
    _, _, h, w = x_shape
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    t, b, l, rr = resolve_padding(padding, (r, s), (sh, sw), (1, 1))
    ho, eh = axis_output(h, r, sh, 1, t, b, shape_rule)
    wo, ew = axis_output(w, s, sw, 1, l, rr, shape_rule)
    return (sh, sw), (t, b + eh, l, rr + ew), ho, wo


def _to_nchw(x, w, layout):
    """x NCHW, w (Ho, Wo, K, C, R, S) in float64."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
        w = w.transpose(0, 1, 2, 5, 3, 4)
    return x, w


def ref_forward(x, w, b=None, *, stride=1, padding=0, layout="NCHW", shape_rule="strict"):
    x, w = _to_nchw(x, w, layout)
    n, c, h, wd = x.shape
    ho_w, wo_w, k, _, r, s = w.shape
    (sh, sw), (t, bo, l, ri), ho, wo = _geometry(x.shape, r, s, stride, padding, shape_rule)
    assert (ho, wo) == (ho_w, wo_w)
    xp = np.zeros((n, c, h + t + bo, wd + l + ri))
    xp[:, :, t:t + h, l:l + wd] = x
    y = np.zeros((n, k, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * sh:i * sh + r, j * sw:j * sw + s].reshape(n, c * r * s)
            y[:, :, i, j] = patch @ w[i, j].reshape(k, -1).T
    if b is not None:
        b = np.asarray(b, np.float64)
        y += b[None] if layout == "NCHW" else b.transpose(2, 0, 1)[None]
    return y if layout == "NCHW" else y.transpose(0, 2, 3, 1)


def ref_backward(dy, x, w, *, stride=1, padding=0, layout="NCHW", shape_rule="strict"):
    """(dx, dw, db) in the layout's shapes."""
    x_shape = np.shape(x)
    x, w = _to_nchw(x, w, layout)
    dy = np.asarray(dy, np.float64)
    if layout == "NHWC":
        dy = dy.transpose(0, 3, 1, 2)
    n, c, h, wd = x.shape
    ho, wo, k, _, r, s = w.shape
    (sh, sw), (t, bo, l, ri), _, _ = _geometry(x.shape, r, s, stride, padding, shape_rule)
    xp = np.zeros((n, c, h + t + bo, wd + l + ri))
    xp[:, :, t:t + h, l:l + wd] = x
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * sh:i * sh + r, j * sw:j * sw + s].reshape(n, c * r * s)
            g = dy[:, :, i, j]                                  # (n, k)
            dw[i, j] = (g.T @ patch).reshape(k, c, r, s)
            dxp[:, :, i * sh:i * sh + r, j * sw:j * sw + s] += (g @ w[i, j].reshape(k, -1)).reshape(n, c, r, s)
    dx = dxp[:, :, t:t + h, l:l + wd]
    db = dy.sum(axis=0)                                         # (k, ho, wo)
    if layout == "NHWC":
        dx = dx.transpose(0, 2, 3, 1)
        dw = dw.transpose(0, 1, 2, 4, 5, 3)
        db = db.transpose(1, 2, 0)
    assert dx.shape == tuple(x_shape)
    return dx, dw, db


# --- helpers --------------------------------------------------------------------------------

def _make(rng, n, c, h, w, k, r, s, *, stride=1, padding=0, layout="NCHW",
          shape_rule="strict", dtype=np.float64):
    (sh, sw), _, ho, wo = _geometry((n, c, h, w), r, s, stride, padding, shape_rule)
    if layout == "NCHW":
        x = rng.standard_normal((n, c, h, w))
        wt = rng.standard_normal((ho, wo, k, c, r, s))
        b = rng.standard_normal((k, ho, wo))
    else:
        x = rng.standard_normal((n, h, w, c))
        wt = rng.standard_normal((ho, wo, k, r, s, c))
        b = rng.standard_normal((ho, wo, k))
    return x.astype(dtype), wt.astype(dtype), b.astype(dtype)


CASES = [
    # n, c, h, w, k, r, s, stride, padding, shape_rule
    (2, 3, 7, 6, 4, 3, 3, 1, 1, "strict"),
    (3, 2, 9, 8, 5, 3, 2, (2, 1), (1, 1, 2, 1), "strict"),
    (1, 4, 8, 8, 3, 2, 2, 2, 0, "strict"),
    (2, 3, 10, 9, 2, 3, 3, 2, "valid", "crop"),
    (2, 3, 10, 9, 2, 3, 3, 2, 0, "pad"),
    (2, 5, 6, 7, 6, 3, 3, 1, "same", "strict"),
    (0, 3, 6, 6, 4, 3, 3, 1, 1, "strict"),
    (1, 1, 5, 5, 1, 5, 5, 1, 0, "strict"),
    (37, 9, 6, 5, 33, 3, 3, 1, 1, "strict"),   # batch and K past one tile, CRS with a tail
    (4, 40, 5, 5, 3, 3, 3, 3, 2, "strict"),    # CRS 360, stride larger than kernel
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"-s{c[7]}-p{c[8]}-{c[9]}")
def test_against_reference(isa, case, layout, dtype):
    n, c, h, w, k, r, s, stride, padding, rule = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x, wt, b = _make(rng, n, c, h, w, k, r, s, stride=stride, padding=padding, layout=layout,
                     shape_rule=rule, dtype=dtype)
    kw = dict(stride=stride, padding=padding, layout=layout, shape_rule=rule)
    y = convcore.locally_connected2d(x, wt, b, **kw)
    assert y.dtype == dtype
    assert_close(y, ref_forward(x, wt, b, **kw), dtype, "forward", terms=c * r * s + 1)
    dy = rng.standard_normal(y.shape).astype(dtype)
    g = convcore.locally_connected2d_backward(dy, x, wt, **kw)
    rdx, rdw, rdb = ref_backward(dy, x, wt, **kw)
    assert_close(g.input, rdx, dtype, "dx", terms=k * r * s)
    assert_close(g.weight, rdw, dtype, "dw", terms=max(n, 1))
    assert_close(g.bias, rdb, dtype, "db", terms=max(n, 1))
    assert g.bias.shape == b.shape


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_layer_prepacked_matches_functional(isa, layout):
    rng = np.random.default_rng(3)
    layer = convcore.LocallyConnected2d(3, 5, 3, (7, 6), stride=1, padding=1, layout=layout,
                                        dtype="float64", rng=1)
    shape = (4, 3, 7, 6) if layout == "NCHW" else (4, 7, 6, 3)
    x = rng.standard_normal(shape)
    y = layer.forward(x)
    kw = dict(stride=1, padding=1, layout=layout)
    assert_close(y, ref_forward(x, layer.weight, layer.bias, **kw), np.float64, "layer forward")
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    rdx, rdw, rdb = ref_backward(dy, x, layer.weight, **kw)
    assert_close(dx, rdx, np.float64, "layer dx")
    assert_close(layer.grad_weight, rdw, np.float64, "layer dw")
    assert_close(layer.grad_bias, rdb, np.float64, "layer db")
    # Weight assignment repacks.
    layer.weight = layer.weight * 2
    assert_close(layer.forward(x), ref_forward(x, layer.weight, layer.bias, **kw), np.float64,
                 "after assignment")
    layer.weight[...] = 0.5
    layer.weight_changed()
    assert_close(layer.forward(x), ref_forward(x, layer.weight, layer.bias, **kw), np.float64,
                 "after weight_changed")
    assert layer.num_params == layer.weight.size + layer.bias.size
    # Another batch size: another primitive.
    x1 = x[:1]
    assert_close(layer.forward(x1), ref_forward(x1, layer.weight, layer.bias, **kw), np.float64,
                 "batch 1")


def test_layer_float32_and_no_bias():
    layer = convcore.LocallyConnected2d(2, 3, (2, 3), 5, bias=False, rng=0)
    assert layer.weight.dtype == np.float32 and layer.bias is None
    assert layer.weight.shape == (4, 3, 3, 2, 2, 3)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    y = layer(x)
    assert_close(y, ref_forward(x, layer.weight), np.float32, "forward")
    layer.backward(np.ones_like(y))
    assert layer.grad_bias is None and layer.grad_weight.shape == layer.weight.shape
    with pytest.raises(ValueError, match="before forward"):
        convcore.LocallyConnected2d(2, 3, 2, 5).backward(np.ones_like(y))


def test_same_filter_everywhere_equals_conv2d(isa):
    """With every position given the same filter, the layer is conv2d (an independent
    check: conv2d is another code path entirely)."""
    rng = np.random.default_rng(7)
    for layout in ("NCHW", "NHWC"):
        for dtype in (np.float32, np.float64):
            n, c, h, w, k = 3, 4, 9, 9, 5
            wc = rng.standard_normal((k, c, 3, 3) if layout == "NCHW" else (k, 3, 3, c)).astype(dtype)
            x = rng.standard_normal((n, c, h, w) if layout == "NCHW" else (n, h, w, c)).astype(dtype)
            kw = dict(stride=2, padding=1, layout=layout)
            y_conv = convcore.conv2d(x, wc, **kw)
            ho, wo = (y_conv.shape[2:] if layout == "NCHW" else y_conv.shape[1:3])
            wl = np.ascontiguousarray(np.broadcast_to(wc, (ho, wo) + wc.shape))
            y = convcore.locally_connected2d(x, wl, **kw)
            assert_close(y, y_conv.astype(np.float64), dtype, "same-filter forward")
            dy = rng.standard_normal(y.shape).astype(dtype)
            g = convcore.locally_connected2d_backward(dy, x, wl, **kw)
            gc = convcore.conv2d_backward(dy, x, wc, **kw)
            assert_close(g.input, gc.input.astype(np.float64), dtype, "same-filter dx")
            # Summing the per-position weight gradients gives the shared one.
            assert_close(g.weight.astype(np.float64).sum(axis=(0, 1)), gc.weight.astype(np.float64),
                         dtype, "same-filter dw")


def test_adjoint_identities():
    rng = np.random.default_rng(11)
    for layout in ("NCHW", "NHWC"):
        x, w, _ = _make(rng, 3, 4, 7, 6, 5, 3, 2, stride=(2, 1), padding=(1, 1, 1, 0),
                        layout=layout)
        kw = dict(stride=(2, 1), padding=(1, 1, 1, 0), layout=layout)
        y = convcore.locally_connected2d(x, w, **kw)
        dy = rng.standard_normal(y.shape)
        g = convcore.locally_connected2d_backward(dy, x, w, **kw)
        # <A x, dy> = <x, Aᵀ dy> (linear in x) and = <w, ∂/∂w> (linear in w)
        lhs = float(np.vdot(y, dy))
        assert abs(lhs - float(np.vdot(x, g.input))) <= 1e-11 * max(1.0, abs(lhs)) * 10
        assert abs(lhs - float(np.vdot(w, g.weight))) <= 1e-11 * max(1.0, abs(lhs)) * 10


def test_finite_differences():
    rng = np.random.default_rng(5)
    for layout in ("NCHW", "NHWC"):
        kw = dict(stride=2, padding=1, layout=layout)
        x, w, b = _make(rng, 2, 2, 5, 5, 3, 3, 3, **kw)
        dy = rng.standard_normal(convcore.locally_connected2d(x, w, b, **kw).shape)
        g = convcore.locally_connected2d_backward(dy, x, w, **kw)
        loss = lambda xx, ww, bb: float(np.vdot(convcore.locally_connected2d(xx, ww, bb, **kw), dy))
        eps = 1e-6
        for arr, grad, which in ((x, g.input, 0), (w, g.weight, 1), (b, g.bias, 2)):
            for idx in [tuple(rng.integers(0, d) for d in arr.shape) for _ in range(6)]:
                args_p = [x.copy(), w.copy(), b.copy()]
                args_m = [x.copy(), w.copy(), b.copy()]
                args_p[which][idx] += eps
                args_m[which][idx] -= eps
                fd = (loss(*args_p) - loss(*args_m)) / (2 * eps)
                assert abs(fd - grad[idx]) <= 1e-6 * max(1.0, abs(fd)), (layout, which, idx)


def test_batch_zero_and_one_image():
    rng = np.random.default_rng(2)
    x, w, b = _make(rng, 1, 3, 5, 5, 2, 3, 3, padding=1)
    y3 = convcore.locally_connected2d(x[0], w, b, padding=1)
    assert y3.shape == (2, 5, 5)
    assert_close(y3, ref_forward(x, w, b, padding=1)[0], np.float64, "3-D input")
    x0 = np.zeros((0, 3, 5, 5))
    assert convcore.locally_connected2d(x0, w, b, padding=1).shape == (0, 2, 5, 5)
    g = convcore.locally_connected2d_backward(np.zeros((0, 2, 5, 5)), x0, w, padding=1)
    assert g.input.shape == x0.shape
    assert not g.weight.any() and not g.bias.any()


def test_thread_counts_bitwise(restore_threads):
    rng = np.random.default_rng(9)
    for n in (5, 1):
        x, w, b = _make(rng, n, 6, 9, 9, 7, 3, 3, padding=1, dtype=np.float32)
        dy = rng.standard_normal((n, 7, 9, 9)).astype(np.float32)
        out = []
        for t in (1, 2, 3):
            convcore.set_num_threads(min(t, convcore.max_num_threads()))
            y = convcore.locally_connected2d(x, w, b, padding=1)
            g = convcore.locally_connected2d_backward(dy, x, w, padding=1)
            out.append((y, g.input, g.weight, g.bias))
        for other in out[1:]:
            for a, bb in zip(out[0], other):
                np.testing.assert_array_equal(a, bb)


def test_alexnet_conv1_without_sharing():
    # 55·55·96·(3·11·11 + 1)
    assert convcore.locally_connected2d_num_params(227, 3, 96, 11, stride=4) == 105_705_600
    assert convcore.locally_connected2d_num_params(227, 3, 96, 11, stride=4, bias=False) == \
        55 * 55 * 96 * 363
    assert convcore.locally_connected2d_num_params((6, 5), 2, 3, (3, 2), padding=1) == \
        6 * 6 * 3 * (2 * 3 * 2 + 1)
    with pytest.raises(convcore.ShapeError):
        convcore.locally_connected2d_num_params(228, 3, 96, 11, stride=4)
    with pytest.raises(ValueError, match="in_channels"):
        convcore.locally_connected2d_num_params(227, 0, 96, 11)


@pytest.mark.parametrize("forced,forced_data", [("per_position_gemm", "per_position_gemm"),
                                                ("per_position_gather", "per_position_scatter")])
def test_every_entry_forced(isa, forced, forced_data):
    from convcore._conv import _force_implementations
    rng = np.random.default_rng(4)
    for layout in ("NCHW", "NHWC"):
        for dtype in (np.float32, np.float64):
            kw = dict(stride=(2, 1), padding=(1, 1, 0, 2), layout=layout)
            x, w, b = _make(rng, 35, 3, 7, 5, 4, 3, 3, dtype=dtype, **kw)
            with _force_implementations(forward=forced, backward_data=forced_data,
                                        backward_weight=forced):
                y = convcore.locally_connected2d(x, w, b, **kw)
                dy = rng.standard_normal(y.shape).astype(dtype)
                g = convcore.locally_connected2d_backward(dy, x, w, **kw)
            assert_close(y, ref_forward(x, w, b, **kw), dtype, forced, terms=28)
            rdx, rdw, _ = ref_backward(dy, x, w, **kw)
            assert_close(g.input, rdx, dtype, forced, terms=36)
            assert_close(g.weight, rdw, dtype, forced, terms=35)


def test_large_images_chunked_and_fallback():
    """Batches split into chunks of the transposed input (the weight gradient summed over
    chunks), and images too large for it fall back to the gather entries."""
    rng = np.random.default_rng(8)
    x, w, b = _make(rng, 100, 2, 100, 100, 1, 3, 3, dtype=np.float64)
    algos = _core.Primitive(100, 2, 100, 100, 1, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1, "NCHW",
                            "strict", "float64", kind="locally_connected2d").algorithms
    assert algos["forward"] == "per_position_gemm"
    y = convcore.locally_connected2d(x, w, b)
    assert_close(y, ref_forward(x, w, b), np.float64, "chunked forward")
    dy = rng.standard_normal(y.shape)
    g = convcore.locally_connected2d_backward(dy, x, w)
    rdx, rdw, _ = ref_backward(dy, x, w)
    assert_close(g.weight, rdw, np.float64, "chunked dw")
    assert_close(g.input, rdx, np.float64, "chunked dx")
    big = _core.Primitive(1, 1, 400, 400, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, "NCHW",
                          "strict", "float32", kind="locally_connected2d").algorithms
    assert big["forward"] == "per_position_gather"
    assert big["backward_weight"] == "per_position_gather"
    assert big["backward_data"] == "per_position_scatter"


def test_implementation_reported():
    prim = _core.Primitive(2, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, "NCHW", "strict",
                           "float32", kind="locally_connected2d")
    algos = prim.algorithms
    assert set(algos.values()) == {"per_position_gemm"}
    impls = prim.implementations()
    assert [e["name"] for e in impls["forward"]] == ["per_position_gemm", "per_position_gather"]
    assert [e["name"] for e in impls["backward_data"]] == ["per_position_gemm",
                                                           "per_position_scatter"]
    assert [e["name"] for e in impls["backward_weight"]] == ["per_position_gemm",
                                                             "per_position_gather"]
    # the conv2d lists are untouched
    conv = _core.Primitive(2, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, "NCHW", "strict")
    assert "per_position_gemm" not in conv.algorithms.values()
    with pytest.raises(ValueError, match="kind"):
        _core.Primitive(2, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, "NCHW", "strict",
                        kind="nope")
    with pytest.raises(ValueError, match="groups must be 1"):
        _core.Primitive(2, 4, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, "NCHW", "strict",
                        kind="locally_connected2d")
    with pytest.raises(ValueError, match="dilation must be 1"):
        _core.Primitive(2, 4, 5, 5, 4, 3, 3, 1, 1, 2, 1, 1, 1, 1, 1, 1, "NCHW", "strict",
                        kind="locally_connected2d")


def test_bad_inputs():
    rng = np.random.default_rng(0)
    x, w, b = _make(rng, 2, 3, 6, 6, 4, 3, 3, padding=1)
    with pytest.raises(ValueError, match=r"expected \(6, 6, 4, 3, 3, 3\)"):
        convcore.locally_connected2d(x, w[:5], padding=1)
    with pytest.raises(ValueError, match=r"expected \(4, 4, 4, 3, 3, 3\)"):
        convcore.locally_connected2d(x, w)  # no padding: 4×4 positions
    with pytest.raises(ValueError, match="6-D"):
        convcore.locally_connected2d(x, w[0, 0], padding=1)
    with pytest.raises(TypeError, match="dtype"):
        convcore.locally_connected2d(x.astype(np.float32), w, padding=1)
    with pytest.raises(TypeError, match="dtype"):
        convcore.locally_connected2d(x, w, b.astype(np.float32), padding=1)
    with pytest.raises(ValueError, match=r"bias must have shape \(4, 6, 6\)"):
        convcore.locally_connected2d(x, w, b[:, :, :5], padding=1)
    with pytest.raises(ValueError, match="grad_output has shape"):
        convcore.locally_connected2d_backward(np.zeros((2, 4, 5, 6)), x, w, padding=1)
    with pytest.raises(TypeError, match="bias must be True or False"):
        convcore.locally_connected2d_backward(np.zeros((2, 4, 6, 6)), x, w, padding=1, bias=b)
    with pytest.raises(convcore.ShapeError):
        convcore.locally_connected2d(x, np.zeros((3, 3, 4, 3, 3, 3)), stride=2)
    with pytest.raises(ValueError, match="same"):
        convcore.locally_connected2d(x, w, padding="same", stride=2)
    with pytest.raises(ValueError, match="layout"):
        convcore.locally_connected2d(x, w, padding=1, layout="CHWN")
    with pytest.raises(TypeError):
        convcore.LocallyConnected2d(3, 4, 3, 6, dtype="int32")
    with pytest.raises(ValueError, match="in_channels"):
        convcore.LocallyConnected2d(0, 4, 3, 6)
    layer = convcore.LocallyConnected2d(3, 4, 3, 6, padding=1, dtype="float64")
    with pytest.raises(ValueError, match=r"input_size \(6, 6\)"):
        layer.forward(np.zeros((2, 3, 7, 7)))
    with pytest.raises(TypeError, match="dtype"):
        layer.forward(np.zeros((2, 3, 6, 6), np.float32))


# --- Inf/NaN against padding ---------------------------------------------

def _direct_skip_padding(x, w, dy, *, stride, padding, layout):
    """(y, dx, dw) by the definition in float64: loops over the taps that lie in the image,
    one product each (padding never multiplies anything, so 0·Inf never appears)."""
    x, w = _to_nchw(x, w, layout)
    dy = np.asarray(dy, np.float64)
    if layout == "NHWC":
        dy = dy.transpose(0, 3, 1, 2)
    n, c, h, wd = x.shape
    ho, wo, k, _, r, s = w.shape
    (sh, sw), (t, _, l, _), _, _ = _geometry(x.shape, r, s, stride, padding, "strict")
    y = np.zeros((n, k, ho, wo))
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for i in range(ho):
        for j in range(wo):
            for ci in range(c):
                for ri in range(r):
                    hh = i * sh - t + ri
                    if not 0 <= hh < h:
                        continue
                    for si in range(s):
                        ww = j * sw - l + si
                        if not 0 <= ww < wd:
                            continue
                        wt = w[i, j, :, ci, ri, si]                      # (k,)
                        xv = x[:, ci, hh, ww]                            # (n,)
                        g = dy[:, :, i, j]                               # (n, k)
                        y[:, :, i, j] += xv[:, None] * wt[None, :]
                        dx[:, ci, hh, ww] += (g * wt[None, :]).sum(axis=1)
                        dw[i, j, :, ci, ri, si] = (g * xv[:, None]).sum(axis=0)
    if layout == "NHWC":
        y = y.transpose(0, 2, 3, 1)
        dx = dx.transpose(0, 2, 3, 1)
        dw = dw.transpose(0, 1, 2, 4, 5, 3)
    return y, dx, dw


def _assert_same_nonfinite(got, ref, dtype, what):
    got = np.asarray(got, np.float64)
    assert got.shape == ref.shape, what
    assert np.array_equal(np.isnan(got), np.isnan(ref)), (
        f"{what}: NaN at {np.argwhere(np.isnan(got) != np.isnan(ref))[:4].tolist()}")
    assert np.array_equal(np.isposinf(got), np.isposinf(ref)), f"{what}: +Inf differs"
    assert np.array_equal(np.isneginf(got), np.isneginf(ref)), f"{what}: -Inf differs"
    fin = np.isfinite(ref)
    assert_close(got[fin], ref[fin], dtype, what, terms=40)


def _spike(rng, a, count):
    """a with `count` entries set to +Inf, -Inf or NaN (at random flat positions)."""
    a = a.copy()
    flat = a.reshape(-1)
    for idx, v in zip(rng.choice(flat.size, count, replace=False),
                      rng.choice([np.inf, -np.inf, np.nan], count)):
        flat[idx] = v
    return a


def _padding_tap_indices(w_shape, stride, padding, h, wd, layout):
    """Flat indices into w of taps that lie in the padding (every k)."""
    ho, wo = w_shape[:2]
    r, s = (w_shape[4], w_shape[5]) if layout == "NCHW" else (w_shape[3], w_shape[4])
    (sh, sw), (t, _, l, _), _, _ = _geometry((1, 1, h, wd), r, s, stride, padding, "strict")
    out = []
    for i in range(ho):
        for j in range(wo):
            for ri in range(r):
                for si in range(s):
                    if 0 <= i * sh - t + ri < h and 0 <= j * sw - l + si < wd:
                        continue
                    idx = (i, j, 0, 0, ri, si) if layout == "NCHW" else (i, j, 0, ri, si, 0)
                    out.append(np.ravel_multi_index(idx, w_shape))
    return out


@pytest.mark.parametrize("forced,forced_data", [("per_position_gemm", "per_position_gemm"),
                                                ("per_position_gather", "per_position_scatter")])
@pytest.mark.parametrize("operand", ["w", "x", "dy"])
def test_nonfinite_never_meets_padding(isa, forced, forced_data, operand):
    """Inf/NaN in w, x or dy give NaN/Inf exactly where the direct loop (which never
    multiplies padding) does: the forward, backward-data and backward-weight passes, the
    functional API and the layer (prepacked weights), every forced entry."""
    from convcore._conv import _force_implementations
    rng = np.random.default_rng(11)
    for layout in ("NCHW", "NHWC"):
        for dtype in (np.float32, np.float64):
            for n, stride, padding in ((3, (2, 1), (1, 1, 0, 2)), (35, 1, 2)):
                kw = dict(stride=stride, padding=padding, layout=layout)
                x, w, _ = _make(rng, n, 2, 5, 4, 3, 3, 3, dtype=dtype, **kw)
                (sh, sw), _, ho, wo = _geometry((n, 2, 5, 4), 3, 3, stride, padding, "strict")
                yshape = (n, 3, ho, wo) if layout == "NCHW" else (n, ho, wo, 3)
                dy = rng.standard_normal(yshape).astype(dtype)
                if operand == "w":
                    w = _spike(rng, w, 3)
                    pad_taps = _padding_tap_indices(w.shape, stride, padding, 5, 4, layout)
                    for idx, v in zip(rng.choice(pad_taps, 4, replace=False),
                                      (np.inf, -np.inf, np.nan, np.inf)):
                        w.reshape(-1)[idx] = v
                elif operand == "x":
                    x = _spike(rng, x, 3)
                else:
                    dy = _spike(rng, dy, 3)
                    # dy non-finite at the corner positions, whose windows reach the padding
                    for corner in ((0, 0), (-1, -1)):
                        if layout == "NCHW":
                            dy[0, 1, corner[0], corner[1]] = np.inf
                        else:
                            dy[0, corner[0], corner[1], 1] = np.nan
                with np.errstate(all="ignore"):
                    ry, rdx, rdw = _direct_skip_padding(x, w, dy, **kw)
                with _force_implementations(forward=forced, backward_data=forced_data,
                                            backward_weight=forced):
                    y = convcore.locally_connected2d(x, w, **kw)
                    g = convcore.locally_connected2d_backward(dy, x, w, bias=False, **kw)
                    layer = convcore.LocallyConnected2d(2, 3, 3, (5, 4), bias=False,
                                                        dtype=dtype, **kw)
                    layer.weight[...] = w
                    layer.weight_changed()
                    ly = layer.forward(x)
                    ldx = layer.backward(dy)
                what = f"{operand} {layout} {np.dtype(dtype).name} n={n} {forced}"
                _assert_same_nonfinite(y, ry, dtype, what + " forward")
                _assert_same_nonfinite(ly, ry, dtype, what + " layer forward")
                _assert_same_nonfinite(g.input, rdx, dtype, what + " backward-data")
                _assert_same_nonfinite(ldx, rdx, dtype, what + " layer backward-data")
                _assert_same_nonfinite(g.weight, rdw, dtype, what + " backward-weight")
                _assert_same_nonfinite(layer.grad_weight, rdw, dtype, what + " layer backward-weight")


def test_uncopyable_view_names_the_argument():
    """A broadcast view too large to copy contiguously raises MemoryError naming the argument
    (not NumPy's bare 'Unable to allocate'), found by the API fuzzer."""
    x = np.ones((1, 1, 1, 1), np.float32)
    wo = 2**40 + 1  # padding 2**40 on the right: that many positions, each with its filters
    w = np.broadcast_to(np.float32(1), (1, wo, 1, 1, 1, 1))
    b = np.broadcast_to(np.float32(0), (1, 1, wo))
    with pytest.raises(MemoryError, match="bias"):
        convcore.locally_connected2d(x, w, b, padding=(0, 0, 0, 2**40))
    dy = np.broadcast_to(np.float32(1), (1, 1, 1, wo))
    with pytest.raises(MemoryError, match="grad_output"):
        convcore.locally_connected2d_backward(dy, x, w, padding=(0, 0, 0, 2**40))
