# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Keras trainable quantizers (REFERENCE.md 8): STE and LSQ, symmetric/POT and uniform, weights
and activations. Their variables are Keras weights created on the wrapping layer
(KerasQuantizationWrapper or KerasActivationQuantizationHolder) in initialize_quantization; the
math runs in qi's TF ops (QiSymmetricQuant, QiUniformQuant) with C++ gradients.

Numerics: the grid is qi's torch profile (round half to even, as qi's PyTorch trainable
quantizers), so a Keras and a PyTorch QAT step give the same numbers, and convert2inferable()
returns an inferable quantizer (profile "torch") whose output equals the trainable quantizer's
output bit for bit. (MCT's Keras STE quantizers ran TF's fake_quant, round half up: the one
deliberate departure.)"""

import math
from typing import List, Optional

import numpy as np
import tensorflow as tf

from quantizers_infrastructure.common.base_inferable_quantizer import (BaseInferableQuantizer,
                                                                       mark_quantizer)
from quantizers_infrastructure.common.base_trainable_quantizer import (GROUP, VAR,
                                                                       BaseTrainableQuantizer)
from quantizers_infrastructure.common.enums import (QuantizationMethod, QuantizationTarget,
                                                    TrainingMethod, VariableGroup)
from quantizers_infrastructure.common.inferable_quantizers import (
    ActivationPOTInferableQuantizer, ActivationSymmetricInferableQuantizer,
    ActivationUniformInferableQuantizer, WeightsPOTInferableQuantizer,
    WeightsSymmetricInferableQuantizer, WeightsUniformInferableQuantizer)
from quantizers_infrastructure.common.trainable_configs import MIN_THRESHOLD
from quantizers_infrastructure.keras import ops
from quantizers_infrastructure.keras.serialization import (TRAINABLE_QUANTIZER_CLASSES,
                                                           register_trainable_quantizer)

THRESHOLD_TENSOR = "ptq_threshold_tensor"
MIN_SUFFIX = "min"
MAX_SUFFIX = "max"


def _pot(t: np.ndarray, min_threshold: float = MIN_THRESHOLD) -> np.ndarray:
    """2^ceil(log2(max(t, min_threshold))): how POT trainable quantizers force thresholds."""
    return np.power(2.0, np.ceil(np.log2(np.maximum(t, min_threshold))))


def _values(params: dict, key: str, who: str) -> np.ndarray:
    if key not in params:
        raise ValueError(f"{who}: quantization params must hold \"{key}\", got keys "
                         f"{sorted(params)}")
    return np.asarray(params[key], dtype=np.float64).reshape(-1)


class BaseKerasTrainableQuantizer(BaseTrainableQuantizer):
    """Base of the Keras trainable quantizers: variables are Keras weights of the wrapping layer,
    recorded with add_quantizer_variable; __call__(inputs, training) runs a qi TF op."""

    def get_trainable_variables(self, group: VariableGroup) -> List[tf.Variable]:
        """The trainable variables of `group` (ValueError if quantization params are frozen but
        some were created trainable)."""
        out = [p[VAR] for p in self.quantizer_parameters.values()
               if p[GROUP] == group and p[VAR].trainable]
        if self.freeze_quant_params and group == VariableGroup.QPARAMS and out:
            raise ValueError(f"{type(self).__name__}: quantization parameters are frozen but "
                             f"{len(out)} were created trainable")
        return out

    def _add(self, layer, name: str, values: np.ndarray, trainable: bool,
             group: VariableGroup = VariableGroup.QPARAMS) -> tf.Variable:
        values = np.asarray(values, dtype=np.float32)
        var = layer.add_weight(name=name, shape=values.shape,
                               initializer=tf.keras.initializers.Constant(values),
                               trainable=trainable, dtype=tf.float32)
        self.add_quantizer_variable(name.rsplit("/", 1)[-1], var, group)
        return var

    def _var(self, suffix: str) -> tf.Variable:
        for key, p in self.quantizer_parameters.items():
            if key.endswith(suffix):
                return p[VAR]
        raise ValueError(f"{type(self).__name__}: no \"{suffix}\" variable; the wrapper must call "
                         f"initialize_quantization first (build the layer)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.quantization_config!r})"


# ---- weights ------------------------------------------------------------------------------------

class _WeightsSymmetricBase(BaseKerasTrainableQuantizer):
    mode = "ste"
    trainable_threshold = False

    def __init__(self, quantization_config, freeze_quant_params: bool = False):
        super().__init__(quantization_config, freeze_quant_params)
        cfg = quantization_config
        who = type(self).__name__
        t = _values(cfg.weights_quantization_params, "threshold", who)
        self.power_of_two = cfg.weights_quantization_method == QuantizationMethod.POWER_OF_TWO
        if self.power_of_two:
            t = _pot(t)
        self.num_bits = cfg.weights_n_bits
        self.per_channel = cfg.weights_per_channel_threshold
        self.channel_axis = cfg.weights_channels_axis
        self.threshold_values = t if self.per_channel else t[:1]
        if not self.per_channel and t.size != 1:
            raise ValueError(f"{who}: per-tensor quantization needs one threshold, got {t.size}")
        max_int = 2 ** (self.num_bits - 1) - 1
        self.grad_scale = 1.0 / math.sqrt(max_int * self.threshold_values.size)
        self.input_rank = None

    def initialize_quantization(self, tensor_shape, name: str, layer) -> None:
        self.input_rank = None if tensor_shape is None else len(tensor_shape)
        trainable = self.trainable_threshold and not self.freeze_quant_params
        self._add(layer, f"{name}{THRESHOLD_TENSOR}", self.threshold_values, trainable)

    def __call__(self, inputs, training=True):
        return ops.symmetric_quant(inputs, self._var(THRESHOLD_TENSOR), self.num_bits, True,
                                   self.channel_axis if self.per_channel else None, self.mode,
                                   self.grad_scale)

    def convert2inferable(self) -> BaseInferableQuantizer:
        t = self._var(THRESHOLD_TENSOR).numpy().astype(np.float64).reshape(-1)
        if self.power_of_two:
            t = np.power(2.0, np.ceil(np.log2(t)))
        cls = WeightsPOTInferableQuantizer if self.power_of_two else \
            WeightsSymmetricInferableQuantizer
        return cls(num_bits=self.num_bits, threshold=[float(v) for v in t],
                   per_channel=self.per_channel,
                   channel_axis=self.channel_axis if self.per_channel else None,
                   input_rank=self.input_rank)


@register_trainable_quantizer
@mark_quantizer(QuantizationTarget.Weights,
                [QuantizationMethod.POWER_OF_TWO, QuantizationMethod.SYMMETRIC],
                TrainingMethod.STE)
class STEWeightQATQuantizer(_WeightsSymmetricBase):
    """STE weights quantizer (POT, SYMMETRIC): fixed threshold, dq/dw = 1."""


@register_trainable_quantizer
@mark_quantizer(QuantizationTarget.Weights,
                [QuantizationMethod.POWER_OF_TWO, QuantizationMethod.SYMMETRIC],
                TrainingMethod.LSQ)
class LSQWeightQATQuantizer(_WeightsSymmetricBase):
    """LSQ weights quantizer (POT, SYMMETRIC): learned threshold, gradient scale
    1 / sqrt(max_int * number of thresholds)."""

    mode = "lsq"
    trainable_threshold = True


class _WeightsUniformBase(BaseKerasTrainableQuantizer):
    mode = "ste"
    trainable_range = False

    def __init__(self, quantization_config, freeze_quant_params: bool = False):
        super().__init__(quantization_config, freeze_quant_params)
        cfg = quantization_config
        who = type(self).__name__
        lo = _values(cfg.weights_quantization_params, "range_min", who)
        hi = _values(cfg.weights_quantization_params, "range_max", who)
        if lo.size != hi.size:
            raise ValueError(f"{who}: range_min and range_max must have the same size, got "
                             f"{lo.size} and {hi.size}")
        self.num_bits = cfg.weights_n_bits
        self.per_channel = cfg.weights_per_channel_threshold
        self.channel_axis = cfg.weights_channels_axis
        if not self.per_channel and lo.size != 1:
            raise ValueError(f"{who}: per-tensor quantization needs one range, got {lo.size}")
        self.min_values, self.max_values = lo, hi
        self.grad_scale = 1.0 / math.sqrt((2 ** self.num_bits - 1) * lo.size)
        self.input_rank = None

    def initialize_quantization(self, tensor_shape, name: str, layer) -> None:
        self.input_rank = None if tensor_shape is None else len(tensor_shape)
        trainable = self.trainable_range and not self.freeze_quant_params
        self._add(layer, f"{name}{MIN_SUFFIX}", self.min_values, trainable)
        self._add(layer, f"{name}{MAX_SUFFIX}", self.max_values, trainable)

    def __call__(self, inputs, training=True):
        return ops.uniform_quant(inputs, self._var(MIN_SUFFIX), self._var(MAX_SUFFIX),
                                 self.num_bits, self.channel_axis if self.per_channel else None,
                                 self.mode, self.grad_scale, activation=False)

    def convert2inferable(self) -> BaseInferableQuantizer:
        # The raw float32 range: the inferable quantizer adjusts it exactly as the op did.
        lo = [float(v) for v in self._var(MIN_SUFFIX).numpy().reshape(-1)]
        hi = [float(v) for v in self._var(MAX_SUFFIX).numpy().reshape(-1)]
        return WeightsUniformInferableQuantizer(
            num_bits=self.num_bits, min_range=lo, max_range=hi, per_channel=self.per_channel,
            channel_axis=self.channel_axis if self.per_channel else None,
            input_rank=self.input_rank)


@register_trainable_quantizer
@mark_quantizer(QuantizationTarget.Weights, [QuantizationMethod.UNIFORM], TrainingMethod.STE)
class STEUniformWeightQATQuantizer(_WeightsUniformBase):
    """STE uniform weights quantizer: fixed range, dq/dw = 1."""


@register_trainable_quantizer
@mark_quantizer(QuantizationTarget.Weights, [QuantizationMethod.UNIFORM], TrainingMethod.LSQ)
class LSQUniformWeightQATQuantizer(_WeightsUniformBase):
    """LSQ uniform weights quantizer: learned range, gradient scale
    1 / sqrt((2^n - 1) * number of ranges)."""

    mode = "lsq"
    trainable_range = True


# ---- activations --------------------------------------------------------------------------------

class _ActivationSymmetricBase(BaseKerasTrainableQuantizer):
    mode = "ste"
    trainable_threshold = False

    def __init__(self, quantization_config, freeze_quant_params: bool = False):
        super().__init__(quantization_config, freeze_quant_params)
        cfg = quantization_config
        who = type(self).__name__
        t = _values(cfg.activation_quantization_params, "threshold", who)
        if t.size != 1:
            raise ValueError(f"{who}: activation quantization needs one threshold, got {t.size}")
        self.power_of_two = cfg.activation_quantization_method == QuantizationMethod.POWER_OF_TWO
        self.threshold_value = _pot(t) if self.power_of_two else t
        self.signed = bool(cfg.activation_quantization_params.get("is_signed", True))
        self.num_bits = cfg.activation_n_bits
        self.max_int = 2 ** (self.num_bits - int(self.signed)) - 1

    def initialize_quantization(self, tensor_shape, name: str, layer) -> None:
        trainable = self.trainable_threshold and not self.freeze_quant_params
        self._add(layer, f"{name}{THRESHOLD_TENSOR}", self.threshold_value, trainable)

    def __call__(self, inputs, training=True):
        channels = inputs.shape[-1] if inputs.shape.rank else 1
        grad_scale = 1.0 / math.sqrt(self.max_int * (channels or 1))
        return ops.symmetric_quant(inputs, self._var(THRESHOLD_TENSOR), self.num_bits,
                                   self.signed, None, self.mode, grad_scale)

    def convert2inferable(self) -> BaseInferableQuantizer:
        t = float(self._var(THRESHOLD_TENSOR).numpy().reshape(-1)[0])
        if self.power_of_two:
            return ActivationPOTInferableQuantizer(num_bits=self.num_bits,
                                                   threshold=[2.0 ** math.ceil(math.log2(t))],
                                                   signed=self.signed)
        return ActivationSymmetricInferableQuantizer(num_bits=self.num_bits, threshold=[t],
                                                     signed=self.signed)


@register_trainable_quantizer
@mark_quantizer(QuantizationTarget.Activation,
                [QuantizationMethod.POWER_OF_TWO, QuantizationMethod.SYMMETRIC],
                TrainingMethod.STE)
class STESymmetricActivationTrainableQuantizer(_ActivationSymmetricBase):
    """STE activation quantizer (POT, SYMMETRIC): fixed threshold."""


@register_trainable_quantizer
@mark_quantizer(QuantizationTarget.Activation,
                [QuantizationMethod.POWER_OF_TWO, QuantizationMethod.SYMMETRIC],
                TrainingMethod.LSQ)
class LSQSymmetricActivationTrainableQuantizer(_ActivationSymmetricBase):
    """LSQ activation quantizer (POT, SYMMETRIC): learned threshold, gradient scale
    1 / sqrt(max_int * channels) with channels = inputs.shape[-1] (NHWC)."""

    mode = "lsq"
    trainable_threshold = True


class _ActivationUniformBase(BaseKerasTrainableQuantizer):
    mode = "ste"
    trainable_range = False

    def __init__(self, quantization_config, freeze_quant_params: bool = False):
        super().__init__(quantization_config, freeze_quant_params)
        cfg = quantization_config
        who = type(self).__name__
        lo = _values(cfg.activation_quantization_params, "range_min", who)
        hi = _values(cfg.activation_quantization_params, "range_max", who)
        if lo.size != 1 or hi.size != 1:
            raise ValueError(f"{who}: activation quantization needs one range, got {lo.size} and "
                             f"{hi.size} values")
        self.min_value, self.max_value = lo, hi
        self.num_bits = cfg.activation_n_bits

    def initialize_quantization(self, tensor_shape, name: str, layer) -> None:
        trainable = self.trainable_range and not self.freeze_quant_params
        self._add(layer, f"{name}{MIN_SUFFIX}", self.min_value, trainable)
        self._add(layer, f"{name}{MAX_SUFFIX}", self.max_value, trainable)

    def __call__(self, inputs, training=True):
        channels = inputs.shape[-1] if inputs.shape.rank else 1
        grad_scale = 1.0 / math.sqrt((2 ** self.num_bits - 1) * (channels or 1))
        return ops.uniform_quant(inputs, self._var(MIN_SUFFIX), self._var(MAX_SUFFIX),
                                 self.num_bits, None, self.mode, grad_scale, activation=True)

    def convert2inferable(self) -> BaseInferableQuantizer:
        lo = float(self._var(MIN_SUFFIX).numpy().reshape(-1)[0])
        hi = float(self._var(MAX_SUFFIX).numpy().reshape(-1)[0])
        return ActivationUniformInferableQuantizer(num_bits=self.num_bits, min_range=[lo],
                                                   max_range=[hi])


@register_trainable_quantizer
@mark_quantizer(QuantizationTarget.Activation, [QuantizationMethod.UNIFORM], TrainingMethod.STE)
class STEUniformActivationTrainableQuantizer(_ActivationUniformBase):
    """STE uniform activation quantizer: fixed range."""


@register_trainable_quantizer
@mark_quantizer(QuantizationTarget.Activation, [QuantizationMethod.UNIFORM], TrainingMethod.LSQ)
class LSQUniformActivationTrainableQuantizer(_ActivationUniformBase):
    """LSQ uniform activation quantizer: learned range."""

    mode = "lsq"
    trainable_range = True


def get_trainable_quantizer_class(quant_target: QuantizationTarget,
                                  quant_method: QuantizationMethod,
                                  training_method: TrainingMethod) -> type:
    """The Keras trainable quantizer class for (target, method, training method) (REFERENCE.md
    7.3); ValueError unless exactly one matches."""
    found = [cls for cls in TRAINABLE_QUANTIZER_CLASSES.values()
             if cls.quantization_target == quant_target and quant_method in cls.quantization_method
             and cls.identifier == training_method]
    if len(found) != 1:
        raise ValueError(f"Found {len(found)} quantizers for target {quant_target}, method "
                         f"{quant_method} and training method {training_method}; expected one")
    return found[0]


__all__ = ["BaseKerasTrainableQuantizer", "STEWeightQATQuantizer", "LSQWeightQATQuantizer",
           "STEUniformWeightQATQuantizer", "LSQUniformWeightQATQuantizer",
           "STESymmetricActivationTrainableQuantizer", "LSQSymmetricActivationTrainableQuantizer",
           "STEUniformActivationTrainableQuantizer", "LSQUniformActivationTrainableQuantizer",
           "get_trainable_quantizer_class"]
