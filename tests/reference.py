"""An independent float64 reference for convcore's conv2d (never calls convcore).

Everything here follows the definitions directly (the CS231n notes' conv layer and the
API's hyperparameters):

* output size along one axis: F_eff = d·(F − 1) + 1, span = W + P_begin + P_end − F_eff,
  out = span/S + 1 when S divides span; otherwise 'strict' is an error, 'crop' drops what
  does not fit (out = ⌊span/S⌋ + 1) and 'pad' zero-pads the end (bottom/right) by just enough
  (S − span mod S more) so that out = ⌊span/S⌋ + 2;
* the convolution is a cross-correlation (no kernel flip) of each filter with the zero-padded
  input, one loop iteration per kernel tap (r, s) and per group, summing over the group's
  input channels; plus a bias per filter and an optional ReLU;
* the backward passes are the same loops with the roles of the operands exchanged.

All computations are done in NCHW / (K, C/g, R, S) float64; NHWC arrays are transposed on the
way in and out. Slow but obviously correct, and fast enough for the small sizes the tests use.
"""
from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from typing import Optional, Sequence, Tuple, Union

import numpy as np

Padding = Union[int, str, Sequence[int]]


class RefShapeError(ValueError):
    """The hyperparameters do not fit the input (the reference's own notion)."""


def _pair(v) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        assert len(v) == 2
        return int(v[0]), int(v[1])
    return int(v), int(v)


def resolve_padding(padding: Padding, kernel: Tuple[int, int], stride: Tuple[int, int],
                    dilation: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) for every padding form the API accepts."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        assert padding == "same" and tuple(stride) == (1, 1)
        total_h = dilation[0] * (kernel[0] - 1)
        total_w = dilation[1] * (kernel[1] - 1)
        # An odd total puts the extra row/column at the bottom/right.
        top, left = total_h // 2, total_w // 2
        return (top, total_h - top, left, total_w - left)
    if isinstance(padding, (tuple, list)):
        if len(padding) == 2:
            return (int(padding[0]), int(padding[0]), int(padding[1]), int(padding[1]))
        assert len(padding) == 4
        return tuple(int(p) for p in padding)  # type: ignore[return-value]
    p = int(padding)
    return (p, p, p, p)


def axis_output(size: int, kernel: int, stride: int, dilation: int, pad_begin: int,
                pad_end: int, shape_rule: str) -> Tuple[int, int]:
    """(output size, extra zero padding at the end) along one axis."""
    k_eff = dilation * (kernel - 1) + 1
    padded = size + pad_begin + pad_end
    if k_eff > padded:
        raise RefShapeError(f"kernel {k_eff} larger than padded input {padded}")
    span = padded - k_eff
    if span % stride == 0:
        return span // stride + 1, 0
    if shape_rule == "crop":
        return span // stride + 1, 0
    if shape_rule == "pad":
        extra = stride - span % stride
        assert (span + extra) % stride == 0
        return (span + extra) // stride + 1, extra
    assert shape_rule == "strict"
    raise RefShapeError(f"({size} - {k_eff} + {pad_begin + pad_end})/{stride} + 1 "
                        "is not an integer")


class Geometry:
    """A convolution problem resolved in NCHW terms."""

    def __init__(self, x_shape: Sequence[int], w_shape: Sequence[int], *, stride=1, padding=0,
                 dilation=1, groups=1, layout="NCHW", shape_rule="strict"):
        assert layout in ("NCHW", "NHWC")
        self.layout = layout
        self.batched = len(x_shape) == 4
        xs = tuple(x_shape) if self.batched else (1,) + tuple(x_shape)
        if layout == "NCHW":
            self.N, self.C, self.H, self.W = xs
            self.K, self.Cg, self.R, self.S = w_shape
        else:
            self.N, self.H, self.W, self.C = xs
            self.K, self.R, self.S, self.Cg = w_shape
        self.G = int(groups)
        assert self.Cg * self.G == self.C and self.K % self.G == 0
        self.Kg = self.K // self.G
        self.sh, self.sw = _pair(stride)
        self.dh, self.dw = _pair(dilation)
        self.pt, self.pb, self.pl, self.pr = resolve_padding(
            padding, (self.R, self.S), (self.sh, self.sw), (self.dh, self.dw))
        self.Ho, extra_h = axis_output(self.H, self.R, self.sh, self.dh, self.pt, self.pb,
                                       shape_rule)
        self.Wo, extra_w = axis_output(self.W, self.S, self.sw, self.dw, self.pl, self.pr,
                                       shape_rule)
        self.pb_total = self.pb + extra_h
        self.pr_total = self.pr + extra_w

    # --- shapes in the user's layout ------------------------------------------------------
    def out_shape(self) -> Tuple[int, ...]:
        s = ((self.N, self.K, self.Ho, self.Wo) if self.layout == "NCHW"
             else (self.N, self.Ho, self.Wo, self.K))
        return s if self.batched else s[1:]

    def x_shape(self) -> Tuple[int, ...]:
        s = ((self.N, self.C, self.H, self.W) if self.layout == "NCHW"
             else (self.N, self.H, self.W, self.C))
        return s if self.batched else s[1:]

    def w_shape(self) -> Tuple[int, ...]:
        return ((self.K, self.Cg, self.R, self.S) if self.layout == "NCHW"
                else (self.K, self.R, self.S, self.Cg))

    # --- layout conversions (float64, batched NCHW inside) --------------------------------
    def act_in(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if not self.batched:
            a = a[None]
        return a if self.layout == "NCHW" else a.transpose(0, 3, 1, 2)

    def act_out(self, a: np.ndarray) -> np.ndarray:
        if self.layout == "NHWC":
            a = a.transpose(0, 2, 3, 1)
        a = np.ascontiguousarray(a)
        return a if self.batched else a[0]

    def w_in(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        return w if self.layout == "NCHW" else w.transpose(0, 3, 1, 2)

    def w_out(self, w: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(w if self.layout == "NCHW" else w.transpose(0, 2, 3, 1))

    # --- the tap loop ----------------------------------------------------------------------
    def padded_shape(self) -> Tuple[int, int, int, int]:
        return (self.N, self.C, self.pt + self.H + self.pb_total,
                self.pl + self.W + self.pr_total)

    def pad(self, x: np.ndarray) -> np.ndarray:
        xp = np.zeros(self.padded_shape(), dtype=np.float64)
        xp[:, :, self.pt:self.pt + self.H, self.pl:self.pl + self.W] = x
        return xp

    def inside(self) -> np.ndarray:
        """True where the padded input is the image, False in the padding (N = 1)."""
        m = np.zeros((1, 1) + self.padded_shape()[2:], dtype=bool)
        m[:, :, self.pt:self.pt + self.H, self.pl:self.pl + self.W] = True
        return m

    def unpad(self, xp: np.ndarray) -> np.ndarray:
        return xp[:, :, self.pt:self.pt + self.H, self.pl:self.pl + self.W]

    def window(self, r: int, s: int) -> Tuple[slice, slice]:
        """The padded-input rows/columns that kernel tap (r, s) reads, one per output."""
        h0, w0 = r * self.dh, s * self.dw
        return (slice(h0, h0 + (self.Ho - 1) * self.sh + 1, self.sh),
                slice(w0, w0 + (self.Wo - 1) * self.sw + 1, self.sw))

    def terms(self, which: str) -> int:
        """Products summed into one element of each result (for rounding-error bounds)."""
        return {"forward": self.Cg * self.R * self.S + 1, "input": self.Kg * self.R * self.S,
                "weight": self.N * self.Ho * self.Wo, "bias": self.N * self.Ho * self.Wo}[which]

    def groups(self):
        for g in range(self.G):
            yield (slice(g * self.Cg, (g + 1) * self.Cg), slice(g * self.Kg, (g + 1) * self.Kg))


def _memo_key(v):
    """A value's identity for the memo below: an array by its dtype, shape and bytes."""
    if isinstance(v, np.ndarray):
        data = np.ascontiguousarray(v).view(np.uint8) if v.size else b""
        return ("array", v.dtype.str, v.shape, hashlib.blake2b(data, digest_size=16).digest())
    return repr(v)


def _memoized(fn):
    """Remember the last results of `fn` by the contents of its arguments.

    The tests force every implementation of a pass in turn on the same operands and check
    each against this reference (and its Σ|term| twin); the loops here are slow, so each
    distinct problem is computed once. A hit returns a copy: the caller may modify it.
    """
    cache: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
    lock = threading.Lock()  # some tests check results from several threads

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        key = (tuple(_memo_key(a) for a in args),
               tuple(sorted((k, _memo_key(v)) for k, v in kw.items())))
        with lock:
            hit = cache.get(key)
            if hit is not None:
                cache.move_to_end(key)
        if hit is None:
            hit = fn(*args, **kw)
            with lock:
                cache[key] = hit
                if len(cache) > 32:
                    cache.popitem(last=False)
        return hit.copy()

    return wrapper


def output_shape(x_shape, w_shape, **kw) -> Tuple[int, ...]:
    """Output shape in the user's layout (RefShapeError when it does not fit)."""
    return Geometry(x_shape, w_shape, **kw).out_shape()


@_memoized
def conv2d(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, *,
           activation: Optional[str] = None, **kw) -> np.ndarray:
    """y = act(x ⋆ w + b), float64, in the layout of x."""
    geo = Geometry(x.shape, w.shape, **kw)
    xp = geo.pad(geo.act_in(x))
    inside = geo.inside()
    wk = geo.w_in(w)
    y = np.zeros((geo.N, geo.K, geo.Ho, geo.Wo), dtype=np.float64)
    for cs, ks in geo.groups():
        for r in range(geo.R):
            for s in range(geo.S):
                hs, ws = geo.window(r, s)
                patch = xp[:, cs, hs, ws]                 # (N, Cg, Ho, Wo)
                real = inside[:, :, hs, ws]               # taps in the image, not the padding
                tap = wk[ks, :, r, s]                     # (Kg, Cg)
                for c in range(geo.Cg):
                    # Padding is not part of the sum: a padding zero never meets a weight
                    # (0·Inf would be NaN).
                    with np.errstate(invalid="ignore"):
                        y[:, ks] += np.where(real, tap[None, :, c, None, None] * patch[:, c, None],
                                             0.0)
    if b is not None:
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    if activation == "relu":
        y = np.maximum(y, 0.0)
    else:
        assert activation is None
    return geo.act_out(y)


@_memoized
def conv2d_backward_input(dy: np.ndarray, w: np.ndarray, x_shape, **kw) -> np.ndarray:
    """dL/dx given dL/dy: every output's gradient scattered back through each tap."""
    geo = Geometry(x_shape, w.shape, **kw)
    g = geo.act_in(dy)
    wk = geo.w_in(w)
    dxp = np.zeros(geo.padded_shape(), dtype=np.float64)
    for cs, ks in geo.groups():
        for r in range(geo.R):
            for s in range(geo.S):
                hs, ws = geo.window(r, s)
                tap = wk[ks, :, r, s]                     # (Kg, Cg)
                for c in range(geo.Cg):
                    contrib = (tap[None, :, c, None, None] * g[:, ks]).sum(axis=1)
                    dxp[:, cs.start + c, hs, ws] += contrib
    return geo.act_out(geo.unpad(dxp))


@_memoized
def conv2d_backward_weight(dy: np.ndarray, x: np.ndarray, w_shape, **kw) -> np.ndarray:
    """dL/dw: each tap's gradient summed over every image and output position."""
    geo = Geometry(x.shape, w_shape, **kw)
    xp = geo.pad(geo.act_in(x))
    inside = geo.inside()
    g = geo.act_in(dy)
    dw = np.zeros((geo.K, geo.Cg, geo.R, geo.S), dtype=np.float64)
    for cs, ks in geo.groups():
        for r in range(geo.R):
            for s in range(geo.S):
                hs, ws = geo.window(r, s)
                patch = xp[:, cs, hs, ws]                 # (N, Cg, Ho, Wo)
                real = inside[:, :, hs, ws]               # taps in the image (padding: no term)
                for k in range(ks.start, ks.stop):
                    with np.errstate(invalid="ignore"):
                        dw[k, :, r, s] = np.where(real, g[:, k, None] * patch, 0.0).sum(axis=(0, 2, 3))
    return geo.w_out(dw)


def conv2d_backward_bias(dy: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """dL/db: the sum of dy over images and positions, per filter."""
    dy = np.asarray(dy, dtype=np.float64)
    channel_axis = dy.ndim - 3 if layout == "NCHW" else dy.ndim - 1
    axes = tuple(a for a in range(dy.ndim) if a != channel_axis)
    return dy.sum(axis=axes)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """||got − ref|| / max(||ref||, tiny), computed in float64."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    num = float(np.linalg.norm((got - ref).ravel()))
    den = max(float(np.linalg.norm(ref.ravel())), np.finfo(np.float64).tiny)
    return num / den


def tolerance(dtype) -> float:
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-5


def assert_close(got: np.ndarray, ref: np.ndarray, dtype=None, what: str = "",
                 mag: Optional[np.ndarray] = None, terms: int = 1) -> None:
    """Norm-wise check: ||got − ref|| ≤ tol·||ref|| (tol 1e-12 for float64, 1e-5 for float32).

    When `mag` is given -- the same computation applied to the absolute values of its
    inputs, i.e. Σ|term| for every output -- the classic rounding-error bound of a sum of
    `terms` products, n·u·Σ|term|, is added to the allowance. It only matters when the terms
    cancel (a result much smaller than its terms, e.g. a near-zero output), where no
    implementation can meet a relative bound; any real defect (a missing or wrong term) is
    of the size of a term and is still caught.
    """
    dtype = got.dtype if dtype is None else dtype
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    tol = tolerance(dtype)
    err = float(np.linalg.norm((np.asarray(got, np.float64) - ref).ravel()))
    ref_norm = float(np.linalg.norm(np.asarray(ref, np.float64).ravel()))
    allowed = tol * max(ref_norm, np.finfo(np.float64).tiny)
    if mag is not None:
        unit_roundoff = np.finfo(dtype).eps / 2
        allowed += terms * unit_roundoff * float(np.linalg.norm(np.asarray(mag, np.float64).ravel()))
    assert err <= allowed, (f"{what}: relative error {rel_err(got, ref):.3e} > {tol:.0e} "
                            f"(absolute {err:.3e} > allowed {allowed:.3e}; {np.dtype(dtype).name})")


# --- checks of convcore results against the reference ------------------------------------

def _abs(a):
    return None if a is None else np.abs(np.asarray(a, dtype=np.float64))


def check_forward(got, x, w, b=None, *, activation=None, dtype=None, what="forward", **kw):
    geo = Geometry(x.shape, w.shape, **kw)
    expected = conv2d(x, w, b, activation=activation, **kw)
    mag = conv2d(_abs(x), _abs(w), _abs(b), **kw)
    assert_close(got, expected, dtype, what, mag=mag, terms=geo.terms("forward"))


def check_backward_input(got, dy, w, x_shape, *, dtype=None, what="backward-input", **kw):
    geo = Geometry(x_shape, w.shape, **kw)
    expected = conv2d_backward_input(dy, w, x_shape, **kw)
    mag = conv2d_backward_input(_abs(dy), _abs(w), x_shape, **kw)
    assert_close(got, expected, dtype, what, mag=mag, terms=geo.terms("input"))


def check_backward_weight(got, dy, x, w_shape, *, dtype=None, what="backward-weight", **kw):
    geo = Geometry(x.shape, w_shape, **kw)
    expected = conv2d_backward_weight(dy, x, w_shape, **kw)
    mag = conv2d_backward_weight(_abs(dy), _abs(x), w_shape, **kw)
    assert_close(got, expected, dtype, what, mag=mag, terms=geo.terms("weight"))


def check_backward_bias(got, dy, layout="NCHW", *, dtype=None, what="backward-bias"):
    expected = conv2d_backward_bias(dy, layout)
    mag = conv2d_backward_bias(_abs(dy), layout)
    assert_close(got, expected, dtype, what, mag=mag, terms=max(dy.size // max(len(expected), 1), 1))
