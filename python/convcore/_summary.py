"""summary(input_shape, layers): a ConvNet's sizes worked out layer by layer.

"Sizing the ConvNets appropriately so that all the dimensions 'work out' can be a real
headache." For each layer of a stack this computes the output volume, the parameters with
and without sharing, the FLOPs, the receptive field of one output unit in input pixels and
the implementation convcore would run for each pass; where a stride does not fit it shows
the arithmetic and what would make it fit, and goes on.

Layer syntax (Python list items, and the command line ``python -m convcore summary``):

* ``"K:F"`` a conv layer of K filters F×F (``"K:RxS"`` rectangular), followed by options
  ``/S`` stride, ``pP`` padding (``p2``, ``p1x2``, ``psame``), ``dD`` dilation, ``gG``
  groups; e.g. ``"96:11/4"``, ``"256:5p2g2"``, ``"64:3/2p1"``.
* ``"convTK:F"`` a transposed conv layer (conv_transpose2d) of K output channels, with the
  conv options and ``oP`` output_padding; e.g. ``"convT64:4/2p1"``, ``"convT32:3/2p1o1"``.
* ``"poolF"`` a pooling layer F×F with stride F; ``"poolF/S"``, ``"poolF/SpP"``;
  ``maxpool``/``avgpool`` also read.
* a dict ``{'out_channels': K, 'kernel_size': F, 'stride': 1, 'padding': 0, 'dilation': 1,
  'groups': 1, 'bias': True, 'shape_rule': ..., 'name': ...}`` or
  ``{'pool': F, 'stride': F, 'padding': 0, 'mode': 'max', 'name': ...}``;
* a tuple ``(K, F)``, ``(K, F, stride)`` or ``(K, F, stride, padding)``;
* a :class:`convcore.Conv2d` or :class:`convcore.ConvTranspose2d` layer object (its own
  channels, hyperparameters, layout, shape rule and dtype); a dict with
  ``'transposed': True`` (and ``'output_padding'``) for a transposed conv layer.

A transposed layer's output is (H − 1)·S − P + d·(F − 1) + output_padding + 1 (it always
fits unless that is not positive); its unshared count gives every input position its own
kernel; its receptive field grows by ⌈F_eff/S⌉ − 1 of its input units and the jump is
divided by the stride (floored at 1).
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import (TYPE_CHECKING, Any, Dict, Iterable, List, Literal, Optional, Sequence,
                    Tuple, Union)

from ._args import check_groups, check_layout, check_shape_rule, is_int, padding4, pair
from ._conv import _algorithms
from .layers import Conv2d
from .transposed import ConvTranspose2d, _algorithms as _t_algorithms
from .locally_connected import LocallyConnected2d, _LCProblem
from ._types import DTypeName, Layout, ShapeRule

__all__ = ["LayerSummary", "Summary", "summary", "main"]

Pair = Tuple[int, int]


@dataclass
class LayerSummary:
    """One row of a :class:`Summary`: one layer and what it does to the volume.

    Attributes
    ----------
    index : int
        Position in the stack, from 1.
    name : str
        The layer as written (``"conv 96:11/4"``, ``"pool 3/2"``) or its ``name``.
    kind : str
        ``"conv"``, ``"convT"`` (transposed), ``"lc"`` (locally connected) or ``"pool"``.
    input_shape, output_shape : tuple of int
        In the summary's layout, with the batch axis when the input shape had one;
        None when the layer (or, for input_shape, an earlier one) cannot be sized at all.
    params : int
        Learnable parameters with sharing: K·(C/groups)·R·S weights (+ K biases).
    params_unshared : int
        The same layer without parameter sharing (a locally-connected layer, every output
        position its own filters): Ho·Wo·K·((C/groups)·R·S + 1) (+1 only with a bias).
    flops : int
        2·N·K·Ho·Wo·(C/groups)·R·S for a conv layer (a multiply and an add per tap; the
        bias is not counted); 0 for pooling.
    receptive_field : (int, int)
        Input pixels (rows, columns) that one output unit sees, through the whole stack.
    jump : (int, int)
        Input pixels between adjacent output units (the product of the strides so far).
    algorithms : dict or None
        The implementation convcore picks for ``forward``, ``backward_data`` and
        ``backward_weight`` (None for pooling or when it cannot be asked).
    fits : bool
        False when the layer does not fit its input as specified (a stride that does not
        divide under shape_rule 'strict', a filter larger than the padded input, a
        channel mismatch).
    problem : str or None
        Why it does not fit, with the arithmetic.
    fixes : list of str
        Changes that would make it fit.
    notes : list of str
        What the summary assumed to go on, and what a 'crop' or 'pad' rule did.

    Examples
    --------
    >>> import convcore
    >>> row = convcore.summary((3, 227, 227), ["96:11/4"])[0]
    >>> row.name, row.output_shape, row.params, row.flops
    ('conv 96:11/4', (96, 55, 55), 34944, 210830400)
    >>> row.receptive_field, row.jump, row.fits
    ((11, 11), (4, 4), True)
    """

    index: int
    name: str
    kind: str
    input_shape: Optional[Tuple[int, ...]]
    output_shape: Optional[Tuple[int, ...]]
    params: int = 0
    params_unshared: int = 0
    flops: int = 0
    receptive_field: Pair = (1, 1)
    jump: Pair = (1, 1)
    algorithms: Optional[Dict[str, str]] = None
    fits: bool = True
    problem: Optional[str] = None
    fixes: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


if TYPE_CHECKING:
    _SummaryBase = List[LayerSummary]
else:
    _SummaryBase = list


class Summary(_SummaryBase):
    """The rows of :func:`summary`: a list of :class:`LayerSummary` with totals.

    Printing it (``str``, ``repr``) gives an aligned text table. Made by :func:`summary`.

    Parameters
    ----------
    rows : iterable of LayerSummary
        The layers, in order.
    input_shape : tuple of int
        The stack's input shape, in ``layout`` order.
    layout : {"NCHW", "NHWC"}
        Order of the shapes' axes.

    Examples
    --------
    >>> import convcore
    >>> s = convcore.summary((3, 32, 32), ["16:3p1", "pool2", "32:3p1"])
    >>> len(s), s.params, s.output_shape, s.fits
    (3, 5088, (32, 16, 16), True)
    >>> print(s)            # doctest: +ELLIPSIS
    input 32×32×3 (NCHW)
    #  layer        output H×W×C  params  unshared  FLOPs  RF  jump  algorithms ...
    ...
    """

    def __init__(self, rows: Iterable[LayerSummary], input_shape: Tuple[int, ...],
                 layout: str):
        super().__init__(rows)
        self.input_shape = tuple(input_shape)
        self.layout = layout

    @property
    def params(self) -> int:
        """Total parameters with sharing."""
        return sum(r.params for r in self)

    @property
    def params_unshared(self) -> int:
        """Total parameters without sharing."""
        return sum(r.params_unshared for r in self)

    @property
    def flops(self) -> int:
        """Total FLOPs of the forward pass (conv layers)."""
        return sum(r.flops for r in self)

    @property
    def fits(self) -> bool:
        """True when every layer fits its input as specified."""
        return all(r.fits for r in self)

    @property
    def output_shape(self) -> Optional[Tuple[int, ...]]:
        """The last layer's output shape (the input shape for an empty stack)."""
        return self[-1].output_shape if self else self.input_shape

    def table(self) -> str:
        """The aligned text table (what ``print(summary)`` shows)."""
        n, c, h, w = _nchw(self.input_shape, self.layout)
        batch = f", batch {n}" if len(self.input_shape) == 4 else ""
        head = ["#", "layer", "output H×W×C", "params", "unshared", "FLOPs", "RF", "jump",
                "algorithms (forward / backward data / backward weight)"]
        body = []
        for r in self:
            out = "—" if r.output_shape is None else _hwc(r.output_shape, self.layout)
            algos = ("—" if r.algorithms is None else
                     " / ".join(r.algorithms.get(k, "?") for k in
                                ("forward", "backward_data", "backward_weight")))
            body.append([str(r.index), r.name + ("" if r.fits else "  !"), out,
                         f"{r.params:,}", f"{r.params_unshared:,}", _si(r.flops),
                         _pair_str(r.receptive_field), _pair_str(r.jump), algos])
        total = ["", "total", "", f"{self.params:,}", f"{self.params_unshared:,}",
                 _si(self.flops), "", "", ""]
        widths = [max(len(row[i]) for row in [head, total] + body) for i in range(len(head))]
        right = {0, 3, 4, 5, 6, 7}

        def fmt(row: List[str]) -> str:
            cells = [cell.rjust(wd) if i in right else cell.ljust(wd)
                     for i, (cell, wd) in enumerate(zip(row, widths))]
            return "  ".join(cells).rstrip()

        lines = [f"input {h}×{w}×{c} ({self.layout}{batch})", fmt(head),
                 "  ".join("-" * wd for wd in widths)]
        for r, row in zip(self, body):
            lines.append(fmt(row))
            pad = " " * (widths[0] + 2)
            if r.problem:
                lines.append(f"{pad}! {r.problem}")
            for fix in r.fixes:
                lines.append(f"{pad}  fix: {fix}")
            for note in r.notes:
                lines.append(f"{pad}  note: {note}")
        lines.append("  ".join("-" * wd for wd in widths))
        lines.append(fmt(total))
        bad = [r.index for r in self if not r.fits]
        if bad:
            lines.append(f"layer(s) {', '.join(map(str, bad))} do not fit (marked !): see "
                         "the fixes under each")
        return "\n".join(lines)

    __str__ = table
    __repr__ = table


# --- formatting helpers ---------------------------------------------------------------------

def _si(v: int) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return str(v)


def _pair_str(p: Pair) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}×{p[1]}"


def _nchw(shape: Tuple[int, ...], layout: str) -> Tuple[int, int, int, int]:
    s = tuple(shape) if len(shape) == 4 else (1,) + tuple(shape)
    if layout == "NCHW":
        return s  # type: ignore[return-value]
    return (s[0], s[3], s[1], s[2])


def _from_nchw(n: int, c: int, h: int, w: int, layout: str, batched: bool) -> Tuple[int, ...]:
    s = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    return s if batched else s[1:]


def _hwc(shape: Tuple[int, ...], layout: str) -> str:
    _, c, h, w = _nchw(shape, layout)
    return f"{h}×{w}×{c}"


def _fmt_num(v: float) -> str:
    return f"{v:.4f}".rstrip("0").rstrip(".")


# --- layer specifications -------------------------------------------------------------------

@dataclass
class _Spec:
    kind: str
    name: str
    kernel: Pair
    stride: Pair
    padding: Any = 0
    dilation: Pair = (1, 1)
    out_channels: Optional[int] = None
    in_channels: Optional[int] = None
    groups: int = 1
    bias: bool = True
    shape_rule: Optional[str] = None
    layout: Optional[str] = None
    dtype: Optional[str] = None
    weight_shape: Optional[Tuple[int, ...]] = None
    output_padding: Pair = (0, 0)
    input_size: Optional[Pair] = None   # a locally-connected layer's (H, W)


_NUM = r"\d+(?:[x×]\d+)?"
_CONV_RE = re.compile(rf"(\d+):({_NUM})((?:/{_NUM}|p(?:same|valid|{_NUM})|d{_NUM}|g\d+)*)")
_CONVT_RE = re.compile(rf"convT(\d+):({_NUM})((?:/{_NUM}|p{_NUM}|d{_NUM}|g\d+|o{_NUM})*)")
_OPTT_RE = re.compile(rf"(/|p|d|g|o)({_NUM})")
_POOL_RE = re.compile(rf"(max|avg)?pool({_NUM})((?:/{_NUM}|p{_NUM})*)")
_OPT_RE = re.compile(rf"(/|p|d|g)(same|valid|{_NUM})")


def _num(text: str) -> Any:
    parts = re.split("[x×]", text)
    return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))


def _canonical(text: str) -> str:
    return text.replace("×", "x")


def _parse_string(text: str, where: str) -> _Spec:
    t = text.strip()
    m = _CONV_RE.fullmatch(t)
    if m:
        opts = {k: v for k, v in _OPT_RE.findall(m.group(3))}
        padding: Any = opts.get("p", "0")
        padding = padding if padding in ("same", "valid") else _num(padding)
        return _conv_spec(where, f"conv {_canonical(t)}", out_channels=int(m.group(1)),
                          kernel_size=_num(m.group(2)), stride=_num(opts.get("/", "1")),
                          padding=padding, dilation=_num(opts.get("d", "1")),
                          groups=int(opts.get("g", "1")))
    m = _CONVT_RE.fullmatch(t)
    if m:
        opts = {k: v for k, v in _OPTT_RE.findall(m.group(3))}
        return _convt_spec(where, f"convT {_canonical(t)[5:]}", out_channels=int(m.group(1)),
                           kernel_size=_num(m.group(2)), stride=_num(opts.get("/", "1")),
                           padding=_num(opts.get("p", "0")), dilation=_num(opts.get("d", "1")),
                           groups=int(opts.get("g", "1")),
                           output_padding=_num(opts.get("o", "0")))
    m = _POOL_RE.fullmatch(t)
    if m:
        opts = {k: v for k, v in _OPT_RE.findall(m.group(3))}
        k = _num(m.group(2))
        return _pool_spec(where, f"{m.group(1) or ''}pool {_canonical(t).split('pool', 1)[1]}",
                          k, _num(opts["/"]) if "/" in opts else k, _num(opts.get("p", "0")))
    raise ValueError(
        f"{where}: cannot read layer {text!r}; write a conv layer as 'K:F' with options "
        "/stride pPadding dDilation gGroups (e.g. '96:11/4', '256:5p2', '64:3/2p1', "
        "'32:3x1'), a transposed conv layer as 'convTK:F' with the same options and oP "
        "output_padding (e.g. 'convT64:4/2p1'), a pooling layer as 'poolF' or 'poolF/S' "
        "(e.g. 'pool2', 'pool3/2')")


def _conv_spec(where: str, name: Optional[str], *, out_channels: Any, kernel_size: Any,
               stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: Any = 1,
               bias: Any = True, shape_rule: Any = None) -> _Spec:
    try:
        if not is_int(out_channels):
            raise TypeError(f"out_channels must be an int, got {out_channels!r}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        kernel = pair(kernel_size, "kernel_size", 1)
        st = pair(stride, "stride", 1)
        dil = pair(dilation, "dilation", 1)
        padding4(padding, kernel, st, dil)  # checks the form (e.g. 'same' needs stride 1)
        g = check_groups(groups)
        if out_channels % g:
            raise ValueError(f"groups={g} must divide out_channels={out_channels}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        rule = None if shape_rule is None else check_shape_rule(shape_rule)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None
    if name is None:
        name = "conv " + _spec_text(int(out_channels), kernel, st, padding, dil, g)
    return _Spec("conv", name, kernel, st, padding, dil, out_channels=int(out_channels),
                 groups=g, bias=bias, shape_rule=rule)


def _convt_spec(where: str, name: Optional[str], *, out_channels: Any, kernel_size: Any,
                stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: Any = 1,
                bias: Any = True, output_padding: Any = 0) -> _Spec:
    from .transposed import _output_padding, _padding
    try:
        if not is_int(out_channels):
            raise TypeError(f"out_channels must be an int, got {out_channels!r}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        kernel = pair(kernel_size, "kernel_size", 1)
        st = pair(stride, "stride", 1)
        dil = pair(dilation, "dilation", 1)
        pads = _padding(padding)
        op = _output_padding(output_padding, st, dil)
        g = check_groups(groups)
        if out_channels % g:
            raise ValueError(f"groups={g} must divide out_channels={out_channels}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None
    if name is None:
        name = "convT " + _spec_text(int(out_channels), kernel, st, _pad_arg(pads), dil, g) + (
            "" if op == (0, 0) else f"o{_pair_text(op)}")
    return _Spec("convT", name, kernel, st, pads, dil, out_channels=int(out_channels),
                 groups=g, bias=bias, output_padding=op)


def _pad_arg(pads: Tuple[int, int, int, int]) -> Any:
    """A (top, bottom, left, right) padding as the pair it is when symmetric."""
    return (pads[0], pads[2]) if pads[0] == pads[1] and pads[2] == pads[3] else pads


def _pool_spec(where: str, name: Optional[str], kernel: Any, stride: Any, padding: Any,
               mode: str = "max", shape_rule: Any = None) -> _Spec:
    try:
        k = pair(kernel, "pool size", 1)
        st = pair(stride, "stride", 1)
        if isinstance(padding, str):
            raise TypeError(f"a pooling layer's padding must be an int or a pair, got {padding!r}")
        padding4(padding, k, st, (1, 1))
        if mode not in ("max", "avg"):
            raise ValueError(f"pool mode must be 'max' or 'avg', got {mode!r}")
        rule = None if shape_rule is None else check_shape_rule(shape_rule)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None
    if name is None:
        name = f"{mode}pool {_pair_text(k)}" + ("" if st == k else f"/{_pair_text(st)}")
    return _Spec("pool", name, k, st, padding, shape_rule=rule)


def _pair_text(p: Pair) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def _spec_text(k: int, kernel: Pair, stride: Pair, padding: Any, dil: Pair, g: int) -> str:
    text = f"{k}:{_pair_text(kernel)}"
    if stride != (1, 1):
        text += f"/{_pair_text(stride)}"
    if isinstance(padding, str):
        text += "" if padding == "valid" else f"p{padding}"
    elif isinstance(padding, (tuple, list)) and len(padding) == 4:
        if any(padding):
            text += "p(" + ",".join(str(int(v)) for v in padding) + ")"
    else:
        pads = pair(padding, "padding", 0)
        text += "" if pads == (0, 0) else f"p{_pair_text(pads)}"
    if dil != (1, 1):
        text += f"d{_pair_text(dil)}"
    if g != 1:
        text += f"g{g}"
    return text


_CONV_KEYS = {"out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
              "shape_rule", "name"}
_CONVT_KEYS = {"transposed", "out_channels", "kernel_size", "stride", "padding", "dilation",
               "groups", "bias", "output_padding", "name"}
_POOL_KEYS = {"pool", "stride", "padding", "mode", "shape_rule", "name"}


def _parse_layer(layer: Any, where: str) -> _Spec:
    if isinstance(layer, ConvTranspose2d):
        text = _spec_text(layer.out_channels, layer.kernel_size, layer.stride,
                          _pad_arg(layer.pads), layer.dilation, layer.groups)
        if layer.output_padding != (0, 0):
            text += f"o{_pair_text(layer.output_padding)}"
        return _Spec("convT", f"ConvTranspose2d {layer.in_channels}→{text}", layer.kernel_size,
                     layer.stride, layer.pads, layer.dilation,
                     out_channels=layer.out_channels, in_channels=layer.in_channels,
                     groups=layer.groups, bias=layer.bias is not None, layout=layer.layout,
                     dtype=layer.dtype.name, weight_shape=tuple(layer.weight.shape),
                     output_padding=layer.output_padding)
    if isinstance(layer, dict) and layer.get("transposed"):
        unknown = set(layer) - _CONVT_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} for a transposed conv "
                             f"layer; the keys are {sorted(_CONVT_KEYS)}")
        missing = [k for k in ("out_channels", "kernel_size") if k not in layer]
        if missing:
            raise ValueError(f"{where}: a transposed conv layer needs "
                             f"{' and '.join(map(repr, missing))}, got {layer!r}")
        kw = {k: v for k, v in layer.items() if k not in ("name", "transposed")}
        return _convt_spec(where, layer.get("name"), **kw)
    if isinstance(layer, LocallyConnected2d):
        text = _spec_text(layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                          (1, 1), 1)
        return _Spec("lc", f"LocallyConnected2d {layer.in_channels}→{text}", layer.kernel_size,
                     layer.stride, layer.padding, out_channels=layer.out_channels,
                     in_channels=layer.in_channels, bias=layer.bias is not None,
                     shape_rule=layer.shape_rule, layout=layer.layout, dtype=layer.dtype.name,
                     input_size=layer.input_size)
    if isinstance(layer, Conv2d):
        text = _spec_text(layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, layer.groups)
        return _Spec("conv", f"Conv2d {layer.in_channels}→{text}", layer.kernel_size,
                     layer.stride, layer.padding, layer.dilation,
                     out_channels=layer.out_channels, in_channels=layer.in_channels,
                     groups=layer.groups, bias=layer.bias is not None,
                     shape_rule=layer.shape_rule, layout=layer.layout, dtype=layer.dtype.name,
                     weight_shape=tuple(layer.weight.shape))
    if isinstance(layer, str):
        return _parse_string(layer, where)
    if isinstance(layer, dict):
        if "pool" in layer:
            unknown = set(layer) - _POOL_KEYS
            if unknown:
                raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} for a pooling "
                                 f"layer; the keys are {sorted(_POOL_KEYS)}")
            return _pool_spec(where, layer.get("name"), layer["pool"],
                              layer.get("stride", layer["pool"]), layer.get("padding", 0),
                              layer.get("mode", "max"), layer.get("shape_rule"))
        unknown = set(layer) - _CONV_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} for a conv layer; the "
                             f"keys are {sorted(_CONV_KEYS)} (or 'pool' for a pooling layer)")
        missing = [k for k in ("out_channels", "kernel_size") if k not in layer]
        if missing:
            raise ValueError(f"{where}: a conv layer needs {' and '.join(map(repr, missing))}, "
                             f"got {layer!r}")
        kw = {k: v for k, v in layer.items() if k != "name"}
        return _conv_spec(where, layer.get("name"), **kw)
    if isinstance(layer, tuple) and 2 <= len(layer) <= 4:
        names = ("out_channels", "kernel_size", "stride", "padding")
        return _conv_spec(where, None, **dict(zip(names, layer)))
    raise TypeError(f"{where} must be a convcore.Conv2d, ConvTranspose2d or "
                    "LocallyConnected2d, a string such as '96:11/4' or "
                    "'pool3/2', a dict {'out_channels', 'kernel_size', ...} or {'pool': F}, "
                    f"or a tuple (out_channels, kernel_size[, stride[, padding]]); "
                    f"got {layer!r}")


def parse_shape(text: str, what: str = "input shape") -> Tuple[int, ...]:
    """'3x227x227' or '8x3x227x227' (× also read) as a tuple of ints."""
    parts = re.split("[x×,]", text.strip())
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        raise ValueError(f"{what} must be CxHxW or NxCxHxW (e.g. 3x227x227), got {text!r}")
    return tuple(int(p) for p in parts)


# --- the arithmetic -------------------------------------------------------------------------

_AXES = (("height", "row", "H"), ("width", "column", "W"))


@dataclass
class _Axis:
    size: int
    k_eff: int
    pad: int      # total padding along the axis
    stride: int

    @property
    def span(self) -> int:
        return self.size + self.pad - self.k_eff

    def key(self) -> Tuple[int, ...]:
        return (self.size, self.k_eff, self.pad, self.stride)


def _lines(count: int, axis: int, both: bool) -> str:
    """'3 rows', '1 column', '3 rows and columns'."""
    plural = "" if count == 1 else "s"
    if both:
        return f"{count} row{plural} and column{plural}"
    return f"{count} {_AXES[axis][1]}{plural}"


def _misfit(ax: _Axis, axis: int, both: bool) -> Tuple[str, List[str]]:
    """(arithmetic, fixes) for an axis whose stride does not divide."""
    dim, _, letter = _AXES[axis]
    if both:
        dim, letter = "height and width", "W"
    rem = ax.span % ax.stride
    more = ax.stride - rem
    exact = ax.span / ax.stride + 1
    arith = (f"{dim}: ({letter} − F + P)/S + 1 = ({ax.size} − {ax.k_eff} + {ax.pad})/"
             f"{ax.stride} + 1 = {_fmt_num(exact)}, not an integer")
    fixes = [f"pad {_lines(more, axis, both).replace(' ', ' more ', 1)} ({more // 2} before, "
             f"{more - more // 2} after), or input {dim} {ax.size + more} or {ax.size - rem}"]
    strides = [d for d in range(1, ax.k_eff + 1) if ax.span % d == 0 and d != ax.stride]
    if strides:
        fixes.append(f"or stride {' or '.join(map(str, strides))}"
                     + ("" if not both else " (along both axes)"))
    fixes.append(f"or shape_rule='crop' (output {ax.span // ax.stride + 1}: the last "
                 f"{_lines(rem, axis, both)} unused) or shape_rule='pad' (output "
                 f"{ax.span // ax.stride + 2}: {_lines(more, axis, both)} of zeros added at "
                 "the end)")
    return arith, fixes


def _join(first: Optional[str], second: str) -> str:
    return second if first is None else f"{first}; {second}"


def _axis_out(ax: _Axis, rule: str) -> int:
    q, rem = divmod(ax.span, ax.stride)
    return q + 1 + (1 if rule == "pad" and rem else 0)


def summary(input_shape: Union[Sequence[int], str], layers: Union[str, Sequence[Any]], *,
            layout: Layout = "NCHW", dtype: DTypeName = "float32",
            shape_rule: ShapeRule = "strict", continue_as: Literal["crop", "pad"] = "crop",
            show: bool = False) -> Summary:
    """Works out a ConvNet's sizes layer by layer.

    For each layer: the output shape, the parameters with sharing (as
    :func:`convcore.conv2d_num_params`) and without (the locally-connected count), the
    FLOPs, the receptive field of one output unit in input pixels (cumulative through the
    stack: ``rf += (k_eff − 1)·jump; jump *= stride``), the implementation convcore would
    run for each pass, and, for a layer whose stride does not fit its input, the arithmetic
    and the paddings, input sizes or strides that would make it fit.

    A layer that does not fit does not stop the summary: its row says why and how to fix
    it, and the summary goes on from the shape that ``shape_rule=continue_as`` gives
    ('crop' by default: what PyTorch and Caffe compute). Only a filter larger than its
    padded input stops it; the rows after it have no output shape.

    Parameters
    ----------
    input_shape : tuple of int or str
        (C, H, W) or (N, C, H, W) in NCHW; (H, W, C) or (N, H, W, C) with layout='NHWC';
        or a string ``"3x227x227"`` (always C×H×W / N×C×H×W). N (default 1) scales FLOPs.
    layers : sequence or str
        The stack, each item a :class:`convcore.Conv2d`, a string such as ``"96:11/4"``,
        ``"256:5p2"``, ``"pool3/2"``, a dict ``{'out_channels': K, 'kernel_size': F,
        'stride', 'padding', 'dilation', 'groups', 'bias', 'shape_rule', 'name'}`` or
        ``{'pool': F, 'stride', 'padding', 'mode', 'name'}``, or a tuple
        ``(K, F[, stride[, padding]])``. A string with several layers separated by spaces
        is read as a list.
    layout : {'NCHW', 'NHWC'}
        Order of input_shape's axes and of the reported shapes; the layout spec layers are
        planned in (a Conv2d object uses its own).
    dtype : {'float32', 'float64'}
        The dtype spec layers are planned in (it can change the algorithms).
    shape_rule : {'strict', 'crop', 'pad'}
        Output-size rule of spec layers that do not set their own (a Conv2d object uses
        its own). Under 'crop' and 'pad' a stride that does not divide is not an error; the
        row notes what was dropped or added.
    continue_as : {'crop', 'pad'}
        How the summary sizes a layer that does not fit under 'strict' to go on.
    show : bool
        Also print the table.

    Returns
    -------
    Summary
        A list of :class:`LayerSummary` rows with totals (``.params``,
        ``.params_unshared``, ``.flops``, ``.fits``, ``.output_shape``); ``str()`` and
        ``repr()`` give the aligned text table.

    Raises
    ------
    ValueError, TypeError
        A malformed input_shape or layer specification (the message names ``layers[i]``).
        Layers that merely do not fit are reported in the table, not raised.

    Examples
    --------
    >>> import convcore
    >>> s = convcore.summary((3, 227, 227), ["96:11/4", "pool3/2", "256:5p2"])
    >>> s[0].output_shape, s[0].params, s[0].params_unshared, s[2].receptive_field
    ((96, 55, 55), 34944, 105705600, (51, 51))
    >>> s = convcore.summary((3, 224, 224), ["96:11/4"])
    >>> s.fits, s[0].output_shape
    (False, (96, 54, 54))
    >>> print(s)   # doctest: +ELLIPSIS
    input 224×224×3 (NCHW)
    ...
    1  conv 96:11/4  !  54×54×96 ...
       ! height and width: (W − F + P)/S + 1 = (224 − 11 + 0)/4 + 1 = 54.25, not an integer ...
         fix: pad 3 more rows and columns (1 before, 2 after), or input height and width 227 or 223
    ...
    """
    layout = check_layout(layout)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    default_rule = check_shape_rule(shape_rule)
    if continue_as not in ("crop", "pad"):
        raise ValueError(f"continue_as must be 'crop' or 'pad', got {continue_as!r}")
    if isinstance(input_shape, str):
        shape = parse_shape(input_shape)
        if layout == "NHWC":
            shape = _from_nchw(*_nchw(shape, "NCHW"), "NHWC", len(shape) == 4)
    else:
        if (not isinstance(input_shape, (tuple, list)) or len(input_shape) not in (3, 4)
                or not all(is_int(v) and v >= 1 for v in input_shape)):
            raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W) in {layout} "
                             f"order with positive sizes, got {input_shape!r}")
        shape = tuple(int(v) for v in input_shape)
    batched = len(shape) == 4
    if isinstance(layers, str):
        layers = layers.split()
    if not isinstance(layers, (list, tuple)):
        raise TypeError(f"layers must be a list of layers, got {type(layers).__name__}")
    specs = [_parse_layer(layer, f"layers[{i}]") for i, layer in enumerate(layers)]

    n, c, h, w = _nchw(shape, layout)
    rf, jump = [1, 1], [1, 1]
    rows: List[LayerSummary] = []
    sized = True   # False after a layer whose output cannot be computed at all
    for i, spec in enumerate(specs, start=1):
        row = LayerSummary(i, spec.name, spec.kind,
                           _from_nchw(n, c, h, w, layout, batched) if sized else None, None)
        rows.append(row)
        if spec.kind == "convT":
            sized, (n, c, h, w) = _transposed_row(row, spec, sized, (n, c, h, w), rf, jump,
                                                  layout, dtype, batched)
            continue
        pads = padding4(spec.padding, spec.kernel, spec.stride, spec.dilation)
        axes = [_Axis(h, spec.dilation[0] * (spec.kernel[0] - 1) + 1, pads[0] + pads[1],
                      spec.stride[0]),
                _Axis(w, spec.dilation[1] * (spec.kernel[1] - 1) + 1, pads[2] + pads[3],
                      spec.stride[1])]
        # The receptive field does not depend on the sizes (nor on padding).
        for a in range(2):
            rf[a] += (axes[a].k_eff - 1) * jump[a]
            jump[a] *= axes[a].stride
        row.receptive_field, row.jump = (rf[0], rf[1]), (jump[0], jump[1])

        # Channels, and the parameter count (which does not depend on the sizes either).
        cin = c
        if spec.kind in ("conv", "lc"):
            k, g = spec.out_channels, spec.groups
            assert k is not None
            if spec.in_channels is not None and spec.in_channels != c:
                row.fits = False
                row.problem = (f"the layer takes in_channels={spec.in_channels} but its input "
                               f"has {c} channels")
                row.fixes.append(f"make the previous layer give {spec.in_channels} channels "
                                 f"or build this one with in_channels={c}")
                row.notes.append(f"counted with in_channels={spec.in_channels}")
                cin = spec.in_channels
            if cin % g:
                row.fits = False
                row.problem = _join(row.problem, f"groups={g} does not divide the {cin} input "
                                                 "channels")
                row.fixes.append(f"groups dividing both {cin} and {k}")
                sized = False
                c = k
                continue
            taps = (cin // g) * spec.kernel[0] * spec.kernel[1]
            row.params = k * taps + (k if spec.bias else 0)
            c_out = k
        else:
            c_out = c
        if not sized:
            row.fits = False
            row.problem = _join(row.problem, "not sized: an earlier layer does not fit its "
                                             "input at all")
            c = c_out
            continue

        too_big = [a for a in range(2) if axes[a].span < 0]
        if too_big:
            dim = " and ".join(_AXES[a][0] for a in too_big)
            ax = axes[too_big[0]]
            row.fits = False
            row.problem = _join(row.problem, f"{dim}: the filter ({ax.k_eff}) is larger than "
                                             f"the padded input ({ax.size} + {ax.pad}): it "
                                             "fits nowhere")
            row.fixes.append(f"pad at least {-ax.span} more, a smaller filter, or an input "
                             f"{dim} of at least {ax.k_eff - ax.pad}")
            sized = False
            c = c_out
            continue

        rule = spec.shape_rule or default_rule
        effective = rule
        misfits = [a for a in range(2) if axes[a].span % axes[a].stride]
        if misfits:
            both = len(misfits) == 2 and axes[0].key() == axes[1].key()
            problems = []
            for a in misfits[:1] if both else misfits:
                arith, fixes = _misfit(axes[a], a, both)
                if rule == "strict":
                    problems.append(arith)
                    row.fixes.extend(fixes)
                else:
                    rem = axes[a].span % axes[a].stride
                    what = (f"the last {_lines(rem, a, both)} unused" if rule == "crop" else
                            f"{_lines(axes[a].stride - rem, a, both)} of zeros added at "
                            "the end")
                    row.notes.append(f"{arith}; shape_rule='{rule}': {what}")
            if rule == "strict":
                row.fits = False
                row.problem = _join(row.problem,
                                    "; ".join(problems) + " (shape_rule='strict')")
                effective = continue_as
                row.notes.append(f"sized as shape_rule='{continue_as}' to go on")

        ho, wo = _axis_out(axes[0], effective), _axis_out(axes[1], effective)
        if spec.kind == "lc":
            # No sharing: every output position has its own filters, so the parameters
            # are the unshared count, and the layer takes one input size only.
            k = spec.out_channels
            assert k is not None and spec.input_size is not None
            taps = cin * spec.kernel[0] * spec.kernel[1]
            row.params = row.params_unshared = ho * wo * k * (taps + (1 if spec.bias else 0))
            row.flops = 2 * n * k * ho * wo * taps
            if (h, w) != tuple(spec.input_size):
                row.fits = False
                row.problem = _join(row.problem, f"the layer was built for input_size="
                                                 f"{tuple(spec.input_size)}, its input is "
                                                 f"{h}×{w}")
                row.fixes.append(f"build it with input_size=({h}, {w})")
            lay = spec.layout or layout
            try:
                row.algorithms = _lc_algorithms(_from_nchw(n, cin, h, w, lay, True), k,
                                                spec.kernel, spec.stride, spec.padding, lay,
                                                effective, spec.dtype or dtype)
            except (ValueError, MemoryError) as e:
                row.notes.append(f"convcore cannot plan it: {e}")
        if spec.kind == "conv":
            k, g = spec.out_channels, spec.groups
            assert k is not None
            taps = (cin // g) * spec.kernel[0] * spec.kernel[1]
            row.params_unshared = ho * wo * k * (taps + (1 if spec.bias else 0))
            row.flops = 2 * n * k * ho * wo * taps
            lay = spec.layout or layout
            cg = cin // g
            wshape = spec.weight_shape or ((k, cg) + spec.kernel if lay == "NCHW"
                                           else (k,) + spec.kernel + (cg,))
            ishape = _from_nchw(n, cin, h, w, lay, True)
            kw = dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation,
                      groups=g, layout=lay, shape_rule=effective)
            try:
                row.algorithms = _algorithms(ishape, wshape, dtype=spec.dtype or dtype, **kw)
            except (ValueError, MemoryError) as e:  # ShapeError is a ValueError
                row.notes.append(f"convcore cannot plan it: {e}")
        row.output_shape = _from_nchw(n, c_out, ho, wo, layout, batched)
        c, h, w = c_out, ho, wo
    result = Summary(rows, shape, layout)
    if show:
        print(result)
    return result


def _lc_algorithms(ishape: Tuple[int, ...], k: int, kernel: Pair, stride: Pair, padding: Any,
                   layout: str, rule: str, dtype: str) -> Dict[str, str]:
    prob = _LCProblem(ishape, k, kernel, stride, padding, layout, rule, dtype)
    return dict(prob.plan.algorithms)


def _transposed_row(row: LayerSummary, spec: _Spec, sized: bool,
                    nchw: Tuple[int, int, int, int], rf: List[int], jump: List[int],
                    layout: str, dtype: str, batched: bool
                    ) -> Tuple[bool, Tuple[int, int, int, int]]:
    """Fills a transposed conv layer's row; returns (sized, the next input's n, c, h, w)."""
    n, c, h, w = nchw
    k, g = spec.out_channels, spec.groups
    assert k is not None
    pads = spec.padding
    for a in range(2):
        k_eff = spec.dilation[a] * (spec.kernel[a] - 1) + 1
        rf[a] += (-(-k_eff // spec.stride[a]) - 1) * jump[a]
        jump[a] = max(1, jump[a] // spec.stride[a])
    row.receptive_field, row.jump = (rf[0], rf[1]), (jump[0], jump[1])
    cin = c
    if spec.in_channels is not None and spec.in_channels != c:
        row.fits = False
        row.problem = (f"the layer takes in_channels={spec.in_channels} but its input has "
                       f"{c} channels")
        row.fixes.append(f"make the previous layer give {spec.in_channels} channels or build "
                         f"this one with in_channels={c}")
        cin = spec.in_channels
    if cin % g:
        row.fits = False
        row.problem = _join(row.problem, f"groups={g} does not divide the {cin} input channels")
        row.fixes.append(f"groups dividing both {cin} and {k}")
        return False, (n, k, h, w)
    taps = (k // g) * spec.kernel[0] * spec.kernel[1]
    row.params = cin * taps + (k if spec.bias else 0)
    if not sized:
        row.fits = False
        row.problem = _join(row.problem, "not sized: an earlier layer does not fit its input "
                                         "at all")
        return False, (n, k, h, w)
    ho = ((h - 1) * spec.stride[0] - pads[0] - pads[1] + spec.dilation[0] * (spec.kernel[0] - 1)
          + spec.output_padding[0] + 1)
    wo = ((w - 1) * spec.stride[1] - pads[2] - pads[3] + spec.dilation[1] * (spec.kernel[1] - 1)
          + spec.output_padding[1] + 1)
    if ho < 1 or wo < 1:
        row.fits = False
        row.problem = _join(row.problem, f"output {ho}×{wo} is not positive: (H − 1)·S − P + "
                                         "d·(F − 1) + output_padding + 1")
        row.fixes.append("less padding, or a larger input or stride")
        return False, (n, k, h, w)
    row.params_unshared = h * w * cin * taps + (ho * wo * k if spec.bias else 0)
    row.flops = 2 * n * cin * h * w * taps
    lay = spec.layout or layout
    kg = k // g
    wshape = spec.weight_shape or ((cin, kg) + spec.kernel if lay == "NCHW"
                                   else (cin,) + spec.kernel + (kg,))
    try:
        row.algorithms = _t_algorithms(_from_nchw(n, cin, h, w, lay, True), wshape,
                                       stride=spec.stride, padding=pads,
                                       output_padding=spec.output_padding,
                                       dilation=spec.dilation, groups=g, layout=lay,
                                       dtype=spec.dtype or dtype)
    except (ValueError, MemoryError) as e:
        row.notes.append(f"convcore cannot plan it: {e}")
    row.output_shape = _from_nchw(n, k, ho, wo, layout, batched)
    return True, (n, k, ho, wo)


# --- command line ---------------------------------------------------------------------------

_CLI_HELP = """\
Prints a ConvNet's sizes layer by layer: output volume (H×W×C), parameters with and
without sharing, FLOPs, receptive field, the stride product ("jump"), the algorithm
convcore picks for each pass, and for a stride that does not fit, the arithmetic and
the fixes.

input:  CxHxW or NxCxHxW, e.g. 3x227x227 or 128x3x227x227 (N scales the FLOPs)
layers: K:F      a conv layer of K filters F×F (K:RxS rectangular), with options
                 /S stride, pP padding (p2, p1x2, psame), dD dilation, gG groups
                 e.g. 96:11/4  256:5p2  64:3/2p1  256:3p1g32  32:3x1
        convTK:F a transposed conv layer of K output channels: the conv options and
                 oP output_padding, e.g. convT64:4/2p1  convT32:3/2p1o1
        poolF    a pooling layer F×F, stride F; poolF/S, poolF/SpP (e.g. pool2, pool3/2)

example (AlexNet):
  python -m convcore summary 3x227x227 96:11/4 pool3/2 256:5p2 pool3/2 384:3p1 384:3p1 \\
      256:3p1 pool3/2

Exit status: 0 when every layer fits, 1 when one does not (the table says which and how
to fix it), 2 for a command line that cannot be read."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m convcore summary``: see ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m convcore summary", description=_CLI_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="input volume, CxHxW or NxCxHxW")
    parser.add_argument("layers", nargs="*", help="layers, e.g. 96:11/4 pool3/2 256:5p2")
    parser.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW",
                        help="layout to plan the layers in (default NCHW)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype to plan the layers in (default float32)")
    parser.add_argument("--shape-rule", choices=("strict", "crop", "pad"), default="strict",
                        help="output-size rule when a stride does not divide (default "
                             "strict: report the layer and its fixes)")
    parser.add_argument("--continue-as", choices=("crop", "pad"), default="crop",
                        help="how to size a layer that does not fit to go on (default crop)")
    args = parser.parse_args(argv)
    try:
        result = summary(args.input, list(args.layers), layout=args.layout, dtype=args.dtype,
                         shape_rule=args.shape_rule, continue_as=args.continue_as)
    except (TypeError, ValueError) as e:
        parser.error(str(e))
    print(result)
    return 0 if result.fits else 1
