# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""BaseTrainableQuantizer (REFERENCE.md 7.2), framework neutral: the config checks of MCT
(4.5), the variable bookkeeping and the JSON config of the C++ trainable quantizers
({"quantization_config": ..., "freeze_quant_params": ...}). Framework bases add the variables'
kind (torch Parameters, Keras weights) and the math."""

import json
from typing import Any, Dict, List

from quantizers_infrastructure.common.base_inferable_quantizer import BaseInferableQuantizer
from quantizers_infrastructure.common.enums import QuantizationTarget, VariableGroup
from quantizers_infrastructure.common.trainable_configs import (
    TrainableQuantizerActivationConfig, TrainableQuantizerWeightsConfig)

VAR = "var"
GROUP = "group"


class BaseTrainableQuantizer(BaseInferableQuantizer):
    """A quantizer with learnable variables. Subclasses are marked with mark_quantizer (target,
    methods, TrainingMethod), create their variables on the wrapping module in
    initialize_quantization, quantize in __call__(inputs, training) and convert to an inferable
    quantizer in convert2inferable()."""

    def __init__(self, quantization_config, freeze_quant_params: bool = False):
        super().__init__()
        name = type(self).__name__
        target = getattr(type(self), "quantization_target", None)
        methods = getattr(type(self), "quantization_method", None)
        if target is None or methods is None:
            raise ValueError("Quantizer class inheriting from 'BaseTrainableQuantizer' is "
                             "improperly defined. Ensure it includes the '@mark_quantizer' "
                             "decorator and is correctly applied.")
        if target == QuantizationTarget.Weights:
            if not isinstance(quantization_config, TrainableQuantizerWeightsConfig):
                raise ValueError(f"{name}: expected weight quantization configuration; received "
                                 f"activation quantization instead.")
            method = quantization_config.weights_quantization_method
        elif target == QuantizationTarget.Activation:
            if not isinstance(quantization_config, TrainableQuantizerActivationConfig):
                raise ValueError(f"{name}: expected activation quantization configuration; "
                                 f"received weight quantization instead.")
            method = quantization_config.activation_quantization_method
        else:
            raise ValueError(f"{name}: unknown quantization target {target!r}")
        if method not in methods:
            raise ValueError(f"{name}: Quantization method mismatch. Expected methods: "
                             f"{methods}, received: {method}.")
        if not isinstance(freeze_quant_params, bool):
            raise ValueError(f"{name}: freeze_quant_params must be a bool, got "
                             f"{freeze_quant_params!r}")
        self.quantization_config = quantization_config
        self.freeze_quant_params = freeze_quant_params
        self.quantizer_parameters: Dict[str, Dict[str, Any]] = {}

    # ---- variables ----
    def add_quantizer_variable(self, name: str, variable: Any,
                               group: VariableGroup = VariableGroup.WEIGHTS) -> None:
        """Records `variable` under `name` in `group`."""
        self.quantizer_parameters[name] = {VAR: variable, GROUP: group}

    def get_quantizer_variable(self, name: str) -> Any:
        """The variable recorded under `name` (ValueError if there is none)."""
        if name not in self.quantizer_parameters:
            raise ValueError(f"{type(self).__name__}: variable \"{name}\" does not exist; call "
                             f"initialize_quantization first")
        return self.quantizer_parameters[name][VAR]

    def get_trainable_variables(self, group: VariableGroup) -> List[Any]:
        raise NotImplementedError

    def initialize_quantization(self, tensor_shape, name: str, layer) -> None:
        raise NotImplementedError

    def __call__(self, inputs, training: bool = True):
        raise NotImplementedError

    def convert2inferable(self) -> BaseInferableQuantizer:
        raise NotImplementedError

    def convert_to_inferable(self) -> BaseInferableQuantizer:
        """Same as convert2inferable() (the C++ spelling)."""
        return self.convert2inferable()

    def activation_quantization(self) -> bool:
        return isinstance(self.quantization_config, TrainableQuantizerActivationConfig)

    def weights_quantization(self) -> bool:
        return isinstance(self.quantization_config, TrainableQuantizerWeightsConfig)

    # ---- serialization (the C++ trainable quantizers' JSON) ----
    def get_config(self) -> Dict[str, Any]:
        """{"quantization_config": config JSON, "freeze_quant_params": bool}: the "config" of
        the C++ twin's to_json()."""
        return {"quantization_config": self.quantization_config.get_config(),
                "freeze_quant_params": self.freeze_quant_params}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "BaseTrainableQuantizer":
        """A fresh quantizer (variables not created yet) from get_config() output."""
        if not isinstance(config, dict) or not isinstance(config.get("quantization_config"),
                                                          dict):
            raise ValueError(f"{cls.__name__}: config must be an object with "
                             f"\"quantization_config\"")
        freeze = config.get("freeze_quant_params", False)
        if not isinstance(freeze, bool):
            raise ValueError(f"{cls.__name__}: \"freeze_quant_params\" must be a boolean")
        cfg_cls = (TrainableQuantizerWeightsConfig
                   if cls.quantization_target == QuantizationTarget.Weights
                   else TrainableQuantizerActivationConfig)
        return cls(cfg_cls.from_config(config["quantization_config"]),
                   freeze_quant_params=freeze)

    def to_json(self) -> str:
        """{"class_name", "config"}, as the C++ BaseTrainableQuantizer::to_json writes it."""
        return json.dumps({"class_name": type(self).__name__, "config": self.get_config()})
