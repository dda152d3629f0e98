"""Transposed convolution (convcore.conv_transpose2d, its backward, ConvTranspose2d).

The reference is written here in float64 from the scatter definition — every input pixel
adds its weighted kernel into the output, y[n, k, ih·s − p + r·d, iw·s − p + c·d] +=
x[n, c_in, ih, iw] · w[c_in, k, r, c], taps outside the output dropped — and never calls
convcore. Also: finite differences, the adjoint identity with conv2d, every implementation
of every pass forced on every ISA, PyTorch where installed, and the bad inputs.
"""
import numpy as np
import pytest

import convcore
from convcore import ConvTranspose2d, conv_transpose2d, conv_transpose2d_backward
from convcore._conv import _force_implementations
from convcore.transposed import _algorithms, _implementations


# -- the reference --------------------------------------------------------------------------

def _pads(padding):
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return tuple(padding)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _geometry(x_shape, w_shape, stride, padding, output_padding, dilation):
    n, c, h, w = x_shape
    _, kg, r, s = w_shape
    (sh, sw), (dh, dw), (oph, opw) = _pair(stride), _pair(dilation), _pair(output_padding)
    pt, pb, pl, pr = _pads(padding)
    ho = (h - 1) * sh - pt - pb + dh * (r - 1) + oph + 1
    wo = (w - 1) * sw - pl - pr + dw * (s - 1) + opw + 1
    return ho, wo, sh, sw, dh, dw, pt, pl


def _taps(h, w, ho, wo, sh, sw, dh, dw, pt, pl, r, s):
    """For tap (r, s): the input rows/columns whose target lies in the output, and the
    targets."""
    ih = np.arange(h)
    oy = ih * sh - pt + r * dh
    iw = np.arange(w)
    ox = iw * sw - pl + s * dw
    my, mx = (oy >= 0) & (oy < ho), (ox >= 0) & (ox < wo)
    return ih[my], oy[my], iw[mx], ox[mx]


def ref_forward(x, wt, b, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                relu=False):
    """NCHW float64: x (N, C_in, H, W), wt (C_in, C_out/g, R, S)."""
    x, wt = x.astype(np.float64), wt.astype(np.float64)
    n, c, h, w = x.shape
    _, kg, r_, s_ = wt.shape
    ho, wo, sh, sw, dh, dw, pt, pl = _geometry(x.shape, wt.shape, stride, padding,
                                               output_padding, dilation)
    cg = c // groups
    y = np.zeros((n, kg * groups, ho, wo))
    for g in range(groups):
        xg = x[:, g * cg:(g + 1) * cg]
        for r in range(r_):
            for s in range(s_):
                ih, oy, iw, ox = _taps(h, w, ho, wo, sh, sw, dh, dw, pt, pl, r, s)
                contrib = np.einsum("nchw,ck->nkhw", xg[:, :, ih][:, :, :, iw],
                                    wt[g * cg:(g + 1) * cg, :, r, s])
                y[:, g * kg:(g + 1) * kg, oy[:, None], ox[None, :]] += contrib
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
    return np.maximum(y, 0) if relu else y


def ref_backward(dy, x, wt, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """(dx, dw, db) of ref_forward (NCHW, float64), each the adjoint of its scatter."""
    dy, x, wt = dy.astype(np.float64), x.astype(np.float64), wt.astype(np.float64)
    n, c, h, w = x.shape
    _, kg, r_, s_ = wt.shape
    ho, wo, sh, sw, dh, dw, pt, pl = _geometry(x.shape, wt.shape, stride, padding,
                                               output_padding, dilation)
    cg = c // groups
    dx = np.zeros(x.shape)
    dw_ = np.zeros(wt.shape)
    for g in range(groups):
        for r in range(r_):
            for s in range(s_):
                ih, oy, iw, ox = _taps(h, w, ho, wo, sh, sw, dh, dw, pt, pl, r, s)
                d = dy[:, g * kg:(g + 1) * kg][:, :, oy][:, :, :, ox]
                xs = x[:, g * cg:(g + 1) * cg][:, :, ih][:, :, :, iw]
                dx[:, g * cg:(g + 1) * cg, ih[:, None], iw[None, :]] += np.einsum(
                    "nkhw,ck->nchw", d, wt[g * cg:(g + 1) * cg, :, r, s])
                dw_[g * cg:(g + 1) * cg, :, r, s] += np.einsum("nchw,nkhw->ck", xs, d)
    return dx, dw_, dy.sum(axis=(0, 2, 3))


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def close(got, want, dtype, what):
    tol = 1e-11 if np.dtype(dtype) == np.float64 else 2e-4
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    err = float(np.abs(np.asarray(got, np.float64) - want).max(initial=0)) / scale
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"


# -- cases ----------------------------------------------------------------------------------

# name: (x shape NCHW, C_out, kernel, keywords)
CASES = {
    "s2_k4_p1": ((2, 16, 9, 8), 12, (4, 4), dict(stride=2, padding=1)),
    "s2_k3_p1_op1": ((2, 12, 6, 5), 9, (3, 3), dict(stride=2, padding=1, output_padding=1)),
    "s1_k3_p1": ((2, 9, 7, 8), 10, (3, 3), dict(padding=1)),
    "s1_dilated_op": ((1, 10, 6, 7), 8, (3, 2), dict(dilation=2, output_padding=1)),
    "s2_dil3_op2": ((2, 10, 5, 6), 9, (3, 3), dict(stride=2, dilation=3, output_padding=2)),
    "s3x2_asym": ((1, 16, 6, 7), 12, (3, 2), dict(stride=(3, 2), padding=(2, 1),
                                                  output_padding=(2, 1), dilation=(1, 2))),
    "groups": ((2, 16, 7, 6), 24, (3, 3), dict(stride=2, padding=1, groups=4)),
    "s3_1x1": ((2, 12, 6, 5), 10, (1, 1), dict(stride=3)),
    "small_maps": ((4, 8, 3, 4), 6, (3, 3), dict(stride=2)),
    "big_stride": ((1, 8, 3, 3), 8, (2, 2), dict(stride=20, padding=1)),
    "pad4": ((1, 8, 9, 10), 10, (5, 4), dict(stride=2, padding=(3, 1, 2, 0))),
    "one_pixel": ((3, 8, 1, 1), 8, (4, 4), dict(stride=2)),
    "out32": ((2, 8, 4, 5), 32, (3, 3), dict(stride=2, padding=1)),
    # depthwise (groups == channels: the dwconv entries of every pass) and NHWC groups of 4
    # channels with 4 filters (grouped_nhwc)
    "depthwise": ((2, 8, 6, 7), 8, (3, 3), dict(stride=2, padding=1, groups=8)),
    "depthwise_s1": ((2, 6, 5, 6), 12, (3, 3), dict(padding=1, groups=6)),
    "grouped_cg4": ((2, 8, 5, 6), 8, (3, 3), dict(padding=1, groups=2)),
}


def _arrays(case, layout, dtype, seed=0):
    x_shape, cout, (r, s), kw = CASES[case]
    groups = kw.get("groups", 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    wt = rng.standard_normal((x_shape[1], cout // groups, r, s))
    b = rng.standard_normal(cout)
    y_ref = ref_forward(x, wt, b, **kw)
    dy = rng.standard_normal(y_ref.shape)
    if layout == "NHWC":
        return (to_nhwc(x).astype(dtype), to_nhwc(wt).astype(dtype), b.astype(dtype),
                to_nhwc(dy).astype(dtype), dict(kw, layout=layout))
    return x.astype(dtype), wt.astype(dtype), b.astype(dtype), dy.astype(dtype), \
        dict(kw, layout=layout)


def _as_nchw(a, layout):
    return to_nchw(a) if layout == "NHWC" else a


def _check_all(x, wt, b, dy, kw, dtype, what, relu=False):
    layout = kw["layout"]
    ref_kw = {k: v for k, v in kw.items() if k != "layout"}
    xn, wn, dyn = _as_nchw(x, layout), _as_nchw(wt, layout), _as_nchw(dy, layout)
    y = conv_transpose2d(x, wt, b, activation="relu" if relu else None, **kw)
    close(_as_nchw(y, layout), ref_forward(xn, wn, b, relu=relu, **ref_kw), dtype, what + " fwd")
    g = conv_transpose2d_backward(dy, x, wt, **kw)
    dx, dw, db = ref_backward(dyn, xn, wn, **ref_kw)
    close(_as_nchw(g.input, layout), dx, dtype, what + " dx")
    close(_as_nchw(g.weight, layout), dw, dtype, what + " dw")
    close(g.bias, db, dtype, what + " db")
    assert y.dtype == g.input.dtype == g.weight.dtype == g.bias.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference(case, layout, dtype):
    x, wt, b, dy, kw = _arrays(case, layout, dtype)
    _check_all(x, wt, b, dy, kw, dtype, case)
    _check_all(x, wt, b, dy, kw, dtype, case + " relu", relu=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_implementation_forced(isa, case, layout, dtype):
    x, wt, b, dy, kw = _arrays(case, layout, dtype, seed=1)
    name = np.dtype(dtype).name
    lists = _implementations(x.shape, wt.shape, dtype=name, **kw)
    ref_kw = {k: v for k, v in kw.items() if k != "layout"}
    xn, wn, dyn = _as_nchw(x, layout), _as_nchw(wt, layout), _as_nchw(dy, layout)
    y_ref = ref_forward(xn, wn, b, relu=True, **ref_kw)
    dx_ref, dw_ref, _ = ref_backward(dyn, xn, wn, **ref_kw)
    for entry in lists["forward"]:
        if entry["applies"]:
            with _force_implementations(forward=entry["name"]):
                assert _algorithms(x.shape, wt.shape, dtype=name, **kw)["forward"] == entry["name"]
                y = conv_transpose2d(x, wt, b, activation="relu", **kw)
            close(_as_nchw(y, layout), y_ref, dtype, f"{case} fwd {entry['name']}")
    for entry in lists["backward_data"]:
        if entry["applies"]:
            with _force_implementations(backward_data=entry["name"]):
                g = conv_transpose2d_backward(dy, x, wt, bias=False, **kw)
            close(_as_nchw(g.input, layout), dx_ref, dtype, f"{case} dx {entry['name']}")
    for entry in lists["backward_weight"]:
        if entry["applies"]:
            with _force_implementations(backward_weight=entry["name"]):
                g = conv_transpose2d_backward(dy, x, wt, bias=False, **kw)
            close(_as_nchw(g.weight, layout), dw_ref, dtype, f"{case} dw {entry['name']}")


# The transposed forward's executor per case (the backward-data list of the equivalent
# convolution): sub-pixel for strides > 1 with enough channels and phase pixels (NHWC: its
# phases on the channels-last tiles), the full correlation for stride 1, col2im otherwise.
EXPECTED_FORWARD = {
    ("s2_k4_p1", "NCHW"): "subpixel", ("s2_k4_p1", "NHWC"): "subpixel_nhwc",
    ("s1_k3_p1", "NCHW"): "col2im", ("s1_k3_p1", "NHWC"): "indirect_nhwc",
    ("small_maps", "NCHW"): "col2im", ("small_maps", "NHWC"): "col2im",
    ("groups", "NCHW"): "col2im", ("groups", "NHWC"): "col2im",
}


def test_every_implementation_is_reached():
    reached = {}
    for case in CASES:
        for layout in ("NCHW", "NHWC"):
            x, wt, _, _, kw = _arrays(case, layout, np.float32)
            algos = _algorithms(x.shape, wt.shape, **kw)
            if (case, layout) in EXPECTED_FORWARD:
                assert algos["forward"] == EXPECTED_FORWARD[(case, layout)], (case, layout)
            for pass_, entries in _implementations(x.shape, wt.shape, **kw).items():
                for e in entries:
                    reached.setdefault((pass_, e["name"]), False)
                    reached[(pass_, e["name"])] |= e["applies"]
                    if not e["applies"]:
                        assert e["reason"], e
    # The conv2d forward list's Winograd entries run only when conv2d is asked for
    # algorithm='winograd'; conv_transpose2d has no such option, so its passes never take them.
    reached.pop(("backward_data", "winograd_f4x3"), None)
    reached.pop(("backward_data", "winograd_f4x3_filters"), None)
    assert all(reached.values()), [k for k, v in reached.items() if not v]
    for name in ("subpixel", "subpixel_nhwc", "col2im", "direct_stride1", "indirect_nhwc"):
        assert reached[("forward", name)]
    # direct_stride1 (NCHW, stride 1) is reached with a wide enough map:
    x = np.ones((1, 8, 20, 20), np.float32)
    assert _algorithms(x.shape, (8, 4, 3, 3), padding=1)["forward"] == "direct_stride1"


def test_bitwise_across_threads(restore_threads):
    x, wt, b, dy, kw = _arrays("s2_k3_p1_op1", "NCHW", np.float32)
    results = []
    for threads in (1, 2, 3):
        convcore.set_num_threads(threads)
        y = conv_transpose2d(x, wt, b, **kw)
        g = conv_transpose2d_backward(dy, x, wt, **kw)
        results.append((y, g.input, g.weight, g.bias))
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert np.array_equal(a, c)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_unbatched_input(layout):
    x, wt, b, dy, kw = _arrays("s2_k3_p1_op1", layout, np.float64)
    y = conv_transpose2d(x[1], wt, b, **kw)
    assert y.ndim == 3
    np.testing.assert_allclose(y, conv_transpose2d(x, wt, b, **kw)[1], rtol=1e-13, atol=1e-13)
    g = conv_transpose2d_backward(dy[1], x[1], wt, **kw)
    assert g.input.shape == x[1].shape
    assert convcore.conv_transpose2d_output_shape(x[1].shape, wt.shape, **kw) == y.shape


def test_output_shape_pytorch_formula():
    shape = convcore.conv_transpose2d_output_shape((8, 64, 56, 56), (64, 32, 3, 3), stride=2,
                                                   padding=1, output_padding=1)
    assert shape == (8, 32, 112, 112)
    shape = convcore.conv_transpose2d_output_shape((16, 16, 16, 256), (256, 4, 4, 128),
                                                   stride=2, padding=1, layout="NHWC")
    assert shape == (16, 32, 32, 128)


# -- identities -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["s2_k4_p1", "s2_k3_p1_op1", "groups", "s1_k3_p1", "pad4"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_adjoint_of_conv2d(case, layout):
    """<conv_transpose2d(x), y> == <x, conv2d(y)> with the same weights."""
    x, wt, _, dy, kw = _arrays(case, layout, np.float64)
    kw_t = {k: v for k, v in kw.items() if k != "output_padding"}
    lhs = float(np.vdot(conv_transpose2d(x, wt, **kw), dy))
    conv_kw = dict(kw_t, padding=_pads(kw.get("padding", 0)), shape_rule="crop")
    cy = convcore.conv2d(dy, wt, **conv_kw)
    assert cy.shape == x.shape
    rhs = float(np.vdot(x, cy))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_finite_differences():
    rng = np.random.default_rng(5)
    kw = dict(stride=2, padding=1, output_padding=1, dilation=(1, 2), groups=2)
    x = rng.standard_normal((2, 4, 3, 4))
    wt = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(6)
    dy = rng.standard_normal(conv_transpose2d(x, wt, b, **kw).shape)

    def loss(x_, w_, b_):
        return float(np.vdot(conv_transpose2d(x_, w_, b_, **kw), dy))

    g = conv_transpose2d_backward(dy, x, wt, **kw)
    eps = 1e-6
    for arr, grad in ((x, g.input), (wt, g.weight), (b, g.bias)):
        for idx in list(np.ndindex(arr.shape))[::7]:
            old = arr[idx]
            arr[idx] = old + eps
            up = loss(x, wt, b)
            arr[idx] = old - eps
            down = loss(x, wt, b)
            arr[idx] = old
            assert abs((up - down) / (2 * eps) - grad[idx]) < 1e-6 * max(1.0, abs(grad[idx]))


def test_nonfinite_weights_never_meet_padding():
    """An Inf weight reaches exactly the outputs its tap lands on: no NaN from a padding
    zero (the sub-pixel path multiplies its zero extension; the primitive runs col2im)."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0.5, 1.0, (1, 8, 5, 6))
    wt = rng.uniform(0.5, 1.0, (8, 8, 4, 4))
    wt[3, 2, 0, 3] = np.inf
    kw = dict(stride=2, padding=1)
    assert _algorithms(x.shape, wt.shape, **kw)["forward"] == "subpixel"
    ref = ref_forward(x, wt, None, **kw)
    for layout in ("NCHW", "NHWC"):
        xi, wi = (x, wt) if layout == "NCHW" else (to_nhwc(x), to_nhwc(wt))
        y = _as_nchw(conv_transpose2d(xi, wi, layout=layout, **kw), layout)
        assert not np.isnan(y).any()
        assert np.array_equal(np.isinf(y), np.isinf(ref))
        fin = np.isfinite(ref)
        np.testing.assert_allclose(y[fin], ref[fin], rtol=1e-12)
        layer = ConvTranspose2d(8, 8, 4, stride=2, padding=1, dtype="float64", layout=layout)
        layer.weight = wi
        y2 = _as_nchw(layer.forward(xi), layout)
        assert not np.isnan(y2 - (layer.bias[None, :, None, None])).any()


# -- PyTorch --------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch(case, layout):
    torch = pytest.importorskip("torch")
    x, wt, b, dy, kw = _arrays(case, layout, np.float64, seed=3)
    xn, wn, dyn = _as_nchw(x, layout), _as_nchw(wt, layout), _as_nchw(dy, layout)
    tx = torch.tensor(xn, requires_grad=True)
    tw = torch.tensor(wn, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    pads = _pads(kw.get("padding", 0))
    if pads[0] != pads[1] or pads[2] != pads[3]:
        pytest.skip("PyTorch pads symmetrically")
    if layout == "NHWC":
        tx = tx.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    ty = torch.nn.functional.conv_transpose2d(
        tx, tw, tb, stride=kw.get("stride", 1), padding=(pads[0], pads[2]),
        output_padding=kw.get("output_padding", 0), groups=kw.get("groups", 1),
        dilation=kw.get("dilation", 1))
    ty.backward(torch.tensor(dyn))
    y = conv_transpose2d(x, wt, b, **kw)
    g = conv_transpose2d_backward(dy, x, wt, **kw)
    np.testing.assert_allclose(_as_nchw(y, layout), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_as_nchw(g.input, layout), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_as_nchw(g.weight, layout), tw.grad.numpy(), rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(g.bias, tb.grad.numpy(), rtol=1e-12, atol=1e-11)


def test_layer_matches_torch_layer():
    torch = pytest.importorskip("torch")
    layer = ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2,
                            dtype="float64", rng=0)
    t = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2,
                                 dtype=torch.float64)
    assert tuple(t.weight.shape) == layer.weight.shape
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(layer.weight))
        t.bias.copy_(torch.from_numpy(layer.bias))
    x = np.random.default_rng(0).standard_normal((2, 6, 5, 4))
    tx = torch.tensor(x, requires_grad=True)
    ty = t(tx)
    y = layer.forward(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    ty.backward(torch.ones_like(ty))
    dx = layer.backward(np.ones_like(y))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grad_weight, t.weight.grad.numpy(), rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(layer.grad_bias, t.bias.grad.numpy(), rtol=1e-12, atol=1e-11)


# -- the layer ------------------------------------------------------------------------------

def test_layer_trains_like_the_functions():
    layer = ConvTranspose2d(8, 6, (3, 4), stride=(2, 1), padding=(1, 2), output_padding=(1, 0),
                            dtype="float64", rng=1)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 4, 5))
    kw = dict(stride=(2, 1), padding=(1, 2), output_padding=(1, 0))
    y = layer.forward(x)
    np.testing.assert_allclose(y, conv_transpose2d(x, layer.weight, layer.bias, **kw), rtol=1e-13)
    assert layer.output_shape(x.shape) == y.shape
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    g = conv_transpose2d_backward(dy, x, layer.weight, **kw)
    np.testing.assert_allclose(dx, g.input, rtol=1e-13)
    np.testing.assert_allclose(layer.grad_weight, g.weight, rtol=1e-13)
    # gradients accumulate until zero_grad
    layer.forward(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.grad_weight, 2 * g.weight, rtol=1e-13)
    np.testing.assert_allclose(layer.grad_bias, 2 * g.bias, rtol=1e-13)
    layer.zero_grad()
    assert layer.grad_weight is None and layer.grad_bias is None
    # an optimiser step in place through parameters() is seen by the next forward
    layer.forward(x)
    layer.backward(dy)
    for p, grad in layer.parameters():
        p -= 0.1 * grad
    y2 = layer.forward(x)
    np.testing.assert_allclose(y2, conv_transpose2d(x, layer.weight, layer.bias, **kw),
                               rtol=1e-13)
    state = layer.state_dict()
    other = ConvTranspose2d(8, 6, (3, 4), stride=(2, 1), padding=(1, 2),
                            output_padding=(1, 0), dtype="float64", rng=7)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.forward(x), y2)


def test_layer_options():
    layer = ConvTranspose2d(4, 6, 3, stride=2, groups=2, bias=False, layout="NHWC",
                            requires_input_grad=False, rng=0)
    assert layer.weight.shape == (4, 3, 3, 3) and layer.bias is None
    assert layer.num_params == 4 * 3 * 3 * 3
    x = np.ones((2, 5, 5, 4), np.float32)
    y = layer.forward(x)
    assert y.shape == (2, 11, 11, 6) and y.dtype == np.float32
    assert layer.backward(np.ones_like(y)) is None
    assert layer.grad_weight.shape == layer.weight.shape
    assert "ConvTranspose2d(4, 6" in repr(layer)
    # PyTorch's default init: U(±1/sqrt(fan_in)), fan_in = (C_out/groups)·R·S
    big = ConvTranspose2d(16, 32, 3, rng=0)
    bound = 1 / np.sqrt(32 * 9)
    assert np.abs(big.weight).max() <= bound
    assert np.abs(big.weight).max() > 0.9 * bound
    assert big.num_params == 16 * 32 * 9 + 32


# -- bad inputs -----------------------------------------------------------------------------

def test_bad_inputs():
    x = np.ones((1, 4, 5, 5))
    w = np.ones((4, 2, 3, 3))
    with pytest.raises(ValueError, match="output_padding must be smaller than either stride "
                                         "or dilation"):
        conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding"):
        conv_transpose2d(x, w, output_padding=1)
    with pytest.raises(ValueError, match="output_padding"):
        ConvTranspose2d(4, 2, 3, stride=2, output_padding=(0, 3))
    with pytest.raises(ValueError, match="channel mismatch"):
        conv_transpose2d(x, np.ones((3, 2, 3, 3)))
    with pytest.raises(ValueError, match="groups"):
        conv_transpose2d(x, w, groups=3)
    with pytest.raises(ValueError, match="groups"):
        ConvTranspose2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="padding"):
        conv_transpose2d(x, w, padding="same")
    with pytest.raises(ValueError, match="padding must be >= 0"):
        conv_transpose2d(x, w, padding=-1)
    with pytest.raises(ValueError, match="not positive"):
        conv_transpose2d(np.ones((1, 4, 1, 1)), w, padding=2)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        conv_transpose2d(x, w, stride=0)
    with pytest.raises(TypeError, match="dtype"):
        conv_transpose2d(x, w.astype(np.float32))
    with pytest.raises(ValueError, match="weight must be 4-D"):
        conv_transpose2d(x, np.ones((4, 2, 3)))
    with pytest.raises(ValueError, match="bias must have shape"):
        conv_transpose2d(x, w, np.ones(3))
    with pytest.raises(ValueError, match="grad_output has shape"):
        conv_transpose2d_backward(np.ones((1, 2, 5, 5)), x, w)
    with pytest.raises(TypeError, match="bias must be True or False"):
        conv_transpose2d_backward(np.ones((1, 2, 7, 7)), x, w, bias=None)
    with pytest.raises(ValueError, match="x must be 4-D"):
        conv_transpose2d(np.ones((4, 5)), w)
    with pytest.raises(ValueError, match="out has shape"):
        conv_transpose2d(x, w, out=np.empty((1, 2, 5, 5)))
    with pytest.raises(TypeError, match="in_channels"):
        ConvTranspose2d(4.0, 2, 3)
    layer = ConvTranspose2d(4, 2, 3)
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(np.ones((1, 2, 7, 7), np.float32))


def test_empty_batch():
    y = conv_transpose2d(np.ones((0, 4, 5, 5)), np.ones((4, 2, 3, 3)), stride=2)
    assert y.shape == (0, 2, 11, 11)
    g = conv_transpose2d_backward(np.ones((0, 2, 11, 11)), np.ones((0, 4, 5, 5)),
                                  np.ones((4, 2, 3, 3)), stride=2)
    assert g.input.shape == (0, 4, 5, 5)
    assert not g.weight.any() and not g.bias.any()


# -- summary --------------------------------------------------------------------------------

def test_summary_transposed_layers(capsys):
    s = convcore.summary((8, 256, 16, 16), ["convT128:4/2p1", "64:3p1", "convT32:3/2p1o1"])
    assert s.fits
    assert [r.kind for r in s] == ["convT", "conv", "convT"]
    assert s[0].output_shape == (8, 128, 32, 32)
    assert s[0].params == 256 * 128 * 16 + 128
    assert s[0].flops == 2 * 8 * 256 * 16 * 16 * 128 * 16
    assert s[0].algorithms["forward"] == "via_nhwc_subpixel"
    assert s[2].output_shape == (8, 32, 64, 64)
    layer = ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1)
    s = convcore.summary((64, 56, 56), [layer, {"transposed": True, "out_channels": 16,
                                                "kernel_size": 4, "stride": 2, "padding": 1}])
    assert s[0].output_shape == (32, 112, 112) and s[0].params == layer.num_params
    assert s[1].output_shape == (16, 224, 224)
    bad = convcore.summary((4, 1, 1), ["convT4:3p2"])
    assert not bad.fits and "not positive" in bad[0].problem
    with pytest.raises(ValueError, match="output_padding"):
        convcore.summary((4, 5, 5), ["convT4:3/2o2"])
    from convcore._summary import main
    assert main(["8x256x16x16", "convT128:4/2p1"]) == 0
    assert "convT 128:4/2p1" in capsys.readouterr().out
