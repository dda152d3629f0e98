"""Calls a type checker must reject (checked by tests/test_typing.py with mypy --strict).

Each line with a trailing ``E: fragment`` comment must get a mypy error whose message contains
`fragment`; every other line must type-check (the good calls beside them show the
annotations are not simply rejecting everything). Never run: importing it does nothing.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

import convcore
from convcore import Conv2d, conv2d, conv2d_backward, conv2d_output_shape, locally_connected2d


def calls(x: NDArray[np.float32], w: NDArray[np.float32], w64: NDArray[np.float64],
          layer: Conv2d) -> None:
    conv2d(x, w, padding="same")
    conv2d(x, w, padding="valid")
    conv2d(x, w, padding=(1, 2))
    conv2d(x, w, padding=(0, 1, 0, 1))
    conv2d(x, w, padding="smae")  # E: "padding"
    conv2d(x, w, padding=(1, 2, 3))  # E: "padding"
    conv2d(x, w, layout="NHWC")
    conv2d(x, w, layout="nhwc")  # E: "layout"
    conv2d(x, w, stride=(2, 2))
    conv2d(x, w, stride=1.5)  # E: "stride"
    conv2d(x, w, dilation=2.0)  # E: "dilation"
    conv2d(x, w, shape_rule="floor")  # E: "shape_rule"
    conv2d(x, w, activation="relu")
    conv2d(x, w, activation="gelu")  # E: "activation"
    conv2d(x, w64)  # E: conv2d
    y32: NDArray[np.float32] = conv2d(x, w)
    y64: NDArray[np.float64] = conv2d(x, w)  # E: incompatible type
    conv2d_backward(x, x, w, layout="nchw")  # E: "layout"
    conv2d_output_shape((1, 3, 8, 8), (4, 3, 3, 3), padding="full")  # E: "padding"
    locally_connected2d(x, w, stride=1.5)  # E: "stride"
    Conv2d(3, 8, 3, padding="smae")  # E: "padding"
    Conv2d(3, 8, 3, layout="nhwc")  # E: "layout"
    Conv2d(3, 8, 3, stride=1.5)  # E: "stride"
    Conv2d(3, 8, 3, dtype="float16")  # E: "dtype"
    convcore.summary((3, 32, 32), "16:3", layout="nhwc")  # E: "layout"
    layer.weight -= 0.1 * layer.grad_weight  # E: Unsupported operand types
    if layer.grad_weight is not None:
        layer.weight -= 0.1 * layer.grad_weight
