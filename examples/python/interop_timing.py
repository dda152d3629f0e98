"""Timings for convcore.torch and convcore.dask (the figures quoted in the README).

    python examples/python/interop_timing.py torch [--reps 30] [--threads 2]
    python examples/python/interop_timing.py dask  [--reps 5]  [--batch 64]

torch: one training step (zero_grad, forward, cross-entropy, backward) of a small CNN —
conv 3→16 3×3, ReLU, conv 16→32 3×3 stride 2, ReLU, conv-transpose 32→16 4×4 stride 2,
ReLU, linear — with torch's own convolutions and after convcore.torch.convert, float32,
batch 32, 32×32 images, NCHW and channels-last, both libraries on --threads threads; the
two models alternate step by step so drifting machine load hits both. Prints median and
interquartile range per step and the ratio of medians. Also the fixed cost per call of
the autograd wrapper: convcore.torch.conv2d against convcore.conv2d on the same arrays
for a tiny convolution.

dask: conv2d over a batch (--batch images of 64×56×56, 64 filters 3×3, float32): one
convcore call on 2 threads against convcore.dask.conv2d on a LocalCluster of 2 worker
processes × 1 thread (chunks of 8 images), (a) from an in-memory NumPy array back to one
(data shipped to the workers and back), (b) on data born on the workers, kept there
(persist). Cluster start-up is not timed.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any, Callable, Dict, List


def _stats(ts: List[float]) -> str:
    q = statistics.quantiles(ts, n=4)
    return f"median {statistics.median(ts) * 1e3:8.2f} ms  (IQR {q[0] * 1e3:.2f}–{q[2] * 1e3:.2f})"


def _alternate(fns: Dict[str, Callable[[], Any]], reps: int, warmup: int = 3) -> Dict[str, List[float]]:
    for f in fns.values():
        for _ in range(warmup):
            f()
    out: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            out[k].append(time.perf_counter() - t0)
    return out


def run_torch(reps: int, threads: int) -> None:
    import copy

    import torch
    import torch.nn.functional as F

    import convcore
    import convcore.torch as cct

    torch.set_num_threads(threads)
    convcore.set_num_threads(threads)

    class Net(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.up = torch.nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
            self.fc = torch.nn.Linear(16 * 32 * 32, 10)

        def forward(self, x: Any) -> Any:
            x = F.relu(self.c1(x))
            x = F.relu(self.c2(x))
            x = F.relu(self.up(x))
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {threads} threads; {convcore.show_config()['isa']}")
    for fmt in ("NCHW", "channels_last"):
        ref = Net()
        conv = cct.convert(copy.deepcopy(ref))
        x = torch.randn(32, 3, 32, 32)
        if fmt == "channels_last":
            ref = ref.to(memory_format=torch.channels_last)
            conv = conv.to(memory_format=torch.channels_last)
            x = x.to(memory_format=torch.channels_last)
        t = torch.randint(0, 10, (32,))

        def step(m: Any) -> Callable[[], None]:
            def f() -> None:
                m.zero_grad()
                F.cross_entropy(m(x), t).backward()
            return f

        res = _alternate({"torch": step(ref), "convcore.torch": step(conv)}, reps)
        print(f"training step, batch 32, {fmt}:")
        for k, v in res.items():
            print(f"  {k:15s} {_stats(v)}")
        ratio = statistics.median(res["convcore.torch"]) / statistics.median(res["torch"])
        print(f"  convcore.torch / torch = {ratio:.2f}")

    xs = torch.randn(1, 4, 8, 8)
    ws = torch.randn(4, 4, 3, 3)
    xn, wn = xs.numpy(), ws.numpy()
    res = _alternate({"convcore.conv2d": lambda: convcore.conv2d(xn, wn, padding=1),
                      "convcore.torch.conv2d": lambda: cct.conv2d(xs, ws, padding=1),
                      "torch conv2d": lambda: F.conv2d(xs, ws, padding=1)}, reps * 20)
    print("one tiny call (1×4×8×8, 4 filters 3×3), no grad:")
    for k, v in res.items():
        print(f"  {k:22s} median {statistics.median(v) * 1e6:7.1f} µs")
    xg = xs.clone().requires_grad_()
    wg = ws.clone().requires_grad_()

    def fb(f: Callable[..., Any]) -> Callable[[], None]:
        return lambda: f(xg, wg, padding=1).sum().backward()

    res = _alternate({"convcore.torch": fb(cct.conv2d), "torch": fb(F.conv2d)}, reps * 20)
    print("same, forward + backward through autograd:")
    for k, v in res.items():
        print(f"  {k:22s} median {statistics.median(v) * 1e6:7.1f} µs")


def run_dask(reps: int, batch: int) -> None:
    import dask.array as da
    import numpy as np
    from distributed import Client, LocalCluster, wait

    import convcore
    import convcore.dask as ccd

    convcore.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 64, 56, 56), dtype=np.float32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
    print(f"conv2d of {x.shape} float32 ({x.nbytes / 2**20:.0f} MiB), 64 filters 3×3, pad 1")
    single = []
    for _ in range(reps):
        t0 = time.perf_counter()
        y_ref = convcore.conv2d(x, w, padding=1)
        single.append(time.perf_counter() - t0)
    print(f"  single convcore call, 2 threads:        {_stats(single)}")
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster):
        warnings.filterwarnings("ignore", "Sending large graph")   # that is the point here
        xd = da.from_array(x, chunks=(8, -1, -1, -1))
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            y = ccd.conv2d(xd, w, padding=1).compute()
            ts.append(time.perf_counter() - t0)
        assert np.array_equal(y, y_ref)
        print(f"  dask, NumPy in -> NumPy out (2 × 1):    {_stats(ts)}")
        born = da.random.default_rng(0).standard_normal((batch, 64, 56, 56), chunks=(8, -1, -1, -1),
                                                          dtype=np.float32).persist()
        wait(born)
        ts = []
        for i in range(reps):
            wi = w * np.float32(1 + 1e-6 * (i + 1))   # new graph keys: nothing is reused
            t0 = time.perf_counter()
            y2 = ccd.conv2d(born, wi, padding=1).persist()
            wait(y2)
            ts.append(time.perf_counter() - t0)
            del y2
        print(f"  dask, data on the workers (persist):    {_stats(ts)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["torch", "dask"])
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    if a.what == "torch":
        run_torch(a.reps or 30, a.threads)
    else:
        run_dask(a.reps or 5, a.batch)


if __name__ == "__main__":
    main()
