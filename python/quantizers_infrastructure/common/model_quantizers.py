# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The quantizers of a whole-model quantization, from a config spec and what calibration saw:
inferable ones for post-training quantization, the spec's trainable ones (STE, LSQ) for QAT.
The core calibrates and builds each quantizer (qi::calibrate_weights, qi::make_weights_quantizer,
and their activation twins), so every front end gets the same parameters; this module turns the
core's JSON into the front end's classes, given its lookup of trainable quantizer classes."""

import json
from typing import Any, Callable, Dict, Optional

import numpy as np

from quantizers_infrastructure import _core
from quantizers_infrastructure.common.enums import (QuantizationMethod, QuantizationTarget,
                                                     TrainingMethod)
from quantizers_infrastructure.common.inferable_quantizers import quantizer_from_json
from quantizers_infrastructure.common.trainable_configs import (
    TrainableQuantizerActivationConfig, TrainableQuantizerWeightsConfig)

# get_trainable_quantizer_class(target, method, training_method) of a front end.
TrainableLookup = Callable[[QuantizationTarget, Any, TrainingMethod], type]


def _spec_json(spec: Dict[str, Any], training: Optional[str]) -> str:
    return json.dumps(dict(spec, training=training))


def _quantizer(text: str, target: QuantizationTarget, training: Optional[str],
               trainable_class: TrainableLookup):
    if training is None:
        return quantizer_from_json(text)
    config = json.loads(text)["config"]["quantization_config"]
    if target == QuantizationTarget.Weights:
        cfg = TrainableQuantizerWeightsConfig.from_config(config)
        method = cfg.weights_quantization_method
    else:
        cfg = TrainableQuantizerActivationConfig.from_config(config)
        method = cfg.activation_quantization_method
    return trainable_class(target, QuantizationMethod(method), TrainingMethod[training])(cfg)


def weights_quantizer(spec: Dict[str, Any], weight: np.ndarray, axis: int,
                      training: Optional[str], trainable_class: TrainableLookup):
    """The weights quantizer of `spec` calibrated on `weight` (float32 numpy) whose output
    channels lie along `axis` (groups and blocks along its input axis): inferable when
    `training` is None, else the front end's trainable class for it, started from the same
    parameters."""
    text = _core.make_weights_quantizer(_spec_json(spec, training), weight, axis)
    return _quantizer(text, QuantizationTarget.Weights, training, trainable_class)


def activation_quantizer(spec: Dict[str, Any], histogram, training: Optional[str],
                         trainable_class: TrainableLookup):
    """The activation quantizer of `spec` calibrated from the Histogram of what the site saw:
    inferable when `training` is None, else trainable."""
    text = _core.make_activation_quantizer(_spec_json(spec, training), histogram)
    return _quantizer(text, QuantizationTarget.Activation, training, trainable_class)


__all__ = ["weights_quantizer", "activation_quantizer"]
