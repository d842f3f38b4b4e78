# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.pytorch.load_model."""

from quantizers_infrastructure.pytorch.metadata import pytorch_load_quantized_model  # noqa: F401

__all__ = ["pytorch_load_quantized_model"]
