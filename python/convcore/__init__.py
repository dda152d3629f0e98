"""convcore: fast CPU 2-D convolution — forward and every backward pass — for NumPy.

See README.md for the API; show_config() tells which kernels this machine runs.
"""
from ._conv import (Conv2dGrads, ShapeError, conv2d, conv2d_backward, conv2d_backward_input,
                    conv2d_backward_weight, conv2d_num_params, conv2d_output_shape)
from ._core import config as _config  # noqa: F401  (kept for introspection)
from ._runtime import gemm, get_num_threads, max_num_threads, set_num_threads, show_config
from .layers import Conv2d, LayerStateError
from .locally_connected import (LocallyConnected2d, locally_connected2d,
                                locally_connected2d_backward, locally_connected2d_num_params)
from .transposed import (ConvTranspose2d, conv_transpose2d, conv_transpose2d_backward,
                         conv_transpose2d_output_shape)
from ._summary import LayerSummary, Summary, summary
from . import cs231n  # the CS231n assignment's names: convcore.cs231n.conv_forward_fast, ...

__version__ = "0.1.0"

__all__ = [
    "Conv2d", "Conv2dGrads", "LayerStateError", "ShapeError", "conv2d", "conv2d_backward", "conv2d_backward_input",
    "conv2d_backward_weight", "conv2d_num_params", "conv2d_output_shape", "gemm",
    "get_num_threads", "max_num_threads", "set_num_threads", "show_config",
]
__all__ += ["LayerSummary", "Summary", "cs231n", "summary"]
__all__ += ["LocallyConnected2d", "locally_connected2d", "locally_connected2d_backward",
            "locally_connected2d_num_params"]
__all__ += ["ConvTranspose2d", "conv_transpose2d", "conv_transpose2d_backward",
            "conv_transpose2d_output_shape"]
