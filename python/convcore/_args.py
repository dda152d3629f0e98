"""Argument checking and normalisation shared by every public function.

Messages name the argument, the value received and the rule it breaks. Hyperparameter
ranges and the output-size rule are checked once more by the C++ core (which raises
ShapeError / ValueError with the arithmetic spelled out).
"""
from __future__ import annotations

import functools
import math
import numbers
import os
from typing import Any, Optional, Sequence, Tuple, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from . import _core
from ._types import Activation, Algorithm, Layout, ShapeRule

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
LAYOUTS = ("NCHW", "NHWC")
SHAPE_RULES = ("strict", "crop", "pad")
ACTIVATIONS = (None, "relu")

_S = TypeVar("_S", bound=np.generic)


# Sizes and hyperparameters travel to the core as 64-bit integers; anything larger can
# only describe an array that cannot exist.
MAX_INT = 2**62


def is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_range(values: Sequence[int], name: str, given: Any) -> None:
    if any(abs(v) > MAX_INT for v in values):
        raise ValueError(f"{name} is too large: {given!r} (sizes and hyperparameters must "
                         f"be below 2**62)")


def as_array(a: Any, name: str) -> np.ndarray:
    """A NumPy view of an input array, without a copy where possible: a numpy.ndarray as
    it is; any CPU array that speaks DLPack (torch CPU tensors, JAX CPU arrays, CuPy-free
    array libraries) through numpy.from_dlpack; any object with the buffer protocol
    (array.array, memoryview) through numpy.asarray. Lists, scalars and strings are refused:
    an input must already be an array.

    torch CPU tensors: contiguous, channels-last (seen through ``permute(0, 2, 3, 1)`` it
    is a C-contiguous NHWC view) and strided ones (sliced, transposed, expanded) are all
    views of the tensor's memory; the kernels copy a non-contiguous one once, as for a
    NumPy view. A tensor with the lazy negation bit is resolved (copied) first; one that
    requires grad, sits on another device (CUDA, meta) or is sparse is refused with the
    fix; dtypes NumPy lacks (bfloat16) are refused as wrong dtypes."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__dlpack__"):
        # A torch tensor with its lazy negation bit set (a `_neg_view`) exports its
        # un-negated memory through DLPack: resolve it first (a copy), or the values would
        # be read with the wrong sign.
        is_neg = getattr(a, "is_neg", None)
        if callable(is_neg) and is_neg() is True:
            a = a.resolve_neg()
        try:
            return cast(NDArray[Any], np.from_dlpack(a))
        except (BufferError, RuntimeError, TypeError, ValueError) as e:
            dtype = getattr(a, "dtype", None)
            if dtype is not None and "dtype" in str(e):
                raise TypeError(f"{name} must have dtype float32 or float64, got {dtype} "
                                f"({type(a).__name__} through DLPack: {e})") from e
            raise TypeError(f"{name}: cannot read this {type(a).__name__} through DLPack "
                            f"without a copy ({e}); pass a NumPy array, or a CPU tensor that "
                            "does not require grad (tensor.detach())") from e
    if not isinstance(a, (np.generic, bytes, bytearray, str)):
        try:
            memoryview(a)
        except TypeError:
            pass
        else:
            return np.asarray(a)
    raise TypeError(f"{name} must be an array of float32 or float64 (a numpy.ndarray, or an "
                    f"array with DLPack or the buffer protocol), got {type(a).__name__}")


_F32, _F64 = FLOAT_DTYPES


def check_array(a_in: Any, name: str) -> np.ndarray:
    """A float32/float64 array (see as_array for what is accepted), or TypeError."""
    if type(a_in) is np.ndarray:   # the common case first: NumPy's own native dtypes
        dt = a_in.dtype
        if dt is _F32 or dt is _F64:
            return a_in
    a = as_array(a_in, name)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    return a


def check_same_dtype(ref: np.ndarray, ref_name: str, a: np.ndarray, name: str) -> None:
    if a.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but {ref_name} has dtype {ref.dtype}: "
                        "all arrays must share one dtype (float32 or float64)")


def cgroup_memory_limit(host_swap: int, proc_cgroup: str = "/proc/self/cgroup",
                        root: str = "/sys/fs/cgroup") -> Optional[int]:
    """Bytes of memory plus swap this process's control groups allow (v2: memory.max and
    memory.swap.max; v1: memory.memsw.limit_in_bytes, or memory.limit_in_bytes plus the
    host's swap), the lowest along the hierarchy; None when no limit is set or the files
    are not there. A container's limit is usually far below the host's RAM, and going past
    it gets the process killed, not a MemoryError. Read by the core (the reader of the CPU
    quota that caps the default thread count is the same code)."""
    return _core.cgroup_memory_limit(host_swap, proc_cgroup, root)


@functools.lru_cache(maxsize=None)
def memory_limit() -> Optional[int]:
    """Bytes of memory plus swap this process may use: the machine's physical memory plus
    swap, or less where its control groups (a container's limit) say so; None where the
    system does not say.

    An array larger than that can never be written in full. Where the kernel overcommits
    (vm.overcommit_memory = 1), or a container's limit is below the machine's memory,
    allocating one succeeds and the process is killed once the pages are touched; so such
    arrays are refused before allocating.
    """
    try:
        ram = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None
    if ram <= 0:
        return None
    swap = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("SwapTotal:"):
                    swap = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    limit = ram + swap
    group = cgroup_memory_limit(swap)
    return limit if group is None else min(limit, group)


def _beyond_memory(nbytes: int) -> str:
    """'' when nbytes may fit in memory, else the reason it cannot."""
    limit = memory_limit()
    if limit is not None and nbytes > limit:
        return (f": more than the memory and swap this process may use ({limit} bytes: "
                "RAM and swap, or its container's limit)")
    return ""


# Arrays up to this size are allocated without consulting the memory limit: the check is
# there for arrays that can never fit, and asking costs more than a tiny call computes.
_UNCHECKED_BYTES = 1 << 20


def new_array(shape: Tuple[int, ...], dtype: Any, name: str) -> np.ndarray:
    """np.empty(shape, dtype), or MemoryError naming the array when it cannot fit."""
    dt = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    if nbytes > _UNCHECKED_BYTES:
        why = _beyond_memory(nbytes)
        if why:
            raise MemoryError(f"{name} (shape {shape}, {dt}: {nbytes} bytes) cannot be "
                              f"allocated{why}")
    return np.empty(shape, dt)


def private_copy(a: NDArray[_S], name: str) -> NDArray[_S]:
    """A C-contiguous copy of an array, never placed just past the original modulo 4 KiB.

    A memcpy whose destination lies a few cache lines past its source, counted modulo
    4 KiB, runs several times slower: each load looks like it might depend on a store just
    made ("4K aliasing"). Where the allocator puts a copy decides that, and the same
    program meets it on every call: a 200 KB copy took 6 µs, but 73 µs 16 bytes further on
    and 11 µs 32–64 bytes on (Zen 3). A copy that would land within 256 bytes past the
    original is moved to the original's own page offset."""
    out = new_array(a.shape, a.dtype, name)
    if a.flags.c_contiguous and a.size * a.itemsize >= _PLACED_COPY_BYTES:
        src = _core.page_offset(a)
        if 0 < (_core.page_offset(out) - src) % 4096 <= 256:
            nbytes = a.size * a.itemsize
            buf = new_array((nbytes + 4096,), np.uint8, name)
            start = (src & ~63) - _core.page_offset(buf)
            out = buf[start % 4096:start % 4096 + nbytes].view(a.dtype).reshape(a.shape)
    np.copyto(out, a)
    return out


# Copies from this size on are checked by private_copy (below it, 4K aliasing costs less
# than checking).
_PLACED_COPY_BYTES = 1 << 16


def as_buffer(a: NDArray[_S], name: str) -> NDArray[_S]:
    """C-contiguous and aligned (copied once when it is not). A copy that cannot be
    allocated (a huge broadcast view, say) raises MemoryError naming the argument."""
    flags = a.flags
    if flags.c_contiguous and flags.aligned:   # the common case, without np.require's cost
        return a
    nbytes = a.size * a.itemsize
    what = (f"{name} is not C-contiguous and aligned, and its contiguous copy "
            f"(shape {a.shape}, {a.dtype}: {nbytes} bytes) cannot be allocated")
    why = _beyond_memory(nbytes)
    if why:
        raise MemoryError(what + why)
    try:
        return np.require(a, requirements=("C_CONTIGUOUS", "ALIGNED"))
    except MemoryError:
        raise MemoryError(what) from None


def output_array(out: Any, shape: Tuple[int, ...], dtype: np.dtype[Any],
                 inputs: Sequence[np.ndarray]) -> np.ndarray:
    """The array a result is written to: `out` after checks (exact shape and dtype,
    writable, C-contiguous, not overlapping an input), or a new one."""
    if out is None:
        return new_array(shape, dtype, "the output")
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, expected {np.dtype(dtype)}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if not (out.flags.c_contiguous and out.flags.aligned):
        raise ValueError("out must be C-contiguous and aligned (it is written in place)")
    for a in inputs:
        if np.may_share_memory(out, a):
            raise ValueError("out must not overlap an input array")
    return out


def check_layout(layout: Any) -> Layout:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return cast(Layout, layout)


def check_shape_rule(rule: Any) -> ShapeRule:
    if rule not in SHAPE_RULES:
        raise ValueError(f"shape_rule must be 'strict', 'crop' or 'pad', got {rule!r}")
    return cast(ShapeRule, rule)


def check_activation(act: Any) -> Activation:
    if act not in ACTIVATIONS:
        raise ValueError(f"activation must be None or 'relu', got {act!r}")
    return cast(Activation, act)


def check_algorithm(algorithm: Any) -> Algorithm:
    """None (exact direct/GEMM) or "winograd"."""
    if algorithm is not None and not (isinstance(algorithm, str) and algorithm == "winograd"):
        raise ValueError(f"algorithm must be None (exact) or 'winograd', got {algorithm!r}")
    return cast(Algorithm, algorithm)


def core_algorithm(algorithm: Algorithm) -> str:
    """The core's name of a checked algorithm."""
    return "winograd" if algorithm == "winograd" else "exact"


def pair(v: Any, name: str, minimum: int) -> Tuple[int, int]:
    """An int or a pair of ints, each >= minimum."""
    if is_int(v):
        out = (int(v), int(v))
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(is_int(e) for e in v):
        out = (int(v[0]), int(v[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    check_range(out, name, v)
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum} along each axis, got {v!r}")
    return out


def check_groups(groups: Any) -> int:
    if not is_int(groups):
        raise TypeError(f"groups must be an int, got {groups!r}")
    check_range((groups,), "groups", groups)
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    return int(groups)


def padding4(padding: Any, kernel: Tuple[int, int], stride: Tuple[int, int],
             dilation: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, a pair, a 4-tuple, 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' requires stride 1 along both axes, "
                                 f"got stride={stride}")
            th = dilation[0] * (kernel[0] - 1)
            tw = dilation[1] * (kernel[1] - 1)
            # An odd total puts the extra row/column at the bottom/right (as PyTorch).
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ValueError(f"padding must be an int, a pair, a 4-tuple, 'valid' or 'same'; "
                         f"got {padding!r}")
    if is_int(padding):
        p = (int(padding),) * 4
    elif isinstance(padding, (tuple, list)) and all(is_int(e) for e in padding):
        if len(padding) == 2:
            p = (int(padding[0]), int(padding[0]), int(padding[1]), int(padding[1]))
        elif len(padding) == 4:
            p = cast(Tuple[int, int, int, int], tuple(int(e) for e in padding))
        else:
            raise ValueError("padding must be an int, (pad_h, pad_w) or "
                             f"(top, bottom, left, right); got {padding!r}")
    else:
        raise TypeError("padding must be an int, a pair, a 4-tuple, 'valid' or 'same'; "
                        f"got {padding!r}")
    check_range(p, "padding", padding)
    if min(p) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return p


def shape_tuple(shape: Any, name: str, ndims: Sequence[int]) -> Tuple[int, ...]:
    """A tuple of non-negative ints with one of the allowed lengths."""
    if not isinstance(shape, (tuple, list)) or not all(is_int(e) for e in shape):
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}")
    if len(shape) not in ndims:
        allowed = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name} must have {allowed} entries, got {len(shape)}: {tuple(shape)}")
    check_range(shape, name, tuple(shape))
    if min(shape) < 0:
        raise ValueError(f"{name} must not have negative sizes, got {tuple(shape)}")
    return tuple(int(e) for e in shape)
