"""Type aliases of the public API (for type checkers; nothing here is checked at run time,
the argument checks in _args.py are).

    Layout      "NCHW" | "NHWC"
    ShapeRule   "strict" | "crop" | "pad"
    PaddingMode "valid" | "same"
    Activation  None | "relu"
    Algorithm   None | "winograd"                     conv2d's forward algorithm (None: exact)
    Init        "pytorch" | "he"                      a layer's initialisation
    IntPair     int | (int, int)                      stride, dilation, kernel_size
    Padding     int | (int, int) | (top, bottom, left, right) | "valid" | "same"
    FloatT      a float32 or float64 scalar type: float32 arrays in give float32 arrays out
    FloatArray  a float32 or float64 array where the dtype is not tied to an argument (a
                layer's parameters and gradients: float32 or float64 by its dtype argument)
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Tuple, TypeVar, Union

import numpy as np
from numpy.typing import NDArray

Layout = Literal["NCHW", "NHWC"]
ShapeRule = Literal["strict", "crop", "pad"]
PaddingMode = Literal["valid", "same"]
Activation = Optional[Literal["relu"]]
Algorithm = Optional[Literal["winograd"]]
IntPair = Union[int, Tuple[int, int]]
Padding = Union[int, Tuple[int, int], Tuple[int, int, int, int], PaddingMode]
DTypeName = Literal["float32", "float64"]
# A layer's dtype argument: a name or the NumPy scalar type (np.dtype objects are accepted
# at run time too).
DTypeLike = Union[DTypeName, "type[np.float32]", "type[np.float64]", "np.dtype[Any]"]

Init = Literal["pytorch", "he"]
# None (fresh entropy), an int seed or a Generator.
RngLike = Union[None, int, np.random.Generator]

FloatT = TypeVar("FloatT", np.float32, np.float64)
FloatArray = NDArray["np.floating[Any]"]  # (a string: numpy < 1.22 cannot subscript it)
AnyArray = NDArray[Any]

__all__ = ["Activation", "Algorithm", "AnyArray", "DTypeLike", "DTypeName", "FloatArray", "FloatT",
           "Init", "IntPair", "Layout", "Padding", "PaddingMode", "RngLike", "ShapeRule"]
