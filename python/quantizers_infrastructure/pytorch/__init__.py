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


def _torch_call(quantizer, inputs: torch.Tensor) -> torch.Tensor:
    if inputs.dtype != torch.float32:
        raise ValueError(f"{type(quantizer).__name__}: inputs must be float32, got {inputs.dtype}")
    text = quantizer.__dict__.get("_qi_json")
    if text is None:  # quantizers are immutable: serialize once
        text = quantizer.to_json()
        quantizer.__dict__["_qi_json"] = text
    try:
        return torch.ops.qi.fake_quant(inputs, text)
    except RuntimeError as e:
        raise value_error_from(e) from None


register_input_type(torch.Tensor, _torch_call)

__all__ = ["library_path", "value_error_from"]
