"""Property fuzzing of the whole public API, every case judged in a child process.

Not part of the default `python -m pytest` run (pyproject's addopts deselect the `fuzz`
marker); CI runs it as its own stage:

    python -m pytest tests/fuzz -m fuzz -p no:randomly -s

Two tests: a fixed seed (the same cases every run) and a seed that changes every run. Both
print their seed and case count. Replay a run exactly:

    CONVCORE_FUZZ_SEED=<seed> CONVCORE_FUZZ_CASES=<n> python -m pytest tests/fuzz -m fuzz -k changing -s

and one failing case (its JSON is printed with the failure):

    python tests/fuzz/worker.py --case '<json>'

Environment: CONVCORE_FUZZ_CASES (cases per test, default 2500), CONVCORE_FUZZ_SEED (the
changing test's seed), CONVCORE_FUZZ_TIMEOUT (seconds per case before it counts as a hang,
default 20; cases past a quarter of it are printed, the slowest five), CONVCORE_FUZZ_MEMORY_GB
(the worker's address-space limit, default 4).

Hypothesis only generates here (no shrinking, no example database): each case goes to a
long-lived worker process (worker.py) over a pipe; a case that kills or hangs the worker is a
failure with its repro, and the worker is restarted. Failures are grouped by class; each
class is reported once with its count and its smallest case.
"""
from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import Phase, given, seed as hseed, settings
from hypothesis import strategies as st

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cases import any_case  # noqa: E402

pytestmark = pytest.mark.fuzz

CASES = int(os.environ.get("CONVCORE_FUZZ_CASES", "2500"))
TIMEOUT = float(os.environ.get("CONVCORE_FUZZ_TIMEOUT", "20"))
SLOW = TIMEOUT / 4   # cases slower than this are printed (up to 5), to be made faster
FIXED_SEED = 20240607


class Worker:
    """A worker.py process fed one case per line."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.isas: List[str] = []
        self.restarts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        hello = self._read(120)
        if hello is None:
            raise RuntimeError(f"fuzz worker did not start: {self._stderr()}")
        self.isas = json.loads(hello)["isas"]

    def _read(self, timeout: float) -> Optional[str]:
        assert self.proc is not None and self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return None
        line = self.proc.stdout.readline()
        return line or None

    def _stderr(self) -> str:
        assert self.proc is not None
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            err = ""
        return (err or "")[-2000:]

    def run(self, case: Dict[str, Any]) -> Dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        t0 = time.monotonic()
        try:
            self.proc.stdin.write(json.dumps(case) + "\n")
            self.proc.stdin.flush()
            line = self._read(TIMEOUT)
        except (BrokenPipeError, OSError):
            line = None
        if line is not None:
            return json.loads(line)
        hung = self.proc.poll() is None
        err = self._stderr()
        rc = self.proc.returncode
        self.proc = None
        self.restarts += 1
        if hung:
            kind = f"hang: no answer in {TIMEOUT:.0f} s"
        elif rc is not None and rc < 0:
            kind = f"crash: {signal.Signals(-rc).name}"
        else:
            kind = f"crash: exit {rc}"
        return {"ok": False, "class": f"{case['fn']}: {kind}", "detail": err,
                "verified": False, "seconds": round(time.monotonic() - t0, 3)}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if f is not None and not f.closed:
                    f.close()


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    w.start()
    yield w
    w.close()


def _fuzz(worker: Worker, seed: int, n: int) -> None:
    print(f"\nfuzz: seed={seed} cases={n} isas={worker.isas} (replay: CONVCORE_FUZZ_SEED={seed} "
          f"CONVCORE_FUZZ_CASES={n} python -m pytest tests/fuzz -m fuzz -k changing -s)")
    failures: Dict[str, Dict[str, Any]] = {}
    stats = {"cases": 0, "verified": 0, "raised_or_unverified": 0, "seconds": 0.0}
    by_fn: Dict[str, int] = {}
    slow: List[Tuple[float, str]] = []   # cases past SLOW seconds: the next timeouts

    @hseed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(__import__("hypothesis").HealthCheck))
    @given(case=any_case(worker.isas))
    def run(case):
        v = worker.run(case)
        stats["cases"] += 1
        stats["seconds"] += v["seconds"]
        by_fn[case["fn"]] = by_fn.get(case["fn"], 0) + 1
        if v["verified"]:
            stats["verified"] += 1
        if v["seconds"] > SLOW:
            slow.append((v["seconds"], json.dumps(case)))
        if not v["ok"]:
            entry = failures.setdefault(v["class"], {"count": 0, "case": None, "detail": ""})
            entry["count"] += 1
            text = json.dumps(case)
            if entry["case"] is None or len(text) < len(entry["case"]):
                entry["case"], entry["detail"] = text, v["detail"]

    t0 = time.monotonic()
    run()
    wall = time.monotonic() - t0
    print(f"fuzz: {stats['cases']} cases in {wall:.1f} s, {stats['verified']} compared with "
          f"the reference, {worker.restarts} worker restarts; per function: {by_fn}")
    for sec, text in sorted(slow, reverse=True)[:5]:
        print(f"fuzz: slow case ({sec:.1f} s of the {TIMEOUT:.0f} s limit): "
              f"python tests/fuzz/worker.py --case '{text}'")
    if failures:
        lines = [f"{len(failures)} failure classes (seed {seed}):"]
        for cls, e in sorted(failures.items(), key=lambda kv: -kv[1]["count"]):
            lines.append(f"\n* {cls}  [{e['count']} cases]\n  detail: {e['detail'][-600:]}\n"
                         f"  repro:  python tests/fuzz/worker.py --case '{e['case']}'")
        report = "\n".join(lines)
        print(report)
        pytest.fail(report, pytrace=False)


def test_fuzz_fixed_seed(worker):
    _fuzz(worker, FIXED_SEED, CASES)


def test_fuzz_changing_seed(worker):
    env = os.environ.get("CONVCORE_FUZZ_SEED")
    s = int(env) if env else random.SystemRandom().randrange(2**32)
    _fuzz(worker, s, CASES)
