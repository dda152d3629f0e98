"""Conv2d: a convolutional layer object holding its parameters and gradients."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._args import check_activation, check_array, check_groups, check_layout, is_int, pair
from ._conv import _Problem, conv2d, conv2d_backward, conv2d_num_params


def _rng(rng: Any) -> np.random.Generator:
    if rng is None or is_int(rng):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")


class Conv2d:
    """A conv layer: K filters of R×S×(C/groups) weights shared over every position, plus
    one bias each. forward(x) keeps what backward needs; backward(grad_y) returns grad_x
    and stores .grad_weight and .grad_bias (summed over all positions and images).

    Weights are initialised as PyTorch does: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both
    weights and biases, fan_in = (C/groups)·R·S.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 layout: str = "NCHW", shape_rule: str = "strict",
                 activation: Optional[str] = None, dtype: Any = "float32", rng: Any = None):
        self.num_params = conv2d_num_params(in_channels, out_channels, kernel_size,
                                            groups=groups, bias=bias)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        self.padding = padding
        self.groups = check_groups(groups)
        self.layout = check_layout(layout)
        self.shape_rule = shape_rule
        self.activation = check_activation(activation)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as e:
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from e
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        r, s = self.kernel_size
        cg = self.in_channels // self.groups
        shape = (out_channels, cg, r, s) if layout == "NCHW" else (out_channels, r, s, cg)
        gen = _rng(rng)
        bound = 1.0 / np.sqrt(cg * r * s)
        self.weight = gen.uniform(-bound, bound, size=shape).astype(self.dtype)
        self.bias = gen.uniform(-bound, bound, size=(out_channels,)).astype(self.dtype) if bias else None
        self.grad_weight: Optional[np.ndarray] = None
        self.grad_bias: Optional[np.ndarray] = None
        self._x: Optional[np.ndarray] = None
        self._y: Optional[np.ndarray] = None
        # Fails early (ValueError) for a padding string or tuple that can never work.
        _Problem((1, self.in_channels, r * self.dilation[0], s * self.dilation[1])
                 if layout == "NCHW" else (1, r * self.dilation[0], s * self.dilation[1], self.in_channels),
                 shape, self.stride, padding, self.dilation, self.groups, layout, "crop")

    def _kw(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, layout=self.layout, shape_rule=self.shape_rule)

    def output_shape(self, input_shape: Any) -> tuple:
        from ._conv import conv2d_output_shape
        return conv2d_output_shape(input_shape, self.weight.shape, **self._kw())

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_array(x, "x")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but this layer is {self.dtype}")
        y = conv2d(x, self.weight, self.bias, activation=self.activation, **self._kw())
        self._x = x
        self._y = y if self.activation == "relu" else None
        return y

    __call__ = forward

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        if self._x is None:
            raise RuntimeError("backward() called before forward()")
        grad_y = check_array(grad_y, "grad_y")
        if self.activation == "relu":
            assert self._y is not None
            if grad_y.shape != self._y.shape:
                raise ValueError(f"grad_y has shape {grad_y.shape}, expected {self._y.shape}")
            grad_y = np.where(self._y > 0, grad_y, np.zeros((), dtype=grad_y.dtype))
        grads = conv2d_backward(grad_y, self._x, self.weight, bias=self.bias is not None,
                                **self._kw())
        self.grad_weight = grads.weight
        self.grad_bias = grads.bias
        return grads.input

    def __repr__(self) -> str:
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, layout={self.layout!r}, "
                f"activation={self.activation!r}, dtype={self.dtype.name})")
