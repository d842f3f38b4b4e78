# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The quantizers of a whole-model quantization, from a config spec and calibrated parameters:
inferable ones for post-training quantization, the spec's trainable ones (STE, LSQ) for QAT.
Shared by the front ends; each passes its own lookup of trainable quantizer classes."""

from typing import Any, Callable, Dict, Optional

import numpy as np

from quantizers_infrastructure.common import calibration as cal
from quantizers_infrastructure.common.enums import QuantizationTarget, TrainingMethod
from quantizers_infrastructure.common.inferable_quantizers import get_inferable_quantizer_class
from quantizers_infrastructure.common.trainable_configs import (
    TrainableQuantizerActivationConfig, TrainableQuantizerWeightsConfig)

# get_trainable_quantizer_class(target, method, training_method) of a front end.
TrainableLookup = Callable[[QuantizationTarget, Any, TrainingMethod], type]


def weights_quantizer(spec: Dict[str, Any], params: Dict[str, Any], rank: int, axis: int,
                      training: Optional[str], trainable_class: TrainableLookup):
    """The weights quantizer of `spec` with the calibrated `params` (cal.weight_params) for a
    weight of `rank` dimensions whose output channels are `axis`: inferable when `training` is
    None, else the front end's trainable class for it, started from the same parameters."""
    method = cal.method_of(spec)
    per_channel = spec["per_channel"]
    if training is None:
        cls = get_inferable_quantizer_class(QuantizationTarget.Weights, method)
        return cls(**dict(params, num_bits=spec["n_bits"], per_channel=per_channel,
                          channel_axis=axis, input_rank=rank))
    shape = [1] * rank
    shape[axis] = -1

    def arr(values):
        a = np.asarray(values, dtype=np.float64)
        return a.reshape(shape) if per_channel else float(a[0])
    qparams = {"threshold": arr(params["threshold"])} if "threshold" in params else {
        "range_min": arr(params["min_range"]), "range_max": arr(params["max_range"])}
    cfg = TrainableQuantizerWeightsConfig(method, spec["n_bits"], qparams, True, axis, per_channel)
    return trainable_class(QuantizationTarget.Weights, method, TrainingMethod[training])(cfg)


def activation_quantizer(spec: Dict[str, Any], histogram, training: Optional[str],
                         trainable_class: TrainableLookup):
    """The activation quantizer of `spec` calibrated from the Histogram of what the site saw
    (cal.activation_params): inferable when `training` is None, else trainable."""
    params = cal.activation_params(spec, histogram)
    method = cal.method_of(spec)
    if training is None:
        cls = get_inferable_quantizer_class(QuantizationTarget.Activation, method)
        if "threshold" in params:
            return cls(num_bits=spec["n_bits"], threshold=[params["threshold"]],
                       signed=params["signed"])
        return cls(num_bits=spec["n_bits"], min_range=[params["min_range"]],
                   max_range=[params["max_range"]])
    if "threshold" in params:
        qparams = {"threshold": params["threshold"], "is_signed": params["signed"]}
    else:
        qparams = {"range_min": params["min_range"], "range_max": params["max_range"]}
    cfg = TrainableQuantizerActivationConfig(method, spec["n_bits"], qparams)
    return trainable_class(QuantizationTarget.Activation, method, TrainingMethod[training])(cfg)


__all__ = ["weights_quantizer", "activation_quantizer"]
