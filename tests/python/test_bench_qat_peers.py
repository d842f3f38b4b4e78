# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""bench/bench_qat_peers.py --quick --libs qi runs end to end (about 15-30 s on 2 cores) and
prints its table: the float baseline and qi's three QAT configs. Only that it runs is checked:
its accuracies after a few dozen steps and its step times are not pass/fail criteria (the peers
need .venv-bench: scripts/qi bench peers)."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
# A result row: library, config, then an accuracy or "failed at step N: ..." (a run whose
# training raised is reported, not a test failure: this test checks only that the table comes).
ROW = re.compile(r"^\| ([\w-]+) \| (\S+) \| "
                 r"(\d+\.\d\d \| \d+\.\d \| \d+\.\d\d|failed at .* \| - \| -) "
                 r"\| \d+\.\d\d \| (\d+|-) \|$")


@pytest.mark.skipif(not os.path.exists(DATA), reason="dataset-fashion-mnist is not installed")
def test_bench_qat_peers_quick_qi(tmp_path):
    out = tmp_path / "peers.json"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_qat_peers.py"),
                          "--quick", "--libs", "qi", "--json", str(out), "--qi-weights",
                          '{"calibration": "minmax"}'],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert "| library | config | test accuracy % | ms / step | step / float step | prepare s | " \
           "training s |" in lines, run.stdout
    rows = [ROW.match(line).groups()[:2] for line in lines if ROW.match(line)]
    assert rows == [("float", "-"), ("qi", "w4a8"), ("qi", "w4a4"), ("qi", "w2a2")], run.stdout
    assert any(line.startswith("total run time: ") for line in lines), run.stdout
    assert out.exists()


def test_bench_qat_peers_refuses_a_missing_library():
    """A library that is not importable stops the run with a message naming it and the command
    that installs it (the environment here has no Brevitas unless it is .venv-bench)."""
    try:
        import brevitas  # noqa: F401
        pytest.skip("brevitas is importable here")
    except ImportError:
        pass
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_qat_peers.py"),
                          "--quick", "--libs", "brevitas"], capture_output=True, text=True,
                         timeout=120,
                         env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")))
    assert run.returncode != 0
    assert "brevitas is not importable here" in run.stderr
    assert "scripts/qi bench peers" in run.stderr


def test_bench_qat_peers_refuses_a_bad_qi_weights_change():
    """--qi-weights is checked against the config before anything trains."""
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_qat_peers.py"),
                          "--quick", "--libs", "qi", "--qi-weights",
                          '{"calibration": "bogus"}'], capture_output=True, text=True,
                         timeout=120,
                         env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")))
    assert run.returncode != 0
    assert ('--qi-weights: model config: weights: "calibration": unknown calibration method '
            '"bogus"') in run.stderr


@pytest.mark.skipif(not os.path.exists(DATA), reason="dataset-fashion-mnist is not installed")
def test_bench_qat_peers_timing_mode_prints_its_table():
    """--timing (step times only, the models taking turns) prints one row per config."""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_qat_peers.py"),
                          "--quick", "--timing", "--libs", "qi", "--rounds", "1",
                          "--round-steps", "2"], capture_output=True, text=True, timeout=600,
                         env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert "| config | float ms / step (x float) | qi ms / step (x float) |" in lines, run.stdout
    rows = [line.split(" | ")[0] for line in lines if re.match(r"^\| w\da\d \| ", line)]
    assert rows == ["| w4a8", "| w4a4", "| w2a2"], run.stdout
