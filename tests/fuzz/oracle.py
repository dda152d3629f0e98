"""The fuzzer's oracle: a float64 direct-loop reference that costs what the *work* costs.

tests/reference.py pads the input into a dense array, which is fine for the test suite but
impossible for padding = 2**59. The loops here visit, for every kernel tap, only the output
positions whose input pixel is real (not padding); the count of those is bounded by the
input size, whatever the stride, dilation or padding. The shape rules (output size, the
extra zero padding of shape_rule='pad', the forms of `padding`) are reference.Geometry's,
computed with Python ints.

Each function takes and returns float64 NCHW / (K, C/g, R, S) arrays; layouts are handled by
reference.Geometry's act_in/act_out/w_in/w_out.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

import reference as ref


def valid_outputs(out: int, inp: int, stride: int, offset: int) -> Tuple[int, int]:
    """[o0, o1): the output positions o whose input position o·stride + offset lies in
    [0, inp) (offset = tap·dilation − pad_begin). Python ints: no overflow."""
    # o·stride + offset >= 0  <=>  o >= ceil(-offset / stride)
    o0 = 0 if offset >= 0 else (-offset + stride - 1) // stride
    # o·stride + offset <= inp − 1  <=>  o <= floor((inp − 1 − offset) / stride)
    hi = inp - 1 - offset
    if hi < 0:
        return 0, 0
    o1 = min(out, hi // stride + 1)
    return o0, max(o0, o1)


def _taps(geo: ref.Geometry):
    """(r, s, out-row slice, in-row slice, out-col slice, in-col slice) for every tap that
    reads at least one real input pixel."""
    for r in range(geo.R):
        oh0, oh1 = valid_outputs(geo.Ho, geo.H, geo.sh, r * geo.dh - geo.pt)
        if oh0 == oh1:
            continue
        ih0 = oh0 * geo.sh + r * geo.dh - geo.pt
        for s in range(geo.S):
            ow0, ow1 = valid_outputs(geo.Wo, geo.W, geo.sw, s * geo.dw - geo.pl)
            if ow0 == ow1:
                continue
            iw0 = ow0 * geo.sw + s * geo.dw - geo.pl
            yield (r, s, slice(oh0, oh1), slice(ih0, ih0 + (oh1 - oh0 - 1) * geo.sh + 1, geo.sh),
                   slice(ow0, ow1), slice(iw0, iw0 + (ow1 - ow0 - 1) * geo.sw + 1, geo.sw))


def forward(geo: ref.Geometry, x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray]) -> np.ndarray:
    """y (N, K, Ho, Wo) from x (N, C, H, W), w (K, Cg, R, S) (float64, NCHW)."""
    y = np.zeros((geo.N, geo.K, geo.Ho, geo.Wo))
    for cs, ks in geo.groups():
        for r, s, oh, ih, ow, iw in _taps(geo):
            patch = x[:, cs, ih, iw]                          # (N, Cg, h, w)
            tap = w[ks, :, r, s]                              # (Kg, Cg)
            # one product per (k, c): no zero·Inf from anything that is not data
            y[:, ks, oh, ow] += (tap[None, :, :, None, None] * patch[:, None]).sum(axis=2)
    if b is not None:
        y += b[None, :, None, None]
    return y


def backward_input(geo: ref.Geometry, dy: np.ndarray, w: np.ndarray) -> np.ndarray:
    dx = np.zeros((geo.N, geo.C, geo.H, geo.W))
    for cs, ks in geo.groups():
        for r, s, oh, ih, ow, iw in _taps(geo):
            g = dy[:, ks, oh, ow]                             # (N, Kg, h, w)
            tap = w[ks, :, r, s]                              # (Kg, Cg)
            dx[:, cs, ih, iw] += (tap[None, :, :, None, None] * g[:, :, None]).sum(axis=1)
    return dx


def backward_weight(geo: ref.Geometry, dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    dw = np.zeros((geo.K, geo.Cg, geo.R, geo.S))
    for cs, ks in geo.groups():
        for r, s, oh, ih, ow, iw in _taps(geo):
            g = dy[:, ks, oh, ow]                             # (N, Kg, h, w)
            patch = x[:, cs, ih, iw]                          # (N, Cg, h, w)
            dw[ks, :, r, s] += (g[:, :, None] * patch[:, None]).sum(axis=(0, 3, 4))
    return dw


def work(geo: ref.Geometry) -> int:
    """Products the loops above would compute (an upper bound), and the sizes they touch."""
    taps = 0
    for r in range(geo.R):
        oh0, oh1 = valid_outputs(geo.Ho, geo.H, geo.sh, r * geo.dh - geo.pt)
        for s in range(geo.S):
            ow0, ow1 = valid_outputs(geo.Wo, geo.W, geo.sw, s * geo.dw - geo.pl)
            taps += (oh1 - oh0) * (ow1 - ow0)
    return geo.N * geo.Kg * geo.C * max(taps, 1)


# --- the locally-connected layer ------------------------------------------------------------
# geo is the Geometry of the conv2d with the same x, K, C, R, S, stride and padding
# (dilation 1, groups 1); the weights are per position: w (Ho, Wo, K, C, R, S) NCHW-style,
# the bias (K, Ho, Wo). The loops are _taps', so they cost the products over real taps
# only, whatever the stride or padding.

def lc_w_in(geo: ref.Geometry, w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    return w if geo.layout == "NCHW" else w.transpose(0, 1, 2, 5, 3, 4)


def lc_w_out(geo: ref.Geometry, w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w if geo.layout == "NCHW" else w.transpose(0, 1, 2, 4, 5, 3))


def lc_b_in(geo: ref.Geometry, b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    return b if geo.layout == "NCHW" else b.transpose(2, 0, 1)


def lc_b_out(geo: ref.Geometry, b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b if geo.layout == "NCHW" else b.transpose(1, 2, 0))


def lc_forward(geo: ref.Geometry, x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray]) -> np.ndarray:
    """y (N, K, Ho, Wo) from x (N, C, H, W), w (Ho, Wo, K, C, R, S), b (K, Ho, Wo)."""
    y = np.zeros((geo.N, geo.K, geo.Ho, geo.Wo))
    for r, s, oh, ih, ow, iw in _taps(geo):
        patch = x[:, :, ih, iw]                               # (N, C, h, w)
        tap = w[oh, ow, :, :, r, s].transpose(2, 3, 0, 1)     # (K, C, h, w)
        y[:, :, oh, ow] += (patch[:, None] * tap[None]).sum(axis=2)
    if b is not None:
        y += b[None]
    return y


def lc_backward_input(geo: ref.Geometry, dy: np.ndarray, w: np.ndarray) -> np.ndarray:
    dx = np.zeros((geo.N, geo.C, geo.H, geo.W))
    for r, s, oh, ih, ow, iw in _taps(geo):
        g = dy[:, :, oh, ow]                                  # (N, K, h, w)
        tap = w[oh, ow, :, :, r, s].transpose(2, 3, 0, 1)     # (K, C, h, w)
        dx[:, :, ih, iw] += (g[:, :, None] * tap[None]).sum(axis=1)
    return dx


def lc_backward_weight(geo: ref.Geometry, dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    dw = np.zeros((geo.Ho, geo.Wo, geo.K, geo.C, geo.R, geo.S))
    for r, s, oh, ih, ow, iw in _taps(geo):
        g = dy[:, :, oh, ow]                                  # (N, K, h, w)
        patch = x[:, :, ih, iw]                               # (N, C, h, w)
        dw[oh, ow, :, :, r, s] = (g[:, :, None] * patch[:, None]).sum(axis=0).transpose(2, 3, 0, 1)
    return dw


# --- comparison ----------------------------------------------------------------------------

def compare(got: np.ndarray, expected: np.ndarray, mag: np.ndarray, dtype, terms: int,
            relu: bool = False) -> Optional[str]:
    """None when `got` equals the float64 reference within rounding (the bound of
    reference.assert_close), with the same non-finite entries; else what differs."""
    if got.shape != expected.shape:
        return f"shape {got.shape}, expected {expected.shape}"
    got = np.asarray(got, dtype=np.float64)
    nonfinite = ~np.isfinite(expected)
    if relu:
        # ReLU of NaN: NaN or 0 are both defensible
        relu_nan = np.isnan(expected) & (got == 0)
        nonfinite &= ~relu_nan
        expected = np.where(relu_nan, 0.0, expected)
    same_nan = np.isnan(got) == np.isnan(expected)
    same_inf = (np.isinf(got) == np.isinf(expected)) & (np.where(np.isinf(expected), np.sign(got) == np.sign(expected), True))
    bad = ~(same_nan & same_inf)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return (f"{int(bad.sum())} of {bad.size} entries differ in NaN/Inf, e.g. at {idx}: "
                f"got {got[idx]!r}, expected {expected[idx]!r}")
    fin = ~nonfinite
    g, e, m = got[fin], expected[fin], np.where(np.isfinite(mag), mag, 0.0)[fin]
    err = float(np.linalg.norm(g - e))
    tol = ref.tolerance(dtype)
    allowed = tol * max(float(np.linalg.norm(e)), np.finfo(np.float64).tiny)
    allowed += terms * (np.finfo(dtype).eps / 2) * float(np.linalg.norm(m))
    if not err <= allowed:
        i = int(np.argmax(np.abs(g - e)))
        return (f"error {err:.3e} > allowed {allowed:.3e}; worst entry got {g[i]!r}, "
                f"expected {e[i]!r}")
    return None
