# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.pytorch.quantizers: BasePyTorchInferableQuantizer and one subclass of each of
qi's inferable quantizers deriving from it (the torch profile, qi's default), so that MCT's
get_inferable_quantizer_class(target, method, BasePyTorchInferableQuantizer) finds them. They
are qi's classes: the same arguments, checks, numerics and exports (ONNX, TorchScript)."""

import quantizers_infrastructure.pytorch  # noqa: F401  (torch tensors, ops, ONNX symbolic)
from quantizers_infrastructure.common.base_inferable_quantizer import BaseInferableQuantizer
from quantizers_infrastructure.common.inferable_quantizers import framework_classes


class BasePyTorchInferableQuantizer(BaseInferableQuantizer):
    """Base of mct_quantizers.pytorch.quantizers' classes. The reuse and custom-implementation
    switches (reuse, enable_reuse_quantizer, disable_reuse_quantizer, enable_custom_impl) are
    qi's InferableQuantizer's."""


_CLASSES = framework_classes(BasePyTorchInferableQuantizer, __name__)
globals().update(_CLASSES)

__all__ = ["BasePyTorchInferableQuantizer"] + list(_CLASSES)
