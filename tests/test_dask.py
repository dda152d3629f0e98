"""convcore.dask on a dask.distributed LocalCluster with two worker processes: results
equal the single convcore call (forward exactly, gradients to float tolerance), repeated
runs agree bitwise, other chunkings are refused with the fix, and the README's
larger-than-memory recipe (npy on disk -> dask -> convcore.dask.conv2d -> npy) works."""
import numpy as np
import pytest

import convcore

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
ccd = pytest.importorskip("convcore.dask")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                       dashboard_address=None, worker_dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def test_import_convcore_does_not_import_dask():
    import subprocess
    import sys
    code = "import sys, convcore; print('dask' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def _data(dtype, layout="NCHW", n=9):
    rng = np.random.default_rng(0)
    if layout == "NCHW":
        x = rng.standard_normal((n, 3, 10, 9)).astype(dtype)
        w = rng.standard_normal((6, 3, 3, 3)).astype(dtype)
    else:
        x = rng.standard_normal((n, 10, 9, 3)).astype(dtype)
        w = rng.standard_normal((6, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    return x, w, b


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_and_gradients_equal_the_single_call(client, dtype, layout):
    x, w, b = _data(dtype, layout)
    kw = dict(stride=2, padding=1, layout=layout, shape_rule="crop")
    xd = da.from_array(x, chunks=(2, -1, -1, -1))          # chunks of 2, 2, 2, 2, 1
    y = ccd.conv2d(xd, w, b, activation="relu", **kw)
    assert y.chunks[0] == (2, 2, 2, 2, 1)
    ref = convcore.conv2d(x, w, b, activation="relu", **kw)
    np.testing.assert_array_equal(y.compute(), ref)        # forward: exactly
    dy = np.random.default_rng(1).standard_normal(ref.shape).astype(dtype)
    dyd = da.from_array(dy, chunks=(4, -1, -1, -1))         # realigned to x's chunks
    g = dask.compute(*ccd.conv2d_backward(dyd, xd, w, **kw))
    r = convcore.conv2d_backward(dy, x, w, **kw)
    for a, c in zip(g, r):
        assert a.shape == c.shape and a.dtype == c.dtype
        np.testing.assert_allclose(a, c, **_tol(dtype))
    np.testing.assert_allclose(ccd.conv2d_backward_input(dyd, w, x.shape, **kw).compute(),
                               r.input, **_tol(dtype))
    np.testing.assert_allclose(ccd.conv2d_backward_weight(dyd, xd, w.shape, **kw).compute(),
                               r.weight, **_tol(dtype))
    assert ccd.conv2d_backward(dyd, xd, w, bias=False, **kw).bias is None


def test_weight_gradients_are_bitwise_repeatable(client):
    x, w, _ = _data(np.float32, n=13)
    xd = da.from_array(x, chunks=(2, -1, -1, -1))           # 7 chunks: an odd tree
    dy = np.random.default_rng(2).standard_normal((13, 6, 8, 7)).astype(np.float32)
    dyd = da.from_array(dy, chunks=(2, -1, -1, -1))
    runs = [dask.compute(*ccd.conv2d_backward(dyd, xd, w)) for _ in range(3)]
    local = dask.compute(*ccd.conv2d_backward(dyd, xd, w), scheduler="threads")
    for g in runs[1:] + [local]:
        for a, c in zip(g, runs[0]):
            assert a.tobytes() == c.tobytes()
    # the tree order, by hand: ((0+1)+(2+3)) + ((4+5)+6)
    parts = [convcore.conv2d_backward_weight(dy[i:i + 2], x[i:i + 2], w.shape)
             for i in range(0, 13, 2)]
    tree = ((parts[0] + parts[1]) + (parts[2] + parts[3])) + ((parts[4] + parts[5]) + parts[6])
    assert runs[0][1].tobytes() == tree.tobytes()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_locally_connected_equals_the_single_call(client, layout):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 6, 7) if layout == "NCHW" else (5, 6, 7, 3))
    w = rng.standard_normal((3, 4, 2, 3, 2, 2) if layout == "NCHW" else (3, 4, 2, 2, 2, 3))
    b = rng.standard_normal((2, 3, 4) if layout == "NCHW" else (3, 4, 2))
    kw = dict(stride=2, padding=(0, 1), layout=layout, shape_rule="crop")
    xd = da.from_array(x, chunks=(2, -1, -1, -1))
    ref = convcore.locally_connected2d(x, w, b, **kw)
    np.testing.assert_array_equal(ccd.locally_connected2d(xd, w, b, **kw).compute(), ref)
    dy = rng.standard_normal(ref.shape)
    g = dask.compute(*ccd.locally_connected2d_backward(da.from_array(dy, chunks=(2, -1, -1, -1)),
                                                       xd, w, **kw))
    for a, c in zip(g, convcore.locally_connected2d_backward(dy, x, w, **kw)):
        np.testing.assert_allclose(a, c, rtol=1e-11, atol=1e-11)


def test_readme_recipe_batch_larger_than_memory(client, tmp_path):
    """np.load(mmap_mode='r') chunk by chunk in the workers -> conv2d -> npy stack."""
    x, w, b = _data(np.float32, n=10)
    path = tmp_path / "images.npy"
    np.save(path, x)

    def load(path, start, stop):
        return np.load(path, mmap_mode="r")[start:stop]

    shape = np.load(path, mmap_mode="r").shape
    chunks = [da.from_delayed(dask.delayed(load)(str(path), i, min(i + 4, shape[0])),
                              shape=(min(i + 4, shape[0]) - i,) + shape[1:], dtype=np.float32)
              for i in range(0, shape[0], 4)]
    y = ccd.conv2d(da.concatenate(chunks), w, b, padding=1)
    da.to_npy_stack(tmp_path / "out", y)
    out = da.from_npy_stack(tmp_path / "out").compute()
    np.testing.assert_array_equal(out, convcore.conv2d(x, w, b, padding=1))


def test_bad_chunking_and_inputs_are_refused():
    x, w, b = _data(np.float32)
    with pytest.raises(ValueError, match=r"rechunk\(\{1: -1, 2: -1, 3: -1\}\)"):
        ccd.conv2d(da.from_array(x, chunks=(2, 1, -1, -1)), w)
    with pytest.raises(ValueError, match="batch"):
        ccd.conv2d_backward(da.zeros((3, 6, 8, 7), dtype=np.float32),
                            da.from_array(x, chunks=2), w)
    with pytest.raises(ValueError, match="grad_output has shape"):
        ccd.conv2d_backward(da.zeros((9, 6, 8, 8), dtype=np.float32),
                            da.from_array(x, chunks=(2, -1, -1, -1)), w)
    with pytest.raises(TypeError, match="dask.array.Array"):
        ccd.conv2d(x, w)
    with pytest.raises(ValueError, match="4-D"):
        ccd.conv2d(da.from_array(x[0]), w)
    with pytest.raises(TypeError, match="float32 or float64"):
        ccd.conv2d(da.from_array(x.astype(np.int32), chunks=(2, -1, -1, -1)), w)
    with pytest.raises(TypeError, match="dtype"):
        ccd.conv2d(da.from_array(x, chunks=(2, -1, -1, -1)), w.astype(np.float64))
    with pytest.raises(convcore.ShapeError):        # checked before anything runs
        ccd.conv2d(da.from_array(x, chunks=(2, -1, -1, -1)), w, stride=2)
    with pytest.raises(ValueError, match="expected"):
        ccd.locally_connected2d(da.from_array(x, chunks=(2, -1, -1, -1)), np.ones((2, 2, 1, 3, 3, 3), np.float32))


def test_docstring_examples_run():
    import doctest
    with dask.config.set(scheduler="sync"):
        result = doctest.testmod(ccd, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
