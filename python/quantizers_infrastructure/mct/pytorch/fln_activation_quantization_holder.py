# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.pytorch.fln_activation_quantization_holder."""

from quantizers_infrastructure.pytorch.activation_holders import \
    PytorchFLNActivationQuantizationHolder  # noqa: F401

__all__ = ["PytorchFLNActivationQuantizationHolder"]
