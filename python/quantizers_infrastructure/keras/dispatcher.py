# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""KerasNodeQuantizationDispatcher: the dispatcher with Keras's main weight attribute ("kernel")
and the Keras trainable quantizer classes (JSON: the shared schema of
NodeQuantizationDispatcher)."""

from typing import Any, Dict

from quantizers_infrastructure.common.node_quantization_dispatcher import (
    WEIGHT_QUANTIZER, NodeQuantizationDispatcher)

WEIGHT_QUANTIZER_KEY = WEIGHT_QUANTIZER


class KerasNodeQuantizationDispatcher(NodeQuantizationDispatcher):
    """A Keras layer's quantizers: weight_quantizers {attribute name: quantizer} (a single
    quantizer means "kernel") and activation_quantizers (one per layer output).

        dispatcher = KerasNodeQuantizationDispatcher(w_quantizer)
        dispatcher = KerasNodeQuantizationDispatcher({"kernel": wq, "bias": bq}, [aq])
    """

    default_weight_attribute = "kernel"

    @classmethod
    def quantizer_from_config(cls, config: Dict[str, Any]):
        from quantizers_infrastructure.keras.serialization import deserialize_quantizer
        return deserialize_quantizer(config)
