# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The pip package: `pip wheel` builds qi's wheel from this checkout (pyproject.toml through
scikit-build-core, against this environment's torch and tensorflow), `pip` installs it into a new
virtual environment, and a program in a folder outside the checkout uses it: a quantizer on a numpy
array, a torch tensor and (when the wheel has the TensorFlow ops) a TensorFlow tensor, and a
wrapped torch model. Every library in the installed package must have only relative RUNPATHs,
resolve its dependencies inside the package (Highway travels in it), in the torch and tensorflow
packages next to it or among the C++ runtime's libraries, and hold no path of this machine.

The new environment gets torch, numpy, tensorflow and the rest without downloading anything: its
site-packages holds symbolic links to this environment's packages (what `pip install` of them
would have put there), except qi's own files. The wheel is built in build-<wheel tag>/ (fixed,
so that a second run is incremental and ccache sees the paths of build/)."""

import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERSION_H = os.path.join(ROOT, "include", "qi", "version.h")
PACKAGE = "quantizers_infrastructure"
# Dependencies outside the wheel that its libraries may have (besides torch's and tensorflow's).
SYSTEM_LIBRARIES = {"libstdc++.so.6", "libgcc_s.so.1", "libc.so.6", "libm.so.6", "libgomp.so.1",
                    "ld-linux-x86-64.so.2", "libpthread.so.0", "libdl.so.2", "librt.so.1"}


def _version_h():
    with open(VERSION_H, encoding="utf-8") as f:
        return re.search(r'kVersion = "([0-9.]+)"', f.read()).group(1)


def _run(cmd, **kwargs):
    r = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-150:])
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{tail}")
    return r.stdout


def _site_packages(python):
    return _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()


def _link_base_packages(base, site):
    """Symbolic links in `site` to every package of `base`, except qi's own files and .pth files
    (the editable install of the checkout is one)."""
    for name in os.listdir(base):
        lowered = name.lower().replace("-", "_")
        if (lowered.startswith((PACKAGE, "_" + PACKAGE, "__editable__")) or name.endswith(".pth")
                or name == "__pycache__" or os.path.lexists(os.path.join(site, name))):
            continue
        os.symlink(os.path.join(base, name), os.path.join(site, name))


@pytest.fixture(scope="module")
def installed(tmp_path_factory, timings):
    """(python of the new environment, its package folder, the wheel's file name)."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ)
    env.setdefault("CCACHE_BASEDIR", ROOT)  # as scripts/qi: the same relative paths as build/
    env.setdefault("CCACHE_NOHASHDIR", "true")
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    # CMake's own choice (scikit-build-core would take Python's, g++): ccache keys on the name.
    env.setdefault("CXX", "c++")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
           "--no-cache-dir", "-w", str(tmp / "dist"), ROOT]
    if os.environ.get("CI") == "true":
        cmd.append("-Ccmake.define.QI_WERROR=ON")  # as build/ in CI, whose objects ccache has
    t0 = time.time()
    _run(cmd, env=env, cwd=tmp)
    timings.add("pip wheel", time.time() - t0)
    wheels = os.listdir(tmp / "dist")
    assert len(wheels) == 1, wheels

    t0 = time.time()
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          str(tmp / "dist" / wheels[0])], cwd=tmp)
    _link_base_packages(_site_packages(sys.executable), _site_packages(python))
    timings.add("new venv + pip install of the wheel", time.time() - t0)
    return python, os.path.join(_site_packages(python), PACKAGE), wheels[0]


def test_wheel_name_and_version(installed):
    _, _, wheel = installed
    assert wheel.startswith(f"quantizers_infrastructure-{_version_h()}-"), wheel


USE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import quantizers_infrastructure as qi
    out = {"file": qi.__file__, "version": qi.__version__}
    # 8-bit signed per tensor, threshold 1: step 1/128, integers [-128, 127].
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False)
    x = np.array([0.3, -1.5, 0.5, 0.99, 0.00390625], np.float32)
    out["numpy"] = q(x).tolist()

    import torch
    import torch.nn.functional as F
    out["torch"] = q(torch.from_numpy(x)).tolist()
    torch.manual_seed(0)
    fc = torch.nn.Linear(16, 4)
    model = torch.nn.Sequential(
        qi.PytorchQuantizationWrapper(fc, qi.PytorchNodeQuantizationDispatcher(q)),
        torch.nn.ReLU()).eval()
    inputs = torch.randn(8, 16)
    with torch.no_grad():
        w = torch.fake_quantize_per_tensor_affine(fc.weight, 1 / 128, 0, -128, 127)
        out["model_equals_fake_quantize"] = bool(torch.equal(
            model(inputs), torch.relu(F.linear(inputs, w, fc.bias))))
    import quantizers_infrastructure.pytorch as qp
    out["torch_library"] = qp.library_path()

    import os
    if os.path.exists(os.path.join(os.path.dirname(qi.__file__), "libqi_tf_ops.so")):
        import tensorflow as tf
        out["tf"] = q(tf.constant(x)).numpy().tolist()
    print(json.dumps(out))
""")


def test_use_from_outside_the_checkout(installed, tmp_path):
    python, package, _ = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = json.loads(_run([python, "-c", USE], cwd=tmp_path, env=env).strip().splitlines()[-1])
    assert out["file"] == os.path.join(package, "__init__.py")
    assert out["version"] == _version_h()
    # 0.3 * 128 = 38.4 -> 38; -1.5 clamps to -128; 0.99 * 128 = 126.72 -> 127; 1/256 is half a
    # step: to even, 0.
    expected = [0.296875, -1.0, 0.5, 0.9921875, 0.0]
    assert out["numpy"] == expected
    assert out["torch"] == expected
    assert out["model_equals_fake_quantize"] is True
    assert out["torch_library"] == os.path.join(package, "libqi_torch.so")
    if os.path.exists(os.path.join(package, "libqi_tf_ops.so")):
        assert out["tf"] == expected


def _libraries(package):
    return sorted(f for f in os.listdir(package) if re.search(r"\.so(\.\d+)*$", f))


def _dynamic(path):
    """{tag: [values]} of an ELF file's dynamic section (NEEDED, RPATH, RUNPATH, SONAME)."""
    tags = {}
    for line in _run(["readelf", "-d", path]).splitlines():
        m = re.search(r"\((NEEDED|RPATH|RUNPATH|SONAME)\)\s+[^\[]*\[(.*)\]", line)
        if m:
            tags.setdefault(m.group(1), []).append(m.group(2))
    return tags


def test_installed_libraries_and_runpaths(installed):
    _, package, _ = installed
    libs = _libraries(package)
    expected = {"libqi_core.so", "libhwy.so.1", "libqi_torch.so"}
    assert expected <= set(libs), libs
    assert any(f.startswith("_core.") for f in libs) and any(f.startswith("_torch_fast.") for f in libs)
    for lib in libs:
        tags = _dynamic(os.path.join(package, lib))
        assert "RPATH" not in tags, (lib, tags)
        runpath = tags.get("RUNPATH", [""])[0].split(":") if "RUNPATH" in tags else []
        assert all(p.startswith("$ORIGIN") for p in runpath), (lib, runpath)
        if lib.startswith(("libqi_torch", "_torch_fast")):
            assert runpath == ["$ORIGIN", "$ORIGIN/../torch/lib"], (lib, runpath)
        elif lib.startswith("libqi_tf_ops"):
            assert runpath == ["$ORIGIN", "$ORIGIN/../tensorflow"], (lib, runpath)
        elif lib != "libhwy.so.1":
            assert runpath == ["$ORIGIN"], (lib, runpath)


def test_ldd_resolves_inside_the_package_torch_tf_or_the_cxx_runtime(installed):
    python, package, _ = installed
    site = os.path.dirname(package)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    for lib in _libraries(package):
        path = os.path.join(package, lib)
        listing = _run(["ldd", path], env=env)
        assert "not found" not in listing, (lib, listing)
        resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", listing, re.M))
        for needed in _dynamic(path).get("NEEDED", []):
            # ld-linux is listed by its path alone; RUNPATH entries keep their "..".
            where = os.path.normpath(resolved.get(needed, needed))
            inside = [os.path.join(site, d) + os.sep for d in (PACKAGE, "torch", "tensorflow")]
            ok = where.startswith(tuple(inside)) or os.path.basename(where) in SYSTEM_LIBRARIES
            assert ok, f"{lib} needs {needed}, found at {where}:\n{listing}"
        if lib == "libqi_core.so":
            assert os.path.normpath(resolved["libhwy.so.1"]) == os.path.join(package, "libhwy.so.1")


def test_no_path_of_the_build_machine_in_the_libraries(installed):
    _, package, _ = installed
    base = sysconfig.get_paths()["purelib"]
    paths = {ROOT, os.path.realpath(ROOT), sys.prefix, os.path.realpath(sys.prefix), base,
             os.path.realpath(base)}
    for lib in _libraries(package):
        with open(os.path.join(package, lib), "rb") as f:
            data = f.read()
        for p in paths:
            assert p.encode() not in data, f"{lib} holds the path {p}"


def test_torch_library_that_does_not_load_is_an_import_error_that_says_why(tmp_path):
    """A torch op library that torch cannot load (built against another torch release) makes
    `import quantizers_infrastructure.pytorch` an ImportError naming the library, the installed
    torch and the remedy."""
    code = textwrap.dedent("""
        import torch
        def refuse(path):
            raise OSError(path + ": undefined symbol: _ZN3c104impl8GPUTrace")
        torch.ops.load_library = refuse
        try:
            import quantizers_infrastructure.pytorch
        except ImportError as e:
            print(str(e))
    """)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    out = _run([sys.executable, "-c", code], cwd=tmp_path, env=env)
    assert re.search(r"libqi_torch\.so does not load with torch \S+ \(.*undefined symbol.*\); qi's "
                     r"torch layer must be built against the installed torch: reinstall qi with "
                     r"pip install --no-build-isolation, or rebuild it \(scripts/qi build\)", out), out
