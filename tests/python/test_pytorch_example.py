# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""examples/pytorch_fashion_mnist.py --quick runs end to end (about 20 s on 2 cores): PTQ and QAT
through the Python API, conversion, bit-identical reload, the PNG plot and the JSON table."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


@pytest.mark.skipif(not os.path.exists(DATA), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_example_quick(tmp_path):
    out = tmp_path / "fm"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "pytorch_fashion_mnist.py"),
                          "--quick", "--out", str(out)], capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "fm.json").read_text())
    results = report["results"]
    assert results["reload_identical"] is True
    for key in ("float", "ptq8", "qat4_ste", "qat4_lsq", "qat2_lsq"):
        assert 0.5 < results[key] <= 1.0, (key, results[key])
    assert set(report["layer_errors"]["ptq8"]) == {"0:Conv2d", "3:Conv2d", "7:Linear", "9:Linear"}
    png = (tmp_path / "fm.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
