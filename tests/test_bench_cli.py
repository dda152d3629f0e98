"""python -m convcore.bench: --help, the progress column, the spread beside each median and
the flag on untrustworthy ratios, --plot (with matplotlib), --layer-calls. Timings are not
asserted (performance is a benchmark, never a test): only the report's form."""
import json
import os
import re
import subprocess
import sys

import pytest


def _bench(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "convcore.bench", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_help_describes_the_options():
    res = _bench("--help")
    assert res.returncode == 0, res.stderr
    for opt in ("--threads", "--layout", "--suite", "--plot", "--layer-calls", "--gemm",
                "--algorithm", "--prepacked"):
        assert opt in res.stdout


def test_rows_show_progress_spread_and_flags(tmp_path):
    out = tmp_path / "r.json"
    res = _bench("--layers", "seed_numpy_example", "--passes", "fwd,bwd_data", "--repeat", "3",
                 "--no-torch", "--threads", "1", "--json", str(out))
    assert res.returncode == 0, res.stderr
    rows = [l for l in res.stdout.splitlines() if re.match(r"\s*\d+/2 ", l)]
    assert [l.split()[0] for l in rows] == ["1/2", "2/2"]
    assert all(re.search(r"\d+\.\d+\s+\d+%", l) for l in rows)   # median, then spread
    doc = json.loads(out.read_text())
    for row in doc["rows"]:
        for name in ("convcore", "numpy"):
            r = row["results"][name]
            assert r["gflops_min"] <= r["gflops"] <= r["gflops_max"]
            assert r["noisy"] == (r["samples"] > 1 and r["spread"] > 0.30)
        flagged = row["noisy"]["numpy"]
        line = rows[doc["rows"].index(row)]
        assert line.rstrip().endswith("!") == flagged


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "suite.png"
    res = _bench("--layers", "seed_numpy_example", "--passes", "fwd", "--repeat", "1",
                 "--no-torch", "--threads", "1", "--plot", str(png))
    assert res.returncode == 0, res.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_only_with_the_layer_suite():
    res = _bench("--gemm", "--plot", "x.png")
    assert res.returncode == 2 and "--plot applies to the layer suite" in res.stderr


def test_family_transposed(tmp_path):
    out = tmp_path / "t.json"
    res = _bench("--family", "transposed", "--layers", "k4", "--batch", "1", "--passes",
                 "fwd,bwd_weight", "--repeat", "1", "--no-torch", "--threads", "1",
                 "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "convT_s2_k4_256to128" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["mode"] == "transposed"
    assert [r["pass"] for r in doc["rows"]] == ["fwd", "bwd_weight"]


def test_winograd_rows_report_the_forward_error(tmp_path):
    out = tmp_path / "w.json"
    res = _bench("--algorithm", "winograd", "--prepacked", "--layers", "deep,seed_numpy",
                 "--passes", "fwd", "--batch", "1", "--repeat", "1", "--no-torch",
                 "--threads", "1", "--json", str(out))
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    assert doc["algorithm"] == "winograd" and doc["prepacked"]
    # seed_numpy_example (5×5, stride 2) is not a Winograd layer: left out.
    assert [r["layer"]["name"] for r in doc["rows"]] == ["deep_3x3_c512_7x7"]
    assert 0 < doc["rows"][0]["fwd_rel_error"] < 1e-4
    assert "fwd err" in res.stdout


def test_winograd_needs_a_3x3_stride1_layer():
    res = _bench("--algorithm", "winograd", "--layers", "seed_numpy_example")
    assert res.returncode == 2 and "no 3×3 stride-1 layer" in res.stderr


def test_real_suite_is_shipped(tmp_path):
    """`--suite real` resolves to the packaged layer file and runs its layers."""
    out = tmp_path / "r.json"
    res = _bench("--suite", "real", "--layers", "batch1_3x3,speech_5x10", "--batch", "1",
                 "--passes", "fwd", "--repeat", "1", "--no-torch", "--no-numpy",
                 "--threads", "1", "--json", str(out))
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    assert doc["layer_file"] == "real"
    assert [r["layer"]["name"] for r in doc["rows"]] == ["speech_5x10_s2_c32",
                                                         "batch1_3x3_c256_14x14"]
