# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""bench/bench_formats.py runs end to end on tiny tensors (in this process, to stay fast) and
prints one row per format, each bit-exact with the tests' reference (its times are not pass/fail
criteria); the torch.compile'd reference runs (with the eager backend, which traces without
inductor's compilation); bad shapes are refused."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchao")

FORMATS = ["INT4 g32", "INT8 g128", "FP8 E4M3", "FP8 E5M2", "FP6 E3M2", "FP6 E2M3", "FP4 E2M1",
           "MXFP8 E4M3", "MXFP8 E5M2", "MXFP6 E3M2", "MXFP6 E2M3", "MXFP4 E2M1", "MXINT8", "NVFP4"]


@pytest.fixture(scope="module")
def bench(bench_module):
    return bench_module("bench_formats")


def test_every_format_runs_and_equals_its_reference(bench, tmp_path, capsys):
    out = tmp_path / "rows.json"
    rows = bench.main(["--shapes", "2x128", "4x256", "--repeats", "1", "--threads", "1",
                       "--no-compile", "--json", str(out)])
    assert [(r["format"], r["shape"]) for r in rows] == [
        (f, s) for s in ("2x128", "4x256") for f in FORMATS]
    assert all(r["exact"] and r["compiled_s"] is None and r["qi_s"] > 0 and r["ref_s"] > 0
               for r in rows)
    printed = capsys.readouterr().out
    assert printed.startswith("machine: ")
    assert "| format | shape | threads | q(x) ms | qi/clone | out/copy_ | ref/qi | compiled/qi | " \
           "compile s | exact |" in printed
    assert printed.count(" | yes |") == len(rows)
    assert len(json.loads(out.read_text())["rows"]) == len(rows)


def test_compiled_reference(bench, capsys):
    rows = bench.main(["--shapes", "2x128", "--repeats", "1", "--threads", "1", "--formats",
                       "FP8 E5M2", "MXINT8", "--compile-backend", "eager"])
    assert [r["format"] for r in rows] == ["FP8 E5M2", "MXINT8"]
    assert all(r["exact"] and r["exact_compiled"] and r["compiled_s"] > 0 for r in rows)
    assert capsys.readouterr().out.count(" | yes, yes |") == 2


@pytest.mark.parametrize("shape,message", [
    ("4x100", "ROWS must be >= 1 and COLS a multiple of 128 (the largest group), got '4x100'"),
    ("4by128", "a shape is ROWSxCOLS, got '4by128'"),
])
def test_bad_shape(bench, shape, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--shapes", shape])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
