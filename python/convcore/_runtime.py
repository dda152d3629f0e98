"""GEMM, threads and configuration."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
from numpy.typing import NDArray

from . import _core
from ._args import as_buffer, check_array, check_same_dtype, is_int, output_array
from ._types import FloatT


def gemm(a: NDArray[FloatT], b: NDArray[FloatT],
         out: Optional[NDArray[FloatT]] = None) -> NDArray[FloatT]:
    """Matrix product ``a @ b`` of 2-D arrays with convcore's own blocked GEMM.

    The GEMM every convolution runs on (BLIS-style loops, a microkernel per ISA, threads over
    tiles of the result), exposed for its own sake. Transposed and strided views are read
    in place, without a copy.

    Parameters
    ----------
    a : array, shape (M, K)
        float32 or float64 (a numpy.ndarray or any CPU array with DLPack or the buffer
        protocol).
    b : array, shape (K, N)
        Of a's dtype.
    out : numpy.ndarray, shape (M, N), optional
        Array to write the result into: a's dtype, C-contiguous, writable, not overlapping
        a or b.

    Returns
    -------
    numpy.ndarray, shape (M, N)
        ``a @ b`` in a's dtype; ``out`` itself when given. The sum over K is never split
        between threads, so the result is bitwise the same for any thread count.

    Raises
    ------
    TypeError
        a or b is not an array, not float32/float64, or the dtypes of a, b and ``out``
        differ.
    ValueError
        a or b is not 2-D, the inner sizes differ, or ``out`` is unusable.
    MemoryError
        The sizes overflow or the packing buffers cannot be allocated.

    Examples
    --------
    >>> import numpy as np
    >>> import convcore
    >>> a = np.arange(6, dtype=np.float32).reshape(2, 3)
    >>> convcore.gemm(a, a.T)            # a.T is read in place
    array([[ 5., 14.],
           [14., 50.]], dtype=float32)
    >>> big = np.random.default_rng(0).standard_normal((300, 200))
    >>> bool(np.allclose(convcore.gemm(big, big.T), big @ big.T))
    True
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

    def readable(m: np.ndarray, name: str) -> np.ndarray:
        # Views whose strides are whole elements are used in place; others are copied once.
        if m.flags.aligned and all(s % itemsize == 0 for s in m.strides):
            return m
        return as_buffer(m, name)

    _core.gemm(readable(a, "a"), readable(b, "b"), out)
    return out


def set_num_threads(n: int) -> None:
    """Set the number of threads convcore uses for each call.

    The default is ``OMP_NUM_THREADS`` or, unset, all the cores the process may run on,
    capped by its container's CPU quota (cgroup v1 or v2, rounded up to whole CPUs: on a
    64-core host, a container allowed 2 CPUs runs 2 threads).
    Calls use fewer threads when they are small or when several Python threads call at
    once (they share the configured threads instead of oversubscribing the cores). The
    setting is process-wide; results do not depend on it.

    Parameters
    ----------
    n : int
        Threads, >= 1. A value above :func:`max_num_threads` (4 per CPU this process may
        run on, at least 64) is clamped to it: more threads only oversubscribe the cores.

    Raises
    ------
    TypeError
        n is not an int (``bool`` is refused too).
    ValueError
        n < 1.

    See Also
    --------
    get_num_threads, max_num_threads

    Notes
    -----
    In a process made by ``fork()`` (``os.fork``, multiprocessing's "fork" start method)
    after its parent ran a call on several threads, every call runs on one thread and this
    setting has no effect: the OpenMP runtime's threads do not survive fork, and a
    parallel region in the child would wait for them forever. "spawn" and "forkserver"
    children start fresh and use threads as usual.

    Examples
    --------
    >>> import convcore
    >>> saved = convcore.get_num_threads()
    >>> convcore.set_num_threads(1)
    >>> convcore.get_num_threads()
    1
    >>> convcore.set_num_threads(saved)
    """
    if not is_int(n):
        raise TypeError(f"n must be an int, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _core.set_num_threads(min(int(n), _core.max_num_threads()))


def get_num_threads() -> int:
    """The number of threads a large call uses.

    Returns
    -------
    int
        The value :func:`set_num_threads` set, or the default (``OMP_NUM_THREADS`` or all
        cores, capped by a container's CPU quota); 1 in a child forked after the parent used threads (see
        :func:`set_num_threads`).

    Examples
    --------
    >>> import convcore
    >>> convcore.get_num_threads() >= 1
    True
    """
    return int(_core.get_num_threads())


def max_num_threads() -> int:
    """The largest thread count :func:`set_num_threads` keeps.

    Returns
    -------
    int
        4 per CPU this process may run on, at least 64; larger requests are clamped to it.

    Examples
    --------
    >>> import convcore
    >>> convcore.max_num_threads() >= 64
    True
    """
    return int(_core.max_num_threads())


def show_config() -> Dict[str, Any]:
    """The build and run-time configuration: which kernels run here, and how.

    Returns
    -------
    dict
        ``"version"``; ``"isa"`` (the kernel path in use: ``"avx512"``, ``"avx2"`` or
        ``"generic"``), ``"isa_detected"`` and ``"isa_available"`` (what the CPU and the
        build allow; ``CONVCORE_ISA`` in the environment forces one); ``"threads"``;
        ``"openmp"`` (whether the build has threads at all); ``"blocking"``: per dtype, the
        GEMM microkernel, its MR/NR/KC/MC/NC block sizes and the vector registers' width in
        bytes (``"vector_bytes"``: 64 with AVX-512, 32 with AVX2 and the portable path).

    Examples
    --------
    >>> import convcore
    >>> cfg = convcore.show_config()
    >>> cfg["isa"] in cfg["isa_available"]
    True
    >>> sorted(cfg["blocking"])
    ['float32', 'float64']
    """
    return dict(_core.config())
