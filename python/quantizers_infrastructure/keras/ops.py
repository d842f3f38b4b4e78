# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""qi's TensorFlow custom ops (libqi_tf_ops.so, built from tf/qi_tf_ops.cc) and their gradients.

    fake_quant(quantizer, x)            any inferable quantizer (its to_json() text is an attr)
    symmetric_quant(x, threshold, ...)  trainable symmetric/POT, STE or LSQ gradients
    uniform_quant(x, min, max, ...)     trainable uniform, STE or LSQ gradients
    soft_round(w, alpha, delta, ...)    soft rounding (gradient to alpha)
    soft_round_init_alpha, soft_round_regularization

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
    """The quantizer's to_json() text, computed once (quantizers are immutable)."""
    text = quantizer.__dict__.get("_qi_json")
    if text is None:
        text = quantizer.to_json()
        quantizer.__dict__["_qi_json"] = text
    return text


def fake_quant(quantizer, x) -> tf.Tensor:
    """Q(x) for an inferable quantizer, through the QiFakeQuant op. The gradient is the
    straight-through identity (dQ/dx = 1)."""
    x = _float32(x, type(quantizer).__name__)
    return _run(_ops.qi_fake_quant, x, quantizer=quantizer_json(quantizer))


def _axis_attrs(channel_axis: Optional[int]):
    return dict(has_channel_axis=channel_axis is not None,
                channel_axis=0 if channel_axis is None else int(channel_axis))


def _scale(grad_scale) -> tf.Tensor:
    # float64: TensorFlow's float attributes are 32-bit, qi's torch ops take a double.
    return tf.constant(float(grad_scale), tf.float64)


def _check_mode(mode: str, who: str) -> None:
    if mode not in ("ste", "lsq"):
        raise ValueError(f"{who}: mode must be \"ste\" or \"lsq\", got {mode!r}")


def symmetric_quant(x, threshold, num_bits: int, is_signed: bool = True,
                    channel_axis: Optional[int] = None, mode: str = "ste",
                    grad_scale: float = 1.0) -> tf.Tensor:
    """Trainable symmetric fake quantizer: delta = threshold / 2^(num_bits - is_signed),
    y = delta * clamp(round_half_even(x / delta), qmin, qmax) (the torch-profile grid, as qi's
    PyTorch trainable quantizers). threshold: one value, or one per slice along channel_axis.
    mode "ste": dy/dx = 1; "lsq": hard clip and LSQ threshold gradient scaled by grad_scale."""
    _check_mode(mode, "symmetric_quant")
    x = _float32(x, "symmetric_quant", "x")
    threshold = _float32(threshold, "symmetric_quant", "threshold")
    return _run(_ops.qi_symmetric_quant, x, threshold, _scale(grad_scale),
                num_bits=int(num_bits), is_signed=bool(is_signed), mode=mode,
                **_axis_attrs(channel_axis))


def uniform_quant(x, min_range, max_range, num_bits: int, channel_axis: Optional[int] = None,
                  mode: str = "ste", grad_scale: float = 1.0,
                  activation: bool = False) -> tf.Tensor:
    """Trainable uniform fake quantizer over [min_range, max_range] (adjusted so that 0 is on the
    grid, float32, not clamped; rounded zero point), as qi's PyTorch trainable quantizers.
    activation: the activation quantizer's scale arithmetic (double, then float)."""
    _check_mode(mode, "uniform_quant")
    x = _float32(x, "uniform_quant", "x")
    min_range = _float32(min_range, "uniform_quant", "min_range")
    max_range = _float32(max_range, "uniform_quant", "max_range")
    return _run(_ops.qi_uniform_quant, x, min_range, max_range, _scale(grad_scale),
                num_bits=int(num_bits), mode=mode, activation=bool(activation),
                **_axis_attrs(channel_axis))


def soft_round(w, alpha, delta, offset, qmin: float, qmax: float,
               channel_axis: Optional[int] = None, training: bool = True) -> tf.Tensor:
    """Soft rounding (REFERENCE.md 9.2): q = delta * (clip(floor((w - offset) / delta) + h,
    qmin, qmax) - zero_point), h = h(alpha) when training else (h(alpha) >= 0.5). The gradient
    flows to alpha only (w, delta and offset are constants of the rounding)."""
    w = _float32(w, "soft_round", "w")
    alpha = _float32(alpha, "soft_round", "alpha")
    delta = _float32(delta, "soft_round", "delta")
    offset = _float32(offset, "soft_round", "offset")
    return _run(_ops.qi_soft_round, w, alpha, delta, offset, qmin=float(qmin), qmax=float(qmax),
                training=bool(training), **_axis_attrs(channel_axis))


def soft_round_init_alpha(w, delta, offset, qmin: float, qmax: float,
                          channel_axis: Optional[int] = None) -> tf.Tensor:
    """alpha such that h(alpha) = frac(clip((w - offset) / delta, qmin, qmax))."""
    return _run(_ops.qi_soft_round_init_alpha, _float32(w, "soft_round_init_alpha", "w"),
                _float32(delta, "soft_round_init_alpha", "delta"),
                _float32(offset, "soft_round_init_alpha", "offset"), qmin=float(qmin),
                qmax=float(qmax), **_axis_attrs(channel_axis))


def soft_round_regularization(alpha, beta: float) -> tf.Tensor:
    """sum(1 - |2 (h(alpha) - 0.5)|^beta) (a float32 scalar, differentiable in alpha)."""
    return _run(_ops.qi_soft_round_regularization,
                _float32(alpha, "soft_round_regularization", "alpha"), beta=float(beta))


# ---- gradients ----------------------------------------------------------------------------------

def _attrs(op, names):
    return {n: op.get_attr(n) for n in names}


_AFFINE = ("num_bits", "has_channel_axis", "channel_axis", "mode")


@tf.RegisterGradient("QiFakeQuant")
def _fake_quant_grad(op, grad):
    return [grad]


@tf.RegisterGradient("QiSymmetricQuant")
def _symmetric_quant_grad(op, grad):
    attrs = _attrs(op, _AFFINE + ("is_signed",))
    attrs["mode"] = attrs["mode"].decode() if isinstance(attrs["mode"], bytes) else attrs["mode"]
    dx, dt = _ops.qi_symmetric_quant_grad(grad, op.inputs[0], op.inputs[1], op.inputs[2],
                                          **attrs)
    return [dx, dt, None]


@tf.RegisterGradient("QiUniformQuant")
def _uniform_quant_grad(op, grad):
    attrs = _attrs(op, _AFFINE + ("activation",))
    attrs["mode"] = attrs["mode"].decode() if isinstance(attrs["mode"], bytes) else attrs["mode"]
    dx, dmin, dmax = _ops.qi_uniform_quant_grad(grad, op.inputs[0], op.inputs[1], op.inputs[2],
                                                op.inputs[3], **attrs)
    return [dx, dmin, dmax, None]


@tf.RegisterGradient("QiSoftRound")
def _soft_round_grad(op, grad):
    dalpha = _ops.qi_soft_round_grad(grad, op.inputs[1], op.inputs[2],
                                     **_attrs(op, ("has_channel_axis", "channel_axis")))
    return [None, dalpha, None, None]


@tf.RegisterGradient("QiSoftRoundRegularization")
def _soft_round_regularization_grad(op, grad):
    return [_ops.qi_soft_round_regularization_grad(grad, op.inputs[0], beta=op.get_attr("beta"))]


tf.no_gradient("QiSoftRoundInitAlpha")

__all__ = ["library_path", "core_message", "quantizer_json", "fake_quant", "symmetric_quant",
           "uniform_quant", "soft_round", "soft_round_init_alpha", "soft_round_regularization"]
