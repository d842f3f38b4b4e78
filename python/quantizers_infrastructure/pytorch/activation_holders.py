# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Activation quantization holders: a lone activation quantizer as a module,
and its quantization-preserving and fused-layer (FLN) variants, which pass the tensor through
untouched when quantization_bypass is set (the quantizer stays visible to downstream tools)."""

import json

import torch

from quantizers_infrastructure.common.base_inferable_quantizer import (
    QUANTIZER_KINDS, BaseInferableQuantizer, is_quantizer)
from quantizers_infrastructure.common.constants import ACTIVATION_QUANTIZERS
from quantizers_infrastructure.common.enums import QuantizationTarget
from quantizers_infrastructure.common.node_quantization_dispatcher import WEIGHT_QUANTIZER
from quantizers_infrastructure.pytorch.serialization import make_extra_state, read_extra_state
from quantizers_infrastructure.pytorch.trainable_quantizers import (
    BasePytorchTrainableQuantizer, TRAINABLE_QUANTIZER_CLASSES)
from quantizers_infrastructure.pytorch.wrapper import (PLAN_PREFIX, _convertible,
                                                       _QuantizerSlots, quantizer_from_json)

ACTIVATION_HOLDER_QUANTIZER = "activation_holder_quantizer"


class PytorchActivationQuantizationHolder(_QuantizerSlots):
    """forward(x) = Q(x). A trainable quantizer creates its variables on the holder (named
    "activation_holder_quantizer_<variable>", as the C++ holder names them) and runs in training
    mode while the holder is in train() mode (MCT's holder passes no flag, so its trainable
    quantizers always train; qi's follows the module's mode, as the C++ holder). A foreign
    quantizer (MCT's own trainable ones) is called as MCT's holder calls it: q(x), no flag. An
    inferable quantizer's packed plan is a buffer and its config the holder's extra state."""

    def __init__(self, activation_holder_quantizer: BaseInferableQuantizer, **module_kwargs):
        super().__init__(**module_kwargs)
        self._set_quantizer(activation_holder_quantizer)

    def _set_quantizer(self, quantizer) -> None:
        if not is_quantizer(quantizer):
            raise ValueError(f"{type(self).__name__}: activation_holder_quantizer must be "
                             f"{QUANTIZER_KINDS}, got {type(quantizer).__name__}")
        if getattr(quantizer, "quantization_target", None) not in (None,
                                                                  QuantizationTarget.Activation):
            raise ValueError(f"{type(self).__name__}: expected an Activation quantizer, got "
                             f"{type(quantizer).__name__}")
        old = self.__dict__.get(ACTIVATION_HOLDER_QUANTIZER)
        if old is not None:
            self._unbind(ACTIVATION_HOLDER_QUANTIZER, old)
        self.activation_holder_quantizer = quantizer
        self._bind(ACTIVATION_HOLDER_QUANTIZER, quantizer, None,
                   ACTIVATION_HOLDER_QUANTIZER + "_out")

    def _quantize(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._run(ACTIVATION_HOLDER_QUANTIZER, self.activation_holder_quantizer, inputs,
                         self.training, pass_training=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._quantize(inputs)

    def convert_to_inferable_quantizers(self) -> None:
        """Replaces a trainable quantizer by its inferable conversion, in place."""
        q = self.activation_holder_quantizer
        if _convertible(q):
            device = next((p.device for p in self.parameters()), None)
            self._set_quantizer(q.convert2inferable())
            if device is not None:
                self.to(device)

    def _all_quantizers(self):
        return [self.activation_holder_quantizer]

    def get_extra_state(self):
        return make_extra_state({WEIGHT_QUANTIZER: {}, ACTIVATION_QUANTIZERS: [
            json.loads(self.activation_holder_quantizer.to_json())]})

    def set_extra_state(self, state) -> None:
        """Loads the quantizer of get_extra_state output (a trainable quantizer must be of the
        same class: its variables load as parameters)."""
        who = type(self).__name__
        config = read_extra_state(state, who)
        if config[WEIGHT_QUANTIZER] or len(config[ACTIVATION_QUANTIZERS]) != 1:
            raise ValueError(f"{who}: the state dict's record is not a holder's (one activation "
                             f"quantizer, no weights)")
        q, entry = self.activation_holder_quantizer, config[ACTIVATION_QUANTIZERS][0]
        if isinstance(q, BasePytorchTrainableQuantizer) or \
                entry["class_name"] in TRAINABLE_QUANTIZER_CLASSES:
            if entry["class_name"] != type(q).__name__:
                raise ValueError(f"{who}: the state dict holds a {entry['class_name']}, the "
                                 f"holder a {type(q).__name__}")
            return
        device = getattr(self, PLAN_PREFIX + ACTIVATION_HOLDER_QUANTIZER).device
        self._set_quantizer(quantizer_from_json(json.dumps(entry)))
        self._buffers[PLAN_PREFIX + ACTIVATION_HOLDER_QUANTIZER] = \
            self._buffers[PLAN_PREFIX + ACTIVATION_HOLDER_QUANTIZER].to(device)

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
