"""convcore benchmark: GFLOP/s of convcore against its peers, measured in the same run.

    python -m convcore.bench                      # the whole layer suite, 3 passes
    python -m convcore.bench --layers resnet --passes fwd --batch 4 --threads 1
    python -m convcore.bench --gemm               # convcore.gemm against NumPy's a @ b
    python -m convcore.bench --family transposed  # conv_transpose2d against torch
    python -m convcore.bench --algorithm winograd --passes fwd   # 3×3 stride-1 layers only
    python -m convcore.bench --suite family --threads 2 --layout NHWC   # depthwise, grouped
    python -m convcore.bench --suite real --threads 2   # speech, detection, OCR, batch 1

Peers: NumPy im2col (as_strided + one copy + one BLAS matmul; col2im by filter taps) and,
when installed, PyTorch CPU (torch.nn.functional.conv2d and aten.convolution_backward).
GFLOP = 2·N·K·Ho·Wo·(C/groups)·R·S per pass. Every implementation runs with the same
thread count; each peer's result is checked once against convcore's before it is timed.
Reported numbers are medians of timed samples taken after a warm-up, the implementations
taking turns (see measure()).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import convcore
from convcore._im2col_numpy import Im2colConv

PASSES = ("fwd", "bwd_data", "bwd_weight")
SHORT = {"numpy": "np", "torch": "torch"}   # column headings of the ratios
WARMUP_S = 0.2            # untimed calls before each visit's samples (see measure())
SAMPLE_S = 0.02           # one timed sample repeats a short call to last this long
MIN_TIME_S = 0.5          # fewer than --repeat samples once they add up to this
NOISY_SPREAD = 0.30       # (max − min)/median of an implementation's samples above this: flagged
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_GEMM_SIZES = [(2048, 2048, 2048, "float32"), (64, 12544, 576, "float32"),
                      (256, 3136, 1152, "float32"), (512, 784, 4608, "float32"),
                      (96, 3025, 363, "float32"), (4608, 512, 784, "float32"),
                      (1024, 1024, 1024, "float64")]


# -- the layer suite --------------------------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    """One conv layer of the suite: batch N, C input channels of H×W, K filters of R×S,
    square stride and symmetric zero padding (shape_rule "crop"), in `groups` groups."""
    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: int
    pad: int
    groups: int = 1

    @property
    def out_hw(self) -> Tuple[int, int]:
        return ((self.h + 2 * self.pad - self.r) // self.stride + 1,
                (self.w + 2 * self.pad - self.s) // self.stride + 1)

    @property
    def gflop(self) -> float:
        """GFLOP of one pass: 2·N·K·Ho·Wo·(C/groups)·R·S."""
        ho, wo = self.out_hw
        return 2.0 * self.n * self.k * ho * wo * (self.c // self.groups) * self.r * self.s / 1e9

    def x_shape(self, layout: str) -> Tuple[int, int, int, int]:
        return ((self.n, self.c, self.h, self.w) if layout == "NCHW"
                else (self.n, self.h, self.w, self.c))

    def w_shape(self, layout: str) -> Tuple[int, int, int, int]:
        cg = self.c // self.groups
        return ((self.k, cg, self.r, self.s) if layout == "NCHW"
                else (self.k, self.r, self.s, cg))

    def y_shape(self, layout: str) -> Tuple[int, int, int, int]:
        ho, wo = self.out_hw
        return (self.n, self.k, ho, wo) if layout == "NCHW" else (self.n, ho, wo, self.k)


def load_layers(path: Optional[str] = None) -> List[Layer]:
    """Layers from a CSV file (name,N,C,H,W,K,R,S,stride,pad[,groups]; '#' starts a comment
    line); the suite shipped with convcore when path is None, a suite shipped under that
    name (convcore/data/NAME.csv, e.g. "family") when path names no file."""
    packaged = resources.files("convcore").joinpath("data", f"{path}.csv") if path else None
    if path is None:
        text = resources.files("convcore").joinpath("data", "layers.csv").read_text()
        source = "convcore/data/layers.csv"
    elif packaged is not None and not os.path.exists(path) and os.sep not in path \
            and packaged.is_file():
        text = packaged.read_text()
        source = f"convcore/data/{path}.csv"
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        source = path
    layers = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if row[0].strip() == "name":
            continue
        if len(row) not in (10, 11):
            raise ValueError(f"{source}:{lineno}: expected 10 or 11 fields "
                             f"(name,N,C,H,W,K,R,S,stride,pad[,groups]), got {len(row)}: {row}")
        try:
            values = [int(v) for v in row[1:]]
        except ValueError as e:
            raise ValueError(f"{source}:{lineno}: {e}") from None
        layer = Layer(row[0].strip(), *values)
        if layer.groups < 1 or layer.c % layer.groups or layer.k % layer.groups:
            raise ValueError(f"{source}:{lineno}: groups must divide C and K: {row}")
        layers.append(layer)
    return layers


def select_layers(layers: Sequence[Layer], spec: Optional[str]) -> List[Layer]:
    """The layers whose name equals or contains one of the comma-separated terms of spec."""
    if not spec:
        return list(layers)
    terms = [t.strip() for t in spec.split(",") if t.strip()]
    for t in terms:
        if not any(t in layer.name for layer in layers):
            names = ", ".join(layer.name for layer in layers)
            raise ValueError(f"--layers: {t!r} matches no layer (known: {names})")
    return [layer for layer in layers if any(t in layer.name for t in terms)]


# -- measuring --------------------------------------------------------------------------------

@dataclass
class Impl:
    """One implementation of a layer's passes: a zero-argument callable per pass, and how
    to turn what it returns into a NumPy array laid out like convcore's result."""
    name: str
    passes: Dict[str, Callable[[], Any]]
    to_numpy: Callable[[Any], np.ndarray] = np.asarray


def warm_up(fn: Callable[[], Any]) -> int:
    """Call fn for WARMUP_S (at least once) and return how many back-to-back calls make one
    timed sample last SAMPLE_S (1 for all but microsecond-scale work)."""
    calls, t0 = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - t0 < WARMUP_S:
        fn()
        calls += 1
    return max(1, math.ceil(SAMPLE_S * calls / (time.perf_counter() - t0)))


def measure(impls: Sequence[Impl], pass_name: str, gflop: float, repeat: int,
            label: str) -> Dict[str, Dict[str, Any]]:
    """Median seconds per call and GFLOP/s of one pass of every implementation.

    The first call of each implementation is checked against convcore's result (impls[0]
    is convcore, the reference). Each implementation is then visited twice, in mirrored
    order (A B C C B A), so that a slow phase of a shared or virtual machine does not fall
    on one implementation alone. A visit starts with WARMUP_S of untimed calls — long
    enough for the previous implementation's thread pool to stop spinning (OpenBLAS spins
    for ~0.1 s after a call, taking a core) and for this one's to be awake — then takes
    timed samples: half of `repeat` (the first visit rounds up), fewer once they add up to
    MIN_TIME_S / 2.
    """
    results: Dict[str, Dict[str, Any]] = {impl.name: {} for impl in impls}
    samples: Dict[str, List[float]] = {impl.name: [] for impl in impls}
    per_sample: Dict[str, int] = {}
    reference = None
    for visit, impl in enumerate(list(impls) + list(impls)[::-1]):
        fn = impl.passes[pass_name]
        quota = (repeat + 1) // 2 if visit < len(impls) else repeat // 2
        if quota == 0:
            continue
        if reference is None:
            reference = impl.to_numpy(fn())
        elif impl.name not in per_sample:
            ok, err = agree(impl.to_numpy(fn()), reference)
            results[impl.name].update(agrees=ok, max_rel_error=err)
            if not ok:
                print(f"WARNING: {impl.name} disagrees with convcore on {label} "
                      f"(max error {err:.2e} of the largest magnitude)", flush=True)
        calls = per_sample.setdefault(impl.name, warm_up(fn))
        visit_time = 0.0
        for _ in range(quota):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            elapsed = time.perf_counter() - t0
            samples[impl.name].append(elapsed / calls)
            visit_time += elapsed
            if visit_time >= MIN_TIME_S / 2:
                break
    for name, times in samples.items():
        seconds = float(np.median(times))
        spread = (max(times) - min(times)) / seconds
        results[name].update(seconds=seconds, gflops=gflop / seconds, samples=len(times),
                             calls_per_sample=per_sample[name], spread=spread,
                             gflops_min=gflop / max(times), gflops_max=gflop / min(times),
                             noisy=bool(len(times) > 1 and spread > NOISY_SPREAD))
    return results


def cell(res: Dict[str, Any]) -> str:
    """GFLOP/s median with the samples' spread, (max − min)/median, in percent."""
    return f" {res['gflops']:>8.1f} {min(res['spread'], 9.99) * 100:>3.0f}%"


def agree(result: np.ndarray, reference: np.ndarray) -> Tuple[bool, float]:
    """Whether a peer's result matches convcore's (allclose with a tolerance loose enough
    for float32 sums of thousands of products), and the largest error relative to the
    reference's largest magnitude."""
    if result.shape != reference.shape:
        return False, math.inf
    tol = 1e-3 if reference.dtype == np.float32 else 1e-9
    scale = float(np.max(np.abs(reference))) or 1.0
    err = float(np.max(np.abs(result - reference))) / scale
    return bool(np.allclose(result, reference, rtol=tol, atol=tol * scale)), err


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def geomean(values: Sequence[float]) -> float:
    """Geometric mean; NaN for no values (a peer that ran on no layer of the suite)."""
    if not values:
        return math.nan
    return float(math.exp(sum(math.log(v) for v in values) / len(values)))


# -- threads and environment ------------------------------------------------------------------

def pin_blas_threads(n: int, module: str) -> None:
    """Make NumPy's BLAS use n threads, restarting `python -m module` when necessary.

    OpenBLAS/MKL read their thread count from the environment once, when NumPy is first
    loaded — and `import convcore` has already loaded it. Without threadpoolctl the only
    portable way to change it is to set OPENBLAS/OMP/MKL_NUM_THREADS and start again, which
    this does (at most once: the new process finds the environment already set).
    """
    if all(os.environ.get(var) == str(n) for var in BLAS_ENV):
        return
    env = dict(os.environ, **{var: str(n) for var in BLAS_ENV})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)


def blas_threads_note(n: int) -> str:
    """How many threads NumPy's BLAS runs, as far as the environment tells."""
    setting = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if setting is None:
        return "NumPy BLAS: library default (no *_NUM_THREADS set)"
    warn = "" if setting == str(n) else f"  [differs from {n}: run via python -m to pin it]"
    return f"NumPy BLAS {setting}{warn}"


def import_torch() -> Any:
    """The torch module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def config_summary(cfg: Dict[str, Any]) -> List[str]:
    """show_config() in a few short lines: version, ISA, threads, one line per microkernel."""
    lines = [f"convcore {cfg['version']}: ISA {cfg['isa']} (available: "
             f"{', '.join(cfg['isa_available'])}), OpenMP {'on' if cfg['openmp'] else 'off'}, "
             f"{plural(cfg['threads'], 'thread')}"]
    for dtype, b in cfg["blocking"].items():
        lines.append(f"  {dtype} microkernel {b['kernel']}: MR×NR {b['MR']}×{b['NR']}, "
                     f"KC {b['KC']}, MC {b['MC']}, NC {b['NC']}")
    return lines


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(torch: Any, threads: int) -> Dict[str, Any]:
    """What a result file needs to be interpreted later."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "convcore_config": convcore.show_config(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "blas_env": {var: os.environ.get(var) for var in BLAS_ENV},
    }


# -- the implementations of each pass ---------------------------------------------------------

def make_operands(layer: Layer, layout: str, dtype: np.dtype,
                  rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Random x, weight, bias and grad_output for the layer."""
    fan_in = layer.c // layer.groups * layer.r * layer.s
    return {
        "x": rng.standard_normal(layer.x_shape(layout), dtype=dtype),
        "w": rng.standard_normal(layer.w_shape(layout), dtype=dtype) / math.sqrt(fan_in),
        "b": rng.standard_normal(layer.k, dtype=dtype),
        "dy": rng.standard_normal(layer.y_shape(layout), dtype=dtype),
    }


def convcore_impl(layer: Layer, layout: str, ops: Dict[str, np.ndarray],
                  algorithm: Optional[str] = None, prepacked: bool = False) -> Impl:
    """convcore's functional calls (weights packed — for Winograd, transformed — per call),
    or with prepacked=True one primitive per layer whose weights set_weights packed once
    (as a Conv2d layer object keeps them)."""
    kw: Dict[str, Any] = dict(stride=layer.stride, padding=layer.pad, layout=layout,
                              shape_rule="crop", algorithm=algorithm, groups=layer.groups)
    x, w, b, dy = ops["x"], ops["w"], ops["b"], ops["dy"]
    passes: Dict[str, Callable[[], Any]] = {
        "fwd": lambda: convcore.conv2d(x, w, b, **kw),
        "bwd_data": lambda: convcore.conv2d_backward_input(dy, w, x.shape, **kw),
        "bwd_weight": lambda: convcore.conv2d_backward_weight(dy, x, w.shape, **kw),
    }
    if prepacked:
        from convcore._conv import _Problem
        prob = _Problem(x.shape, w.shape, layer.stride, layer.pad, 1, layer.groups, layout, "crop",
                        x.dtype.name, algorithm)
        prob.plan.set_weights(w)

        def fwd() -> np.ndarray:
            y = np.empty(prob.y_shape, dtype=x.dtype)
            prob.plan.forward(x, None, b, y, False)
            return y

        def bwd_data() -> np.ndarray:
            dx = np.empty(x.shape, dtype=x.dtype)
            prob.plan.backward_data(dy, None, dx)
            return dx

        passes.update(fwd=fwd, bwd_data=bwd_data)
    return Impl("convcore", passes)


def forward_error(layer: Layer, layout: str, ops: Dict[str, np.ndarray],
                  y: np.ndarray) -> float:
    """Largest error of a forward result relative to the largest output of the float64
    exact convolution of the same operands."""
    kw: Dict[str, Any] = dict(stride=layer.stride, padding=layer.pad, layout=layout,
                              shape_rule="crop")
    f64 = {k: v.astype(np.float64) for k, v in ops.items()}
    want = convcore.conv2d(f64["x"], f64["w"], f64["b"], **kw)
    return float(np.max(np.abs(y - want)) / (np.max(np.abs(want)) or 1.0))


def numpy_impl(layer: Layer, layout: str, ops: Dict[str, np.ndarray]) -> Impl:
    x, w, b, dy = ops["x"], ops["w"], ops["b"], ops["dy"]
    peer = Im2colConv(x.shape, w.shape, layer.stride, layer.pad, layout)
    return Impl("numpy", {
        "fwd": lambda: peer.forward(x, w, b),
        "bwd_data": lambda: peer.backward_data(dy, w),
        "bwd_weight": lambda: peer.backward_weight(dy, x),
    })


def torch_impl(torch: Any, layer: Layer, layout: str, ops: Dict[str, np.ndarray]) -> Impl:
    """PyTorch CPU on the same buffers (no copies); NHWC arrays become channels_last
    tensors, so oneDNN runs its NHWC path."""
    def tensor(a: np.ndarray) -> Any:
        t = torch.from_numpy(a)
        return t.permute(0, 3, 1, 2) if (layout == "NHWC" and a.ndim == 4) else t

    x, w, b, dy = (tensor(ops[key]) for key in ("x", "w", "b", "dy"))
    st, pad = [layer.stride] * 2, [layer.pad] * 2
    conv_backward = torch.ops.aten.convolution_backward

    def backward(mask: List[bool], which: int) -> Any:
        return conv_backward(dy, x, w, None, st, pad, [1, 1], False, [0, 0], layer.groups,
                             mask)[which]

    def to_numpy(t: Any) -> np.ndarray:
        arr: np.ndarray = (t.permute(0, 2, 3, 1) if layout == "NHWC" else t).numpy()
        return arr

    return Impl("torch", {
        "fwd": lambda: torch.nn.functional.conv2d(x, w, b, stride=st, padding=pad,
                                                  groups=layer.groups),
        "bwd_data": lambda: backward([True, False, False], 0),
        "bwd_weight": lambda: backward([False, True, False], 1),
    }, to_numpy)


# -- transposed convolution (--family transposed) --------------------------------------------

# name, N, C_in, H, W, C_out, kernel, stride, padding, output_padding
TRANSPOSED_LAYERS = [
    ("convT_s2_k4_256to128", 16, 256, 16, 16, 128, 4, 2, 1, 0),
    ("convT_s2_k3_op1_64to32", 8, 64, 56, 56, 32, 3, 2, 1, 1),
]


def run_transposed(args: argparse.Namespace, torch: Any) -> Dict[str, Any]:
    """conv_transpose2d's three passes against torch (same table as the layer suite; GFLOP
    = 2·N·C_in·H·W·(C_out)·R·S per pass). convcore's backward passes go through the
    transposed primitive (planned per call, like the functional calls)."""
    from .transposed import _TProblem
    dtype = np.dtype(args.dtype or "float32")
    layout = args.layout
    names = ["convcore"] + (["torch"] if torch is not None else [])
    print(f"transposed convolution, layout {layout}, {dtype.name}; GFLOP/s and spread as "
          "in the layer suite; ratio > 1: convcore faster")
    head = (f"{'layer':<24} {'pass':<10} {'GFLOP':>7}" + "".join(f" {n:>13}" for n in names)
            + (f" {'cc/torch':>9}" if torch is not None else ""))
    print(head)
    print("-" * len(head))
    rng = np.random.default_rng(0)
    rows = []
    for name, n, c, h, w, k, f, st, pad, op in TRANSPOSED_LAYERS:
        if args.layers and not any(t in name for t in args.layers.split(",")):
            continue
        n = args.batch or n
        ho, wo = (h - 1) * st - 2 * pad + f + op, (w - 1) * st - 2 * pad + f + op
        gflop = 2.0 * n * c * h * w * k * f * f / 1e9
        nhwc = layout == "NHWC"
        x = rng.standard_normal((n, h, w, c) if nhwc else (n, c, h, w), dtype=dtype)
        wt = rng.standard_normal((c, f, f, k) if nhwc else (c, k, f, f),
                                 dtype=dtype) / math.sqrt(c * f * f)
        b = rng.standard_normal(k, dtype=dtype)
        dy = rng.standard_normal((n, ho, wo, k) if nhwc else (n, k, ho, wo), dtype=dtype)
        kw: Dict[str, Any] = dict(stride=st, padding=pad, output_padding=op, layout=layout)

        def plan() -> Any:
            return _TProblem(x.shape, wt.shape, st, pad, op, 1, 1, layout, dtype.name).plan

        def bwd_data() -> np.ndarray:
            dx = np.empty_like(x)
            plan().backward_data(dy, wt, dx)
            return dx

        def bwd_weight() -> np.ndarray:
            dw = np.empty_like(wt)
            plan().backward_weight(dy, x, dw)
            return dw

        impls = [Impl("convcore", {
            "fwd": lambda: convcore.conv_transpose2d(x, wt, b, **kw),
            "bwd_data": bwd_data, "bwd_weight": bwd_weight})]
        if torch is not None:
            def tensor(a: np.ndarray) -> Any:
                t = torch.from_numpy(a)
                return t.permute(0, 3, 1, 2) if nhwc else t

            tx, tw, tb, tdy = tensor(x), tensor(wt), torch.from_numpy(b), tensor(dy)
            cb = torch.ops.aten.convolution_backward

            def to_numpy(t: Any) -> np.ndarray:
                arr: np.ndarray = (t.permute(0, 2, 3, 1) if nhwc else t).numpy()
                return arr

            impls.append(Impl("torch", {
                "fwd": lambda: torch.nn.functional.conv_transpose2d(
                    tx, tw, tb, stride=st, padding=pad, output_padding=op),
                "bwd_data": lambda: cb(tdy, tx, tw, None, [st] * 2, [pad] * 2, [1, 1], True,
                                       [op] * 2, 1, [True, False, False])[0],
                "bwd_weight": lambda: cb(tdy, tx, tw, None, [st] * 2, [pad] * 2, [1, 1], True,
                                         [op] * 2, 1, [False, True, False])[1],
            }, to_numpy))
        for i, pass_name in enumerate(args.passes):
            res = measure(impls, pass_name, gflop, args.repeat, f"{name} {pass_name}")
            ratio = (res["convcore"]["gflops"] / res["torch"]["gflops"]) if torch else None
            rows.append({"layer": name, "pass": pass_name, "gflop": gflop, "results": res,
                         "ratio_torch": ratio})
            print(f"{name if i == 0 else '':<24} {pass_name:<10} {gflop:>7.4g}"
                  + "".join(cell(res[m]) for m in names)
                  + (f" {ratio:>8.2f} " if ratio is not None else ""), flush=True)
    return {"mode": "transposed", "layout": layout, "dtype": dtype.name, "rows": rows}


# -- the two modes ----------------------------------------------------------------------------

def run_layers(args: argparse.Namespace, torch: Any) -> Dict[str, Any]:
    """The layer-suite mode: a table row per layer and pass, then the geometric means."""
    layers = args.suite
    dtype = np.dtype(args.dtype or "float32")
    names = ["convcore"] + [n for n, on in (("numpy", args.numpy), ("torch", torch is not None))
                            if on]
    peers = names[1:]
    winograd = args.algorithm == "winograd"
    if winograd or args.prepacked:
        print(f"convcore: algorithm {args.algorithm}"
              + (" (forward; backward passes exact)" if winograd else "")
              + ("; weights packed once per layer (set_weights), not per call"
                 if args.prepacked else "; weights packed per call (functional API)"))
    print(f"layout {args.layout}, {dtype.name}, shape_rule crop; GFLOP/s = pass GFLOP / median "
          f"time per call (≤{args.repeat} samples after a warm-up), then the samples' spread "
          f"(max − min)/median; ratio > 1: convcore faster; '!': a spread over "
          f"{NOISY_SPREAD:.0%} on either side, the ratio is not to be trusted")
    total = len(layers) * len(args.passes)
    width = len(str(total))
    head = (f"{'#':>{2 * width + 1}} {'layer':<22} {'pass':<10} {'GFLOP':>7}"
            + "".join(f" {n:>13}" for n in names)
            + "".join(f" {'cc/' + SHORT[p]:>9}" for p in peers)
            + (f" {'fwd err':>8}" if winograd else ""))
    print(head)
    print("-" * len(head))
    rng = np.random.default_rng(0)
    rows = []
    for layer in layers:
        ops = make_operands(layer, args.layout, dtype, rng)
        impls = [convcore_impl(layer, args.layout, ops,
                               "winograd" if winograd else None, args.prepacked)]
        if args.numpy and layer.groups == 1:  # the NumPy peer has no groups: its cells "-"
            impls.append(numpy_impl(layer, args.layout, ops))
        if torch is not None:
            impls.append(torch_impl(torch, layer, args.layout, ops))
        for i, pass_name in enumerate(args.passes):
            res = measure(impls, pass_name, layer.gflop, args.repeat,
                          f"{layer.name} {pass_name}")
            ratios = {p: res["convcore"]["gflops"] / res[p]["gflops"] for p in peers if p in res}
            noisy = {p: res[p]["noisy"] or res["convcore"]["noisy"] for p in peers if p in res}
            row = {"layer": asdict(layer), "pass": pass_name, "gflop": layer.gflop,
                   "results": res, "ratios": ratios, "noisy": noisy}
            err_cell = ""
            if winograd:
                err_cell = " " * 9
                if pass_name == "fwd":
                    row["fwd_rel_error"] = forward_error(layer, args.layout, ops,
                                                         impls[0].passes["fwd"]())
                    err_cell = f" {row['fwd_rel_error']:>8.1e}"
            rows.append(row)
            done = f"{len(rows)}/{total}"
            print(f"{done:>{2 * width + 1}} {layer.name if i == 0 else '':<22} {pass_name:<10} "
                  f"{layer.gflop:>7.4g}"
                  + "".join(cell(res[n]) if n in res else f" {'-':>13}" for n in names)
                  + "".join(f" {ratios[p]:>8.2f}{'!' if noisy[p] else ' '}" if p in ratios
                            else f" {'-':>9}" for p in peers)
                  + err_cell, flush=True)
        del impls, ops
    summary = {p: {pn: geomean([r["ratios"][p] for r in rows
                                if r["pass"] == pn and p in r["ratios"]])
                   for pn in args.passes} for p in peers}
    if peers:
        print(f"\ngeometric mean of convcore/peer over {plural(len(layers), 'layer')}:")
        print(f"  {'':<8}" + "".join(f" {pn:>11}" for pn in args.passes))
        for p in peers:
            print(f"  {p:<8}" + "".join(f" {summary[p][pn]:>10.2f}x" for pn in args.passes))
        for p in peers:
            flagged = sum(r["noisy"].get(p, False) for r in rows)
            if flagged:
                print(f"  {p}: {flagged} of {len(rows)} ratios flagged '!' (samples spread over "
                      f"{NOISY_SPREAD:.0%}): rerun those, or read the geomean as rough")
    if args.plot:
        plot_layers(rows, names, args)
    if winograd:
        print("fwd err: the largest error of convcore's forward relative to the largest output "
              "of the float64 exact convolution of the same operands")
    return {"mode": "layers", "layout": args.layout, "dtype": dtype.name,
            "algorithm": args.algorithm, "prepacked": args.prepacked,
            "layer_file": args.csv or "convcore/data/layers.csv", "rows": rows,
            "geomean_ratios": summary}


def plot_layers(rows: List[Dict[str, Any]], names: List[str], args: argparse.Namespace) -> None:
    """GFLOP/s per layer and pass, the implementations side by side, with the samples'
    range as error bars; written to args.plot (matplotlib, the optional 'plot' extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib: pip install 'convcore[plot]'", file=sys.stderr)
        return
    passes = args.passes
    fig, axes = plt.subplots(len(passes), 1, figsize=(12, 3.2 * len(passes)), squeeze=False)
    for ax, pass_name in zip(axes[:, 0], passes):
        sel = [r for r in rows if r["pass"] == pass_name]
        x = np.arange(len(sel))
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            med = np.array([r["results"][name]["gflops"] for r in sel])
            lo = med - np.array([r["results"][name]["gflops_min"] for r in sel])
            hi = np.array([r["results"][name]["gflops_max"] for r in sel]) - med
            ax.bar(x + (j - (len(names) - 1) / 2) * width, med, width, label=name,
                   yerr=np.vstack([lo, hi]), capsize=2)
        ax.set_xticks(x)
        ax.set_xticklabels([r["layer"]["name"] for r in sel], rotation=30, ha="right",
                           fontsize=8)
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"{pass_name}, {args.layout}, {args.dtype or 'float32'}, "
                     f"{convcore.get_num_threads()} threads — median, bars: min–max")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"plot written to {args.plot}")


def gemm_sizes(spec: Optional[str], dtype: Optional[str]) -> List[Tuple[int, int, int, str]]:
    """(M, N, K, dtype) of each GEMM to time: 'MxNxK,...' in `dtype` (float32 by default),
    or DEFAULT_GEMM_SIZES (all in `dtype` when one is given)."""
    if not spec:
        return [(m, n, k, dtype or dt) for m, n, k, dt in DEFAULT_GEMM_SIZES]
    sizes = []
    for item in spec.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--sizes: {item!r} is not MxNxK with positive integers")
        m, n, k = (int(p) for p in parts)
        sizes.append((m, n, k, dtype or "float32"))
    return sizes


def run_gemm(args: argparse.Namespace) -> Dict[str, Any]:
    """GEMM mode: convcore.gemm against NumPy's matmul (both writing into a preallocated
    output, so neither pays for a fresh allocation)."""
    sizes = args.gemm_sizes
    names = ["convcore"] + (["numpy"] if args.numpy else [])
    print(f"C = A·B, A M×K, B K×N; GFLOP = 2·M·N·K; GFLOP/s from the median time per call "
          f"(≤{args.repeat} samples after a warm-up)")
    head = (f"{'M×N×K':<18} {'dtype':<8} {'GFLOP':>7}" + "".join(f" {n:>9}" for n in names)
            + (f" {'cc/np':>8}" if args.numpy else ""))
    print(head)
    print("-" * len(head))
    rng = np.random.default_rng(0)
    rows = []
    for m, n, k, dt in sizes:
        a = rng.standard_normal((m, k), dtype=np.dtype(dt))
        b = rng.standard_normal((k, n), dtype=np.dtype(dt))
        c_cc = np.empty((m, n), dtype=dt)
        c_np = np.empty((m, n), dtype=dt)
        impls = [Impl("convcore", {"gemm": lambda: convcore.gemm(a, b, out=c_cc)})]
        if args.numpy:
            impls.append(Impl("numpy", {"gemm": lambda: np.matmul(a, b, out=c_np)}))
        gflop = 2.0 * m * n * k / 1e9
        label = f"{m}x{n}x{k}"
        res = measure(impls, "gemm", gflop, args.repeat, f"gemm {label} {dt}")
        ratio = res["convcore"]["gflops"] / res["numpy"]["gflops"] if args.numpy else None
        rows.append({"m": m, "n": n, "k": k, "dtype": dt, "gflop": gflop, "results": res,
                     "ratio_numpy": ratio})
        print(f"{label:<18} {dt:<8} {gflop:>7.4g}"
              + "".join(f" {res[nm]['gflops']:>9.1f}" for nm in names)
              + (f" {ratio:>8.2f}" if ratio is not None else ""), flush=True)
    summary = None
    if args.numpy:
        summary = geomean([r["ratio_numpy"] for r in rows])
        print(f"\ngeometric mean of convcore/numpy over {len(rows)} shapes: {summary:.2f}x")
    return {"mode": "gemm", "rows": rows, "geomean_ratio_numpy": summary}


# -- layer-object calls ---------------------------------------------------------------------

# Small and batch-1 layers, where the per-call cost shows: name, Conv2d arguments, x shape.
LAYER_CALL_CASES: List[Tuple[str, Dict[str, Any], Tuple[int, ...]]] = [
    ("numpy_example 11x11x4 K2 5x5/2 NHWC",
     dict(in_channels=4, out_channels=2, kernel_size=5, stride=2, layout="NHWC"), (1, 11, 11, 4)),
    ("seed 64x4x11x11 K12 5x5/2",
     dict(in_channels=4, out_channels=12, kernel_size=5, stride=2), (64, 4, 11, 11)),
    ("3x3 16->16 8x8 batch 1",
     dict(in_channels=16, out_channels=16, kernel_size=3, padding=1), (1, 16, 8, 8)),
    ("1x1 256->64 14x14 batch 1",
     dict(in_channels=256, out_channels=64, kernel_size=1), (1, 256, 14, 14)),
    ("3x3 512->512 7x7 batch 1",
     dict(in_channels=512, out_channels=512, kernel_size=3, padding=1), (1, 512, 7, 7)),
    ("3x3 64->64 56x56 batch 1",
     dict(in_channels=64, out_channels=64, kernel_size=3, padding=1), (1, 64, 56, 56)),
]


def _median_call_s(fn: Callable[[], Any], min_time: float = 0.3) -> float:
    """Median seconds per call over single calls lasting at least min_time in all, after
    a warm-up of WARMUP_S."""
    end = time.perf_counter() + WARMUP_S
    while time.perf_counter() < end:
        fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < 20 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def run_layer_calls(args: argparse.Namespace) -> Dict[str, Any]:
    """Per-call time of a Conv2d layer object (its primitive and prepacked weights kept
    across calls) against the functional call (validation, choice of implementations and
    weight packing on every call), on small and batch-1 layers."""
    dtype: Any = args.dtype or "float32"
    print(f"median µs per call, {dtype}; layer: Conv2d.forward (+ .backward); "
          f"functional: conv2d (+ conv2d_backward); ratio > 1: the layer is faster")
    head = (f"{'layer':<38} {'fwd layer':>10} {'fwd func':>10} {'ratio':>6} "
            f"{'f+b layer':>10} {'f+b func':>10} {'ratio':>6}")
    print(head)
    print("-" * len(head))
    rng = np.random.default_rng(0)
    rows = []
    for name, kw, xs in LAYER_CALL_CASES:
        layer = convcore.Conv2d(dtype=dtype, rng=0, **kw)
        x = rng.standard_normal(xs).astype(dtype)
        conv_kw: Dict[str, Any] = dict(stride=layer.stride, padding=layer.padding,
                                       layout=layer.layout)
        dy = np.ones_like(layer.forward(x))

        def layer_fb() -> None:
            layer.forward(x)
            layer.backward(dy)

        def func_fb() -> None:
            convcore.conv2d(x, layer.weight, layer.bias, **conv_kw)
            convcore.conv2d_backward(dy, x, layer.weight, **conv_kw)

        t = {"fwd_layer": _median_call_s(lambda: layer.forward(x)),
             "fwd_func": _median_call_s(
                 lambda: convcore.conv2d(x, layer.weight, layer.bias, **conv_kw)),
             "fb_layer": _median_call_s(layer_fb), "fb_func": _median_call_s(func_fb)}
        rows.append({"layer": name, **t})
        print(f"{name:<38} {t['fwd_layer'] * 1e6:>10.1f} {t['fwd_func'] * 1e6:>10.1f} "
              f"{t['fwd_func'] / t['fwd_layer']:>6.2f} {t['fb_layer'] * 1e6:>10.1f} "
              f"{t['fb_func'] * 1e6:>10.1f} {t['fb_func'] / t['fb_layer']:>6.2f}", flush=True)
    return {"mode": "layer_calls", "rows": rows}


# -- command line -----------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line, checked; adds .settings (the options as given, for the JSON file)
    and the resolved work: .suite (layers) or .gemm_sizes (with --gemm)."""
    ap = argparse.ArgumentParser(
        prog="python -m convcore.bench",
        description="GFLOP/s of convcore against NumPy im2col and PyTorch CPU (same process, "
                    "same thread count), per layer and pass; or of convcore.gemm against "
                    "NumPy with --gemm.")
    ap.add_argument("--threads", type=int, metavar="N",
                    help="threads for convcore, torch and NumPy's BLAS (default: convcore's "
                         "default, OMP_NUM_THREADS or all cores)")
    ap.add_argument("--layers", metavar="NAMES",
                    help="comma-separated layer names or substrings of them (default: all)")
    ap.add_argument("--passes", default=",".join(PASSES), metavar="LIST",
                    help=f"comma-separated subset of {','.join(PASSES)} (default: all)")
    ap.add_argument("--repeat", type=int, default=5, metavar="R",
                    help=f"most timed samples per measurement, after a warm-up; fewer once they "
                         f"add up to {MIN_TIME_S} s; a sample repeats a short call to last "
                         f"{SAMPLE_S} s (default 5)")
    ap.add_argument("--dtype", choices=("float32", "float64"),
                    help="element type (default float32; --gemm: the mixed default list)")
    ap.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW")
    ap.add_argument("--batch", type=int, metavar="N", help="override every layer's batch size")
    ap.add_argument("--algorithm", choices=("exact", "winograd"), default="exact",
                    help="convcore's forward algorithm (default exact); winograd keeps the "
                         "suite's 3×3 stride-1 layers only and adds each forward's error "
                         "against the float64 exact result")
    ap.add_argument("--prepacked", action="store_true",
                    help="time convcore's forward and backward-data with the weights packed "
                         "once per layer (set_weights, as a Conv2d layer does) instead of per "
                         "call")
    ap.add_argument("--csv", "--suite", dest="csv", metavar="PATH",
                    help="layer file (name,N,C,H,W,K,R,S,stride,pad[,groups]) instead of the "
                         "suite, or a suite shipped with convcore by name: 'family' (depthwise "
                         "and grouped layers), 'real' (speech, detection, OCR, small-map and "
                         "batch-1 layers)")
    ap.add_argument("--plot", metavar="FILE.png",
                    help="draw GFLOP/s per layer and pass, the implementations side by side "
                         "(needs matplotlib)")
    ap.add_argument("--no-numpy", dest="numpy", action="store_false",
                    help="skip the NumPy peer")
    ap.add_argument("--no-torch", dest="torch", action="store_false",
                    help="skip the PyTorch peer")
    ap.add_argument("--json", metavar="PATH",
                    help="write all results and machine information to PATH")
    ap.add_argument("--family", choices=("conv", "transposed"), default="conv",
                    help="transposed: conv_transpose2d's target layers against torch instead "
                         "of the conv2d layer suite (--layers filters them by name)")
    ap.add_argument("--gemm", action="store_true",
                    help="GEMM mode: convcore.gemm against NumPy's a @ b")
    ap.add_argument("--layer-calls", action="store_true",
                    help="per-call time of a Conv2d layer object (primitive and prepacked "
                         "weights kept) against the functional call, small and batch-1 layers")
    ap.add_argument("--sizes", metavar="MxNxK,...",
                    help="GEMM shapes (default: " + ", ".join(
                        f"{m}x{n}x{k}" + (f" {dt}" if dt != "float32" else "")
                        for m, n, k, dt in DEFAULT_GEMM_SIZES) + ")")
    args = ap.parse_args(argv)
    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    bad = [p for p in passes if p not in PASSES]
    if bad or not passes:
        ap.error(f"--passes: {','.join(bad) or 'empty'}; choose from {','.join(PASSES)}")
    args.passes = passes
    for name in ("threads", "repeat", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name} must be >= 1, got {value}")
    if args.sizes and not args.gemm:
        ap.error("--sizes applies to --gemm mode only")
    if (args.algorithm != "exact" or args.prepacked) and (args.gemm or args.layer_calls
                                                          or args.family != "conv"):
        ap.error("--algorithm and --prepacked apply to the layer suite only")
    if args.plot and (args.gemm or args.layer_calls):
        ap.error("--plot applies to the layer suite only")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        ap.error(f"--json: the folder of {args.json} does not exist")
    args.settings = dict(vars(args))
    try:
        if args.gemm:
            args.gemm_sizes = gemm_sizes(args.sizes, args.dtype)
        elif args.family == "conv":
            args.suite = select_layers(load_layers(args.csv), args.layers)
            if args.batch:
                args.suite = [replace(layer, n=args.batch) for layer in args.suite]
            if args.algorithm == "winograd":
                args.suite = [layer for layer in args.suite
                              if (layer.r, layer.s, layer.stride) == (3, 3, 1)]
                if not args.suite:
                    raise ValueError("--algorithm winograd: no 3×3 stride-1 layer selected")
    except (OSError, ValueError) as e:
        ap.error(str(e))
    return args


def run(args: argparse.Namespace) -> int:
    """Run the benchmark args describe; print the table, optionally write JSON."""
    if args.threads:
        convcore.set_num_threads(args.threads)
    threads = convcore.get_num_threads()
    torch = import_torch() if (args.torch and not args.gemm and not args.layer_calls) else None
    if torch is not None:
        torch.set_num_threads(threads)
    for line in config_summary(convcore.show_config()):
        print(line)
    peer_note = ""
    if not args.gemm and not args.layer_calls:
        if not args.torch:
            peer_note = "; torch peer off (--no-torch)"
        elif torch is None:
            peer_note = "; PyTorch not installed: torch peer skipped"
        else:
            torch_threads = plural(torch.get_num_threads(), "thread")
            peer_note = f", torch {torch.__version__} ({torch_threads})"
    print(f"threads: convcore {threads}, {blas_threads_note(threads)}; numpy {np.__version__}"
          f"{peer_note}; CPU {cpu_model()}")
    if args.layer_calls:
        result = run_layer_calls(args)
    else:
        result = (run_gemm(args) if args.gemm else
                  run_transposed(args, torch) if args.family == "transposed" else
                  run_layers(args, torch))
    if args.json:
        doc = {"machine": machine_info(torch, threads), "settings": args.settings, **result}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        print(f"results written to {args.json}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for callers in Python: runs in this process, with NumPy's BLAS threads as
    the environment already set them (python -m convcore.bench also pins those)."""
    return run(parse_args(argv))


if __name__ == "__main__":
    _args = parse_args()
    pin_blas_threads(_args.threads or convcore.get_num_threads(), "convcore.bench")
    sys.exit(run(_args))
