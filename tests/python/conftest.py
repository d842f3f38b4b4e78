# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: a parity counter and a stopwatch whose totals are printed at the end of the
run."""

import collections
import importlib
import importlib.util
import os
import sys

import pytest

# onnxruntime-extensions holds one kernel per custom op type. MCT Quantizers registers its ONNX
# kernels when its PyTorch quantizers are imported; qi's register_ort_kernels() replaces those
# when it runs later, but an import of MCT Quantizers after it makes onnxruntime refuse every
# session ("Conflicting with a registered kernel"). Tests import both in any order (one file's
# order would make another's ONNX test fail), so the suite imports MCT Quantizers first, as a
# program that uses both does. (qi itself never imports it: see test_mct_compat.)
if importlib.util.find_spec("mct_quantizers") is not None:
    try:
        import mct_quantizers.pytorch.quantizers  # noqa: F401
    except ImportError:  # no torch or onnxruntime-extensions: no kernels to order
        pass

_PARITY = collections.OrderedDict()  # suite -> [inputs compared, mismatches]


class ParityStats:
    """Counts compared elements and bit mismatches per parity suite."""

    def add(self, suite: str, compared: int, mismatches: int) -> None:
        totals = _PARITY.setdefault(suite, [0, 0])
        totals[0] += int(compared)
        totals[1] += int(mismatches)


@pytest.fixture(scope="session")
def parity_stats():
    return ParityStats()


@pytest.fixture(scope="session")
def bench_module():
    """load(name): the module of the script bench/<name>.py (imported once, by name)."""
    bench_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "bench")

    def load(name: str):
        sys.path.insert(0, bench_dir)
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(bench_dir)
    return load


_TIMINGS = collections.OrderedDict()  # step -> seconds


class Timings:
    """Wall time of slow set-up steps (e.g. building the wheel), reported, never checked."""

    def add(self, step: str, seconds: float) -> None:
        _TIMINGS[step] = _TIMINGS.get(step, 0.0) + seconds


@pytest.fixture(scope="session")
def timings():
    return Timings()


def pytest_terminal_summary(terminalreporter):
    if _TIMINGS:
        terminalreporter.section("qi timings")
        for step, seconds in _TIMINGS.items():
            terminalreporter.write_line(f"{step}: {seconds:.1f} s")
    if not _PARITY:
        return
    terminalreporter.section("qi parity totals")
    for suite, (compared, mismatches) in _PARITY.items():
        terminalreporter.write_line(f"{suite}: {compared} inputs compared, {mismatches} mismatches")
