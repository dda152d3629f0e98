"""Random calls of convcore's public API, as JSON-able case descriptions (hypothesis
strategies), and how to turn a case back into Python objects.

A case is a dict: {"fn": public function, "args": [...], "kw": {...}, "isa": ISA or None,
"threads": 1 or 2}. Values are plain JSON except for tagged dicts:
  {"$t": [...]}                     a tuple (lists stay lists)
  {"$np": "int64", "v": 3}          a NumPy scalar
  {"$f": "nan"}                     a float JSON cannot hold (nan, inf)
  {"$b": "NCHW"}                    bytes
  {"$arr": {...}}                   an array built by arrays.build (shape, dtype variant,
                                    fill, seed, view)
  {"$out": "fresh" | ...}           an out= array made for the expected result shape
Cases are replayable in any process (python tests/fuzz/worker.py --case '<json>').
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from hypothesis import strategies as st

import reference as ref

# --- encoding ------------------------------------------------------------------------------


def enc(v: Any) -> Any:
    if isinstance(v, dict):
        return v  # already tagged
    if isinstance(v, tuple):
        return {"$t": [enc(e) for e in v]}
    if isinstance(v, list):
        return [enc(e) for e in v]
    if isinstance(v, np.generic):
        return {"$np": v.dtype.name, "v": v.item()}
    if isinstance(v, float) and not math.isfinite(v):
        return {"$f": repr(v)}
    if isinstance(v, bytes):
        return {"$b": v.decode("latin-1")}
    return v


def dec(v: Any, make_array, make_out) -> Any:
    if isinstance(v, list):
        return [dec(e, make_array, make_out) for e in v]
    if not isinstance(v, dict):
        return v
    if "$t" in v:
        return tuple(dec(e, make_array, make_out) for e in v["$t"])
    if "$np" in v:
        return np.dtype(v["$np"]).type(v["v"])
    if "$f" in v:
        return float(v["$f"])
    if "$b" in v:
        return v["$b"].encode("latin-1")
    if "$arr" in v:
        return make_array(v["$arr"])
    if "$out" in v:
        return make_out(v["$out"])
    raise ValueError(f"unknown tag in {v!r}")


def arr(shape, dtype="float32", fill="normal", seed=0, view="contig") -> Dict[str, Any]:
    return {"$arr": {"shape": [int(s) for s in shape], "dtype": dtype, "fill": fill,
                     "seed": int(seed), "view": view}}


# --- strategy pieces ------------------------------------------------------------------------

HUGE_EXPONENTS = st.integers(20, 62)
# dtype variants: the canonical ones, non-canonical float32/float64 that must work, and ones
# that must be refused (arrays.py builds each)
GOOD_DTYPES = ["float32", "float64"]
ODD_GOOD_DTYPES = ["pickled32", "pickle5_32", "pickled64", "meta32", "meta64", "<f4", "=f8"]
BAD_DTYPES = [">f4", ">f8", "float16", "int32", "int64", "complex64", "bool", "object",
              "longdouble", "list", "scalar"]
VIEWS = ["contig"] * 6 + ["noncontig", "fortran", "negstride", "misaligned", "readonly",
                          "transposed", "broadcast"]
FILLS = ["normal"] * 4 + ["ints", "ones", "special"]

JUNK_PAIR = [0, -1, -2**62, 2**62 + 1, 2**63, 2**64, 1.5, 2.0, "2", None, True, (1,), (1, 2, 3),
             [1, 2**63], (2**62, 1), (1, -1), np.int32(2), np.int64(3), np.uint64(2**63),
             (np.int64(2), 1), float("nan"), [1, 1]]
JUNK_PADDING = [-1, (1, 2, 3), "same", "bogus", (0, 0, 0, -1), 2.0, None, (0, 2**63),
                (2**62, 0, 0, 0), [1, 2], np.int64(1), (np.int32(1), np.int64(0), 0, 0), True]
JUNK_GROUPS = [0, -1, 2.5, True, np.int64(1), 2**62, 2**63, "1", None, 7]
JUNK_LAYOUT = ["nchw", None, 1, "NHWC ", "CHWN", b"NCHW"]
JUNK_RULE = ["bogus", None, "Strict", 0]
JUNK_ACT = ["Relu", "sigmoid", 0, False, "none"]


@st.composite
def problem(draw) -> Dict[str, Any]:
    """A convolution problem, usually valid, sometimes with extreme hyperparameters that
    still fit (huge dilation with the padding to match, huge strides, huge padding)."""
    G = draw(st.sampled_from([1, 1, 1, 2, 3]))
    Cg, Kg = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    p = dict(N=draw(st.sampled_from([1, 1, 2, 3, 0])), C=Cg * G, K=Kg * G, G=G,
             R=draw(st.integers(1, 4)), S=draw(st.integers(1, 4)),
             H=draw(st.integers(1, 12)), W=draw(st.integers(1, 12)),
             stride=[draw(st.integers(1, 3)), draw(st.integers(1, 3))],
             dilation=[draw(st.integers(1, 3)), draw(st.integers(1, 3))],
             pads=[draw(st.integers(0, 3)) for _ in range(4)],
             layout=draw(st.sampled_from(["NCHW", "NHWC"])),
             rule=draw(st.sampled_from(["strict", "crop", "crop", "pad", "pad"])),
             dtype=draw(st.sampled_from(GOOD_DTYPES)))
    for ax, (hw, k) in enumerate((("H", "R"), ("W", "S"))):
        keff = p["dilation"][ax] * (p[k] - 1) + 1
        if keff > p[hw] + p["pads"][2 * ax] + p["pads"][2 * ax + 1] and draw(st.integers(0, 9)):
            p[hw] = keff
    mode = draw(st.sampled_from(["plain"] * 5 + ["dilation", "stride", "padding", "all"]))
    if mode != "plain":
        ax = draw(st.integers(0, 1))
        k = ("R", "S")[ax]
        if p[k] == 1 and mode in ("dilation", "all"):
            p[k] = 2
        if mode in ("dilation", "all"):
            d = 2 ** draw(HUGE_EXPONENTS) + draw(st.integers(-2, 2))
            d = max(1, min(d, 2**62))
            p["dilation"][ax] = d
            need = d * (p[k] - 1)
            if need <= 2**62 and draw(st.integers(0, 4)):
                side = draw(st.integers(0, 1))
                p["pads"][2 * ax + side] = min(2**62, need + draw(st.integers(-3, 31)))
        if mode in ("stride", "all"):
            p["stride"][ax] = min(2**62, 2 ** draw(HUGE_EXPONENTS) + draw(st.integers(-1, 1)))
            if p["rule"] == "strict":
                p["rule"] = draw(st.sampled_from(["crop", "pad"]))
        if mode in ("padding", "all"):
            side = draw(st.integers(0, 3))
            p["pads"][side] = min(2**62, 2 ** draw(HUGE_EXPONENTS))
            if draw(st.booleans()):
                p["stride"][side // 2] = p["pads"][side]
                p["rule"] = draw(st.sampled_from(["crop", "pad"]))
    return p


def shapes(p) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    if p["layout"] == "NCHW":
        return (p["N"], p["C"], p["H"], p["W"]), (p["K"], p["C"] // p["G"], p["R"], p["S"])
    return (p["N"], p["H"], p["W"], p["C"]), (p["K"], p["R"], p["S"], p["C"] // p["G"])


def ref_kw(p) -> Dict[str, Any]:
    return dict(stride=tuple(p["stride"]), padding=tuple(p["pads"]), dilation=tuple(p["dilation"]),
                groups=p["G"], layout=p["layout"], shape_rule=p["rule"])


def expected_out_shape(p, x_shape, w_shape) -> Optional[Tuple[int, ...]]:
    try:
        return ref.output_shape(x_shape, w_shape, **ref_kw(p))
    except (ref.RefShapeError, AssertionError):
        return None


@st.composite
def array_for(draw, shape, dtype, seed_base=0) -> Dict[str, Any]:
    """An array spec of `shape`: usually the problem's dtype, contiguous, normal values."""
    roll = draw(st.integers(0, 19))
    dt = dtype
    if roll == 0:
        dt = draw(st.sampled_from(BAD_DTYPES))
    elif roll <= 2:
        dt = draw(st.sampled_from(ODD_GOOD_DTYPES))
        # keep the element type of the problem (float32 vs float64)
        if ("64" in dt or "f8" in dt) != (dtype == "float64"):
            dt = {"float32": "pickled32", "float64": "pickled64"}[dtype]
    elif roll == 3:
        dt = "float64" if dtype == "float32" else "float32"
    view = draw(st.sampled_from(VIEWS))
    fill = draw(st.sampled_from(FILLS))
    return arr(shape, dt, fill, seed_base + draw(st.integers(0, 2**16)), view)


@st.composite
def maybe_bad_shape(draw, shape) -> Tuple[int, ...]:
    """The shape, or (rarely) one with an axis changed, added, dropped, zeroed or huge."""
    roll = draw(st.integers(0, 14))
    shape = list(shape)
    if roll == 0 and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw(st.sampled_from([0, 1, shape[i] + 1, max(shape[i] - 1, 0)]))
    elif roll == 1:
        shape = shape[1:] if draw(st.booleans()) else shape + [1]
    return tuple(shape)


def _hyper(draw, p, kw_out: Dict[str, Any]) -> None:
    """stride/padding/dilation/groups/layout/shape_rule for the problem; one of them
    (rarely) replaced with junk; some given in their other accepted forms."""
    def pair(v):
        if v[0] == v[1] and draw(st.booleans()):
            return v[0]
        return tuple(v) if draw(st.integers(0, 3)) else list(v)
    kw = dict(stride=pair(p["stride"]), dilation=pair(p["dilation"]), groups=p["G"],
              layout=p["layout"], shape_rule=p["rule"])
    pads = p["pads"]
    if pads[0] == pads[1] and pads[2] == pads[3] and draw(st.booleans()):
        kw["padding"] = (pads[0], pads[2]) if pads[0] != pads[2] else pads[0]
    else:
        kw["padding"] = tuple(pads)
    if kw["padding"] == 0 and draw(st.booleans()):
        kw["padding"] = "valid"
    if draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(["stride", "dilation", "padding", "groups", "layout",
                                     "shape_rule"]))
        pool = {"stride": JUNK_PAIR, "dilation": JUNK_PAIR, "padding": JUNK_PADDING,
                "groups": JUNK_GROUPS, "layout": JUNK_LAYOUT, "shape_rule": JUNK_RULE}[name]
        kw[name] = draw(st.sampled_from(pool))
    # defaults are sometimes left out
    for name, default in (("stride", 1), ("dilation", 1), ("groups", 1), ("layout", "NCHW"),
                          ("shape_rule", "strict"), ("padding", 0)):
        if kw[name] == default and type(kw[name]) is type(default) and draw(st.booleans()):
            del kw[name]
    kw_out.update(kw)


@st.composite
def conv_case(draw) -> Dict[str, Any]:
    fn = draw(st.sampled_from(["conv2d", "conv2d", "conv2d_backward", "conv2d_backward_input",
                               "conv2d_backward_weight", "conv2d_output_shape"]))
    p = draw(problem())
    xs, ws = shapes(p)
    ys = expected_out_shape(p, xs, ws) or tuple(1 for _ in xs)
    batched = draw(st.integers(0, 7)) != 0
    if not batched and p["N"] == 1:
        xs, ys = xs[1:], ys[1:]
    xs_m = draw(maybe_bad_shape(xs))
    ws_m = draw(maybe_bad_shape(ws))
    ys_m = draw(maybe_bad_shape(ys))
    dt = p["dtype"]
    kw: Dict[str, Any] = {}
    _hyper(draw, p, kw)
    if fn == "conv2d":
        args = [draw(array_for(xs_m, dt, 1)), draw(array_for(ws_m, dt, 2))]
        if draw(st.booleans()):
            kw["bias"] = draw(array_for(draw(maybe_bad_shape((p["K"],))), dt, 3))
        if draw(st.integers(0, 3)) == 0:
            kw["activation"] = draw(st.sampled_from(["relu", "relu", None] + JUNK_ACT))
        if draw(st.integers(0, 3)) == 0:
            kw["out"] = {"$out": draw(st.sampled_from(
                ["fresh", "fresh", "alias_x", "alias_w", "overlap_x", "readonly", "noncontig",
                 "fortran", "wrong_dtype", "wrong_shape", "misaligned", "list"]))}
    elif fn == "conv2d_backward":
        args = [draw(array_for(ys_m, dt, 4)), draw(array_for(xs_m, dt, 1)),
                draw(array_for(ws_m, dt, 2))]
        kw["bias"] = draw(st.sampled_from([True, False, np.bool_(True), 1, None]))
    elif fn == "conv2d_backward_input":
        args = [draw(array_for(ys_m, dt, 4)), draw(array_for(ws_m, dt, 2)), _shape_arg(draw, xs_m)]
    elif fn == "conv2d_backward_weight":
        args = [draw(array_for(ys_m, dt, 4)), draw(array_for(xs_m, dt, 1)), _shape_arg(draw, ws_m)]
    else:
        xs_h, ws_h = list(xs_m), list(ws_m)
        if draw(st.integers(0, 3)) == 0:  # huge sizes
            i = draw(st.integers(0, len(xs_h) - 1)) if xs_h else 0
            if xs_h:
                xs_h[i] = 2 ** draw(st.integers(20, 64))
            if draw(st.booleans()):
                ws_h[0] = 2 ** draw(st.integers(20, 64))
        args = [_shape_arg(draw, xs_h), _shape_arg(draw, ws_h)]
    return {"fn": fn, "args": enc(args), "kw": {k: enc(v) for k, v in kw.items()}}


def _shape_arg(draw, shape):
    shape = list(shape)
    roll = draw(st.integers(0, 15))
    if roll == 0:
        return draw(st.sampled_from([None, "1,2,3,4", shape and shape[0], [1.0] * len(shape)]))
    if roll == 1 and shape and -2**63 <= shape[0] < 2**63:
        shape[0] = np.int64(shape[0])
    if roll == 2 and shape:
        shape[-1] = -1
    return tuple(shape) if draw(st.integers(0, 3)) else shape


@st.composite
def gemm_case(draw) -> Dict[str, Any]:
    m, k, n = (draw(st.sampled_from([0, 1, 2, 3, 5, 8, 17, 33])) for _ in range(3))
    dt = draw(st.sampled_from(GOOD_DTYPES))
    a = draw(array_for(draw(maybe_bad_shape((m, k))), dt, 5))
    b = draw(array_for(draw(maybe_bad_shape((k, n))), dt, 6))
    kw = {}
    if draw(st.integers(0, 2)) == 0:
        kw["out"] = {"$out": draw(st.sampled_from(
            ["fresh", "fresh", "alias_a", "overlap_a", "readonly", "noncontig", "wrong_dtype",
             "wrong_shape", "misaligned", "list"]))}
    return {"fn": "gemm", "args": enc([a, b]), "kw": kw}


@st.composite
def num_params_case(draw) -> Dict[str, Any]:
    def num(lo=1):
        v = draw(st.one_of(st.integers(lo, 64), st.sampled_from([2**31, 2**32, 2**62, 2**63, 0, -1])))
        kind = draw(st.integers(0, 5))
        if kind == 0 and -2**63 <= v < 2**63:
            return np.int64(v)
        if kind == 1 and 0 <= v < 2**31:
            return np.int32(v)
        if kind == 2:
            return draw(st.sampled_from([2.0, None, "3", True, np.float64(2.0)]))
        return v
    ks = draw(st.one_of(st.builds(num), st.tuples(st.builds(num), st.builds(num))))
    kw = {}
    if draw(st.booleans()):
        kw["groups"] = num()
    if draw(st.booleans()):
        kw["bias"] = draw(st.sampled_from([True, False, np.bool_(False)]))
    return {"fn": "conv2d_num_params", "args": enc([num(), num(), ks]),
            "kw": {k: enc(v) for k, v in kw.items()}}


@st.composite
def threads_case(draw) -> Dict[str, Any]:
    n = draw(st.sampled_from([1, 2, 3, 4, 0, -1, 2**31 - 1, 2**31, 2**62, 2**63, np.int64(2),
                              np.int32(1), 2.0, True, None, "2"]))
    return {"fn": "set_num_threads", "args": enc([n]), "kw": {}}


@st.composite
def layer_case(draw) -> Dict[str, Any]:
    p = draw(problem())
    xs, ws = shapes(p)
    ys = expected_out_shape(p, xs, ws) or tuple(1 for _ in xs)
    ctor: Dict[str, Any] = dict(in_channels=p["C"], out_channels=p["K"],
                                kernel_size=(p["R"], p["S"]) if p["R"] != p["S"] else p["R"])
    hk: Dict[str, Any] = {}
    _hyper(draw, p, hk)
    ctor.update(hk)
    ctor["bias"] = draw(st.booleans())
    ctor["dtype"] = p["dtype"]
    ctor["rng"] = draw(st.integers(0, 2**16))
    if draw(st.integers(0, 3)) == 0:
        ctor["activation"] = draw(st.sampled_from(["relu", "relu", None] + JUNK_ACT))
    if draw(st.integers(0, 3)) == 0:
        ctor["requires_input_grad"] = draw(st.sampled_from([False, False, True, "yes", 0, None]))
    if draw(st.integers(0, 5)) == 0:
        ctor["init"] = draw(st.sampled_from(["he", "he", "pytorch", "xavier", "He", None, 1]))
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from(["in_channels", "out_channels", "kernel_size", "dtype", "rng",
                                     "bias"]))
        ctor[name] = draw(st.sampled_from({
            "in_channels": [0, -1, 2.0, None, np.int64(p["C"])],
            "out_channels": [0, -1, 2.0, None, np.int64(p["K"])],
            "kernel_size": JUNK_PAIR, "dtype": ["float16", "int32", None, "f4", "<f8", "bogus"],
            "rng": ["seed", 1.5, -1], "bias": [None, "yes", 0]}[name]))
    ops = draw(st.sampled_from([["forward", "backward"]] * 4 + [["forward"], ["backward"],
                                                                ["forward", "backward", "backward"]]))
    x = draw(array_for(draw(maybe_bad_shape(xs)), p["dtype"], 1))
    gy = draw(array_for(draw(maybe_bad_shape(ys)), p["dtype"], 4))
    return {"fn": "Conv2d", "args": [], "kw": {k: enc(v) for k, v in ctor.items()},
            "x": x, "grad_y": gy, "ops": ops}


# --- the locally-connected layer ------------------------------------------------------------

@st.composite
def lc_problem(draw) -> Dict[str, Any]:
    """problem() without groups or dilation (the layer has neither); the huge-dilation modes
    become huge padding. Shapes of the weight (Ho, Wo, K, ...) and bias come with it."""
    p = draw(problem())
    p["K"] //= p["G"]
    p["C"] //= p["G"]
    p["G"] = 1
    p["dilation"] = [1, 1]
    for ax, (hw, k) in enumerate((("H", "R"), ("W", "S"))):
        if p[k] > p[hw] + p["pads"][2 * ax] + p["pads"][2 * ax + 1] and draw(st.integers(0, 9)):
            p[hw] = p[k]
    if draw(st.integers(0, 4)) == 0:  # tiny input, huge stride and padding
        p["H"], p["W"] = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        p["R"], p["S"] = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        ax = draw(st.integers(0, 1))
        big = min(2**62, 2 ** draw(HUGE_EXPONENTS) + draw(st.integers(-1, 1)))
        p["stride"][ax] = big
        if draw(st.booleans()):
            p["pads"][2 * ax + draw(st.integers(0, 1))] = min(2**62, 2 ** draw(HUGE_EXPONENTS))
        p["rule"] = draw(st.sampled_from(["crop", "pad", "strict"]))
    # Per-position weights grow with the output: a weight of 2**22 to 2**36 elements is a
    # real array the call copies and packs (seconds, not a finding); keep the output small
    # there with a stride as large as the padded input. Larger ones stay: they must fail
    # fast with MemoryError naming the argument.
    xs, ws, _, _ = lc_shapes(p)
    count = math.prod(ws)
    if 2**22 <= count < 2**36:
        for ax, hw in enumerate(("H", "W")):
            p["stride"][ax] = max(p["stride"][ax],
                                  min(2**62, p[hw] + p["pads"][2 * ax] + p["pads"][2 * ax + 1]))
        if p["rule"] == "strict":
            p["rule"] = "crop"
    return p


def lc_shapes(p):
    """(x, weight, bias, y) shapes; weight/bias/y with (1, 1) positions when it does not fit."""
    xs, cws = shapes(p)
    try:
        geo = ref.Geometry(xs, cws, **ref_kw(p))
        ho, wo = geo.Ho, geo.Wo
    except (ref.RefShapeError, AssertionError):
        ho, wo = 1, 1
    K, C, R, S = p["K"], p["C"], p["R"], p["S"]
    if p["layout"] == "NCHW":
        return xs, (ho, wo, K, C, R, S), (K, ho, wo), (p["N"], K, ho, wo)
    return xs, (ho, wo, K, R, S, C), (ho, wo, K), (p["N"], ho, wo, K)


def _lc_hyper(draw, p, kw_out: Dict[str, Any]) -> None:
    """_hyper's stride/padding/layout/shape_rule; rarely a junk value or an argument the
    layer does not take (dilation, groups)."""
    kw: Dict[str, Any] = {}
    _hyper(draw, p, kw)
    kw.pop("dilation", None)
    kw.pop("groups", None)
    if draw(st.integers(0, 15)) == 7:
        kw[draw(st.sampled_from(["dilation", "groups"]))] = draw(st.sampled_from([1, 2]))
    kw_out.update(kw)


@st.composite
def lc_case(draw) -> Dict[str, Any]:
    fn = draw(st.sampled_from(["locally_connected2d", "locally_connected2d",
                               "locally_connected2d_backward"]))
    p = draw(lc_problem())
    xs, ws, bs, ys = lc_shapes(p)
    if draw(st.integers(0, 7)) == 0 and p["N"] == 1:
        xs, ys = xs[1:], ys[1:]
    xs_m, ws_m, ys_m = (draw(maybe_bad_shape(v)) for v in (xs, ws, ys))
    dt = p["dtype"]
    kw: Dict[str, Any] = {}
    _lc_hyper(draw, p, kw)
    if fn == "locally_connected2d":
        args = [draw(array_for(xs_m, dt, 1)), draw(array_for(ws_m, dt, 2))]
        if draw(st.booleans()):
            b = draw(array_for(draw(maybe_bad_shape(bs)), dt, 3))
            if draw(st.booleans()):
                kw["bias"] = b
            else:
                args.append(b)
        if draw(st.integers(0, 3)) == 0:
            kw["out"] = {"$out": draw(st.sampled_from(
                ["fresh", "fresh", "alias_x", "alias_w", "overlap_x", "readonly", "noncontig",
                 "fortran", "wrong_dtype", "wrong_shape", "misaligned", "list"]))}
    else:
        args = [draw(array_for(ys_m, dt, 4)), draw(array_for(xs_m, dt, 1)),
                draw(array_for(ws_m, dt, 2))]
        if draw(st.booleans()):
            kw["bias"] = draw(st.sampled_from([True, False, np.bool_(True), 1, None]))
    return {"fn": fn, "args": enc(args), "kw": {k: enc(v) for k, v in kw.items()}}


def _num(draw, lo=1):
    v = draw(st.one_of(st.integers(lo, 64), st.sampled_from([2**31, 2**32, 2**62, 2**63, 0, -1])))
    kind = draw(st.integers(0, 5))
    if kind == 0 and -2**63 <= v < 2**63:
        return np.int64(v)
    if kind == 1 and 0 <= v < 2**31:
        return np.int32(v)
    if kind == 2:
        return draw(st.sampled_from([2.0, None, "3", True, np.float64(2.0)]))
    return v


@st.composite
def lc_num_params_case(draw) -> Dict[str, Any]:
    p = draw(lc_problem())
    size = (p["H"], p["W"]) if p["H"] != p["W"] or draw(st.booleans()) else p["H"]
    ks = (p["R"], p["S"]) if p["R"] != p["S"] or draw(st.booleans()) else p["R"]
    cin, cout = p["C"], p["K"]
    roll = draw(st.integers(0, 5))
    if roll == 0:
        size = draw(st.sampled_from([_num(draw), (_num(draw), _num(draw)), (2**62, 2**62),
                                     (2**40, 1), [3, 3]]))
    elif roll == 1:
        cin, cout = _num(draw), _num(draw)
    elif roll == 2:
        ks = draw(st.sampled_from([_num(draw), (_num(draw), _num(draw)), (2**62, 1)]))
    kw: Dict[str, Any] = {}
    _lc_hyper(draw, p, kw)
    kw.pop("layout", None)
    if draw(st.booleans()):
        kw["bias"] = draw(st.sampled_from([True, False, np.bool_(False), 1, None]))
    return {"fn": "locally_connected2d_num_params", "args": enc([size, cin, cout, ks]),
            "kw": {k: enc(v) for k, v in kw.items()}}


@st.composite
def lc_layer_case(draw) -> Dict[str, Any]:
    p = draw(lc_problem())
    p["rule"] = "strict"  # the layer's rule: usually sizes that fit it
    if draw(st.integers(0, 3)):
        for ax, (hw, k) in enumerate((("H", "R"), ("W", "S"))):
            st_ = p["stride"][ax]
            if st_ <= 3:
                span = p[hw] + p["pads"][2 * ax] + p["pads"][2 * ax + 1] - p[k]
                if span >= 0:
                    p[hw] += (-span) % st_
    xs, ws, bs, ys = lc_shapes(p)
    ctor: Dict[str, Any] = dict(in_channels=p["C"], out_channels=p["K"],
                                kernel_size=(p["R"], p["S"]) if p["R"] != p["S"] else p["R"],
                                input_size=(p["H"], p["W"]))
    hk: Dict[str, Any] = {}
    _lc_hyper(draw, p, hk)
    hk.pop("shape_rule", None)
    ctor.update(hk)
    ctor["bias"] = draw(st.booleans())
    ctor["dtype"] = p["dtype"]
    ctor["rng"] = draw(st.integers(0, 2**16))
    if draw(st.integers(0, 3)) == 0:
        ctor["requires_input_grad"] = draw(st.sampled_from([False, False, True, "yes", 0, None]))
    if draw(st.integers(0, 5)) == 0:
        ctor["init"] = draw(st.sampled_from(["he", "he", "pytorch", "xavier", None]))
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from(["in_channels", "out_channels", "kernel_size", "input_size",
                                     "dtype", "bias"]))
        ctor[name] = draw(st.sampled_from({
            "in_channels": [0, -1, 2.0, None, np.int64(p["C"])],
            "out_channels": [0, -1, 2.0, None, np.int64(p["K"])],
            "kernel_size": JUNK_PAIR, "input_size": JUNK_PAIR,
            "dtype": ["float16", "int32", None, "f4", "<f8", "bogus"],
            "bias": [None, "yes", 0]}[name]))
    ops = draw(st.sampled_from([["forward", "backward"]] * 4 + [["forward"], ["backward"],
                                                                ["forward", "backward", "backward"]]))
    x = draw(array_for(draw(maybe_bad_shape(xs)), p["dtype"], 1))
    gy = draw(array_for(draw(maybe_bad_shape(ys)), p["dtype"], 4))
    return {"fn": "LocallyConnected2d", "args": [], "kw": {k: enc(v) for k, v in ctor.items()},
            "x": x, "grad_y": gy, "ops": ops}


@st.composite
def any_case(draw, isas: List[str]) -> Dict[str, Any]:
    case = draw(st.one_of(
        conv_case(), conv_case(), conv_case(), conv_case(), conv_case(), conv_case(),
        gemm_case(), num_params_case(), layer_case(), layer_case(), threads_case(),
        lc_case(), lc_case(), lc_case(), lc_num_params_case(), lc_layer_case(),
        lc_layer_case()))
    case["isa"] = draw(st.sampled_from(isas))
    case["threads"] = draw(st.sampled_from([1, 2]))
    return case
