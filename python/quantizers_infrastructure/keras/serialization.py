# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Quantizers in Keras configs: {"class_name": ..., "config": ...}, the very JSON object of
`quantizer.to_json()`, so a quantizer written by the Keras side loads on the PyTorch side and
back (inferable quantizers), and trainable quantizers rebuild from their configs."""

import json
from typing import Any, Dict

from quantizers_infrastructure.common.base_inferable_quantizer import BaseInferableQuantizer
from quantizers_infrastructure.common.inferable_quantizers import (INFERABLE_QUANTIZER_CLASSES,
                                                                   quantizer_from_json)

def serialize_quantizer(quantizer: BaseInferableQuantizer) -> Dict[str, Any]:
    """{"class_name", "config"} of an inferable or Keras trainable quantizer (JSON values)."""
    if not isinstance(quantizer, BaseInferableQuantizer) or not hasattr(quantizer, "to_json"):
        raise ValueError(f"cannot serialize {type(quantizer).__name__}: quantizers must be qi "
                         f"inferable or trainable quantizers")
    return json.loads(quantizer.to_json())


def deserialize_quantizer(config: Any) -> BaseInferableQuantizer:
    """The quantizer of serialize_quantizer() output (a dict or its JSON text)."""
    if isinstance(config, str):
        text = config
        try:
            config = json.loads(config)
        except json.JSONDecodeError as e:
            raise ValueError(f"quantizer config: malformed JSON: {e}") from None
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str) \
            or not isinstance(config.get("config"), dict):
        raise ValueError(f"quantizer config must be an object with \"class_name\" and \"config\", "
                         f"got {config!r}")
    from quantizers_infrastructure.keras.trainable_quantizers import TRAINABLE_QUANTIZER_CLASSES
    name = config["class_name"]
    if name in INFERABLE_QUANTIZER_CLASSES:
        return quantizer_from_json(json.dumps(config))
    if name in TRAINABLE_QUANTIZER_CLASSES:
        return TRAINABLE_QUANTIZER_CLASSES[name].from_config(config["config"])
    raise ValueError(f"quantizer config: unknown quantizer class \"{name}\" (known: "
                     f"{', '.join(sorted(INFERABLE_QUANTIZER_CLASSES))}, "
                     f"{', '.join(sorted(TRAINABLE_QUANTIZER_CLASSES))})")
