# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The documentation: it builds with warnings as errors (Sphinx over docs/ and the Python API,
Doxygen over the C++ headers; docs/build.py, what `scripts/qi docs` runs), every public name of
the Python API is in the generated reference, the guides' Python snippets run, and the index of
examples names every program in examples/ and bench/."""

import importlib
import inspect
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")

# The modules of the API reference (docs/api.md) whose __all__ is the public API, and the names
# of modules whose public API is a subset (the MCT tree mirrors mct-quantizers' names over the
# classes documented in the others).
API_MODULES = ["quantizers_infrastructure", "quantizers_infrastructure.common.calibration",
               "quantizers_infrastructure.common.report", "quantizers_infrastructure.pytorch",
               "quantizers_infrastructure.pytorch.onnx", "quantizers_infrastructure.keras",
               "quantizers_infrastructure.keras.ops"]
MCT_FUNCTIONS = ["install_as_mct_quantizers", "uninstall_as_mct_quantizers", "is_installed"]
# Guides whose Python snippets run, in order, one namespace per page.
GUIDES_RUN = ["index.md", "ptq.md", "qat.md", "export.md"]


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    p = subprocess.run([sys.executable, os.path.join(DOCS, "build.py"), "--out", str(out)],
                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        pytest.fail("the documentation does not build cleanly (warnings are errors):\n" + p.stdout,
                    pytrace=False)
    return out


def test_docs_build_without_warnings(built_docs):
    html = built_docs / "html"
    for page in ["index", "ptq", "qat", "export", "cpp", "numerics", "performance",
                 "adding_a_quantizer", "mct", "whole_model", "api", "examples", "changelog"]:
        assert (html / f"{page}.html").is_file(), page
    # Doxygen's reference: a page per header of the core and of the LibTorch layer.
    headers = sorted(os.listdir(os.path.join(ROOT, "include", "qi"))) + sorted(
        os.listdir(os.path.join(ROOT, "torch", "include", "qi", "torch")))
    missing = [h for h in headers
               if not (html / "cpp" / (h.replace("_", "__").replace(".h", "_8h.html"))).is_file()]
    assert not missing, f"headers without a page in the C++ reference: {missing}"
    assert (html / "cpp" / "classqi_1_1NodeQuantizationDispatcher.html").is_file()
    assert (html / "cpp" / "classqi_1_1torch_1_1TrainableQuantizer.html").is_file()


def _public_names():
    """(module name, exported name, object) for every public name of the Python API."""
    for name in API_MODULES:
        module = importlib.import_module(name)
        for n in module.__all__:
            obj = getattr(module, n)
            if not isinstance(obj, type(sys)) and not n.startswith("__"):
                yield name, n, obj
    mct = importlib.import_module("quantizers_infrastructure.mct")
    for n in MCT_FUNCTIONS:
        yield mct.__name__, n, getattr(mct, n)


def test_every_public_name_is_in_the_api_reference(built_docs):
    from sphinx.util.inventory import InventoryFile
    with open(built_docs / "html" / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", os.path.join)
    documented = set()
    for role, entries in inventory.items():
        if role.startswith("py:"):
            documented.update(entries)
    # A name re-exported by several modules is described once: it counts as documented when the
    # same object is, under any module.
    documented_objects = set()
    for full in documented:
        module, _, attr = full.rpartition(".")
        if module in API_MODULES or module == "quantizers_infrastructure.mct":
            documented_objects.add(id(getattr(importlib.import_module(module), attr, None)))
    missing = [f"{m}.{n}" for m, n, obj in _public_names()
               if f"{m}.{n}" not in documented and id(obj) not in documented_objects]
    assert not missing, f"public names missing from the API reference (docs/api.md): {missing}"
    # ... and each says what it is: a docstring of its own, and one for each public method and
    # property its class defines (a method may take its base class's, as autodoc shows it).
    undocumented = [f"{m}.{n}" for m, n, obj in _public_names()
                    if (callable(obj) or isinstance(obj, type))
                    and not (getattr(obj, "__doc__", None) or "").strip()]
    for m, n, obj in _public_names():
        if isinstance(obj, type) and obj.__module__.startswith("quantizers_infrastructure"):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (
                        callable(member) or isinstance(member, (property, classmethod,
                                                                staticmethod))):
                    continue
                if not (inspect.getdoc(getattr(obj, attr)) or "").strip():
                    undocumented.append(f"{m}.{n}.{attr}")
    assert not undocumented, f"public names without a docstring: {sorted(set(undocumented))}"


def _python_blocks(page):
    with open(os.path.join(DOCS, page), encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.parametrize("page", GUIDES_RUN)
def test_guide_snippets_run(page, tmp_path, monkeypatch):
    blocks = _python_blocks(page)
    assert blocks, f"docs/{page} has no Python snippet"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page[:-3]}"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/{page} (snippet {i + 1})", "exec"), namespace)
        except Exception as e:  # noqa: BLE001  (the snippet's failure, with where it was)
            pytest.fail(f"docs/{page}, snippet {i + 1} failed: {type(e).__name__}: {e}\n{block}",
                        pytrace=False)


def test_examples_index_names_every_program():
    with open(os.path.join(DOCS, "examples.md"), encoding="utf-8") as f:
        text = f.read()
    programs = [f"{d}/{n}" for d in ("examples", "bench") for n in
                sorted(os.listdir(os.path.join(ROOT, d))) if n.endswith((".py", ".cc"))]
    missing = [p for p in programs if f"`{p}`" not in text]
    assert not missing, f"docs/examples.md does not list {missing}"
