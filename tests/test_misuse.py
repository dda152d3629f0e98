"""The smaller hardening cases: NumPy integer arguments, empty misaligned arrays, layer
state and hyperparameters checked at construction, thread-count limits, and a layer's
independence from later in-place edits of its input and output."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import convcore
import reference as ref


# --- conv2d_num_params: exact Python ints -----------------------------------------------

@pytest.mark.parametrize("itype", [np.int64, np.int32, np.uint64, int])
def test_num_params_numpy_ints_do_not_wrap(itype):
    c = itype(2**31 - 1) if itype is np.int32 else itype(2**32)
    big = int(c)
    got = convcore.conv2d_num_params(c, c, itype(3))
    assert type(got) is int
    assert got == big * big * 9 + big
    assert convcore.conv2d_num_params(c, c, (itype(3), itype(5)), groups=itype(1),
                                      bias=False) == big * big * 15


def test_num_params_bias_must_be_a_bool():
    with pytest.raises(TypeError, match=r"bias"):
        convcore.conv2d_num_params(3, 4, 3, bias="yes")


# --- empty arrays with a misaligned data pointer ----------------------------------------

def _empty_misaligned(shape, dtype):
    a = np.frombuffer(bytearray(16), np.uint8, count=0, offset=1).view(dtype).reshape(shape)
    assert a.size == 0 and a.ctypes.data % np.dtype(dtype).itemsize != 0
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_misaligned_arrays_give_the_empty_result(dtype):
    w = np.ones((2, 3, 3, 3), dtype)
    x0 = _empty_misaligned((0, 3, 6, 6), dtype)
    y = convcore.conv2d(x0, w)
    assert y.shape == (0, 2, 4, 4)
    out = _empty_misaligned((0, 2, 4, 4), dtype)
    assert convcore.conv2d(x0, w, out=out) is out
    dy0 = _empty_misaligned((0, 2, 4, 4), dtype)
    assert convcore.conv2d_backward_input(dy0, w, (0, 3, 6, 6)).shape == (0, 3, 6, 6)
    dw = convcore.conv2d_backward_weight(dy0, x0, w.shape)
    assert dw.shape == w.shape and not dw.any()
    g = convcore.conv2d_backward(dy0, x0, w)
    assert g.input.shape == x0.shape and not g.weight.any() and not g.bias.any()
    # gemm: an empty reduction gives zeros; empty operands give empty results
    a = _empty_misaligned((3, 0), dtype)
    b = _empty_misaligned((0, 4), dtype)
    assert np.array_equal(convcore.gemm(a, b), np.zeros((3, 4), dtype))
    assert convcore.gemm(_empty_misaligned((0, 5), dtype), np.ones((5, 2), dtype)).shape == (0, 2)


# --- the layer ----------------------------------------------------------------------------

def test_backward_before_forward_raises_layer_state_error():
    layer = convcore.Conv2d(3, 4, 3, rng=0)
    with pytest.raises(convcore.LayerStateError, match=r"backward\(\) called before forward\(\)"):
        layer.backward(np.zeros((1, 4, 6, 6), np.float32))
    assert issubclass(convcore.LayerStateError, ValueError)
    assert "LayerStateError" in convcore.Conv2d.backward.__doc__


BAD_HYPERPARAMETERS = [
    (dict(shape_rule="bogus"), ValueError, r"shape_rule"),
    (dict(shape_rule=None), ValueError, r"shape_rule"),
    (dict(layout="nchw"), ValueError, r"layout"),
    (dict(activation="tanh"), ValueError, r"activation"),
    (dict(bias="yes"), TypeError, r"bias"),
    (dict(bias=None), TypeError, r"bias"),
    (dict(padding="bogus"), ValueError, r"padding"),
    (dict(padding=-1), ValueError, r"padding"),
    (dict(padding=(1, 2, 3)), ValueError, r"padding"),
    (dict(padding="same", stride=2), ValueError, r"padding='same'"),
    (dict(stride=0), ValueError, r"stride"),
    (dict(stride=2**63), ValueError, r"stride"),
    (dict(dilation=(1,)), TypeError, r"dilation"),
    (dict(dilation=1.5), TypeError, r"dilation"),
    (dict(groups=0), ValueError, r"groups"),
    (dict(groups=4), ValueError, r"groups"),
    (dict(kernel_size=0), ValueError, r"kernel_size"),
    (dict(in_channels=1.5), TypeError, r"in_channels"),
    (dict(out_channels=0), ValueError, r"out_channels"),
    (dict(out_channels=True), TypeError, r"out_channels"),
    (dict(dtype="int32"), TypeError, r"dtype"),
    (dict(dtype="bogus"), TypeError, r"dtype"),
    (dict(rng="seed"), TypeError, r"rng"),
]


@pytest.mark.parametrize("kw, exc, match", BAD_HYPERPARAMETERS,
                         ids=[repr(k) for k, _, _ in BAD_HYPERPARAMETERS])
def test_layer_rejects_bad_hyperparameters_at_construction(kw, exc, match):
    args = dict(in_channels=6, out_channels=6, kernel_size=3)
    args.update(kw)
    with pytest.raises(exc, match=match):
        convcore.Conv2d(**args)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_layer_gradients_ignore_in_place_edits_after_forward(layout, activation):
    """The layer keeps its own copy of x (and of the ReLU mask): editing x or y in place
    between forward and backward leaves the gradients those of the forward."""
    rng = np.random.default_rng(9)
    xs = (2, 3, 8, 7) if layout == "NCHW" else (2, 8, 7, 3)
    x = rng.standard_normal(xs)
    layer = convcore.Conv2d(3, 4, 3, padding=1, layout=layout, activation=activation,
                            dtype="float64", rng=1)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    x_before, y_before = x.copy(), y.copy()
    x[...] = rng.standard_normal(xs)   # the caller reuses its buffers
    y[...] = -y                         # flips the ReLU pattern if anything reads y
    dx = layer.backward(dy)

    fresh = convcore.Conv2d(3, 4, 3, padding=1, layout=layout, activation=activation,
                            dtype="float64", rng=1)
    assert np.array_equal(fresh.forward(x_before), y_before)
    assert np.array_equal(dx, fresh.backward(dy))
    assert np.array_equal(layer.grad_weight, fresh.grad_weight)
    assert np.array_equal(layer.grad_bias, fresh.grad_bias)
    gy = np.where(y_before > 0, dy, 0.0) if activation == "relu" else dy
    kw = dict(padding=1, layout=layout)
    ref.assert_close(layer.grad_weight, ref.conv2d_backward_weight(gy, x_before, layer.weight.shape, **kw))


def test_layer_forward_does_not_touch_the_callers_array():
    x = np.ones((1, 3, 5, 5), np.float32)
    layer = convcore.Conv2d(3, 2, 3, rng=0)
    layer.forward(x)
    assert x.flags.writeable
    x[...] = 2  # still the caller's to edit


# --- threads -----------------------------------------------------------------------------

def _expected_max():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(64, 4 * cpus)


def test_max_num_threads_rule():
    assert convcore.max_num_threads() == _expected_max()


@pytest.mark.parametrize("n", [2**31 - 1, 2**31, 2**63, 2**100, np.int64(2**40),
                               np.uint64(2**64 - 1)])
def test_set_num_threads_clamps_big_values(restore_threads, n):
    convcore.set_num_threads(n)
    assert convcore.get_num_threads() == convcore.max_num_threads()
    # and calls still work (each uses what its size justifies)
    x = np.ones((1, 2, 6, 6), np.float32)
    assert np.array_equal(convcore.conv2d(x, np.ones((3, 2, 3, 3), np.float32)),
                          np.full((1, 3, 4, 4), 18, np.float32))


@pytest.mark.parametrize("n", [True, False, np.bool_(True), 2.0, "4", None, [2]])
def test_set_num_threads_rejects_non_ints(restore_threads, n):
    with pytest.raises(TypeError, match=r"n must be an int"):
        convcore.set_num_threads(n)
    assert convcore.get_num_threads() == restore_threads


@pytest.mark.parametrize("n", [0, -1, -(2**70)])
def test_set_num_threads_rejects_below_one(restore_threads, n):
    with pytest.raises(ValueError, match=r"n must be >= 1"):
        convcore.set_num_threads(n)
    assert convcore.get_num_threads() == restore_threads


def test_huge_omp_num_threads_is_clamped_too():
    env = dict(os.environ, OMP_NUM_THREADS="100000")
    code = ("import convcore; assert convcore.get_num_threads() == convcore.max_num_threads(), "
            "convcore.get_num_threads(); print('OK')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


def test_negative_rng_seed_is_named():
    with pytest.raises(ValueError, match="rng must be"):
        convcore.Conv2d(3, 4, 3, rng=-1)
    with pytest.raises(TypeError, match="rng must be"):
        convcore.Conv2d(3, 4, 3, rng="seed")


def test_im2col_view_overflow_names_output_and_padding():
    with pytest.raises(MemoryError, match="output .*padding"):
        convcore.conv2d_output_shape((2, 6, 12, 10), (2, 3, 3, 2), stride=(3, 1),
                                     dilation=(1, 2), groups=2,
                                     padding=(2, 2**54, 2, 3))


# --- arrays larger than the machine ----------------------------------------------------------

def test_memory_limit_reads_this_machine():
    limit = convcore._args.memory_limit()
    if sys.platform.startswith("linux"):
        assert limit is not None and limit >= 2**26   # at least 64 MiB of RAM + swap


def _cgroup_tree(tmp_path, proc_line, files):
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "cgroup"
    proc.write_text(proc_line + "\n")
    root = tmp_path / "fs"
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text + "\n")
    return str(proc), str(root)


def test_cgroup_v2_limits_bind_along_the_hierarchy(tmp_path):
    """A container's limit (cgroup v2) caps memory_limit: the lowest memory.max along the
    process's cgroup path, plus the swap it may use."""
    limit = convcore._args.cgroup_memory_limit
    proc, root = _cgroup_tree(tmp_path, "0::/app/job", {
        "memory.max": "max",
        "app/memory.max": "8000000", "app/memory.swap.max": "max",
        "app/job/memory.max": "9000000", "app/job/memory.swap.max": "1000",
    })
    assert limit(500, proc, root) == 8000000 + 500       # app's memory; job's swap over host's
    assert limit(5000, proc, root) == 8000000 + 1000     # job's swap limit
    # the process's path absent here (a cgroup namespace): the root folder's files
    proc, root = _cgroup_tree(tmp_path / "ns", "0::/elsewhere",
                              {"memory.max": "3000000", "memory.swap.max": "0"})
    assert limit(500, proc, root) == 3000000
    proc, root = _cgroup_tree(tmp_path / "none", "0::/a", {"a/memory.max": "max"})
    assert limit(500, proc, root) is None


def test_cgroup_v1_limits(tmp_path):
    limit = convcore._args.cgroup_memory_limit
    proc, root = _cgroup_tree(tmp_path, "4:memory:/docker/c1", {
        "memory/memory.limit_in_bytes": "9223372036854771712",      # unlimited
        "memory/docker/c1/memory.limit_in_bytes": "6000000",
    })
    assert limit(700, proc, root) == 6000000 + 700
    proc, root = _cgroup_tree(tmp_path / "sw", "4:cpu,memory:/c", {
        "memory/c/memory.limit_in_bytes": "6000000",
        "memory/c/memory.memsw.limit_in_bytes": "6000300",
    })
    assert limit(700, proc, root) == 6000300
    proc, root = _cgroup_tree(tmp_path / "sw2", "4:memory:/c", {
        "memory/c/memory.limit_in_bytes": "6000000",
        "memory/c/memory.memsw.limit_in_bytes": "9000000",   # above memory + host swap
    })
    assert limit(700, proc, root) == 6000700
    assert limit(700, str(tmp_path / "missing"), root) is None
    # a hybrid layout (v1 memory controller and the v2 tree): the lower of the two
    proc, root = _cgroup_tree(tmp_path / "hybrid", "4:memory:/c\n0::/c", {
        "memory/c/memory.limit_in_bytes": "5000000",
        "c/memory.max": "7000000",
    })
    assert limit(0, proc, root) == 5000000
    proc, root = _cgroup_tree(tmp_path / "garbage", "4:memory:/c",
                              {"memory/c/memory.limit_in_bytes": "lots"})
    assert limit(700, proc, root) is None


def test_memory_limit_takes_the_container_limit(monkeypatch):
    convcore._args.memory_limit.cache_clear()
    try:
        monkeypatch.setattr(convcore._args, "cgroup_memory_limit", lambda swap: 123456789)
        assert convcore._args.memory_limit() == 123456789
    finally:
        monkeypatch.undo()
        convcore._args.memory_limit.cache_clear()
    assert convcore._args.memory_limit() >= 2**26


def test_arrays_beyond_memory_are_refused_before_allocating(monkeypatch):
    """Where the kernel overcommits, an allocation larger than RAM + swap succeeds and the
    process is killed once it is written; such arrays raise MemoryError naming them."""
    monkeypatch.setattr(convcore._args, "memory_limit", lambda: 4096)
    # (arrays up to _UNCHECKED_BYTES skip the check; here every array is checked)
    monkeypatch.setattr(convcore._args, "_UNCHECKED_BYTES", 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)       # 512 bytes
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    big = np.broadcast_to(np.float32(1), (1, 2, 40, 40))            # a 12800-byte copy
    with pytest.raises(MemoryError,
                       match=r"^x is not C-contiguous.*12800 bytes.*memory and swap this process may use \(4096"):
        convcore.conv2d(big, w, stride=(37, 37))
    with pytest.raises(MemoryError, match=r"^the output \(shape \(1, 40, 8, 8\).*10240 bytes"):
        convcore.conv2d(x, np.ones((40, 2, 3, 3), np.float32), padding=1)
    dy = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    with pytest.raises(MemoryError, match=r"^grad_input \(shape \(1, 2, 38, 38\)"):
        convcore.conv2d_backward_input(dy, w, (1, 2, 38, 38), stride=7)
    # under the limit nothing changes
    np.testing.assert_allclose(convcore.conv2d(x, w), ref.conv2d(x, w), rtol=1e-5, atol=1e-5)
