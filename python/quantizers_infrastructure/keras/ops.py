# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""qi's TensorFlow custom ops (libqi_tf_ops.so, built from tf/qi_tf_ops.cc) and their gradients.

    fake_quant(quantizer, x)            any inferable quantizer (its to_json() text is an attr)
    symmetric_quant(x, threshold, ...)  trainable symmetric/POT, STE or LSQ gradients
    uniform_quant(x, min, max, ...)     trainable uniform, STE or LSQ gradients
    format_quant(x, scale, ...)         trainable FLOAT, MX and NVFP4, STE or LSQ gradients
    soft_round(w, alpha, ...)           soft rounding (gradient to alpha)
    soft_round_regularization

All float32, CPU, eager and inside tf.function. Core errors raise ValueError with the core's
message (in graph mode the ops' shape functions run the same checks at construction)."""

import os
import re
from typing import Optional

import tensorflow as tf

_LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "libqi_tf_ops.so")
if not os.path.exists(_LIBRARY):
    raise ImportError(f"qi's TensorFlow op library is not built ({_LIBRARY} is missing); run "
                      "scripts/qi build (CMake option QI_WITH_TF)")
_ops = tf.load_op_library(_LIBRARY)


def library_path() -> str:
    """Path of libqi_tf_ops.so (for tf.load_op_library in another process)."""
    return _LIBRARY


_EAGER_PREFIX = re.compile(r"^\{\{function_node [^}]*\}\}\s*")
_EAGER_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\].*$", re.S)
_GRAPH_SUFFIX = re.compile(r"\s*for '\{\{node .*$", re.S)


def core_message(e: Exception) -> str:
    """The core's message inside a TensorFlow error (eager or graph construction)."""
    text = getattr(e, "message", None) or str(e)
    text = _EAGER_PREFIX.sub("", text)
    text = _EAGER_SUFFIX.sub("", text)
    text = _GRAPH_SUFFIX.sub("", text)
    return text.strip()


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (tf.errors.InvalidArgumentError, ValueError) as e:
        raise ValueError(core_message(e)) from None


def _float32(x, who: str, arg: str = "inputs") -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.float32:
        raise ValueError(f"{who}: {arg} must be float32, got {x.dtype.name}")
    return x


def quantizer_json(quantizer) -> str:
    """The quantizer's to_json() text (computed once: quantizers are immutable)."""
    return quantizer.to_json()


def fake_quant(quantizer, x) -> tf.Tensor:
    """Q(x) for an inferable quantizer, through the QiFakeQuant op. The gradient is the
    straight-through identity (dQ/dx = 1). Quantizers with tf_native_fake_quant run
    TensorFlow's fake_quant op instead where it computes the same bits (native_fake_quant)."""
    x = _float32(x, type(quantizer).__name__)
    if getattr(quantizer, "tf_native_fake_quant", False):
        y = native_fake_quant(quantizer, x)
        if y is not None:
            return y
    return _run(_ops.qi_fake_quant, x, quantizer=quantizer_json(quantizer))


def native_fake_quant(quantizer, x: tf.Tensor) -> Optional[tf.Tensor]:
    """Q(x) through TensorFlow's fake_quant_with_min_max_vars(_per_channel) when that is the
    quantizer's own formula (the tf profile of an affine quantizer, per tensor or per channel;
    its gradient is TensorFlow's: zero outside the range), else None. This is what MCT
    Quantizers' Keras quantizers run, and what TFLite converts to int8 kernels."""
    plan = quantizer.plan
    bits = int(quantizer.get_config().get("num_bits", 0))
    if plan.get("kind") != "affine_tf" or not 2 <= bits <= 16:
        return None
    lo, hi = quantizer.tf_range()
    config = quantizer.get_config()
    if not config.get("per_channel"):
        if len(lo) != 1:
            return None
        return tf.quantization.fake_quant_with_min_max_vars(x, min=lo[0], max=hi[0],
                                                            num_bits=bits, narrow_range=False)
    rank, axis = x.shape.rank, config.get("channel_axis")
    if rank is None or axis is None or x.shape[axis] != len(lo):
        return None
    # TensorFlow's per-channel op takes the last axis: another channel axis is swapped with it
    # around the op (as MCT Quantizers does), which TFLite folds into the weights.
    axis %= rank
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    if axis != rank - 1:
        x = tf.transpose(x, perm=perm)
    y = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        x, min=tf.constant(lo, tf.float32), max=tf.constant(hi, tf.float32), num_bits=bits,
        narrow_range=False)
    return tf.transpose(y, perm=perm) if axis != rank - 1 else y


def _optional_attrs(name: str, value: Optional[int]):
    return {f"has_{name}": value is not None, name: 0 if value is None else int(value)}


def _group_attrs(group_size: Optional[int], group_axis: int):
    return {**_optional_attrs("group_size", group_size), "group_axis": int(group_axis)}


def _double(value) -> tf.Tensor:
    # float64 inputs: TensorFlow's float attributes are 32-bit, qi's parameters are doubles.
    return tf.constant(float(value), tf.float64)


def _check_mode(mode: str, who: str) -> None:
    if mode not in ("ste", "lsq"):
        raise ValueError(f"{who}: mode must be \"ste\" or \"lsq\", got {mode!r}")


def symmetric_quant(x, threshold, num_bits: int, is_signed: bool = True,
                    channel_axis: Optional[int] = None, mode: str = "ste",
                    grad_scale: float = 1.0, grad_scale_axis: Optional[int] = None,
                    min_threshold: float = 0.0, power_of_two: bool = False,
                    group_size: Optional[int] = None, group_axis: int = -1) -> tf.Tensor:
    """The trainable symmetric op (as torch.ops.qi.symmetric_quant): delta = t' / 2^(num_bits -
    is_signed) with t' = max(threshold, min_threshold), rounded up to a power of two when
    power_of_two; y = delta * clamp(round_half_even(x / delta), qmin, qmax). threshold: one
    value, or one per slice along channel_axis. mode "ste": dy/dx = 1; "lsq": hard clip and the
    threshold gradient scaled by grad_scale (divided by sqrt(x.shape[grad_scale_axis]) when that
    axis is given). group_size: one threshold per (channel, group) of group_size elements along
    group_axis (the inferable per-group layout; gradients summed per group)."""
    _check_mode(mode, "symmetric_quant")
    x = _float32(x, "symmetric_quant", "x")
    threshold = _float32(threshold, "symmetric_quant", "threshold")
    return _run(_ops.qi_symmetric_quant, x, threshold, _double(grad_scale),
                _double(min_threshold), num_bits=int(num_bits), is_signed=bool(is_signed),
                power_of_two=bool(power_of_two), mode=mode,
                **_optional_attrs("channel_axis", channel_axis),
                **_optional_attrs("grad_scale_axis", grad_scale_axis),
                **_group_attrs(group_size, group_axis))


def uniform_quant(x, min_range, max_range, num_bits: int, channel_axis: Optional[int] = None,
                  mode: str = "ste", grad_scale: float = 1.0, activation: bool = False,
                  grad_scale_axis: Optional[int] = None, group_size: Optional[int] = None,
                  group_axis: int = -1) -> tf.Tensor:
    """The trainable uniform op (as torch.ops.qi.uniform_quant): the grid over [min_range,
    max_range] adjusted so that 0 is on it (float32, not clamped; rounded zero point).
    activation: the activation quantizer's scale arithmetic (double, then float). group_size,
    group_axis: one range per (channel, group), as for symmetric_quant."""
    _check_mode(mode, "uniform_quant")
    x = _float32(x, "uniform_quant", "x")
    min_range = _float32(min_range, "uniform_quant", "min_range")
    max_range = _float32(max_range, "uniform_quant", "max_range")
    return _run(_ops.qi_uniform_quant, x, min_range, max_range, _double(grad_scale),
                num_bits=int(num_bits), mode=mode, activation=bool(activation),
                **_optional_attrs("channel_axis", channel_axis),
                **_optional_attrs("grad_scale_axis", grad_scale_axis),
                **_group_attrs(group_size, group_axis))


def _parameter(value, who: str, arg: str) -> tf.Tensor:
    # None: a parameter the scaling does not use, passed as an empty tensor.
    return tf.zeros([0], tf.float32) if value is None else _float32(value, who, arg)


def format_quant(x, scale, tensor_scale, format: str, scaling: str,
                 channel_axis: Optional[int] = None, mode: str = "ste", grad_scale: float = 1.0,
                 grad_scale_axis: Optional[int] = None, group_size: Optional[int] = None,
                 group_axis: int = -1, tensor_grad_scale: Optional[float] = None) -> tf.Tensor:
    """The formats' trainable op (as torch.ops.qi.format_quant): y = E * F(clamp(x / E, -max,
    max)), F the rounding of `format` (a FLOAT format, "E2M1" for NVFP4, or an MX element
    format) and E each element's scale as `scaling` says: "scale" (scale holds it: one value,
    one per slice along channel_axis, or one per (channel, group) of group_size elements along
    group_axis), "fp8_scale" (NVFP4 blocks of group_size with learned block scales in scale and
    tensor_scale None or one value), "mx" (MX blocks of group_size along group_axis after the
    pre-scale held by scale, one value) or "nvfp4" (NVFP4 blocks from the data, tensor_scale
    None or one fixed value). scale or tensor_scale None (or empty): not used. mode "ste":
    dy/dx = 1; "lsq": dy/dx = 0 outside [-max, max]. Parameter gradients pass every rounding
    straight through, summed per parameter and scaled by grad_scale (tensor_scale's by
    tensor_grad_scale when given, "fp8_scale" only), divided by sqrt(x.shape[grad_scale_axis])
    when that axis is given."""
    _check_mode(mode, "format_quant")
    x = _float32(x, "format_quant", "x")
    scale = _parameter(scale, "format_quant", "scale")
    tensor_scale = _parameter(tensor_scale, "format_quant", "tensor_scale")
    # tensor_grad_scale None: an empty float64 tensor (the op then uses grad_scale).
    tgs = tf.zeros([0], tf.float64) if tensor_grad_scale is None else _double(tensor_grad_scale)
    return _run(_ops.qi_format_quant, x, scale, tensor_scale, _double(grad_scale), tgs,
                format=str(format), scaling=str(scaling), mode=mode,
                **_optional_attrs("channel_axis", channel_axis),
                **_optional_attrs("grad_scale_axis", grad_scale_axis),
                **_group_attrs(group_size, group_axis))


def soft_round(w, alpha, threshold_or_min, num_bits: int = 8, power_of_two: bool = False,
               channel_axis: Optional[int] = None, training: bool = True,
               max_range=None) -> tf.Tensor:
    """Soft rounding (as torch.ops.qi.soft_round) on the grid of the symmetric (max_range None:
    threshold_or_min holds thresholds) or uniform inferable quantizer; h(alpha) hardened to
    {0, 1} when not training. The gradient flows to alpha only."""
    w = _float32(w, "soft_round", "w")
    alpha = _float32(alpha, "soft_round", "alpha")
    p = _float32(threshold_or_min, "soft_round", "threshold_or_min")
    hi = p if max_range is None else _float32(max_range, "soft_round", "max_range")
    return _run(_ops.qi_soft_round, w, alpha, p, hi, num_bits=int(num_bits),
                power_of_two=bool(power_of_two), uniform=max_range is not None,
                training=bool(training), **_optional_attrs("channel_axis", channel_axis))


def soft_round_regularization(alpha, beta: float) -> tf.Tensor:
    """sum(1 - |2 (h(alpha) - 0.5)|^beta) (a float32 scalar, differentiable in alpha)."""
    return _run(_ops.qi_soft_round_regularization,
                _float32(alpha, "soft_round_regularization", "alpha"), beta=float(beta))


# ---- gradients ----------------------------------------------------------------------------------

def _attrs(op, names):
    attrs = {n: op.get_attr(n) for n in names}
    for n in ("mode", "format", "scaling"):
        if isinstance(attrs.get(n), bytes):
            attrs[n] = attrs[n].decode()
    return attrs


_TRAINABLE = ("has_channel_axis", "channel_axis", "mode", "has_grad_scale_axis",
              "grad_scale_axis", "has_group_size", "group_size", "group_axis")
_AFFINE = ("num_bits",) + _TRAINABLE
_SOFT = ("num_bits", "power_of_two", "uniform", "has_channel_axis", "channel_axis")


@tf.RegisterGradient("QiFakeQuant")
def _fake_quant_grad(op, grad):
    return [grad]


@tf.RegisterGradient("QiSymmetricQuant")
def _symmetric_quant_grad(op, grad):
    attrs = _attrs(op, _AFFINE + ("is_signed", "power_of_two"))
    dx, dt = _ops.qi_symmetric_quant_grad(grad, *op.inputs, **attrs)
    return [dx, dt, None, None]


@tf.RegisterGradient("QiUniformQuant")
def _uniform_quant_grad(op, grad):
    attrs = _attrs(op, _AFFINE + ("activation",))
    dx, dmin, dmax = _ops.qi_uniform_quant_grad(grad, *op.inputs, **attrs)
    return [dx, dmin, dmax, None]


@tf.RegisterGradient("QiFormatQuant")
def _format_quant_grad(op, grad):
    attrs = _attrs(op, _TRAINABLE + ("format", "scaling"))
    dx, dscale, dtensor_scale = _ops.qi_format_quant_grad(grad, *op.inputs, **attrs)
    return [dx, dscale, dtensor_scale, None, None]


@tf.RegisterGradient("QiSoftRound")
def _soft_round_grad(op, grad):
    dalpha = _ops.qi_soft_round_grad(grad, op.inputs[1], op.inputs[2], op.inputs[3],
                                     **_attrs(op, _SOFT))
    return [None, dalpha, None, None]


@tf.RegisterGradient("QiSoftRoundRegularization")
def _soft_round_regularization_grad(op, grad):
    return [_ops.qi_soft_round_regularization_grad(grad, op.inputs[0], beta=op.get_attr("beta"))]


__all__ = ["library_path", "core_message", "quantizer_json", "fake_quant", "symmetric_quant",
           "uniform_quant", "format_quant", "soft_round", "soft_round_regularization"]
