"""The fuzzer's child process: runs cases and judges each against the oracle.

    python tests/fuzz/worker.py                 # serve: one JSON case per stdin line,
                                                # one JSON verdict per stdout line
    python tests/fuzz/worker.py --case 'JSON'   # replay one case here and print the verdict

A verdict is {"ok": bool, "class": failure class, "detail": text, "verified": whether a
result was compared with the reference}. The rule for every call: it returns the float64
direct-loop result (oracle.py) within rounding, or it raises ValueError (ShapeError),
TypeError or MemoryError with a message naming an argument — and only for input the API
documents as invalid, or (MemoryError/ValueError) for sizes beyond what can be allocated.
Crashes and hangs are seen by the parent (test_fuzz_api.py), which restarts this process.

The process limits its address space (CONVCORE_FUZZ_MEMORY_GB, default 4) so that a call
that allocates memory sized by its hyperparameters fails fast with MemoryError instead of
taking the machine.
"""
from __future__ import annotations

import json
import numbers
import os
import pickle
import re
import resource
import sys
import time
import traceback
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import numpy as np  # noqa: E402

import convcore  # noqa: E402
from convcore import _core  # noqa: E402
import reference as ref  # noqa: E402
import oracle  # noqa: E402
from cases import dec  # noqa: E402

ALLOWED = (ValueError, TypeError, MemoryError)
MAX_INT = 2**62
BIG_BYTES = 256 << 20          # results/copies above this may raise MemoryError
REF_ELEMENTS = 1 << 22         # the reference runs when every array is below this ...
REF_WORK = 20_000_000          # ... and its loops below this many products

# Words that name an argument. A message must contain one as a whole word: "std::bad_alloc",
# pybind's "incompatible function arguments" or "sizes along the height are too large" do
# not. (NumPy's MemoryError for a result that really is too large is accepted as it is.)
CONV_NAMES = """x weight bias grad_output input_shape weight_shape input output stride padding
dilation groups layout shape_rule activation kernel kernel_size filter filters channels
in_channels out_channels dtype""".split()
NAMES = {"conv2d": CONV_NAMES + ["out"], "gemm": ["a", "b", "out", "inner"],
         "conv2d_num_params": ["in_channels", "out_channels", "kernel_size", "groups", "bias"],
         "set_num_threads": ["n", "threads", "num_threads"],
         "Conv2d": CONV_NAMES + ["grad_y", "rng", "requires_input_grad", "init"],
         "locally_connected2d": CONV_NAMES + ["out"],
         "locally_connected2d_backward": CONV_NAMES,
         "locally_connected2d_num_params": CONV_NAMES + ["input_size"],
         "LocallyConnected2d": CONV_NAMES + ["input_size", "grad_y", "rng", "requires_input_grad",
                                             "init"]}
# single letters only as a subject ("a must be", "x has", "b 3-D"), not as English words
NAME_RES = {
    fn: re.compile(r"(?<![\w])(" + "|".join(re.escape(n) for n in names if len(n) > 1)
                   + r")(?![\w])|(?<![\w])(" + ("|".join(n for n in names if len(n) == 1) or "_^")
                   + r")(?= (must|is|has|and|of|\(|\d))", re.I)
    for fn, names in NAMES.items()}


class Invalid(Exception):
    """The oracle's verdict: the API documents this input as an error."""


class Extreme(Exception):
    """Valid input whose sizes are beyond what can be allocated or represented: an error
    naming an argument is as good as the result."""


# --- arrays -----------------------------------------------------------------------------------

def _dtype(name: str):
    return {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64),
            "pickled32": np.dtype(np.float32), "pickled64": np.dtype(np.float64),
            "pickle5_32": np.dtype(np.float32), "meta32": np.dtype(np.float32, metadata={"fuzz": 1}),
            "meta64": np.dtype(np.float64, metadata={"fuzz": 1}), "<f4": np.dtype("<f4"),
            "=f8": np.dtype("=f8"), ">f4": np.dtype(">f4"), ">f8": np.dtype(">f8"),
            "float16": np.dtype(np.float16), "int32": np.dtype(np.int32),
            "int64": np.dtype(np.int64), "complex64": np.dtype(np.complex64),
            "bool": np.dtype(bool), "object": np.dtype(object),
            "longdouble": np.dtype(np.longdouble)}[name]


def build_array(spec: Dict[str, Any]) -> Any:
    shape = tuple(spec["shape"])
    rng = np.random.default_rng(spec["seed"])
    n = int(np.prod(shape, dtype=object)) if shape else 1
    if (n > REF_ELEMENTS or max(shape, default=0) > 2**31) and spec["view"] != "broadcast":
        spec = dict(spec, view="broadcast")
    count = 1 if spec["view"] == "broadcast" else n
    fill = spec["fill"]
    if fill == "ints":
        v = rng.integers(-3, 4, count).astype(np.float64)
    elif fill == "ones":
        v = np.ones(count)
    else:
        v = rng.standard_normal(count)
        if fill == "special" and count:
            m = rng.random(count) < 0.15
            v[m] = rng.choice([np.inf, -np.inf, np.nan, 0.0], int(m.sum()))
    if spec["dtype"] == "list":
        return v.reshape(shape).tolist() if spec["view"] != "broadcast" else [1.0]
    if spec["dtype"] == "scalar":
        return 1.0
    dt = _dtype(spec["dtype"])
    base = v.astype(dt)
    if spec["dtype"].startswith("pickled"):
        base = pickle.loads(pickle.dumps(base))
    elif spec["dtype"] == "pickle5_32":
        bufs: List[Any] = []
        data = pickle.dumps(base, protocol=5, buffer_callback=bufs.append)
        base = pickle.loads(data, buffers=bufs)
    dt = base.dtype
    view = spec["view"]
    if view == "broadcast":
        scalar = base.reshape(-1)[:1].reshape(()) if count else np.zeros((), dt)
        while True:
            try:
                return np.broadcast_to(scalar, shape)
            except ValueError:  # more elements than NumPy can index: shrink the largest axis
                i = int(np.argmax(shape))
                shape = shape[:i] + (1,) + shape[i + 1:]
    base = base.reshape(shape)
    nd = base.ndim
    if view == "noncontig" and nd:
        big = np.empty(shape[:-1] + (2 * shape[-1],), dt)
        big[..., ::2] = base
        return big[..., ::2]
    if view == "fortran":
        return np.asfortranarray(base)
    if view == "negstride" and nd:
        rev = (slice(None, None, -1),) * nd
        return np.ascontiguousarray(base[rev])[rev]
    if view == "transposed" and nd:
        return np.ascontiguousarray(base.T).T
    if view == "readonly":
        c = base.copy()
        c.flags.writeable = False
        return c
    if view == "misaligned" and dt != np.dtype(object) and dt.itemsize > 1:
        buf = np.empty(base.nbytes + 64, np.uint8)
        start = (16 - buf.ctypes.data % 16) % 16 + 1
        a = buf[start:start + base.nbytes].view(dt).reshape(shape)
        a[...] = base
        return a
    return base


def build_out(kind: str, shape: Tuple[int, ...], dtype, inputs: Dict[str, Any]) -> Any:
    if kind == "list":
        return []
    if kind.startswith("alias_"):
        return inputs.get(kind[6:])
    if kind.startswith("overlap_"):
        src = inputs.get(kind[8:])
        n = int(np.prod(shape, dtype=object))
        if (isinstance(src, np.ndarray) and src.flags.c_contiguous and src.flags.writeable
                and src.size >= n and src.dtype == dtype):
            return src.reshape(-1)[src.size - n:].reshape(shape)
        return src
    if kind == "wrong_dtype":
        dtype = np.float64 if np.dtype(dtype) == np.float32 else np.float32
    if kind == "wrong_shape":
        shape = tuple(shape[:-1]) + (shape[-1] + 1,) if shape else (1,)
    spec = {"shape": list(shape), "dtype": "float64" if np.dtype(dtype) == np.float64 else "float32",
            "fill": "ones", "seed": 0,
            "view": {"readonly": "readonly", "noncontig": "noncontig", "fortran": "fortran",
                     "misaligned": "misaligned"}.get(kind, "contig")}
    return build_array(spec)


# --- the oracle's reading of arguments -----------------------------------------------------

def o_int(v, name, minimum=None) -> int:
    if not isinstance(v, numbers.Integral) or isinstance(v, (bool, np.bool_)):
        raise Invalid(f"{name}: not an int")
    v = int(v)
    if abs(v) > MAX_INT:
        raise Invalid(f"{name}: beyond 2**62")
    if minimum is not None and v < minimum:
        raise Invalid(f"{name}: below {minimum}")
    return v


def o_pair(v, name, minimum) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise Invalid(f"{name}: length {len(v)}")
        return o_int(v[0], name, minimum), o_int(v[1], name, minimum)
    a = o_int(v, name, minimum)
    return a, a


def o_padding(v, kernel, stride, dilation) -> Tuple[int, int, int, int]:
    if isinstance(v, str):
        if v == "valid":
            return (0, 0, 0, 0)
        if v == "same" and stride == (1, 1):
            return ref.resolve_padding("same", kernel, stride, dilation)
        raise Invalid("padding: string")
    if isinstance(v, (tuple, list)):
        if len(v) == 2:
            a, b = (o_int(e, "padding", 0) for e in v)
            return (a, a, b, b)
        if len(v) == 4:
            return tuple(o_int(e, "padding", 0) for e in v)  # type: ignore[return-value]
        raise Invalid("padding: length")
    a = o_int(v, "padding", 0)
    return (a, a, a, a)


class Soft:
    """Inputs the API may refuse or accept (then the result must be right): non-native
    byte order, out= that is not C-contiguous/aligned or overlaps an input."""

    def __init__(self) -> None:
        self.reasons: List[str] = []


def o_array(a, name, soft: Soft, ndims=None, ref_dtype=None) -> np.dtype:
    if not isinstance(a, np.ndarray):
        raise Invalid(f"{name}: not an ndarray")
    dt = a.dtype
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        raise Invalid(f"{name}: dtype {dt}")
    if not dt.isnative:
        soft.reasons.append(f"{name}: byte order")
    canon = np.dtype(np.float32 if dt.itemsize == 4 else np.float64)
    if ref_dtype is not None and canon != ref_dtype:
        raise Invalid(f"{name}: mixed dtypes")
    if ndims is not None and a.ndim not in ndims:
        raise Invalid(f"{name}: ndim {a.ndim}")
    return canon


def o_shape(v, name, lengths) -> Tuple[int, ...]:
    if not isinstance(v, (tuple, list)):
        raise Invalid(f"{name}: not a tuple")
    if len(v) not in lengths:
        raise Invalid(f"{name}: length")
    return tuple(o_int(e, name, 0) for e in v)


def o_out(out, shape, dtype, inputs: List[Any], soft: Soft) -> None:
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise Invalid("out: not an ndarray")
    if out.dtype != dtype or out.shape != tuple(shape):
        raise Invalid("out: dtype/shape")
    if not out.flags.writeable:
        raise Invalid("out: read-only")
    if not (out.flags.c_contiguous and out.flags.aligned):
        soft.reasons.append("out: layout")
    if any(isinstance(a, np.ndarray) and np.may_share_memory(out, a) for a in inputs):
        soft.reasons.append("out: overlaps an input")


def o_geometry(x_shape, w_shape, kw: Dict[str, Any], soft: Soft) -> ref.Geometry:
    """The problem in reference.Geometry terms, after the API's rules (Invalid if broken)."""
    layout = kw.get("layout", "NCHW")
    if not isinstance(layout, str) or layout not in ("NCHW", "NHWC"):
        raise Invalid("layout")
    rule = kw.get("shape_rule", "strict")
    if not isinstance(rule, str) or rule not in ("strict", "crop", "pad"):
        raise Invalid("shape_rule")
    groups = o_int(kw.get("groups", 1), "groups", 1)
    stride = o_pair(kw.get("stride", 1), "stride", 1)
    dilation = o_pair(kw.get("dilation", 1), "dilation", 1)
    if len(w_shape) != 4 or len(x_shape) not in (3, 4):
        raise Invalid("ndim")
    xs = tuple(x_shape) if len(x_shape) == 4 else (1,) + tuple(x_shape)
    if layout == "NCHW":
        n, c, h, w = xs
        k, cg, r, s = w_shape
    else:
        n, h, w, c = xs
        k, r, s, cg = w_shape
    for v, what in ((c, "in_channels"), (h, "height"), (w, "width"), (k, "out_channels"),
                    (cg, "channels per group"), (r, "kernel height"), (s, "kernel width")):
        if v < 1:
            raise Invalid(f"{what} is 0")
    if cg * groups != c or k % groups:
        raise Invalid("groups/channels")
    pads = o_padding(kw.get("padding", 0), (r, s), stride, dilation)
    try:
        geo = ref.Geometry(x_shape, w_shape, stride=stride, padding=pads, dilation=dilation,
                           groups=groups, layout=layout, shape_rule=rule)
    except ref.RefShapeError as e:
        raise Invalid(f"shape: {e}")
    return geo


def extreme(geo: Optional[ref.Geometry], arrays_bytes: List[int], result_bytes: List[int]) -> bool:
    """Sizes at which an error naming the argument is acceptable instead of the result."""
    if geo is not None:
        vals = [geo.N, geo.C, geo.H, geo.W, geo.K, geo.R, geo.S, geo.sh, geo.sw, geo.dh, geo.dw,
                geo.pt, geo.pb_total, geo.pl, geo.pr_total, geo.Ho, geo.Wo]
        if max(vals) > 2**31:
            return True
        ext_h = geo.dh * (geo.R - 1) + geo.pt + geo.pb_total + geo.H
        ext_w = geo.dw * (geo.S - 1) + geo.pl + geo.pr_total + geo.W
        if max(ext_h, ext_w) > 2**31:
            return True
    return max(arrays_bytes + result_bytes + [0]) > BIG_BYTES


def nbytes(shape, itemsize) -> int:
    return int(np.prod(shape, dtype=object)) * itemsize if len(shape) else itemsize


def copy_bytes(a) -> int:
    """What a contiguous copy of an input would take (broadcast views have no memory)."""
    return nbytes(a.shape, a.itemsize) if isinstance(a, np.ndarray) else 0


def feasible(geo: ref.Geometry) -> bool:
    sizes = [geo.N * geo.C * geo.H * geo.W, geo.N * geo.K * geo.Ho * geo.Wo, geo.K * geo.Cg * geo.R * geo.S]
    return max(sizes) <= REF_ELEMENTS and oracle.work(geo) <= REF_WORK


# --- expectations per function --------------------------------------------------------------

class Expect:
    """What a call must produce: `check(result)` returns None or what is wrong."""

    def __init__(self, check=None, is_extreme=False, soft: Optional[Soft] = None, verified=True,
                 huge_result=False):
        self.check = check
        self.huge_result = huge_result
        self.extreme = is_extreme
        self.soft = soft or Soft()
        self.verified = verified


def _abs(a):
    return None if a is None else np.abs(a)


def _conv_checks(geo: ref.Geometry, dt, which: str, **arrs):
    """A check function comparing a result (user layout) with the oracle."""
    def fwd(x, w, b):
        return oracle.forward(geo, x, w, b)

    if which == "forward":
        x, w, b, relu = geo.act_in(arrs["x"]), geo.w_in(arrs["w"]), arrs.get("b"), arrs["relu"]
        b = None if b is None else np.asarray(b, np.float64)
        exp = fwd(x, w, b)
        if relu:
            exp = np.where(np.isnan(exp), np.nan, np.maximum(exp, 0.0))
        mag = fwd(_abs(x), _abs(w), _abs(b))
        exp, mag, terms = geo.act_out(exp), geo.act_out(mag), geo.terms("forward")
    elif which == "input":
        dy, w = geo.act_in(arrs["dy"]), geo.w_in(arrs["w"])
        exp = geo.act_out(oracle.backward_input(geo, dy, w))
        mag = geo.act_out(oracle.backward_input(geo, np.abs(dy), np.abs(w)))
        terms = geo.terms("input")
    elif which == "weight":
        dy, x = geo.act_in(arrs["dy"]), geo.act_in(arrs["x"])
        exp = geo.w_out(oracle.backward_weight(geo, dy, x))
        mag = geo.w_out(oracle.backward_weight(geo, np.abs(dy), np.abs(x)))
        terms = geo.terms("weight")
    else:  # bias
        dy = np.asarray(arrs["dy"], np.float64)
        exp = ref.conv2d_backward_bias(dy, geo.layout)
        mag = ref.conv2d_backward_bias(np.abs(dy), geo.layout)
        terms = max(geo.N * geo.Ho * geo.Wo, 1)
    relu = which == "forward" and arrs.get("relu", False)

    def check(got) -> Optional[str]:
        if not isinstance(got, np.ndarray):
            return f"{which}: returned {type(got).__name__}"
        if got.dtype != dt:
            return f"{which}: dtype {got.dtype}, expected {dt}"
        d = oracle.compare(got, exp, mag, dt, terms, relu)
        return None if d is None else f"{which}: {d}"
    return check


def _shape_check(geo, dt, which):
    shape = {"forward": geo.out_shape(), "input": geo.x_shape(), "weight": geo.w_shape(),
             "bias": (geo.K,)}[which]

    def check(got):
        if not isinstance(got, np.ndarray) or got.shape != tuple(shape) or got.dtype != dt:
            return f"{which}: got {getattr(got, 'shape', got)!r}, expected shape {shape}"
        return None
    return check


def expect_conv(fn: str, args: List[Any], kw: Dict[str, Any]) -> Expect:
    soft = Soft()
    hyper = {k: kw[k] for k in ("stride", "padding", "dilation", "groups", "layout", "shape_rule")
             if k in kw}
    if fn == "conv2d_output_shape":
        if len(args) != 2:
            raise Invalid("arity")
        xs = o_shape(args[0], "input_shape", (3, 4))
        ws = o_shape(args[1], "weight_shape", (4,))
        geo = o_geometry(xs, ws, hyper, soft)
        big = [nbytes(xs, 8), nbytes(ws, 8), nbytes(geo.out_shape(), 8)]
        want = geo.out_shape()
        return Expect(lambda got: None if got == want else f"shape {got!r}, expected {want!r}",
                      max(big) >= 2**63 or extreme(geo, big, []), soft)
    if fn == "conv2d":
        x, w = args
        dt = o_array(x, "x", soft, (3, 4))
        o_array(w, "weight", soft, (4,), dt)
        act = kw.get("activation")
        if not (act is None or (isinstance(act, str) and act == "relu")):
            raise Invalid("activation")
        geo = o_geometry(x.shape, w.shape, hyper, soft)
        b = kw.get("bias")
        if b is not None:
            o_array(b, "bias", soft, None, dt)
            if b.shape != (geo.K,):
                raise Invalid("bias shape")
        o_out(kw.get("out"), geo.out_shape(), dt, [x, w, b], soft)
        results = [("forward", dict(x=x, w=w, b=b, relu=act == "relu"))]
        ins = [x, w] + ([b] if b is not None else [])
    elif fn == "conv2d_backward_input":
        dy, w, xs = args
        dt = o_array(dy, "grad_output", soft)
        o_array(w, "weight", soft, (4,), dt)
        xs = o_shape(xs, "input_shape", (3, 4))
        geo = o_geometry(xs, w.shape, hyper, soft)
        if dy.shape != geo.out_shape():
            raise Invalid("grad_output shape")
        results = [("input", dict(dy=dy, w=w))]
        ins = [dy, w]
    elif fn == "conv2d_backward_weight":
        dy, x, ws = args
        dt = o_array(x, "x", soft, (3, 4))
        o_array(dy, "grad_output", soft, None, dt)
        ws = o_shape(ws, "weight_shape", (4,))
        geo = o_geometry(x.shape, ws, hyper, soft)
        if dy.shape != geo.out_shape():
            raise Invalid("grad_output shape")
        results = [("weight", dict(dy=dy, x=x))]
        ins = [dy, x]
    elif fn == "conv2d_backward":
        dy, x, w = args
        dt = o_array(x, "x", soft, (3, 4))
        o_array(w, "weight", soft, (4,), dt)
        o_array(dy, "grad_output", soft, None, dt)
        bias = kw.get("bias", True)
        if not isinstance(bias, (bool, np.bool_)):
            raise Invalid("bias flag")
        geo = o_geometry(x.shape, w.shape, hyper, soft)
        if dy.shape != geo.out_shape():
            raise Invalid("grad_output shape")
        results = [("input", dict(dy=dy, w=w)), ("weight", dict(dy=dy, x=x))]
        if bias:
            results.append(("bias", dict(dy=dy)))
        ins = [dy, x, w]
    else:
        raise AssertionError(fn)
    res_bytes = [nbytes(geo.out_shape(), dt.itemsize), nbytes(geo.x_shape(), dt.itemsize)]
    is_ext = extreme(geo, [copy_bytes(a) for a in ins], res_bytes)
    if not feasible(geo) or (is_ext and max(res_bytes) > BIG_BYTES):
        checks = [_shape_check(geo, dt, which) for which, _ in results]
        verified = False
    else:
        checks = [_conv_checks(geo, dt, which, **a) for which, a in results]
        verified = True
    out = kw.get("out")

    def check(got):
        if fn == "conv2d_backward":
            if not isinstance(got, convcore.Conv2dGrads):
                return f"returned {type(got).__name__}"
            vals = [got.input, got.weight] + ([got.bias] if len(checks) == 3 else [])
            if len(checks) == 2 and got.bias is not None:
                return "bias gradient returned with bias=False"
        else:
            vals = [got]
            if out is not None and got is not out:
                return "out= given but another array returned"
        for c, v in zip(checks, vals):
            d = c(v)
            if d:
                return d
        return None
    return Expect(check, is_ext, soft, verified,
                  huge_result=max(res_bytes + [copy_bytes(a) for a in ins]) > BIG_BYTES)


# --- the locally-connected layer -------------------------------------------------------------

LC_HYPER = ("stride", "padding", "layout", "shape_rule")


def lc_geometry(x_shape, w_shape, kw: Dict[str, Any]) -> ref.Geometry:
    """The conv2d Geometry with the layer's x, K, C, R, S, stride and padding (Invalid if
    broken); w_shape is the 6-D weight's, which must then be (Ho, Wo, K, ...) exactly."""
    extra = set(kw) - set(LC_HYPER)
    if extra:
        raise Invalid(f"unexpected keyword {sorted(extra)}")
    layout = kw.get("layout", "NCHW")
    if not isinstance(layout, str) or layout not in ("NCHW", "NHWC"):
        raise Invalid("layout")
    rule = kw.get("shape_rule", "strict")
    if not isinstance(rule, str) or rule not in ("strict", "crop", "pad"):
        raise Invalid("shape_rule")
    stride = o_pair(kw.get("stride", 1), "stride", 1)
    if len(w_shape) != 6 or len(x_shape) not in (3, 4):
        raise Invalid("ndim")
    if min(w_shape) < 1:
        raise Invalid("weight: empty axis")
    if layout == "NCHW":
        k, c, r, s = w_shape[2:]
    else:
        k, r, s, c = w_shape[2:]
    xs = tuple(x_shape) if len(x_shape) == 4 else (1,) + tuple(x_shape)
    n, xc, h, w = xs if layout == "NCHW" else (xs[0], xs[3], xs[1], xs[2])
    for v, what in ((xc, "in_channels"), (h, "height"), (w, "width")):
        if v < 1:
            raise Invalid(f"{what} is 0")
    if xc != c:
        raise Invalid("weight channels vs x")
    pads = o_padding(kw.get("padding", 0), (r, s), stride, (1, 1))
    cws = (k, c, r, s) if layout == "NCHW" else (k, r, s, c)
    try:
        geo = ref.Geometry(x_shape, cws, stride=stride, padding=pads, layout=layout,
                           shape_rule=rule)
    except ref.RefShapeError as e:
        raise Invalid(f"shape: {e}")
    if tuple(w_shape[:2]) != (geo.Ho, geo.Wo):
        raise Invalid("weight positions")
    return geo


def lc_b_shape(geo: ref.Geometry) -> Tuple[int, ...]:
    return (geo.K, geo.Ho, geo.Wo) if geo.layout == "NCHW" else (geo.Ho, geo.Wo, geo.K)


def lc_w_shape(geo: ref.Geometry) -> Tuple[int, ...]:
    return (geo.Ho, geo.Wo, geo.K) + ((geo.C, geo.R, geo.S) if geo.layout == "NCHW"
                                      else (geo.R, geo.S, geo.C))


def lc_feasible(geo: ref.Geometry) -> bool:
    sizes = [geo.N * geo.C * geo.H * geo.W, geo.N * geo.K * geo.Ho * geo.Wo,
             geo.Ho * geo.Wo * geo.K * geo.C * geo.R * geo.S]
    return max(sizes) <= REF_ELEMENTS and oracle.work(geo) <= REF_WORK


def _lc_checks(geo: ref.Geometry, dt, which: str, **arrs):
    """_conv_checks for the locally-connected layer (oracle.lc_*)."""
    if which == "forward":
        x, w, b = geo.act_in(arrs["x"]), oracle.lc_w_in(geo, arrs["w"]), arrs.get("b")
        b = None if b is None else oracle.lc_b_in(geo, b)
        exp = geo.act_out(oracle.lc_forward(geo, x, w, b))
        mag = geo.act_out(oracle.lc_forward(geo, np.abs(x), np.abs(w), _abs(b)))
        terms = geo.terms("forward")
    elif which == "input":
        dy, w = geo.act_in(arrs["dy"]), oracle.lc_w_in(geo, arrs["w"])
        exp = geo.act_out(oracle.lc_backward_input(geo, dy, w))
        mag = geo.act_out(oracle.lc_backward_input(geo, np.abs(dy), np.abs(w)))
        terms = geo.terms("input")
    elif which == "weight":
        dy, x = geo.act_in(arrs["dy"]), geo.act_in(arrs["x"])
        exp = oracle.lc_w_out(geo, oracle.lc_backward_weight(geo, dy, x))
        mag = oracle.lc_w_out(geo, oracle.lc_backward_weight(geo, np.abs(dy), np.abs(x)))
        terms = max(geo.N, 1)
    else:  # bias: the sum over the batch, per filter and position
        dy = geo.act_in(arrs["dy"])
        exp = oracle.lc_b_out(geo, dy.sum(axis=0))
        mag = oracle.lc_b_out(geo, np.abs(dy).sum(axis=0))
        terms = max(geo.N, 1)

    def check(got) -> Optional[str]:
        if not isinstance(got, np.ndarray):
            return f"{which}: returned {type(got).__name__}"
        if got.dtype != dt:
            return f"{which}: dtype {got.dtype}, expected {dt}"
        d = oracle.compare(got, exp, mag, dt, terms)
        return None if d is None else f"{which}: {d}"
    return check


def _lc_shape_check(geo, dt, which):
    shape = {"forward": geo.out_shape(), "input": geo.x_shape(), "weight": lc_w_shape(geo),
             "bias": lc_b_shape(geo)}[which]

    def check(got):
        if not isinstance(got, np.ndarray) or got.shape != tuple(shape) or got.dtype != dt:
            return f"{which}: got {getattr(got, 'shape', got)!r}, expected shape {shape}"
        return None
    return check


def expect_lc(fn: str, args: List[Any], kw: Dict[str, Any]) -> Expect:
    soft = Soft()
    hyper = {k: v for k, v in kw.items() if k not in ("bias", "out")}
    if fn == "locally_connected2d":
        if len(args) not in (2, 3) or (len(args) == 3 and "bias" in kw):
            raise Invalid("arity")
        x, w = args[:2]
        b = args[2] if len(args) == 3 else kw.get("bias")
        dt = o_array(x, "x", soft, (3, 4))
        o_array(w, "weight", soft, (6,), dt)
        geo = lc_geometry(x.shape, w.shape, hyper)
        if b is not None:
            o_array(b, "bias", soft, None, dt)
            if b.shape != lc_b_shape(geo):
                raise Invalid("bias shape")
        o_out(kw.get("out"), geo.out_shape(), dt, [x, w, b], soft)
        results = [("forward", dict(x=x, w=w, b=b))]
        ins = [x, w] + ([b] if b is not None else [])
    else:
        if len(args) != 3:
            raise Invalid("arity")
        dy, x, w = args
        dt = o_array(x, "x", soft, (3, 4))
        o_array(w, "weight", soft, (6,), dt)
        bias = kw.get("bias", True)
        if not isinstance(bias, (bool, np.bool_)):
            raise Invalid("bias flag")
        geo = lc_geometry(x.shape, w.shape, hyper)
        o_array(dy, "grad_output", soft, None, dt)
        if dy.shape != geo.out_shape():
            raise Invalid("grad_output shape")
        results = [("input", dict(dy=dy, w=w)), ("weight", dict(dy=dy, x=x))]
        if bias:
            results.append(("bias", dict(dy=dy)))
        ins = [dy, x, w]
    res_bytes = [nbytes(geo.out_shape(), dt.itemsize), nbytes(geo.x_shape(), dt.itemsize),
                 nbytes(lc_w_shape(geo), dt.itemsize)]
    is_ext = extreme(geo, [copy_bytes(a) for a in ins], res_bytes)
    if not lc_feasible(geo) or (is_ext and max(res_bytes) > BIG_BYTES):
        checks = [_lc_shape_check(geo, dt, which) for which, _ in results]
        verified = False
    else:
        checks = [_lc_checks(geo, dt, which, **a) for which, a in results]
        verified = True
    out = kw.get("out")

    def check(got):
        if fn == "locally_connected2d_backward":
            if not isinstance(got, convcore.Conv2dGrads):
                return f"returned {type(got).__name__}"
            vals = [got.input, got.weight] + ([got.bias] if len(checks) == 3 else [])
            if len(checks) == 2 and got.bias is not None:
                return "bias gradient returned with bias=False"
        else:
            vals = [got]
            if out is not None and got is not out:
                return "out= given but another array returned"
        for c, v in zip(checks, vals):
            d = c(v)
            if d:
                return d
        return None
    return Expect(check, is_ext, soft, verified,
                  huge_result=max(res_bytes + [copy_bytes(a) for a in ins]) > BIG_BYTES)


def expect_lc_num_params(args, kw) -> Expect:
    if len(args) != 4:
        raise Invalid("arity")
    size, cin, cout, ks = args
    h, w = o_pair(size, "input_size", 1)
    cin = o_int_unbounded(cin, "in_channels")
    cout = o_int_unbounded(cout, "out_channels")
    r, s = o_pair(ks, "kernel_size", 1)
    bias = kw.get("bias", True)
    if not isinstance(bias, (bool, np.bool_)):
        raise Invalid("bias flag")
    hyper = {k: v for k, v in kw.items() if k != "bias"}
    if "layout" in hyper:
        raise Invalid("layout is not an argument")
    big = max(cin, cout) > MAX_INT
    cin_g, cout_g = min(cin, MAX_INT), min(cout, MAX_INT)
    try:
        geo = ref.Geometry((0, cin_g, h, w), (cout_g, cin_g, r, s),
                           stride=o_pair(kw.get("stride", 1), "stride", 1),
                           padding=o_padding(kw.get("padding", 0), (r, s),
                                             o_pair(kw.get("stride", 1), "stride", 1), (1, 1)),
                           shape_rule=_o_rule(kw.get("shape_rule", "strict")))
    except ref.RefShapeError as e:
        raise Invalid(f"shape: {e}")
    extra = set(hyper) - {"stride", "padding", "shape_rule"}
    if extra:
        raise Invalid(f"unexpected keyword {sorted(extra)}")
    want = geo.Ho * geo.Wo * cout * (cin * r * s + (1 if bias else 0))
    # the core sizes every array in int64: a layer whose weight count does not fit may be
    # refused (with a message naming the argument)
    ext = big or extreme(geo, [], []) or want >= 2**62

    def check(got):
        if type(got) is not int or got != want:
            return f"returned {got!r} ({type(got).__name__}), expected {want}"
        return None
    return Expect(check, ext)


def _o_rule(rule):
    if not isinstance(rule, str) or rule not in ("strict", "crop", "pad"):
        raise Invalid("shape_rule")
    return rule


def run_lc_layer(case) -> Tuple[Optional[Tuple[str, str]], bool]:
    kw = {k: dec(v, build_array, None) for k, v in case["kw"].items()}
    soft = Soft()
    invalid = None
    geo0 = None
    try:
        extra = set(kw) - {"in_channels", "out_channels", "kernel_size", "input_size", "stride",
                           "padding", "bias", "layout", "dtype", "rng", "requires_input_grad",
                           "init"}
        if extra:
            raise Invalid(f"unexpected keyword {sorted(extra)}")
        cin = o_int_unbounded(kw["in_channels"], "in_channels")
        cout = o_int_unbounded(kw["out_channels"], "out_channels")
        if not isinstance(kw.get("bias", True), (bool, np.bool_)):
            raise Invalid("bias flag")
        r, s = o_pair(kw["kernel_size"], "kernel_size", 1)
        h, w = o_pair(kw["input_size"], "input_size", 1)
        stride = o_pair(kw.get("stride", 1), "stride", 1)
        pads = o_padding(kw.get("padding", 0), (r, s), stride, (1, 1))
        layout = kw.get("layout", "NCHW")
        if not isinstance(layout, str) or layout not in ("NCHW", "NHWC"):
            raise Invalid("layout")
        dt = kw.get("dtype", "float32")
        if dt is None:  # NumPy reads None as float64: either answer is fine (as for Conv2d)
            soft.reasons.append("dtype None")
            dt = "float64"
        try:
            d = np.dtype(dt)
        except TypeError:
            raise Invalid("dtype")
        if d not in (np.float32, np.float64):
            raise Invalid("dtype")
        if not isinstance(kw.get("requires_input_grad", True), (bool, np.bool_)):
            raise Invalid("requires_input_grad")
        init = kw.get("init", "pytorch")
        if not isinstance(init, str) or init not in ("pytorch", "he"):
            raise Invalid("init")
        if cin > MAX_INT or cout > MAX_INT:
            soft.reasons.append("huge layer")
        else:
            xs = (0, cin, h, w) if layout == "NCHW" else (0, h, w, cin)
            cws = (cout, cin, r, s) if layout == "NCHW" else (cout, r, s, cin)
            try:
                geo0 = ref.Geometry(xs, cws, stride=stride, padding=pads, layout=layout)
            except ref.RefShapeError as e:
                raise Invalid(f"shape: {e}")
            if extreme(geo0, [], [nbytes(lc_w_shape(geo0), d.itemsize)]):
                soft.reasons.append("huge layer")
    except Invalid as e:
        invalid = str(e)
    try:
        layer = convcore.LocallyConnected2d(**kw)
    except BaseException as e:  # noqa: B902
        if isinstance(e, KeyboardInterrupt):
            raise
        exp = Expect(None, True, soft, huge_result=True)
        return judge_exception(e, exp, invalid, "LocallyConnected2d()"), False
    if invalid is not None:
        return ("LocallyConnected2d(): accepted an invalid argument", f"{invalid}: built {layer!r}"), False
    if geo0 is not None:
        want = lc_w_shape(geo0)
        if layer.weight.shape != want or (layer.bias is not None and layer.bias.shape != lc_b_shape(geo0)):
            return ("LocallyConnected2d(): wrong parameter shapes",
                    f"weight {layer.weight.shape}, expected {want}"), False
    x = build_array(case["x"]["$arr"])
    gy = build_array(case["grad_y"]["$arr"])
    hyper = {k: kw[k] for k in ("stride", "padding", "layout") if k in kw}
    done_forward = None
    verified = False
    nback = 0
    for op in case["ops"]:
        s2 = Soft()
        inv = None
        exp = None
        ok_size = False
        try:
            if op == "forward":
                dt = o_array(x, "x", s2, (3, 4))
                if dt != layer.dtype:
                    raise Invalid("x dtype vs layer")
                geo = lc_geometry(x.shape, layer.weight.shape, hyper)
            else:
                if done_forward is None:
                    raise Invalid("backward before forward")
                geo, xf, yf = done_forward
                o_array(gy, "grad_y", s2, None, layer.dtype)
                if gy.shape != geo.out_shape():
                    raise Invalid("grad_y shape")
            ok_size = lc_feasible(geo)
            big = [copy_bytes(x), nbytes(geo.out_shape(), 8), nbytes(lc_w_shape(geo), 8)]
            exp = Expect(None, extreme(geo, big[:1], big[1:]) or not ok_size, s2,
                         huge_result=max(big) > BIG_BYTES)
        except Invalid as e:
            inv = str(e)
        snaps = snapshot([x, gy])
        try:
            got = layer.forward(x) if op == "forward" else layer.backward(gy)
        except BaseException as e:  # noqa: B902
            if isinstance(e, KeyboardInterrupt):
                raise
            v = judge_exception(e, exp, inv, f"LocallyConnected2d.{op}")
            if v:
                return v, verified
            continue
        if inv is not None:
            return (f"LocallyConnected2d.{op}: accepted an invalid argument", inv), verified
        m = modified(snaps)
        if m:
            return (f"LocallyConnected2d.{op}: {m}", ""), verified
        if not ok_size:
            if op == "forward":
                done_forward = (geo, x, got)
            continue
        w, b = layer.weight, layer.bias
        if op == "forward":
            d = _lc_checks(geo, layer.dtype, "forward", x=x, w=w, b=b)(got)
            done_forward = (geo, x, got)
        else:
            geo, xf, yf = done_forward
            nback += 1
            ga = np.asarray(gy, np.float64) * nback
            if layer.requires_input_grad:
                d = _lc_checks(geo, layer.dtype, "input", dy=gy, w=w)(got)
            else:
                d = None if got is None else ("requires_input_grad=False but backward "
                                              f"returned {type(got).__name__}")
            d = (d
                 or _lc_checks(geo, layer.dtype, "weight", dy=ga, x=xf)(layer.grad_weight)
                 or (b is not None and _lc_checks(geo, layer.dtype, "bias", dy=ga)(layer.grad_bias))
                 or None)
        if d:
            return (f"LocallyConnected2d.{op}: wrong result{_qualifiers([x, gy, w], hyper)}", d), verified
        verified = True
    return None, verified


def expect_gemm(args, kw) -> Expect:
    soft = Soft()
    a, b = args
    dt = o_array(a, "a", soft, (2,))
    o_array(b, "b", soft, (2,), dt)
    if a.shape[1] != b.shape[0]:
        raise Invalid("gemm inner")
    shape = (a.shape[0], b.shape[1])
    out = kw.get("out")
    o_out(out, shape, dt, [a, b], soft)
    A, B = np.asarray(a, np.float64), np.asarray(b, np.float64)
    exp, mag = A @ B, np.abs(A) @ np.abs(B)
    if a.shape[1] == 0:
        exp = np.zeros(shape)
    else:  # matmul may hide 0·Inf; the definition is the plain sum of products
        exp = (A[:, :, None] * B[None, :, :]).sum(axis=1)

    def check(got):
        if out is not None and got is not out:
            return "out= given but another array returned"
        if not isinstance(got, np.ndarray) or got.dtype != dt:
            return f"returned {type(got).__name__} {getattr(got, 'dtype', '')}"
        return oracle.compare(got, exp, mag, dt, max(a.shape[1], 1))
    return Expect(check, False, soft)


def expect_num_params(args, kw) -> Expect:
    cin, cout, ks = args
    cin = o_int_unbounded(cin, "in_channels")
    cout = o_int_unbounded(cout, "out_channels")
    r, s = o_pair(ks, "kernel_size", 1)
    g = o_int(kw.get("groups", 1), "groups", 1)
    bias = kw.get("bias", True)
    if cin % g or cout % g:
        raise Invalid("groups")
    want = cout * (cin // g) * r * s + (cout if bias else 0)

    def check(got):
        if type(got) is not int or got != want:
            return f"returned {got!r} ({type(got).__name__}), expected {want}"
        return None
    return Expect(check, max(cin, cout) > MAX_INT)


def o_int_unbounded(v, name) -> int:
    if not isinstance(v, numbers.Integral) or isinstance(v, (bool, np.bool_)):
        raise Invalid(f"{name}: not an int")
    if int(v) < 1:
        raise Invalid(f"{name}: < 1")
    return int(v)


def _small_conv_check() -> Optional[str]:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    got = convcore.conv2d(x, w, padding=1)
    geo = ref.Geometry(x.shape, w.shape, padding=1)
    exp = oracle.forward(geo, x.astype(np.float64), w.astype(np.float64), None)
    mag = oracle.forward(geo, np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)), None)
    return oracle.compare(got, exp, mag, np.dtype(np.float32), geo.terms("forward"))


def expect_threads(args, kw) -> Expect:
    n = o_int_unbounded(args[0], "n")

    def check(got):
        t = convcore.get_num_threads()
        if not 1 <= t <= n:
            return f"get_num_threads() is {t} after set_num_threads({n})"
        d = _small_conv_check()
        return None if d is None else f"conv after set_num_threads({n}): {d}"
    return Expect(check, n > 1024)


# --- running one case ------------------------------------------------------------------------

def names_argument(msg: str, where: str) -> bool:
    fn = where.split(".")[0].split("(")[0].split(":")[0]
    return bool(NAME_RES.get(fn, NAME_RES["conv2d"]).search(msg))


def _exc_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:300]}"


def judge_exception(e: BaseException, exp: Optional[Expect], invalid: Optional[str],
                    where: str) -> Optional[Tuple[str, str]]:
    """None when raising `e` is allowed; else (class, detail)."""
    text = _exc_text(e)
    if not isinstance(e, ALLOWED):
        return (f"{where}: undocumented exception {type(e).__name__}", text)
    if isinstance(e, MemoryError) and exp is not None and exp.huge_result:
        return None
    if not names_argument(str(e), where):
        return (f"{where}: {type(e).__name__} message names no argument", text)
    if invalid is not None:
        return None
    assert exp is not None
    if exp.extreme or exp.soft.reasons:
        return None
    return (f"{where}: {type(e).__name__} on valid input", text)


def snapshot(objs: List[Any]) -> List[Tuple[Any, Optional[np.ndarray]]]:
    snaps = []
    for a in objs:
        if isinstance(a, np.ndarray) and a.size <= REF_ELEMENTS and a.dtype != object:
            snaps.append((a, a.copy()))
    return snaps


def modified(snaps, skip=None) -> Optional[str]:
    for a, c in snaps:
        if skip is not None and isinstance(skip, np.ndarray) and np.may_share_memory(a, skip):
            continue
        if not np.array_equal(a, c, equal_nan=a.dtype.kind in "fc"):
            return "an input array was modified"
    return None


def _decode(case):
    made: Dict[str, Any] = {}
    args = dec(case.get("args", []), build_array, None)
    kw_raw = dict(case.get("kw", {}))
    out_spec = kw_raw.pop("out", None)
    kw = {k: dec(v, build_array, None) for k, v in kw_raw.items()}
    fn = case["fn"]
    if out_spec is not None:
        names = {"conv2d": ["x", "w"], "locally_connected2d": ["x", "w"],
                 "gemm": ["a", "b"]}.get(fn, [])
        made = dict(zip(names, args))
        shape, dtype = (1, 1, 1, 1), np.float32
        try:
            if fn == "gemm":
                shape = (args[0].shape[0], args[1].shape[1])
                dtype = args[0].dtype
            elif fn == "locally_connected2d":
                geo = lc_geometry(args[0].shape, args[1].shape,
                                  {k: v for k, v in kw.items() if k != "bias"})
                shape, dtype = geo.out_shape(), args[0].dtype
            else:
                geo = o_geometry(args[0].shape, args[1].shape,
                                 {k: v for k, v in kw.items() if k not in ("bias", "activation")}, Soft())
                shape, dtype = geo.out_shape(), args[0].dtype
            dtype = np.float64 if np.dtype(dtype).itemsize == 8 else np.float32
        except Exception:
            pass
        kw["out"] = dec(out_spec, build_array, lambda k: build_out(k, shape, dtype, made))
    return fn, args, kw


def run_layer(case) -> Tuple[Optional[Tuple[str, str]], bool]:
    kw = {k: dec(v, build_array, None) for k, v in case["kw"].items()}
    soft = Soft()
    invalid = None
    try:
        cin = o_int_unbounded(kw["in_channels"], "in_channels")
        cout = o_int_unbounded(kw["out_channels"], "out_channels")
        r, s = o_pair(kw["kernel_size"], "kernel_size", 1)
        stride = o_pair(kw.get("stride", 1), "stride", 1)
        dil = o_pair(kw.get("dilation", 1), "dilation", 1)
        g = o_int(kw.get("groups", 1), "groups", 1)
        o_padding(kw.get("padding", 0), (r, s), stride, dil)
        if cin % g or cout % g:
            raise Invalid("groups")
        for name, allowed in (("layout", ("NCHW", "NHWC")), ("shape_rule", ("strict", "crop", "pad")),
                              ("activation", (None, "relu"))):
            v = kw.get(name, allowed[0])
            if not (v is None or isinstance(v, str)) or v not in allowed:
                raise Invalid(name)
        if not isinstance(kw.get("bias", True), (bool, np.bool_)):
            soft.reasons.append("bias flag")
        if not isinstance(kw.get("requires_input_grad", True), (bool, np.bool_)):
            raise Invalid("requires_input_grad")
        init = kw.get("init", "pytorch")
        if not isinstance(init, str) or init not in ("pytorch", "he"):
            raise Invalid("init")
        dt = kw.get("dtype", "float32")
        if dt is None:
            soft.reasons.append("dtype None")
        else:
            try:
                d = np.dtype(dt)
            except TypeError:
                raise Invalid("dtype")
            if d not in (np.float32, np.float64):
                raise Invalid("dtype")
        rng = kw.get("rng")
        if not (rng is None or isinstance(rng, np.random.Generator)):
            o_int(rng, "rng", 0)
        if cin > MAX_INT or cout > MAX_INT or r * s * cin * cout > 2**40:
            soft.reasons.append("huge layer")
    except Invalid as e:
        invalid = str(e)
    try:
        layer = convcore.Conv2d(**kw)
    except BaseException as e:  # noqa: B902
        if isinstance(e, KeyboardInterrupt):
            raise
        exp = Expect(None, True, soft)
        return judge_exception(e, exp, invalid, "Conv2d()"), False
    if invalid is not None:
        return ("Conv2d(): accepted an invalid argument", f"{invalid}: built {layer!r}"), False
    x = build_array(case["x"]["$arr"])
    gy = build_array(case["grad_y"]["$arr"])
    hyper = {k: kw[k] for k in ("stride", "padding", "dilation", "groups", "layout", "shape_rule")
             if k in kw}
    done_forward = None
    verified = False
    nback = 0  # successful backward calls: the parameter gradients accumulate over them
    for op in case["ops"]:
        s2 = Soft()
        inv = None
        exp = None
        try:
            if op == "forward":
                dt = o_array(x, "x", s2, (3, 4))
                if dt != layer.dtype:
                    raise Invalid("x dtype vs layer")
                geo = o_geometry(x.shape, layer.weight.shape, hyper, s2)
            else:
                if done_forward is None:
                    raise Invalid("backward before forward")
                geo, xf, yf = done_forward
                o_array(gy, "grad_y", s2, None, layer.dtype)
                if gy.shape != geo.out_shape():
                    raise Invalid("grad_y shape")
            ok_size = feasible(geo)
            big = [copy_bytes(x), nbytes(geo.out_shape(), 8)]
            exp = Expect(None, extreme(geo, big[:1], big[1:]) or not ok_size, s2,
                         huge_result=max(big) > BIG_BYTES)
        except Invalid as e:
            inv = str(e)
        snaps = snapshot([x, gy])
        try:
            got = layer.forward(x) if op == "forward" else layer.backward(gy)
        except BaseException as e:  # noqa: B902
            if isinstance(e, KeyboardInterrupt):
                raise
            v = judge_exception(e, exp, inv, f"Conv2d.{op}")
            if v:
                return v, verified
            continue
        if inv is not None:
            return (f"Conv2d.{op}: accepted an invalid argument", inv), verified
        m = modified(snaps)
        if m:
            return (f"Conv2d.{op}: {m}", ""), verified
        if not ok_size:
            if op == "forward":
                done_forward = (geo, x, got)
            continue
        w, b = layer.weight, layer.bias
        relu = layer.activation == "relu"
        if op == "forward":
            d = _conv_checks(geo, layer.dtype, "forward", x=x, w=w, b=b, relu=relu)(got)
            done_forward = (geo, x, got)
        else:
            geo, xf, yf = done_forward
            nback += 1
            g = np.where(yf > 0, gy, 0).astype(layer.dtype) if relu else gy
            # every backward of a case repeats the same (x, grad_y): the accumulated
            # parameter gradients are nback times one call's (exact for nback = 2)
            ga = np.asarray(g, np.float64) * nback
            if layer.requires_input_grad:
                d = _conv_checks(geo, layer.dtype, "input", dy=g, w=w)(got)
            else:
                d = None if got is None else ("requires_input_grad=False but backward "
                                              f"returned {type(got).__name__}")
            d = (d
                 or _conv_checks(geo, layer.dtype, "weight", dy=ga, x=xf)(layer.grad_weight)
                 or (b is not None and _conv_checks(geo, layer.dtype, "bias", dy=ga)(layer.grad_bias))
                 or None)
        if d:
            return (f"Conv2d.{op}: wrong result{_qualifiers([x, gy, w], hyper)}", d), verified
        verified = True
    return None, verified


OUTCOME = [""]


def run_case(case: Dict[str, Any]) -> Dict[str, Any]:
    OUTCOME[0] = ""
    isa0, threads0 = _core.get_isa(), convcore.get_num_threads()
    if case.get("isa"):
        _core.set_isa(case["isa"])
    convcore.set_num_threads(case.get("threads", 1))
    t0 = time.perf_counter()
    try:
        verdict, verified = _run(case)
    except Exception:
        verdict, verified = ("fuzzer error", traceback.format_exc()[-1500:]), False
    finally:
        _core.set_isa(isa0)
        try:
            convcore.set_num_threads(threads0)
        except Exception:
            pass
    return {"ok": verdict is None, "class": verdict[0] if verdict else "",
            "detail": verdict[1] if verdict else "", "verified": verified, "outcome": OUTCOME[0],
            "seconds": round(time.perf_counter() - t0, 4)}


def _run(case) -> Tuple[Optional[Tuple[str, str]], bool]:
    fn = case["fn"]
    if fn == "Conv2d":
        return run_layer(case)
    if fn == "LocallyConnected2d":
        return run_lc_layer(case)
    fn, args, kw = _decode(case)
    invalid = None
    exp = None
    try:
        if fn == "gemm":
            exp = expect_gemm(args, kw)
        elif fn == "conv2d_num_params":
            exp = expect_num_params(args, kw)
        elif fn == "set_num_threads":
            exp = expect_threads(args, kw)
        elif fn in ("locally_connected2d", "locally_connected2d_backward"):
            exp = expect_lc(fn, args, kw)
        elif fn == "locally_connected2d_num_params":
            exp = expect_lc_num_params(args, kw)
        else:
            exp = expect_conv(fn, args, kw)
    except Invalid as e:
        invalid = str(e)
    except (ValueError, TypeError) as e:  # arity etc.: the oracle could not read it
        invalid = f"unreadable: {e}"
    inputs = list(args) + [v for k, v in kw.items() if k != "out"]
    snaps = snapshot(inputs)
    f = getattr(convcore, fn)
    try:
        got = f(*args, **kw)
    except BaseException as e:  # noqa: B902
        if isinstance(e, KeyboardInterrupt):
            raise
        OUTCOME[0] = "raised " + _exc_text(e)
        return judge_exception(e, exp, invalid, fn), False
    OUTCOME[0] = "returned " + _brief(got)
    if invalid is not None:
        return (f"{fn}: accepted an invalid argument", f"{invalid}; returned {_brief(got)}"), False
    assert exp is not None
    m = modified(snaps, skip=kw.get("out"))
    if m:
        return (f"{fn}: {m}", ""), False
    d = exp.check(got)
    if d:
        return (f"{fn}: wrong result{_qualifiers(args, kw)}", d), exp.verified
    return None, exp.verified


def _qualifiers(args, kw) -> str:
    """What sets a wrong result apart: non-finite input values, huge hyperparameters."""
    q = []
    arrays = [a for a in list(args) + list(kw.values()) if isinstance(a, np.ndarray)]
    if any(a.dtype.kind == "f" and a.size and not np.isfinite(a).all() for a in arrays):
        q.append("non-finite inputs")
    ints: List[int] = []

    def collect(v):
        if isinstance(v, (tuple, list)):
            for e in v:
                collect(e)
        elif isinstance(v, numbers.Integral):
            ints.append(abs(int(v)))
    for k in ("stride", "padding", "dilation"):
        collect(kw.get(k, 0))
    if ints and max(ints) > 2**20:
        q.append("hyperparameters > 2**20")
    return f" ({', '.join(q)})" if q else ""


def _brief(v) -> str:
    if isinstance(v, np.ndarray):
        return f"array {v.shape} {v.dtype}"
    return repr(v)[:200]


def limit_memory() -> None:
    gb = float(os.environ.get("CONVCORE_FUZZ_MEMORY_GB", "4"))
    if gb > 0:
        lim = int(gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))


def main(argv: List[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--case":
        limit_memory()
        case = json.loads(argv[1])
        print(json.dumps(run_case(case), indent=1))
        return 0
    limit_memory()
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol
    out.write(json.dumps({"ready": True, "isas": list(_core.available_isas())}) + "\n")
    out.flush()
    for line in sys.stdin:
        case = json.loads(line)
        out.write(json.dumps(run_case(case)) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
