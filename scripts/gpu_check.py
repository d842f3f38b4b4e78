# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The GPU check of qi's CUDA layer, in two halves (docs/cuda.md).

--bundle DIR (on the CPU machine, scripts/qi gpu-bundle): fills DIR (.gpu-deps) with what a GPU
machine without network needs beyond its own python3, torch, nvcc and C++ compiler: pip wheels of
cmake, ninja, pybind11 and pytest (with their dependencies for Python 3.10 to 3.14) and a prefix
with the Highway and nlohmann-json headers, CMake packages and Highway's runtime library, copied
from this machine's Debian packages (libhwy needs glibc 2.14 at most). Under 64 MiB.

--out DIR (on the GPU machine, scripts/qi gpu-check): builds qi with the CUDA layer against the
torch that this python imports and the nvcc it finds (PATH, CUDA_HOME, /usr/local/cuda), for the
GPU's own architecture, into build-gpu; runs tests/python/test_cuda.py and bench/bench_cuda.py;
writes DIR/report.json (versions, every step's status and time, the test counts, the benchmark's
results) and a log per step. Every step has a time limit, so the whole run ends within about
8 minutes; a failed step is reported and the later steps that do not depend on it still run."""

import argparse
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Wheels of the build and test tools, pinned (pybind11 and pytest as requirements.lock pins them,
# pytest's dependencies as pip resolves them for each Python; cmake and ninja: releases that know
# CUDA 13). The Pythons of torch 2.11.
WHEELS = ["cmake==3.31.6", "ninja==1.11.1.4", "pybind11==2.13.6", "pytest==8.3.3",
          # pytest's own on Python 3.10, which pip download leaves out when it runs on 3.11
          "exceptiongroup==1.2.2", "tomli==2.2.1"]
PYTHON_VERSIONS = ["3.10", "3.11", "3.12", "3.13", "3.14"]
# Debian packages whose files make the prefix (headers, CMake packages, Highway's library).
DEBIAN_PACKAGES = ["libhwy-dev", "libhwy1", "nlohmann-json3-dev"]
BUNDLE_LIMIT = 64 << 20


# ---- the bundle (CPU machine) --------------------------------------------------------------------

def bundle(out):
    wheels = os.path.join(out, "wheels")
    prefix = os.path.join(out, "prefix")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(wheels)
    for version in PYTHON_VERSIONS:  # each version's own dependencies (tomli, exceptiongroup)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", wheels,
                        "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                        "--python-version", version, *WHEELS], check=True)
    for package in DEBIAN_PACKAGES:
        files = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True,
                               check=True).stdout.split()
        for f in files:
            if not os.path.isfile(f) or "/share/doc/" in f or "/lintian/" in f:
                continue
            if not f.startswith("/usr/"):
                continue
            dest = os.path.join(prefix, os.path.relpath(f, "/usr"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.islink(f):
                if os.path.lexists(dest):
                    os.remove(dest)
                os.symlink(os.readlink(f), dest)
            else:
                shutil.copy2(f, dest)
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "**"), recursive=True)
               if os.path.isfile(p) and not os.path.islink(p))
    names = sorted(os.listdir(wheels))
    print(f"gpu-bundle: {out}: {len(names)} wheels, the prefix of {', '.join(DEBIAN_PACKAGES)}; "
          f"{size / 2**20:.1f} MiB")
    for n in names:
        print(f"  {n}")
    if size > BUNDLE_LIMIT:
        sys.exit(f"gpu-bundle: {size / 2**20:.1f} MiB is over the 64 MiB a device run carries")


# ---- the check (GPU machine) ---------------------------------------------------------------------

class Report:
    def __init__(self, out):
        self.out = out
        self.data = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": []}
        self.t0 = time.time()

    def left(self, budget):
        return budget - (time.time() - self.t0)

    def run(self, name, cmd, timeout, env=None, cwd=ROOT):
        """Runs cmd with its output in DIR/<name>.log; returns True when it exited 0."""
        log = os.path.join(self.out, f"{name}.log")
        t = time.time()
        step = {"step": name, "command": " ".join(cmd), "log": os.path.basename(log)}
        try:
            with open(log, "w") as f:
                p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                   timeout=max(1, timeout))
            step["returncode"] = p.returncode
        except subprocess.TimeoutExpired:
            step["returncode"] = "timeout"
            step["timeout_s"] = round(timeout)
        step["seconds"] = round(time.time() - t, 1)
        step["ok"] = step["returncode"] == 0
        with open(log) as f:
            step["tail"] = f.read()[-3000:]
        self.data["steps"].append(step)
        self.save()
        print(f"gpu-check: {name}: {'ok' if step['ok'] else 'FAILED'} ({step['seconds']} s)",
              flush=True)
        return step["ok"]

    def save(self):
        self.data["seconds"] = round(time.time() - self.t0, 1)
        with open(os.path.join(self.out, "report.json"), "w") as f:
            json.dump(self.data, f, indent=2)


def find_nvcc():
    candidates = [shutil.which("nvcc")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates += sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True)
    candidates.append(os.path.join(ROOT, ".cuda-tools", "nvidia", "cu13", "bin", "nvcc"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def tool(name, deps_site):
    """A cmake or ninja binary: the machine's own when recent enough, else the bundled wheel's."""
    # The cmake wheel keeps its binary in cmake/data/bin; the ninja wheel's is a data script,
    # which pip --target writes to bin/.
    bundled = [p for p in (os.path.join(deps_site, name, "data", "bin", name),
                           os.path.join(deps_site, "bin", name)) if os.access(p, os.X_OK)]
    found = shutil.which(name)
    if name == "cmake" and found:
        out = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"(\d+)\.(\d+)", out)
        if not m or (int(m.group(1)), int(m.group(2))) < (3, 24):
            found = None  # CUDA architectures "native" and CUDA 13 want a newer CMake
    return found or (bundled[0] if bundled else None)


def install_wheels(report, deps, site):
    """The bundled wheels that this python lacks, into `site` (on PYTHONPATH for the steps)."""
    wheels = os.path.join(deps, "wheels")
    wanted = []
    for module, wheel in (("pybind11", "pybind11"), ("pytest", "pytest")):
        try:
            __import__(module)
        except ImportError:
            wanted.append(wheel)
    if not (shutil.which("ninja")):
        wanted.append("ninja")
    cmake = shutil.which("cmake")
    if not cmake or not tool("cmake", site):
        wanted.append("cmake")
    if not wanted:
        return True
    if not os.path.isdir(wheels):
        report.data["missing"] = wanted
        return False
    return report.run("install-wheels", [sys.executable, "-m", "pip", "install", "--no-index",
                                         "--find-links", wheels, "--target", site, *wanted],
                      120)


def check(out, budget):
    os.makedirs(out, exist_ok=True)
    report = Report(out)
    deps = os.path.join(ROOT, ".gpu-deps")
    site = os.path.join(out, "site-packages")
    import torch  # the machine's own
    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "nproc": os.cpu_count()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
        info["capability"] = "%d%d" % torch.cuda.get_device_capability()
    nvcc = find_nvcc()
    info["nvcc"] = nvcc
    if nvcc:
        info["nvcc_version"] = subprocess.run([nvcc, "--version"], capture_output=True,
                                              text=True).stdout.strip().splitlines()[-1]
    report.data["environment"] = info
    report.save()
    print(f"gpu-check: {json.dumps(info)}", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "python"), site,
                                         env.get("PYTHONPATH", "")])
    prefix = os.path.join(deps, "prefix")
    libdirs = glob.glob(os.path.join(prefix, "lib", "*-linux-gnu")) + [os.path.join(prefix, "lib")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libdirs + [env.get("LD_LIBRARY_PATH", "")])
    os.makedirs(site, exist_ok=True)
    install_wheels(report, deps, site)
    cmake, ninja = tool("cmake", site), tool("ninja", site)
    if not (nvcc and cmake and ninja):
        report.data["error"] = f"missing tools: nvcc={nvcc} cmake={cmake} ninja={ninja}"
        report.save()
        return 1
    pybind11_dir = subprocess.run([sys.executable, "-m", "pybind11", "--cmakedir"], env=env,
                                  capture_output=True, text=True).stdout.strip()
    build = os.path.join(ROOT, "build-gpu")
    args = [cmake, "-S", ROOT, "-B", build, "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
            f"-DPython_EXECUTABLE={sys.executable}", "-DQI_WITH_CUDA=ON", "-DQI_WITH_TF=OFF",
            "-DQI_BUILD_TESTS=OFF", "-DQI_BUILD_BENCHMARKS=OFF", "-DQI_BUILD_EXAMPLES=OFF",
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            f"-DCMAKE_CUDA_ARCHITECTURES={info.get('capability', '90')}",
            f"-Dpybind11_DIR={pybind11_dir}"]
    hwy = glob.glob(os.path.join(prefix, "lib", "*", "cmake", "hwy"))
    if hwy:
        args.append(f"-Dhwy_DIR={hwy[0]}")
    nlohmann = os.path.join(prefix, "share", "cmake", "nlohmann_json")
    if os.path.isdir(nlohmann):
        args.append(f"-Dnlohmann_json_DIR={nlohmann}")
    built = (report.run("configure", args, min(120, report.left(budget)), env=env) and
             report.run("build", [cmake, "--build", build, "-j", str(os.cpu_count() or 8)],
                        min(330, report.left(budget) - 150), env=env))
    if built:
        xml = os.path.join(out, "test_cuda.xml")
        report.run("test_cuda", [sys.executable, "-m", "pytest", "tests/python/test_cuda.py",
                                 "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}"],
                   min(180, report.left(budget) - 60), env=env)
        if os.path.exists(xml):
            suite = ET.parse(xml).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            report.data["tests"] = {k: int(suite.get(k, 0)) for k in
                                    ("tests", "failures", "errors", "skipped")}
        left = report.left(budget)
        bench = [sys.executable, "bench/bench_cuda.py", "--json",
                 os.path.join(out, "bench.json")]
        if left < 200:
            bench.append("--no-compile")
        if left < 120:
            bench += ["--no-qat", "--repeats", "5"]
        report.run("bench_cuda", bench, max(30, left - 10), env=env)
        if os.path.exists(os.path.join(out, "bench.json")):
            with open(os.path.join(out, "bench.json")) as f:
                report.data["bench"] = json.load(f)
    report.data["ok"] = all(s["ok"] for s in report.data["steps"])
    report.save()
    print(f"gpu-check: {'passed' if report.data['ok'] else 'FAILED'}; report "
          f"{os.path.join(out, 'report.json')} ({report.data['seconds']} s)")
    return 0 if report.data["ok"] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--bundle", metavar="DIR", help="prepare the carry folder (CPU machine)")
    group.add_argument("--out", metavar="DIR", help="build, test and benchmark (GPU machine)")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for the whole check")
    args = ap.parse_args()
    if args.bundle:
        bundle(os.path.abspath(args.bundle))
        return 0
    return check(os.path.abspath(args.out), args.budget)


if __name__ == "__main__":
    sys.exit(main())
