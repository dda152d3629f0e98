"""convcore.gemm against the float64 product a @ b, on every ISA, around every blocking edge.

Tolerance (norm-wise, ||C − C_ref|| / ||C_ref||): float64 1e-12, float32 1e-5, with C_ref the
float64 product of the same (float32-valued) inputs, so only the arithmetic is measured.
"""
from __future__ import annotations

import numpy as np
import pytest

import convcore
import reference as ref

DTYPES = [np.float32, np.float64]


def blocking(dtype) -> dict:
    return convcore.show_config()["blocking"][np.dtype(dtype).name]


def check(a, b, got, dtype, what=""):
    expected = a.astype(np.float64) @ b.astype(np.float64)
    assert got.shape == expected.shape and got.dtype == dtype, what
    if expected.size:
        mag = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
        ref.assert_close(got, expected, dtype, what, mag=mag, terms=a.shape[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 7, 31, 193])
def test_gemm_tile_edges(isa, dtype, k):
    """m over 1 .. 2·MR + 1 and n over 1 .. 2·NR + 1 for the active microkernel."""
    blk = blocking(dtype)
    mr, nr = blk["MR"], blk["NR"]
    rng = np.random.default_rng(k)
    A = rng.standard_normal((2 * mr + 1, k)).astype(dtype)
    B = rng.standard_normal((k, 2 * nr + 1)).astype(dtype)
    for m in range(1, 2 * mr + 2):
        a = np.ascontiguousarray(A[:m])
        for n in range(1, 2 * nr + 2):
            b = np.ascontiguousarray(B[:, :n])
            check(a, b, convcore.gemm(a, b), dtype, f"m={m} n={n} k={k}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_k_around_kc(isa, dtype):
    blk = blocking(dtype)
    mr, nr, kc = blk["MR"], blk["NR"], blk["KC"]
    rng = np.random.default_rng(0)
    for k in (kc - 1, kc, kc + 1, 2 * kc + 3):
        for m, n in ((mr + 1, nr - 1), (2 * mr - 1, 2 * nr + 1), (1, 1)):
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            check(a, b, convcore.gemm(a, b), dtype, f"m={m} n={n} k={k}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_beyond_mc_and_nc(isa, dtype):
    blk = blocking(dtype)
    mr, nr, kc, mc, nc = blk["MR"], blk["NR"], blk["KC"], blk["MC"], blk["NC"]
    rng = np.random.default_rng(1)
    for m, n, k in ((mc + mr + 1, 3 * nr + 1, 2 * kc + 1), (mr + 1, nc + nr + 3, 33),
                    (mc + 1, nc + 1, 5)):
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        check(a, b, convcore.gemm(a, b), dtype, f"m={m} n={n} k={k}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_views(isa, dtype):
    """Transposed, strided, Fortran, negative-stride and misaligned operands."""
    rng = np.random.default_rng(2)
    m, n, k = 29, 37, 53
    base_a = rng.standard_normal((m, k)).astype(dtype)
    base_b = rng.standard_normal((k, n)).astype(dtype)
    big_a = rng.standard_normal((2 * m, 3 * k)).astype(dtype)
    big_b = rng.standard_normal((2 * k, 3 * n)).astype(dtype)

    a_views = {
        "C": base_a,
        "T of C": np.ascontiguousarray(base_a.T).T,
        "strided": big_a[::2, ::3],
        "Fortran": np.asfortranarray(base_a),
        "negative": base_a[::-1, ::-1],
        "column": big_a[:, 5:5 + k],
    }
    b_views = {
        "C": base_b,
        "T of C": np.ascontiguousarray(base_b.T).T,
        "strided": big_b[::2, ::3],
        "Fortran": np.asfortranarray(base_b),
        "negative": base_b[::-1, :],
    }
    for an, a in a_views.items():
        for bn, b in b_views.items():
            a_before, b_before = a.copy(), b.copy()
            got = convcore.gemm(a, b)
            check(a, b, got, dtype, f"a {an}, b {bn}")
            np.testing.assert_array_equal(a, a_before)
            np.testing.assert_array_equal(b, b_before)


def _misaligned(x, order="C"):
    """A copy of x whose data pointer is one byte off (flags.aligned is False)."""
    buf = np.zeros(x.nbytes + 1, np.uint8)
    flat = buf[1:].view(x.dtype)
    v = flat.reshape(x.shape) if order == "C" else flat.reshape(x.shape[::-1]).T
    v[...] = x
    assert not v.flags.aligned
    return v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", ["a", "b", "both", "a Fortran"])
def test_gemm_misaligned_operands(dtype, which):
    """Misaligned inputs are accepted (copied once), as the README says of every input."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((13, 21)).astype(dtype)
    b = rng.standard_normal((21, 9)).astype(dtype)
    if which in ("a", "both"):
        a = _misaligned(a)
    if which in ("b", "both"):
        b = _misaligned(b)
    if which == "a Fortran":
        a = _misaligned(a, order="F")
        assert a.flags.f_contiguous
    check(a, b, convcore.gemm(a, b), dtype, f"misaligned {which}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_transposed_products(isa, dtype):
    """a.T @ b and a @ b.T with the transposes as views of C arrays."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((41, 23)).astype(dtype)
    y = rng.standard_normal((41, 17)).astype(dtype)
    check(x.T, y, convcore.gemm(x.T, y), dtype, "x.T @ y")
    z = rng.standard_normal((19, 23)).astype(dtype)
    check(x, z.T, convcore.gemm(x, z.T), dtype, "x @ z.T")
    check(x.T, x, convcore.gemm(x.T, x), dtype, "x.T @ x (same buffer)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_out(isa, dtype):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((27, 45)).astype(dtype)
    b = rng.standard_normal((45, 39)).astype(dtype)
    guard = 11
    buf = np.full(27 * 39 + 2 * guard, np.nan, dtype=dtype)
    out = buf[guard:guard + 27 * 39].reshape(27, 39)
    got = convcore.gemm(a, b, out=out)
    assert got is out
    check(a, b, out, dtype, "out=")
    # previous contents of out do not leak in; nothing outside it is written
    assert np.isnan(buf[:guard]).all() and np.isnan(buf[-guard:]).all()
    np.testing.assert_array_equal(convcore.gemm(a, b), out)
    # reused out is overwritten, not accumulated
    convcore.gemm(a, b, out=out)
    check(a, b, out, dtype, "out= again")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_empty(isa, dtype):
    for m, k, n in ((0, 3, 4), (3, 0, 4), (3, 4, 0), (0, 0, 0)):
        a = np.ones((m, k), dtype)
        b = np.ones((k, n), dtype)
        out = np.full((m, n), np.nan, dtype)
        got = convcore.gemm(a, b, out=out)
        assert got.shape == (m, n) and got.dtype == dtype
        np.testing.assert_array_equal(got, np.zeros((m, n)))  # k == 0: an empty sum


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_special_values(isa, dtype):
    a = np.ones((5, 4), dtype)
    b = np.ones((4, 6), dtype)
    a[2, 1] = np.nan
    b[3, 4] = np.inf
    c = convcore.gemm(a, b)
    assert np.isnan(c[2]).all()
    rest = np.delete(c, 2, axis=0)
    assert np.isinf(rest[:, 4]).all()
    assert (np.delete(rest, 4, axis=1) == 4).all()


def test_gemm_exact_small_integers(isa):
    """Products of small integers are exact in both precisions."""
    rng = np.random.default_rng(6)
    a = rng.integers(-8, 9, (37, 61))
    b = rng.integers(-8, 9, (61, 43))
    for dtype in DTYPES:
        np.testing.assert_array_equal(convcore.gemm(a.astype(dtype), b.astype(dtype)), a @ b)
