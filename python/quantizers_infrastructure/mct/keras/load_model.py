# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.keras.load_model: qi's loader, which also reads MCT Quantizers' files."""

from quantizers_infrastructure.keras.load import keras_load_quantized_model  # noqa: F401

__all__ = ["keras_load_quantized_model"]
