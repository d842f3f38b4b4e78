# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.pytorch.preserving_activation_quantization_holder."""

from quantizers_infrastructure.pytorch.activation_holders import \
    PytorchPreservingActivationQuantizationHolder  # noqa: F401

__all__ = ["PytorchPreservingActivationQuantizationHolder"]
