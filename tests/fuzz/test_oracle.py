"""The fuzzer's oracle (oracle.py, loops over real taps only) agrees with reference.py (dense
padded loops) wherever both can run, including padding larger than the kernel and strides
and dilations that skip whole rows."""
import numpy as np
import pytest

import reference as ref
import oracle

pytestmark = pytest.mark.fuzz



@pytest.mark.parametrize("seed", range(40))
def test_oracle_matches_reference(seed):
    rng = np.random.default_rng(seed)
    g = int(rng.integers(1, 3))
    n, cg, kg = (int(v) for v in rng.integers(1, 4, 3))
    r, s = (int(v) for v in rng.integers(1, 4, 2))
    kw = dict(stride=tuple(int(v) for v in rng.integers(1, 4, 2)),
              dilation=tuple(int(v) for v in rng.integers(1, 5, 2)),
              padding=tuple(int(v) for v in rng.integers(0, 9, 4)), groups=g,
              layout=str(rng.choice(["NCHW", "NHWC"])), shape_rule=str(rng.choice(["crop", "pad"])))
    h, w = (int(v) for v in rng.integers(1, 10, 2))
    xs = (n, cg * g, h, w) if kw["layout"] == "NCHW" else (n, h, w, cg * g)
    ws = (kg * g, cg, r, s) if kw["layout"] == "NCHW" else (kg * g, r, s, cg)
    try:
        geo = ref.Geometry(xs, ws, **kw)
    except ref.RefShapeError:
        pytest.skip("does not fit")
    x = rng.standard_normal(xs)
    wt = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    dy = rng.standard_normal(geo.out_shape())
    got = geo.act_out(oracle.forward(geo, geo.act_in(x), geo.w_in(wt), b))
    np.testing.assert_allclose(got, ref.conv2d(x, wt, b, **kw), rtol=1e-12, atol=1e-12)
    got = geo.act_out(oracle.backward_input(geo, geo.act_in(dy), geo.w_in(wt)))
    np.testing.assert_allclose(got, ref.conv2d_backward_input(dy, wt, xs, **kw), rtol=1e-12, atol=1e-12)
    got = geo.w_out(oracle.backward_weight(geo, geo.act_in(dy), geo.act_in(x)))
    np.testing.assert_allclose(got, ref.conv2d_backward_weight(dy, x, ws, **kw), rtol=1e-12, atol=1e-12)


def test_oracle_huge_hyperparameters_cost_nothing():
    """dilation 2**59 and padding 2**59 (a reported crash): one real tap, instantly."""
    geo = ref.Geometry((1, 1, 1, 1), (1, 1, 2, 1), dilation=(2**59, 1), padding=(0, 2**59, 0, 31))
    y = oracle.forward(geo, np.ones((1, 1, 1, 1)), np.ones((1, 1, 2, 1)), None)
    assert y.shape == (1, 1, 1, 32)
    assert y[0, 0, 0, 0] == 1 and y.sum() == 1 and oracle.work(geo) <= 2


@pytest.mark.parametrize("seed", range(20))
def test_lc_oracle_matches_dense_reference(seed):
    """The locally-connected oracle against tests/test_locally_connected.py's dense loops."""
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from test_locally_connected import ref_backward, ref_forward
    rng = np.random.default_rng(seed)
    n, c, k = (int(v) for v in rng.integers(1, 4, 3))
    r, s = (int(v) for v in rng.integers(1, 4, 2))
    layout = str(rng.choice(["NCHW", "NHWC"]))
    kw = dict(stride=tuple(int(v) for v in rng.integers(1, 4, 2)),
              padding=tuple(int(v) for v in rng.integers(0, 4, 4)), layout=layout,
              shape_rule=str(rng.choice(["crop", "pad"])))
    h, w = (int(v) for v in rng.integers(1, 8, 2))
    xs = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    cws = (k, c, r, s) if layout == "NCHW" else (k, r, s, c)
    try:
        geo = ref.Geometry(xs, cws, **kw)
    except ref.RefShapeError:
        pytest.skip("does not fit")
    ws = (geo.Ho, geo.Wo) + cws[:1] + ((c, r, s) if layout == "NCHW" else (r, s, c))
    x, wt = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal((k, geo.Ho, geo.Wo) if layout == "NCHW" else (geo.Ho, geo.Wo, k))
    dy = rng.standard_normal(geo.out_shape())
    got = geo.act_out(oracle.lc_forward(geo, geo.act_in(x), oracle.lc_w_in(geo, wt),
                                        oracle.lc_b_in(geo, b)))
    np.testing.assert_allclose(got, ref_forward(x, wt, b, **kw), rtol=1e-12, atol=1e-12)
    rdx, rdw, _ = ref_backward(dy, x, wt, **kw)
    got = geo.act_out(oracle.lc_backward_input(geo, geo.act_in(dy), oracle.lc_w_in(geo, wt)))
    np.testing.assert_allclose(got, rdx, rtol=1e-12, atol=1e-12)
    got = oracle.lc_w_out(geo, oracle.lc_backward_weight(geo, geo.act_in(dy), geo.act_in(x)))
    np.testing.assert_allclose(got, rdw, rtol=1e-12, atol=1e-12)


def test_lc_oracle_huge_hyperparameters_cost_nothing():
    """stride 2**62 and padding 2**40 on a 1×1 image: one output position with a real tap."""
    geo = ref.Geometry((1, 1, 1, 1), (1, 1, 1, 1), stride=(2**62, 1), padding=(2**40, 0, 0, 0),
                       shape_rule="crop")
    w = np.ones((geo.Ho, geo.Wo, 1, 1, 1, 1))
    y = oracle.lc_forward(geo, np.ones((1, 1, 1, 1)), w, None)
    assert y.shape == (1, 1, geo.Ho, 1) and y.sum() == 0 and oracle.work(geo) <= 1
