# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Activation quantization holders (REFERENCE.md 5.4): a lone activation quantizer as a module,
and its quantization-preserving and fused-layer (FLN) variants, which pass the tensor through
untouched when quantization_bypass is set (the quantizer stays visible to downstream tools)."""

import torch
from torch import nn

from quantizers_infrastructure.common.base_inferable_quantizer import BaseInferableQuantizer
from quantizers_infrastructure.common.enums import QuantizationTarget
from quantizers_infrastructure.pytorch.trainable_quantizers import BasePytorchTrainableQuantizer

ACTIVATION_HOLDER_QUANTIZER = "activation_holder_quantizer"


class PytorchActivationQuantizationHolder(nn.Module):
    """forward(x) = Q(x). A trainable quantizer creates its variables on the holder (named
    "activation_holder_quantizer_<suffix>", as the C++ holder names them) and runs in training mode while the holder is in
    train() mode (MCT's holder passes no flag, so its trainable quantizers always train; qi's
    follows the module's mode, as the C++ holder)."""

    def __init__(self, activation_holder_quantizer: BaseInferableQuantizer, **module_kwargs):
        super().__init__(**module_kwargs)
        self._set_quantizer(activation_holder_quantizer)

    def _set_quantizer(self, quantizer) -> None:
        if not isinstance(quantizer, BaseInferableQuantizer):
            raise ValueError(f"{type(self).__name__}: activation_holder_quantizer must be a "
                             f"BaseInferableQuantizer, got {type(quantizer).__name__}")
        if quantizer.quantization_target not in (None, QuantizationTarget.Activation):
            raise ValueError(f"{type(self).__name__}: expected an Activation quantizer, got "
                             f"{type(quantizer).__name__}")
        old = self.__dict__.get(ACTIVATION_HOLDER_QUANTIZER)
        for name in getattr(old, "registered_names", []):
            self._parameters.pop(name, None)
        self.activation_holder_quantizer = quantizer
        quantizer.initialize_quantization(None, ACTIVATION_HOLDER_QUANTIZER, self)

    def _quantize(self, inputs: torch.Tensor) -> torch.Tensor:
        q = self.activation_holder_quantizer
        if isinstance(q, BasePytorchTrainableQuantizer):
            return q(inputs, self.training)
        return q(inputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._quantize(inputs)

    def convert_to_inferable_quantizers(self) -> None:
        """Replaces a trainable quantizer by its inferable conversion, in place."""
        q = self.activation_holder_quantizer
        if isinstance(q, BasePytorchTrainableQuantizer):
            self._set_quantizer(q.convert2inferable())

    def extra_repr(self) -> str:
        return repr(self.activation_holder_quantizer)


class PytorchPreservingActivationQuantizationHolder(PytorchActivationQuantizationHolder):
    """Holder placed after a quantization-preserving op: forward(x) = x when
    quantization_bypass, else Q(x)."""

    def __init__(self, activation_holder_quantizer: BaseInferableQuantizer,
                 quantization_bypass: bool = False, **module_kwargs):
        super().__init__(activation_holder_quantizer, **module_kwargs)
        self.quantization_bypass = bool(quantization_bypass)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs if self.quantization_bypass else self._quantize(inputs)


class PytorchFLNActivationQuantizationHolder(PytorchActivationQuantizationHolder):
    """Holder of a fused-layer node: forward(x) = x when quantization_bypass, else Q(x)."""

    def __init__(self, activation_holder_quantizer: BaseInferableQuantizer,
                 quantization_bypass: bool = False, **module_kwargs):
        super().__init__(activation_holder_quantizer, **module_kwargs)
        self.quantization_bypass = bool(quantization_bypass)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs if self.quantization_bypass else self._quantize(inputs)


__all__ = ["PytorchActivationQuantizationHolder", "PytorchPreservingActivationQuantizationHolder",
           "PytorchFLNActivationQuantizationHolder"]
