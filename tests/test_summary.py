"""convcore.summary and `python -m convcore summary`: sizes, parameters with and without
sharing, FLOPs, receptive fields and algorithms layer by layer, each number recomputed here
independently; strides that do not fit reported with their fixes; the command line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import convcore
import reference as ref
from convcore._conv import _algorithms

# AlexNet (one tower, as the notes describe it): (kind, K or None, F, S, P)
ALEXNET = [("conv", 96, 11, 4, 0), ("pool", None, 3, 2, 0), ("conv", 256, 5, 1, 2),
           ("pool", None, 3, 2, 0), ("conv", 384, 3, 1, 1), ("conv", 384, 3, 1, 1),
           ("conv", 256, 3, 1, 1), ("pool", None, 3, 2, 0)]
ALEXNET_TEXT = "96:11/4 pool3/2 256:5p2 pool3/2 384:3p1 384:3p1 256:3p1 pool3/2"


def receptive_fields(stack):
    """Receptive field of one unit after each layer, computed top-down: a window of `rf`
    outputs of a layer of kernel F and stride S covers (rf − 1)·S + F of its inputs."""
    out = []
    for top in range(len(stack)):
        rf = 1
        for _, _, f, s, _ in reversed(stack[:top + 1]):
            rf = (rf - 1) * s + f
        out.append(rf)
    return out


def expected_rows(c, h, stack, n=1):
    """(C, H, params, unshared, flops) after each layer, from the notes' formulas."""
    rows = []
    for kind, k, f, s, p in stack:
        span = h - f + 2 * p
        assert span % s == 0
        h = span // s + 1
        if kind == "conv":
            params = f * f * c * k + k
            unshared = h * h * k * (f * f * c + 1)
            flops = 2 * n * k * h * h * c * f * f
            c = k
        else:
            params = unshared = flops = 0
        rows.append((c, h, params, unshared, flops))
    return rows


def test_alexnet_numbers():
    s = convcore.summary((3, 227, 227), ALEXNET_TEXT)
    assert len(s) == len(ALEXNET) and s.fits
    first = s[0]
    assert first.output_shape == (96, 55, 55)                      # 55×55×96
    assert first.params == 34_944 == convcore.conv2d_num_params(3, 96, 11)
    assert first.params_unshared == 105_705_600 == 55 * 55 * 96 * (11 * 11 * 3 + 1)
    rfs = receptive_fields(ALEXNET)
    assert rfs[:3] == [11, 19, 51]
    for row, (c, h, params, unshared, flops), rf in zip(s, expected_rows(3, 227, ALEXNET),
                                                        rfs):
        assert row.output_shape == (c, h, h)
        assert (row.params, row.params_unshared, row.flops) == (params, unshared, flops)
        assert row.receptive_field == (rf, rf)
        assert row.fits and row.problem is None and not row.fixes
    assert s.output_shape == (256, 6, 6)
    assert s.params == sum(r[2] for r in expected_rows(3, 227, ALEXNET)) == 3_747_200
    assert s.params_unshared == sum(r[3] for r in expected_rows(3, 227, ALEXNET))
    assert s.flops == sum(r[4] for r in expected_rows(3, 227, ALEXNET))
    table = str(s)
    for text in ("55×55×96", "34,944", "105,705,600", "6×6×256"):
        assert text in table


def test_shapes_and_algorithms_agree_with_the_library():
    stack = ["64:7/2p3", "pool3/2p1", "64:3p1", (128, 3, 2, 1), {"out_channels": 128,
             "kernel_size": (3, 1), "padding": (1, 0), "dilation": 2}, "32:1g4"]
    n, shape = 2, (2, 3, 64, 48)
    s = convcore.summary(shape, stack, dtype="float64", shape_rule="crop")
    kw_list = [dict(stride=2, padding=3), None, dict(padding=1), dict(stride=2, padding=1),
               dict(padding=(1, 0), dilation=2), dict(groups=4)]
    kw_list = [None if kw is None else dict(kw, shape_rule="crop") for kw in kw_list]
    wshapes = [(64, 3, 7, 7), None, (64, 64, 3, 3), (128, 64, 3, 3), (128, 128, 3, 1),
               (32, 32, 1, 1)]
    x_shape = shape
    for row, kw, wshape in zip(s, kw_list, wshapes):
        assert row.input_shape == x_shape
        if kw is None:  # 3×3 pool, stride 2, padding 1 along both axes
            h = (x_shape[2] + 2 - 3) // 2 + 1
            w = (x_shape[3] + 2 - 3) // 2 + 1
            assert row.output_shape == (n, x_shape[1], h, w)
        else:
            assert row.output_shape == convcore.conv2d_output_shape(x_shape, wshape, **kw)
            assert row.output_shape == ref.output_shape(x_shape, wshape, **kw)
            assert row.algorithms == _algorithms(x_shape, wshape, dtype="float64", **kw)
            k, cg, r, s_ = wshape
            _, _, ho, wo = row.output_shape
            assert row.params == k * cg * r * s_ + k
            assert row.params_unshared == ho * wo * k * (cg * r * s_ + 1)
            assert row.flops == 2 * n * k * ho * wo * cg * r * s_
        x_shape = row.output_shape
    # dilation 2 on a 3×1 kernel: effective 5×1
    rf_h = [7, 7 + 2 * 2, 11 + 2 * 4, 19 + 2 * 4, 27 + 4 * 8, 59]
    rf_w = [7, 11, 19, 27, 27, 27]
    assert [r.receptive_field for r in s] == list(zip(rf_h, rf_w))
    assert [r.jump for r in s] == [(2, 2), (4, 4), (4, 4), (8, 8), (8, 8), (8, 8)]


def test_a_stride_that_does_not_fit_is_reported_with_fixes():
    s = convcore.summary((3, 224, 224), ALEXNET_TEXT)
    assert not s.fits
    row = s[0]
    assert not row.fits
    assert "(224 − 11 + 0)/4 + 1 = 54.25" in row.problem
    fixes = " ".join(row.fixes)
    assert "pad 3 more rows and columns" in fixes
    assert "227 or 223" in fixes
    assert "stride 1 or 3" in fixes
    # the summary goes on from the 'crop' shape, as PyTorch would compute it
    assert row.output_shape == (96, 54, 54)
    assert row.params == 34_944 and row.params_unshared == 54 * 54 * 96 * 364
    assert all(r.output_shape is not None for r in s)
    assert s[1].output_shape == (96, 26, 26) and not s[1].fits   # (54 − 3)/2 + 1 = 26.5
    # each fix works: the padding, both input sizes, and the strides
    for size, pad, stride in ((224, (1, 2, 1, 2), 4), (227, 0, 4), (223, 0, 4), (224, 0, 1),
                              (224, 0, 3)):
        convcore.conv2d_output_shape((1, 3, size, size), (96, 3, 11, 11), stride=stride,
                                     padding=pad)
    table = str(s)
    assert "54.25" in table and "227 or 223" in table and "!" in table
    padded = convcore.summary((3, 224, 224), ALEXNET_TEXT, continue_as="pad")
    assert padded[0].output_shape == (96, 55, 55)
    assert [r.output_shape for r in padded] == [r.output_shape for r in
                                                convcore.summary((3, 227, 227), ALEXNET_TEXT)]


def test_summary_shapes_match_a_real_forward_pass(rng):
    """The 224 stack run through convcore.conv2d (shape_rule='crop') and a NumPy max-pool
    that floors: every shape the summary reported (it went on as 'crop')."""
    stack = ["4:11/4", "pool3/2", "6:5p2", "pool3/2", "5:3/2"]
    s = convcore.summary((1, 3, 224, 224), stack)
    x = rng.standard_normal((1, 3, 224, 224))
    for row in s:
        if row.kind == "conv":
            k, f, st, p = {"conv 4:11/4": (4, 11, 4, 0), "conv 6:5p2": (6, 5, 1, 2),
                           "conv 5:3/2": (5, 3, 2, 0)}[row.name]
            w = rng.standard_normal((k, x.shape[1], f, f))
            x = convcore.conv2d(x, w, stride=st, padding=p, shape_rule="crop")
        else:
            n, c, h, w_ = x.shape
            ho, wo = (h - 3) // 2 + 1, (w_ - 3) // 2 + 1
            x = np.max([x[:, :, i:i + 2 * ho:2, j:j + 2 * wo:2][:, :, :ho, :wo]
                        for i in range(3) for j in range(3)], axis=0)
        assert row.output_shape == x.shape, row.name


def test_rectangular_misfit_names_each_axis():
    s = convcore.summary((1, 26, 26), ["8:3x5/2x3p1"])
    row = s[0]
    assert "height: (H − F + P)/S + 1 = (26 − 3 + 2)/2 + 1 = 13.5" in row.problem
    assert "width: (W − F + P)/S + 1 = (26 − 5 + 2)/3 + 1 = 8.6667" in row.problem
    fixes = " ".join(row.fixes)
    assert "pad 1 more row (0 before, 1 after), or input height 27 or 25" in fixes
    assert "pad 1 more column (0 before, 1 after), or input width 27 or 24" in fixes
    assert row.output_shape == (8, 13, 8)


def test_crop_and_pad_rules_fit_with_a_note():
    for rule, size in (("crop", 54), ("pad", 55)):
        s = convcore.summary((3, 224, 224), ["96:11/4"], shape_rule=rule)
        assert s.fits and s[0].output_shape == (96, size, size)
        assert "54.25" in s[0].notes[0] and rule in s[0].notes[0]
    s = convcore.summary((3, 224, 224), [{"out_channels": 96, "kernel_size": 11, "stride": 4,
                                          "shape_rule": "pad"}])
    assert s.fits and s[0].output_shape == (96, 55, 55)


def test_a_filter_larger_than_its_input_stops_the_sizing():
    s = convcore.summary((3, 5, 5), ["8:7", "16:3", "pool2"])
    assert s[0].output_shape is None and "larger than the padded input" in s[0].problem
    assert "input height and width of at least 7" in s[0].fixes[0]
    assert s[0].params == 8 * 3 * 49 + 8 and s[1].params == 16 * 8 * 9 + 16
    assert all(r.output_shape is None and not r.fits for r in s)
    assert "earlier layer" in s[1].problem
    assert [r.receptive_field for r in s] == [(7, 7), (9, 9), (10, 10)]
    str(s)


def test_layer_objects_and_spec_forms_agree():
    forms = [
        [convcore.Conv2d(3, 16, 5, stride=2, padding=2, rng=0), convcore.Conv2d(16, 8, 3, rng=0)],
        ["16:5/2p2", "8:3"],
        [(16, 5, 2, 2), (8, 3)],
        [{"out_channels": 16, "kernel_size": 5, "stride": 2, "padding": 2},
         {"out_channels": 8, "kernel_size": 3}],
    ]
    results = [convcore.summary((4, 3, 33, 31), f) for f in forms]
    keys = ("output_shape", "params", "params_unshared", "flops", "receptive_field", "jump",
            "algorithms", "fits")
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert [getattr(a, k) for k in keys] == [getattr(b, k) for k in keys]
    assert results[0][0].params == forms[0][0].num_params


def test_nhwc_layout_and_layer_objects_with_their_own_layout():
    layer = convcore.Conv2d(3, 96, 11, stride=4, layout="NHWC", rng=0)
    s = convcore.summary((227, 227, 3), [layer, "pool3/2"], layout="NHWC")
    assert s[0].output_shape == (55, 55, 96) and s[1].output_shape == (27, 27, 96)
    assert s[0].algorithms == _algorithms((1, 227, 227, 3), layer.weight.shape, stride=4,
                                          layout="NHWC")
    assert convcore.summary("3x227x227", ["96:11/4"], layout="NHWC")[0].output_shape == \
        (55, 55, 96)


def test_channel_mismatch_is_reported_and_the_summary_goes_on():
    s = convcore.summary((3, 32, 32), ["16:3p1", convcore.Conv2d(8, 4, 3, rng=0), "2:1"])
    assert not s[1].fits and "in_channels=8" in s[1].problem and "16 channels" in s[1].problem
    assert s[1].params == 4 * 8 * 9 + 4
    assert s[2].fits and s[2].output_shape == (2, 30, 30)


def test_batch_scales_flops_only():
    one = convcore.summary((3, 227, 227), ["96:11/4"])[0]
    many = convcore.summary((8, 3, 227, 227), ["96:11/4"])[0]
    assert many.flops == 8 * one.flops and many.params == one.params
    assert many.output_shape == (8, 96, 55, 55)


def test_groups_numbers():
    row = convcore.summary((1, 256, 28, 28), ["256:3p1g32", "256:3p1g256"])[0]
    assert row.params == convcore.conv2d_num_params(256, 256, 3, groups=32)
    assert row.params_unshared == 28 * 28 * 256 * (8 * 9 + 1)
    assert row.flops == 2 * 256 * 28 * 28 * 8 * 9


def test_show_prints_the_table(capsys):
    s = convcore.summary((3, 227, 227), ["96:11/4"], show=True)
    printed = capsys.readouterr().out
    assert printed.strip() == str(s) == repr(s)
    lines = str(s).splitlines()
    header = next(line for line in lines if line.startswith("#"))
    row = next(line for line in lines if line.startswith("1 "))
    # right-aligned number columns end under their headers
    assert header.index("params") + len("params") == row.index("34,944") + len("34,944")


@pytest.mark.parametrize("layers,exc,match", [
    (["96:11/x"], ValueError, r"layers\[0\]: cannot read layer '96:11/x'"),
    (["96:11", "pool"], ValueError, r"layers\[1\]: cannot read layer 'pool'"),
    ([{"out_channels": 8}], ValueError, r"layers\[0\]: a conv layer needs 'kernel_size'"),
    ([{"out_channels": 8, "kernel_size": 3, "strides": 2}], ValueError,
     r"layers\[0\]: unknown key\(s\) \['strides'\]"),
    ([{"pool": 2, "groups": 2}], ValueError, r"layers\[0\]: unknown key"),
    ([(8, 0)], ValueError, r"layers\[0\]: kernel_size must be >= 1"),
    ([(8, 3, 2, "same")], ValueError, r"layers\[0\]: padding='same' requires stride 1"),
    (["8:3g3"], ValueError, r"layers\[0\]: groups=3 must divide out_channels=8"),
    ([3.5], TypeError, r"layers\[0\] must be a convcore.Conv2d, ConvTranspose2d or LocallyConnected2d, a string"),
    (42, TypeError, r"layers must be a list"),
])
def test_bad_layer_specs(layers, exc, match):
    with pytest.raises(exc, match=match):
        convcore.summary((3, 32, 32), layers)


@pytest.mark.parametrize("kw,match", [
    (dict(input_shape=(32, 32)), "input_shape must be"),
    (dict(input_shape=(3, 0, 32)), "input_shape must be"),
    (dict(input_shape="3x32"), "input shape must be CxHxW"),
    (dict(layout="CHW"), "layout must be"),
    (dict(dtype="float16"), "dtype must be"),
    (dict(shape_rule="floor"), "shape_rule must be"),
    (dict(continue_as="strict"), "continue_as must be"),
])
def test_bad_arguments(kw, match):
    args = dict(input_shape=(3, 32, 32), layers=["8:3"])
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        convcore.summary(args.pop("input_shape"), args.pop("layers"), **args)


# --- the command line -----------------------------------------------------------------------

def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "convcore", "summary", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_cli_alexnet(tmp_path):
    res = run_cli("3x227x227", *"96:11/4 pool3/2 256:5p2g2 pool3/2 384:3p1 384:3p1g2 256:3p1g2 "
                  "pool3/2".split(), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for text in ("55×55×96", "34,944", "105,705,600", "6×6×256", "2,334,080"):
        assert text in out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:1].isdigit()}
    assert lines["3"].split()[1:4] == ["conv", "256:5p2g2", "27×27×256"]


def test_cli_reports_a_stride_that_does_not_fit(tmp_path):
    res = run_cli("3x224x224", "96:11/4", "pool3/2", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert "(224 − 11 + 0)/4 + 1 = 54.25" in res.stdout
    assert "pad 3 more rows and columns" in res.stdout and "227 or 223" in res.stdout
    assert "54×54×96" in res.stdout and "26×26×96" in res.stdout
    res = run_cli("3x224x224", "96:11/4", "--shape-rule", "pad", cwd=tmp_path)
    assert res.returncode == 0 and "55×55×96" in res.stdout


def test_cli_help_and_errors(tmp_path):
    res = run_cli("--help", cwd=tmp_path)
    assert res.returncode == 0
    assert "python -m convcore summary" in res.stdout and "96:11/4" in res.stdout
    assert "poolF/S" in res.stdout
    res = run_cli("3x227x227", "96:11/y", cwd=tmp_path)
    assert res.returncode == 2 and "cannot read layer '96:11/y'" in res.stderr
    res = run_cli("227x227", "96:11", cwd=tmp_path)
    assert res.returncode == 2 and "CxHxW" in res.stderr


def test_locally_connected_layers_count_their_unshared_parameters():
    lc = convcore.LocallyConnected2d(8, 4, 3, (32, 32), padding=1)
    s = convcore.summary((2, 8, 32, 32), [lc], show=False)
    row = s[0]
    assert row.kind == "lc" and row.fits
    assert row.params == row.params_unshared == lc.num_params == \
        convcore.locally_connected2d_num_params((32, 32), 8, 4, 3, padding=1)
    assert row.output_shape == (2, 4, 32, 32)
    assert row.flops == 2 * 2 * 4 * 32 * 32 * 8 * 9
    assert set(row.algorithms) == {"forward", "backward_data", "backward_weight"}


def test_locally_connected_layer_built_for_another_size_does_not_fit():
    lc = convcore.LocallyConnected2d(3, 4, 3, (30, 30))
    s = convcore.summary((1, 3, 32, 32), [lc], show=False)
    assert not s[0].fits and "input_size=(30, 30)" in s[0].problem
    assert any("input_size=(32, 32)" in f for f in s[0].fixes)
