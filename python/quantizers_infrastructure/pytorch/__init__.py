# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The PyTorch front end: loads qi's operator library (libqi_torch.so, TORCH_LIBRARY(qi)) so that
torch.ops.qi.* exist, and makes every framework-neutral quantizer callable on torch tensors.
Imported on the first call with a torch tensor, or explicitly."""

import os

import torch

from quantizers_infrastructure.common.base_inferable_quantizer import register_input_type

_LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "libqi_torch.so")
if not os.path.exists(_LIBRARY):
    raise ImportError(f"qi's torch operator library is not built ({_LIBRARY} is missing); "
                      "run scripts/qi build")
torch.ops.load_library(_LIBRARY)


def library_path() -> str:
    """Path of libqi_torch.so, e.g. for torch.ops.load_library in another process, or for
    linking a C++ program that runs a traced model."""
    return _LIBRARY


def value_error_from(e: RuntimeError) -> ValueError:
    """qi's c10::Error as a ValueError carrying the core's message (without torch's trace)."""
    message = str(e).split("\nException raised from")[0].strip()
    return ValueError(message)


def _quantizer_json(quantizer) -> str:
    text = quantizer.__dict__.get("_qi_json")
    if text is None:  # quantizers are immutable: serialize once
        text = quantizer.to_json()
        quantizer.__dict__["_qi_json"] = text
    return text


def _proxy_call(quantizer, inputs):
    """torch.fx.symbolic_trace: the quantizer becomes one torch.ops.qi.fake_quant node."""
    return torch.ops.qi.fake_quant(inputs, _quantizer_json(quantizer))


def _torch_call(quantizer, inputs: torch.Tensor) -> torch.Tensor:
    if inputs.dtype != torch.float32:
        raise ValueError(f"{type(quantizer).__name__}: inputs must be float32, got {inputs.dtype}")
    try:
        return torch.ops.qi.fake_quant(inputs, _quantizer_json(quantizer))
    except RuntimeError as e:
        raise value_error_from(e) from None


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
# ONNX export: registers the symbolic of qi::fake_quant (QDQ or mct_quantizers custom ops).
from quantizers_infrastructure.pytorch import onnx  # noqa: E402,F401

__all__ = ["library_path", "value_error_from", "VariableGroup", "BaseTrainableQuantizer",
           "TrainableQuantizerWeightsConfig", "TrainableQuantizerActivationConfig",
           "TrainableQuantizerCandidateConfig", "PytorchNodeQuantizationDispatcher",
           "PytorchQuantizationWrapper", "quantizer_from_json",
           "PytorchActivationQuantizationHolder", "PytorchPreservingActivationQuantizationHolder",
           "PytorchFLNActivationQuantizationHolder"] + list(_trainable_names)
