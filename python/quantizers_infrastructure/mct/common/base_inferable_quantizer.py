# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.common.base_inferable_quantizer: qi's base class, marker and enums."""

from quantizers_infrastructure.common.base_inferable_quantizer import (  # noqa: F401
    BaseInferableQuantizer, mark_quantizer)
from quantizers_infrastructure.common.enums import QuantizationTarget, QuantizerID  # noqa: F401

__all__ = ["BaseInferableQuantizer", "mark_quantizer", "QuantizationTarget", "QuantizerID"]
