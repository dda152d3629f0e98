"""python -m convcore: the build's configuration, the worked examples of the conv layer
computed by the library, and a quick forward benchmark against a NumPy im2col peer.

python -m convcore summary INPUT LAYER...: a ConvNet's sizes layer by layer (see
`python -m convcore summary --help`).

The full benchmark (every layer of the suite, all three passes, PyTorch as a second peer)
is `python -m convcore.bench`.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

import convcore
from convcore import Conv2d, ShapeError, conv2d, conv2d_num_params, conv2d_output_shape
from convcore.bench import (Layer, blas_threads_note, config_summary, convcore_impl,
                            geomean, load_layers, make_operands, measure, numpy_impl,
                            pin_blas_threads)

# (layer of the suite, batch size to use here or None to keep the suite's)
QUICK_LAYERS = [("resnet_3x3_c64", 4), ("resnet_1x1_c256_k64", 4), ("seed_numpy_example", None),
                ("googlenet_5x5", 4)]
QUICK_REPEAT = 5


def hwk(shape: Sequence[int]) -> str:
    """An NCHW shape written as the CS231n notes write volumes: height×width×depth."""
    return f"{shape[-2]}×{shape[-1]}×{shape[-3]}"


def first_clause(err: Exception) -> str:
    """The arithmetic part of a ShapeError message (it goes on to suggest fixes)."""
    return str(err).split(" (shape_rule=")[0]


def section(title: str) -> None:
    print(f"\n{title}")


def alexnet_conv1(rng: np.random.Generator) -> None:
    """AlexNet conv1 on a random 227×227×3 image: the output volume, the parameter count
    with and without sharing, one neuron recomputed by hand, and the 224-pixel input."""
    c, k, f, s = 3, 96, 11, 4
    section(f"1. AlexNet conv1: input 227×227×{c}, K={k} filters of {f}×{f}×{c}, stride {s}, "
            "no padding")
    layer = Conv2d(c, k, f, stride=s, rng=rng)
    x = rng.standard_normal((1, c, 227, 227), dtype=np.float32)
    y = layer.forward(x)
    print(f"   conv2d on a random {x.shape} NCHW image -> {y.shape}: output volume {hwk(y.shape)}")
    weights = k * f * f * c
    print(f"   parameters: {k}·{f}·{f}·{c} = {weights:,} weights + {k} biases = "
          f"{weights + k:,}  (conv2d_num_params {conv2d_num_params(c, k, f):,}, "
          f"Conv2d.num_params {layer.num_params:,})")
    ho, wo = y.shape[2:]
    print(f"   without parameter sharing: {ho}·{wo}·{k} neurons × ({f * f * c} + 1) = "
          f"{ho * wo * k * (f * f * c + 1):,}")
    d, i, j = 7, 10, 20
    patch = x[0, :, i * s:i * s + f, j * s:j * s + f].astype(np.float64)
    assert layer.bias is not None
    by_hand = np.sum(patch * layer.weight[d]) + layer.bias[d]
    close = np.isclose(y[0, d, i, j], by_hand, rtol=1e-4, atol=1e-5)  # float32 rounding
    print(f"   one neuron: y[0,{d},{i},{j}] = {y[0, d, i, j]:.6f}; "
          f"sum(x[0,:,{i * s}:{i * s + f},{j * s}:{j * s + f}] * W[{d}]) + b[{d}] = "
          f"{by_hand:.6f}; isclose: {close}")
    x224 = rng.standard_normal((1, c, 224, 224), dtype=np.float32)
    print("   a 224×224 input instead:")
    try:
        conv2d(x224, layer.weight, layer.bias, stride=s)
        print("     shape_rule='strict' -> no error (a ShapeError was expected)")
    except ShapeError as e:
        print(f"     shape_rule='strict' -> ShapeError: {e}")
    shapes: List[Tuple[str, Dict[str, Any]]] = [("shape_rule='crop'", dict(shape_rule="crop")),
              ("shape_rule='pad'", dict(shape_rule="pad")),
              ("padding=(0, 3, 0, 3)", dict(padding=(0, 3, 0, 3)))]
    outs = [(label, conv2d(x224, layer.weight, layer.bias, stride=s, **kw)) for label, kw in shapes]
    print("     " + ";  ".join(f"{label} -> {hwk(out.shape)}" for label, out in outs))


def numpy_example(rng: np.random.Generator) -> None:
    """The CS231n notes' NumPy example: X of shape (11,11,4), F=5, S=2, P=0, channels last."""
    k, f, s = 2, 5, 2
    section(f"2. The CS231n notes' NumPy example (NHWC, one image): X (11, 11, 4), K={k} filters "
            f"W ({k}, {f}, {f}, 4), stride {s}, no padding")
    x = rng.standard_normal((11, 11, 4))
    w = rng.standard_normal((k, f, f, 4))
    b = rng.standard_normal(k)
    v = conv2d(x, w, b, stride=s, layout="NHWC")
    print(f"   V = conv2d(X, W, b, stride={s}, layout='NHWC') -> V.shape {v.shape}")
    for i in range(2):
        by_hand = np.sum(x[i * s:i * s + f, :f, :] * w[0]) + b[0]
        print(f"   V[{i},0,0] = {v[i, 0, 0]:+10.6f}   np.sum(X[{i * s}:{i * s + f},:{f},:]*W[0])"
              f"+b[0] = {by_hand:+10.6f}   isclose: {np.isclose(v[i, 0, 0], by_hand)}")
    every = all(np.isclose(v[i, j, d],
                           np.sum(x[i * s:i * s + f, j * s:j * s + f, :] * w[d]) + b[d])
                for i in range(v.shape[0]) for j in range(v.shape[1]) for d in range(k))
    print(f"   all {v.size} entries V[i,j,d] == sum(X[{s}i:{s}i+{f}, {s}j:{s}j+{f}, :]*W[d]) "
          f"+ b[d]: {every}")


def output_sizes(rng: np.random.Generator) -> None:
    """Output size (W − F + 2P)/S + 1 on the notes' small examples, and P = (F−1)/2."""
    section("3. Output size (W − F + 2P)/S + 1")

    def size(w: int, f: int, s: int, p: int) -> str:
        try:
            shape = conv2d_output_shape((1, 1, w, w), (1, 1, f, f), stride=s, padding=p)
            return f"{shape[2]}×{shape[3]}"
        except ShapeError as e:
            return f"ShapeError ({first_clause(e)})"

    print(f"   7×7 input, F=3, P=0: S=1 -> {size(7, 3, 1, 0)}, S=2 -> {size(7, 3, 2, 0)}")
    print(f"   5×5 input, F=3, P=1: S=1 -> {size(5, 3, 1, 1)}, S=2 -> {size(5, 3, 2, 1)}")
    print(f"                        S=3 -> {size(5, 3, 3, 1)}")
    print(f"   10×10 input, F=3, P=0, S=2 -> {size(10, 3, 2, 0)}")
    x = rng.standard_normal((1, 2, 32, 32), dtype=np.float32)
    kept = []
    for f in (3, 5, 7):
        w = rng.standard_normal((4, 2, f, f), dtype=np.float32)
        y = conv2d(x, w, padding=(f - 1) // 2)
        kept.append(f"F={f}, P={(f - 1) // 2}: {x.shape[2]}×{x.shape[3]} -> "
                    f"{y.shape[2]}×{y.shape[3]}")
    print("   P = (F−1)/2 with S=1 keeps the size: " + ";  ".join(kept))


def quick_layers() -> List[Layer]:
    """QUICK_LAYERS from the suite, with their batch sizes for this quick run."""
    suite = {layer.name: layer for layer in load_layers()}
    return [replace(suite[name], n=batch or suite[name].n) for name, batch in QUICK_LAYERS]


def describe(layer: Layer) -> str:
    pad = f" p{layer.pad}" if layer.pad else ""
    return (f"{layer.n}×{layer.c}×{layer.h}×{layer.w} -> {layer.k}, {layer.r}×{layer.s}"
            f"/{layer.stride}{pad}")


def quick_benchmark(threads: int) -> None:
    """Forward GFLOP/s of convcore and of the NumPy im2col peer on a few layers of the suite,
    the peer's result checked against convcore's first."""
    section(f"4. Quick benchmark: forward pass, float32 NCHW; threads: convcore {threads}, "
            f"{blas_threads_note(threads)}")
    print("   NumPy peer: zero-pad, one as_strided im2col view, one copy, one matmul, + bias. "
          "Median of samples after a warm-up.")
    head = (f"   {'layer':<20} {'N×C×H×W -> K, R×S/stride':<29} {'GFLOP':>7} {'convcore':>9} "
            f"{'numpy':>8} {'cc/np':>6}  peer agrees (max rel err)")
    print(head)
    print("   " + "-" * (len(head) - 3))
    rng = np.random.default_rng(1)
    ratios = []
    for layer in quick_layers():
        ops = make_operands(layer, "NCHW", np.dtype(np.float32), rng)
        impls = [convcore_impl(layer, "NCHW", ops), numpy_impl(layer, "NCHW", ops)]
        res = measure(impls, "fwd", layer.gflop, QUICK_REPEAT, f"{layer.name} fwd")
        cc, peer = res["convcore"], res["numpy"]
        ratios.append(cc["gflops"] / peer["gflops"])
        print(f"   {layer.name:<20} {describe(layer):<29} {layer.gflop:>7.3g} {cc['gflops']:>9.1f} "
              f"{peer['gflops']:>8.1f} {ratios[-1]:>6.2f}  {peer['agrees']} "
              f"({peer['max_rel_error']:.1e})", flush=True)
    print(f"   geometric mean convcore/numpy: {geomean(ratios):.2f}x   (GFLOP/s; full suite, "
          "backward passes and PyTorch: python -m convcore.bench)")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m convcore",
        description="Shows this build's configuration (ISA, threads, blocking), computes the "
                    "worked examples of the CS231n notes' convolutional layer with the library "
                    "(AlexNet conv1, the (11,11,4) NumPy example, output sizes) and runs a "
                    "quick forward benchmark against a NumPy im2col peer (about 5 s).",
        epilog="Subcommand: 'python -m convcore summary INPUT LAYER...' prints a ConvNet's "
               "sizes layer by layer (see 'python -m convcore summary --help'). The full "
               "benchmark is 'python -m convcore.bench' (see its --help).")
    ap.add_argument("--no-bench", dest="bench", action="store_false",
                    help="skip the quick benchmark")
    return ap.parse_args(argv)


def main(argv: Sequence[str] = ()) -> int:
    args = parse_args(argv)
    for line in config_summary(convcore.show_config()):
        print(line)
    rng = np.random.default_rng(0)
    alexnet_conv1(rng)
    numpy_example(rng)
    output_sizes(rng)
    if args.bench:
        quick_benchmark(convcore.get_num_threads())
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["summary"]:
        from convcore._summary import main as summary_main
        sys.exit(summary_main(sys.argv[2:]))
    _args = sys.argv[1:]
    parse_args(_args)  # --help and bad options exit here, before the BLAS re-exec
    pin_blas_threads(convcore.get_num_threads(), "convcore")
    sys.exit(main(_args))
