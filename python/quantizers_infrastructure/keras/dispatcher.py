# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""KerasNodeQuantizationDispatcher: the framework-neutral dispatcher with Keras's main weight
attribute ("kernel") and JSON get_config/from_config (REFERENCE.md 5.1)."""

from typing import Any, Dict

from quantizers_infrastructure.common import constants as C
from quantizers_infrastructure.common.node_quantization_dispatcher import \
    NodeQuantizationDispatcher
from quantizers_infrastructure.keras.serialization import (deserialize_quantizer,
                                                           serialize_quantizer)

WEIGHT_QUANTIZER_KEY = "weight_quantizer"  # the seed's key (singular)


class KerasNodeQuantizationDispatcher(NodeQuantizationDispatcher):
    """A Keras layer's quantizers: weight_quantizers {attribute name: quantizer} (a single
    quantizer means "kernel") and activation_quantizers (one per layer output).

        dispatcher = KerasNodeQuantizationDispatcher(w_quantizer)
        dispatcher = KerasNodeQuantizationDispatcher({"kernel": wq, "bias": bq}, [aq])
    """

    default_weight_attribute = "kernel"

    def get_config(self) -> Dict[str, Any]:
        """{"activation_quantizers": [{"class_name", "config"}...], "weight_quantizer":
        {attribute: {"class_name", "config"}}} (JSON values)."""
        return {
            C.ACTIVATION_QUANTIZERS: [serialize_quantizer(q) for q in self.activation_quantizers],
            WEIGHT_QUANTIZER_KEY: {name: serialize_quantizer(q)
                                   for name, q in self.weight_quantizers.items()},
        }

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "KerasNodeQuantizationDispatcher":
        """Rebuilds a dispatcher from get_config() output."""
        if not isinstance(config, dict):
            raise ValueError(f"{cls.__name__}: config must be a dict, got "
                             f"{type(config).__name__}")
        unknown = sorted(set(config) - {C.ACTIVATION_QUANTIZERS, WEIGHT_QUANTIZER_KEY})
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config key \"{unknown[0]}\"")
        weights = config.get(WEIGHT_QUANTIZER_KEY) or {}
        acts = config.get(C.ACTIVATION_QUANTIZERS) or []
        if not isinstance(weights, dict):
            raise ValueError(f"{cls.__name__}: \"{WEIGHT_QUANTIZER_KEY}\" must be an object, got "
                             f"{weights!r}")
        if not isinstance(acts, list):
            raise ValueError(f"{cls.__name__}: \"{C.ACTIVATION_QUANTIZERS}\" must be a list, got "
                             f"{acts!r}")
        return cls({name: deserialize_quantizer(q) for name, q in weights.items()},
                   [deserialize_quantizer(q) for q in acts])

    def __repr__(self) -> str:
        return (f"KerasNodeQuantizationDispatcher(weight_quantizers={self.weight_quantizers!r}, "
                f"activation_quantizers={self.activation_quantizers!r})")
