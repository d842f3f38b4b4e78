# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Runs tests/mct/flows.py for both backends once per session and prints the per-flow table."""

import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FRAMEWORKS = ("torch", "keras")
BACKENDS = ("mctq", "qi")

# (flow, result, max abs diff) in test order, for the summary table.
RESULTS = []


def _run(framework, backend, out, *extra):
    env = dict(os.environ)
    # qi from this checkout, whatever .venv-mct's .pth files say.
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "python"), env.get("PYTHONPATH", "")])
    log = os.path.join(out, f"{framework}.{backend}{'.load' if extra else ''}.log")
    t0 = time.time()
    with open(log, "w") as f:
        subprocess.run([sys.executable, os.path.join(HERE, "flows.py"), framework, backend,
                        os.path.join(out, backend), *extra], env=env, stdout=f,
                       stderr=subprocess.STDOUT, check=False, cwd=ROOT)
    return time.time() - t0


@pytest.fixture(scope="session")
def flow_dir(tmp_path_factory):
    """Every flow on both backends, then each backend loading the other's exported files."""
    out = os.environ.get("QI_MCT_OUT") or str(tmp_path_factory.mktemp("mct"))
    for framework in FRAMEWORKS:
        for backend in BACKENDS:
            _run(framework, backend, out)
        for backend in BACKENDS:
            _run(framework, backend, out, "--load-other")
    return out


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.write_sep("=", "MCT 2.6.1 flows: qi against mct-quantizers")
    tr.write_line(f"{'flow':<42} {'result':<48} {'max abs diff':>12}")
    for flow, result, diff in RESULTS:
        tr.write_line(f"{flow:<42} {result:<48} {diff:>12}")
