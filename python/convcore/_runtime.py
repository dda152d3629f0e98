"""GEMM, threads and configuration."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
from numpy.typing import NDArray

from . import _core
from ._args import check_array, check_same_dtype, is_int, output_array
from ._types import FloatT


def gemm(a: NDArray[FloatT], b: NDArray[FloatT],
         out: Optional[NDArray[FloatT]] = None) -> NDArray[FloatT]:
    """a @ b for 2-D float32/float64 arrays with convcore's own blocked GEMM.

    Transposed and strided views are read in place (no copy); `out` must be a writable
    C-contiguous array of the result's shape and dtype.
    """
    a = check_array(a, "a")
    b = check_array(b, "b")
    check_same_dtype(a, "a", b, "b")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"gemm takes 2-D arrays, got a {a.ndim}-D and b {b.ndim}-D")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm: a is {a.shape} and b is {b.shape}: a.shape[1] must equal "
                         "b.shape[0]")
    out = output_array(out, (a.shape[0], b.shape[1]), a.dtype, (a, b))
    itemsize = a.dtype.itemsize

    def readable(m: np.ndarray) -> np.ndarray:
        # Views whose strides are whole elements are used in place; others are copied once.
        if m.flags.aligned and all(s % itemsize == 0 for s in m.strides):
            return m
        return np.require(m, requirements=("C_CONTIGUOUS", "ALIGNED"))

    _core.gemm(readable(a), readable(b), out)
    return out


def set_num_threads(n: int) -> None:
    """Threads convcore uses for each call (default: OMP_NUM_THREADS or all cores).

    n must be an int >= 1 (bool is refused: TypeError; n < 1: ValueError). A larger n than
    ``max_num_threads()`` — 4 threads per CPU this process may run on, at least 64 — is
    clamped to it: more threads only oversubscribe the cores. Calls use fewer threads when
    they are small or when several Python threads call at once.

    In a process made by ``fork()`` (``os.fork``, multiprocessing's "fork" start method)
    after its parent ran a call on several threads, every call runs on one thread and
    this setting has no effect: the OpenMP runtime's threads do not survive fork, and a
    parallel region in the child would wait for them forever. "spawn" and "forkserver"
    children start fresh and use threads as usual.
    """
    if not is_int(n):
        raise TypeError(f"n must be an int, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _core.set_num_threads(min(int(n), _core.max_num_threads()))


def get_num_threads() -> int:
    """Threads a large call uses (1 in a forked child; see set_num_threads)."""
    return int(_core.get_num_threads())


def max_num_threads() -> int:
    """The largest thread count set_num_threads keeps (larger values are clamped to it):
    4 per CPU this process may run on, at least 64."""
    return int(_core.max_num_threads())


def show_config() -> Dict[str, Any]:
    """Version, the ISA in use (and those available), threads, OpenMP, and the GEMM
    blocking (microkernel, MR/NR/KC/MC/NC) per dtype."""
    return dict(_core.config())
