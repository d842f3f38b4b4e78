# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.keras.activation_quantization_holder."""

from quantizers_infrastructure.keras.wrapper import KerasActivationQuantizationHolder  # noqa: F401

__all__ = ["KerasActivationQuantizationHolder"]
