"""The locally-connected layer: a conv layer whose "parameter sharing scheme is relaxed" —
every output position (ho, wo) has its own K filters of C×R×S weights.

Shapes (no groups, no dilation):

* NCHW: x (N, C, H, W), weight (Ho, Wo, K, C, R, S), bias (K, Ho, Wo) -> y (N, K, Ho, Wo)
* NHWC: x (N, H, W, C), weight (Ho, Wo, K, R, S, C), bias (Ho, Wo, K) -> y (N, Ho, Wo, K)

y[n, k, ho, wo] = sum_{c,r,s} weight[ho, wo, k, c, r, s] · xpad[n, c, ho·sh + r, wo·sw + s]
(+ bias[k, ho, wo]). Stride, padding (int, pair, 4-tuple, "valid", "same" with stride 1) and
the shape rules are conv2d's. The core computes each pass as one GEMM per output position
(that position's K×(C·R·S) weights times the batch's patches), all positions in one
parallel region; the weight gradient sums over the batch only.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from . import _core
from ._args import (as_buffer, check_array, check_layout, check_same_dtype, check_shape_rule,
                    is_int, output_array, padding4, pair, shape_tuple)
from ._conv import _FORCED, Conv2dGrads, _check_input, _dtype_name

_KIND = "locally_connected2d"
_MAX_PRIMITIVES = 4


def _kernel_of(wshape: Tuple[int, ...], layout: str) -> Tuple[int, int, int, int]:
    """(K, C, R, S) read from a 6-D weight shape."""
    if layout == "NCHW":
        _, _, k, c, r, s = wshape
    else:
        _, _, k, r, s, c = wshape
    return k, c, r, s


class _LCProblem:
    """A locally-connected layer resolved against an input shape: the core's primitive
    plus the shapes of every array."""

    def __init__(self, input_shape: Sequence[int], out_channels: int, kernel: Tuple[int, int],
                 stride: Any, padding: Any, layout: Any, shape_rule: Any,
                 dtype: str = "float32"):
        self.layout = check_layout(layout)
        rule = check_shape_rule(shape_rule)
        ishape = shape_tuple(input_shape, "input shape", (3, 4))
        self.batched = len(ishape) == 4
        if not self.batched:
            ishape = (1,) + ishape
        if self.layout == "NCHW":
            n, c, h, w = ishape
        else:
            n, h, w, c = ishape
        r, s = kernel
        k = out_channels
        self.stride = pair(stride, "stride", 1)
        self.pads = padding4(padding, (r, s), self.stride, (1, 1))
        self.plan = _core.Primitive(n, c, h, w, k, r, s, *self.stride, 1, 1, *self.pads, 1,
                                    self.layout, rule, dtype, kind=_KIND, **_FORCED)
        ho, wo = self.plan.out_h, self.plan.out_w
        self.x_shape = ishape
        if self.layout == "NCHW":
            self.w_shape = (ho, wo, k, c, r, s)
            self.b_shape = (k, ho, wo)
            self.y_shape = (n, k, ho, wo)
        else:
            self.w_shape = (ho, wo, k, r, s, c)
            self.b_shape = (ho, wo, k)
            self.y_shape = (n, ho, wo, k)
        self.in_channels = c

    def user_shape(self, shape4: Tuple[int, ...]) -> Tuple[int, ...]:
        return shape4 if self.batched else shape4[1:]


def _check_weight6(weight: Any, ref: np.ndarray, ref_name: str, layout: Any) -> np.ndarray:
    weight = check_array(weight, "weight")
    check_same_dtype(ref, ref_name, weight, "weight")
    check_layout(layout)
    if weight.ndim != 6:
        order = "(Ho, Wo, K, C, R, S)" if layout == "NCHW" else "(Ho, Wo, K, R, S, C)"
        raise ValueError(f"weight must be 6-D {order} for a locally-connected layer "
                         f"({layout}), got {weight.ndim}-D with shape {weight.shape}")
    return weight


def _problem_for(x_shape: Tuple[int, ...], weight: np.ndarray, stride: Any, padding: Any,
                 layout: str, shape_rule: str, dtype: str) -> _LCProblem:
    k, c, r, s = _kernel_of(weight.shape, layout)
    if min(weight.shape) < 1:
        raise ValueError(f"weight must not have empty axes, got shape {weight.shape}")
    prob = _LCProblem(x_shape, k, (r, s), stride, padding, layout, shape_rule, dtype)
    if weight.shape != prob.w_shape:
        order = "(Ho, Wo, K, C, R, S)" if layout == "NCHW" else "(Ho, Wo, K, R, S, C)"
        raise ValueError(
            f"weight has shape {weight.shape}, expected {prob.w_shape} {order}: input "
            f"{tuple(x_shape)} ({layout}) has {prob.in_channels} channels and, with stride "
            f"{prob.stride} and padding {prob.pads}, {prob.w_shape[0]}×{prob.w_shape[1]} "
            f"output positions, each with its own filters")
    return prob


def _check_bias(bias: Any, prob: _LCProblem, ref: np.ndarray, ref_name: str) -> np.ndarray:
    bias = check_array(bias, "bias")
    check_same_dtype(ref, ref_name, bias, "bias")
    if bias.shape != prob.b_shape:
        order = "(K, Ho, Wo)" if prob.layout == "NCHW" else "(Ho, Wo, K)"
        raise ValueError(f"bias must have shape {prob.b_shape} {order} (one per filter and "
                         f"position), got {bias.shape}")
    return as_buffer(bias)


def _check_dy(dy: Any, prob: _LCProblem, ref: np.ndarray, ref_name: str) -> np.ndarray:
    dy = check_array(dy, "grad_output")
    check_same_dtype(ref, ref_name, dy, "grad_output")
    expected = prob.user_shape(prob.y_shape)
    if dy.shape != expected:
        raise ValueError(f"grad_output has shape {dy.shape}, expected {expected} "
                         "(the output shape of this locally-connected layer)")
    return as_buffer(dy)


def locally_connected2d(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray] = None,
                        *, stride: Any = 1, padding: Any = 0, layout: str = "NCHW",
                        shape_rule: str = "strict",
                        out: Optional[np.ndarray] = None) -> np.ndarray:
    """Locally-connected layer forward (see the module docstring for shapes).

    NCHW: x (N, C, H, W), weight (Ho, Wo, K, C, R, S), bias (K, Ho, Wo) -> (N, K, Ho, Wo).
    NHWC: x (N, H, W, C), weight (Ho, Wo, K, R, S, C), bias (Ho, Wo, K) -> (N, Ho, Wo, K).
    A 3-D x is one image and gives a 3-D result.
    """
    x = _check_input(x, "x")
    weight = _check_weight6(weight, x, "x", layout)
    prob = _problem_for(x.shape, weight, stride, padding, layout, shape_rule, _dtype_name(x))
    b = _check_bias(bias, prob, x, "x") if bias is not None else None
    inputs = [x, weight] + ([bias] if bias is not None else [])
    y = output_array(out, prob.user_shape(prob.y_shape), x.dtype, inputs)
    prob.plan.forward(as_buffer(x), as_buffer(weight), b, y, False)
    return y


def locally_connected2d_backward(grad_output: np.ndarray, x: np.ndarray, weight: np.ndarray,
                                 *, stride: Any = 1, padding: Any = 0, layout: str = "NCHW",
                                 shape_rule: str = "strict", bias: bool = True) -> Conv2dGrads:
    """All three gradients: Conv2dGrads(input, weight, bias). The weight and bias gradients
    sum over the batch only (no sharing across positions); bias is None when bias=False."""
    x = _check_input(x, "x")
    weight = _check_weight6(weight, x, "x", layout)
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False (whether to return its gradient), "
                        f"got {type(bias).__name__}")
    prob = _problem_for(x.shape, weight, stride, padding, layout, shape_rule, _dtype_name(x))
    dy = _check_dy(grad_output, prob, x, "x")
    dx = np.empty(x.shape, dtype=x.dtype)
    dw = np.empty(weight.shape, dtype=x.dtype)
    prob.plan.backward_data(dy, as_buffer(weight), dx)
    prob.plan.backward_weight(dy, as_buffer(x), dw)
    db = None
    if bias:
        db = np.empty(prob.b_shape, dtype=x.dtype)
        prob.plan.backward_bias(dy, db)
    return Conv2dGrads(dx, dw, db)


def _size_pair(v: Any, name: str) -> Tuple[int, int]:
    return pair(v, name, 1)


def _out_size(input_size: Tuple[int, int], in_channels: int, out_channels: int,
              kernel: Tuple[int, int], stride: Any, padding: Any, shape_rule: str,
              layout: str = "NCHW") -> _LCProblem:
    h, w = input_size
    shape = (0, in_channels, h, w) if layout == "NCHW" else (0, h, w, in_channels)
    return _LCProblem(shape, out_channels, kernel, stride, padding, layout, shape_rule)


def _check_channels(in_channels: Any, out_channels: Any) -> Tuple[int, int]:
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not is_int(v):
            raise TypeError(f"{name} must be an int, got {v!r}")
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    return int(in_channels), int(out_channels)


def locally_connected2d_num_params(input_size: Any, in_channels: int, out_channels: int,
                                   kernel_size: Any, *, stride: Any = 1, padding: Any = 0,
                                   bias: bool = True, shape_rule: str = "strict") -> int:
    """Learnable parameters of a locally-connected layer: Ho·Wo·K·(C·R·S + 1) (without
    the + 1 when bias=False). input_size is H or (H, W). Exact Python ints.

    AlexNet's conv1 without sharing (227, 3 channels, 96 filters of 11×11, stride 4):
    55·55·96·(363 + 1) = 105,705,600."""
    c, k = _check_channels(in_channels, out_channels)
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False, got {bias!r}")
    size = _size_pair(input_size, "input_size")
    r, s = pair(kernel_size, "kernel_size", 1)
    prob = _out_size(size, c, k, (r, s), stride, padding, shape_rule)
    ho, wo = prob.plan.out_h, prob.plan.out_w
    return int(ho) * int(wo) * k * (c * r * s + (1 if bias else 0))


class LocallyConnected2d:
    """A locally-connected layer object: weight (Ho, Wo, K, C, R, S) in NCHW,
    (Ho, Wo, K, R, S, C) in NHWC; bias (K, Ho, Wo) / (Ho, Wo, K). The input's spatial size
    is fixed at construction (input_size: H or (H, W)); the batch size is free.

    forward(x) keeps a copy of x; backward(grad_y) returns grad_x and stores .grad_weight
    and .grad_bias (summed over the batch). Weights are initialised U(-1/sqrt(fan_in),
    1/sqrt(fan_in)), fan_in = C·R·S, as PyTorch does for conv layers. The layer keeps a
    primitive per input shape with the weights prepacked per position; assign
    ``layer.weight`` or call ``weight_changed()`` after editing it in place.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, input_size: Any,
                 stride: Any = 1, padding: Any = 0, bias: bool = True, layout: str = "NCHW",
                 dtype: Any = "float32", rng: Any = None):
        from .layers import _rng  # the Conv2d layer's rng policy
        c, k = _check_channels(in_channels, out_channels)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.in_channels, self.out_channels = c, k
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.input_size = _size_pair(input_size, "input_size")
        self.stride = pair(stride, "stride", 1)
        self.padding = padding
        self.layout = check_layout(layout)
        self.shape_rule = "strict"
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as e:
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from e
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        prob = _out_size(self.input_size, c, k, self.kernel_size, self.stride, padding,
                         self.shape_rule, self.layout)
        self.output_size = (prob.plan.out_h, prob.plan.out_w)
        self.num_params = locally_connected2d_num_params(
            self.input_size, c, k, self.kernel_size, stride=self.stride, padding=padding,
            bias=bool(bias))
        gen = _rng(rng)
        r, s = self.kernel_size
        bound = 1.0 / np.sqrt(c * r * s)
        self._weight = as_buffer(gen.uniform(-bound, bound, size=prob.w_shape).astype(self.dtype))
        self.bias = (gen.uniform(-bound, bound, size=prob.b_shape).astype(self.dtype)
                     if bias else None)
        self._weight_version = 0
        self._primitives: "OrderedDict[tuple, Tuple[_LCProblem, int]]" = OrderedDict()
        self.grad_weight: Optional[np.ndarray] = None
        self.grad_bias: Optional[np.ndarray] = None
        self._x: Optional[np.ndarray] = None

    @property
    def weight(self) -> np.ndarray:
        """(Ho, Wo, K, C, R, S) in NCHW, (Ho, Wo, K, R, S, C) in NHWC."""
        return self._weight

    @weight.setter
    def weight(self, value: np.ndarray) -> None:
        value = check_array(value, "weight")
        if value.shape != self._weight.shape or value.dtype != self.dtype:
            raise ValueError(f"weight must have shape {self._weight.shape} and dtype "
                             f"{self.dtype}, got {value.shape} {value.dtype}")
        self._weight = as_buffer(value)
        self.weight_changed()

    def weight_changed(self) -> None:
        """Tells the layer its weight array was edited in place (repacks on the next call)."""
        self._weight_version += 1

    def _primitive(self, x_shape: Tuple[int, ...]) -> _LCProblem:
        key = (x_shape, _core.get_isa(), tuple(sorted(_FORCED.items())))
        entry = self._primitives.get(key)
        if entry is None:
            prob = _problem_for(x_shape, self._weight, self.stride, self.padding, self.layout,
                                self.shape_rule, _dtype_name(self._weight))
            version = -1
            if len(self._primitives) >= _MAX_PRIMITIVES:
                self._primitives.popitem(last=False)
        else:
            prob, version = entry
            self._primitives.move_to_end(key)
        if version != self._weight_version:
            prob.plan.set_weights(self._weight)
        self._primitives[key] = (prob, self._weight_version)
        return prob

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _check_input(x, "x")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but this layer is {self.dtype}")
        hw = tuple(x.shape[-2:]) if self.layout == "NCHW" else tuple(x.shape[-3:-1])
        if hw != self.input_size:
            raise ValueError(f"x has spatial size {hw} but this layer was built for "
                             f"input_size {self.input_size} (its weights are per position)")
        prob = self._primitive(x.shape)
        y = np.empty(prob.user_shape(prob.y_shape), dtype=self.dtype)
        bias = as_buffer(self.bias) if self.bias is not None else None
        xc = np.array(x, dtype=self.dtype, order="C", copy=True)
        xc.flags.writeable = False
        prob.plan.forward(xc, None, bias, y, False)
        self._x = xc
        return y

    __call__ = forward

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        """Gradients for the last forward(): returns grad_x; stores .grad_weight and
        .grad_bias."""
        from .layers import LayerStateError
        if self._x is None:
            raise LayerStateError("backward() called before forward(): the layer has no "
                                  "input to differentiate at")
        x = self._x
        prob = self._primitive(x.shape)
        dy = _check_dy(grad_y, prob, x, "x")
        dx = np.empty(x.shape, dtype=self.dtype)
        dw = np.empty(self._weight.shape, dtype=self.dtype)
        prob.plan.backward_data(dy, None, dx)
        prob.plan.backward_weight(dy, x, dw)
        self.grad_weight = dw
        if self.bias is not None:
            db = np.empty(prob.b_shape, dtype=self.dtype)
            prob.plan.backward_bias(dy, db)
            self.grad_bias = db
        else:
            self.grad_bias = None
        return dx

    def __repr__(self) -> str:
        return (f"LocallyConnected2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, input_size={self.input_size}, "
                f"stride={self.stride}, padding={self.padding!r}, "
                f"bias={self.bias is not None}, layout={self.layout!r}, dtype={self.dtype.name})")
