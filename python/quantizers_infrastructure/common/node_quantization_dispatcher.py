# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""NodeQuantizationDispatcher: one layer's quantizers, a quantizer per weight
attribute and one per layer output. Wrappers read it to quantize weights before the layer runs
and outputs after."""

import json
from typing import Any, Dict, List, Optional, Union

from quantizers_infrastructure import _core
from quantizers_infrastructure.common.base_inferable_quantizer import BaseInferableQuantizer
from quantizers_infrastructure.common.constants import ACTIVATION_QUANTIZERS, QI_VERSION_KEY

WEIGHT_QUANTIZER = "weight_quantizer"  # the seed's key (singular)


class NodeQuantizationDispatcher:
    """Holds `weight_quantizers` (attribute name -> quantizer) and `activation_quantizers` (one
    per layer output, in order).

    weight_quantizers may be a dict, or a single quantizer for the layer's main weight attribute
    in framework dispatchers that know its name (`default_weight_attribute`, e.g. "kernel" in
    Keras, "weight" in PyTorch). Type errors raise ValueError."""

    # Name of the main weight attribute a single quantizer stands for; set by the framework
    # dispatchers (KerasNodeQuantizationDispatcher, PytorchNodeQuantizationDispatcher).
    default_weight_attribute: Optional[str] = None

    def __init__(self,
                 weight_quantizers: Union[None, BaseInferableQuantizer,
                                          Dict[str, BaseInferableQuantizer]] = None,
                 activation_quantizers: Optional[List[BaseInferableQuantizer]] = None):
        self.weight_quantizers: Dict[str, BaseInferableQuantizer] = {}
        self.activation_quantizers: List[BaseInferableQuantizer] = []
        if weight_quantizers is not None:
            self.set_weight_quantizers(weight_quantizers)
        if activation_quantizers is not None:
            self.set_activation_quantizers(activation_quantizers)

    def _name(self) -> str:
        return type(self).__name__

    def _check_quantizer(self, quantizer, what: str) -> None:
        if not isinstance(quantizer, BaseInferableQuantizer):
            raise ValueError(f"{self._name()}: {what} must be a BaseInferableQuantizer, got "
                             f"{type(quantizer).__name__}")

    def _check_name(self, param_name) -> None:
        if not isinstance(param_name, str) or not param_name:
            raise ValueError(f"{self._name()}: weight attribute names must be non-empty "
                             f"strings, got {param_name!r}")

    def set_weight_quantizers(self, weight_quantizers) -> None:
        """Replaces all weight quantizers with `weight_quantizers`: a dict {attribute name:
        quantizer}, or one quantizer for `default_weight_attribute`."""
        if isinstance(weight_quantizers, BaseInferableQuantizer):
            if self.default_weight_attribute is None:
                raise ValueError(
                    f"{self._name()}: a single weights quantizer needs a framework dispatcher "
                    f"that knows the layer's main weight attribute (KerasNodeQuantizationDispatcher"
                    f", PytorchNodeQuantizationDispatcher); pass a dict {{attribute name: "
                    f"quantizer}} instead")
            weight_quantizers = {self.default_weight_attribute: weight_quantizers}
        if not isinstance(weight_quantizers, dict):
            raise ValueError(f"{self._name()}: weight_quantizers must be a dict of attribute "
                             f"name -> quantizer, got {type(weight_quantizers).__name__}")
        for name, quantizer in weight_quantizers.items():
            self._check_name(name)
            self._check_quantizer(quantizer, f"weight quantizer of {name!r}")
        self.weight_quantizers = dict(weight_quantizers)

    def set_activation_quantizers(self,
                                  activation_quantizers: List[BaseInferableQuantizer]) -> None:
        """Replaces all activation quantizers with the list (one per layer output)."""
        if not isinstance(activation_quantizers, (list, tuple)):
            raise ValueError(f"{self._name()}: activation_quantizers must be a list of "
                             f"quantizers, got {type(activation_quantizers).__name__}")
        for i, quantizer in enumerate(activation_quantizers):
            self._check_quantizer(quantizer, f"activation quantizer {i}")
        self.activation_quantizers = list(activation_quantizers)

    def add_weight_quantizer(self, param_name: str, quantizer: BaseInferableQuantizer) -> None:
        """Adds or replaces the quantizer of weight attribute `param_name`."""
        self._check_name(param_name)
        self._check_quantizer(quantizer, f"weight quantizer of {param_name!r}")
        self.weight_quantizers[param_name] = quantizer

    @property
    def is_activation_quantization(self) -> bool:
        """True when at least one activation quantizer is set."""
        return self.num_act_quantizers > 0

    @property
    def is_weights_quantization(self) -> bool:
        """True when at least one weight quantizer is set."""
        return self.num_weight_quantizers > 0

    @property
    def num_weight_quantizers(self) -> int:
        """Number of weight attributes with a quantizer."""
        return len(self.weight_quantizers)

    @property
    def num_act_quantizers(self) -> int:
        """Number of activation quantizers (layer outputs)."""
        return len(self.activation_quantizers)

    # ---- JSON: one schema, the C++ dispatcher's, for every front end ----
    def get_config(self) -> Dict[str, Any]:
        """{"activation_quantizers": [{"class_name", "config"}...], "weight_quantizer":
        {attribute: {"class_name", "config"}}, "qi_version": ...}: the C++
        NodeQuantizationDispatcher's JSON, read by every front end."""
        return {
            ACTIVATION_QUANTIZERS: [json.loads(q.to_json()) for q in self.activation_quantizers],
            WEIGHT_QUANTIZER: {k: json.loads(q.to_json()) for k, q in self.weight_quantizers.items()},
            QI_VERSION_KEY: _core.kVersion,
        }

    @classmethod
    def from_config(cls, config: Union[str, Dict[str, Any]]) -> "NodeQuantizationDispatcher":
        """Rebuilds a dispatcher from get_config() output (a dict or JSON text), written by any
        front end. The core checks the whole config first (keys, types, every quantizer), with
        ValueError naming where a problem sits."""
        text = config if isinstance(config, str) else json.dumps(config)
        checked = json.loads(_core.dispatcher_config(text))
        return cls({k: cls.quantizer_from_config(v) for k, v in checked[WEIGHT_QUANTIZER].items()},
                   [cls.quantizer_from_config(v) for v in checked[ACTIVATION_QUANTIZERS]])

    @classmethod
    def quantizer_from_config(cls, config: Dict[str, Any]) -> BaseInferableQuantizer:
        """A quantizer from its {"class_name", "config"} object: inferable quantizers here;
        framework dispatchers add their trainable classes."""
        from quantizers_infrastructure.common.inferable_quantizers import quantizer_from_json
        if any(e["class_name"] == config["class_name"] for e in _core.trainable_quantizers()):
            raise ValueError(f"{cls.__name__}: the trainable quantizer {config['class_name']} "
                             f"needs a framework dispatcher (PytorchNodeQuantizationDispatcher or "
                             f"KerasNodeQuantizationDispatcher)")
        return quantizer_from_json(json.dumps(config))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(weight_quantizers={self.weight_quantizers!r}, "
                f"activation_quantizers={self.activation_quantizers!r})")
