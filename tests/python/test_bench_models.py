# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""bench/bench_models.py runs end to end on a small input (its times are not pass/fail
criteria): one row per (front end, call, quantized model), each with its float and folded
baselines, the printed table and the JSON rows agreeing."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def bench(bench_module):
    return bench_module("bench_models")


def test_both_front_ends_run(bench, tmp_path, capsys):
    out = tmp_path / "rows.json"
    rows = bench.main(["--models", "mobilenet_v2", "--size", "32", "--batch", "2",
                       "--keras-batch", "2", "--rounds", "1", "--steps", "1", "--json",
                       str(out)])
    assert [(r["frontend"], r["kind"], r["quantized"]) for r in rows] == [
        (fe, kind, q) for fe in ("torch", "keras")
        for kind, q in [("train step", "prepare_qat w4a8_lsq"), ("inference", "quantize w8a8"),
                        ("inference", "convert(prepare_qat)")]]
    assert all(r["float_s"] > 0 and r["folded_s"] > 0 and r["qi_s"] > 0 for r in rows)
    assert [r["target"] for r in rows] == [1.10] * 3 + [1.25] * 3
    printed = capsys.readouterr().out
    assert "qi/float qi/folded target" in printed
    assert len([line for line in printed.splitlines() if "mobilenet_v2" in line]) == 6
    assert json.loads(out.read_text()) == rows


def test_unknown_model_is_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--models", "vgg16"])
    assert "invalid choice: 'vgg16'" in capsys.readouterr().err
