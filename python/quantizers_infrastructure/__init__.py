# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""quantizers_infrastructure: fake quantizers for model optimization over qi's C++ core.

    import quantizers_infrastructure as qi
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[2.0], per_channel=False)
    y = q(x)  # x: float32 numpy array

Quantizer objects are framework-neutral; importing this package imports neither torch nor
TensorFlow.
"""

import importlib.util as _importlib_util

if _importlib_util.find_spec("quantizers_infrastructure._core") is None:  # pragma: no cover
    raise ImportError(
        "quantizers_infrastructure._core is not built. Build it with: cmake -S <repo> -B <build> "
        "-DPython_EXECUTABLE=<python> && cmake --build <build> --target _core")
from quantizers_infrastructure import _core  # noqa: E402  (a load error is shown as it is)

del _importlib_util

from quantizers_infrastructure.common import constants
from quantizers_infrastructure.common.base_inferable_quantizer import (
    BaseInferableQuantizer, get_all_subclasses, mark_quantizer, register_input_type,
    register_lazy_frontend)
from quantizers_infrastructure.common.enums import (QuantizationMethod, QuantizationTarget,
                                                    QuantizerID, TrainingMethod, VariableGroup)
from quantizers_infrastructure.common.trainable_configs import (
    TrainableQuantizerActivationConfig, TrainableQuantizerCandidateConfig,
    TrainableQuantizerWeightsConfig)
from quantizers_infrastructure.common.inferable_quantizers import (
    INFERABLE_QUANTIZER_CLASSES, InferableQuantizer, get_inferable_quantizer_class,
    quantizer_from_json)
# Every registered class (generated from the C++ registry), e.g. WeightsSymmetricInferableQuantizer.
globals().update(INFERABLE_QUANTIZER_CLASSES)
from quantizers_infrastructure.common.node_quantization_dispatcher import \
    NodeQuantizationDispatcher
from quantizers_infrastructure.common.model_config import ModelQuantizationConfig
from quantizers_infrastructure.common import calibration
from quantizers_infrastructure import keras_inferable_quantizers, pytorch_inferable_quantizers

__version__ = _core.kVersion

# Torch tensors are handled by the PyTorch front end, imported on first use.
register_lazy_frontend("torch", "quantizers_infrastructure.pytorch")


def _register_torch_ops_with_torch() -> None:
    """qi's torch ops exist whenever torch does: the PyTorch front end (which loads the op
    library) is imported now if torch already is, else right after torch is first imported, so
    that models traced or exported with qi load in a fresh process (torch.jit.load,
    torch.export.load) with no manual torch.ops.load_library. This package itself never imports
    torch."""
    import sys

    def load():
        try:
            import quantizers_infrastructure.pytorch  # noqa: F401
        except ImportError:  # built without the torch layer
            pass

    if "torch" in sys.modules and hasattr(sys.modules["torch"], "ops"):
        load()
        return
    import importlib.abc
    import importlib.machinery

    class _AfterTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "torch":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            exec_module = spec.loader.exec_module

            def exec_then_load(module):
                exec_module(module)
                load()

            spec.loader.exec_module = exec_then_load
            return spec

    sys.meta_path.insert(0, _AfterTorch())


_register_torch_ops_with_torch()
# TensorFlow tensors by the Keras front end (qi's TF ops), imported on first use.
register_lazy_frontend("tensorflow", "quantizers_infrastructure.keras")

# Names served by a framework front end, imported on first access so that `import
# quantizers_infrastructure` imports neither torch nor TensorFlow: name -> module.
_LAZY_ATTRIBUTES = {
    name: "quantizers_infrastructure.pytorch"
    for name in ("PytorchNodeQuantizationDispatcher", "PytorchQuantizationWrapper",
                 "PytorchActivationQuantizationHolder",
                 "PytorchPreservingActivationQuantizationHolder",
                 "PytorchFLNActivationQuantizationHolder", "pytorch_load_quantized_model")
}
_LAZY_ATTRIBUTES.update({
    name: "quantizers_infrastructure.keras"
    for name in ("KerasQuantizationWrapper", "KerasNodeQuantizationDispatcher",
                 "KerasActivationQuantizationHolder", "keras_load_quantized_model")
})


def __getattr__(name):
    module = _LAZY_ATTRIBUTES.get(name)
    if module is None:
        raise AttributeError(f"module 'quantizers_infrastructure' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)


def set_num_threads(n: int) -> None:
    """Caps the threads qi's kernels use at n (n >= 1), in every front end: on numpy arrays and
    TensorFlow tensors qi's own pool runs n threads; in torch ops the kernels run on ATen's
    threads, in chunks for at most n of them.

    Until it is called, qi's kernels in torch ops follow torch.set_num_threads, and elsewhere use
    one thread per core. TensorFlow's tf.config.threading settings do not govern qi's kernels
    (they run inside one TF op); this does. One setting for the process: the numpy, torch and
    TensorFlow paths share one core library."""
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The cap set by set_num_threads; before any, torch's intra-op thread count once the
    PyTorch front end is loaded, else the number of cores."""
    return _core.get_num_threads()


def simd_target_name() -> str:
    """The SIMD target the kernels run on this machine (e.g. "AVX2")."""
    return _core.simd_target_name()


def supported_simd_targets():
    """SIMD targets compiled in and supported on this machine."""
    return _core.supported_simd_targets()


__all__ = [
    "BaseInferableQuantizer", "InferableQuantizer", "mark_quantizer", "get_all_subclasses",
    "QuantizationMethod",
    "QuantizationTarget", "QuantizerID", "TrainingMethod", "VariableGroup",
    "TrainableQuantizerWeightsConfig", "TrainableQuantizerActivationConfig",
    "TrainableQuantizerCandidateConfig", "NodeQuantizationDispatcher",
    "get_inferable_quantizer_class", "quantizer_from_json", "INFERABLE_QUANTIZER_CLASSES",
    "register_input_type", "register_lazy_frontend", "set_num_threads", "get_num_threads",
    "simd_target_name", "supported_simd_targets", "constants", "keras_inferable_quantizers",
    "pytorch_inferable_quantizers", "__version__", "ModelQuantizationConfig", "calibration",
] + list(INFERABLE_QUANTIZER_CLASSES)
