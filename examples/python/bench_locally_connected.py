"""Times locally_connected2d against conv2d with the same FLOPs (the target: forward within 2×,
backward within 3× of conv2d):
(32, 16, 28, 28), K=16, 3x3, padding 1. Every round runs each variant once; medians over
rounds. Usage: T=2 python examples/python/bench_locally_connected.py [float32|float64]
"""

import time, sys, numpy as np, convcore
import os; convcore.set_num_threads(int(os.environ.get("T", "2")))
rng = np.random.default_rng(0)
N, C, H, W, K = 32, 16, 28, 28, 16
dt = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
x = rng.standard_normal((N, C, H, W)).astype(dt)
wc = rng.standard_normal((K, C, 3, 3)).astype(dt)
conv = convcore.Conv2d(C, K, 3, padding=1, dtype=dt, rng=0)
layer = convcore.LocallyConnected2d(C, K, 3, (H, W), padding=1, dtype=dt, rng=0)
dy = rng.standard_normal((N, K, H, W)).astype(dt)
wl = layer.weight
conv.forward(x); layer.forward(x)
fns = {
 "conv2d fwd": lambda: convcore.conv2d(x, wc, padding=1),
 "lc fwd": lambda: convcore.locally_connected2d(x, wl, padding=1),
 "Conv2d layer fwd": lambda: conv.forward(x),
 "LC layer fwd": lambda: layer.forward(x),
 "conv2d bwd": lambda: convcore.conv2d_backward(dy, x, wc, padding=1),
 "lc bwd": lambda: convcore.locally_connected2d_backward(dy, x, wl, padding=1),
 "Conv2d layer bwd": lambda: conv.backward(dy),
 "LC layer bwd": lambda: layer.backward(dy),
}
for f in fns.values(): f(); f()
ts = {k: [] for k in fns}
for _ in range(40):
    for k, f in fns.items():
        t = time.perf_counter(); f(); ts[k].append(time.perf_counter() - t)
m = {k: np.median(v) * 1e3 for k, v in ts.items()}
print(f"dtype {dt}, threads {convcore.get_num_threads()}, flops/pass {2*N*K*H*W*C*9/1e6:.1f} MFLOP")
for k, v in m.items(): print(f"  {k:18s} {v:8.3f} ms")
print(f"forward  ratio: functional {m['lc fwd']/m['conv2d fwd']:.2f}, layer {m['LC layer fwd']/m['Conv2d layer fwd']:.2f}")
print(f"backward ratio: functional {m['lc bwd']/m['conv2d bwd']:.2f}, layer {m['LC layer bwd']/m['Conv2d layer bwd']:.2f}")
