# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The Keras front end of quantizers_infrastructure (tf.keras, Keras 2): loads qi's TensorFlow op
library (libqi_tf_ops.so), makes every framework-neutral quantizer callable on TensorFlow
tensors, and holds KerasQuantizationWrapper, KerasNodeQuantizationDispatcher,
KerasActivationQuantizationHolder, the Keras trainable quantizers (STE, LSQ, soft rounding),
convert_to_inferable_quantizers and keras_load_quantized_model.

Imported on the first quantizer call with a TensorFlow tensor, on first use of a Keras name of
the package (qi.KerasQuantizationWrapper, ...), or explicitly. It never imports torch."""

import tensorflow as tf

from quantizers_infrastructure.common.base_inferable_quantizer import register_input_type
from quantizers_infrastructure.keras import ops
from quantizers_infrastructure.keras.dispatcher import KerasNodeQuantizationDispatcher
from quantizers_infrastructure.keras.load import (convert_to_inferable_quantizers,
                                                  keras_load_quantized_model, qi_custom_objects)
from quantizers_infrastructure.keras.metadata import MetadataLayer, add_metadata, get_metadata
from quantizers_infrastructure.keras.ops import library_path
from quantizers_infrastructure.keras.serialization import (deserialize_quantizer,
                                                           serialize_quantizer)
from quantizers_infrastructure.keras.trainable_quantizers import *  # noqa: F401,F403
from quantizers_infrastructure.keras.trainable_quantizers import \
    __all__ as _trainable_names
from quantizers_infrastructure.keras.wrapper import (KerasActivationQuantizationHolder,
                                                     KerasQuantizationWrapper)
from quantizers_infrastructure.keras.model import (convert, fold_batch_norm,  # noqa: E402
                                                   prepare_qat, quantize, quantized_layers)


def _tf_call(quantizer, inputs):
    return ops.fake_quant(quantizer, inputs)


# tf.Tensor covers eager and graph tensors; variables are read first.
register_input_type(tf.Tensor, _tf_call)
register_input_type(tf.Variable, _tf_call)

__all__ = [
    "KerasQuantizationWrapper", "KerasNodeQuantizationDispatcher",
    "KerasActivationQuantizationHolder", "convert_to_inferable_quantizers",
    "keras_load_quantized_model", "qi_custom_objects", "serialize_quantizer",
    "deserialize_quantizer", "library_path", "ops", "MetadataLayer", "add_metadata", "get_metadata",
    "quantize", "prepare_qat", "convert", "fold_batch_norm", "quantized_layers",
] + list(_trainable_names)
