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

from typing import Any, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

from . import _core
from ._args import (as_buffer, check_array, check_layout, check_same_dtype, check_shape_rule,
                    is_int, new_array, output_array, padding4, pair, shape_tuple)
from ._conv import _FORCED, Conv2dGrads, _cached, _check_input, _dtype_name, _is_int_tuple
from .layers import (_Layer, _check_dtype, _check_init, _check_requires_input_grad,
                     _initial_params, _rng)
from ._types import (DTypeLike, FloatArray, FloatT, Init, IntPair, Layout, Padding, RngLike,
                     ShapeRule)

_KIND = "locally_connected2d"


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
    return weight  # type: ignore[no-any-return]


def _problem_for(x_shape: Tuple[int, ...], weight: np.ndarray, stride: Any, padding: Any,
                 layout: str, shape_rule: str, dtype: str, cached: bool = False) -> _LCProblem:
    """The problem of x_shape and this weight; ``cached=True`` (the functional calls, which
    pass the weights with every call) takes it from the problem cache, a layer (which
    prepacks its weights into it) gets its own."""
    k, c, r, s = _kernel_of(weight.shape, layout)
    if min(weight.shape) < 1:
        raise ValueError(f"weight must not have empty axes, got shape {weight.shape}")
    hyper = ((r, s), stride, padding, layout, shape_rule, dtype)
    if cached:
        prob, _ = _cached(_LCProblem, x_shape, k, hyper, _is_int_tuple(x_shape))
    else:
        prob = _LCProblem(x_shape, k, *hyper)
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
    return as_buffer(bias, "bias")


def _check_dy(dy: Any, prob: _LCProblem, ref: np.ndarray, ref_name: str) -> np.ndarray:
    dy = check_array(dy, "grad_output")
    check_same_dtype(ref, ref_name, dy, "grad_output")
    expected = prob.user_shape(prob.y_shape)
    if dy.shape != expected:
        raise ValueError(f"grad_output has shape {dy.shape}, expected {expected} "
                         "(the output shape of this locally-connected layer)")
    return as_buffer(dy, "grad_output")


def locally_connected2d(x: NDArray[FloatT], weight: NDArray[FloatT],
                        bias: Optional[NDArray[FloatT]] = None,
                        *, stride: IntPair = 1, padding: Padding = 0, layout: Layout = "NCHW",
                        shape_rule: ShapeRule = "strict",
                        out: Optional[NDArray[FloatT]] = None) -> NDArray[FloatT]:
    """The forward pass of a locally-connected layer: a convolution without weight sharing.

    Every output position (i, j) has its own K filters. In NCHW::

        y[n, k, i, j] = bias[k, i, j] + sum_{c, r, s} weight[i, j, k, c, r, s]
                        * xpad[n, c, i*sh + r, j*sw + s]

    The output size follows :func:`conv2d`'s rule, (H - R + P)/stride + 1; there are no
    groups and no dilation.

    Parameters
    ----------
    x : array, shape (N, C, H, W) in NCHW or (N, H, W, C) in NHWC
        The input batch, float32 or float64 (any CPU array with DLPack or the buffer
        protocol is read as for :func:`conv2d`). A 3-D array is one image and gives a 3-D
        result.
    weight : array, shape (Ho, Wo, K, C, R, S) in NCHW or (Ho, Wo, K, R, S, C) in NHWC
        One set of K filters per output position, of x's dtype; (Ho, Wo) must be the
        output size that x, the stride and the padding give.
    bias : array, shape (K, Ho, Wo) in NCHW or (Ho, Wo, K) in NHWC, optional
        One bias per filter and position; None (default) adds nothing.
    stride : int or (int, int), default 1
        Step between adjacent windows.
    padding : int, (int, int), (int, int, int, int), "valid" or "same", default 0
        As for :func:`conv2d` (``"same"`` needs stride 1).
    layout : {"NCHW", "NHWC"}, default "NCHW"
        Axis order of x, weight, bias and the result.
    shape_rule : {"strict", "crop", "pad"}, default "strict"
        What to do when the stride does not divide, as for :func:`conv2d`.
    out : numpy.ndarray, optional
        Array to write the result into (exact shape and dtype, C-contiguous, writable,
        not overlapping an input).

    Returns
    -------
    numpy.ndarray
        (N, K, Ho, Wo) in NCHW or (N, Ho, Wo, K) in NHWC (3-D for a 3-D x), of x's dtype;
        ``out`` itself when given.

    Raises
    ------
    ShapeError
        The windows do not fit the input under ``shape_rule``.
    TypeError
        An operand is not a float32/float64 array, or the dtypes differ (``out``
        included); a hyperparameter of the wrong type (``stride=1.5``).
    ValueError
        A bad hyperparameter or shape: weight not 6-D or not the shape x implies (the
        message spells out the expected one), bias of the wrong shape, an unusable out.
    MemoryError
        The sizes overflow or the buffers cannot be allocated.

    See Also
    --------
    LocallyConnected2d : The layer object.
    locally_connected2d_backward : All three gradients.

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> x = np.ones((2, 3, 5, 5))
    >>> w = np.zeros((3, 3, 4, 3, 3, 3))          # 3x3 positions, each 4 filters of 3x3x3
    >>> w[0, 0] = 1.0                              # only position (0, 0) sums its window
    >>> y = convcore.locally_connected2d(x, w)
    >>> y.shape
    (2, 4, 3, 3)
    >>> y[0, 0]
    array([[27.,  0.,  0.],
           [ 0.,  0.,  0.],
           [ 0.,  0.,  0.]])
    """
    x = _check_input(x, "x")
    weight = _check_weight6(weight, x, "x", layout)
    prob = _problem_for(x.shape, weight, stride, padding, layout, shape_rule, _dtype_name(x),
                        cached=True)
    b = _check_bias(bias, prob, x, "x") if bias is not None else None
    inputs = [x, weight] + ([bias] if bias is not None else [])
    y = output_array(out, prob.user_shape(prob.y_shape), x.dtype, inputs)
    prob.plan.forward(as_buffer(x, "x"), as_buffer(weight, "weight"), b, y, False)
    return y


def locally_connected2d_backward(grad_output: NDArray[FloatT], x: NDArray[FloatT],
                                 weight: NDArray[FloatT], *, stride: IntPair = 1,
                                 padding: Padding = 0, layout: Layout = "NCHW",
                                 shape_rule: ShapeRule = "strict",
                                 bias: bool = True) -> Conv2dGrads:
    """All three gradients of :func:`locally_connected2d`.

    Without parameter sharing the weight and bias gradients sum over the batch only, each
    position keeping its own.

    Parameters
    ----------
    grad_output : array, shape (N, K, Ho, Wo) in NCHW or (N, Ho, Wo, K) in NHWC
        Gradient of the loss with respect to the layer's output, of x's dtype.
    x : array, shape (N, C, H, W) in NCHW or (N, H, W, C) in NHWC
        The forward pass's input (float32 or float64); 3-D for one image.
    weight : array, shape (Ho, Wo, K, C, R, S) in NCHW or (Ho, Wo, K, R, S, C) in NHWC
        The forward pass's weights.
    stride, padding, layout, shape_rule
        The forward pass's hyperparameters, as for :func:`locally_connected2d`.
    bias : bool, default True
        Whether to compute the bias gradient; False leaves ``Conv2dGrads.bias`` None.

    Returns
    -------
    Conv2dGrads
        ``(input, weight, bias)``: dx (x's shape), dw (weight's shape) and db, shape
        (K, Ho, Wo) in NCHW or (Ho, Wo, K) in NHWC, or None when ``bias=False``.

    Raises
    ------
    ShapeError
        The windows do not fit the input under ``shape_rule``.
    TypeError
        An operand is not a float32/float64 array, the dtypes differ, ``bias`` is not a
        bool, or a hyperparameter is of the wrong type (``stride=1.5``).
    ValueError
        A bad hyperparameter or shape; grad_output is not the output shape.
    MemoryError
        The sizes overflow or the buffers cannot be allocated.

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> x = np.ones((2, 3, 5, 5)); w = np.ones((3, 3, 4, 3, 3, 3))
    >>> dx, dw, db = convcore.locally_connected2d_backward(np.ones((2, 4, 3, 3)), x, w)
    >>> dx.shape, dw.shape, db.shape
    ((2, 3, 5, 5), (3, 3, 4, 3, 3, 3), (4, 3, 3))
    >>> float(db[0, 0, 0])          # summed over the batch of 2 only
    2.0
    """
    x = _check_input(x, "x")
    weight = _check_weight6(weight, x, "x", layout)
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False (whether to return its gradient), "
                        f"got {type(bias).__name__}")
    prob = _problem_for(x.shape, weight, stride, padding, layout, shape_rule, _dtype_name(x),
                        cached=True)
    dy = _check_dy(grad_output, prob, x, "x")
    dx = new_array(x.shape, x.dtype, "grad_input")
    dw = new_array(weight.shape, x.dtype, "grad_weight")
    prob.plan.backward_data(dy, as_buffer(weight, "weight"), dx)
    prob.plan.backward_weight(dy, as_buffer(x, "x"), dw)
    db = None
    if bias:
        db = new_array(prob.b_shape, x.dtype, "grad_bias")
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


def locally_connected2d_num_params(input_size: IntPair, in_channels: int, out_channels: int,
                                   kernel_size: IntPair, *, stride: IntPair = 1,
                                   padding: Padding = 0, bias: bool = True,
                                   shape_rule: ShapeRule = "strict") -> int:
    """The number of learnable parameters of a locally-connected layer.

    Ho·Wo·K·(C·R·S + 1), without the + 1 when ``bias=False``: every output position has its
    own filters, so the count grows with the input (compare :func:`conv2d_num_params`).

    Parameters
    ----------
    input_size : int or (int, int)
        H, or (H, W), of the input.
    in_channels : int
        C, >= 1.
    out_channels : int
        K, filters per position, >= 1.
    kernel_size : int or (int, int)
        R×S.
    stride : int or (int, int), default 1
        Step between adjacent windows.
    padding : int, (int, int), (int, int, int, int), "valid" or "same", default 0
        As for :func:`conv2d`.
    bias : bool, default True
        Whether to count one bias per filter and position.
    shape_rule : {"strict", "crop", "pad"}, default "strict"
        How (Ho, Wo) is worked out when the stride does not divide.

    Returns
    -------
    int
        The count, an exact Python int.

    Raises
    ------
    ShapeError
        The windows do not fit the input under ``shape_rule``.
    TypeError
        A size or hyperparameter is not an int (or pair of ints), or ``bias`` is not a
        bool.
    ValueError
        A size < 1 or another bad hyperparameter.

    Examples
    --------
    >>> import convcore
    >>> convcore.locally_connected2d_num_params(227, 3, 96, 11, stride=4)  # AlexNet conv1
    105705600
    >>> 55 * 55 * 96 * (11 * 11 * 3 + 1)
    105705600
    """
    c, k = _check_channels(in_channels, out_channels)
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False, got {bias!r}")
    size = _size_pair(input_size, "input_size")
    r, s = pair(kernel_size, "kernel_size", 1)
    prob = _out_size(size, c, k, (r, s), stride, padding, shape_rule)
    ho, wo = prob.plan.out_h, prob.plan.out_w
    return int(ho) * int(wo) * k * (c * r * s + (1 if bias else 0))


class LocallyConnected2d(_Layer):
    """A locally-connected layer that trains: a conv layer without parameter sharing.

    Every output position (ho, wo) has its own K filters of C×R×S weights and its own K
    biases. ``forward(x)`` keeps what ``backward`` needs; ``backward(grad_y)`` returns the input
    gradient and *adds* the weight and bias gradients (summed over the batch only) to
    ``grad_weight`` and ``grad_bias``, as PyTorch does. The training API is Conv2d's:
    ``zero_grad()``, ``parameters()`` / ``named_parameters()``, ``state_dict()`` /
    ``load_state_dict()``, ``requires_input_grad``.

    Parameters
    ----------
    in_channels, out_channels : int
        C and K.
    kernel_size : int or pair
        R×S.
    input_size : int or pair
        H or (H, W): the input's spatial size, fixed because the weights are per position
        (the batch size is free).
    stride, padding : int or pair
        As for :func:`convcore.locally_connected2d` (``padding`` may also be a 4-tuple,
        ``"valid"`` or, with stride 1, ``"same"``).
    bias : bool, default True
        Whether the layer has a bias (``bias`` is None otherwise).
    layout : {"NCHW", "NHWC"}, default "NCHW"
        Input/output layout; the weight is (Ho, Wo, K, C, R, S) and the bias (K, Ho, Wo)
        in NCHW, (Ho, Wo, K, R, S, C) and (Ho, Wo, K) in NHWC.
    dtype : {"float32", "float64"}, default "float32"
    rng : None, int or numpy.random.Generator, default None
        Source of the initial weights (an int is a seed; None draws fresh entropy).
    requires_input_grad : bool, default True
        False skips the input gradient: ``backward`` then returns None and computes only
        the parameter gradients (the first layer of a network, whose input is data).
    init : {"pytorch", "he"}, default "pytorch"
        ``"pytorch"``: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's
        default for its conv layers. ``"he"``: He (Kaiming) normal weights,
        N(0, 2/fan_in), and zero biases. fan_in = C·R·S.

    Attributes
    ----------
    weight, bias : numpy.ndarray
        The parameters (``bias`` is None without a bias).
    grad_weight, grad_bias : numpy.ndarray or None
        Accumulated gradients. None after construction and after ``zero_grad()``; the
        first ``backward`` then stores its gradients, each later one adds to them (in
        place) until the next ``zero_grad()``.
    output_size : (int, int)
        (Ho, Wo).
    num_params : int
        Number of learnable parameters, Ho·Wo·K·(C·R·S + 1) (without the + 1 when
        bias=False).

    Raises
    ------
    TypeError
        A size or flag of the wrong type, a dtype other than float32/float64, or a bad
        ``rng``.
    ValueError
        A size < 1, an unknown layout or init, or a bad padding.
    ShapeError
        The windows do not fit ``input_size`` with this stride and padding.

    See Also
    --------
    locally_connected2d : The same computation as a function.
    Conv2d : The layer with parameter sharing.

    Notes
    -----
    ``forward(x)`` keeps its own copy of x, so later edits of x do not change the
    gradients; the input gradient is computed with the weights that forward used.
    ``backward()`` before any ``forward()`` raises LayerStateError (a ValueError).

    **Prepacked weights and optimisers**, as for Conv2d: the layer keeps a primitive per
    input shape with the weights prepacked per position. Once the layer is *training* —
    ``backward()`` or ``parameters()`` / ``named_parameters()`` has been called — every
    ``forward()`` compares the weight array with the copy it last packed (one pass over
    the weights, which here are Ho·Wo times a conv layer's and often outweigh the input)
    and repacks when they differ, so an optimiser may update the arrays from ``parameters()`` in place::

        for p, g in layer.parameters():
            p -= lr * g          # in place; the next forward() sees it

    A layer used only for inference skips that comparison: assigning ``layer.weight`` and
    ``load_state_dict()`` repack by themselves; after any other in-place edit call
    ``layer.weight_changed()``. The bias is read at every call, never prepacked.

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> layer = convcore.LocallyConnected2d(3, 4, 3, input_size=8, padding=1, rng=0)
    >>> layer.weight.shape, layer.num_params        # 8*8 positions * 4 * (27 + 1)
    ((8, 8, 4, 3, 3, 3), 7168)
    >>> x = np.ones((2, 3, 8, 8), np.float32)
    >>> for step in range(3):
    ...     layer.zero_grad()
    ...     y = layer.forward(x)
    ...     _ = layer.backward(y - 1.0)       # grad of 0.5·|y - 1|²
    ...     for p, g in layer.parameters():
    ...         p -= 0.01 * g
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 input_size: IntPair, stride: IntPair = 1, padding: Padding = 0,
                 bias: bool = True, layout: Layout = "NCHW", dtype: DTypeLike = "float32",
                 rng: RngLike = None, requires_input_grad: bool = True,
                 init: Init = "pytorch") -> None:
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
        self.dtype = _check_dtype(dtype)
        self.requires_input_grad = _check_requires_input_grad(requires_input_grad)
        self.init = _check_init(init)
        prob = _out_size(self.input_size, c, k, self.kernel_size, self.stride, padding,
                         self.shape_rule, self.layout)
        self.output_size = (prob.plan.out_h, prob.plan.out_w)
        self.num_params = locally_connected2d_num_params(
            self.input_size, c, k, self.kernel_size, stride=self.stride, padding=padding,
            bias=bool(bias))
        r, s = self.kernel_size
        w0, b0 = _initial_params(_rng(rng), self.init, c * r * s, prob.w_shape,
                                 prob.b_shape if bias else None)
        self._init_state(w0, b0)

    weight = property(_Layer.weight.fget, _Layer.weight.fset, doc=(  # type: ignore[attr-defined]
        """The per-position filters: (Ho, Wo, K, C, R, S) in NCHW, (Ho, Wo, K, R, S, C) in
        NHWC.

        Assigning it (same shape and dtype, else ValueError) makes the next forward
        repack; the layer then uses the assigned array itself (copied only when it is not
        C-contiguous and aligned)."""))

    def _new_problem(self, x_shape: Tuple[int, ...]) -> _LCProblem:
        return _problem_for(x_shape, self._weight, self.stride, self.padding, self.layout,
                            self.shape_rule, _dtype_name(self._weight))

    def _checked_grad_output(self, grad_y: np.ndarray, prob: _LCProblem,
                             x: np.ndarray) -> np.ndarray:
        return _check_dy(grad_y, prob, x, "x")

    def _check_forward_input(self, x: np.ndarray) -> None:
        hw = tuple(x.shape[-2:]) if self.layout == "NCHW" else tuple(x.shape[-3:-1])
        if hw != self.input_size:
            raise ValueError(f"x has spatial size {hw} but this layer was built for "
                             f"input_size {self.input_size} (its weights are per position)")

    def forward(self, x: FloatArray) -> FloatArray:
        """Apply the layer to a batch (bias fused) and keep what ``backward`` needs.

        Parameters
        ----------
        x : numpy.ndarray
            (N, C, H, W) in NCHW or (N, H, W, C) in NHWC (or one image without N), of the
            layer's dtype (TypeError otherwise) and spatial size ``input_size``
            (ValueError otherwise). Copied: later edits to ``x`` do not affect
            ``backward``.

        Returns
        -------
        numpy.ndarray
            The output, (N, K, Ho, Wo) in NCHW or (N, Ho, Wo, K) in NHWC.

        Raises
        ------
        TypeError
            x is not a float array of the layer's dtype.
        ValueError
            x has the wrong number of axes, channels or spatial size.
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
            that forward used; None when ``requires_input_grad`` is False (not computed).

        Raises
        ------
        LayerStateError
            ``forward()`` was never called.
        TypeError
            grad_y is not a float array of the layer's dtype.
        ValueError
            grad_y does not have the shape of the last forward's output.

        Notes
        -----
        Adds the weight and bias gradients (summed over the batch) to ``grad_weight`` /
        ``grad_bias`` (the first ``backward()`` after construction or ``zero_grad()``
        stores them).
        """
        return self._backward(grad_y)

    def __repr__(self) -> str:
        return (f"LocallyConnected2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, input_size={self.input_size}, "
                f"stride={self.stride}, padding={self.padding!r}, "
                f"bias={self.bias is not None}, layout={self.layout!r}, dtype={self.dtype.name}"
                + ("" if self.requires_input_grad else ", requires_input_grad=False")
                + ("" if self.init == "pytorch" else f", init={self.init!r}") + ")")
