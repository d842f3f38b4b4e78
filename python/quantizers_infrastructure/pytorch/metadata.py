# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Metadata of PyTorch models and of their ONNX exports (MCT Quantizers' add_metadata,
get_metadata, add_onnx_metadata, get_onnx_metadata)."""

from typing import Any, Dict

import torch

from quantizers_infrastructure.common import constants as C
from quantizers_infrastructure.common.metadata import verify_and_init_metadata


def add_metadata(model: torch.nn.Module, metadata: Dict[str, Any]) -> torch.nn.Module:
    """Checks `metadata` (verify_and_init_metadata), adds "framework_version" (torch's) when
    missing and sets it as `model.metadata`; returns the model."""
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"add_metadata: model must be a torch.nn.Module, got "
                         f"{type(model).__name__}")
    metadata = verify_and_init_metadata(metadata)
    metadata.setdefault(C.FRAMEWORK_VERSION, torch.__version__)
    model.metadata = metadata
    return model


def get_metadata(model: torch.nn.Module) -> Dict[str, Any]:
    """model.metadata, or {} when the model has none."""
    return getattr(model, "metadata", {})


def add_onnx_metadata(model, metadata: Dict[str, Any]):
    """Checks `metadata`, adds "onnx_version" when missing and appends every entry to the ONNX
    ModelProto's metadata_props; returns the model. ONNX metadata values are strings: other
    values raise ValueError (as MCT Quantizers' Logger.critical does)."""
    import onnx
    if not isinstance(model, onnx.ModelProto):
        raise ValueError(f"add_onnx_metadata: model must be an onnx.ModelProto, got "
                         f"{type(model).__name__}")
    metadata = verify_and_init_metadata(metadata)
    metadata.setdefault(C.ONNX_VERSION, onnx.__version__)
    bad = {k: v for k, v in metadata.items() if not isinstance(v, (bytes, str))}
    if bad:
        raise ValueError(f"ONNX metadata must be of byte type, but {bad!r} are not strings")
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return model


def get_onnx_metadata(model) -> Dict[str, str]:
    """The metadata_props of an ONNX ModelProto as a dict."""
    return {prop.key: prop.value for prop in model.metadata_props}


def pytorch_load_quantized_model(filepath: str, **kwargs) -> Any:
    """torch.load(filepath, **kwargs) with qi's classes allowed for weights_only loading (torch's
    default), so a whole quantized model saved with torch.save loads without weights_only=False."""
    from quantizers_infrastructure.pytorch.serialization import safe_globals
    with torch.serialization.safe_globals(safe_globals()):
        return torch.load(filepath, **kwargs)


__all__ = ["add_metadata", "get_metadata", "add_onnx_metadata", "get_onnx_metadata",
           "pytorch_load_quantized_model"]
