# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.common.quant_info: QuantizationMethod (mct-quantizers >= 1.5 values)."""

from quantizers_infrastructure.common.enums import QuantizationMethod  # noqa: F401

__all__ = ["QuantizationMethod"]
