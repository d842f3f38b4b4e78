# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""bench/bench_formats.py runs end to end on tiny tensors and prints one row per format, each
bit-exact with the tests' reference (its times are not pass/fail criteria); the
torch.compile'd reference runs for one format; bad shapes are refused."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchao")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "bench_formats.py")
FORMATS = ["INT4 g32", "INT8 g128", "FP8 E4M3", "FP8 E5M2", "FP6 E3M2", "FP6 E2M3", "FP4 E2M1",
           "MXFP8 E4M3", "MXFP8 E5M2", "MXFP6 E3M2", "MXFP6 E2M3", "MXFP4 E2M1", "MXINT8", "NVFP4"]
NUMBER = r"\d+\.\d+"
ROW = re.compile(rf"^\| ([\w ]+) \| (\d+x\d+) \| (\d+) \| {NUMBER} \| {NUMBER} \| {NUMBER} \| "
                 rf"{NUMBER} \| ({NUMBER}|-) \| ({NUMBER}|-) \| (yes|NO)(, yes|, NO)? \|$")


def run(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    return subprocess.run([sys.executable, SCRIPT, "--repeats", "1", "--threads", "1", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def rows(stdout):
    return [ROW.match(line).groups() for line in stdout.splitlines() if ROW.match(line)]


def test_every_format_runs_and_equals_its_reference(tmp_path):
    out = tmp_path / "rows.json"
    p = run("--shapes", "2x128", "4x256", "--no-compile", "--json", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    got = rows(p.stdout)
    assert [(r[0], r[1]) for r in got] == [(f, s) for s in ("2x128", "4x256") for f in FORMATS], \
        p.stdout
    assert all(r[3] == "-" and r[4] == "-" and r[5] == "yes" and r[6] is None for r in got), \
        p.stdout
    assert p.stdout.startswith("machine: ") and out.exists()


def test_compiled_reference():
    p = run("--shapes", "2x128", "--formats", "FP8 E5M2")
    assert p.returncode == 0, p.stderr[-3000:]
    (row,) = rows(p.stdout)
    assert row[0] == "FP8 E5M2" and row[3] != "-" and row[5:] == ("yes", ", yes"), p.stdout


@pytest.mark.parametrize("shape,message", [
    ("4x100", "ROWS must be >= 1 and COLS a multiple of 128 \\(the largest group\\), got '4x100'"),
    ("4by128", "a shape is ROWSxCOLS, got '4by128'"),
])
def test_bad_shape(shape, message):
    p = run("--shapes", shape, "--no-compile")
    assert p.returncode == 2
    assert re.search(message, p.stderr), p.stderr
