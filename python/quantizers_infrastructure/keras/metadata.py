# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Metadata of Keras models (MCT Quantizers' add_metadata / get_metadata): the dict is kept in a
MetadataLayer held by the model, so that it saves and loads with the .keras file
(keras_load_quantized_model restores model.metadata)."""

from typing import Any, Dict

import tensorflow as tf

from quantizers_infrastructure.common import constants as C
from quantizers_infrastructure.common.metadata import verify_and_init_metadata


# Registered under MCT Quantizers' name ("Custom>MetadataLayer"), so that its .keras files and
# qi's name the same class.
@tf.keras.utils.register_keras_serializable()
class MetadataLayer(tf.keras.layers.Layer):
    """A layer that only holds the metadata dict (in its config)."""

    def __init__(self, metadata: Dict[str, Any] = None, **kwargs):
        self.metadata = metadata
        super().__init__(**kwargs)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config["metadata"] = self.metadata
        return config


def add_metadata(model: tf.keras.Model, metadata: Dict[str, Any]) -> tf.keras.Model:
    """Checks `metadata` (verify_and_init_metadata), adds "framework_version" (TensorFlow's) when
    missing and attaches it: model.metadata, kept in model.metadata_layer (a MetadataLayer).
    Returns the model."""
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"add_metadata: model must be a tf.keras.Model, got "
                         f"{type(model).__name__}")
    metadata = verify_and_init_metadata(metadata)
    metadata.setdefault(C.FRAMEWORK_VERSION, tf.__version__)
    model.metadata_layer = MetadataLayer(metadata=metadata)
    model.metadata = model.metadata_layer.metadata
    return model


def get_metadata(model: tf.keras.Model) -> Dict[str, Any]:
    """model.metadata, or {} when the model has none."""
    return getattr(model, "metadata", {})


__all__ = ["MetadataLayer", "add_metadata", "get_metadata"]
