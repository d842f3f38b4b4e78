# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.pytorch.quantize_wrapper."""

from quantizers_infrastructure.pytorch.wrapper import PytorchQuantizationWrapper  # noqa: F401

__all__ = ["PytorchQuantizationWrapper"]
