# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: a parity counter and a stopwatch whose totals are printed at the end of the
run."""

import collections

import pytest

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
