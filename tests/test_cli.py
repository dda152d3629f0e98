"""python -m convcore: --help describes the options and does not run the demo; --no-bench
runs the worked examples only; bad options fail with a usage message."""
import subprocess
import sys


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "convcore", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_help_describes_and_does_not_run_the_demo():
    res = _run("--help")
    assert res.returncode == 0, res.stderr
    assert "usage: python -m convcore" in res.stdout
    assert "--no-bench" in res.stdout and "summary" in res.stdout
    assert "AlexNet conv1: input" not in res.stdout  # the demo did not run


def test_no_bench_runs_the_worked_examples():
    res = _run("--no-bench")
    assert res.returncode == 0, res.stderr
    assert "105,705,600" in res.stdout and "34,944" in res.stdout
    assert "(4, 4, 2)" in res.stdout
    assert "quick benchmark" not in res.stdout.lower()


def test_bad_option_is_a_usage_error():
    res = _run("--bogus")
    assert res.returncode == 2
    assert "unrecognized arguments: --bogus" in res.stderr
