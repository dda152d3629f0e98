"""The CS231n assignment's convolution API, computed by convcore.

A NumPy ConvNet written against the assignment's ``layers.py`` / ``fast_layers.py`` /
``layer_utils.py`` switches with one import::

    from convcore.cs231n import (conv_forward_fast, conv_backward_fast,
                                 conv_relu_forward, conv_relu_backward)

Same names, same arguments, same shapes and the same semantics as the assignment:

* ``x`` (N, C, H, W), ``w`` (F, C, HH, WW), ``b`` (F,),
  ``conv_param = {'stride': s, 'pad': p}`` (symmetric zero padding of ``p`` on every side);
* ``out`` (N, F, H', W') with ``H' = 1 + (H + 2*pad - HH) // stride`` (likewise W');
* forward functions return ``(out, cache)``, backward functions take ``(dout, cache)`` and
  return ``(dx, dw, db)``.

Decisions (documented in each function too):

* **Sizes that do not divide.** The assignment's output-size formula is only defined when
  the stride divides ``H + 2*pad - HH``. Here the default is the floor in the formula above
  (``shape_rule='crop'``: the last rows/columns that no window reaches are ignored and get
  zero gradient), which is what the assignment's fast layers and PyTorch do. Put
  ``'shape_rule': 'strict'`` in ``conv_param`` to get the assignment's assertion as a
  :class:`convcore.ShapeError` (with the arithmetic and the fixes), or ``'pad'`` to zero-pad
  the bottom/right just enough.
* **"naive" is a name, not loops.** ``conv_forward_naive`` / ``conv_backward_naive`` run the
  same library path as the ``_fast`` functions (``convcore.conv2d`` and
  ``convcore.conv2d_backward``): a model that calls the naive names gets the fast code.
  Caches are interchangeable between the naive and the fast functions. convcore's test
  suite checks this path against direct loops written in the tests.
* **dtypes.** float64 (what the assignment uses) and float32 are computed in that dtype.
  Mixed inputs are promoted as NumPy would (float32 weights with float64 data compute in
  float64); integer and bool arrays compute in float64, float16 in float32.
* **conv_relu_forward** runs the convolution with the ReLU fused into it. Its cache is
  ``(conv_cache, relu_cache)`` like the assignment's layer_utils, except that ``relu_cache``
  holds the ReLU's output rather than its input: ``out > 0`` exactly where the input was
  ``> 0``, so the backward pass is the same.
* **Caches** are opaque to callers, as in the assignment: pass the one the forward returned.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._args import check_shape_rule, pair
from ._conv import conv2d, conv2d_backward, conv2d_output_shape
from ._types import Activation

__all__ = ["conv_forward_naive", "conv_backward_naive", "conv_forward_fast",
           "conv_backward_fast", "conv_relu_forward", "conv_relu_backward"]

_KEYS = ("stride", "pad", "shape_rule")

# (dx, dw, db): db is None for b=None.
_Grads = Tuple[NDArray[Any], NDArray[Any], Optional[NDArray[Any]]]


class _ConvCache(tuple):  # type: ignore[type-arg]
    """(x, w, b, conv_param) as the assignment's naive layer keeps them, plus the resolved
    hyperparameters; a tuple so that code unpacking ``x, w, b, conv_param = cache[:4]``
    keeps working."""

    __slots__ = ()


def _conv_param(conv_param: Any) -> Dict[str, Any]:
    """The conv2d keywords for a conv_param dict, with errors naming the key."""
    if not isinstance(conv_param, Mapping):
        raise TypeError("conv_param must be a dict {'stride': s, 'pad': p}, got "
                        f"{type(conv_param).__name__}")
    missing = [k for k in ("stride", "pad") if k not in conv_param]
    if missing:
        raise ValueError(f"conv_param is missing {' and '.join(repr(k) for k in missing)}: "
                         f"expected {{'stride': s, 'pad': p}}, got {dict(conv_param)!r}")
    unknown = [k for k in conv_param if k not in _KEYS]
    if unknown:
        raise ValueError(f"conv_param has unknown key(s) {', '.join(repr(k) for k in unknown)}"
                         f": the keys are 'stride', 'pad' and optionally 'shape_rule'")
    stride = pair(conv_param["stride"], "conv_param['stride']", 1)
    pad = pair(conv_param["pad"], "conv_param['pad']", 0)
    rule = conv_param.get("shape_rule", "crop")
    try:
        rule = check_shape_rule(rule)
    except ValueError as e:
        raise ValueError(f"conv_param['shape_rule']: {e}") from None
    return dict(stride=stride, padding=pad, shape_rule=rule)


def _compute_dtype(*arrays: Optional[np.ndarray]) -> np.dtype[Any]:
    dt = np.result_type(*[a for a in arrays if a is not None])
    if dt in (np.float32, np.float64):
        return np.dtype(dt)
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(f"x, w and b must be real numbers (float32 or float64 preferred), "
                    f"got dtype {dt}")


def _as_array(a: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}: {e}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    return arr


def _check_operands(x: Any, w: Any, b: Any) -> Tuple[np.ndarray, np.ndarray,
                                                        Optional[np.ndarray]]:
    x = _as_array(x, "x")
    w = _as_array(w, "w")
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got {x.ndim}-D with shape {x.shape}")
    if w.ndim != 4:
        raise ValueError(f"w must be 4-D (F, C, HH, WW), got {w.ndim}-D with shape {w.shape}")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"w has shape {w.shape}: its C = {w.shape[1]} must equal the "
                         f"channels of x, {x.shape[1]} (x has shape {x.shape})")
    if b is not None:
        b = _as_array(b, "b")
        if b.shape != (w.shape[0],):
            raise ValueError(f"b must have shape ({w.shape[0]},) (one bias per filter of w), "
                             f"got {b.shape}")
    dt = _compute_dtype(x, w, b)
    x, w = x.astype(dt, copy=False), w.astype(dt, copy=False)
    if b is not None:
        b = b.astype(dt, copy=False)
    return x, w, b


def _forward(x: Any, w: Any, b: Any, conv_param: Any,
             activation: Activation) -> Tuple[NDArray[Any], _ConvCache]:
    kw = _conv_param(conv_param)
    x, w, b = _check_operands(x, w, b)
    out = conv2d(x, w, b, activation=activation, **kw)
    return out, _ConvCache((x, w, b, conv_param, kw))


def _backward(dout: Any, cache: Any, name: str = "cache") -> _Grads:
    if not isinstance(cache, _ConvCache):
        raise TypeError(f"{name} must be the cache returned by a convcore.cs231n conv forward "
                        f"function, got {type(cache).__name__}")
    x, w, b, _, kw = cache
    dout = _as_array(dout, "dout")
    expected = tuple(conv2d_output_shape(x.shape, w.shape, **kw))
    if dout.shape != expected:
        raise ValueError(f"dout has shape {dout.shape}, expected {expected} (the output of "
                         "the forward call that returned this cache)")
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    g = conv2d_backward(dout, x, w, bias=b is not None, **kw)
    return g.input, g.weight, g.bias


def conv_forward_naive(x: ArrayLike, w: ArrayLike, b: Optional[ArrayLike],
                       conv_param: Mapping[str, Any]) -> Tuple[NDArray[Any], Tuple[Any, ...]]:
    """The assignment's ``conv_forward_naive``: the forward pass of a convolutional layer.

    Despite the name this is convcore's fast path, the same as :func:`conv_forward_fast`
    (convcore's tests check it against direct loops); its cache works with either
    backward function.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
        Input data: N images of C channels.
    w : ndarray, shape (F, C, HH, WW)
        F filters.
    b : ndarray, shape (F,), or None
        One bias per filter.
    conv_param : dict
        ``'stride'``: pixels between adjacent receptive fields (int or (sh, sw));
        ``'pad'``: zeros added on each side of the input (int or (ph, pw));
        optionally ``'shape_rule'``: ``'crop'`` (default: the floor in the output-size
        formula), ``'strict'`` (raise when the stride does not divide) or ``'pad'``.

    Returns
    -------
    out : ndarray, shape (N, F, H', W')
        ``H' = 1 + (H + 2*pad - HH) // stride``, ``W' = 1 + (W + 2*pad - WW) // stride``;
        the dtype of x, w, b promoted (float64 for the assignment's data).
    cache : tuple
        ``(x, w, b, conv_param, ...)``, for :func:`conv_backward_naive`.

    Raises
    ------
    ValueError
        conv_param lacks 'stride' or 'pad' or has an unknown key; x or w is not 4-D; the
        channels of x and w differ; b is not (F,).
    TypeError
        conv_param is not a dict, a hyperparameter is not an int, or an array is not real.
    convcore.ShapeError
        The filter is larger than the padded input, or (with 'shape_rule': 'strict') the
        stride does not divide.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.cs231n import conv_forward_naive, conv_backward_naive
    >>> x = np.linspace(-0.1, 0.5, num=2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    >>> w = np.linspace(-0.2, 0.3, num=3 * 3 * 4 * 4).reshape(3, 3, 4, 4)
    >>> b = np.linspace(-0.1, 0.2, num=3)
    >>> out, cache = conv_forward_naive(x, w, b, {'stride': 2, 'pad': 1})
    >>> out.shape
    (2, 3, 2, 2)
    >>> dx, dw, db = conv_backward_naive(np.ones_like(out), cache)
    """
    return _forward(x, w, b, conv_param, None)


def conv_backward_naive(dout: ArrayLike, cache: Tuple[Any, ...]) -> _Grads:
    """The assignment's ``conv_backward_naive``: the backward pass of a convolutional layer.

    Despite the name this is convcore's fast path, the same as :func:`conv_backward_fast`.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H', W')
        Upstream derivatives.
    cache : tuple
        What :func:`conv_forward_naive` or :func:`conv_forward_fast` returned with the
        output.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
        Gradient with respect to x (zero for the rows/columns a 'crop' ignored).
    dw : ndarray, shape (F, C, HH, WW)
        Gradient with respect to w, summed over every position and image.
    db : ndarray, shape (F,), or None
        Gradient with respect to b (None when the forward had ``b=None``).

    Raises
    ------
    TypeError
        cache is not a cache from this module's forward functions.
    ValueError
        dout does not have the shape of the forward's output.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.cs231n import conv_forward_naive, conv_backward_naive
    >>> x = np.ones((1, 1, 3, 3)); w = np.ones((1, 1, 2, 2)); b = np.zeros(1)
    >>> out, cache = conv_forward_naive(x, w, b, {'stride': 1, 'pad': 0})
    >>> dx, dw, db = conv_backward_naive(np.ones_like(out), cache)
    >>> dx[0, 0]            # how many 2x2 windows cover each pixel
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> db
    array([4.])
    """
    return _backward(dout, cache)


def conv_forward_fast(x: ArrayLike, w: ArrayLike, b: Optional[ArrayLike],
                      conv_param: Mapping[str, Any]) -> Tuple[NDArray[Any], Tuple[Any, ...]]:
    """The assignment's ``conv_forward_fast``: ``convcore.conv2d`` with its arguments.

    Everything else is as :func:`conv_forward_naive` (the same path).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
        Input data.
    w : ndarray, shape (F, C, HH, WW)
        F filters.
    b : ndarray, shape (F,), or None
        One bias per filter.
    conv_param : dict
        ``{'stride': s, 'pad': p}`` and optionally ``'shape_rule'``, as for
        :func:`conv_forward_naive`.

    Returns
    -------
    out : ndarray, shape (N, F, H', W')
        ``H' = 1 + (H + 2*pad - HH) // stride``, likewise W'.
    cache : tuple
        For :func:`conv_backward_fast` (or :func:`conv_backward_naive`).

    Raises
    ------
    ValueError, TypeError, convcore.ShapeError
        As :func:`conv_forward_naive`.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.cs231n import conv_forward_fast, conv_backward_fast
    >>> rng = np.random.default_rng(0)
    >>> x, w, b = rng.standard_normal((5, 3, 32, 32)), rng.standard_normal((16, 3, 3, 3)), np.zeros(16)
    >>> out, cache = conv_forward_fast(x, w, b, {'stride': 1, 'pad': 1})
    >>> out.shape, out.dtype
    ((5, 16, 32, 32), dtype('float64'))
    >>> dx, dw, db = conv_backward_fast(rng.standard_normal(out.shape), cache)
    """
    return _forward(x, w, b, conv_param, None)


def conv_backward_fast(dout: ArrayLike, cache: Tuple[Any, ...]) -> _Grads:
    """The assignment's ``conv_backward_fast``: ``convcore.conv2d_backward`` with its arguments.

    Everything else is as :func:`conv_backward_naive` (the same path).

    Parameters
    ----------
    dout : ndarray, shape (N, F, H', W')
        Upstream derivatives.
    cache : tuple
        What :func:`conv_forward_fast` (or :func:`conv_forward_naive`) returned.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
        Gradient with respect to x.
    dw : ndarray, shape (F, C, HH, WW)
        Gradient with respect to w.
    db : ndarray, shape (F,), or None
        Gradient with respect to b (None when the forward had ``b=None``).

    Raises
    ------
    TypeError
        cache is not a cache from this module's forward functions.
    ValueError
        dout does not have the shape of the forward's output.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.cs231n import conv_forward_fast, conv_backward_fast
    >>> x = np.ones((2, 3, 6, 6)); w = np.ones((4, 3, 3, 3)); b = np.zeros(4)
    >>> out, cache = conv_forward_fast(x, w, b, {'stride': 2, 'pad': 1})
    >>> out.shape                   # 1 + (6 + 2 - 3) // 2 = 3
    (2, 4, 3, 3)
    >>> dx, dw, db = conv_backward_fast(np.ones_like(out), cache)
    >>> dx.shape, dw.shape, db.shape
    ((2, 3, 6, 6), (4, 3, 3, 3), (4,))
    """
    return _backward(dout, cache)


def conv_relu_forward(x: ArrayLike, w: ArrayLike, b: Optional[ArrayLike],
                      conv_param: Mapping[str, Any]) -> Tuple[NDArray[Any], Tuple[Any, ...]]:
    """The assignment's ``conv_relu_forward`` (layer_utils): a convolution, then a ReLU.

    Here the ReLU is fused into the convolution.

    Parameters
    ----------
    x, w, b, conv_param
        As :func:`conv_forward_naive`.

    Returns
    -------
    out : ndarray, shape (N, F, H', W')
        ``max(conv(x, w, b), 0)`` (NaN stays NaN, as ``np.maximum`` does).
    cache : tuple
        ``(conv_cache, relu_cache)``; relu_cache is the output (see the module notes).

    Raises
    ------
    As :func:`conv_forward_naive`.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.cs231n import conv_relu_forward, conv_relu_backward
    >>> rng = np.random.default_rng(0)
    >>> x, w, b = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3)), np.zeros(4)
    >>> out, cache = conv_relu_forward(x, w, b, {'stride': 1, 'pad': 1})
    >>> bool((out >= 0).all())
    True
    >>> dx, dw, db = conv_relu_backward(np.ones_like(out), cache)
    """
    out, conv_cache = _forward(x, w, b, conv_param, "relu")
    return out, (conv_cache, out)


def conv_relu_backward(dout: ArrayLike, cache: Tuple[Any, ...]) -> _Grads:
    """The assignment's ``conv_relu_backward`` (layer_utils).

    The backward pass of :func:`conv_relu_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H', W')
        Upstream derivatives.
    cache : tuple
        ``(conv_cache, relu_cache)`` as :func:`conv_relu_forward` returned it.

    Returns
    -------
    dx, dw, db
        As :func:`conv_backward_naive`; dout is passed where the ReLU's input was > 0.

    Raises
    ------
    TypeError
        cache is not what conv_relu_forward returned.
    ValueError
        dout does not have the shape of the forward's output.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.cs231n import conv_relu_forward, conv_relu_backward
    >>> x = np.array([[[[1., -1.], [2., -2.]]]]); w = np.ones((1, 1, 1, 1)); b = np.zeros(1)
    >>> out, cache = conv_relu_forward(x, w, b, {'stride': 1, 'pad': 0})
    >>> dx, dw, db = conv_relu_backward(np.ones_like(out), cache)
    >>> dx[0, 0]            # the gradient passes where the ReLU's input was > 0
    array([[1., 0.],
           [1., 0.]])
    """
    if not (isinstance(cache, tuple) and len(cache) == 2 and isinstance(cache[0], _ConvCache)
            and isinstance(cache[1], np.ndarray)):
        raise TypeError("cache must be the (conv_cache, relu_cache) pair returned by "
                        f"convcore.cs231n.conv_relu_forward, got {type(cache).__name__}")
    conv_cache, out = cache
    dout = _as_array(dout, "dout")
    if dout.shape != out.shape:
        raise ValueError(f"dout has shape {dout.shape}, expected {out.shape} (the output of "
                         "the forward call that returned this cache)")
    da = np.where(out > 0, dout, 0).astype(out.dtype, copy=False)
    return _backward(da, conv_cache, "cache[0]")
