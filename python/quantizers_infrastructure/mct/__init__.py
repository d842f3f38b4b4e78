# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""quantizers_infrastructure.mct: MCT Quantizers' public module tree (mct_quantizers 1.6/1.7),
serving qi's classes, for tools written against mct-quantizers (Sony's Model Compression
Toolkit among them).

Nothing here shadows the real package unless asked for:

    import quantizers_infrastructure.mct as qi_mct
    qi_mct.install_as_mct_quantizers()   # before the tool imports mct_quantizers
    import model_compression_toolkit as mct

makes `import mct_quantizers` (and every `mct_quantizers.<module>`) return this tree's modules.
Importing `quantizers_infrastructure.mct` by itself changes nothing. The framework parts
(pytorch, keras, the wrappers and holders) import torch or TensorFlow on first use. What differs
on purpose from mct-quantizers is listed in docs/mct.md."""

import importlib
import importlib.abc
import importlib.machinery
import sys

from quantizers_infrastructure import _core
from quantizers_infrastructure.mct.common import constants  # noqa: F401
from quantizers_infrastructure.mct.common.base_inferable_quantizer import (  # noqa: F401
    BaseInferableQuantizer, QuantizationTarget, mark_quantizer)
from quantizers_infrastructure.mct.common.quant_info import QuantizationMethod  # noqa: F401

# The mct-quantizers release whose API this tree mirrors (model metadata and exported ONNX
# nodes name qi's own version: qi_version).
__version__ = "1.7.0"
qi_version = _core.kVersion

PACKAGE = "mct_quantizers"

# Names of mct_quantizers' top level that need a framework, imported on first access.
_LAZY = {
    "KerasActivationQuantizationHolder": ("keras.activation_quantization_holder", None),
    "KerasQuantizationWrapper": ("keras.quantize_wrapper", None),
    "keras_load_quantized_model": ("keras.load_model", None),
    "keras_quantizers": ("keras.quantizers", ""),
    "PytorchActivationQuantizationHolder": ("pytorch.activation_quantization_holder", None),
    "PytorchFLNActivationQuantizationHolder": ("pytorch.fln_activation_quantization_holder",
                                               None),
    "PytorchPreservingActivationQuantizationHolder": (
        "pytorch.preserving_activation_quantization_holder", None),
    "PytorchQuantizationWrapper": ("pytorch.quantize_wrapper", None),
    "pytorch_load_quantized_model": ("pytorch.load_model", None),
    "pytorch_quantizers": ("pytorch.quantizers", ""),
    "get_ort_session_options": ("pytorch.onnxruntime_session_options", None),
}


def __getattr__(name):
    entry = _LAZY.get(name)
    if entry is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{entry[0]}")
    value = module if entry[1] == "" else getattr(module, name)
    globals()[name] = value
    return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `mct_quantizers.X` as `quantizers_infrastructure.mct.X`: the same module object
    under both names, so classes are never defined twice."""

    def find_spec(self, fullname, path, target=None):
        if fullname != PACKAGE and not fullname.startswith(PACKAGE + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        return importlib.import_module(__name__ + spec.name[len(PACKAGE):])

    def exec_module(self, module):
        pass


_finder = _Finder()


def install_as_mct_quantizers() -> None:
    """Makes `import mct_quantizers...` return this tree, in this process, from now on. Call it
    before anything imports mct_quantizers. ValueError when the real mct_quantizers is already
    imported (its classes would mix with qi's)."""
    current = sys.modules.get(PACKAGE)
    if current is not None and current is not sys.modules[__name__]:
        raise ValueError("install_as_mct_quantizers: the real mct_quantizers is already imported "
                         f"({getattr(current, '__file__', current)}); call it before anything "
                         "imports mct_quantizers")
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    sys.modules[PACKAGE] = sys.modules[__name__]
    for name, module in list(sys.modules.items()):
        if name.startswith(__name__ + "."):
            sys.modules[PACKAGE + name[len(__name__):]] = module


def uninstall_as_mct_quantizers() -> None:
    """Undoes install_as_mct_quantizers (modules that already imported the tree keep it)."""
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        if sys.modules[name].__name__.startswith(__name__):
            del sys.modules[name]


def is_installed() -> bool:
    """True while `mct_quantizers` names this tree."""
    return sys.modules.get(PACKAGE) is sys.modules[__name__]


__all__ = ["BaseInferableQuantizer", "QuantizationTarget", "QuantizationMethod", "mark_quantizer",
           "constants", "install_as_mct_quantizers", "uninstall_as_mct_quantizers",
           "is_installed", "__version__"] + list(_LAZY)
