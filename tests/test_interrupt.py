"""Ctrl-C: a long call stops soon after SIGINT with KeyboardInterrupt, frees its memory and
leaves the library usable (README, "Threads"). Each scenario runs in a fresh interpreter
under a timeout, so a call that ignores the signal fails the test instead of hanging it.

The library stops within a few tens of milliseconds (it polls every 20 ms and every thread
checks at block boundaries of a few MFLOP); the tests allow 1 s so they stay robust on a
loaded machine, and print the latencies they saw.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix",
                                reason="needs POSIX signals")

TIMEOUT_S = 180
MAX_LATENCY_S = 1.0

PRELUDE = textwrap.dedent("""
    import gc, json, os, signal, sys, threading, time
    import numpy as np
    import convcore

    # Python leaves SIGINT ignored when it starts ignored (a job started with `&` from a
    # non-interactive shell): install the KeyboardInterrupt handler explicitly.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def interrupt_after(fn, delay):
        \"\"\"Runs fn, sends SIGINT to this process after `delay` s; returns the seconds from
        the signal to KeyboardInterrupt, or None when fn finished first.\"\"\"
        sent = []
        def fire():
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)
        timer = threading.Timer(delay, fire)
        timer.start()
        try:
            fn()
        except KeyboardInterrupt:
            return time.perf_counter() - sent[0]
        finally:
            timer.cancel()
            timer.join()
        return None

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def small_check():
        rng = np.random.default_rng(1)
        x = rng.standard_normal((2, 3, 9, 9))
        w = rng.standard_normal((4, 3, 3, 3))
        y = convcore.conv2d(x, w, padding=1)
        # direct definition, float64
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        ref = np.zeros_like(y)
        for r in range(3):
            for s in range(3):
                ref += np.einsum("nchw,kc->nkhw", xp[:, :, r:r + 9, s:s + 9], w[:, :, r, s])
        assert np.allclose(y, ref, rtol=1e-12, atol=1e-12), "wrong result after an interrupt"
""")


def run_scenario(body: str, tmp_path) -> dict:
    code = PRELUDE + textwrap.dedent(body)
    script = tmp_path / "scenario.py"
    script.write_text(code)
    try:
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=TIMEOUT_S, cwd=str(tmp_path))
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"scenario did not finish in {TIMEOUT_S} s (a call ignored SIGINT?)\n"
                    f"{e.stdout}\n{e.stderr}")
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


# Long calls (seconds even on two fast AVX-512 cores, so a call that ignores SIGINT ends
# well after the allowed latency): every pass, both layouts (different executors), and
# the GEMM.
PASSES = textwrap.dedent("""
    def make(layout):
        n, c, hw, k = 64, 256, 32, 256  # 215 GFLOP per pass, 64 MiB per image tensor
        xs = (n, c, hw, hw) if layout == "NCHW" else (n, hw, hw, c)
        ws = (k, c, 5, 5) if layout == "NCHW" else (k, 5, 5, c)
        x = np.ones(xs, np.float32)
        w = np.ones(ws, np.float32)
        kw = dict(padding=2, layout=layout)
        dy = np.ones(convcore.conv2d_output_shape(xs, ws, **kw), np.float32)
        return {
            f"forward {layout}": lambda: convcore.conv2d(x, w, **kw),
            f"backward_input {layout}": lambda: convcore.conv2d_backward_input(dy, w, xs, **kw),
            f"backward_weight {layout}": lambda: convcore.conv2d_backward_weight(dy, x, ws, **kw),
        }
    calls = {**make("NCHW"), **make("NHWC")}
    a = np.ones((6000, 6000), np.float32)
    calls["gemm"] = lambda: convcore.gemm(a, a)
""")


@pytest.mark.parametrize("threads", [1, 2])
def test_ctrl_c_stops_every_pass_quickly(threads, tmp_path):
    res = run_scenario(PASSES + textwrap.dedent(f"""
        convcore.set_num_threads({threads})
        out = {{}}
        for name, fn in calls.items():
            lat = [interrupt_after(fn, 0.3)]
            out[name] = lat
            small_check()
        print(json.dumps(out))
    """), tmp_path)
    print(f"threads={threads} SIGINT → KeyboardInterrupt (s):", res)
    for name, lats in res.items():
        for lat in lats:
            assert lat is not None, f"{name}: finished before SIGINT (make the call longer)"
            assert lat < MAX_LATENCY_S, f"{name}: took {lat:.3f} s to stop after SIGINT"


def test_interrupted_calls_free_their_memory(tmp_path):
    """Ten interrupted calls leave the process no bigger than one (the output arrays and
    any temporaries are freed; per-thread packing buffers are reused)."""
    res = run_scenario(PASSES + textwrap.dedent("""
        fn = calls["forward NCHW"]
        for _ in range(2):
            interrupt_after(fn, 0.2)
        gc.collect()
        base = rss_mib()
        lat = [interrupt_after(fn, 0.2) for _ in range(10)]
        gc.collect()
        small_check()
        print(json.dumps({"growth_mib": rss_mib() - base, "lat": lat}))
    """), tmp_path)
    assert all(lat is not None for lat in res["lat"])
    # one forward output is 64 MiB: a leak per call would show as ~640 MiB
    assert res["growth_mib"] < 64, res


def test_signal_handler_that_does_not_raise_lets_the_call_finish(tmp_path):
    """Handlers run during the call (here: one that only counts); when none raises, the
    call runs to the end with the right result."""
    res = run_scenario(textwrap.dedent("""
        rng = np.random.default_rng(0)
        x = rng.standard_normal((16, 64, 48, 48)).astype(np.float32)
        w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
        expected = convcore.conv2d(x, w, padding=1)
        seen = []
        signal.signal(signal.SIGINT, lambda *a: seen.append(1))
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        y = convcore.conv2d(x, w, padding=1)
        timer.join()
        time.sleep(0.05)
        print(json.dumps({"equal": bool(np.array_equal(y, expected)), "seen": len(seen)}))
    """), tmp_path)
    assert res == {"equal": True, "seen": 1}


def test_calls_on_other_threads_are_not_interrupted(tmp_path):
    """Python runs signal handlers on the main thread only: while the main thread's call
    is interrupted, a call on another thread runs to the end with the right result."""
    res = run_scenario(PASSES + textwrap.dedent("""
        rng = np.random.default_rng(0)
        x = rng.standard_normal((16, 64, 48, 48)).astype(np.float32)
        w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
        expected = convcore.conv2d(x, w, padding=1)
        box = {}
        def background():
            box["y"] = [convcore.conv2d(x, w, padding=1) for _ in range(3)]
        t = threading.Thread(target=background)
        t.start()
        lat = interrupt_after(calls["forward NCHW"], 0.2)
        t.join()
        small_check()
        print(json.dumps({"main_interrupted": lat is not None,
                          "equal": all(np.array_equal(y, expected) for y in box["y"])}))
    """), tmp_path)
    assert res == {"main_interrupted": True, "equal": True}
