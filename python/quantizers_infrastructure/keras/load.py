# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""keras_load_quantized_model and convert_to_inferable_quantizers."""

from typing import Any, Dict, Optional

import tensorflow as tf

from quantizers_infrastructure.common.inferable_quantizers import INFERABLE_QUANTIZER_CLASSES
from quantizers_infrastructure.keras.dispatcher import KerasNodeQuantizationDispatcher
from quantizers_infrastructure.keras.metadata import MetadataLayer
from quantizers_infrastructure.keras.trainable_quantizers import TRAINABLE_QUANTIZER_CLASSES
from quantizers_infrastructure.keras.wrapper import (KerasActivationQuantizationHolder,
                                                     KerasQuantizationWrapper)


def qi_custom_objects() -> Dict[str, Any]:
    """Every qi class a Keras model file may name, by class name and by registered name."""
    objects: Dict[str, Any] = {}
    for cls in (KerasQuantizationWrapper, KerasActivationQuantizationHolder):
        objects[cls.__name__] = cls
        objects[tf.keras.utils.get_registered_name(cls)] = cls
    objects[KerasNodeQuantizationDispatcher.__name__] = KerasNodeQuantizationDispatcher
    objects[MetadataLayer.__name__] = MetadataLayer
    objects[tf.keras.utils.get_registered_name(MetadataLayer)] = MetadataLayer
    objects.update(INFERABLE_QUANTIZER_CLASSES)
    objects.update(TRAINABLE_QUANTIZER_CLASSES)
    return objects


def keras_load_quantized_model(filepath: str, custom_objects: Optional[Dict[str, Any]] = None,
                               compile: bool = True, options=None) -> tf.keras.Model:
    """tf.keras.models.load_model with qi's layers and quantizers as custom objects (the user's
    custom_objects win). `options` is passed only when given (it does not apply to .keras
    files). A model saved with add_metadata gets its model.metadata back. Files written by MCT
    Quantizers load too (its quantizers become qi's, with the tf profile)."""
    objects = qi_custom_objects()
    objects.update(custom_objects or {})
    kwargs = {} if options is None else {"options": options}
    model = tf.keras.models.load_model(filepath, custom_objects=objects, compile=compile, **kwargs)
    # add_metadata's dict, kept in a MetadataLayer (the first one, as MCT Quantizers reads it).
    # By name: where MCT Quantizers is imported too, Keras may rebuild the layer as its class
    # of that name (both register as "Custom>MetadataLayer").
    holders = [layer for layer in getattr(model, "layers", [])
               if type(layer).__name__ == MetadataLayer.__name__
               and isinstance(getattr(layer, "metadata", None), dict)]
    if holders:
        model.metadata_layer = holders[0]
        model.metadata = holders[0].metadata
    return model


def convert_to_inferable_quantizers(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of `model` (Sequential or functional) in which every KerasQuantizationWrapper and
    KerasActivationQuantizationHolder with trainable quantizers holds their convert2inferable()
    results instead, with the same weights. The copy's outputs equal the original's in
    inference mode, bit for bit. A single wrapper or holder may be passed too."""
    if isinstance(model, (KerasQuantizationWrapper, KerasActivationQuantizationHolder)):
        return model.convert_to_inferable_quantizers() or model
    converted = {}

    def clone(layer):
        if isinstance(layer, (KerasQuantizationWrapper, KerasActivationQuantizationHolder)) \
                and layer.has_trainable_quantizers:
            new = layer.convert_to_inferable_quantizers()
            converted[id(new)] = True
            return new
        return layer.__class__.from_config(layer.get_config())

    new_model = tf.keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, new_model.layers):
        if id(new) not in converted and old.weights:
            new.set_weights(old.get_weights())
    return new_model
