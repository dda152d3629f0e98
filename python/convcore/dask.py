"""convcore over Dask arrays chunked along the batch (optional extra ``dask``:
``pip install "convcore[dask]"``, i.e. dask[array] and distributed).

``import convcore`` never imports dask; ``import convcore.dask`` does.

Every function takes a 4-D dask.array whose only chunked axis is the batch (axis 0, NCHW
or NHWC) plus NumPy weights, and returns dask arrays: nothing is computed until you call
``.compute()``, ``dask.compute(...)`` or ``da.store``. Each batch chunk is one convcore
call on a worker (``map_blocks``), so the forward pass and the input gradient equal a
single convcore call over the whole batch chunk by chunk. The weight and bias gradients
are sums over the batch: each chunk's partial sum is added to the others' in a fixed
binary tree (chunk 0 + chunk 1, chunk 2 + chunk 3, ..., then those pairs, ...), so
repeated runs — on any scheduler, any number of workers — give bitwise-equal gradients
for the same chunking (they differ from a single call's only by rounding).

Chunks along channels, height or width raise ValueError with the fix
(``x.rechunk({1: -1, 2: -1, 3: -1})``). The weights travel to each worker once, as one
graph key.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import dask
import dask.array as da
import numpy as np

from . import _conv
from . import locally_connected as _lc
from ._args import check_array
from ._conv import Conv2dGrads
from ._types import Activation, IntPair, Layout, Padding, ShapeRule

__all__ = ["conv2d", "conv2d_backward", "conv2d_backward_input", "conv2d_backward_weight",
           "locally_connected2d", "locally_connected2d_backward"]


# --- argument checks ---------------------------------------------------------------------

def _check_dask(a: Any, name: str, fn: str) -> Any:
    if not isinstance(a, da.Array):
        raise TypeError(f"convcore.dask.{fn}: {name} must be a dask.array.Array, got "
                        f"{type(a).__name__} (use convcore.{fn} for NumPy arrays, or "
                        f"dask.array.from_array)")
    if a.ndim != 4:
        raise ValueError(f"convcore.dask.{fn}: {name} must be 4-D (a batch), got {a.ndim}-D "
                         f"with shape {a.shape}")
    if any(np.isnan(n) for n in a.shape):
        raise ValueError(f"convcore.dask.{fn}: {name} has unknown chunk sizes {a.chunks}; "
                         f"call {name}.compute_chunk_sizes() first")
    if any(len(c) != 1 for c in a.chunks[1:]):
        raise ValueError(f"convcore.dask.{fn}: {name} must be chunked along the batch (axis 0) "
                         f"only, got chunks {tuple(len(c) for c in a.chunks)} along the axes "
                         f"(one chunk per axis other than 0 is needed); rechunk it with "
                         f"{name}.rechunk({{1: -1, 2: -1, 3: -1}})")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"convcore.dask.{fn}: {name} must have dtype float32 or float64, got "
                        f"{a.dtype}")
    return a


def _small(a: Any, name: str) -> np.ndarray:
    """A weight or bias: a NumPy array (or anything convcore accepts; a dask array is
    computed here, once)."""
    if isinstance(a, da.Array):
        a = a.compute()
    return check_array(a, name)


def _aligned(a: Any, ref: Any) -> Any:
    """`a` chunked along the batch as `ref` is (a no-op when it already is)."""
    return a if a.chunks[0] == ref.chunks[0] else a.rechunk({0: ref.chunks[0]})


def _check_batch(a: Any, a_name: str, ref: Any, ref_name: str, fn: str) -> None:
    if a.shape[0] != ref.shape[0]:
        raise ValueError(f"convcore.dask.{fn}: {a_name} has batch size {a.shape[0]} but "
                         f"{ref_name} has {ref.shape[0]}")


def _probe(forward: Callable[..., np.ndarray], x: Any, weight: np.ndarray,
           bias: Optional[np.ndarray], kw: dict[str, Any]) -> Tuple[int, ...]:
    """Every check convcore makes, before the graph is built: the forward call on an empty
    batch of x's image shape (computes nothing). Returns the output's per-image shape."""
    probe = np.zeros((0,) + tuple(x.shape[1:]), dtype=x.dtype)
    return tuple(forward(probe, weight, bias, **kw).shape[1:])


def _shared(a: Optional[np.ndarray]) -> Any:
    """A small array as one graph key: every task reads it, it is shipped once per
    worker."""
    return None if a is None else dask.delayed(a, pure=True)


# --- per-chunk tasks (module level: pickled to worker processes) ---------------------------

def _conv_block(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray],
                kw: dict[str, Any]) -> np.ndarray:
    return _conv.conv2d(x, weight, bias, **kw)


def _conv_dx_block(dy: np.ndarray, weight: np.ndarray, x_tail: Tuple[int, ...],
                   kw: dict[str, Any]) -> np.ndarray:
    return _conv.conv2d_backward_input(dy, weight, (dy.shape[0],) + x_tail, **kw)


def _conv_dw_block(dy: np.ndarray, x: np.ndarray, w_shape: Tuple[int, ...],
                   kw: dict[str, Any]) -> np.ndarray:
    return _conv.conv2d_backward_weight(dy, x, w_shape, **kw)


def _conv_all_block(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, kw: dict[str, Any],
                    bias: bool) -> Conv2dGrads:
    return _conv.conv2d_backward(dy, x, weight, bias=bias, **kw)


def _lc_block(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray],
              kw: dict[str, Any]) -> np.ndarray:
    return _lc.locally_connected2d(x, weight, bias, **kw)


def _lc_all_block(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, kw: dict[str, Any],
                  bias: bool) -> Conv2dGrads:
    return _lc.locally_connected2d_backward(dy, x, weight, bias=bias, **kw)


def _field(g: Conv2dGrads, i: int) -> Any:
    return g[i]


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    total: np.ndarray = np.add(a, b)
    return total


def _tree_sum(parts: List[Any]) -> Any:
    """Σ parts as a fixed binary tree of delayed additions: level by level, neighbours
    (0 + 1, 2 + 3, ...) with an odd one out carried up unchanged — the same order on every
    run and any scheduler."""
    add = dask.delayed(_add, pure=True)
    while len(parts) > 1:
        nxt = [add(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return parts[0]


def _reduced(parts: List[Any], shape: Tuple[int, ...], dtype: Any) -> Any:
    """A dask array (one chunk) of the tree sum of per-chunk partials."""
    return da.from_delayed(_tree_sum(parts), shape=shape, dtype=dtype)


def _blocks(a: Any) -> List[Any]:
    return list(a.to_delayed().ravel())


def _out_chunks(a: Any, tail: Sequence[int]) -> Tuple[Tuple[int, ...], ...]:
    return (tuple(a.chunks[0]),) + tuple((int(n),) for n in tail)


# --- conv2d ------------------------------------------------------------------------------

def conv2d(x: Any, weight: Any, bias: Any = None, *, stride: IntPair = 1,
           padding: Padding = 0, dilation: IntPair = 1, groups: int = 1,
           layout: Layout = "NCHW", shape_rule: ShapeRule = "strict",
           activation: Activation = None) -> Any:
    """convcore.conv2d over a dask array chunked along the batch: one convcore call per
    chunk (``map_blocks``).

    Parameters
    ----------
    x : dask.array.Array
        (N, C, H, W) in NCHW or (N, H, W, C) in NHWC, float32 or float64, chunked along
        axis 0 only.
    weight : numpy.ndarray
        (K, C/groups, R, S) in NCHW, (K, R, S, C/groups) in NHWC, x's dtype. A dask array
        is computed first.
    bias : numpy.ndarray, optional
        (K,).
    stride, padding, dilation, groups, layout, shape_rule, activation
        As for :func:`convcore.conv2d`.

    Returns
    -------
    dask.array.Array
        (N, K, Ho, Wo) or (N, Ho, Wo, K), chunked along the batch as x; each chunk equals
        convcore.conv2d of that chunk of x exactly.

    Raises
    ------
    TypeError
        x not a dask array, or a dtype other than float32/float64, or mixed dtypes.
    ValueError
        x not 4-D or chunked along another axis than the batch (rechunk it with
        ``x.rechunk({1: -1, 2: -1, 3: -1})``); sizes or hyperparameters that
        convcore.conv2d refuses (checked here, before anything is computed).

    Examples
    --------
    >>> import numpy as np, dask.array as da, convcore.dask
    >>> x = da.ones((8, 3, 16, 16), chunks=(2, 3, 16, 16), dtype=np.float32)
    >>> w = np.ones((4, 3, 3, 3), np.float32)
    >>> y = convcore.dask.conv2d(x, w, padding=1)
    >>> y.chunks[0], y.shape
    ((2, 2, 2, 2), (8, 4, 16, 16))
    >>> float(y[0, 0, 5, 5].compute())
    27.0
    """
    fn = "conv2d"
    x = _check_dask(x, "x", fn)
    weight = _small(weight, "weight")
    bias = None if bias is None else _small(bias, "bias")
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
              layout=layout, shape_rule=shape_rule, activation=activation)
    y_tail = _probe(_conv.conv2d, x, weight, bias, kw)
    return x.map_blocks(_conv_block, _shared(weight), _shared(bias), kw, dtype=x.dtype,
                        chunks=_out_chunks(x, y_tail),
                        meta=np.empty((0, 0, 0, 0), dtype=x.dtype))


def _conv_kw(stride: Any, padding: Any, dilation: Any, groups: Any, layout: Any,
             shape_rule: Any) -> dict[str, Any]:
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                layout=layout, shape_rule=shape_rule)


def _check_dy_shape(dy: Any, expected: Tuple[int, ...], fn: str) -> None:
    if tuple(dy.shape) != tuple(expected):
        raise ValueError(f"convcore.dask.{fn}: grad_output has shape {dy.shape}, expected "
                         f"{tuple(expected)} (the output shape of this convolution)")


def conv2d_backward_input(grad_output: Any, weight: Any, input_shape: Sequence[int], *,
                          stride: IntPair = 1, padding: Padding = 0, dilation: IntPair = 1,
                          groups: int = 1, layout: Layout = "NCHW",
                          shape_rule: ShapeRule = "strict") -> Any:
    """The input gradient of conv2d, chunk by chunk (``map_blocks``).

    Parameters
    ----------
    grad_output : dask.array.Array
        The output's gradient, chunked along the batch only.
    weight : numpy.ndarray
        The convolution's weight.
    input_shape : sequence of int
        The whole input's shape (N, ...); each chunk takes its own batch size.
    stride, padding, dilation, groups, layout, shape_rule
        As for :func:`convcore.conv2d_backward_input`.

    Returns
    -------
    dask.array.Array
        ``input_shape``, chunked along the batch as grad_output.

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d`; and a grad_output whose shape is not the convolution's output.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convcore.dask
    >>> dy = da.ones((4, 2, 6, 6), chunks=(2, 2, 6, 6))
    >>> dx = convcore.dask.conv2d_backward_input(dy, np.ones((2, 1, 3, 3)), (4, 1, 8, 8))
    >>> dx.shape, dx.chunks[0]
    ((4, 1, 8, 8), (2, 2))
    """
    fn = "conv2d_backward_input"
    dy = _check_dask(grad_output, "grad_output", fn)
    weight = _small(weight, "weight")
    kw = _conv_kw(stride, padding, dilation, groups, layout, shape_rule)
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) != 4 or input_shape[0] != dy.shape[0]:
        raise ValueError(f"convcore.dask.{fn}: input_shape must be 4-D with grad_output's "
                         f"batch size {dy.shape[0]}, got {input_shape}")
    _check_dy_shape(dy, _conv.conv2d_output_shape(input_shape, weight.shape, **kw), fn)
    return dy.map_blocks(_conv_dx_block, _shared(weight), input_shape[1:], kw, dtype=dy.dtype,
                         chunks=_out_chunks(dy, input_shape[1:]),
                         meta=np.empty((0, 0, 0, 0), dtype=dy.dtype))


def conv2d_backward_weight(grad_output: Any, x: Any, weight_shape: Sequence[int], *,
                           stride: IntPair = 1, padding: Padding = 0, dilation: IntPair = 1,
                           groups: int = 1, layout: Layout = "NCHW",
                           shape_rule: ShapeRule = "strict") -> Any:
    """The weight gradient of conv2d: one partial per batch chunk, summed in a fixed
    binary tree (repeated runs agree bitwise).

    Parameters
    ----------
    grad_output : dask.array.Array
        The output's gradient; rechunked along the batch as x when its chunks differ.
    x : dask.array.Array
        The convolution's input, chunked along the batch only.
    weight_shape : sequence of int
    stride, padding, dilation, groups, layout, shape_rule
        As for :func:`convcore.conv2d_backward_weight`.

    Returns
    -------
    dask.array.Array
        ``weight_shape``, one chunk.

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d`; a batch-size or output-shape mismatch.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convcore.dask
    >>> x = da.ones((4, 1, 8, 8), chunks=(1, 1, 8, 8))
    >>> dy = da.ones((4, 2, 6, 6), chunks=(1, 2, 6, 6))
    >>> float(convcore.dask.conv2d_backward_weight(dy, x, (2, 1, 3, 3))[0, 0, 0, 0].compute())
    144.0
    """
    fn = "conv2d_backward_weight"
    x = _check_dask(x, "x", fn)
    dy = _check_dask(grad_output, "grad_output", fn)
    _check_batch(dy, "grad_output", x, "x", fn)
    kw = _conv_kw(stride, padding, dilation, groups, layout, shape_rule)
    weight_shape = tuple(int(n) for n in weight_shape)
    _check_dy_shape(dy, _conv.conv2d_output_shape(x.shape, weight_shape, **kw), fn)
    dy = _aligned(dy, x)
    task = dask.delayed(_conv_dw_block, pure=True)
    parts = [task(d, xb, weight_shape, kw) for d, xb in zip(_blocks(dy), _blocks(x))]
    return _reduced(parts, weight_shape, x.dtype)


def _backward_all(block: Callable[..., Conv2dGrads], dy: Any, x: Any,
                  weight: np.ndarray, kw: dict[str, Any], bias: bool,
                  b_shape: Tuple[int, ...]) -> Conv2dGrads:
    """Per chunk one call computing every gradient; the input gradient's chunks are
    concatenated, the weight's and bias's partials tree-summed."""
    w = _shared(weight)
    task = dask.delayed(block, pure=True, nout=3)
    field = dask.delayed(_field, pure=True)
    per_chunk = [task(d, xb, w, kw, bias) for d, xb in zip(_blocks(dy), _blocks(x))]
    dx = da.concatenate([da.from_delayed(field(g, 0), shape=(n,) + x.shape[1:], dtype=x.dtype)
                         for g, n in zip(per_chunk, x.chunks[0])], axis=0)
    dw = _reduced([field(g, 1) for g in per_chunk], weight.shape, x.dtype)
    db = _reduced([field(g, 2) for g in per_chunk], b_shape, x.dtype) if bias else None
    return Conv2dGrads(dx, dw, db)


def conv2d_backward(grad_output: Any, x: Any, weight: Any, *, stride: IntPair = 1,
                    padding: Padding = 0, dilation: IntPair = 1, groups: int = 1,
                    layout: Layout = "NCHW", shape_rule: ShapeRule = "strict",
                    bias: bool = True) -> Conv2dGrads:
    """All three gradients of conv2d over batch chunks: one convcore.conv2d_backward call
    per chunk; the weight and bias partials summed in a fixed binary tree.

    Parameters
    ----------
    grad_output : dask.array.Array
        The output's gradient (rechunked along the batch as x when its chunks differ).
    x : dask.array.Array
        The input, chunked along the batch only.
    weight : numpy.ndarray
    stride, padding, dilation, groups, layout, shape_rule
        As for :func:`convcore.conv2d_backward`.
    bias : bool, default True
        Whether to return the bias gradient.

    Returns
    -------
    Conv2dGrads
        ``(input, weight, bias)`` as dask arrays: input chunked as x, weight and bias one
        chunk each (bias None when ``bias=False``). Compute them together
        (``dask.compute(*grads)``) so each chunk's call runs once.

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d`; a batch-size or output-shape mismatch.

    Examples
    --------
    >>> import numpy as np, dask, dask.array as da, convcore.dask
    >>> x = da.ones((4, 1, 8, 8), chunks=(2, 1, 8, 8))
    >>> dy = da.ones((4, 2, 6, 6), chunks=(2, 2, 6, 6))
    >>> dx, dw, db = dask.compute(*convcore.dask.conv2d_backward(dy, x, np.ones((2, 1, 3, 3))))
    >>> dx.shape, dw.shape, db.tolist()
    ((4, 1, 8, 8), (2, 1, 3, 3), [144.0, 144.0])
    """
    fn = "conv2d_backward"
    x = _check_dask(x, "x", fn)
    dy = _check_dask(grad_output, "grad_output", fn)
    weight = _small(weight, "weight")
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"convcore.dask.{fn}: bias must be True or False (whether to return "
                        f"its gradient), got {type(bias).__name__}")
    _check_batch(dy, "grad_output", x, "x", fn)
    kw = _conv_kw(stride, padding, dilation, groups, layout, shape_rule)
    _check_dy_shape(dy, _conv.conv2d_output_shape(x.shape, weight.shape, **kw), fn)
    return _backward_all(_conv_all_block, _aligned(dy, x), x, weight, kw, bool(bias),
                         (weight.shape[0],))


# --- locally connected ---------------------------------------------------------------------

def locally_connected2d(x: Any, weight: Any, bias: Any = None, *, stride: IntPair = 1,
                        padding: Padding = 0, layout: Layout = "NCHW",
                        shape_rule: ShapeRule = "strict") -> Any:
    """convcore.locally_connected2d over a dask array chunked along the batch
    (``map_blocks``).

    Parameters
    ----------
    x : dask.array.Array
        (N, C, H, W) or (N, H, W, C), chunked along axis 0 only.
    weight : numpy.ndarray
        (Ho, Wo, K, C, R, S) in NCHW, (Ho, Wo, K, R, S, C) in NHWC.
    bias : numpy.ndarray, optional
        (K, Ho, Wo) in NCHW, (Ho, Wo, K) in NHWC.
    stride, padding, layout, shape_rule
        As for :func:`convcore.locally_connected2d`.

    Returns
    -------
    dask.array.Array
        (N, K, Ho, Wo) or (N, Ho, Wo, K), chunked as x; each chunk equals the single call.

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d`; a weight that does not match the input (expected shape named).

    Examples
    --------
    >>> import numpy as np, dask.array as da, convcore.dask
    >>> x = da.ones((4, 2, 5, 5), chunks=(2, 2, 5, 5))
    >>> y = convcore.dask.locally_connected2d(x, np.ones((3, 3, 1, 2, 3, 3)))
    >>> y.shape, float(y[3, 0, 2, 2].compute())
    ((4, 1, 3, 3), 18.0)
    """
    fn = "locally_connected2d"
    x = _check_dask(x, "x", fn)
    weight = _small(weight, "weight")
    bias = None if bias is None else _small(bias, "bias")
    kw = dict(stride=stride, padding=padding, layout=layout, shape_rule=shape_rule)
    y_tail = _probe(_lc.locally_connected2d, x, weight, bias, kw)
    return x.map_blocks(_lc_block, _shared(weight), _shared(bias), kw, dtype=x.dtype,
                        chunks=_out_chunks(x, y_tail),
                        meta=np.empty((0, 0, 0, 0), dtype=x.dtype))


def locally_connected2d_backward(grad_output: Any, x: Any, weight: Any, *, stride: IntPair = 1,
                                 padding: Padding = 0, layout: Layout = "NCHW",
                                 shape_rule: ShapeRule = "strict",
                                 bias: bool = True) -> Conv2dGrads:
    """All three gradients of the locally-connected layer over batch chunks; the weight and
    bias partials summed in a fixed binary tree.

    Parameters
    ----------
    grad_output : dask.array.Array
        The output's gradient (rechunked along the batch as x when its chunks differ).
    x : dask.array.Array
        The input, chunked along the batch only.
    weight : numpy.ndarray
    stride, padding, layout, shape_rule
        As for :func:`convcore.locally_connected2d_backward`.
    bias : bool, default True

    Returns
    -------
    Conv2dGrads
        ``(input, weight, bias)`` as dask arrays (bias None when ``bias=False``).

    Raises
    ------
    TypeError, ValueError
        As :func:`locally_connected2d`; a batch-size or output-shape mismatch.

    Examples
    --------
    >>> import numpy as np, dask, dask.array as da, convcore.dask
    >>> x = da.ones((4, 2, 5, 5), chunks=(2, 2, 5, 5))
    >>> dy = da.ones((4, 1, 3, 3), chunks=(2, 1, 3, 3))
    >>> g = convcore.dask.locally_connected2d_backward(dy, x, np.ones((3, 3, 1, 2, 3, 3)))
    >>> float(g.weight[0, 0, 0, 0, 0, 0].compute()), g.bias.shape
    (4.0, (1, 3, 3))
    """
    fn = "locally_connected2d_backward"
    x = _check_dask(x, "x", fn)
    dy = _check_dask(grad_output, "grad_output", fn)
    weight = _small(weight, "weight")
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"convcore.dask.{fn}: bias must be True or False (whether to return "
                        f"its gradient), got {type(bias).__name__}")
    _check_batch(dy, "grad_output", x, "x", fn)
    kw = dict(stride=stride, padding=padding, layout=layout, shape_rule=shape_rule)
    y_tail = _probe(_lc.locally_connected2d, x, weight, None, kw)
    _check_dy_shape(dy, (x.shape[0],) + y_tail, fn)
    # The bias has the output's per-image shape: (K, Ho, Wo) in NCHW, (Ho, Wo, K) in NHWC.
    return _backward_all(_lc_all_block, _aligned(dy, x), x, weight, kw, bool(bias),
                         tuple(y_tail))
