"""convcore for PyTorch: autograd-aware functions and drop-in modules (optional extra
``torch``: ``pip install "convcore[torch]"``).

``import convcore`` never imports torch; ``import convcore.torch`` does.

* :func:`conv2d`, :func:`conv_transpose2d` — torch.nn.functional's signatures and
  semantics (floor output sizes: rows and columns that do not fit a stride are dropped;
  ``padding="same"`` / ``"valid"`` for conv2d), computed by convcore's NumPy API inside a
  :class:`torch.autograd.Function`.
* :func:`locally_connected2d` — convcore's locally-connected layer (per-position filters)
  with autograd.
* :class:`Conv2d`, :class:`ConvTranspose2d` — subclasses of torch.nn.Conv2d /
  torch.nn.ConvTranspose2d whose ``forward`` runs convcore: same constructor, parameters,
  ``state_dict`` keys and ``reset_parameters``, so a pretrained state_dict loads unchanged.
* :class:`LocallyConnected2d` — a torch module around :func:`locally_connected2d`.
* :func:`convert` — swaps a model's nn.Conv2d / nn.ConvTranspose2d modules in place.

Tensors cross into convcore without a copy where the memory allows (``tensor.numpy()`` on
a detached CPU tensor is a view; results come back through ``torch.from_numpy``). A 4-D
input in channels-last memory format (``x.to(memory_format=torch.channels_last)``) is
computed in convcore's NHWC layout on the same memory and gives a channels-last result;
other inputs use NCHW. Only CPU tensors of dtype float32 or float64 are accepted (the
function or module names the argument and the rule otherwise). Gradients are first order
only (the backward functions are not themselves differentiable).
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _conv
from . import locally_connected as _lc
from . import transposed as _transposed
from ._args import is_int, padding4, pair

__all__ = ["Conv2d", "ConvTranspose2d", "ConversionWarning", "LocallyConnected2d", "conv2d",
           "conv_transpose2d", "convert", "locally_connected2d"]

_FLOATS = (torch.float32, torch.float64)
_PairArg = Union[int, Tuple[int, int]]
_PaddingArg = Union[int, Tuple[int, int], Tuple[int, int, int, int], str]


# --- tensors <-> arrays --------------------------------------------------------------------

def _check_tensor(t: Any, name: str, fn: str) -> Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_cpu:
        raise ValueError(f"{fn}: {name} is on device {t.device}, but convcore computes on the "
                         f"CPU only; move it with .cpu() (or use torch's own {fn})")
    if t.layout != torch.strided:
        raise TypeError(f"{fn}: {name} must be a dense (strided) tensor, got layout {t.layout}")
    if t.dtype not in _FLOATS:
        raise TypeError(f"{fn}: {name} must have dtype torch.float32 or torch.float64, got "
                        f"{t.dtype}")
    return t


def _check_same_dtype(ref: Tensor, ref_name: str, t: Tensor, name: str, fn: str) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{fn}: {name} has dtype {t.dtype} but {ref_name} has dtype "
                        f"{ref.dtype}: all tensors must share one dtype")


def _np(t: Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor's memory (no copy; a lazily negated tensor is
    resolved first)."""
    if t.requires_grad or t.is_neg():
        t = t.detach().resolve_neg()
    return t.numpy()  # type: ignore[no-any-return]


def _channels_last(x: Tensor) -> bool:
    """Whether a 4-D tensor is laid out channels-last (and not also plain contiguous, as
    happens when C == 1 or H == W == 1: those stay NCHW)."""
    return bool(x.dim() == 4 and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last))


def _to_layout(t: Tensor, nhwc: bool) -> np.ndarray:
    """(N, C, H, W) tensor -> the array convcore reads: itself (NCHW) or its NHWC view."""
    return _np(t.permute(0, 2, 3, 1) if nhwc else t)


def _from_layout(a: np.ndarray, nhwc: bool) -> Tensor:
    """An array convcore wrote -> an (N, C, H, W) tensor on the same memory (channels-last
    when it was NHWC)."""
    t = torch.from_numpy(a)
    return t.permute(0, 3, 1, 2) if nhwc else t


def _batched(x: Tensor, fn: str) -> Tuple[Tensor, bool]:
    """torch.nn.functional takes one (C, H, W) image too: give it a batch axis."""
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ValueError(f"{fn}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got "
                         f"{x.dim()}-D with shape {tuple(x.shape)}")
    return x, False


class _NoGradContext:
    """Stands in for autograd's ctx where nothing will be differentiated: what a forward
    saves is dropped."""

    def save_for_backward(self, *tensors: Any) -> None:
        pass


def _apply(function: Any, *args: Any) -> Tensor:
    """function.apply(*args); or, where autograd would record nothing (grad mode off, or
    no tensor argument requires grad), its forward called directly: the autograd.Function
    machinery costs more than a small convolution (a 1×4×8×8 conv2d took 38 µs through
    it against 12 µs for torch's own, on Zen 3)."""
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                       for a in args):
        return function.apply(*args)
    return function.forward(_NoGradContext(), *args)


# --- conv2d ----------------------------------------------------------------------------------

class _Conv2dFunction(torch.autograd.Function):  # type: ignore[misc]
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Any,
                padding: Any, dilation: Any, groups: int) -> Tensor:
        nhwc = _channels_last(x)
        kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  layout="NHWC" if nhwc else "NCHW", shape_rule="crop")
        y = _conv.conv2d(_to_layout(x, nhwc), _to_layout(weight, nhwc),
                         None if bias is None else _np(bias), **kw)
        ctx.save_for_backward(x, weight)
        ctx.kw, ctx.nhwc = kw, nhwc
        return _from_layout(y, nhwc)

    @staticmethod
    @once_differentiable  # type: ignore[untyped-decorator]
    def backward(ctx: Any, grad_y: Tensor) -> Tuple[Optional[Tensor], ...]:
        x, weight = ctx.saved_tensors
        nhwc, kw = ctx.nhwc, ctx.kw
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dy = _to_layout(grad_y, nhwc)
        xa, wa = _to_layout(x, nhwc), _to_layout(weight, nhwc)
        dx = dw = db = None
        if need_x and need_w:
            g = _conv.conv2d_backward(dy, xa, wa, bias=False, **kw)
            dx, dw = g.input, g.weight
        elif need_x:
            dx = _conv.conv2d_backward_input(dy, wa, xa.shape, **kw)
        elif need_w:
            dw = _conv.conv2d_backward_weight(dy, xa, wa.shape, **kw)
        if need_b:
            db = grad_y.sum(dim=(0, 2, 3))
        return (None if dx is None else _from_layout(dx, nhwc),
                None if dw is None else _from_layout(dw, nhwc), db, None, None, None, None)


def _check_conv_args(fn: str, input: Any, weight: Any, bias: Any) -> Tuple[Tensor, bool]:
    x = _check_tensor(input, "input", fn)
    _check_tensor(weight, "weight", fn)
    _check_same_dtype(x, "input", weight, "weight", fn)
    if weight.dim() != 4:
        raise ValueError(f"{fn}: weight must be 4-D, got {weight.dim()}-D with shape "
                         f"{tuple(weight.shape)}")
    if bias is not None:
        _check_tensor(bias, "bias", fn)
        _check_same_dtype(x, "input", bias, "bias", fn)
    return _batched(x, fn)


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
           stride: _PairArg = 1, padding: _PaddingArg = 0, dilation: _PairArg = 1,
           groups: int = 1) -> Tensor:
    """2-D convolution with autograd: ``torch.nn.functional.conv2d`` computed by convcore.

    Parameters
    ----------
    input : torch.Tensor
        (N, C, H, W) or one image (C, H, W); a CPU tensor of dtype float32 or float64. In
        channels-last memory format it is computed as NHWC on the same memory and the
        result is channels-last too.
    weight : torch.Tensor
        (K, C/groups, R, S), the input's dtype.
    bias : torch.Tensor, optional
        (K,).
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int), "valid" or "same", default 0
        As PyTorch ("same" needs stride 1; an odd total puts the extra row/column at the
        bottom/right). A 4-tuple (top, bottom, left, right) is accepted too (a convcore
        extension).
    groups : int, default 1

    Returns
    -------
    torch.Tensor
        (N, K, Ho, Wo) (or (K, Ho, Wo)) with Ho = floor((H + 2·pad − dilation·(R − 1) − 1)
        / stride) + 1: rows and columns that do not fit a stride are dropped, as PyTorch.

    Raises
    ------
    TypeError
        A non-tensor, a dtype other than float32/float64, mixed dtypes, a sparse tensor.
    ValueError
        A tensor on another device than the CPU, bad shapes or hyperparameters (the
        message names them; convcore.ShapeError, a ValueError, when the kernel does not fit).

    Examples
    --------
    >>> import torch, convcore.torch as cct
    >>> x = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> w = torch.randn(4, 3, 3, 3, requires_grad=True)
    >>> y = cct.conv2d(x, w, padding=1)
    >>> y.shape
    torch.Size([2, 4, 8, 8])
    >>> y.sum().backward()
    >>> x.grad.shape, w.grad.shape
    (torch.Size([2, 3, 8, 8]), torch.Size([4, 3, 3, 3]))
    """
    x, unbatched = _check_conv_args("conv2d", input, weight, bias)
    y = _apply(_Conv2dFunction, x, weight, bias, stride, padding, dilation, groups)
    return y.squeeze(0) if unbatched else y


# --- conv_transpose2d --------------------------------------------------------------------

class _TransposeGeometry:
    """A transposed convolution as the adjoint of a convolution whose *input* is the
    transposed output: rows (columns) = ``rows``, padded by (top, bottom) = (pad,
    pad − output_padding). When that bottom padding would be negative, the last
    ``extra`` rows of the output are reached by no tap: the adjoint is taken over
    ``rows − extra`` rows with bottom padding 0 and ``extra`` zero rows are appended."""

    def __init__(self, in_hw: Tuple[int, int], kernel: Tuple[int, int], stride: Any,
                 padding: Any, output_padding: Any, dilation: Any) -> None:
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        if isinstance(padding, str):
            raise ValueError(f"conv_transpose2d: padding must be an int or a pair of ints "
                             f"(no 'same'/'valid' strings, as in PyTorch), got {padding!r}")
        pads = pair(padding, "padding", 0)
        opad = pair(output_padding, "output_padding", 0)
        self.padding, self.output_padding = pads, opad
        for ax in range(2):
            if opad[ax] >= max(self.stride[ax], self.dilation[ax]):
                raise ValueError(
                    f"conv_transpose2d: output_padding must be smaller than stride or "
                    f"dilation along each axis, got output_padding={opad}, "
                    f"stride={self.stride}, dilation={self.dilation}")
        self.out_hw: Tuple[int, ...] = tuple(
            (in_hw[a] - 1) * self.stride[a] - 2 * pads[a]
            + self.dilation[a] * (kernel[a] - 1) + opad[a] + 1 for a in range(2))
        if min(self.out_hw) < 1:
            raise ValueError(f"conv_transpose2d: the output size {self.out_hw} is too small "
                             f"(input {in_hw}, kernel {kernel}, stride {self.stride}, "
                             f"padding {pads}, output_padding {opad}, dilation "
                             f"{self.dilation})")
        self.extra = tuple(max(opad[a] - pads[a], 0) for a in range(2))
        self.core_hw = tuple(self.out_hw[a] - self.extra[a] for a in range(2))
        bottom = tuple(max(pads[a] - opad[a], 0) for a in range(2))
        self.pad4 = (pads[0], bottom[0], pads[1], bottom[1])

    def crop(self, a: np.ndarray, nhwc: bool) -> np.ndarray:
        """An output-shaped array without its appended rows/columns (a view)."""
        h, w = self.core_hw
        return a[:, :h, :w, :] if nhwc else a[:, :, :h, :w]


def _conv_transpose2d_forward(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray],
                              geom: _TransposeGeometry, groups: int, nhwc: bool
                              ) -> np.ndarray:
    """The transposed convolution on arrays (NCHW, or NHWC with the weight as
    (C_in, R, S, C_out/groups)), bias fused: convcore.conv_transpose2d."""
    return _transposed.conv_transpose2d(
        x, weight, bias, stride=geom.stride, padding=geom.padding,
        output_padding=geom.output_padding, dilation=geom.dilation, groups=groups,
        layout="NHWC" if nhwc else "NCHW")


class _ConvTranspose2dFunction(torch.autograd.Function):  # type: ignore[misc]
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                geom: _TransposeGeometry, groups: int) -> Tensor:
        nhwc = _channels_last(x)
        y = _conv_transpose2d_forward(_to_layout(x, nhwc), _to_layout(weight, nhwc),
                                      None if bias is None else _np(bias), geom, groups, nhwc)
        ctx.save_for_backward(x, weight)
        ctx.geom, ctx.groups, ctx.nhwc = geom, groups, nhwc
        return _from_layout(y, nhwc)

    @staticmethod
    @once_differentiable  # type: ignore[untyped-decorator]
    def backward(ctx: Any, grad_y: Tensor) -> Tuple[Optional[Tensor], ...]:
        x, weight = ctx.saved_tensors
        geom, nhwc = ctx.geom, ctx.nhwc
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        # The rows the adjoint skipped get no tap: their gradient never reaches x or w.
        dy = geom.crop(_to_layout(grad_y, nhwc), nhwc)
        kw = dict(stride=geom.stride, padding=geom.pad4, dilation=geom.dilation,
                  groups=ctx.groups, layout="NHWC" if nhwc else "NCHW")
        wa = _to_layout(weight, nhwc)
        dx = dw = db = None
        if need_x:
            # The transposed conv's input gradient is the forward convolution of dy.
            dx = _from_layout(_conv.conv2d(dy, wa, **kw), nhwc)
        if need_w:
            # ... and its weight gradient the convolution's, with x in the output's place.
            dw = _from_layout(_conv.conv2d_backward_weight(_to_layout(x, nhwc), dy, wa.shape,
                                                           **kw), nhwc)
        if need_b:
            db = grad_y.sum(dim=(0, 2, 3))
        return dx, dw, db, None, None


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                     stride: _PairArg = 1, padding: _PairArg = 0,
                     output_padding: _PairArg = 0, groups: int = 1,
                     dilation: _PairArg = 1) -> Tensor:
    """Transposed 2-D convolution with autograd: ``torch.nn.functional.conv_transpose2d``
    computed by convcore (the input gradient of a convolution; its backward passes are a
    convolution and a convolution's weight gradient).

    Parameters
    ----------
    input : torch.Tensor
        (N, C_in, H, W) or one image (C_in, H, W); CPU, float32 or float64 (channels-last
        memory format is computed as NHWC and gives a channels-last result).
    weight : torch.Tensor
        (C_in, C_out/groups, R, S), as PyTorch.
    bias : torch.Tensor, optional
        (C_out,).
    stride, dilation : int or (int, int), default 1
    padding : int or (int, int), default 0
        Rows/columns cropped from each side of the full transposed output.
    output_padding : int or (int, int), default 0
        Rows/columns added at the bottom/right; smaller than stride or dilation.
    groups : int, default 1

    Returns
    -------
    torch.Tensor
        (N, C_out, Ho, Wo) with Ho = (H − 1)·stride − 2·padding + dilation·(R − 1)
        + output_padding + 1.

    Raises
    ------
    TypeError
        A non-tensor, a dtype other than float32/float64, mixed dtypes.
    ValueError
        A tensor off the CPU, bad shapes, ``output_padding`` not smaller than stride or
        dilation, an output size below 1, a padding string.

    Examples
    --------
    >>> import torch, convcore.torch as cct
    >>> x = torch.randn(1, 4, 5, 5, requires_grad=True)
    >>> w = torch.randn(4, 2, 3, 3)
    >>> cct.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1).shape
    torch.Size([1, 2, 10, 10])
    """
    fn = "conv_transpose2d"
    x, unbatched = _check_conv_args(fn, input, weight, bias)
    if not is_int(groups) or groups < 1:
        raise ValueError(f"{fn}: groups must be an int >= 1, got {groups!r}")
    if x.shape[1] != weight.shape[0]:
        raise ValueError(f"{fn}: weight {tuple(weight.shape)} takes {weight.shape[0]} input "
                         f"channels (its first axis), but the input has {x.shape[1]}")
    geom = _TransposeGeometry((x.shape[2], x.shape[3]), (weight.shape[2], weight.shape[3]),
                              stride, padding, output_padding, dilation)
    y = _apply(_ConvTranspose2dFunction, x, weight, bias, geom, int(groups))
    return y.squeeze(0) if unbatched else y


# --- locally connected ---------------------------------------------------------------------

def _lc_weight_layout(w: Tensor, nhwc: bool) -> np.ndarray:
    # (Ho, Wo, K, C, R, S) -> (Ho, Wo, K, R, S, C) for NHWC
    return _np(w.permute(0, 1, 2, 4, 5, 3) if nhwc else w)


def _lc_bias_layout(b: Tensor, nhwc: bool) -> np.ndarray:
    # (K, Ho, Wo) -> (Ho, Wo, K) for NHWC
    return _np(b.permute(1, 2, 0) if nhwc else b)


class _LocallyConnected2dFunction(torch.autograd.Function):  # type: ignore[misc]
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Any,
                padding: Any) -> Tensor:
        nhwc = _channels_last(x)
        kw = dict(stride=stride, padding=padding, layout="NHWC" if nhwc else "NCHW",
                  shape_rule="crop")
        y = _lc.locally_connected2d(_to_layout(x, nhwc), _lc_weight_layout(weight, nhwc),
                                    None if bias is None else _lc_bias_layout(bias, nhwc),
                                    **kw)
        ctx.save_for_backward(x, weight)
        ctx.kw, ctx.nhwc = kw, nhwc
        return _from_layout(y, nhwc)

    @staticmethod
    @once_differentiable  # type: ignore[untyped-decorator]
    def backward(ctx: Any, grad_y: Tensor) -> Tuple[Optional[Tensor], ...]:
        x, weight = ctx.saved_tensors
        nhwc = ctx.nhwc
        need = ctx.needs_input_grad[:3]
        if not any(need):
            return None, None, None, None, None
        g = _lc.locally_connected2d_backward(_to_layout(grad_y, nhwc), _to_layout(x, nhwc),
                                             _lc_weight_layout(weight, nhwc),
                                             bias=bool(need[2]), **ctx.kw)
        dx = _from_layout(g.input, nhwc) if need[0] else None
        dw = db = None
        if need[1]:
            t = torch.from_numpy(g.weight)
            dw = t.permute(0, 1, 2, 5, 3, 4) if nhwc else t
        if need[2] and g.bias is not None:
            t = torch.from_numpy(g.bias)
            db = t.permute(2, 0, 1) if nhwc else t
        return dx, dw, db, None, None


def locally_connected2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                        stride: _PairArg = 1, padding: _PaddingArg = 0) -> Tensor:
    """Locally-connected layer with autograd: every output position has its own filters
    (convcore.locally_connected2d with PyTorch's floor output size).

    Parameters
    ----------
    input : torch.Tensor
        (N, C, H, W) or one image (C, H, W); CPU, float32 or float64 (channels-last memory
        format is computed as NHWC and gives a channels-last result).
    weight : torch.Tensor
        (Ho, Wo, K, C, R, S): K filters of C×R×S per output position.
    bias : torch.Tensor, optional
        (K, Ho, Wo).
    stride : int or (int, int), default 1
    padding : int, (int, int), 4-tuple, "valid" or "same" (stride 1), default 0

    Returns
    -------
    torch.Tensor
        (N, K, Ho, Wo): y[n, k, i, j] = Σ_{c,r,s} weight[i, j, k, c, r, s] ·
        xpad[n, c, i·sh + r, j·sw + s] (+ bias[k, i, j]).

    Raises
    ------
    TypeError
        A non-tensor, a dtype other than float32/float64, mixed dtypes.
    ValueError
        A tensor off the CPU; a weight whose (Ho, Wo) or channels do not match the input
        (the message gives the expected shape).

    Examples
    --------
    >>> import torch, convcore.torch as cct
    >>> x = torch.randn(2, 3, 6, 6)
    >>> w = torch.randn(4, 4, 5, 3, 3, 3, requires_grad=True)
    >>> cct.locally_connected2d(x, w).shape
    torch.Size([2, 5, 4, 4])
    """
    fn = "locally_connected2d"
    x = _check_tensor(input, "input", fn)
    _check_tensor(weight, "weight", fn)
    _check_same_dtype(x, "input", weight, "weight", fn)
    if weight.dim() != 6:
        raise ValueError(f"{fn}: weight must be 6-D (Ho, Wo, K, C, R, S), got {weight.dim()}-D "
                         f"with shape {tuple(weight.shape)}")
    if bias is not None:
        _check_tensor(bias, "bias", fn)
        _check_same_dtype(x, "input", bias, "bias", fn)
        if bias.dim() != 3:
            raise ValueError(f"{fn}: bias must be 3-D (K, Ho, Wo), got shape "
                             f"{tuple(bias.shape)}")
    x, unbatched = _batched(x, fn)
    y = _apply(_LocallyConnected2dFunction, x, weight, bias, stride, padding)
    return y.squeeze(0) if unbatched else y


# --- modules ---------------------------------------------------------------------------------

def _check_module_options(cls: str, padding_mode: str, device: Any, dtype: Any) -> None:
    if padding_mode != "zeros":
        raise ValueError(f"convcore.torch.{cls}: padding_mode={padding_mode!r} is not "
                         f"supported (only 'zeros'); use torch.nn.{cls} for "
                         "'reflect', 'replicate' or 'circular' padding")
    if device is not None and torch.device(device).type not in ("cpu", "meta"):
        raise ValueError(f"convcore.torch.{cls}: device={device!r} is not supported: convcore "
                         "computes on the CPU (device 'cpu', or 'meta' to defer "
                         "initialisation)")
    dt = torch.get_default_dtype() if dtype is None else dtype
    if dt not in _FLOATS:
        raise TypeError(f"convcore.torch.{cls}: dtype={dt} is not supported (torch.float32 or "
                        "torch.float64)")


class Conv2d(torch.nn.Conv2d):  # type: ignore[misc]
    """torch.nn.Conv2d computed by convcore: a drop-in replacement.

    A subclass of torch.nn.Conv2d (``isinstance(m, torch.nn.Conv2d)`` holds) with the same
    constructor, parameters (``weight``, ``bias``), ``state_dict`` keys and
    ``reset_parameters``; only ``forward`` differs, calling :func:`conv2d`.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int), "valid" or "same", default 0
    groups : int, default 1
    bias : bool, default True
    padding_mode : "zeros"
        The only mode convcore computes (ValueError otherwise).
    device : torch.device or str, optional
        "cpu" (or "meta" for deferred initialisation); another device is a ValueError.
    dtype : torch.dtype, optional
        torch.float32 or torch.float64 (TypeError otherwise).

    Raises
    ------
    ValueError
        ``padding_mode`` other than "zeros", a device other than the CPU; torch's own
        errors for bad sizes.
    TypeError
        A dtype other than float32/float64.

    Examples
    --------
    >>> import torch, convcore.torch as cct
    >>> ref = torch.nn.Conv2d(3, 8, 3, padding=1)
    >>> m = cct.Conv2d(3, 8, 3, padding=1)
    >>> _ = m.load_state_dict(ref.state_dict())
    >>> x = torch.randn(2, 3, 16, 16)
    >>> bool(torch.allclose(m(x), ref(x), atol=1e-5))
    True
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _PairArg,
                 stride: _PairArg = 1, padding: _PaddingArg = 0, dilation: _PairArg = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: Any = None) -> None:
        _check_module_options("Conv2d", padding_mode, device, dtype)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=padding, dilation=dilation, groups=groups, bias=bias,
                         padding_mode=padding_mode, device=device, dtype=dtype)

    def forward(self, input: Tensor) -> Tensor:
        """Apply the convolution.

        Parameters
        ----------
        input : torch.Tensor
            (N, C, H, W) or (C, H, W), on the CPU, of the module's dtype.

        Returns
        -------
        torch.Tensor
            (N, K, Ho, Wo) (channels-last when the input is).
        """
        return conv2d(input, self.weight, self.bias, self.stride, self.padding,
                      self.dilation, self.groups)


class ConvTranspose2d(torch.nn.ConvTranspose2d):  # type: ignore[misc]
    """torch.nn.ConvTranspose2d computed by convcore: a drop-in replacement.

    A subclass of torch.nn.ConvTranspose2d with the same constructor, parameters,
    ``state_dict`` keys and ``reset_parameters``; ``forward(input, output_size=None)``
    calls :func:`conv_transpose2d` (``output_size`` picks the output padding, as torch).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, padding, output_padding, dilation : int or (int, int)
        Defaults 1, 0, 0, 1; as torch.nn.ConvTranspose2d.
    groups : int, default 1
    bias : bool, default True
    padding_mode : "zeros"
        The only mode (ValueError otherwise, as torch's own forward would raise).
    device : torch.device or str, optional
        "cpu" or "meta".
    dtype : torch.dtype, optional
        torch.float32 or torch.float64.

    Raises
    ------
    ValueError
        ``padding_mode`` other than "zeros", a device other than the CPU.
    TypeError
        A dtype other than float32/float64.

    Examples
    --------
    >>> import torch, convcore.torch as cct
    >>> up = cct.ConvTranspose2d(8, 3, 4, stride=2, padding=1)
    >>> up(torch.randn(1, 8, 7, 7)).shape
    torch.Size([1, 3, 14, 14])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _PairArg,
                 stride: _PairArg = 1, padding: _PairArg = 0, output_padding: _PairArg = 0,
                 groups: int = 1, bias: bool = True, dilation: _PairArg = 1,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        _check_module_options("ConvTranspose2d", padding_mode, device, dtype)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=padding, output_padding=output_padding, groups=groups,
                         bias=bias, dilation=dilation, padding_mode=padding_mode,
                         device=device, dtype=dtype)

    def forward(self, input: Tensor, output_size: Optional[Sequence[int]] = None) -> Tensor:
        """Apply the transposed convolution.

        Parameters
        ----------
        input : torch.Tensor
            (N, C_in, H, W) or (C_in, H, W), on the CPU, of the module's dtype.
        output_size : sequence of int, optional
            The wanted (H, W) (or full shape): chooses output_padding, as torch.

        Returns
        -------
        torch.Tensor
            (N, C_out, Ho, Wo).
        """
        output_padding = self._output_padding(
            input, None if output_size is None else list(output_size), list(self.stride),
            list(self.padding), list(self.kernel_size), 2, list(self.dilation))
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                tuple(output_padding), self.groups, self.dilation)


class LocallyConnected2d(torch.nn.Module):  # type: ignore[misc]
    """A locally-connected layer as a torch module (per-position filters, no sharing).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    input_size : int or (int, int)
        The input's (H, W), fixed because the weights are per output position.
    stride : int or (int, int), default 1
    padding : int, (int, int), 4-tuple, "valid" or "same", default 0
    bias : bool, default True
    device : torch.device or str, optional
        "cpu" or "meta".
    dtype : torch.dtype, optional
        torch.float32 or torch.float64.

    Attributes
    ----------
    weight : torch.nn.Parameter
        (Ho, Wo, K, C, R, S).
    bias : torch.nn.Parameter or None
        (K, Ho, Wo).
    output_size : (int, int)
        (Ho, Wo).

    Raises
    ------
    ValueError
        Bad sizes (the kernel does not fit the padded input), a device other than the CPU.
    TypeError
        A dtype other than float32/float64.

    Notes
    -----
    ``reset_parameters`` draws weights and biases from U(−1/√fan_in, 1/√fan_in),
    fan_in = C·R·S — torch.nn.Conv2d's default distribution.

    Examples
    --------
    >>> import torch, convcore.torch as cct
    >>> m = cct.LocallyConnected2d(3, 4, 3, input_size=8, padding=1)
    >>> m.weight.shape
    torch.Size([8, 8, 4, 3, 3, 3])
    >>> m(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 4, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _PairArg,
                 input_size: _PairArg, stride: _PairArg = 1, padding: _PaddingArg = 0,
                 bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        _check_module_options("LocallyConnected2d", "zeros", device, dtype)
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not is_int(v) or v < 1:
                raise ValueError(f"LocallyConnected2d: {name} must be an int >= 1, got {v!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.input_size = pair(input_size, "input_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = padding
        pads = padding4(padding, self.kernel_size, self.stride, (1, 1))
        shape = _conv.conv2d_output_shape(
            (1, self.in_channels) + self.input_size,
            (self.out_channels, self.in_channels) + self.kernel_size, stride=self.stride,
            padding=pads, shape_rule="crop")
        self.output_size = (int(shape[2]), int(shape[3]))
        kw = dict(device=device, dtype=dtype)
        self.weight = torch.nn.Parameter(torch.empty(
            self.output_size + (self.out_channels, self.in_channels) + self.kernel_size, **kw))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty((self.out_channels,) + self.output_size,
                                                       **kw))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw weights and biases from U(−1/√fan_in, 1/√fan_in), fan_in = C·R·S."""
        bound = 1.0 / float(np.sqrt(self.in_channels * self.kernel_size[0]
                                    * self.kernel_size[1]))
        torch.nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        """Apply the layer.

        Parameters
        ----------
        input : torch.Tensor
            (N, C, H, W) or (C, H, W) with (H, W) = ``input_size``.

        Returns
        -------
        torch.Tensor
            (N, K, Ho, Wo).
        """
        return locally_connected2d(input, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        """The constructor arguments, for ``repr``."""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"input_size={self.input_size}, stride={self.stride}, "
                f"padding={self.padding!r}, bias={self.bias is not None}")


# --- convert ---------------------------------------------------------------------------------

class ConversionWarning(UserWarning):
    """:func:`convert` left a module as it was (its configuration is not one convcore
    computes); the message says which module and why."""


def _why_not(m: Any) -> Optional[str]:
    if m.padding_mode != "zeros":
        return f"padding_mode={m.padding_mode!r} (convcore computes zero padding only)"
    if m.weight.device.type != "cpu":
        return f"its parameters are on {m.weight.device} (convcore computes on the CPU)"
    if m.weight.dtype not in _FLOATS:
        return f"dtype {m.weight.dtype} (convcore computes float32 and float64)"
    return None


def _swap(m: Any, cls: Any) -> Any:
    new = cls.__new__(cls)
    # Everything the module holds — the very Parameter objects, buffers, hooks, training
    # flag, hyperparameters — in containers of its own.
    new.__dict__.update({k: (v.copy() if isinstance(v, dict) else v)
                         for k, v in m.__dict__.items()})
    return new


def convert(model: Any, *, strict: bool = False) -> Any:
    """Swap every torch.nn.Conv2d / torch.nn.ConvTranspose2d in a model for
    :class:`Conv2d` / :class:`ConvTranspose2d`, in place.

    Only modules whose type is exactly torch.nn.Conv2d or torch.nn.ConvTranspose2d are
    swapped (subclasses may have their own forward). The new module takes over the old
    one's Parameter objects (no copy: an optimizer built before ``convert`` keeps
    training the same tensors), buffers, hooks and training flag.

    Parameters
    ----------
    model : torch.nn.Module
        Converted recursively. A bare nn.Conv2d / nn.ConvTranspose2d cannot be replaced
        in its parent: the converted module is returned.
    strict : bool, default False
        What to do with a module convcore cannot compute (padding_mode other than
        "zeros", parameters off the CPU, dtypes other than float32/float64): False leaves
        it as it is with a :class:`ConversionWarning` naming it and the reason; True
        raises ValueError instead (before anything is swapped).

    Returns
    -------
    torch.nn.Module
        ``model`` (or the converted module when ``model`` itself is a conv module).

    Raises
    ------
    TypeError
        ``model`` is not a torch.nn.Module.
    ValueError
        With ``strict=True``, a module that cannot be converted.

    Examples
    --------
    >>> import torch, convcore.torch as cct
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    >>> net = cct.convert(net)
    >>> type(net[0]).__module__
    'convcore.torch'
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert: model must be a torch.nn.Module, got {type(model).__name__}")
    swaps = {torch.nn.Conv2d: Conv2d, torch.nn.ConvTranspose2d: ConvTranspose2d}
    todo = []
    replacement: Dict[int, Any] = {}   # id(old) -> new: a module used twice stays shared
    warned = set()
    for name, m in model.named_modules(remove_duplicate=False):
        cls = swaps.get(type(m))
        if cls is None:
            continue
        why = _why_not(m)
        if why is not None:
            msg = f"convert: {name or 'the model'} ({type(m).__name__}) is left to torch: {why}"
            if strict:
                raise ValueError(msg)
            if id(m) not in warned:
                warnings.warn(msg, ConversionWarning, stacklevel=2)
                warned.add(id(m))
            continue
        if id(m) not in replacement:
            replacement[id(m)] = _swap(m, cls)
        todo.append((name, replacement[id(m)]))
    for name, new in todo:
        if not name:
            return new
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, new)
    return model
