"""Type stub of the compiled core (convcore._core, cpp/bindings/module.cpp). Use the public
API in convcore; this module is private."""
from typing import Any, Dict, List, Literal, Optional

import numpy as np
from numpy.typing import NDArray

_Layout = Literal["NCHW", "NHWC"]
_ShapeRule = Literal["strict", "crop", "pad"]

class ShapeError(ValueError): ...

class Primitive:
    """A validated convolution with one implementation chosen per pass."""
    def __init__(self, batch: int, in_channels: int, in_h: int, in_w: int, out_channels: int,
                 kernel_h: int, kernel_w: int, stride_h: int, stride_w: int, dilation_h: int,
                 dilation_w: int, pad_top: int, pad_bottom: int, pad_left: int, pad_right: int,
                 groups: int, layout: _Layout, shape_rule: _ShapeRule, dtype: str = ...,
                 forward: str = ..., backward_data: str = ...,
                 backward_weight: str = ..., kind: str = ..., output_padding_h: int = ...,
                 output_padding_w: int = ..., algorithm: str = ...) -> None: ...
    # dtype: "float32" or "float64" (any other string raises ValueError, as do unknown
    # implementation names and kinds). forward / backward_data / backward_weight: an
    # implementation name forced for that pass ("" = the core's choice). kind: "conv2d"
    # (default) or "locally_connected2d" (weights (Ho, Wo, K, C, R, S) NCHW, (Ho, Wo, K, R, S, C) NHWC; bias (K, Ho, Wo) NCHW,
    # (Ho, Wo, K) NHWC), or "conv_transpose2d" (the sizes are the transposed operation's:
    # in_* its input, out_h/out_w its output; weights (in_channels, out_channels/groups, R, S)
    # NCHW, (in_channels, R, S, out_channels/groups) NHWC; output_padding_h/_w add rows and
    # columns at the bottom/right, each < stride or < dilation).
    # algorithm: "exact" (default) or "winograd" (forward F(4×4, 3×3); ValueError naming
    # the rule where it cannot compute the layer).
    @property
    def out_h(self) -> int: ...
    @property
    def out_w(self) -> int: ...
    @property
    def pad_top(self) -> int: ...
    @property
    def pad_bottom(self) -> int: ...
    @property
    def pad_left(self) -> int: ...
    @property
    def pad_right(self) -> int: ...
    @property
    def flops(self) -> float: ...
    @property
    def dtype(self) -> str: ...  # "float32" or "float64"
    @property
    def isa(self) -> str: ...
    @property
    def algorithm(self) -> str:
        """The descriptor's algorithm: 'exact' or 'winograd' (forward only)."""
    @property
    def has_weights(self) -> bool: ...
    @property
    def algorithms(self) -> Dict[str, str]:
        """The implementation each pass runs (chosen at creation)."""
    def implementations(self) -> Dict[str, List[Dict[str, Any]]]:
        """Every entry of each pass's list, in preference order, judged for this problem:
        {"forward": [{"name", "applies", "preferred", "reason"}, ...], ...}."""
    # Arrays: C-contiguous, aligned, of the primitive's dtype; `out` is written in place.
    # weight=None: the weights given to set_weights (prepacked).
    def forward(self, x: NDArray[Any], weight: Optional[NDArray[Any]],
                bias: Optional[NDArray[Any]], out: NDArray[Any], relu: bool) -> None: ...
    def backward_data(self, grad_output: NDArray[Any], weight: Optional[NDArray[Any]],
                      out: NDArray[Any]) -> None: ...
    def backward_weight(self, grad_output: NDArray[Any], x: NDArray[Any],
                        out: NDArray[Any]) -> None: ...
    def backward_bias(self, grad_output: NDArray[Any], out: NDArray[Any]) -> None: ...
    def set_weights(self, weight: NDArray[Any]) -> None: ...
    def clear_weights(self) -> None: ...

def gemm(a: NDArray[Any], b: NDArray[Any], out: NDArray[Any],
         accumulate: bool = ...) -> None: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def max_num_threads() -> int: ...
def cgroup_memory_limit(host_swap: int, proc_cgroup: str = ...,
                        root: str = ...) -> Optional[int]: ...
def get_isa() -> str: ...
def set_isa(isa: str) -> None: ...
def available_isas() -> List[str]: ...
def config() -> Dict[str, Any]:
    """{"version", "isa", "isa_detected", "isa_available", "threads", "openmp",
    "blocking": {"float32": {...}, "float64": {...}}}."""
