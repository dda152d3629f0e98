"""conv2d and its backward passes: argument checks, buffers, and calls into the core."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

from . import _core
from ._args import (as_buffer, check_activation, check_algorithm, check_array, check_groups,
                    check_layout, check_same_dtype, check_shape_rule, core_algorithm, is_int,
                    output_array, padding4, pair, shape_tuple)
from ._types import (Activation, Algorithm, AnyArray, DTypeName, FloatT, IntPair, Layout,
                     Padding, ShapeRule)

ShapeError = _core.ShapeError


class Conv2dGrads(NamedTuple):
    """Gradients of a convolution: w.r.t. its input, its weight and its bias (None when
    not asked for: ``bias=False``). The arrays have the dtype of the inputs."""
    input: AnyArray
    weight: AnyArray
    bias: Optional[AnyArray]


# Private test hook: implementation names forced on every primitive created while set
# (see _force_implementations); empty in normal use.
_FORCED: Dict[str, Any] = {}   # str values (Any: spread as **kwargs into Primitive)


@contextlib.contextmanager
def _force_implementations(forward: str = "", backward_data: str = "",
                           backward_weight: str = "") -> Iterator[None]:
    """Private hook for tests: primitives created inside the block run the named
    implementation of each pass given (it must apply to the problem, else ValueError)."""
    saved = dict(_FORCED)
    _FORCED.update({k: v for k, v in (("forward", forward), ("backward_data", backward_data),
                                      ("backward_weight", backward_weight)) if v})
    try:
        yield
    finally:
        _FORCED.clear()
        _FORCED.update(saved)


def _dtype_name(a: np.ndarray) -> DTypeName:
    return "float64" if a.dtype.itemsize == 8 else "float32"


class _Problem:
    """A convolution resolved against concrete shapes: the core's primitive (validated
    once, one implementation per pass) plus the shapes the Python side allocates and
    checks."""

    def __init__(self, input_shape: Sequence[int], weight_shape: Sequence[int], stride: Any,
                 padding: Any, dilation: Any, groups: Any, layout: Any, shape_rule: Any,
                 dtype: str = "float32", algorithm: Any = None):
        self.layout = check_layout(layout)
        self.algorithm = check_algorithm(algorithm)
        rule = check_shape_rule(shape_rule)
        ishape = shape_tuple(input_shape, "input shape", (3, 4))
        wshape = shape_tuple(weight_shape, "weight shape", (4,))
        self.batched = len(ishape) == 4
        if not self.batched:
            ishape = (1,) + ishape
        groups = check_groups(groups)
        if self.layout == "NCHW":
            n, c, h, w = ishape
            k, cg, r, s = wshape
            channel_axis = 1
        else:
            n, h, w, c = ishape
            k, r, s, cg = wshape
            channel_axis = 3
        if cg * groups != c:
            raise ValueError(
                f"channel mismatch: weight {wshape} takes {cg} input channels per group, "
                f"times groups={groups} is {cg * groups}, but the input has {c} channels "
                f"(axis {channel_axis - (0 if self.batched else 1)} in {self.layout})")
        if k % groups != 0:
            raise ValueError(f"groups must divide out_channels: weight has {k} filters, "
                             f"not divisible by groups={groups}")
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        self.pads = padding4(padding, (r, s), self.stride, self.dilation)
        self.plan = _core.Primitive(n, c, h, w, k, r, s, *self.stride, *self.dilation,
                                    *self.pads, groups, self.layout, rule, dtype,
                                    algorithm=core_algorithm(self.algorithm), **_FORCED)
        ho, wo = self.plan.out_h, self.plan.out_w
        self.x_shape = ishape
        self.w_shape = wshape
        self.y_shape = (n, k, ho, wo) if self.layout == "NCHW" else (n, ho, wo, k)
        self.out_channels = k

    def user_shape(self, shape4: Tuple[int, ...]) -> Tuple[int, ...]:
        return shape4 if self.batched else shape4[1:]


def _check_input(x_in: Any, name: str) -> np.ndarray:
    x = check_array(x_in, name)
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must be 4-D (batch, ...) or 3-D (one image), got {x.ndim}-D "
                         f"with shape {x.shape}")
    return x


def _check_weight(weight_in: Any, ref: np.ndarray, ref_name: str) -> np.ndarray:
    weight = check_array(weight_in, "weight")
    check_same_dtype(ref, ref_name, weight, "weight")
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D, got {weight.ndim}-D with shape {weight.shape}")
    return weight


def _check_grad_output(dy_in: Any, prob: _Problem, ref: np.ndarray,
                       ref_name: str) -> np.ndarray:
    dy = check_array(dy_in, "grad_output")
    check_same_dtype(ref, ref_name, dy, "grad_output")
    expected = prob.user_shape(prob.y_shape)
    if dy.shape != expected:
        raise ValueError(f"grad_output has shape {dy.shape}, expected {expected} "
                         "(the output shape of this convolution)")
    return dy


def conv2d(x: NDArray[FloatT], weight: NDArray[FloatT], bias: Optional[NDArray[FloatT]] = None,
           *, stride: IntPair = 1, padding: Padding = 0, dilation: IntPair = 1,
           groups: int = 1, layout: Layout = "NCHW", shape_rule: ShapeRule = "strict",
           activation: Activation = None, algorithm: Algorithm = None,
           out: Optional[NDArray[FloatT]] = None) -> NDArray[FloatT]:
    """2-D convolution (cross-correlation, as in every DL framework), optionally with a
    fused bias and ReLU.

    NCHW: x (N, C, H, W), weight (K, C/groups, R, S) -> (N, K, Ho, Wo).
    NHWC: x (N, H, W, C), weight (K, R, S, C/groups) -> (N, Ho, Wo, K).
    A 3-D x is one image and gives a 3-D result.

    algorithm: None (default) computes exactly (direct/GEMM: every output is the sum of its
    taps' products). "winograd" computes 3×3, stride-1, dilation-1 layers (any padding,
    groups, both layouts and dtypes) by Winograd F(4×4, 3×3): about 4× fewer
    multiplications, at a small loss of accuracy. Measured on the suite's 3×3 layers with
    N(0, 1) inputs, the largest error relative to the largest output is about 1e-5 in
    float32 (6e-6 to 1.0e-5; exact float32 convolution: about 3e-7) and 2e-14 in float64
    (docs/design.md §3 has the table); tests bound it by 1e-4 (float32) and 1e-12
    (float64). Non-finite inputs give the exact result (tiles whose outputs are not all
    finite are recomputed by the definition). Any other layer raises ValueError naming the
    rule (3×3 kernels, stride 1, dilation 1). The weights are transformed per call here;
    a Conv2d layer with algorithm="winograd" transforms them once.
    """
    x = _check_input(x, "x")
    weight = _check_weight(weight, x, "x")
    act = check_activation(activation)
    prob = _Problem(x.shape, weight.shape, stride, padding, dilation, groups, layout, shape_rule,
                    _dtype_name(x), algorithm)
    b = None
    if bias is not None:
        bias = check_array(bias, "bias")
        check_same_dtype(x, "x", bias, "bias")
        if bias.shape != (prob.out_channels,):
            raise ValueError(f"bias must have shape ({prob.out_channels},) (one per filter), "
                             f"got {bias.shape}")
        b = as_buffer(bias)
    inputs = [x, weight] + ([bias] if bias is not None else [])
    y = output_array(out, prob.user_shape(prob.y_shape), x.dtype, inputs)
    prob.plan.forward(as_buffer(x), as_buffer(weight), b, y, act == "relu")
    return y


def conv2d_backward_input(grad_output: NDArray[FloatT], weight: NDArray[FloatT],
                          input_shape: Sequence[int], *, stride: IntPair = 1,
                          padding: Padding = 0, dilation: IntPair = 1, groups: int = 1,
                          layout: Layout = "NCHW", shape_rule: ShapeRule = "strict",
                          algorithm: Algorithm = None) -> NDArray[FloatT]:
    """Gradient of the loss w.r.t. the convolution's input (shape `input_shape`).

    algorithm: as for conv2d (checked the same way); the backward passes always compute
    exactly, whatever the forward pass used."""
    dy = check_array(grad_output, "grad_output")
    weight = _check_weight(weight, dy, "grad_output")
    prob = _Problem(input_shape, weight.shape, stride, padding, dilation, groups, layout,
                    shape_rule, _dtype_name(dy), algorithm)
    dy = _check_grad_output(dy, prob, dy, "grad_output")
    dx = np.empty(prob.user_shape(prob.x_shape), dtype=dy.dtype)
    prob.plan.backward_data(as_buffer(dy), as_buffer(weight), dx)
    return dx


def conv2d_backward_weight(grad_output: NDArray[FloatT], x: NDArray[FloatT],
                           weight_shape: Sequence[int], *, stride: IntPair = 1,
                           padding: Padding = 0, dilation: IntPair = 1, groups: int = 1,
                           layout: Layout = "NCHW", shape_rule: ShapeRule = "strict",
                           algorithm: Algorithm = None) -> NDArray[FloatT]:
    """Gradient of the loss w.r.t. the weight (shape `weight_shape`): every position's
    contribution summed into the one shared filter.

    algorithm: as for conv2d (checked the same way); the backward passes always compute
    exactly."""
    x = _check_input(x, "x")
    prob = _Problem(x.shape, weight_shape, stride, padding, dilation, groups, layout,
                    shape_rule, _dtype_name(x), algorithm)
    dy = _check_grad_output(grad_output, prob, x, "x")
    dw = np.empty(prob.w_shape, dtype=x.dtype)
    prob.plan.backward_weight(as_buffer(dy), as_buffer(x), dw)
    return dw


def _bias_grad(prob: _Problem, dy: np.ndarray) -> np.ndarray:
    db = np.empty((prob.out_channels,), dtype=dy.dtype)
    prob.plan.backward_bias(dy, db)
    return db


def conv2d_backward(grad_output: NDArray[FloatT], x: NDArray[FloatT],
                    weight: NDArray[FloatT], *, stride: IntPair = 1, padding: Padding = 0,
                    dilation: IntPair = 1, groups: int = 1, layout: Layout = "NCHW",
                    shape_rule: ShapeRule = "strict", bias: bool = True,
                    algorithm: Algorithm = None) -> Conv2dGrads:
    """All three gradients of conv2d: Conv2dGrads(input, weight, bias); bias is None when
    bias=False. algorithm: as for conv2d (checked the same way); the gradients are always
    computed exactly."""
    x = _check_input(x, "x")
    weight = _check_weight(weight, x, "x")
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False (whether to return its gradient), "
                        f"got {type(bias).__name__}")
    prob = _Problem(x.shape, weight.shape, stride, padding, dilation, groups, layout,
                    shape_rule, _dtype_name(x), algorithm)
    dy = as_buffer(_check_grad_output(grad_output, prob, x, "x"))
    xb, wb = as_buffer(x), as_buffer(weight)
    dx = np.empty(x.shape, dtype=x.dtype)
    dw = np.empty(weight.shape, dtype=x.dtype)
    prob.plan.backward_data(dy, wb, dx)
    prob.plan.backward_weight(dy, xb, dw)
    db = _bias_grad(prob, dy) if bias else None
    return Conv2dGrads(dx, dw, db)


def conv2d_output_shape(input_shape: Sequence[int], weight_shape: Sequence[int], *,
                        stride: IntPair = 1, padding: Padding = 0, dilation: IntPair = 1,
                        groups: int = 1, layout: Layout = "NCHW",
                        shape_rule: ShapeRule = "strict") -> Tuple[int, ...]:
    """The output shape conv2d would produce (raises ShapeError when it does not fit)."""
    prob = _Problem(input_shape, weight_shape, stride, padding, dilation, groups, layout,
                    shape_rule)
    return prob.user_shape(prob.y_shape)


def _algorithms(input_shape: Sequence[int], weight_shape: Sequence[int], *, stride: Any = 1,
                padding: Any = 0, dilation: Any = 1, groups: int = 1, layout: str = "NCHW",
                shape_rule: str = "strict", dtype: str = "float32",
                algorithm: Any = None) -> Dict[str, Any]:
    """Which implementation the core runs for each pass of this convolution
    (diagnostics/tests)."""
    prob = _Problem(input_shape, weight_shape, stride, padding, dilation, groups, layout,
                    shape_rule, dtype, algorithm)
    return dict(prob.plan.algorithms)


def _implementations(input_shape: Sequence[int], weight_shape: Sequence[int], *,
                     stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                     layout: str = "NCHW", shape_rule: str = "strict",
                     dtype: str = "float32", algorithm: Any = None) -> Dict[str, Any]:
    """Every implementation of each pass, in preference order, with whether it applies to
    this convolution and why not (diagnostics/tests)."""
    prob = _Problem(input_shape, weight_shape, stride, padding, dilation, groups, layout,
                    shape_rule, dtype, algorithm)
    return dict(prob.plan.implementations())


def conv2d_num_params(in_channels: int, out_channels: int, kernel_size: IntPair, *,
                      groups: int = 1, bias: bool = True) -> int:
    """Learnable parameters of a conv layer: K·(C/groups)·R·S weights (+ K biases).

    Computed with Python ints (exact for any size; NumPy integer arguments are converted
    first, so nothing wraps around)."""
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not is_int(v):
            raise TypeError(f"{name} must be an int, got {v!r}")
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False, got {bias!r}")
    in_channels, out_channels = int(in_channels), int(out_channels)
    r, s = pair(kernel_size, "kernel_size", 1)
    groups = check_groups(groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                         f"out_channels={out_channels}")
    weights = out_channels * (in_channels // groups) * r * s
    return int(weights + (out_channels if bias else 0))
