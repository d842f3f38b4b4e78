# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Calibration: quantization parameters from data, computed by the C++ core
(qi::calibration) on float32 numpy arrays. Framework-neutral; the front ends pass their tensors
as arrays.

Weights are calibrated exactly on the tensor (per tensor or per channel). Activations are seen
batch by batch through a Histogram (one pass: exact min/max plus a histogram whose bins widen by
powers of two as the range grows), from which every method reads its result.

A "spec" is a ModelQuantizationConfig spec dict: method, n_bits, per_channel, calibration
(minmax, percentile, mse, kl), percentile, num_candidates, training."""

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


def _pot(t: float) -> float:
    """The smallest power of two >= t (power-of-two quantizers take no other threshold)."""
    return _core.power_of_two_ceil(t)


def _is_uniform(spec: Dict[str, Any]) -> bool:
    return spec["method"] == "UNIFORM"


def _normal_axis(channel_axis: int, rank: int) -> int:
    return channel_axis + rank if channel_axis < 0 else channel_axis


def weight_params(spec: Dict[str, Any], weight: np.ndarray, channel_axis: int) -> Dict[str, Any]:
    """The calibrated parameters of a weights quantizer: {"threshold": [...]} (symmetric, POT) or
    {"min_range": [...], "max_range": [...]} (uniform), one value per channel when
    spec["per_channel"], else one."""
    axis = _normal_axis(channel_axis, weight.ndim) if spec["per_channel"] else None
    method, n = spec["calibration"], spec["n_bits"]
    pot = spec["method"] == "POWER_OF_TWO"
    if _is_uniform(spec):
        if method == "minmax":
            lo, hi = range_min_max(weight, axis)
        elif method == "mse":
            lo, hi = range_mse(weight, axis, n, False, spec["num_candidates"])
        else:  # percentile (kl is refused for UNIFORM by the config)
            h = Histogram(2048, axis)
            h.update(weight)
            lo, hi = h.range_percentile(spec["percentile"])
        return {"min_range": list(lo), "max_range": list(hi)}
    if method == "minmax":
        t = threshold_max(weight, axis)
    elif method == "mse":
        t = threshold_mse(weight, axis, n, True, pot, spec["num_candidates"])
    else:
        h = Histogram(2048, axis)
        h.update(weight)
        t = h.threshold_percentile(spec["percentile"]) if method == "percentile" else \
            h.threshold_kl(n, True)
    return {"threshold": [_pot(v) for v in t] if pot else list(t)}


def activation_params(spec: Dict[str, Any], histogram) -> Dict[str, Any]:
    """The calibrated parameters of an activation quantizer from its Histogram:
    {"threshold": t, "signed": bool} (symmetric, POT; unsigned when no value was negative) or
    {"min_range": lo, "max_range": hi} (uniform)."""
    method, n = spec["calibration"], spec["n_bits"]
    if _is_uniform(spec):
        if method == "minmax":
            lo, hi = histogram.range_min_max()
        elif method == "percentile":
            lo, hi = histogram.range_percentile(spec["percentile"])
        else:
            lo, hi = histogram.range_mse(n, spec["num_candidates"])
        return {"min_range": lo[0], "max_range": hi[0]}
    signed = bool(histogram.range_min_max()[0][0] < 0)
    pot = spec["method"] == "POWER_OF_TWO"
    if method == "minmax":
        t = histogram.threshold_max()[0]
    elif method == "percentile":
        t = histogram.threshold_percentile(spec["percentile"])[0]
    elif method == "mse":
        t = histogram.threshold_mse(n, signed, pot, spec["num_candidates"])[0]
    else:
        t = histogram.threshold_kl(n, signed)[0]
    return {"threshold": _pot(t) if pot else t, "signed": signed}


def method_of(spec: Dict[str, Any]) -> QuantizationMethod:
    return QuantizationMethod[spec["method"]]


__all__ = ["Histogram", "threshold_max", "range_min_max", "threshold_mse", "range_mse",
           "weight_params", "activation_params", "method_of"]
