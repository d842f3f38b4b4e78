# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.keras.quantizers: BaseKerasInferableQuantizer and one subclass of each of qi's
inferable quantizers deriving from it, with the tf profile by default (TensorFlow's
fake_quant numerics, which MCT Quantizers' Keras quantizers use); on TensorFlow tensors they run
TensorFlow's own fake_quant op where it computes the same bits, as MCT Quantizers' do (so that
TFLite converts them), and qi's op otherwise (LUT quantizers, the torch profile)."""

import quantizers_infrastructure.keras  # noqa: F401  (TensorFlow tensors, ops)
from quantizers_infrastructure.common.base_inferable_quantizer import BaseInferableQuantizer
from quantizers_infrastructure.common.inferable_quantizers import framework_classes


class BaseKerasInferableQuantizer(BaseInferableQuantizer):
    """Base of mct_quantizers.keras.quantizers' classes."""


_CLASSES = framework_classes(BaseKerasInferableQuantizer, __name__, profile="tf",
                             tf_native_fake_quant=True)
globals().update(_CLASSES)

__all__ = ["BaseKerasInferableQuantizer"] + list(_CLASSES)
