"""convcore.torch: the autograd functions against torch.nn.functional (values and
gradients, gradcheck in float64), the drop-in modules and convert() on a small CNN,
channels-last memory, state_dicts and the errors for what convcore cannot compute."""
import copy
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cct = pytest.importorskip("convcore.torch")
F = torch.nn.functional
f64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_import_convcore_does_not_import_torch():
    code = "import sys, convcore; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _grads(fn, args, gy):
    leaves = [a.detach().clone().requires_grad_() if a is not None else None for a in args]
    y = fn(*leaves)
    y.backward(gy)
    return y, [a.grad if a is not None else None for a in leaves]


def _assert_close(a, b, tol):
    assert a.shape == b.shape
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=tol, atol=tol)


CONV_CASES = [  # stride, padding, dilation, groups, kernel
    (1, 1, 1, 1, (3, 3)),
    (2, 0, 1, 1, (3, 2)),          # floor output size: 11 and 10 do not fit stride 2
    (1, "same", 2, 1, (3, 2)),
    (1, "valid", 1, 2, (2, 3)),
    ((3, 2), (2, 1), (2, 1), 2, (3, 3)),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("stride, padding, dilation, groups, kernel", CONV_CASES)
def test_conv2d_matches_torch(stride, padding, dilation, groups, kernel, channels_last):
    g = _gen()
    x = torch.randn(2, 4, 11, 10, generator=g, dtype=f64)
    w = torch.randn(6, 4 // groups, *kernel, generator=g, dtype=f64)
    b = torch.randn(6, generator=g, dtype=f64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    ref = F.conv2d(x, w, b, stride, padding, dilation, groups)
    gy = torch.randn(ref.shape, generator=g, dtype=f64)
    y, grads = _grads(lambda *a: cct.conv2d(*a, stride, padding, dilation, groups), (x, w, b), gy)
    y_ref, grads_ref = _grads(lambda *a: F.conv2d(*a, stride, padding, dilation, groups),
                              (x, w, b), gy)
    _assert_close(y, y_ref, 1e-12)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last or y.shape[1] == 1
    for a, r in zip(grads, grads_ref):
        _assert_close(a, r, 1e-12)


TRANSPOSE_CASES = [  # stride, padding, output_padding, dilation, groups
    (1, 0, 0, 1, 1),
    (2, 1, 1, 1, 1),
    (3, 0, 2, 1, 2),       # output_padding beyond the padding: zero rows appended
    (1, 1, 2, 3, 1),       # output_padding >= stride, allowed by the dilation
    ((2, 1), (2, 0), (1, 0), (2, 1), 1),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("stride, padding, output_padding, dilation, groups", TRANSPOSE_CASES)
def test_conv_transpose2d_matches_torch(stride, padding, output_padding, dilation, groups,
                                        channels_last):
    g = _gen(1)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=f64)
    w = torch.randn(4, 6 // groups, 3, 3, generator=g, dtype=f64)
    b = torch.randn(6, generator=g, dtype=f64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    args = (stride, padding, output_padding, groups, dilation)
    ref = F.conv_transpose2d(x, w, b, *args)
    gy = torch.randn(ref.shape, generator=g, dtype=f64)
    y, grads = _grads(lambda *a: cct.conv_transpose2d(*a, *args), (x, w, b), gy)
    y_ref, grads_ref = _grads(lambda *a: F.conv_transpose2d(*a, *args), (x, w, b), gy)
    _assert_close(y, y_ref, 1e-12)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    for a, r in zip(grads, grads_ref):
        _assert_close(a, r, 1e-12)


def _lc_reference(x, w, b, stride, padding):
    """Per-position filters through unfold: y[n, k, i, j] = Σ w[i, j, k, :] · patch."""
    ho, wo, k = w.shape[:3]
    cols = F.unfold(x, w.shape[4:], padding=padding, stride=stride)      # (N, CRS, L)
    cols = cols.view(x.shape[0], -1, ho, wo)
    y = torch.einsum("nqij,ijkq->nkij", cols, w.reshape(ho, wo, k, -1))
    return y if b is None else y + b


@pytest.mark.parametrize("channels_last", [False, True])
def test_locally_connected2d_matches_unfold_reference(channels_last):
    g = _gen(2)
    x = torch.randn(2, 3, 7, 8, generator=g, dtype=f64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = torch.randn(4, 5, 5, 3, 3, 2, generator=g, dtype=f64)   # stride 2, padding 1
    b = torch.randn(5, 4, 5, generator=g, dtype=f64)
    gy = torch.randn(2, 5, 4, 5, generator=g, dtype=f64)
    y, grads = _grads(lambda *a: cct.locally_connected2d(*a, stride=2, padding=1), (x, w, b), gy)
    y_ref, grads_ref = _grads(lambda *a: _lc_reference(*a, 2, 1), (x, w, b), gy)
    _assert_close(y, y_ref, 1e-12)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    for a, r in zip(grads, grads_ref):
        _assert_close(a, r, 1e-12)


def test_gradcheck_every_function():
    g = _gen(3)
    x = torch.randn(2, 4, 6, 5, generator=g, dtype=f64, requires_grad=True)
    w = torch.randn(6, 2, 3, 2, generator=g, dtype=f64, requires_grad=True)
    b = torch.randn(6, generator=g, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: cct.conv2d(x, w, b, stride=2, padding=1, groups=2), (x, w, b))
    xcl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: cct.conv2d(x, w, dilation=(2, 1), groups=2),
                                    (xcl, w))
    wt = torch.randn(4, 3, 3, 3, generator=g, dtype=f64, requires_grad=True)
    bt = torch.randn(6, generator=g, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: cct.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                             groups=2), (x, wt, bt))
    wl = torch.randn(3, 3, 3, 4, 3, 3, generator=g, dtype=f64, requires_grad=True)
    bl = torch.randn(3, 3, 3, generator=g, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: cct.locally_connected2d(x, w, b, stride=2, padding=1), (x, wl, bl))


def test_unbatched_input_and_partial_gradients():
    g = _gen(4)
    x = torch.randn(3, 6, 6, generator=g, dtype=f64)
    w = torch.randn(2, 3, 3, 3, generator=g, dtype=f64, requires_grad=True)
    y = cct.conv2d(x, w, padding=1)          # x needs no gradient: only the weight's
    _assert_close(y, F.conv2d(x, w, padding=1), 1e-12)
    y.sum().backward()
    w2 = w.detach().clone().requires_grad_()
    F.conv2d(x, w2, padding=1).sum().backward()
    _assert_close(w.grad, w2.grad, 1e-12)
    xt = torch.randn(3, 4, 4, generator=g, dtype=f64)
    wt = torch.randn(3, 2, 3, 3, generator=g, dtype=f64)
    _assert_close(cct.conv_transpose2d(xt, wt, stride=2), F.conv_transpose2d(xt, wt, stride=2),
                  1e-12)


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = torch.nn.ConvTranspose2d(16, 4, 4, stride=2, padding=1)
        self.fc = torch.nn.Linear(4 * 12 * 12, 10)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.relu(self.c2(x))
        x = F.relu(self.up(x))
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_converted_cnn_gives_the_same_outputs_and_gradients(dtype, tol, channels_last):
    torch.manual_seed(0)
    ref = SmallCNN().to(dtype)
    model = cct.convert(copy.deepcopy(ref))
    assert isinstance(model.c1, cct.Conv2d) and isinstance(model.up, cct.ConvTranspose2d)
    assert isinstance(model.fc, torch.nn.Linear) and not isinstance(model.fc, cct.Conv2d)
    x = torch.randn(4, 3, 12, 12, dtype=dtype)
    if channels_last:
        ref = ref.to(memory_format=torch.channels_last)
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    target = torch.randint(0, 10, (4,))
    for m in (ref, model):
        F.cross_entropy(m(x), target).backward()
    _assert_close(model(x), ref(x), tol)
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=tol, atol=tol,
                                   err_msg=name)


def test_converted_cnn_trains_like_the_original():
    torch.manual_seed(1)
    ref = SmallCNN().double()
    model = cct.convert(copy.deepcopy(ref))
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (ref, model)]
    x = torch.randn(8, 3, 12, 12, dtype=f64)
    t = torch.randint(0, 10, (8,))
    for _ in range(3):
        for m, opt in zip((ref, model), opts):
            opt.zero_grad()
            F.cross_entropy(m(x), t).backward()
            opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-9, atol=1e-9)


def test_convert_keeps_parameters_hooks_and_sharing():
    shared = torch.nn.Conv2d(2, 2, 3, padding=1)
    net = torch.nn.Sequential(shared, torch.nn.ReLU(), shared,
                              torch.nn.Sequential(torch.nn.ConvTranspose2d(2, 1, 2, stride=2)))
    w = shared.weight
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    calls = []
    shared.register_forward_hook(lambda *a: calls.append(1))
    state = copy.deepcopy(net.state_dict())
    assert cct.convert(net) is net
    assert net[0] is net[2] and type(net[0]) is cct.Conv2d and net[0].weight is w
    assert type(net[3][0]) is cct.ConvTranspose2d
    assert net.state_dict().keys() == state.keys()
    loss = net(torch.randn(1, 2, 5, 5)).sum()
    assert len(calls) == 2
    loss.backward()
    opt.step()   # the optimizer built before convert still holds the live parameters
    assert not torch.equal(net[0].weight, state["0.weight"])
    bare = torch.nn.Conv2d(1, 1, 1)
    assert type(cct.convert(bare)) is cct.Conv2d


def test_convert_leaves_unsupported_modules_with_a_warning_or_raises():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"),
                              torch.nn.Conv2d(1, 1, 3).half(), torch.nn.Conv2d(1, 1, 3))
    with pytest.warns(cct.ConversionWarning) as record:
        cct.convert(net)
    messages = " | ".join(str(r.message) for r in record)
    assert "0 (Conv2d)" in messages and "reflect" in messages
    assert "1 (Conv2d)" in messages and "float16" in messages
    assert type(net[0]) is torch.nn.Conv2d and type(net[1]) is torch.nn.Conv2d
    assert type(net[2]) is cct.Conv2d
    net2 = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.Conv2d(1, 1, 3, padding_mode="circular"))
    with pytest.raises(ValueError, match="circular"):
        cct.convert(net2, strict=True)
    assert type(net2[0]) is torch.nn.Conv2d   # nothing swapped
    with pytest.raises(TypeError, match="torch.nn.Module"):
        cct.convert("model")


def test_modules_are_drop_in():
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(3, 8, (3, 2), stride=2, padding=(1, 0), dilation=1, groups=1)
    m = cct.Conv2d(3, 8, (3, 2), stride=2, padding=(1, 0))
    assert isinstance(m, torch.nn.Conv2d)
    assert m.load_state_dict(ref.state_dict()) is not None
    assert list(m.state_dict()) == ["weight", "bias"]
    x = torch.randn(2, 3, 9, 9)
    _assert_close(m(x), ref(x), 1e-5)
    # reset_parameters is torch's own: the same seed draws the same parameters
    torch.manual_seed(5)
    a = torch.nn.Conv2d(4, 6, 3, groups=2, dtype=f64)
    torch.manual_seed(5)
    b = cct.Conv2d(4, 6, 3, groups=2, dtype=f64)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    torch.manual_seed(5)
    at = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=1, bias=False)
    torch.manual_seed(5)
    bt = cct.ConvTranspose2d(4, 6, 3, stride=2, output_padding=1, bias=False)
    assert torch.equal(at.weight, bt.weight) and bt.bias is None
    xt = torch.randn(1, 4, 5, 5)
    _assert_close(bt(xt), at(xt), 1e-5)
    _assert_close(bt(xt, output_size=(12, 12)), at(xt, output_size=(12, 12)), 1e-5)
    same = cct.Conv2d(2, 2, 4, padding="same", dilation=2, device="cpu", dtype=f64)
    ref_same = torch.nn.Conv2d(2, 2, 4, padding="same", dilation=2, dtype=f64)
    ref_same.load_state_dict(same.state_dict())
    xs = torch.randn(1, 2, 7, 7, dtype=f64)
    _assert_close(same(xs), ref_same(xs), 1e-12)
    meta = cct.Conv2d(2, 2, 3, device="meta")
    assert meta.weight.device.type == "meta"


def test_locally_connected_module():
    torch.manual_seed(0)
    m = cct.LocallyConnected2d(3, 4, 3, input_size=(6, 5), stride=1, padding=1, dtype=f64)
    assert m.output_size == (6, 5)
    assert m.weight.shape == (6, 5, 4, 3, 3, 3) and m.bias.shape == (4, 6, 5)
    bound = 1 / np.sqrt(27)
    assert m.weight.abs().max() <= bound and m.bias.abs().max() <= bound
    x = torch.randn(2, 3, 6, 5, dtype=f64)
    _assert_close(m(x), _lc_reference(x, m.weight, m.bias, 1, 1), 1e-12)
    assert list(m.state_dict()) == ["weight", "bias"]
    assert "input_size=(6, 5)" in repr(m)
    nb = cct.LocallyConnected2d(1, 1, 2, input_size=4, stride=2, bias=False)
    assert nb.bias is None and nb(torch.randn(1, 1, 4, 4)).shape == (1, 1, 2, 2)


def test_bad_inputs_give_clear_errors():
    x = torch.randn(1, 2, 5, 5)
    w = torch.randn(3, 2, 3, 3)
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        cct.conv2d(x.numpy(), w)
    with pytest.raises(TypeError, match="float32 or torch.float64, got torch.float16"):
        cct.conv2d(x.half(), w.half())
    with pytest.raises(TypeError, match="int64"):
        cct.conv2d(torch.ones(1, 2, 5, 5, dtype=torch.int64), w)
    with pytest.raises(TypeError, match="weight has dtype torch.float64 but input"):
        cct.conv2d(x, w.double())
    with pytest.raises(ValueError, match="device meta.*CPU"):
        cct.conv2d(x.to("meta"), w)
    with pytest.raises(ValueError, match="4-D"):
        cct.conv2d(x[0, 0], w)
    with pytest.raises(ValueError, match="channel"):
        cct.conv2d(torch.randn(1, 4, 5, 5), w)
    with pytest.raises(ValueError, match="'same' requires stride 1"):
        cct.conv2d(x, w, stride=2, padding="same")
    with pytest.raises(ValueError, match="output_padding must be smaller"):
        cct.conv_transpose2d(x, torch.randn(2, 3, 3, 3), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="no 'same'"):
        cct.conv_transpose2d(x, torch.randn(2, 3, 3, 3), padding="same")
    with pytest.raises(ValueError, match="input channels"):
        cct.conv_transpose2d(x, torch.randn(3, 3, 3, 3))
    with pytest.raises(ValueError, match="too small"):
        cct.conv_transpose2d(torch.randn(1, 2, 1, 1), torch.randn(2, 1, 1, 1), padding=1)
    with pytest.raises(ValueError, match="device='cuda'.*CPU"):
        cct.Conv2d(2, 3, 3, device="cuda")
    with pytest.raises(ValueError, match="device='cuda:1'"):
        cct.ConvTranspose2d(2, 3, 3, device="cuda:1")
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        cct.Conv2d(2, 3, 3, padding_mode="reflect")
    with pytest.raises(TypeError, match="torch.float16"):
        cct.Conv2d(2, 3, 3, dtype=torch.float16)
    with pytest.raises(TypeError, match="torch.bfloat16"):
        cct.LocallyConnected2d(2, 3, 3, input_size=5, dtype=torch.bfloat16)
    m = cct.Conv2d(2, 3, 3).half()
    with pytest.raises(TypeError, match="float16"):
        m(x.half())
    with pytest.raises(ValueError, match="6-D"):
        cct.locally_connected2d(x, w)
    with pytest.raises(ValueError, match="expected"):
        cct.locally_connected2d(x, torch.randn(2, 2, 3, 2, 3, 3))


def test_docstring_examples_run():
    import doctest
    result = doctest.testmod(cct, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("fn", ["conv2d", "conv_transpose2d", "locally_connected2d"])
def test_calls_autograd_would_not_record_give_the_same_result(fn):
    """With grad mode off (no_grad, inference_mode) or no input requiring grad, the
    wrappers run the forward without autograd.Function: same values as through autograd
    and as torch's own, no graph."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=g)
    if fn == "conv2d":
        w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=g)
        b = torch.randn(4, dtype=torch.float64, generator=g)
        call = lambda x, w, b: cct.conv2d(x, w, b, stride=(1, 2), padding=1)   # noqa: E731
        ref = torch.nn.functional.conv2d(x, w, b, stride=(1, 2), padding=1)
    elif fn == "conv_transpose2d":
        w = torch.randn(3, 4, 3, 3, dtype=torch.float64, generator=g)
        b = torch.randn(4, dtype=torch.float64, generator=g)
        call = lambda x, w, b: cct.conv_transpose2d(x, w, b, stride=2)   # noqa: E731
        ref = torch.nn.functional.conv_transpose2d(x, w, b, stride=2)
    else:
        w = torch.randn(4, 3, 4, 3, 3, 3, dtype=torch.float64, generator=g)  # (Ho, Wo, K, C, R, S)
        b = torch.randn(4, 4, 3, dtype=torch.float64, generator=g)
        call = lambda x, w, b: cct.locally_connected2d(x, w, b)   # noqa: E731
        ref = None
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    y_graph = call(xg, wg, bg)
    assert y_graph.grad_fn is not None
    outs = [call(x, w, b)]
    with torch.no_grad():
        outs.append(call(xg, wg, bg))
    with torch.inference_mode():
        outs.append(call(x, w, b))
    for y in outs:
        assert y.grad_fn is None and not y.requires_grad
        torch.testing.assert_close(y, y_graph.detach(), rtol=0, atol=0)
    if ref is not None:
        torch.testing.assert_close(y_graph.detach(), ref, rtol=1e-12, atol=1e-12)
