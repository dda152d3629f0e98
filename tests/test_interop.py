"""Array interop: NumPy arrays, any CPU array with DLPack (torch CPU tensors, including
channels-last ones for layout NHWC) and buffer-protocol objects are read without a copy
where the layout allows; results are NumPy arrays. Lists and scalars are still refused."""
import array

import numpy as np
import pytest

import convcore
from convcore._args import as_array


def test_buffer_protocol_objects_are_read_in_place():
    buf = array.array("d", range(12))
    a = as_array(buf, "x")
    assert a.dtype == np.float64 and a.shape == (12,)
    assert np.shares_memory(a, np.frombuffer(buf, dtype=np.float64))
    m = memoryview(np.arange(6, dtype=np.float32).reshape(2, 3))
    c = convcore.gemm(m, np.ones((3, 2), dtype=np.float32))
    np.testing.assert_array_equal(c, np.full((2, 2), 3.0) + np.array([[0.0], [9.0]]))


@pytest.mark.parametrize("bad", [[[1.0]], 1.0, np.float32(1.0), b"\x00" * 8, "x"])
def test_non_arrays_are_refused(bad):
    with pytest.raises(TypeError, match="x must be an array"):
        convcore.conv2d(bad, np.ones((1, 1, 1, 1)))


def test_torch_tensors_in_every_entry_point():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 9, generator=g, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    xn, wn, bn = x.numpy(), w.numpy(), b.numpy()
    y = convcore.conv2d(x, w, b, padding=1)
    assert isinstance(y, np.ndarray)
    np.testing.assert_array_equal(y, convcore.conv2d(xn, wn, bn, padding=1))
    ref = torch.nn.functional.conv2d(x, w, b, padding=1).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn(*y.shape, generator=g, dtype=torch.float64)
    gr = convcore.conv2d_backward(dy, x, w, padding=1)
    gn = convcore.conv2d_backward(dy.numpy(), xn, wn, padding=1)
    for a, c in zip(gr, gn):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(convcore.conv2d_backward_input(dy, w, x.shape, padding=1), gn.input)
    np.testing.assert_array_equal(convcore.conv2d_backward_weight(dy, x, w.shape, padding=1), gn.weight)
    # gemm reads strided views (a transposed tensor) in place, as it does NumPy views
    np.testing.assert_array_equal(convcore.gemm(x[0, 0], x[0, 1].T), convcore.gemm(xn[0, 0], xn[0, 1].T))
    layer = convcore.Conv2d(3, 5, 3, padding=1, dtype="float64", rng=0)
    np.testing.assert_array_equal(layer.forward(x), layer.forward(xn))


def test_torch_tensor_is_read_without_a_copy():
    torch = pytest.importorskip("torch")
    x = torch.randn(2, 3, 8, 9)
    assert np.shares_memory(as_array(x, "x"), x.numpy())
    # channels-last memory, used as an NHWC array: a zero-copy, C-contiguous view
    xcl = x.to(memory_format=torch.channels_last)
    nhwc = as_array(xcl.permute(0, 2, 3, 1), "x")
    assert nhwc.flags.c_contiguous and np.shares_memory(nhwc, xcl.numpy())
    w = torch.randn(4, 3, 3, 3)
    y_cl = convcore.conv2d(xcl.permute(0, 2, 3, 1), w.permute(0, 2, 3, 1).contiguous(),
                           padding=1, layout="NHWC")
    y = convcore.conv2d(x, w, padding=1)
    np.testing.assert_allclose(y_cl.transpose(0, 3, 1, 2), y, rtol=1e-5, atol=1e-5)


def test_tensor_that_requires_grad_is_refused_with_the_fix():
    torch = pytest.importorskip("torch")
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    with pytest.raises(TypeError, match="detach"):
        convcore.conv2d(x, np.ones((1, 1, 3, 3), dtype=np.float32))


def test_strided_torch_tensors_match_torch():
    """Sliced, transposed, expanded and channels-last tensors (read as NCHW) are views;
    the result is torch's own."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 12, 12, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    views = [x[:, :, ::2, 1::2], x.transpose(2, 3), x.to(memory_format=torch.channels_last),
             torch.randn(1, 3, 1, 1, generator=g, dtype=torch.float64).expand(2, 3, 12, 12)]
    for t in views:
        ref = torch.nn.functional.conv2d(t, w, padding=1).numpy()
        np.testing.assert_allclose(convcore.conv2d(t, w, padding=1), ref, rtol=1e-12, atol=1e-12)


def test_torch_negative_view_is_read_with_its_sign():
    torch = pytest.importorskip("torch")
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    neg = x._neg_view()   # lazily negated: DLPack would export the un-negated memory
    assert neg.is_neg()
    y = convcore.conv2d(neg, np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(y, -x.numpy())


def test_torch_tensors_numpy_cannot_read_are_refused_clearly():
    torch = pytest.importorskip("torch")
    w = np.ones((1, 1, 1, 1), dtype=np.float32)
    with pytest.raises(TypeError, match="x must have dtype float32 or float64, got torch.bfloat16"):
        convcore.conv2d(torch.ones(1, 1, 2, 2, dtype=torch.bfloat16), w)
    with pytest.raises(TypeError, match="x must have dtype float32 or float64, got float16"):
        convcore.conv2d(torch.ones(1, 1, 2, 2, dtype=torch.float16), w)
    with pytest.raises(TypeError, match="meta"):
        convcore.conv2d(torch.ones(1, 1, 2, 2, device="meta"), w)
    with pytest.raises(TypeError, match="strided"):
        convcore.conv2d(torch.ones(1, 1, 2, 2).to_sparse(), w)
