# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.keras.quantize_wrapper."""

from quantizers_infrastructure.keras.wrapper import KerasQuantizationWrapper  # noqa: F401

__all__ = ["KerasQuantizationWrapper"]
