# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Builds qi's documentation with warnings as errors: Sphinx (the pages of docs/ and the Python
API reference, autodoc over the built package in python/) into OUT/html, then Doxygen (the C++
API reference of include/qi and torch/include/qi) into OUT/html/cpp.

    python docs/build.py [--out build/docs]

Every warning of either tool is printed and makes the exit status 1. `scripts/qi docs` runs it
after building the package; tests/python/test_docs.py runs it into a temporary folder."""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def version() -> str:
    with open(os.path.join(ROOT, "include", "qi", "version.h"), encoding="utf-8") as f:
        m = re.search(r'kVersion\s*=\s*"([^"]+)"', f.read())
    if m is None:
        raise SystemExit("docs/build.py: include/qi/version.h no longer defines kVersion = \"...\"")
    return m.group(1)


def start(cmd, env):
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(what: str, p, t0: float, warnings_file=None) -> list:
    """Waits for one tool; returns its warnings and errors: the lines of `warnings_file` when
    the tool writes its warnings there (else of its stderr), and its failure with the end of its
    output."""
    stdout, stderr = p.communicate()
    problems = []
    if warnings_file is not None:
        if os.path.exists(warnings_file):
            with open(warnings_file, encoding="utf-8") as f:
                problems = [line.rstrip() for line in f if line.strip()]
    else:
        problems = [line for line in stderr.splitlines() if line.strip()]
    if p.returncode != 0:
        told = bool(problems)  # the warnings say why; otherwise the end of its output does
        problems.append(f"{what} exited with status {p.returncode}: {' '.join(p.args)}")
        if not told:
            problems += [line for line in (stdout + stderr).splitlines()[-30:] if line.strip()]
    print(f"[docs] {what}: done after {time.perf_counter() - t0:.1f} s, {len(problems)} warning lines",
          flush=True)
    return [f"{what}: {line}" for line in problems]


def build(out: str) -> list:
    """Builds both references into `out`, the two tools side by side; returns every warning
    (empty when the build is clean)."""
    html = os.path.join(out, "html")
    for d in (html, os.path.join(out, "doctrees")):
        shutil.rmtree(d, ignore_errors=True)  # a fresh build, so every page's warnings show
    os.makedirs(html)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.join(ROOT, "python")] + [p for p in [env.get("PYTHONPATH")] if p])
    t0 = time.perf_counter()
    problems = []
    doxygen = shutil.which("doxygen")
    if doxygen is None:
        problems.append("doxygen: not installed (scripts/qi setup installs the Debian package)")
    else:
        doxygen = start([doxygen, "docs/Doxyfile"],
                        dict(env, QI_DOCS_OUT=html, QI_VERSION=version()))
    # Sphinx's own warnings go to a file: the libraries autodoc imports may log to stderr.
    warnings_file = os.path.join(out, "sphinx-warnings.txt")
    sphinx = start([sys.executable, "-m", "sphinx", "-b", "html", "-n", "-W", "--keep-going",
                    "-q", "-w", warnings_file, "-d", os.path.join(out, "doctrees"), "docs", html],
                   env)
    problems += finish("sphinx", sphinx, t0, warnings_file)
    if doxygen is not None:
        problems += finish("doxygen", doxygen, t0)
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "docs"),
                    help="output folder (default: build/docs of the checkout)")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    problems = build(out)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"[docs] FAILED: {len(problems)} warning lines (warnings are errors)", file=sys.stderr)
        return 1
    print(f"[docs] HTML: {os.path.join(out, 'html', 'index.html')} (C++ API: "
          f"{os.path.join(out, 'html', 'cpp', 'index.html')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
