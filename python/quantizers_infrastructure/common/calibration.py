# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Calibration: quantization parameters from data, computed by the C++ core
(qi::calibration) on float32 numpy arrays. Framework-neutral; the front ends pass their tensors
as arrays.

Weights are calibrated exactly on the tensor (per tensor or per channel). Activations are seen
batch by batch through a Histogram (one pass: exact min/max plus a histogram whose bins widen by
powers of two as the range grows), from which every method reads its result.

A "spec" is a ModelQuantizationConfig spec dict: method, n_bits, per_channel, calibration
(minmax, percentile, mse, kl), percentile, num_candidates, training. Which statistic each
method reads, and the rounding of power-of-two thresholds, are the core's
(qi::calibrate_weights, qi::calibrate_activations), shared by every front end."""

import json
from typing import Any, Dict, Optional

import numpy as np

from quantizers_infrastructure import _core
from quantizers_infrastructure.common.enums import QuantizationMethod

Histogram = _core.Histogram


def threshold_max(x: np.ndarray, channel_axis: Optional[int] = None):
    """max |x| per tensor or per channel (list, one value per channel)."""
    return _core.calibration_threshold_max(x, channel_axis)


def range_min_max(x: np.ndarray, channel_axis: Optional[int] = None):
    """(min list, max list) per tensor or per channel."""
    return _core.calibration_range_min_max(x, channel_axis)


def threshold_mse(x: np.ndarray, channel_axis: Optional[int], num_bits: int, signed: bool,
                  power_of_two: bool, num_candidates: int = 100):
    """The symmetric threshold of least squared error among num_candidates fractions of max |x|
    (or, power_of_two, among the powers of two from the max down 8 octaves)."""
    return _core.calibration_threshold_mse(x, channel_axis, num_bits, signed, power_of_two,
                                           num_candidates)


def range_mse(x: np.ndarray, channel_axis: Optional[int], num_bits: int,
              activation: bool = False, num_candidates: int = 100):
    """The uniform range [min * s, max * s] of least squared error, s = k / num_candidates."""
    return _core.calibration_range_mse(x, channel_axis, num_bits, activation, num_candidates)


def weight_params(spec: Dict[str, Any], weight: np.ndarray, channel_axis: int) -> Dict[str, Any]:
    """The calibrated parameters of a weights quantizer (the core's qi::calibrate_weights):
    {"threshold": [...], "signed": True} (symmetric; POT rounded up to powers of two) or
    {"min_range": [...], "max_range": [...]} (uniform), one value per channel along
    channel_axis when spec["per_channel"], else one."""
    return _core.calibrate_weights(json.dumps(spec), weight, channel_axis)


def activation_params(spec: Dict[str, Any], histogram) -> Dict[str, Any]:
    """The calibrated parameters of an activation quantizer from the Histogram of what it saw
    (qi::calibrate_activations): {"threshold": t, "signed": bool} (unsigned when no value was
    negative) or {"min_range": lo, "max_range": hi}."""
    p = _core.calibrate_activations(json.dumps(spec), histogram)
    return {k: (v[0] if isinstance(v, list) else v) for k, v in p.items()}


def method_of(spec: Dict[str, Any]) -> QuantizationMethod:
    """The QuantizationMethod a spec names (spec["method"])."""
    return QuantizationMethod[spec["method"]]


__all__ = ["Histogram", "threshold_max", "range_min_max", "threshold_mse", "range_mse",
           "weight_params", "activation_params", "method_of"]
