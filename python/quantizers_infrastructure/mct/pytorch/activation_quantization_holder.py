# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.pytorch.activation_quantization_holder."""

from quantizers_infrastructure.pytorch.activation_holders import \
    PytorchActivationQuantizationHolder  # noqa: F401

__all__ = ["PytorchActivationQuantizationHolder"]
