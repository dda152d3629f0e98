"""Threading: bitwise-identical results for any thread count (docs/design.md, "Determinism"),
calls from many Python threads at once, and the runtime configuration."""
from __future__ import annotations

import concurrent.futures as cf

import numpy as np
import pytest

import convcore
import reference as ref

THREAD_COUNTS = [1, 2, 3, 4]


def _conv_problem(layout, dtype, groups=1):
    rng = np.random.default_rng(7)
    n, c, h, w, k = 3, 16, 20, 20, 24
    xs = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    ws = (k, c // groups, 3, 3) if layout == "NCHW" else (k, 3, 3, c // groups)
    x = rng.standard_normal(xs).astype(dtype)
    wt = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    kw = dict(padding=1, groups=groups, layout=layout)
    dy = rng.standard_normal(convcore.conv2d_output_shape(xs, ws, **kw)).astype(dtype)
    return x, wt, b, dy, kw


def _all_passes(x, w, b, dy, kw):
    y = convcore.conv2d(x, w, b, activation="relu", **kw)
    g = convcore.conv2d_backward(dy, x, w, **kw)
    return {"forward": y, "backward_input": g.input, "backward_weight": g.weight,
            "backward_bias": g.bias,
            "backward_input_alone": convcore.conv2d_backward_input(dy, w, x.shape, **kw),
            "backward_weight_alone": convcore.conv2d_backward_weight(dy, x, w.shape, **kw)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("groups", [1, 4])
def test_conv_bitwise_identical_for_any_thread_count(isa, restore_threads, dtype, layout, groups):
    x, w, b, dy, kw = _conv_problem(layout, dtype, groups)
    results = {}
    for t in THREAD_COUNTS:
        convcore.set_num_threads(t)
        assert convcore.get_num_threads() == t
        results[t] = _all_passes(x, w, b, dy, kw)
    for t in THREAD_COUNTS[1:]:
        for name, arr in results[t].items():
            assert np.array_equal(arr, results[1][name]), f"{name}: threads={t} differs from 1"
    # and they are right
    ref.assert_close(results[1]["forward"], ref.conv2d(x, w, b, activation="relu", **kw), dtype)
    ref.assert_close(results[1]["backward_weight"],
                     ref.conv2d_backward_weight(dy, x, w.shape, **kw), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_bitwise_identical_for_any_thread_count(isa, restore_threads, dtype):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 500)).astype(dtype)
    b = rng.standard_normal((500, 200)).astype(dtype)
    results = {}
    for t in THREAD_COUNTS:
        convcore.set_num_threads(t)
        results[t] = convcore.gemm(a, b)
    for t in THREAD_COUNTS[1:]:
        assert np.array_equal(results[t], results[1]), f"gemm: threads={t} differs from 1"
    ref.assert_close(results[1], a.astype(np.float64) @ b.astype(np.float64), dtype)


def test_big_reduction_bitwise_identical(restore_threads):
    """backward-weight over many pixels (the reduction is long and the thread split
    must never cut it)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 8, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    out = {}
    for t in THREAD_COUNTS:
        convcore.set_num_threads(t)
        g = convcore.conv2d_backward(dy, x, w, padding=1)
        out[t] = g
    for t in THREAD_COUNTS[1:]:
        for i, name in enumerate(("input", "weight", "bias")):
            assert np.array_equal(out[t][i], out[1][i]), f"{name}: threads={t}"


# NHWC paths whose work split follows the team size: the strided backward-data's phases
# (one region, chunks of pixels per thread and image) and the weight gradient that skips
# padded taps. (x shape, w shape, hyperparameters, the entry forced for that pass.)
SPLIT_BY_TEAM = {
    "subpixel_batch1": ((1, 13, 11, 16), (24, 3, 3, 16),
                        dict(stride=2, padding=1), dict(backward_data="subpixel_nhwc")),
    "subpixel_groups_stride3": ((3, 14, 17, 16), (16, 5, 4, 8),
                                dict(stride=(2, 3), padding=(2, 1), dilation=(1, 2), groups=2),
                                dict(backward_data="subpixel_nhwc")),
    "pixel_rows_padded": ((2, 9, 10, 32), (8, 3, 5, 32),
                          dict(padding=(1, 2)), dict(backward_weight="pixel_rows")),
    "pixel_rows_strided_dilated": ((3, 12, 11, 64), (16, 3, 3, 32),
                                   dict(stride=2, padding=(3, 1), dilation=2, groups=2),
                                   dict(backward_weight="pixel_rows")),
}


@pytest.mark.parametrize("case", sorted(SPLIT_BY_TEAM))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_paths_split_by_team_size_are_bitwise_identical(isa, restore_threads, case, dtype):
    xs, ws, hyper, force = SPLIT_BY_TEAM[case]
    rng = np.random.default_rng(23)
    kw = dict(layout="NHWC", shape_rule="crop", **hyper)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    dy = rng.standard_normal(convcore.conv2d_output_shape(xs, ws, **kw)).astype(dtype)
    results = {}
    with convcore._conv._force_implementations(**force):
        for t in THREAD_COUNTS:
            convcore.set_num_threads(t)
            if "backward_data" in force:
                results[t] = convcore.conv2d_backward_input(dy, w, xs, **kw)
            else:
                results[t] = convcore.conv2d_backward_weight(dy, x, ws, **kw)
    for t in THREAD_COUNTS[1:]:
        assert np.array_equal(results[t], results[1]), f"{case}: threads={t} differs from 1"
    if "backward_data" in force:
        want = ref.conv2d_backward_input(dy, w, xs, **kw)
    else:
        want = ref.conv2d_backward_weight(dy, x, ws, **kw)
    ref.assert_close(results[1], want, dtype, case)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weights_packed_by_panels_for_any_team(isa, restore_threads, dtype):
    """via_nhwc packs NCHW filters a panel of NR filters (forward) or channels
    (backward-data) at a time, each panel in parts when the team outnumbers the panels:
    every team size packs the same bits. 40 filters (forward: a whole panel and a partial
    one) and 200 channels (backward-data: six whole panels and a partial one); the weights
    are large enough for a team of 8 or more, so the panels are split in two where a panel
    row holds two 64-byte lines (AVX-512's 32 float or 16 double columns; the other ISAs'
    panels stay whole)."""
    rng = np.random.default_rng(29)
    kw = dict(padding=1)
    xs, ws = (2, 200, 9, 7), (40, 200, 3, 3)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    dy = rng.standard_normal(convcore.conv2d_output_shape(xs, ws, **kw)).astype(dtype)
    # The large teams first, each checked against the reference too: a column a part left
    # unwritten must not pass by holding what a smaller team's call packed there.
    ys, dxs = {}, {}
    want_y = ref.conv2d(x, w, **kw)
    want_dx = ref.conv2d_backward_input(dy, w, xs, **kw)
    with convcore._conv._force_implementations(forward="via_nhwc", backward_data="via_nhwc"):
        for t in (16, 8, 3, 2, 1):
            convcore.set_num_threads(t)
            ys[t] = convcore.conv2d(x, w, **kw)
            dxs[t] = convcore.conv2d_backward_input(dy, w, xs, **kw)
            ref.assert_close(ys[t], want_y, dtype, f"forward, threads={t}")
            ref.assert_close(dxs[t], want_dx, dtype, f"backward-data, threads={t}")
    for t in (2, 3, 8, 16):
        assert np.array_equal(ys[t], ys[1]), f"forward, threads={t}"
        assert np.array_equal(dxs[t], dxs[1]), f"backward-data, threads={t}"


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_concurrent_python_threads(layout):
    """Many Python threads calling at once get the same results as serial calls."""
    problems = []
    for i, dtype in enumerate([np.float32, np.float64] * 3):
        x, w, b, dy, kw = _conv_problem(layout, dtype, groups=1 + (i % 2) * 3)
        problems.append((x + i, w, b, dy, kw))  # different inputs per task
    rng = np.random.default_rng(5)
    mats = [(rng.standard_normal((130 + i, 70)), rng.standard_normal((70, 90 + i))) for i in range(4)]

    def conv_task(i):
        return _all_passes(*problems[i])

    def gemm_task(i):
        a, b = mats[i]
        return convcore.gemm(a, b)

    serial_conv = [conv_task(i) for i in range(len(problems))]
    serial_gemm = [gemm_task(i) for i in range(len(mats))]
    jobs = [("conv", i) for i in range(len(problems))] * 3 + [("gemm", i) for i in range(len(mats))] * 3
    with cf.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [(kind, i, pool.submit(conv_task if kind == "conv" else gemm_task, i))
                   for kind, i in jobs]
        for kind, i, fut in futures:
            got = fut.result(timeout=300)
            if kind == "conv":
                for name, arr in got.items():
                    assert np.array_equal(arr, serial_conv[i][name]), (i, name)
            else:
                assert np.array_equal(got, serial_gemm[i]), i


def test_get_num_threads_reflects_set(restore_threads):
    for t in (1, 3, 2, 7):
        convcore.set_num_threads(t)
        assert convcore.get_num_threads() == t
        assert convcore.show_config()["threads"] == t
    convcore.set_num_threads(np.int64(2))
    assert convcore.get_num_threads() == 2


def test_default_thread_count_is_positive():
    assert isinstance(convcore.get_num_threads(), int)
    assert convcore.get_num_threads() >= 1


def test_show_config():
    cfg = convcore.show_config()
    for key in ("version", "isa", "threads", "blocking"):
        assert key in cfg, key
    assert cfg["version"] == convcore.__version__
    assert cfg["isa"] == convcore._core.get_isa()
    assert cfg["isa"] in convcore._core.available_isas()
    assert cfg["threads"] == convcore.get_num_threads()
    for dtype in ("float32", "float64"):
        blk = cfg["blocking"][dtype]
        for key in ("MR", "NR", "KC", "MC", "NC"):
            assert isinstance(blk[key], int) and blk[key] >= 1, (dtype, key)
        # MC and NC are whole numbers of micro-tiles
        assert blk["MC"] % blk["MR"] == 0 and blk["NC"] % blk["NR"] == 0
    # a fresh dict each time: editing it changes nothing
    cfg["threads"] = -5
    assert convcore.show_config()["threads"] == convcore.get_num_threads()


def test_show_config_follows_isa(isa):
    cfg = convcore.show_config()
    assert cfg["isa"] == isa
    assert "generic" in convcore._core.available_isas()
