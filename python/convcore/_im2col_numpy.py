"""The NumPy im2col peer: convolution passes written the way a careful NumPy user would.

This is the baseline `python -m convcore` and `python -m convcore.bench` measure convcore
against. Each pass is one zero-padded copy of the input (where padding is needed), one
`as_strided` view of it shaped like the im2col matrix, one copy that materialises that
matrix, and one BLAS matmul. Backward-data scatters the column gradient back with a loop
over the R·S filter taps, each adding one strided slice (col2im).

Geometry follows convcore's shape_rule="crop": rows/columns that do not fit the last
stride step are dropped, as PyTorch does. Symmetric padding, no dilation, groups=1.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from numpy.lib.stride_tricks import as_strided


class Im2colConv:
    """One convolution geometry (input and weight shapes, stride, padding, layout) and its
    three passes computed with NumPy.

    NCHW: x (N, C, H, W), weight (K, C, R, S). NHWC: x (N, H, W, C), weight (K, R, S, C).
    """

    def __init__(self, x_shape: Tuple[int, ...], w_shape: Tuple[int, ...], stride: int,
                 pad: int, layout: str = "NCHW"):
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        self.layout = layout
        self.stride = stride
        self.pad = pad
        if layout == "NCHW":
            n, c, h, w = x_shape
            k, _, r, s = w_shape
        else:
            n, h, w, c = x_shape
            k, r, s, _ = w_shape
        self.x_shape, self.w_shape = tuple(x_shape), tuple(w_shape)
        self.n, self.c, self.h, self.w, self.k, self.r, self.s = n, c, h, w, k, r, s
        self.ho = (h + 2 * pad - r) // stride + 1
        self.wo = (w + 2 * pad - s) // stride + 1
        self.crs = c * r * s

    # -- helpers ----------------------------------------------------------------------------

    def _padded(self, x: np.ndarray) -> np.ndarray:
        """x with `pad` zeros around its two spatial axes (x itself when pad is 0)."""
        p = self.pad
        if p == 0:
            return x
        if self.layout == "NCHW":
            xp = np.zeros((self.n, self.c, self.h + 2 * p, self.w + 2 * p), dtype=x.dtype)
            xp[:, :, p:p + self.h, p:p + self.w] = x
        else:
            xp = np.zeros((self.n, self.h + 2 * p, self.w + 2 * p, self.c), dtype=x.dtype)
            xp[:, p:p + self.h, p:p + self.w, :] = x
        return xp

    def _patches(self, xp: np.ndarray, batch_inner: bool = False) -> np.ndarray:
        """The im2col matrix of the padded input, as a strided view (no copy yet).

        NCHW: (N, C, R, S, Ho, Wo), or (C, R, S, N, Ho, Wo) with batch_inner=True.
        NHWC: (N, Ho, Wo, R, S, C).
        """
        st = self.stride
        if self.layout == "NCHW":
            sn, sc, sh, sw = xp.strides
            if batch_inner:
                shape = (self.c, self.r, self.s, self.n, self.ho, self.wo)
                strides = (sc, sh, sw, sn, sh * st, sw * st)
            else:
                shape = (self.n, self.c, self.r, self.s, self.ho, self.wo)
                strides = (sn, sc, sh, sw, sh * st, sw * st)
        else:
            sn, sh, sw, sc = xp.strides
            shape = (self.n, self.ho, self.wo, self.r, self.s, self.c)
            strides = (sn, sh * st, sw * st, sh, sw, sc)
        return as_strided(xp, shape=shape, strides=strides, writeable=False)

    # -- the three passes --------------------------------------------------------------------

    def forward(self, x: np.ndarray, weight: np.ndarray,
                bias: Optional[np.ndarray] = None) -> np.ndarray:
        """y = conv(x, weight) + bias."""
        w2 = weight.reshape(self.k, self.crs)
        if self.layout == "NCHW":
            # One (K, CRS) @ (CRS, Ho·Wo) product per image, written straight into NCHW.
            col: np.ndarray = self._patches(self._padded(x)).reshape(self.n, self.crs,
                                                                     self.ho * self.wo)
            y: np.ndarray = np.matmul(w2, col)
            if bias is not None:
                y += bias[:, None]
            return y.reshape(self.n, self.k, self.ho, self.wo)
        col = self._patches(self._padded(x)).reshape(self.n * self.ho * self.wo, self.crs)
        y = col @ w2.T
        if bias is not None:
            y += bias
        return y.reshape(self.n, self.ho, self.wo, self.k)

    def backward_data(self, dy: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """dL/dx: the column gradient Wᵀ·dY, then col2im (one strided add per filter tap)."""
        p, st = self.pad, self.stride
        hspan, wspan = st * (self.ho - 1) + 1, st * (self.wo - 1) + 1
        w2 = weight.reshape(self.k, self.crs)
        if self.layout == "NCHW":
            dcol = np.matmul(w2.T, dy.reshape(self.n, self.k, self.ho * self.wo))
            dcol = dcol.reshape(self.n, self.c, self.r, self.s, self.ho, self.wo)
            dxp = np.zeros((self.n, self.c, self.h + 2 * p, self.w + 2 * p), dtype=dy.dtype)
            for i in range(self.r):
                for j in range(self.s):
                    dxp[:, :, i:i + hspan:st, j:j + wspan:st] += dcol[:, :, i, j]
            return dxp[:, :, p:p + self.h, p:p + self.w]
        dcol = dy.reshape(self.n * self.ho * self.wo, self.k) @ w2
        dcol = dcol.reshape(self.n, self.ho, self.wo, self.r, self.s, self.c)
        dxp = np.zeros((self.n, self.h + 2 * p, self.w + 2 * p, self.c), dtype=dy.dtype)
        for i in range(self.r):
            for j in range(self.s):
                dxp[:, i:i + hspan:st, j:j + wspan:st, :] += dcol[:, :, :, i, j, :]
        return dxp[:, p:p + self.h, p:p + self.w, :]

    def backward_weight(self, dy: np.ndarray, x: np.ndarray) -> np.ndarray:
        """dL/dW: dY (K, N·Ho·Wo) times the im2col matrix, one matmul over the whole batch."""
        m = self.n * self.ho * self.wo
        if self.layout == "NCHW":
            col = self._patches(self._padded(x), batch_inner=True).reshape(self.crs, m)
            dy2 = dy.reshape(self.n, self.k, -1).transpose(1, 0, 2).reshape(self.k, m)
            dw: np.ndarray = (dy2 @ col.T).reshape(self.w_shape)
            return dw
        col = self._patches(self._padded(x)).reshape(m, self.crs)
        dw = (dy.reshape(m, self.k).T @ col).reshape(self.w_shape)
        return dw
