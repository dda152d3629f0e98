"""Hypothesis strategies for random convolution problems (shared by the forward and backward
tests) and the arrays that go with them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

import numpy as np
from hypothesis import strategies as st

import reference as ref


@dataclass
class Problem:
    dtype: Any
    layout: str
    x_shape: Tuple[int, ...]
    w_shape: Tuple[int, ...]
    kw: Dict[str, Any] = field(default_factory=dict)  # stride, padding, dilation, groups, layout, shape_rule
    bias: bool = True
    relu: bool = False
    seed: int = 0

    @property
    def out_channels(self) -> int:
        return self.w_shape[0]

    def arrays(self):
        """x, weight, bias (or None) in the problem's dtype."""
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal(self.x_shape).astype(self.dtype)
        w = rng.standard_normal(self.w_shape).astype(self.dtype)
        b = rng.standard_normal(self.out_channels).astype(self.dtype) if self.bias else None
        return x, w, b

    def grad_output(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed + 1)
        return rng.standard_normal(ref.output_shape(self.x_shape, self.w_shape, **self.kw)).astype(self.dtype)


def _axis_fit(size: int, kernel: int, stride: int, dilation: int, pads: Tuple[int, int],
              rule: str) -> int:
    """An input size along one axis that fits the kernel (and divides under 'strict')."""
    k_eff = dilation * (kernel - 1) + 1
    size = max(size, k_eff - pads[0] - pads[1], 1)
    span = size + pads[0] + pads[1] - k_eff
    if rule == "strict" and span % stride:
        size += stride - span % stride
    return size


@st.composite
def problems(draw, max_hw: int = 12, max_batch: int = 3, allow_unbatched: bool = True,
             dtypes=(np.float32, np.float64)) -> Problem:
    dtype = draw(st.sampled_from(dtypes))
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    n = draw(st.integers(1, max_batch))
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    if kind == "dense":
        groups, cg, kg = 1, draw(st.integers(1, 6)), draw(st.integers(1, 7))
    elif kind == "grouped":
        groups, cg, kg = draw(st.integers(2, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    else:  # depthwise: groups == C, depth multiplier kg
        groups, cg, kg = draw(st.integers(1, 6)), 1, draw(st.integers(1, 2))
    c, k = cg * groups, kg * groups
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pad_kind = draw(st.sampled_from(["int", "pair", "quad", "same", "valid"]))
    if pad_kind == "same":
        stride = (1, 1)
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.sampled_from([1, 1, 2, 3])), draw(st.sampled_from([1, 1, 2, 3])))
    if pad_kind == "int":
        padding: Any = draw(st.integers(0, 3))
    elif pad_kind == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    elif pad_kind == "quad":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(4))
    else:
        padding = pad_kind
    rule = draw(st.sampled_from(["strict", "crop", "pad"]))
    pt, pb, pl, pr = ref.resolve_padding(padding, (r, s), stride, dilation)
    h = _axis_fit(draw(st.integers(1, max_hw)), r, stride[0], dilation[0], (pt, pb), rule)
    w = _axis_fit(draw(st.integers(1, max_hw)), s, stride[1], dilation[1], (pl, pr), rule)
    # Pass hyperparameters in the different forms the API accepts.
    st_arg: Any = stride[0] if stride[0] == stride[1] and draw(st.booleans()) else stride
    dil_arg: Any = dilation[0] if dilation[0] == dilation[1] and draw(st.booleans()) else dilation
    if layout == "NCHW":
        x_shape, w_shape = (n, c, h, w), (k, cg, r, s)
    else:
        x_shape, w_shape = (n, h, w, c), (k, r, s, cg)
    if allow_unbatched and n == 1 and draw(st.booleans()):
        x_shape = x_shape[1:]
    kw = dict(stride=st_arg, padding=padding, dilation=dil_arg, groups=groups, layout=layout,
              shape_rule=rule)
    return Problem(dtype=dtype, layout=layout, x_shape=x_shape, w_shape=w_shape, kw=kw,
                   bias=draw(st.booleans()), relu=draw(st.booleans()),
                   seed=draw(st.integers(0, 2**31 - 1)))
