# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Quantizers in Keras configs: {"class_name": ..., "config": ...}, the very JSON object of
`quantizer.to_json()`, so a quantizer written by the Keras side loads on the PyTorch side and
back (inferable quantizers), and trainable quantizers rebuild from their configs."""

import json
from typing import Any, Dict

from quantizers_infrastructure.common import constants as C
from quantizers_infrastructure.common.base_inferable_quantizer import BaseInferableQuantizer
from quantizers_infrastructure.common.inferable_quantizers import (INFERABLE_QUANTIZER_CLASSES,
                                                                   quantizer_from_json)

# Where MCT Quantizers' Keras quantizers live: a .keras file it wrote names them by module.
MCTQ_KERAS_MODULE = "mct_quantizers.keras"


def serialize_quantizer(quantizer: BaseInferableQuantizer) -> Dict[str, Any]:
    """{"class_name", "config"} of an inferable or Keras trainable quantizer (JSON values); a
    foreign quantizer (a BaseInferableQuantizer that is not qi's, e.g. MCT's own trainable
    ones) in Keras's own serialized form."""
    if not isinstance(quantizer, BaseInferableQuantizer):
        raise ValueError(f"cannot serialize {type(quantizer).__name__}: quantizers must derive "
                         f"from BaseInferableQuantizer")
    if not hasattr(quantizer, "to_json"):
        import tensorflow as tf
        return tf.keras.utils.serialize_keras_object(quantizer)
    return json.loads(quantizer.to_json())


def _from_mct_quantizers(config: Dict[str, Any]) -> BaseInferableQuantizer:
    """A quantizer that MCT Quantizers serialized into a .keras file ({"module":
    "mct_quantizers.keras.quantizers...", "class_name", "config", "registered_name"}): qi's
    class of that name built from that config with the tf profile, the numerics of MCT
    Quantizers' Keras quantizers."""
    name = config["class_name"]
    cls = INFERABLE_QUANTIZER_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"quantizer config: MCT Quantizers' class \"{name}\" has no qi "
                         f"counterpart (known: {', '.join(sorted(INFERABLE_QUANTIZER_CLASSES))})")
    kwargs = dict(config["config"])
    if C.PROFILE in cls._signature.parameters:
        kwargs.setdefault(C.PROFILE, "tf")
    return cls(**kwargs)


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
    module = config.get("module")
    if isinstance(module, str) and module.startswith(MCTQ_KERAS_MODULE):
        return _from_mct_quantizers(config)
    if "module" in config or "registered_name" in config:
        # Keras's form: a foreign quantizer serialized by serialize_quantizer (or by Keras).
        import tensorflow as tf
        return tf.keras.utils.deserialize_keras_object(config)
    name = config["class_name"]
    if name in INFERABLE_QUANTIZER_CLASSES:
        return quantizer_from_json(json.dumps(config))
    if name in TRAINABLE_QUANTIZER_CLASSES:
        return TRAINABLE_QUANTIZER_CLASSES[name].from_config(config["config"])
    raise ValueError(f"quantizer config: unknown quantizer class \"{name}\" (known: "
                     f"{', '.join(sorted(INFERABLE_QUANTIZER_CLASSES))}, "
                     f"{', '.join(sorted(TRAINABLE_QUANTIZER_CLASSES))})")
