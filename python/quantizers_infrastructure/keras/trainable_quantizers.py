# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The Keras trainable quantizers: one class per entry of the core's trainable registry (STE and
LSQ, symmetric/POT and uniform, weights and activations; soft rounding), generated here.

Their policy is the core's; this module only binds it: variables are Keras weights of the
wrapping layer named "<name><variable>" (as MCT names them), and the forward is one qi TF op with
the arguments the core names. Activations keep channels last (NHWC) for LSQ's gradient scale.
The grid is qi's torch profile (round half to even), so Keras, PyTorch and C++ training give
the same numbers and convert to the same inferable quantizer."""

import sys
from typing import Optional

import numpy as np
import tensorflow as tf

from quantizers_infrastructure.common.base_trainable_quantizer import (
    GROUP, VAR, BaseTrainableQuantizer, find_trainable_class, generate_trainable_classes)
from quantizers_infrastructure.common.enums import (QuantizationMethod, QuantizationTarget,
                                                    TrainingMethod, VariableGroup)
from quantizers_infrastructure.keras import ops


class BaseKerasTrainableQuantizer(BaseTrainableQuantizer):
    """Base of the Keras trainable quantizers: variables are Keras weights of the wrapping layer,
    recorded with add_quantizer_variable; __call__(inputs, training) runs a qi TF op."""

    activation_channel_axis = -1  # NHWC

    def _create_variable(self, layer, name: str, variable: str, initial: np.ndarray,
                         trainable: bool) -> tf.Variable:
        return layer.add_weight(name=f"{name}{variable}", shape=initial.shape,
                                initializer=tf.keras.initializers.Constant(initial),
                                trainable=trainable, dtype=tf.float32)

    def _trains(self, variable) -> bool:
        return variable.trainable

    def _values(self, variable) -> np.ndarray:
        return variable.numpy()

    def _weight_values(self, layer, name: str) -> np.ndarray:
        owner = getattr(layer, "layer", layer)
        w = owner.__dict__.get(name, getattr(owner, name, None))
        if not isinstance(w, tf.Variable):
            raise ValueError(f"{type(self).__name__}: initialize_quantization needs the weight "
                             f"\"{name}\" of the wrapped layer")
        return w.numpy()

    def _run(self, inputs, training):
        if training is None:
            training = False
        if tf.is_tensor(training):
            return tf.cond(tf.cast(training, tf.bool), lambda: self._op(inputs, True),
                           lambda: self._op(inputs, False))
        return self._op(inputs, bool(training))

    def _op(self, inputs, training: bool):
        op, args, requires_grad, kwargs, empty = self._forward[training]
        tensors = {a: tf.zeros([0], tf.float32) for a in empty}
        tensors.update({a: (self.quantizer_parameters[v][VAR] if requires_grad
                            else tf.stop_gradient(self.quantizer_parameters[v][VAR]))
                        for a, v in args})
        return getattr(ops, op)(inputs, **tensors, **kwargs)

    def freeze_quant_params_now(self) -> None:
        """Stops training the quantization parameters (QPARAMS)."""
        for v in self.quantizer_parameters.values():
            if v[GROUP] == VariableGroup.QPARAMS:
                v[VAR]._trainable = False  # noqa: SLF001 (tf.Variable has no public setter)
        self.freeze_quant_params = True


class BaseKerasQATWeightTrainableQuantizer(BaseKerasTrainableQuantizer):
    """Base of the QAT weights quantizers."""


class BaseKerasActivationTrainableQuantizer(BaseKerasTrainableQuantizer):
    """Base of the activation trainable quantizers."""


class BaseKerasGPTQTrainableQuantizer(BaseKerasTrainableQuantizer):
    """Base of the GPTQ (soft rounding) weights quantizers."""


TRAINABLE_QUANTIZER_CLASSES = generate_trainable_classes(
    sys.modules[__name__].__dict__, {"qat_weights": BaseKerasQATWeightTrainableQuantizer,
                                     "activation": BaseKerasActivationTrainableQuantizer,
                                     "gptq": BaseKerasGPTQTrainableQuantizer})


def get_trainable_quantizer_class(quant_target: QuantizationTarget,
                                  quant_method: QuantizationMethod,
                                  training_method: Optional[TrainingMethod] = None,
                                  quantizer_base_class=None, *,
                                  quantizer_type=None, quantizer_id=None) -> type:
    """The Keras trainable class for (target, method, training method) (the core's lookup, or
    MCT's search of quantizer_base_class's subclasses); ValueError unless exactly one matches.
    The training method may be given as training_method, quantizer_type (the seed era's
    keyword) or quantizer_id (MCT's)."""
    return find_trainable_class(TRAINABLE_QUANTIZER_CLASSES, quant_target, quant_method,
                                training_method, quantizer_base_class, quantizer_type,
                                quantizer_id)


__all__ = ["BaseKerasTrainableQuantizer", "BaseKerasQATWeightTrainableQuantizer",
           "BaseKerasActivationTrainableQuantizer", "BaseKerasGPTQTrainableQuantizer",
           "get_trainable_quantizer_class", "TRAINABLE_QUANTIZER_CLASSES",
           ] + list(TRAINABLE_QUANTIZER_CLASSES)
