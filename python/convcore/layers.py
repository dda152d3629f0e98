"""Conv2d: a convolutional layer object holding its parameters and gradients."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Tuple

import numpy as np

from . import _core
from ._args import (as_buffer, check_activation, check_array, check_groups, check_layout,
                    check_shape_rule, is_int, pair)
from ._conv import (_check_grad_output, _check_input, _dtype_name, _Problem, _FORCED,
                    conv2d_num_params)

# Primitives a layer keeps, one per input shape (and ISA): enough for a training batch, a
# last partial batch and an evaluation batch.
_MAX_PRIMITIVES = 4


class LayerStateError(ValueError, RuntimeError):
    """A layer method was called in a state that does not allow it: ``backward()`` before
    any ``forward()``. A ValueError (and, for code written against earlier versions, a
    RuntimeError)."""


def _rng(rng: Any) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if is_int(rng):
        if rng < 0:
            raise ValueError(f"rng must be None, a non-negative int seed or a "
                             f"numpy.random.Generator, got {rng}")
        return np.random.default_rng(int(rng))
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be None, a non-negative int seed or a numpy.random.Generator, "
                    f"got {rng!r}")


class Conv2d:
    """A conv layer: K filters of R×S×(C/groups) weights shared over every position, plus
    one bias each. forward(x) keeps what backward needs; backward(grad_y) returns grad_x
    and stores .grad_weight and .grad_bias (summed over all positions and images).

    Weights are initialised as PyTorch does: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both
    weights and biases, fan_in = (C/groups)·R·S.

    Every hyperparameter is checked by the constructor (TypeError / ValueError naming it),
    not at the first forward.

    forward(x) keeps its own copy of x (and, with activation="relu", of where the output
    was positive), so editing x or the returned y in place afterwards does not change the
    gradients backward() computes. The copy costs one pass over x — small beside the
    convolution itself — and buys gradients that always belong to the forward they follow
    (NumPy cannot tell the layer that an array it references was written to).
    backward() before any forward() raises LayerStateError (a ValueError).

    The layer keeps a validated primitive per input shape with its weights prepacked, so a
    call pays for neither planning nor packing twice. The weights are repacked when
    ``layer.weight`` is assigned — ``layer.weight = w`` or ``layer.weight -= lr * g``
    (augmented assignment to an attribute assigns back) — or after
    ``layer.weight_changed()``, which you must call when you edit the array in place any
    other way (``layer.weight[...] = v``, ``np.copyto(layer.weight, v)``, an optimiser
    writing into it): convcore cannot see such writes.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 layout: str = "NCHW", shape_rule: str = "strict",
                 activation: Optional[str] = None, dtype: Any = "float32", rng: Any = None):
        self.num_params = conv2d_num_params(in_channels, out_channels, kernel_size,
                                            groups=groups, bias=bias)  # checks them all
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        self.padding = padding
        self.groups = check_groups(groups)
        self.layout = check_layout(layout)
        self.shape_rule = check_shape_rule(shape_rule)
        self.activation = check_activation(activation)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as e:
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from e
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        r, s = self.kernel_size
        cg = self.in_channels // self.groups
        k = self.out_channels
        shape = (k, cg, r, s) if layout == "NCHW" else (k, r, s, cg)
        gen = _rng(rng)
        bound = 1.0 / np.sqrt(cg * r * s)
        self._weight = as_buffer(gen.uniform(-bound, bound, size=shape).astype(self.dtype))
        self._weight_version = 0
        self._primitives: "OrderedDict[tuple, Tuple[_Problem, int]]" = OrderedDict()
        self.bias = gen.uniform(-bound, bound, size=(k,)).astype(self.dtype) if bias else None
        self.grad_weight: Optional[np.ndarray] = None
        self.grad_bias: Optional[np.ndarray] = None
        self._x: Optional[np.ndarray] = None      # the layer's copy of the last input
        self._mask: Optional[np.ndarray] = None   # relu: where that forward's output was > 0
        # Fails early (ValueError) for a padding string or tuple that can never work.
        _Problem((1, self.in_channels, r * self.dilation[0], s * self.dilation[1])
                 if layout == "NCHW" else (1, r * self.dilation[0], s * self.dilation[1], self.in_channels),
                 shape, self.stride, padding, self.dilation, self.groups, layout, "crop")

    @property
    def weight(self) -> np.ndarray:
        """The filters: (K, C/groups, R, S) in NCHW, (K, R, S, C/groups) in NHWC."""
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
        """Tells the layer its weight array was edited in place (repacks on the next call).
        Assigning ``layer.weight`` does this itself."""
        self._weight_version += 1

    def _primitive(self, x_shape: Tuple[int, ...]) -> _Problem:
        """The primitive for this input shape with the current weights prepacked."""
        key = (x_shape, _core.get_isa(), tuple(sorted(_FORCED.items())))
        entry = self._primitives.get(key)
        if entry is None:
            prob = _Problem(x_shape, self._weight.shape, self.stride, self.padding,
                            self.dilation, self.groups, self.layout, self.shape_rule,
                            _dtype_name(self._weight))
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

    def _kw(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, layout=self.layout, shape_rule=self.shape_rule)

    def output_shape(self, input_shape: Any) -> tuple:
        from ._conv import conv2d_output_shape
        return conv2d_output_shape(input_shape, self.weight.shape, **self._kw())

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _check_input(x, "x")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but this layer is {self.dtype}")
        prob = self._primitive(x.shape)
        y = np.empty(prob.user_shape(prob.y_shape), dtype=self.dtype)
        bias = as_buffer(self.bias) if self.bias is not None else None
        # The layer's own copy (C-contiguous and aligned: also the buffer the core reads),
        # so later in-place edits of x cannot change the gradients.
        xc = np.array(x, dtype=self.dtype, order="C", copy=True)
        xc.flags.writeable = False
        prob.plan.forward(xc, None, bias, y, self.activation == "relu")
        self._x = xc
        self._mask = np.greater(y, 0) if self.activation == "relu" else None
        return y

    __call__ = forward

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        """Gradients for the last forward(): returns grad_x; stores .grad_weight and
        .grad_bias. LayerStateError (a ValueError) when forward() was never called."""
        if self._x is None:
            raise LayerStateError("backward() called before forward(): the layer has no "
                                  "input to differentiate at")
        grad_y = check_array(grad_y, "grad_y")
        if self.activation == "relu":
            assert self._mask is not None
            if grad_y.shape != self._mask.shape:
                raise ValueError(f"grad_y has shape {grad_y.shape}, expected {self._mask.shape}")
            grad_y = np.where(self._mask, grad_y, np.zeros((), dtype=grad_y.dtype))
        x = self._x
        prob = self._primitive(x.shape)
        dy = as_buffer(_check_grad_output(grad_y, prob, x, "x"))
        dx = np.empty(x.shape, dtype=self.dtype)
        dw = np.empty(self._weight.shape, dtype=self.dtype)
        prob.plan.backward_data(dy, None, dx)
        prob.plan.backward_weight(dy, x, dw)
        self.grad_weight = dw
        if self.bias is not None:
            db = np.empty((self.out_channels,), dtype=self.dtype)
            prob.plan.backward_bias(dy, db)
            self.grad_bias = db
        else:
            self.grad_bias = None
        return dx

    def __repr__(self) -> str:
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, layout={self.layout!r}, "
                f"activation={self.activation!r}, dtype={self.dtype.name})")
