"""conv2d and its backward passes: argument checks, buffers, and calls into the core."""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import (Any, Callable, Dict, Iterator, NamedTuple, Optional, Sequence, Tuple,
                    TypeVar, cast)

import numpy as np
from numpy.typing import NDArray

from . import _core
from ._args import (as_buffer, check_activation, check_algorithm, check_array, check_groups,
                    check_layout, check_same_dtype, check_shape_rule, core_algorithm, is_int,
                    new_array, output_array, padding4, pair, shape_tuple)
from ._types import (Activation, Algorithm, AnyArray, DTypeName, FloatT, IntPair, Layout,
                     Padding, ShapeRule)

ShapeError = _core.ShapeError
ShapeError.__doc__ = """The filter windows do not fit the input under the shape rule in force.

A subclass of ValueError raised by :func:`conv2d`, its backward passes,
:func:`conv2d_output_shape`, the locally-connected functions and the layers, when
``(H - F + P)`` is not a multiple of the stride under ``shape_rule="strict"`` (the default),
or when a (dilated) filter is larger than the padded input under any rule. The message
shows the arithmetic, e.g. ``(224 - 11 + 0)/4 + 1 = 54.25``, and the fixes: the padding or
input size that would fit, ``shape_rule="crop"`` or ``"pad"``.

Examples
--------
>>> import numpy as np
>>> import convcore
>>> x = np.zeros((1, 3, 224, 224), np.float32)
>>> w = np.zeros((96, 3, 11, 11), np.float32)
>>> try:
...     convcore.conv2d(x, w, stride=4)
... except convcore.ShapeError as e:
...     print(str(e).split(" (shape_rule")[0])
output height is not an integer: (H − F + P)/S + 1 = (224 − 11 + 0)/4 + 1 = 54.25
>>> issubclass(convcore.ShapeError, ValueError)
True
"""


class Conv2dGrads(NamedTuple):
    """The three gradients of a convolution: input, weight and bias.

    Returned by :func:`conv2d_backward` and :func:`locally_connected2d_backward`. A named
    tuple: unpack it (``dx, dw, db = grads``) or read the fields.

    Attributes
    ----------
    input : numpy.ndarray
        Gradient of the loss with respect to the input x (x's shape).
    weight : numpy.ndarray
        Gradient with respect to the weight (the weight's shape).
    bias : numpy.ndarray or None
        Gradient with respect to the bias; None when the backward call had ``bias=False``.

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> x = np.ones((2, 3, 5, 5)); w = np.ones((4, 3, 3, 3))
    >>> g = convcore.conv2d_backward(np.ones((2, 4, 3, 3)), x, w)
    >>> g.input.shape, g.weight.shape, g.bias.shape
    ((2, 3, 5, 5), (4, 3, 3, 3), (4,))
    >>> dx, dw, db = g
    """
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
        self._groups, self._dtype = groups, dtype   # for band()'s sub-problem
        # band()'s answer, once computed (never under forced test implementations)
        self._band: Optional[Tuple["_Problem", Tuple[slice, slice]]] = None
        self._band_known = bool(_FORCED)

    def band(self) -> Optional[Tuple["_Problem", Tuple[slice, slice]]]:
        """The same convolution restricted to the output rows and columns whose windows
        reach the image, with the padding cut to match, and those rows/columns as slices
        of the output; None when every row and column does (the usual case).

        The backward-data and weight-gradient passes take their products over real input
        pixels only, so outputs whose whole window lies in the padding add nothing to dx
        or dw; cropping them away keeps a huge padding (1e8 rows, say) from costing a
        copy and a GEMM over outputs that contribute nothing. The bias gradient still
        sums every output. In the forward pass those outputs are the empty sum's
        epilogue (0 + bias, then the activation). Not used while test hooks force
        implementations (they target the problem as given)."""
        if self._band_known:
            return self._band
        ho, wo = self.plan.out_h, self.plan.out_w
        nchw = self.layout == "NCHW"
        h, w = self.x_shape[2:] if nchw else self.x_shape[1:3]
        r, s = self.w_shape[2:] if nchw else self.w_shape[1:3]
        axes = [_axis_band(ho, h, r, self.stride[0], self.dilation[0], self.pads[0]),
                _axis_band(wo, w, s, self.stride[1], self.dilation[1], self.pads[2])]
        band = None
        if all(b0 < b1 for b0, b1, _, _ in axes) and any(
                b1 - b0 < n for (b0, b1, _, _), n in zip(axes, (ho, wo))):
            (i0, i1, pt, pb), (j0, j1, pl, pr) = axes
            sub = _problem(self.user_shape(self.x_shape), self.w_shape, self.stride,
                           (pt, pb, pl, pr),
                           self.dilation, self._groups, self.layout, "crop", self._dtype,
                           self.algorithm)
            if (sub.plan.out_h, sub.plan.out_w) == (i1 - i0, j1 - j0):
                band = (sub, (slice(i0, i1), slice(j0, j1)))
        self._band, self._band_known = band, True
        return band

    def crop_grad_output(self, dy: np.ndarray) -> Tuple["_Problem", np.ndarray]:
        """(problem, grad_output) for the dx and dw passes: :meth:`band`'s sub-problem and
        a view of dy's band when there is one, else self and dy unchanged."""
        band = self.band()
        if band is None:
            return self, dy
        return band[0], self._in_band(dy, band[1])

    def _in_band(self, a: np.ndarray, band: Tuple[slice, slice]) -> np.ndarray:
        rows, cols = band
        return a[..., rows, cols] if self.layout == "NCHW" else a[..., rows, cols, :]

    def forward_by_band(self, x: np.ndarray, w: Optional[np.ndarray], bias: Optional[np.ndarray],
                        y: np.ndarray, relu: bool) -> bool:
        """The forward pass into y through :meth:`band` when at least half the outputs
        lie wholly in the padding: the band's outputs computed into a buffer of their own
        and copied in, the rest set to the empty sum's epilogue. False (nothing written)
        when there is no such band; the caller runs the whole problem."""
        band = self.band()
        if band is None:
            return False
        sub, rows_cols = band
        ho, wo = self.plan.out_h, self.plan.out_w
        if 2 * sub.plan.out_h * sub.plan.out_w > ho * wo:
            return False   # mostly band: the copy would cost more than the padding's outputs
        yb = new_array(sub.user_shape(sub.y_shape), y.dtype, "the output")
        sub.plan.forward(x, w, bias, yb, relu)
        # What every executor stores for an empty sum: 0 + bias, then ReLU (NaN stays NaN).
        empty = np.zeros(self.out_channels, y.dtype)
        if bias is not None:
            empty += bias
        if relu:
            empty = np.maximum(empty, 0, dtype=y.dtype)
        y[...] = empty[:, None, None] if self.layout == "NCHW" else empty
        self._in_band(y, rows_cols)[...] = yb
        return True

    def user_shape(self, shape4: Tuple[int, ...]) -> Tuple[int, ...]:
        return shape4 if self.batched else shape4[1:]


def _axis_band(n_out: int, size: int, taps: int, stride: int, dilation: int,
               pad_lo: int) -> Tuple[int, int, int, int]:
    """Along one axis: the outputs [o0, o1) whose windows reach the input (or a few more at
    the start, so the new leading padding stays >= 0), and the padding (lo, hi) that gives
    exactly those outputs under shape_rule="crop"."""
    span = (taps - 1) * dilation + 1
    # Output o's window covers input rows o*stride - pad_lo ... o*stride - pad_lo + span - 1.
    o0 = min(max(0, -(-(pad_lo - span + 1) // stride)), pad_lo // stride)
    o1 = min(n_out, (size - 1 + pad_lo) // stride + 1)
    lo = pad_lo - o0 * stride
    hi = max(0, (o1 - o0 - 1) * stride + span - size - lo)
    return o0, o1, lo, hi


# Functional calls (conv2d and its gradients, conv_transpose2d, locally_connected2d) reuse
# the primitive of a recent identical problem, so validation and planning are paid once per
# problem, not per call (a primitive's execution is const and thread-safe). The key
# (_cached) holds the problem class, every argument with its type (stride=1.0 must still be
# refused, not hit stride=1's entry), the dtype, the active ISA and the forced test
# implementations; unhashable arguments bypass the cache. Layers never take their problems
# from here: they prepack their own weights into them.
_CACHE: "OrderedDict[Any, Any]" = OrderedDict()
_CACHE_SIZE = 64
_CACHE_LOCK = threading.Lock()


def _freeze(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return (type(v), tuple(_freeze(e) for e in v))
    return (type(v), v)


_FLAT = (int, str, type(None))


def _key_of(args: Tuple[Any, ...]) -> Any:
    """The cache key of an argument tuple: the values with their types. Plain ints,
    strings, None and flat tuples (the usual shapes and hyperparameters) take a fast path;
    anything else goes through _freeze."""
    parts = []
    for v in args:
        t = type(v)
        if t is tuple:
            types = tuple(map(type, v))
            parts.append(_freeze(v) if tuple in types or list in types else (t, v, types))
        elif t in _FLAT:
            parts.append((t, v))
        else:
            parts.append(_freeze(v))
    return tuple(parts)


# The last problem found or made through _problem's fast key, after its arguments:
# (input_shape, weight_shape, stride, padding, dilation, groups, layout, shape_rule, dtype,
# algorithm, isa, problem). A call that passes the very same hyperparameter objects, equal
# shapes and the same ISA gets it without building the key: the same object has the same
# type and value, so the key would be the same. (A call site passes the same objects each
# time: small ints and literal strings are shared, a literal tuple is a constant. The fast
# key admits no list, whose value could change in place.)
_LAST: Optional[Tuple[Any, ...]] = None

_INT_TYPES = {n: (int,) * n for n in (3, 4)}


def _is_int_tuple(shape: Any) -> bool:
    """Whether a shape given by the caller is a 3- or 4-tuple of plain ints, as an array's
    ``.shape`` is (a list, NumPy integers or floats take _key_of's walk)."""
    return type(shape) is tuple and _INT_TYPES.get(len(shape)) == tuple(map(type, shape))


def _problem(input_shape: Sequence[int], weight_shape: Sequence[int], stride: Any,
             padding: Any, dilation: Any, groups: Any, layout: Any, shape_rule: Any,
             dtype: str = "float32", algorithm: Any = None, *,
             array_shapes: bool = False) -> _Problem:
    """_Problem(...), from the cache when an identical one was made recently.

    ``array_shapes=True`` says both shapes are tuples of plain ints (as an array's
    ``.shape`` is): with every hyperparameter a plain value or a flat tuple, the key is the
    values, their types and the tuples' element types, without _key_of's walk."""
    last = _LAST
    if (array_shapes and last is not None and last[2] is stride and last[3] is padding
            and last[4] is dilation and last[5] is groups and last[6] is layout
            and last[7] is shape_rule and last[8] is dtype and last[9] is algorithm
            and last[0] == input_shape and last[1] == weight_shape and not _FORCED
            and last[10] == _core.get_isa()):
        return cast(_Problem, last[11])
    hyper = (stride, padding, dilation, groups, layout, shape_rule, dtype, algorithm)
    prob, isa = _cached(_Problem, input_shape, weight_shape, hyper, array_shapes)
    if isa is not None:
        _set_last((input_shape, weight_shape) + hyper + (isa, prob))
    return prob


_P = TypeVar("_P")


def _cached(factory: Callable[..., _P], input_shape: Any, weight_shape: Any,
            hyper: Tuple[Any, ...], array_shapes: bool) -> Tuple[_P, Optional[str]]:
    """factory(input_shape, weight_shape, *hyper), from the cache when an identical one was
    made recently (the problem objects of conv2d, conv_transpose2d and
    locally_connected2d share it: the key holds the factory). Also returns the ISA of the
    key when it was the fast one (see _problem), else None."""
    types = tuple(map(type, hyper))
    inner: Any = ()
    if tuple in types:   # (sh, sw) pairs and padding tuples: their elements' types too
        inner = tuple([tuple(map(type, v)) if type(v) is tuple else () for v in hyper])
        if any(tuple in t or list in t for t in inner):
            inner = None
    isa = _core.get_isa()
    forced = tuple(sorted(_FORCED.items())) if _FORCED else ()
    fast = array_shapes and inner is not None and list not in types
    if fast:
        key: Any = (factory, input_shape, weight_shape, hyper, types, inner, isa, forced)
    else:   # (a different length: the two kinds of key never meet)
        key = (factory, _key_of((input_shape, weight_shape) + hyper), isa, forced)
    try:
        # Read without the lock: get and move_to_end are single operations under the GIL;
        # an entry another thread evicts in between is simply not moved.
        prob = _CACHE.get(key)
    except TypeError:   # an unhashable argument
        return factory(input_shape, weight_shape, *hyper), None
    if prob is not None:
        try:
            _CACHE.move_to_end(key)
        except KeyError:
            pass
    else:
        prob = factory(input_shape, weight_shape, *hyper)
        with _CACHE_LOCK:
            _CACHE[key] = prob
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return prob, isa if fast and not forced else None


def _set_last(entry: Optional[Tuple[Any, ...]]) -> None:
    global _LAST
    _LAST = entry   # one assignment: a thread reads the old entry or the new, whole


def _clear_cache() -> None:
    """Forget every cached problem (tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _set_last(None)


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
    """2-D convolution (cross-correlation) with an optional fused bias and ReLU.

    As in every deep-learning framework, the filters are not flipped. K filters of R×S×(C/groups) weights slide over the zero-padded input; each output value
    is one filter's dot product with one window, plus that filter's bias. In NCHW::

        y[n, k, i, j] = bias[k] + sum_{c, r, s} weight[k, c, r, s]
                        * xpad[n, g*C/groups + c, i*sh + r*dh, j*sw + s*dw]

    with g = k // (K/groups). Each output size is ``(H - F + P)/stride + 1`` where
    ``F = dilation*(R - 1) + 1`` and P is the total padding of that axis (the CS231n notes'
    (W - F + 2P)/S + 1 with symmetric padding).

    Parameters
    ----------
    x : array, shape (N, C, H, W) in NCHW or (N, H, W, C) in NHWC
        The input batch, float32 or float64: a numpy.ndarray or any CPU array that speaks
        DLPack or the buffer protocol (read without a copy where the layout allows). A 3-D
        array, (C, H, W) or (H, W, C), is one image and gives a 3-D result.
    weight : array, shape (K, C/groups, R, S) in NCHW or (K, R, S, C/groups) in NHWC
        The K filters, of x's dtype.
    bias : array, shape (K,), optional
        One bias per filter, of x's dtype; None (default) adds nothing.
    stride : int or (int, int), default 1
        Step between adjacent windows, (sh, sw); >= 1.
    padding : int, (int, int), (int, int, int, int), "valid" or "same", default 0
        Zeros around the input: p on every side, (ph, pw), or (top, bottom, left, right).
        ``"valid"`` is 0; ``"same"`` (stride 1 only) keeps H×W, an odd total putting the
        extra row/column at the bottom/right.
    dilation : int or (int, int), default 1
        Spacing between filter taps, (dh, dw); >= 1.
    groups : int, default 1
        Channels are split into this many groups convolved separately; C and K must be
        multiples of it (groups = C = K is a depthwise convolution).
    layout : {"NCHW", "NHWC"}, default "NCHW"
        Axis order of x, weight and the result.
    shape_rule : {"strict", "crop", "pad"}, default "strict"
        When ``H - F + P`` is not a multiple of the stride: ``"strict"`` raises
        :class:`ShapeError` showing the arithmetic and the fixes; ``"crop"`` drops the last
        rows/columns no window reaches (PyTorch, Caffe); ``"pad"`` zero-pads the
        bottom/right just enough.
    activation : {None, "relu"}, default None
        ``"relu"`` applies max(y, 0) as the result is stored (NaN stays NaN).
    algorithm : {None, "winograd"}, default None
        None computes exactly (direct/GEMM: every output is the sum of its taps' products).
        ``"winograd"`` computes 3×3, stride-1, dilation-1 layers (any padding, groups,
        both layouts and dtypes) by Winograd F(4×4, 3×3): about 4× fewer multiplications
        at a small loss of accuracy — measured on the layer suite's 3×3 layers with N(0, 1)
        data, the largest error relative to the largest output is about 1e-5 in float32
        (exact float32: about 3e-7) and 2e-14 in float64; tests bound it by 1e-4 and
        1e-12. Non-finite inputs give the exact result (tiles whose outputs are not all
        finite are recomputed by the definition). Other layers raise ValueError naming the
        rule. The weights are transformed per call; a :class:`Conv2d` layer with
        ``algorithm="winograd"`` transforms them once.
    out : numpy.ndarray, optional
        Array to write the result into: exactly the result's shape and dtype,
        C-contiguous, writable, not overlapping an input.

    Returns
    -------
    numpy.ndarray
        (N, K, Ho, Wo) in NCHW or (N, Ho, Wo, K) in NHWC (without N for a 3-D x), of x's
        dtype; ``out`` itself when given.

    Raises
    ------
    ShapeError
        The windows do not fit: the stride does not divide ``H - F + P`` under
        ``shape_rule="strict"``, or the filter is larger than the padded input.
    TypeError
        An operand is not an array, not float32/float64, or the dtypes differ (``out``
        included); a hyperparameter or shape of the wrong type (``stride=1.5``).
    ValueError
        A bad hyperparameter (stride, padding, dilation, groups, layout, shape_rule,
        activation) or shape: x not 3-D/4-D, weight not 4-D, channels that do not match
        ``groups``, bias not (K,), an unusable ``out``. The message names the argument.
    MemoryError
        The sizes overflow 64-bit arithmetic or the buffers cannot be allocated.

    See Also
    --------
    conv2d_backward : All three gradients.
    conv2d_output_shape : The result's shape without computing it.
    Conv2d : The layer object (prepacked weights, accumulated gradients).

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 3, 3), np.float32)          # a 3x3 box filter
    >>> convcore.conv2d(x, w)[0, 0]
    array([[45., 54.],
           [81., 90.]], dtype=float32)
    >>> convcore.conv2d(x, w, padding="same").shape
    (1, 1, 4, 4)
    >>> convcore.conv2d(x, w, np.array([-50], np.float32), activation="relu")[0, 0]
    array([[ 0.,  4.],
           [31., 40.]], dtype=float32)
    >>> convcore.conv2d(x, w, stride=2, shape_rule="crop").shape   # (4 - 3)/2 + 1 = 1.5
    (1, 1, 1, 1)
    """
    x = _check_input(x, "x")
    weight = _check_weight(weight, x, "x")
    act = check_activation(activation)
    prob = _problem(x.shape, weight.shape, stride, padding, dilation, groups, layout, shape_rule,
                    _dtype_name(x), algorithm, array_shapes=True)
    b = None
    if bias is not None:
        bias = check_array(bias, "bias")
        check_same_dtype(x, "x", bias, "bias")
        if bias.shape != (prob.out_channels,):
            raise ValueError(f"bias must have shape ({prob.out_channels},) (one per filter), "
                             f"got {bias.shape}")
        b = as_buffer(bias, "bias")
    y_shape = prob.user_shape(prob.y_shape)
    if out is None:
        y = new_array(y_shape, x.dtype, "the output")
    else:
        y = output_array(out, y_shape, x.dtype,
                         [x, weight] + ([bias] if bias is not None else []))
    xb, wb, relu = as_buffer(x, "x"), as_buffer(weight, "weight"), act == "relu"
    if not prob.forward_by_band(xb, wb, b, y, relu):
        prob.plan.forward(xb, wb, b, y, relu)
    return y


def conv2d_backward_input(grad_output: NDArray[FloatT], weight: NDArray[FloatT],
                          input_shape: Sequence[int], *, stride: IntPair = 1,
                          padding: Padding = 0, dilation: IntPair = 1, groups: int = 1,
                          layout: Layout = "NCHW", shape_rule: ShapeRule = "strict",
                          algorithm: Algorithm = None) -> NDArray[FloatT]:
    """Gradient of the loss with respect to a convolution's input.

    The backward-data pass of :func:`conv2d`: ``dx`` is the transposed convolution of
    ``grad_output`` with the filters (each input value gets the gradient of every output it
    took part in; padding and rows a ``"crop"`` dropped get nothing).

    Parameters
    ----------
    grad_output : array, shape (N, K, Ho, Wo) in NCHW or (N, Ho, Wo, K) in NHWC
        Gradient of the loss with respect to the convolution's output (float32 or
        float64); 3-D for one image.
    weight : array, shape (K, C/groups, R, S) in NCHW or (K, R, S, C/groups) in NHWC
        The filters the forward pass used, of grad_output's dtype.
    input_shape : sequence of int
        Shape of the forward pass's input x, (N, C, H, W) / (N, H, W, C) or 3-D.
    stride, padding, dilation, groups, layout, shape_rule
        The forward pass's hyperparameters, as for :func:`conv2d`.
    algorithm : {None, "winograd"}, default None
        Checked as for :func:`conv2d`; the backward passes always compute exactly,
        whatever the forward pass used.

    Returns
    -------
    numpy.ndarray
        dx, of shape ``input_shape`` and grad_output's dtype.

    Raises
    ------
    ShapeError
        The convolution described does not fit (as for :func:`conv2d`).
    TypeError
        An operand is not a float32/float64 array, or the dtypes differ; a
        hyperparameter or shape of the wrong type (``stride=1.5``, a float in a shape).
    ValueError
        A bad hyperparameter or shape; grad_output is not the output shape of this
        convolution.
    MemoryError
        The sizes overflow or the buffers cannot be allocated.

    See Also
    --------
    conv2d_backward : All three gradients in one call.

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> w = np.ones((1, 1, 3, 3))
    >>> dx = convcore.conv2d_backward_input(np.ones((1, 1, 2, 2)), w, (1, 1, 4, 4))
    >>> dx[0, 0]            # how many 3x3 windows cover each input pixel
    array([[1., 2., 2., 1.],
           [2., 4., 4., 2.],
           [2., 4., 4., 2.],
           [1., 2., 2., 1.]])
    """
    dy = check_array(grad_output, "grad_output")
    weight = _check_weight(weight, dy, "grad_output")
    prob = _problem(input_shape, weight.shape, stride, padding, dilation, groups, layout,
                    shape_rule, _dtype_name(dy), algorithm,
                    array_shapes=_is_int_tuple(input_shape))
    dy = _check_grad_output(dy, prob, dy, "grad_output")
    dx = new_array(prob.user_shape(prob.x_shape), dy.dtype, "grad_input")
    prob, dy = prob.crop_grad_output(dy)
    prob.plan.backward_data(as_buffer(dy, "grad_output"), as_buffer(weight, "weight"), dx)
    return dx


def conv2d_backward_weight(grad_output: NDArray[FloatT], x: NDArray[FloatT],
                           weight_shape: Sequence[int], *, stride: IntPair = 1,
                           padding: Padding = 0, dilation: IntPair = 1, groups: int = 1,
                           layout: Layout = "NCHW", shape_rule: ShapeRule = "strict",
                           algorithm: Algorithm = None) -> NDArray[FloatT]:
    """Gradient of the loss with respect to a convolution's weight.

    The backward-weight pass of :func:`conv2d`: because every output position shares the
    filter, its gradient is the sum over every position and image of the output gradient
    times the input window there.

    Parameters
    ----------
    grad_output : array, shape (N, K, Ho, Wo) in NCHW or (N, Ho, Wo, K) in NHWC
        Gradient of the loss with respect to the convolution's output, of x's dtype.
    x : array, shape (N, C, H, W) in NCHW or (N, H, W, C) in NHWC
        The forward pass's input (float32 or float64); 3-D for one image.
    weight_shape : sequence of int
        Shape of the weight, (K, C/groups, R, S) in NCHW or (K, R, S, C/groups) in NHWC.
    stride, padding, dilation, groups, layout, shape_rule
        The forward pass's hyperparameters, as for :func:`conv2d`.
    algorithm : {None, "winograd"}, default None
        Checked as for :func:`conv2d`; the backward passes always compute exactly,
        whatever the forward pass used.

    Returns
    -------
    numpy.ndarray
        dw, of shape ``weight_shape`` and x's dtype.

    Raises
    ------
    ShapeError
        The convolution described does not fit (as for :func:`conv2d`).
    TypeError
        An operand is not a float32/float64 array, or the dtypes differ; a
        hyperparameter or shape of the wrong type (``stride=1.5``, a float in a shape).
    ValueError
        A bad hyperparameter or shape; grad_output is not the output shape of this
        convolution.
    MemoryError
        The sizes overflow or the buffers cannot be allocated.

    See Also
    --------
    conv2d_backward : All three gradients in one call.

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> dw = convcore.conv2d_backward_weight(np.ones((1, 1, 2, 2)), x, (1, 1, 3, 3))
    >>> dw[0, 0]            # each tap summed over the 2x2 output positions
    array([[10., 14., 18.],
           [26., 30., 34.],
           [42., 46., 50.]])
    """
    x = _check_input(x, "x")
    prob = _problem(x.shape, weight_shape, stride, padding, dilation, groups, layout,
                    shape_rule, _dtype_name(x), algorithm,
                    array_shapes=_is_int_tuple(weight_shape))
    dy = _check_grad_output(grad_output, prob, x, "x")
    dw = new_array(prob.w_shape, x.dtype, "grad_weight")
    prob, dy = prob.crop_grad_output(dy)
    prob.plan.backward_weight(as_buffer(dy, "grad_output"), as_buffer(x, "x"), dw)
    return dw


def _bias_grad(prob: _Problem, dy: np.ndarray) -> np.ndarray:
    db = new_array((prob.out_channels,), dy.dtype, "grad_bias")
    prob.plan.backward_bias(dy, db)
    return db


def _bias_grad_of_view(prob: _Problem, dy: np.ndarray) -> np.ndarray:
    """The bias gradient of a grad_output that may be a huge strided or broadcast view
    (the band-cropped passes never copy it): summed in float64 as the core sums, an axis
    broadcast along (stride 0) counted by a multiplication instead of a pass over it, so a
    grad_output of 10^8 broadcast rows costs one row's sum, not a 10^8-row copy."""
    channel_axis = (1 if prob.layout == "NCHW" else 3) - (0 if prob.batched else 1)
    scale = 1.0
    index = []
    for axis, (size, stride) in enumerate(zip(dy.shape, dy.strides)):
        collapse = stride == 0 and axis != channel_axis and size > 1
        scale *= size if collapse else 1
        index.append(slice(0, 1) if collapse else slice(None))
    view = dy[tuple(index)]
    sums = view.sum(axis=tuple(a for a in range(view.ndim) if a != channel_axis),
                    dtype=np.float64)
    db = new_array((prob.out_channels,), dy.dtype, "grad_bias")
    np.multiply(sums, scale, out=db, casting="same_kind")
    return db


def conv2d_backward(grad_output: NDArray[FloatT], x: NDArray[FloatT],
                    weight: NDArray[FloatT], *, stride: IntPair = 1, padding: Padding = 0,
                    dilation: IntPair = 1, groups: int = 1, layout: Layout = "NCHW",
                    shape_rule: ShapeRule = "strict", bias: bool = True,
                    algorithm: Algorithm = None) -> Conv2dGrads:
    """All three gradients of :func:`conv2d` in one call.

    The forward's fused ReLU is not part of this: pass the output gradient already
    masked (``np.where(y > 0, dy, 0)``), as :class:`Conv2d` does for you.

    Parameters
    ----------
    grad_output : array, shape (N, K, Ho, Wo) in NCHW or (N, Ho, Wo, K) in NHWC
        Gradient of the loss with respect to the convolution's output, of x's dtype.
    x : array, shape (N, C, H, W) in NCHW or (N, H, W, C) in NHWC
        The forward pass's input (float32 or float64); 3-D for one image.
    weight : array, shape (K, C/groups, R, S) in NCHW or (K, R, S, C/groups) in NHWC
        The forward pass's filters, of x's dtype.
    stride, padding, dilation, groups, layout, shape_rule
        The forward pass's hyperparameters, as for :func:`conv2d`.
    algorithm : {None, "winograd"}, default None
        Checked as for :func:`conv2d`; the backward passes always compute exactly,
        whatever the forward pass used.
    bias : bool, default True
        Whether to compute the bias gradient (the sum of grad_output over every axis but
        the channels); False leaves ``Conv2dGrads.bias`` None.

    Returns
    -------
    Conv2dGrads
        ``(input, weight, bias)``: dx (x's shape), dw (weight's shape) and db, shape (K,),
        or None when ``bias=False``; all of x's dtype.

    Raises
    ------
    ShapeError
        The convolution described does not fit (as for :func:`conv2d`).
    TypeError
        An operand is not a float32/float64 array, the dtypes differ, ``bias`` is not a
        bool, or a hyperparameter is of the wrong type (``stride=1.5``).
    ValueError
        A bad hyperparameter or shape; grad_output is not the output shape of this
        convolution.
    MemoryError
        The sizes overflow or the buffers cannot be allocated.

    See Also
    --------
    conv2d_backward_input, conv2d_backward_weight : One gradient each.

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 3, 8, 8)); w = rng.standard_normal((4, 3, 3, 3))
    >>> y = convcore.conv2d(x, w, padding=1)
    >>> dx, dw, db = convcore.conv2d_backward(np.ones_like(y), x, w, padding=1)
    >>> dx.shape, dw.shape, db.shape
    ((2, 3, 8, 8), (4, 3, 3, 3), (4,))
    >>> db                  # 2 images x 8 x 8 positions per filter
    array([128., 128., 128., 128.])
    """
    x = _check_input(x, "x")
    weight = _check_weight(weight, x, "x")
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False (whether to return its gradient), "
                        f"got {type(bias).__name__}")
    prob = _problem(x.shape, weight.shape, stride, padding, dilation, groups, layout,
                    shape_rule, _dtype_name(x), algorithm, array_shapes=True)
    dy = _check_grad_output(grad_output, prob, x, "x")
    xb, wb = as_buffer(x, "x"), as_buffer(weight, "weight")
    dx = new_array(x.shape, x.dtype, "grad_input")
    dw = new_array(weight.shape, x.dtype, "grad_weight")
    sub, dy_band = prob.crop_grad_output(dy)
    dy_band = as_buffer(dy_band, "grad_output")
    sub.plan.backward_data(dy_band, wb, dx)
    sub.plan.backward_weight(dy_band, xb, dw)
    if bias:   # every output, the band's or not
        db = _bias_grad(prob, dy_band) if sub is prob else _bias_grad_of_view(prob, dy)
    else:
        db = None
    return Conv2dGrads(dx, dw, db)


def conv2d_output_shape(input_shape: Sequence[int], weight_shape: Sequence[int], *,
                        stride: IntPair = 1, padding: Padding = 0, dilation: IntPair = 1,
                        groups: int = 1, layout: Layout = "NCHW",
                        shape_rule: ShapeRule = "strict") -> Tuple[int, ...]:
    """The shape of :func:`conv2d`'s result, without computing anything.

    Parameters
    ----------
    input_shape : sequence of int
        Shape of x: (N, C, H, W) in NCHW, (N, H, W, C) in NHWC, or 3-D for one image.
    weight_shape : sequence of int
        Shape of the weight: (K, C/groups, R, S) in NCHW, (K, R, S, C/groups) in NHWC.
    stride, padding, dilation, groups, layout, shape_rule
        As for :func:`conv2d`.

    Returns
    -------
    tuple of int
        (N, K, Ho, Wo) in NCHW or (N, Ho, Wo, K) in NHWC (3-D for a 3-D input_shape).

    Raises
    ------
    ShapeError
        The windows do not fit the input under ``shape_rule`` (the message shows the
        arithmetic and the fixes).
    TypeError
        A hyperparameter or shape of the wrong type (``stride=1.5``, a float in a
        shape).
    ValueError
        A bad hyperparameter or shape (wrong number of axes, channels that do not match
        ``groups``, sizes < 1).

    Examples
    --------
    >>> import convcore
    >>> convcore.conv2d_output_shape((8, 3, 227, 227), (96, 3, 11, 11), stride=4)
    (8, 96, 55, 55)
    >>> convcore.conv2d_output_shape((8, 3, 224, 224), (96, 3, 11, 11), stride=4,
    ...                              shape_rule="pad")
    (8, 96, 55, 55)
    >>> convcore.conv2d_output_shape((11, 11, 4), (2, 5, 5, 4), stride=2, layout="NHWC")
    (4, 4, 2)
    """
    prob = _problem(input_shape, weight_shape, stride, padding, dilation, groups, layout,
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
    """The number of learnable parameters of a conv layer.

    K·(C/groups)·R·S weights plus K biases. Parameter sharing is what keeps this small: the count does not depend on the input
    size (compare :func:`locally_connected2d_num_params`).

    Parameters
    ----------
    in_channels : int
        C, >= 1.
    out_channels : int
        K, the number of filters, >= 1.
    kernel_size : int or (int, int)
        R×S (an int is square).
    groups : int, default 1
        Channel groups; must divide C and K.
    bias : bool, default True
        Whether to count the K biases.

    Returns
    -------
    int
        The count, a Python int (exact for any size: NumPy integers are converted first,
        so nothing wraps around).

    Raises
    ------
    TypeError
        A size is not an int, or ``bias`` is not a bool.
    ValueError
        A size < 1, or groups does not divide C and K.

    Examples
    --------
    >>> import convcore
    >>> convcore.conv2d_num_params(3, 96, 11)       # AlexNet conv1: 96*11*11*3 + 96
    34944
    >>> convcore.conv2d_num_params(64, 64, 3, groups=64, bias=False)   # depthwise 3x3
    576
    """
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
