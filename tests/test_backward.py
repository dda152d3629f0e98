"""conv2d_backward, conv2d_backward_input and conv2d_backward_weight against the float64
reference, on every ISA path."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import convcore
import reference as ref
from strategies import problems


@given(p=problems())
def test_backward_all_grads_match_reference(isa, p):
    x, w, _ = p.arrays()
    dy = p.grad_output()
    grads = convcore.conv2d_backward(dy, x, w, bias=p.bias, **p.kw)
    assert isinstance(grads, convcore.Conv2dGrads)
    assert grads.input.shape == x.shape and grads.input.dtype == p.dtype
    assert grads.weight.shape == w.shape and grads.weight.dtype == p.dtype
    ref.check_backward_input(grads.input, dy, w, x.shape, dtype=p.dtype,
                             what=f"grad input {p}", **p.kw)
    ref.check_backward_weight(grads.weight, dy, x, w.shape, dtype=p.dtype,
                              what=f"grad weight {p}", **p.kw)
    if p.bias:
        assert grads.bias.shape == (p.out_channels,) and grads.bias.dtype == p.dtype
        ref.check_backward_bias(grads.bias, dy, p.layout, dtype=p.dtype, what=f"grad bias {p}")
    else:
        assert grads.bias is None
    # The named-tuple fields are also positional.
    gi, gw, gb = grads
    assert gi is grads.input and gw is grads.weight and gb is grads.bias


@given(p=problems())
def test_backward_input_matches_reference(isa, p):
    _, w, _ = p.arrays()
    dy = p.grad_output()
    dx = convcore.conv2d_backward_input(dy, w, p.x_shape, **p.kw)
    assert dx.shape == p.x_shape and dx.dtype == p.dtype
    ref.check_backward_input(dx, dy, w, p.x_shape, dtype=p.dtype, what=f"backward_input {p}",
                             **p.kw)


@given(p=problems())
def test_backward_weight_matches_reference(isa, p):
    x, _, _ = p.arrays()
    dy = p.grad_output()
    dw = convcore.conv2d_backward_weight(dy, x, p.w_shape, **p.kw)
    assert dw.shape == p.w_shape and dw.dtype == p.dtype
    ref.check_backward_weight(dw, dy, x, p.w_shape, dtype=p.dtype,
                              what=f"backward_weight {p}", **p.kw)


@given(p=problems(max_hw=8))
def test_separate_passes_equal_combined(p):
    """conv2d_backward's input/weight grads are the ones the separate functions give."""
    x, w, _ = p.arrays()
    dy = p.grad_output()
    grads = convcore.conv2d_backward(dy, x, w, bias=False, **p.kw)
    assert grads.bias is None
    np.testing.assert_array_equal(grads.input,
                                  convcore.conv2d_backward_input(dy, w, x.shape, **p.kw))
    np.testing.assert_array_equal(grads.weight,
                                  convcore.conv2d_backward_weight(dy, x, w.shape, **p.kw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_backward_bias_is_sum_over_images_and_positions(isa, dtype, layout, rng):
    x_shape = (3, 4, 9, 7) if layout == "NCHW" else (3, 9, 7, 4)
    w_shape = (5, 4, 2, 2) if layout == "NCHW" else (5, 2, 2, 4)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    dy = rng.standard_normal(convcore.conv2d_output_shape(x_shape, w_shape, layout=layout)).astype(dtype)
    grads = convcore.conv2d_backward(dy, x, w, layout=layout)
    axes = (0, 2, 3) if layout == "NCHW" else (0, 1, 2)
    ref.assert_close(grads.bias, dy.astype(np.float64).sum(axis=axes), dtype)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_backward_accepts_list_shapes(layout, rng):
    x_shape = (2, 3, 6, 6) if layout == "NCHW" else (2, 6, 6, 3)
    w_shape = (4, 3, 3, 3)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    dy = rng.standard_normal(convcore.conv2d_output_shape(x_shape, w_shape, layout=layout))
    dx = convcore.conv2d_backward_input(dy, w, list(x_shape), layout=layout)
    dw = convcore.conv2d_backward_weight(dy, x, list(w_shape), layout=layout)
    ref.assert_close(dx, ref.conv2d_backward_input(dy, w, x_shape, layout=layout))
    ref.assert_close(dw, ref.conv2d_backward_weight(dy, x, w_shape, layout=layout))
