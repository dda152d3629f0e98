"""Transposed convolution (PyTorch's ``conv_transpose2d``): the adjoint of conv2d, used to
upsample in decoders, U-Nets and GANs.

Shapes (``g`` = groups):

* NCHW: x (N, C_in, H, W), weight (C_in, C_out/g, R, S), bias (C_out,) -> y (N, C_out, Ho, Wo)
* NHWC: x (N, H, W, C_in), weight (C_in, R, S, C_out/g), bias (C_out,) -> y (N, Ho, Wo, C_out)

with Ho = (H − 1)·stride − 2·padding + dilation·(R − 1) + output_padding + 1 (the same
along the width). In the scatter form: every input pixel adds its weighted kernel into the
output, y[n, k, ih·s − p + r·d, iw·s − p + c·d] += x[n, c_in, ih, iw] · weight[c_in, k, r, c]
(taps landing outside the output are dropped), plus the bias. ``output_padding`` (which
must be smaller than the stride or the dilation) adds rows and columns at the bottom/right
so that several output sizes map to one input size.

The core computes it as the convolution it is the adjoint of (y's shape -> x's shape, the
same weights): the forward pass is that convolution's input gradient — for a stride > 1
the sub-pixel decomposition, stride² small dense convolutions writing interleaved outputs,
with bias and ReLU fused — the input gradient is that convolution's forward, and the
weight gradient its weight gradient with x and grad_output exchanged.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

from . import _core
from ._args import (as_buffer, check_activation, check_array, check_groups, check_layout,
                    check_range, check_same_dtype, is_int, new_array, output_array, pair,
                    shape_tuple)
from ._conv import _FORCED, Conv2dGrads, _cached, _check_input, _dtype_name
from .layers import (_Layer, _check_dtype, _check_init, _check_requires_input_grad,
                     _initial_params, _rng)
from ._types import (Activation, DTypeLike, FloatArray, FloatT, Init, IntPair, Layout,
                     RngLike)

_KIND = "conv_transpose2d"


def _padding(padding: Any) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, a pair (pad_h, pad_w) or a 4-tuple."""
    if isinstance(padding, str):
        raise ValueError("padding of a transposed convolution must be an int, a pair or a "
                         f"4-tuple (top, bottom, left, right); got {padding!r}")
    if is_int(padding):
        p = (int(padding),) * 4
    elif isinstance(padding, (tuple, list)) and all(is_int(e) for e in padding) \
            and len(padding) in (2, 4):
        if len(padding) == 2:
            p = (int(padding[0]), int(padding[0]), int(padding[1]), int(padding[1]))
        else:
            p = (int(padding[0]), int(padding[1]), int(padding[2]), int(padding[3]))
    else:
        raise TypeError("padding must be an int, a pair (pad_h, pad_w) or a 4-tuple "
                        f"(top, bottom, left, right); got {padding!r}")
    check_range(p, "padding", padding)
    if min(p) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return p


def _output_padding(output_padding: Any, stride: Tuple[int, int],
                    dilation: Tuple[int, int]) -> Tuple[int, int]:
    op = pair(output_padding, "output_padding", 0)
    for axis, o, s, d in zip(("height", "width"), op, stride, dilation):
        if o >= s and o >= d:
            raise ValueError(
                f"output_padding must be smaller than either stride or dilation (PyTorch's "
                f"rule), got output_padding={output_padding!r} with stride={stride} and "
                f"dilation={dilation} (along the {axis}: {o} >= stride {s} and >= dilation {d})")
    return op


class _TProblem:
    """A transposed convolution resolved against concrete shapes: the core's primitive
    plus the shapes of every array."""

    def __init__(self, input_shape: Sequence[int], weight_shape: Sequence[int], stride: Any,
                 padding: Any, output_padding: Any, dilation: Any, groups: Any, layout: Any,
                 dtype: str = "float32"):
        self.layout = check_layout(layout)
        ishape = shape_tuple(input_shape, "input shape", (3, 4))
        wshape = shape_tuple(weight_shape, "weight shape", (4,))
        self.batched = len(ishape) == 4
        if not self.batched:
            ishape = (1,) + ishape
        groups = check_groups(groups)
        if self.layout == "NCHW":
            n, c, h, w = ishape
            cw, kg, r, s = wshape
            channel_axis = 1
            order = "(C_in, C_out/groups, R, S)"
        else:
            n, h, w, c = ishape
            cw, r, s, kg = wshape
            channel_axis = 3
            order = "(C_in, R, S, C_out/groups)"
        if cw != c:
            raise ValueError(
                f"channel mismatch: weight {wshape} {order} takes {cw} input channels, but "
                f"the input has {c} (axis {channel_axis - (0 if self.batched else 1)} in "
                f"{self.layout})")
        if c % groups != 0:
            raise ValueError(f"groups must divide in_channels: the input has {c} channels, "
                             f"not divisible by groups={groups}")
        if min(wshape) < 1:
            raise ValueError(f"weight must not have empty axes, got shape {wshape}")
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        self.pads = _padding(padding)
        self.output_padding = _output_padding(output_padding, self.stride, self.dilation)
        k = kg * groups
        self.plan = _core.Primitive(n, c, h, w, k, r, s, *self.stride, *self.dilation,
                                    *self.pads, groups, self.layout, "strict", dtype,
                                    kind=_KIND, output_padding_h=self.output_padding[0],
                                    output_padding_w=self.output_padding[1], **_FORCED)
        ho, wo = self.plan.out_h, self.plan.out_w
        self.x_shape = ishape
        self.w_shape = wshape
        self.y_shape = (n, k, ho, wo) if self.layout == "NCHW" else (n, ho, wo, k)
        self.out_channels = k

    def user_shape(self, shape4: Tuple[int, ...]) -> Tuple[int, ...]:
        return shape4 if self.batched else shape4[1:]


def _check_weight(weight_in: Any, ref: np.ndarray, ref_name: str) -> np.ndarray:
    weight = check_array(weight_in, "weight")
    check_same_dtype(ref, ref_name, weight, "weight")
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D, (C_in, C_out/groups, R, S) in NCHW or "
                         f"(C_in, R, S, C_out/groups) in NHWC; got {weight.ndim}-D with shape "
                         f"{weight.shape}")
    return weight


def _check_dy(dy_in: Any, prob: _TProblem, ref: np.ndarray, ref_name: str) -> np.ndarray:
    dy = check_array(dy_in, "grad_output")
    check_same_dtype(ref, ref_name, dy, "grad_output")
    expected = prob.user_shape(prob.y_shape)
    if dy.shape != expected:
        raise ValueError(f"grad_output has shape {dy.shape}, expected {expected} "
                         "(the output shape of this transposed convolution)")
    return as_buffer(dy, "grad_output")


def conv_transpose2d(x: NDArray[FloatT], weight: NDArray[FloatT],
                     bias: Optional[NDArray[FloatT]] = None, *, stride: IntPair = 1,
                     padding: Any = 0, output_padding: IntPair = 0, dilation: IntPair = 1,
                     groups: int = 1, layout: Layout = "NCHW", activation: Activation = None,
                     out: Optional[NDArray[FloatT]] = None) -> NDArray[FloatT]:
    """2-D transposed convolution (PyTorch's ``conv_transpose2d``), bias and ReLU fused.

    The adjoint of :func:`conv2d` with the same weights: each input value scatters its
    products with a filter into a window of the output, windows ``stride`` apart (an
    upsampling for stride > 1, as in decoders, U-Nets and GANs). In NCHW, before padding
    is cropped::

        y[n, g*Cg_out + k, i*sh + r*dh, j*sw + s*dw] += x[n, c, i, j] * weight[c, k, r, s]

    for every input channel c of group g (Cg_out = C_out/groups). It is computed as the
    input gradient of the convolution it is the adjoint of — for stride > 1 by a sub-pixel
    decomposition (one dense stride-1 convolution per output phase, no scatter).

    Parameters
    ----------
    x : array, shape (N, C_in, H, W) in NCHW or (N, H, W, C_in) in NHWC
        The input batch, float32 or float64 (NumPy, or any CPU array with DLPack or the
        buffer protocol). A 3-D array is one image and gives a 3-D result.
    weight : array, shape (C_in, C_out/groups, R, S) in NCHW or (C_in, R, S, C_out/groups) in NHWC
        The filters, as PyTorch stores them, of x's dtype.
    bias : array, shape (C_out,), optional
        One bias per output channel; None (default) adds nothing.
    stride : int or (int, int), default 1
        Spacing of the windows in the output, (sh, sw); >= 1.
    padding : int, (int, int) or (int, int, int, int), default 0
        Rows/columns cropped from each border of the full output: p, (ph, pw) or
        (top, bottom, left, right).
    output_padding : int or (int, int), default 0
        Rows/columns added at the bottom/right (to pick one of the input sizes a strided
        conv2d maps to the same size); each smaller than the stride or the dilation.
    dilation : int or (int, int), default 1
        Spacing between filter taps; >= 1.
    groups : int, default 1
        Must divide C_in and C_out.
    layout : {"NCHW", "NHWC"}, default "NCHW"
        Axis order of x, weight and the result.
    activation : {None, "relu"}, default None
        ``"relu"`` applies max(y, 0) after the bias, as the result is stored.
    out : numpy.ndarray, optional
        Array to write the result into: exactly the result's shape and dtype,
        C-contiguous, writable, not overlapping an input.

    Returns
    -------
    numpy.ndarray
        (N, C_out, Ho, Wo) in NCHW or (N, Ho, Wo, C_out) in NHWC, with
        Ho = (H − 1)·sh − pad_top − pad_bottom + dh·(R − 1) + output_padding_h + 1
        (the same along the width); ``out`` itself when given.

    Raises
    ------
    TypeError
        An operand is not a float32/float64 array, the dtypes differ, or a hyperparameter
        has the wrong type.
    ValueError
        A bad hyperparameter or shape (output_padding not smaller than stride or dilation,
        channels not divisible by groups, bias not (C_out,), an output size below 1, an
        unusable ``out``); the message names the argument.
    MemoryError
        The sizes overflow 64-bit arithmetic or the buffers cannot be allocated.

    See Also
    --------
    conv_transpose2d_backward : Its three gradients.
    ConvTranspose2d : The layer object.

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> x = np.ones((1, 1, 2, 2))
    >>> w = np.ones((1, 1, 3, 3))
    >>> convcore.conv_transpose2d(x, w, stride=2, padding=1)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> convcore.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1).shape
    (1, 1, 4, 4)
    """
    x = _check_input(x, "x")
    weight = _check_weight(weight, x, "x")
    act = check_activation(activation)
    prob, _ = _cached(_TProblem, x.shape, weight.shape,
                      (stride, padding, output_padding, dilation, groups, layout,
                       _dtype_name(x)), True)
    b = None
    if bias is not None:
        bias = check_array(bias, "bias")
        check_same_dtype(x, "x", bias, "bias")
        if bias.shape != (prob.out_channels,):
            raise ValueError(f"bias must have shape ({prob.out_channels},) (one per output "
                             f"channel), got {bias.shape}")
        b = as_buffer(bias, "bias")
    inputs = [x, weight] + ([bias] if bias is not None else [])
    y = output_array(out, prob.user_shape(prob.y_shape), x.dtype, inputs)
    prob.plan.forward(as_buffer(x, "x"), as_buffer(weight, "weight"), b, y, act == "relu")
    return y


def conv_transpose2d_backward(grad_output: NDArray[FloatT], x: NDArray[FloatT],
                              weight: NDArray[FloatT], *, stride: IntPair = 1,
                              padding: Any = 0, output_padding: IntPair = 0,
                              dilation: IntPair = 1, groups: int = 1, layout: Layout = "NCHW",
                              bias: bool = True) -> Conv2dGrads:
    """All three gradients of :func:`conv_transpose2d` in one call.

    The input gradient is the ordinary convolution (:func:`conv2d`) of grad_output with the
    same weights and hyperparameters; the weight gradient sums every position's and image's
    contribution into the shared filters; the bias gradient sums grad_output per output
    channel. A fused ReLU is not part of this: pass grad_output already masked, as
    :class:`ConvTranspose2d` does.

    Parameters
    ----------
    grad_output : array, shape (N, C_out, Ho, Wo) in NCHW or (N, Ho, Wo, C_out) in NHWC
        Gradient of the loss with respect to the output; 3-D for one image.
    x : array, shape (N, C_in, H, W) in NCHW or (N, H, W, C_in) in NHWC
        The forward pass's input, of grad_output's dtype.
    weight : array, shape (C_in, C_out/groups, R, S) in NCHW or (C_in, R, S, C_out/groups) in NHWC
        The forward pass's filters.
    stride, padding, output_padding, dilation, groups, layout
        The forward pass's hyperparameters, as for :func:`conv_transpose2d`.
    bias : bool, default True
        Whether to compute the bias gradient (None in the result otherwise).

    Returns
    -------
    Conv2dGrads
        ``(input, weight, bias)``: arrays of x's, weight's and (C_out,) shape.

    Raises
    ------
    TypeError
        An operand is not a float32/float64 array, the dtypes differ, ``bias`` is not a
        bool, or a hyperparameter has the wrong type.
    ValueError
        A bad hyperparameter or shape; grad_output is not the forward pass's output shape.
    MemoryError
        The sizes overflow or the buffers cannot be allocated.

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> x = np.ones((1, 1, 2, 2))
    >>> w = np.ones((1, 1, 3, 3))
    >>> g = convcore.conv_transpose2d_backward(np.ones((1, 1, 3, 3)), x, w, stride=2,
    ...                                        padding=1)
    >>> g.input[0, 0]        # how many outputs each input value reached
    array([[4., 4.],
           [4., 4.]])
    >>> g.bias
    array([9.])
    """
    x = _check_input(x, "x")
    weight = _check_weight(weight, x, "x")
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False (whether to return its gradient), "
                        f"got {type(bias).__name__}")
    prob, _ = _cached(_TProblem, x.shape, weight.shape,
                      (stride, padding, output_padding, dilation, groups, layout,
                       _dtype_name(x)), True)
    dy = _check_dy(grad_output, prob, x, "x")
    dx = new_array(x.shape, x.dtype, "grad_input")
    dw = new_array(weight.shape, x.dtype, "grad_weight")
    prob.plan.backward_data(dy, as_buffer(weight, "weight"), dx)
    prob.plan.backward_weight(dy, as_buffer(x, "x"), dw)
    db = None
    if bias:
        db = new_array((prob.out_channels,), x.dtype, "grad_bias")
        prob.plan.backward_bias(dy, db)
    return Conv2dGrads(dx, dw, db)


def conv_transpose2d_output_shape(input_shape: Sequence[int], weight_shape: Sequence[int], *,
                                  stride: IntPair = 1, padding: Any = 0,
                                  output_padding: IntPair = 0, dilation: IntPair = 1,
                                  groups: int = 1, layout: Layout = "NCHW") -> Tuple[int, ...]:
    """The shape :func:`conv_transpose2d` would return, without computing it.

    Parameters
    ----------
    input_shape : sequence of int
        x's shape, (N, C_in, H, W) / (N, H, W, C_in), or 3-D for one image.
    weight_shape : sequence of int
        (C_in, C_out/groups, R, S) in NCHW or (C_in, R, S, C_out/groups) in NHWC.
    stride, padding, output_padding, dilation, groups, layout
        As for :func:`conv_transpose2d`.

    Returns
    -------
    tuple of int
        The output shape (3-D for a 3-D input_shape).

    Raises
    ------
    TypeError
        A shape or hyperparameter of the wrong type.
    ValueError
        A bad hyperparameter or shape, or an output size below 1; the message names the
        argument.

    Examples
    --------
    >>> import convcore
    >>> convcore.conv_transpose2d_output_shape((8, 64, 56, 56), (64, 32, 3, 3), stride=2,
    ...                                        padding=1, output_padding=1)
    (8, 32, 112, 112)
    """
    prob = _TProblem(input_shape, weight_shape, stride, padding, output_padding, dilation,
                     groups, layout)
    return prob.user_shape(prob.y_shape)


def _algorithms(input_shape: Sequence[int], weight_shape: Sequence[int], *, stride: Any = 1,
                padding: Any = 0, output_padding: Any = 0, dilation: Any = 1, groups: int = 1,
                layout: str = "NCHW", dtype: str = "float32") -> Dict[str, Any]:
    """Which implementation the core runs for each pass (diagnostics/tests)."""
    prob = _TProblem(input_shape, weight_shape, stride, padding, output_padding, dilation,
                     groups, layout, dtype)
    return dict(prob.plan.algorithms)


def _implementations(input_shape: Sequence[int], weight_shape: Sequence[int], *,
                     stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     dilation: Any = 1, groups: int = 1, layout: str = "NCHW",
                     dtype: str = "float32") -> Dict[str, Any]:
    """Every implementation of each pass, judged for this problem (diagnostics/tests)."""
    prob = _TProblem(input_shape, weight_shape, stride, padding, output_padding, dilation,
                     groups, layout, dtype)
    return dict(prob.plan.implementations())


class ConvTranspose2d(_Layer):
    """A transposed convolution layer that trains, like PyTorch's ConvTranspose2d.

    The adjoint of a :class:`Conv2d`, upsampling by the stride (:func:`conv_transpose2d`).

    ``forward(x)`` keeps what ``backward`` needs; ``backward(grad_y)`` returns the input
    gradient and *adds* the weight and bias gradients to ``grad_weight`` and
    ``grad_bias``, as PyTorch does. The training API is Conv2d's: ``zero_grad()``,
    ``parameters()`` / ``named_parameters()``, ``state_dict()`` / ``load_state_dict()``,
    ``requires_input_grad``.

    Parameters
    ----------
    in_channels, out_channels : int
        C_in and C_out.
    kernel_size, stride, dilation : int or pair
        As for :func:`convcore.conv_transpose2d`.
    padding : int, pair or 4-tuple, default 0
        Rows/columns removed from each border of the full output.
    output_padding : int or pair, default 0
        Rows/columns added at the bottom/right; smaller than the stride or the dilation.
    groups : int, default 1
        Must divide C_in and C_out.
    bias : bool, default True
        Whether the layer has a bias (``bias`` is None otherwise).
    layout : {"NCHW", "NHWC"}, default "NCHW"
        Input/output layout; the weight is (C_in, C_out/groups, R, S) in NCHW and
        (C_in, R, S, C_out/groups) in NHWC.
    dtype : {"float32", "float64"}, default "float32"
    rng : None, int or numpy.random.Generator, default None
        Source of the initial weights (an int is a seed; None draws fresh entropy).
    requires_input_grad : bool, default True
        False skips the input gradient: ``backward`` then returns None.
    init : {"pytorch", "he"}, default "pytorch"
        ``"pytorch"``: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with PyTorch's
        fan_in for this layer, (C_out/groups)·R·S. ``"he"``: N(0, 2/fan_in) weights and
        zero biases.

    Attributes
    ----------
    weight, bias : numpy.ndarray
        The parameters (``bias`` is None without a bias).
    grad_weight, grad_bias : numpy.ndarray or None
        Accumulated gradients. None after construction and after ``zero_grad()``; the
        first ``backward`` then stores its gradients, each later one adds to them (in
        place) until the next ``zero_grad()``.
    num_params : int
        C_in·(C_out/groups)·R·S weights (+ C_out biases).

    Raises
    ------
    TypeError
        A hyperparameter of the wrong type (``kernel_size=2.5``).
    ValueError
        A bad hyperparameter (channels not divisible by groups, output_padding not smaller
        than stride or dilation, unknown layout/dtype/init); the message names it.

    Notes
    -----
    Every hyperparameter is checked by the constructor. ``forward(x)`` keeps its own copy
    of x; the input gradient is computed with the weights that forward used. Weights are
    prepacked per input shape and repacked when they change, as for Conv2d (see its notes:
    an optimiser may update the arrays from ``parameters()`` in place once the layer is
    training; otherwise assign ``layer.weight`` or call ``layer.weight_changed()``).

    Examples
    --------
    >>> layer = ConvTranspose2d(8, 4, 4, stride=2, padding=1, rng=0)
    >>> x = np.ones((2, 8, 5, 5), np.float32)
    >>> layer.forward(x).shape
    (2, 4, 10, 10)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: Any = 0, output_padding: IntPair = 0,
                 dilation: IntPair = 1, groups: int = 1, bias: bool = True,
                 layout: Layout = "NCHW", dtype: DTypeLike = "float32", rng: RngLike = None,
                 requires_input_grad: bool = True, init: Init = "pytorch") -> None:
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not is_int(v):
                raise TypeError(f"{name} must be an int, got {v!r}")
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        self.padding = padding
        self.pads = _padding(padding)
        self.output_padding = _output_padding(output_padding, self.stride, self.dilation)
        self.groups = check_groups(groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={self.groups} must divide in_channels="
                             f"{self.in_channels} and out_channels={self.out_channels}")
        self.layout = check_layout(layout)
        self.dtype = _check_dtype(dtype)
        self.requires_input_grad = _check_requires_input_grad(requires_input_grad)
        self.init = _check_init(init)
        r, s = self.kernel_size
        kg = self.out_channels // self.groups
        c = self.in_channels
        shape = (c, kg, r, s) if self.layout == "NCHW" else (c, r, s, kg)
        self.num_params = c * kg * r * s + (self.out_channels if bias else 0)
        w0, b0 = _initial_params(_rng(rng), self.init, kg * r * s, shape,
                                 (self.out_channels,) if bias else None)
        self._init_state(w0, b0)

    weight = property(_Layer.weight.fget, _Layer.weight.fset, doc=(  # type: ignore[attr-defined]
        """The filters: (C_in, C_out/groups, R, S) in NCHW, (C_in, R, S, C_out/groups) in
        NHWC.

        Assigning it (same shape and dtype, else ValueError) makes the next forward
        repack; the layer then uses the assigned array itself (copied only when it is not
        C-contiguous and aligned)."""))

    def _kw(self) -> Dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, dilation=self.dilation,
                    groups=self.groups, layout=self.layout)

    def _new_problem(self, x_shape: Tuple[int, ...]) -> _TProblem:
        return _TProblem(x_shape, self._weight.shape, self.stride, self.padding,
                         self.output_padding, self.dilation, self.groups, self.layout,
                         _dtype_name(self._weight))

    def _checked_grad_output(self, grad_y: np.ndarray, prob: _TProblem,
                             x: np.ndarray) -> np.ndarray:
        return _check_dy(grad_y, prob, x, "x")

    def output_shape(self, input_shape: Any) -> Tuple[int, ...]:
        """The shape ``forward`` returns for an input of a given shape.

        Parameters
        ----------
        input_shape : sequence of int
            (N, C_in, H, W) in NCHW or (N, H, W, C_in) in NHWC (3-D for one image).

        Returns
        -------
        tuple of int
            The output shape, as :func:`conv_transpose2d_output_shape` gives it.
        """
        return conv_transpose2d_output_shape(input_shape, self.weight.shape, **self._kw())

    def forward(self, x: FloatArray) -> FloatArray:
        """Apply the layer to a batch (bias fused) and keep what ``backward`` needs.

        Parameters
        ----------
        x : numpy.ndarray
            (N, C_in, H, W) in NCHW or (N, H, W, C_in) in NHWC (or one image without N),
            of the layer's dtype (TypeError otherwise). Copied: later edits to ``x`` do
            not affect ``backward``.

        Returns
        -------
        numpy.ndarray
            The output, (N, C_out, Ho, Wo) or (N, Ho, Wo, C_out).
        """
        return self._forward(x)

    __call__ = forward

    def backward(self, grad_y: FloatArray) -> Optional[FloatArray]:
        """Gradients for the last ``forward()``.

        Parameters
        ----------
        grad_y : numpy.ndarray
            Gradient of the loss with respect to that forward's output (its shape, the
            layer's dtype).

        Returns
        -------
        numpy.ndarray or None
            The gradient with respect to that forward's input, computed with the weights
            that forward used; None when ``requires_input_grad`` is False.

        Notes
        -----
        Adds the weight and bias gradients to ``grad_weight`` / ``grad_bias`` (the first
        ``backward()`` after construction or ``zero_grad()`` stores them). Raises
        LayerStateError (a ValueError) when ``forward()`` was never called.
        """
        return self._backward(grad_y)

    def __repr__(self) -> str:
        return (f"ConvTranspose2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, output_padding={self.output_padding}, "
                f"dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, layout={self.layout!r}, dtype={self.dtype.name}"
                + ("" if self.requires_input_grad else ", requires_input_grad=False")
                + ("" if self.init == "pytorch" else f", init={self.init!r}") + ")")
