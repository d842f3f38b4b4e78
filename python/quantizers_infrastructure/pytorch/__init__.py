# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The PyTorch front end: loads qi's operator library (libqi_torch.so, TORCH_LIBRARY(qi)) so that
torch.ops.qi.* exist (with their fake kernels, for torch.compile and torch.export), and makes
every framework-neutral quantizer callable on torch tensors. Imported on the first call with a
torch tensor, on `import quantizers_infrastructure` when torch is already imported, or
explicitly."""

import os

import torch

from quantizers_infrastructure.common.base_inferable_quantizer import register_input_type

_LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "libqi_torch.so")
if not os.path.exists(_LIBRARY):
    raise ImportError(f"qi's torch operator library is not built ({_LIBRARY} is missing); "
                      "run scripts/qi build")
try:
    torch.ops.load_library(_LIBRARY)
except OSError as e:  # e.g. built against another torch release: LibTorch's C++ ABI differs
    raise ImportError(f"{_LIBRARY} does not load with torch {torch.__version__} ({e}); qi's torch "
                      "layer must be built against the installed torch: reinstall qi with pip "
                      "install --no-build-isolation, or rebuild it (scripts/qi build)") from e

# The CUDA kernels of the same ops (libqi_torch_cuda.so, built with QI_WITH_CUDA: docs/cuda.md),
# loaded when this torch sees a GPU and the library was built; without them a CUDA tensor reaching
# a qi op raises NotImplementedError (no CUDA kernel registered).
_CUDA_LIBRARY = os.path.join(os.path.dirname(_LIBRARY), "libqi_torch_cuda.so")


def _load_cuda_library() -> bool:
    if not (os.path.exists(_CUDA_LIBRARY) and torch.cuda.is_available()):
        return False
    try:
        torch.ops.load_library(_CUDA_LIBRARY)
    except OSError as e:
        raise ImportError(f"{_CUDA_LIBRARY} does not load with torch {torch.__version__} ({e}); "
                          "rebuild the CUDA layer against the installed torch (scripts/qi "
                          "cuda-build, docs/cuda.md)") from e
    return True


_CUDA_LOADED = _load_cuda_library()


def cuda_library_path():
    """Path of libqi_torch_cuda.so (the CUDA kernels of the qi ops) when it was loaded, else
    None: not built (QI_WITH_CUDA=OFF, the default) or no GPU visible to torch."""
    return _CUDA_LIBRARY if _CUDA_LOADED else None


from quantizers_infrastructure.pytorch import fake  # noqa: E402,F401  (fake kernels)
# The eager fast path (loads after libqi_torch.so, which it links).
from quantizers_infrastructure._torch_fast import FastQuantizer as _FastQuantizer  # noqa: E402


def library_path() -> str:
    """Path of libqi_torch.so, e.g. for torch.ops.load_library in another process, or for
    linking a C++ program that runs a traced model."""
    return _LIBRARY


def value_error_from(e: RuntimeError) -> ValueError:
    """qi's c10::Error as a ValueError carrying the core's message (without torch's trace)."""
    message = str(e).split("\nException raised from")[0].strip()
    return ValueError(message)


_is_compiling = torch.compiler.is_compiling


def portable() -> bool:
    """True while a model is being traced or exported (torch.jit.trace, torch.onnx.export,
    torch.export): inferable quantizers then record qi::fake_quant with their JSON text, which
    carries their meaning to other runtimes; otherwise they run qi::quantize on their packed
    plan (a buffer), with nothing parsed per call."""
    if torch.compiler.is_compiling():
        return torch.compiler.is_exporting()
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _fast_of(quantizer):
    """The quantizer's eager fast path (built on first use; its plan never changes)."""
    fast = quantizer.__dict__.get("_torch_fast")
    if fast is None:
        fast = quantizer.__dict__["_torch_fast"] = _FastQuantizer(
            plan_tensor(quantizer), quantizer.kernel_channel_axis, quantizer.kernel_input_rank)
    return fast


def quantize_tensor(quantizer, x: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """An inferable quantizer on a torch tensor, given its packed plan as a tensor on x's
    device (wrappers keep it as a buffer). Eager calls that autograd need not record (inference,
    no_grad, frozen weights) go straight to the kernel (the same outputs, a fraction of the
    per-call cost); the rest, and everything torch.compile, torch.export or a tracer sees, call
    the torch.ops.qi ops. While the quantizer's reuse is enabled (enable_reuse_quantizer), every
    call after the first returns the first call's output."""
    if quantizer.enable_reuse:
        return _reused(quantizer, x, plan)
    if not _is_compiling():
        y = _fast_of(quantizer)(x)
        if y is not None:
            return y
    if portable():
        if quantizer._use_custom_impl and torch.onnx.is_in_onnx_export():
            from quantizers_infrastructure.pytorch.onnx import custom_impl_quant
            return custom_impl_quant(quantizer, x)
        return torch.ops.qi.fake_quant(x, quantizer.to_json())
    return torch.ops.qi.quantize(x, plan, quantizer.kernel_channel_axis,
                                 quantizer.kernel_input_rank)


def _reused(quantizer, x: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """MCT Quantizers' reuse: the first call quantizes and keeps its output, later calls
    return it (so a layer used several times records its weight quantization once)."""
    if quantizer.quantizer_first_run or quantizer.reuse_outputs is None:
        quantizer.enable_reuse = False
        try:
            out = quantize_tensor(quantizer, x, plan)
        finally:
            quantizer.enable_reuse = True
        quantizer.reuse_outputs = out
        quantizer.quantizer_first_run = False
    return quantizer.reuse_outputs


def plan_tensor(quantizer) -> torch.Tensor:
    """The quantizer's packed plan as an int32 CPU tensor (for a buffer)."""
    return torch.from_numpy(quantizer.packed_plan.copy())


def _torch_call(quantizer, inputs: torch.Tensor) -> torch.Tensor:
    if not _is_compiling() and not quantizer.enable_reuse:
        y = (quantizer.__dict__.get("_torch_fast") or _fast_of(quantizer))(inputs)
        if y is not None:
            return y
    plans = quantizer.__dict__.setdefault("_torch_plans", {})
    plan = plans.get(inputs.device)
    if plan is None:
        plan = plans[inputs.device] = plan_tensor(quantizer).to(inputs.device)
    return quantize_tensor(quantizer, inputs, plan)


def _proxy_call(quantizer, inputs):
    """torch.fx.symbolic_trace: the quantizer becomes one torch.ops.qi.fake_quant node."""
    return torch.ops.qi.fake_quant(inputs, quantizer.to_json())


register_input_type(torch.Tensor, _torch_call)
register_input_type(torch.fx.Proxy, _proxy_call)

# The front end proper (imported after the op library is loaded).
from quantizers_infrastructure.common.enums import VariableGroup  # noqa: E402
from quantizers_infrastructure.common.trainable_configs import (  # noqa: E402
    TrainableQuantizerActivationConfig, TrainableQuantizerCandidateConfig,
    TrainableQuantizerWeightsConfig)
from quantizers_infrastructure.common.base_trainable_quantizer import \
    BaseTrainableQuantizer  # noqa: E402
from quantizers_infrastructure.pytorch.trainable_quantizers import *  # noqa: E402,F401,F403
from quantizers_infrastructure.pytorch.trainable_quantizers import \
    __all__ as _trainable_names  # noqa: E402
from quantizers_infrastructure.pytorch.wrapper import (  # noqa: E402
    PytorchNodeQuantizationDispatcher, PytorchQuantizationWrapper, quantizer_from_json)
from quantizers_infrastructure.pytorch.activation_holders import (  # noqa: E402
    PytorchActivationQuantizationHolder, PytorchFLNActivationQuantizationHolder,
    PytorchPreservingActivationQuantizationHolder)
from quantizers_infrastructure.pytorch.serialization import safe_globals  # noqa: E402
# Whole-model quantization in one call.
from quantizers_infrastructure.pytorch.model import (  # noqa: E402
    BatchNormFoldedLayer, ModelQuantizationConfig, convert, prepare_qat, quantize,
    quantized_modules)
# ONNX export: registers the symbolic of qi::fake_quant (QDQ or mct_quantizers custom ops).
from quantizers_infrastructure.pytorch import onnx  # noqa: E402,F401
from quantizers_infrastructure.pytorch.metadata import (  # noqa: E402
    add_metadata, add_onnx_metadata, get_metadata, get_onnx_metadata,
    pytorch_load_quantized_model)

__all__ = ["library_path", "cuda_library_path", "value_error_from", "portable", "quantize_tensor", "plan_tensor",
           "safe_globals", "VariableGroup", "BaseTrainableQuantizer",
           "TrainableQuantizerWeightsConfig", "TrainableQuantizerActivationConfig",
           "TrainableQuantizerCandidateConfig", "PytorchNodeQuantizationDispatcher",
           "PytorchQuantizationWrapper", "quantizer_from_json",
           "PytorchActivationQuantizationHolder", "PytorchPreservingActivationQuantizationHolder",
           "PytorchFLNActivationQuantizationHolder", "quantize", "prepare_qat", "convert",
           "quantized_modules", "BatchNormFoldedLayer", "ModelQuantizationConfig", "add_metadata", "get_metadata",
           "add_onnx_metadata", "get_onnx_metadata",
           "pytorch_load_quantized_model"] + list(_trainable_names)
