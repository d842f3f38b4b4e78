# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.pytorch.metadata."""

from quantizers_infrastructure.pytorch.metadata import (  # noqa: F401
    add_metadata, add_onnx_metadata, get_metadata, get_onnx_metadata)

__all__ = ["add_metadata", "get_metadata", "add_onnx_metadata", "get_onnx_metadata"]
