# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""ONNX export of qi quantizers and their onnxruntime kernels.

Export: `torch.onnx.export(model, ..., dynamo=False)` of a model holding qi quantizers (wrapped
layers, activation holders) records one `qi::fake_quant(x, quantizer_json)` per quantizer; the
symbolic function registered here for that op (registered when the PyTorch front end is
imported) turns each into

* a QuantizeLinear/DequantizeLinear pair with the quantizer's exact scale and zero point (the C++
  plan's) when the grid fits a standard 8-bit type: torch profile, affine (symmetric, POT,
  uniform), qmin..qmax = -128..127 (int8) or 0..255 (uint8), per tensor or per channel;
* otherwise (LUT quantizers, other bit widths, the tf profile) one custom node of the domain
  `mct_quantizers` with MCT Quantizers' op type, Constant inputs and attributes,
  plus qi's extensions: an informational string attribute `profile` on every node ("torch" /
  "tf"; the kernels do not read it, so nodes exported by MCT Quantizers, which lack it, run
  unchanged); the tf profile, which MCT's PyTorch quantizers do not have, exports as the op type
  `<OpType>_tf` (same inputs and attributes); the op `ActivationLutPOTQuantizer` (inputs
  lut_values, threshold; attributes num_bits, signed, lut_values_bitwidth, eps, mctq_version),
  which MCT Quantizers does not export (it has no custom op for that quantizer); and the ops of
  qi's FLOAT quantizers, which MCT Quantizers does not have: `WeightsFloatQuantizer` (input
  scale; attributes format, per_channel, channel_axis) and `ActivationFloatQuantizer` (input
  scale; attribute format), whose scales are tensor inputs so that they reach the kernel exactly.
  Per-group quantizers (group_size set) export as `<OpType>_grouped` (after `_tf`), with the
  attributes group_size and group_axis added and one parameter per channel and group. The block
  formats: `WeightsMXQuantizer` / `ActivationMXQuantizer` (attributes format, block_size,
  block_axis; no input; with a pre-scale `<OpType>_prescaled`, with the float32 attribute
  tensor_scale added) and
  `WeightsNVFP4Quantizer` / `ActivationNVFP4Quantizer` (input tensor_scale with zero values for
  none or one; attribute block_axis). An NVFP4 weights quantizer with stored block_scales is a
  grouped E2M1 FLOAT quantizer and exports as `WeightsFloatQuantizer_grouped` (format E2M1,
  per_channel, channel_axis, group_size 16, group_axis the block axis; input scale: each block's
  total scale tensor_scale * block_scale), which computes the same numbers.

`use_custom_ops(True)` (or the context manager `custom_ops()`) exports every quantizer as its
custom op; `quantizer.enable_custom_impl()` (MCT Quantizers' switch) does so for one quantizer.

Run: `onnxruntime.InferenceSession(path, get_ort_session_options())` — the custom ops are
onnxruntime-extensions Python kernels that rebuild the qi quantizer from the node's attributes
and inputs and run qi's C++ core on the numpy input, so the numbers are qi's own.

Range inputs: WeightsUniform carries the adjusted ranges in the torch profile (adjusting them
again is the identity there) and the configured ranges in the tf profile (whose float32
adjustment is not idempotent); ActivationUniform carries the configured ranges (the kernel
adjusts them once; MCT Quantizers writes its adjusted range, which its kernel adjusts again).
Thresholds, ranges and eps travel as float32 (ONNX FLOAT), so a quantizer configured with values
that float32 does not represent exactly exports its nearest float32 values."""

import contextlib
import json
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.onnx
from torch.onnx import symbolic_helper

DOMAIN = "mct_quantizers"
OPSET = 13  # QuantizeLinear/DequantizeLinear with per-channel `axis`; registered for >= 13
PROFILE_ATTR = "profile"
TF_SUFFIX = "_tf"  # op type suffix of tf-profile quantizers (a qi extension)
GROUPED_SUFFIX = "_grouped"  # op type suffix of per-group quantizers (a qi extension)
PRESCALED_SUFFIX = "_prescaled"  # op type suffix of MX quantizers with a pre-scale (qi)

# custom_ops: use_custom_ops(); opset21: inside qp.onnx.export, which writes the temporary
# nodes that to_opset21 rewrites.
_state = {"custom_ops": False, "opset21": False}

class _CustomImpl(torch.autograd.Function):
    """A quantizer whose custom implementation is enabled (enable_custom_impl), as the ONNX
    exporter sees it: qi's op forward, its custom node as the symbolic (MCT Quantizers'
    mechanism; the choice travels with this quantizer object, not with its JSON)."""

    @staticmethod
    def forward(ctx, x, quantizer):
        return torch.ops.qi.fake_quant(x, quantizer.to_json())

    @staticmethod
    def symbolic(g, x, quantizer):
        return _emit_custom(g, x, quantizer)


def custom_impl_quant(quantizer, x: torch.Tensor) -> torch.Tensor:
    """Q(x) recorded for ONNX export as the quantizer's custom node."""
    return _CustomImpl.apply(x, quantizer)


def use_custom_ops(enabled: bool = True) -> None:
    """Export every quantizer as its custom op (True) or QDQ where it fits (False, default)."""
    _state["custom_ops"] = bool(enabled)


@contextlib.contextmanager
def custom_ops(enabled: bool = True):
    """Context manager form of use_custom_ops."""
    old = _state["custom_ops"]
    _state["custom_ops"] = bool(enabled)
    try:
        yield
    finally:
        _state["custom_ops"] = old


def _version() -> str:
    from quantizers_infrastructure import __version__
    return __version__


# ---- deciding: QDQ or custom op ----

def _op_type(class_name: str) -> Optional[str]:
    """The custom node's op type of an inferable class (the registry's onnx_op); None for
    classes that are not inferable quantizers."""
    from quantizers_infrastructure.common.inferable_quantizers import INFERABLE_QUANTIZER_CLASSES
    cls = INFERABLE_QUANTIZER_CLASSES.get(class_name)
    return None if cls is None else cls.onnx_op


def _quantizer(text: str):
    from quantizers_infrastructure.pytorch.wrapper import quantizer_from_json
    q = quantizer_from_json(text)
    if _op_type(type(q).__name__) is None:
        raise ValueError(f"qi ONNX export: {type(q).__name__} cannot be exported (only inferable "
                         f"quantizers; call convert_to_inferable_quantizers() first)")
    return q


# Integer storage types of QuantizeLinear/DequantizeLinear by grid (qmin, qmax): opset 13's
# 8-bit types, and opset 21's 4-bit ones.
_INT_TYPES_13 = {(-128.0, 127.0): "INT8", (0.0, 255.0): "UINT8"}
_INT_TYPES_21 = {**_INT_TYPES_13, (-8.0, 7.0): "INT4", (0.0, 15.0): "UINT4"}
_NUMPY_OF = {"INT8": np.int8, "UINT8": np.uint8, "INT4": np.int8, "UINT4": np.uint8}
# FLOAT formats that opset 21 holds (ONNX's FLOAT8 types, E4M3 in its "fn" variant), by the
# plan's (exponent bits, mantissa bits).
_FLOAT8_TYPES = {(4, 3): "FLOAT8E4M3FN", (5, 2): "FLOAT8E5M2"}


def _check_opset(opset) -> int:
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) \
            or not 13 <= int(opset) <= 21:
        raise ValueError(f"qi ONNX export: opset must be an integer in [13, 21], got {opset!r}")
    return int(opset)


def qdq_parameters(q, opset: int = 13) -> Optional[Dict[str, Any]]:
    """How q's grid is a QuantizeLinear/DequantizeLinear pair of ONNX opset `opset`, or None
    when it is not one (then q exports as its custom node).

    Opsets 13 to 20 (what torch.onnx.export writes): the torch profile's affine grids
    (symmetric, POT, uniform) of -128..127 (INT8) or 0..255 (UINT8), per tensor or per channel.
    Opset 21 (qp.onnx.export): also 4-bit grids (INT4 / UINT4), the other widths from 2 to 7
    bits as INT8 / UINT8 followed by a Clip to the grid (`clip`), per-group parameters as blocked
    quantization (`block_size` along `group_axis`), and FLOAT quantizers of the E4M3 and E5M2
    formats as FLOAT8E4M3FN / FLOAT8E5M2 with zero points 0 (per tensor, channel or group).
    Returns {"scale": float32 array (one value per tensor, channel, or (channel, group) in
    row-major [channels, groups] order), "zero_point": array of the storage's numpy type (float32
    zeros for FLOAT8), "dtype": that numpy type, "onnx_type": the ONNX TensorProto type name
    ("INT8", "UINT8", "INT4", "UINT4", "FLOAT8E4M3FN", "FLOAT8E5M2"), "per_channel",
    "channel_axis" (None per tensor), "block_size" and "group_axis" (None without groups),
    "clip": (qmin, qmax) when the storage type is wider than the grid, else None}. ValueError
    for an opset outside [13, 21]."""
    opset = _check_opset(opset)
    plan = q.plan
    config = q.get_config()
    grouped = config.get("group_size") is not None
    if plan.get("kind") == "affine_torch":  # not LUT, FLOAT, MX, NVFP4, or the tf profile
        qmin, qmax = float(plan["qmin"]), float(plan["qmax"])
        clip = None
        onnx_type = (_INT_TYPES_13 if opset < 21 else _INT_TYPES_21).get((qmin, qmax))
        if onnx_type is None and opset >= 21 and qmin == round(qmin) and qmax == round(qmax):
            if -128 <= qmin < 0 <= qmax <= 127:
                onnx_type, clip = "INT8", (int(qmin), int(qmax))
            elif 0 <= qmin and qmax <= 255:
                onnx_type, clip = "UINT8", (int(qmin), int(qmax))
        if onnx_type is None or (grouped and opset < 21):
            return None  # a width QuantizeLinear cannot clamp to, or groups before opset 21
        dtype = _NUMPY_OF[onnx_type]
        zp = np.asarray(plan["zero_point"], dtype=np.float64)
        if not (np.all(zp == np.round(zp)) and np.all(zp >= qmin) and np.all(zp <= qmax)):
            return None
        zero_point = zp.astype(dtype)
    elif plan.get("kind") == "float" and opset >= 21:
        onnx_type = _FLOAT8_TYPES.get((int(plan["ebits"]), int(plan["mbits"])))
        if onnx_type is None:
            return None  # FP6 and FP4 elements: no ONNX type in opset 21
        dtype, clip = np.float32, None
        zero_point = np.zeros(np.asarray(plan["scale"]).size, dtype=np.float32)
    else:
        return None
    scale = np.asarray(plan["scale"], dtype=np.float32)
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        return None
    per_channel = bool(config.get("per_channel", False)) and (grouped or scale.size > 1)
    return {"scale": scale, "zero_point": zero_point, "dtype": dtype, "onnx_type": onnx_type,
            "per_channel": per_channel,
            "channel_axis": config.get("channel_axis") if per_channel else None,
            "block_size": int(config["group_size"]) if grouped else None,
            "group_axis": int(config["group_axis"]) if grouped else None, "clip": clip}


def export_kind(q, opset: int = 13) -> str:
    """"qdq" or "custom": how q exports at ONNX opset `opset` (13 to 20: torch.onnx.export;
    21: qp.onnx.export), with the current use_custom_ops setting and q's enable_custom_impl().
    ValueError for an opset outside [13, 21]."""
    opset = _check_opset(opset)
    if _state["custom_ops"] or q._use_custom_impl or qdq_parameters(q, opset) is None:
        return "custom"
    return "qdq"


# ---- the symbolic function ----

def _const(g, array, dtype):
    return g.op("Constant", value_t=torch.tensor(np.asarray(array, dtype=dtype)))


def _f32(values):
    return np.asarray(values, dtype=np.float32).reshape(-1)


def _emit_qdq(g, x, p):
    if p["per_channel"]:
        axis = int(p["channel_axis"])
        rank = symbolic_helper._get_tensor_rank(x)
        if axis < 0 and rank is not None:
            axis += rank
        scale = _const(g, p["scale"], np.float32)
        zp = _const(g, p["zero_point"], p["dtype"])
        q = g.op("QuantizeLinear", x, scale, zp, axis_i=axis)
        return g.op("DequantizeLinear", q, scale, zp, axis_i=axis)
    scale = _const(g, p["scale"].reshape(-1)[0], np.float32)  # 0-d: per tensor
    zp = _const(g, p["zero_point"].reshape(-1)[0], p["dtype"])
    q = g.op("QuantizeLinear", x, scale, zp)
    return g.op("DequantizeLinear", q, scale, zp)


def custom_op_spec(q, input_rank: Optional[int] = None):
    """(op_type, [float32 input arrays], {attribute: value}) of q's custom node (mct-quantizers'
    op types and attributes, plus qi's `profile` attribute). Attribute values are Python
    int/float/str."""
    family = q.param_family
    op_type = q.onnx_op
    c = q.get_config()
    profile = c.get("profile", "torch")
    attrs: Dict[str, Any] = {}
    if family == "nvfp4_weights" and c.get("block_scales") is not None:
        # Stored block scales: the plan is a grouped E2M1 FLOAT plan; its node is FLOAT's.
        from quantizers_infrastructure.common.inferable_quantizers import \
            INFERABLE_QUANTIZER_CLASSES
        op_type = INFERABLE_QUANTIZER_CLASSES["WeightsFloatInferableQuantizer"].onnx_op
        attrs.update(format="E2M1", per_channel=1, channel_axis=int(c["channel_axis"]),
                     group_size=16, group_axis=int(c["block_axis"]))
        attrs["mctq_version"] = _version()
        attrs[PROFILE_ATTR] = profile
        return op_type + GROUPED_SUFFIX, [_f32(q.plan["scale"])], attrs
    if family == "float_weights":  # qi's FLOAT: the format and one scale per channel
        per_channel = bool(c["per_channel"]) and c.get("channel_axis") is not None
        attrs.update(format=c["format"], per_channel=int(per_channel),
                     channel_axis=int(c["channel_axis"]) if per_channel else 0)
        inputs = [_f32(c["scale"])]
    elif family == "float_activation":  # the scale as a tensor input: exact in ONNX Runtime
        attrs["format"] = c["format"]
        inputs = [_f32(c["scale"])]
    elif family in ("mx_weights", "mx_activation"):
        attrs.update(format=c["format"], block_size=int(c["block_size"]),
                     block_axis=int(c["block_axis"]))
        if c.get("tensor_scale") is not None:  # the pre-scale (a float32 attribute: exact)
            attrs["tensor_scale"] = float(np.float32(c["tensor_scale"]))
            op_type += PRESCALED_SUFFIX
        inputs = []
    elif family in ("nvfp4_weights", "nvfp4_activation"):  # no tensor scale: an empty input
        attrs["block_axis"] = int(c["block_axis"])
        t = c["tensor_scale"]
        inputs = [_f32([] if t is None else [t])]
    elif family.endswith("_weights"):
        per_channel = bool(c["per_channel"])
        axis = c.get("channel_axis")
        attrs.update(num_bits=int(c["num_bits"]), per_channel=int(per_channel),
                     channel_axis=int(axis) if (per_channel and axis is not None) else 0)
        if family == "lut_weights":
            rank = c.get("input_rank")
            if rank is None:
                rank = input_rank if (per_channel and input_rank is not None) else 4
            attrs.update(input_rank=int(rank), lut_values_bitwidth=int(c["lut_values_bitwidth"]),
                         eps=float(c["eps"]))
            inputs = [_f32(c["lut_values"]), _f32(c["threshold"])]
        elif family == "uniform_weights":
            if profile == "torch":
                inputs = [_f32(q.adjusted_min_range), _f32(q.adjusted_max_range)]
            else:
                inputs = [_f32(c["min_range"]), _f32(c["max_range"])]
        else:
            inputs = [_f32(c["threshold"])]
        attrs["signed"] = 1
    elif family == "lut_activation":
        attrs.update(num_bits=int(c["num_bits"]), signed=int(bool(c["signed"])),
                     lut_values_bitwidth=int(c["lut_values_bitwidth"]), eps=float(c["eps"]))
        inputs = [_f32(c["lut_values"]), _f32(c["threshold"])]
    elif family == "uniform_activation":
        # The configured range: the op's kernel (qi's and MCT Quantizers') adjusts the range it
        # is given, and adjusting twice is not the identity for activations (MCT Quantizers
        # writes its once-adjusted range, so its files run a twice-adjusted one).
        attrs.update(min_range=float(np.float32(c["min_range"][0])),
                     max_range=float(np.float32(c["max_range"][0])), num_bits=int(c["num_bits"]))
        inputs = []
    else:  # symmetric_activation
        attrs.update(threshold=float(np.float32(c["threshold"][0])),
                     signed=int(bool(c["signed"])), num_bits=int(c["num_bits"]))
        inputs = []
    grouped = c.get("group_size") is not None
    if grouped:
        attrs.update(group_size=int(c["group_size"]), group_axis=int(c["group_axis"]))
    attrs["mctq_version"] = _version()
    attrs[PROFILE_ATTR] = profile
    if profile != "torch":
        op_type += TF_SUFFIX
    if grouped:
        op_type += GROUPED_SUFFIX
    return op_type, inputs, attrs


_SUFFIX = {int: "_i", float: "_f", str: "_s"}


def _emit_custom(g, x, q):
    op_type, inputs, attrs = custom_op_spec(q, symbolic_helper._get_tensor_rank(x))
    kwargs = {k + _SUFFIX[type(v)]: v for k, v in attrs.items()}
    consts = [_const(g, a, np.float32) for a in inputs]
    out = g.op(f"{DOMAIN}::{op_type}", x, *consts, **kwargs)
    out.setType(x.type())
    return out


def fake_quant_symbolic(g, x, quantizer):
    """Symbolic of qi::fake_quant(Tensor x, str quantizer) for the TorchScript ONNX exporter."""
    text = symbolic_helper._maybe_get_const(quantizer, "s")
    if not isinstance(text, str):
        raise ValueError("qi ONNX export: the quantizer of qi::fake_quant must be a constant "
                         "string in the traced graph")
    json.loads(text)  # a clear error for a malformed constant
    q = _quantizer(text)
    if not _state["custom_ops"]:
        if _state["opset21"]:
            return _emit_temporary(g, x, text)
        p = qdq_parameters(q)
        if p is not None:
            return _emit_qdq(g, x, p)
    return _emit_custom(g, x, q)


def _emit_temporary(g, x, text):
    """qp.onnx.export's temporary node: the quantizer's JSON and x's sizes (-1 where dynamic),
    for to_opset21 to rewrite."""
    from quantizers_infrastructure.pytorch.onnx_opset21 import TEMPORARY_DOMAIN, TEMPORARY_OP
    sizes = symbolic_helper._get_tensor_sizes(x)
    out = g.op(f"{TEMPORARY_DOMAIN}::{TEMPORARY_OP}", x, quantizer_s=text,
               input_shape_i=[-1 if d is None else int(d) for d in (sizes or [])],
               input_rank_i=-1 if sizes is None else len(sizes))
    out.setType(x.type())
    return out


def register(opset: int = OPSET) -> None:
    """Registers the symbolic of qi::fake_quant for opset >= `opset` (done on import)."""
    torch.onnx.register_custom_op_symbolic("qi::fake_quant", fake_quant_symbolic, opset)


register()


# ---- the dynamo exporter (torch.onnx.export(..., dynamo=True)) ----

def _onnx_constant(array, dtype):
    import onnx
    from onnxscript import opset18 as op
    return op.Constant(value=onnx.numpy_helper.from_array(np.asarray(array, dtype=dtype)))


def fake_quant_translation(x, quantizer: str):
    """The dynamo exporter's translation of qi::fake_quant (what wrapped models record while
    they are exported): the same nodes as the TorchScript exporter's symbolic."""
    from onnxscript import opset18 as op
    from onnxscript.values import Op, Opset
    q = _quantizer(quantizer)
    p = None if _state["custom_ops"] else qdq_parameters(q)
    if p is not None:
        if p["per_channel"]:
            axis = int(p["channel_axis"])
            if axis < 0:
                axis += len(x.shape)
            scale, zp = _onnx_constant(p["scale"], np.float32), _onnx_constant(p["zero_point"],
                                                                              p["dtype"])
            return op.DequantizeLinear(op.QuantizeLinear(x, scale, zp, axis=axis), scale, zp,
                                       axis=axis)
        scale = _onnx_constant(p["scale"].reshape(-1)[0], np.float32)
        zp = _onnx_constant(p["zero_point"].reshape(-1)[0], p["dtype"])
        return op.DequantizeLinear(op.QuantizeLinear(x, scale, zp), scale, zp)
    op_type, inputs, attrs = custom_op_spec(q, len(x.shape))
    consts = [_onnx_constant(a, np.float32) for a in inputs]
    return Op(Opset(DOMAIN, 1), op_type, _custom_schema(op_type, len(inputs), attrs))(
        x, *consts, **attrs)


def _custom_schema(op_type: str, n_inputs: int, attrs: Dict[str, Any]):
    """An OpSchema for a custom node (the exporter builds nodes from schemas): float inputs,
    one float output, the attributes' types."""
    import onnx
    S = onnx.defs.OpSchema
    kinds = {int: S.AttrType.INT, float: S.AttrType.FLOAT, str: S.AttrType.STRING}
    return S(op_type, DOMAIN, 1,
             inputs=[S.FormalParameter(f"input{i}", "T") for i in range(n_inputs + 1)],
             outputs=[S.FormalParameter("output", "T")],
             type_constraints=[("T", ["tensor(float)"], "float32")],
             attributes=[S.Attribute(k, kinds[type(v)], "") for k, v in attrs.items()])


def translation_table() -> Dict[Any, Any]:
    """The custom_translation_table for torch.onnx.export(..., dynamo=True) of models holding qi
    quantizers (wrappers and holders record qi::fake_quant while exporting):

        torch.onnx.export(model, (x,), "model.onnx", dynamo=True,
                          custom_translation_table=qi.pytorch.onnx.translation_table())
    """
    table = {torch.ops.qi.fake_quant.default: fake_quant_translation}
    for name in ("symmetric_quant", "uniform_quant", "format_quant", "soft_round"):
        table[getattr(torch.ops.qi, name).default] = _trainable_translation(name)
    return table


def _trainable_translation(name: str):
    def translation(*args, **kwargs):
        raise ValueError(f"qi::{name} belongs to a trainable quantizer, which has no ONNX form: "
                         "call convert_to_inferable_quantizers() on every wrapper and holder, "
                         "then export")
    return translation


# ---- onnxruntime kernels (onnxruntime-extensions Python custom ops) ----

_KERNELS_REGISTERED = False


def _bool(v) -> bool:
    return bool(int(v))


def _lut_num_bits(lut: np.ndarray, attrs) -> int:
    """LUT kernels do not read num_bits (MCT's declare no such attribute and the LUT formula
    does not use it): the smallest width that holds the table, which the core accepts."""
    unique = max(1, len(np.unique(lut)))
    return min(int(attrs["lut_values_bitwidth"]), max(1, int(np.ceil(np.log2(unique)))))


def _weights_kernel(class_name: str, kind: str, profile: str):
    def kernel(x, *tensors, **attrs):
        from quantizers_infrastructure.common.inferable_quantizers import \
            INFERABLE_QUANTIZER_CLASSES
        cls = INFERABLE_QUANTIZER_CLASSES[class_name]
        per_channel = _bool(attrs["per_channel"])
        axis = int(attrs["channel_axis"]) if per_channel else None
        groups = ({"group_size": int(attrs["group_size"]), "group_axis": int(attrs["group_axis"])}
                  if "group_size" in attrs else {})
        if kind == "lut":
            lut, threshold = tensors
            q = cls(num_bits=_lut_num_bits(lut, attrs), lut_values=lut.reshape(-1).tolist(),
                    threshold=threshold.reshape(-1).tolist(), per_channel=per_channel,
                    channel_axis=axis,
                    input_rank=int(attrs["input_rank"]) if per_channel else None,
                    lut_values_bitwidth=int(attrs["lut_values_bitwidth"]),
                    eps=float(np.float32(attrs["eps"])), profile=profile)
        elif kind == "float":
            (scale,) = tensors
            q = cls(format=attrs["format"], scale=scale.reshape(-1).tolist(),
                    per_channel=per_channel, channel_axis=axis, **groups)
        elif kind == "uniform":
            mn, mx = tensors
            q = cls(num_bits=int(attrs["num_bits"]), min_range=mn.reshape(-1).tolist(),
                    max_range=mx.reshape(-1).tolist(), per_channel=per_channel,
                    channel_axis=axis, profile=profile, **groups)
        else:
            (threshold,) = tensors
            q = cls(num_bits=int(attrs["num_bits"]), threshold=threshold.reshape(-1).tolist(),
                    per_channel=per_channel, channel_axis=axis, profile=profile, **groups)
        return q(np.ascontiguousarray(x, dtype=np.float32))
    return kernel


def _activation_kernel(class_name: str, kind: str, profile: str):
    def kernel(x, *tensors, **attrs):
        from quantizers_infrastructure.common.inferable_quantizers import \
            INFERABLE_QUANTIZER_CLASSES
        cls = INFERABLE_QUANTIZER_CLASSES[class_name]
        if kind == "lut":
            lut, threshold = tensors
            q = cls(num_bits=int(attrs["num_bits"]), lut_values=lut.reshape(-1).tolist(),
                    threshold=threshold.reshape(-1).tolist(), signed=_bool(attrs["signed"]),
                    lut_values_bitwidth=int(attrs["lut_values_bitwidth"]),
                    eps=float(np.float32(attrs["eps"])))
        elif kind == "float":
            (scale,) = tensors
            q = cls(format=attrs["format"], scale=scale.reshape(-1).tolist())
        elif kind == "uniform":
            q = cls(num_bits=int(attrs["num_bits"]),
                    min_range=[float(np.float32(attrs["min_range"]))],
                    max_range=[float(np.float32(attrs["max_range"]))], profile=profile)
        else:
            q = cls(num_bits=int(attrs["num_bits"]),
                    threshold=[float(np.float32(attrs["threshold"]))],
                    signed=_bool(attrs["signed"]), profile=profile)
        return q(np.ascontiguousarray(x, dtype=np.float32))
    return kernel


def _block_kernel(class_name: str, kind: str, profile: str):
    """MX and NVFP4 (weights and activations): the format and block layout as attributes (MX's
    pre-scale too, on the _prescaled op types), the NVFP4 tensor scale as an input of zero or
    one value."""
    def kernel(x, *tensors, **attrs):
        from quantizers_infrastructure.common.inferable_quantizers import \
            INFERABLE_QUANTIZER_CLASSES
        cls = INFERABLE_QUANTIZER_CLASSES[class_name]
        if kind == "mx":
            t = attrs.get("tensor_scale")
            q = cls(format=attrs["format"], block_size=int(attrs["block_size"]),
                    block_axis=int(attrs["block_axis"]),
                    tensor_scale=None if t is None else float(np.float32(t)))
        else:
            t = tensors[0].reshape(-1)
            q = cls(tensor_scale=float(t[0]) if t.size else None,
                    block_axis=int(attrs["block_axis"]))
        return q(np.ascontiguousarray(x, dtype=np.float32))
    return kernel


def register_ort_kernels() -> None:
    """Registers qi's kernels of the mct_quantizers custom ops with onnxruntime-extensions
    (once). Each kernel declares the attributes it reads (others on the node are ignored), the
    same sets as MCT Quantizers' kernels. onnxruntime-extensions cannot hold two kernels of one
    op type: when MCT Quantizers' PyTorch quantizers were imported first (they register their
    kernels on import), qi's computations replace theirs in those registrations. Importing
    them after this ran makes onnxruntime reject the session ("Conflicting with a registered
    kernel")."""
    global _KERNELS_REGISTERED
    if _KERNELS_REGISTERED:
        return
    from onnxruntime_extensions import PyCustomOpDef, onnx_op
    from onnxruntime_extensions._ocos import Opdef
    existing = {}
    for opdef in list(Opdef._odlist.values()):
        existing.setdefault(opdef.op_type, []).append(opdef)
    F, I, S = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int64, PyCustomOpDef.dt_string
    weights = {"num_bits": I, "per_channel": I, "channel_axis": I}
    lut = {"lut_values_bitwidth": I, "eps": F, "per_channel": I, "channel_axis": I,
           "input_rank": I}
    # Per parameter family: kernel maker, kind, number of inputs, attributes.
    families = {
        "symmetric_weights": (_weights_kernel, "sym", 2, weights),
        "uniform_weights": (_weights_kernel, "uniform", 3, weights),
        "lut_weights": (_weights_kernel, "lut", 3, lut),
        "symmetric_activation": (_activation_kernel, "sym", 1,
                                 {"threshold": F, "signed": I, "num_bits": I}),
        "uniform_activation": (_activation_kernel, "uniform", 1,
                               {"min_range": F, "max_range": F, "num_bits": I}),
        "lut_activation": (_activation_kernel, "lut", 3,
                           {"num_bits": I, "signed": I, "lut_values_bitwidth": I, "eps": F}),
        "float_weights": (_weights_kernel, "float", 2,
                          {"format": S, "per_channel": I, "channel_axis": I}),
        "float_activation": (_activation_kernel, "float", 2, {"format": S}),
        "mx_weights": (_block_kernel, "mx", 1, {"format": S, "block_size": I, "block_axis": I}),
        "mx_activation": (_block_kernel, "mx", 1,
                          {"format": S, "block_size": I, "block_axis": I}),
        "nvfp4_weights": (_block_kernel, "nvfp4", 2, {"block_axis": I}),
        "nvfp4_activation": (_block_kernel, "nvfp4", 2, {"block_axis": I}),
    }
    from quantizers_infrastructure.common.inferable_quantizers import INFERABLE_QUANTIZER_CLASSES
    for class_name, cls in INFERABLE_QUANTIZER_CLASSES.items():
        make, kind, n_inputs, plain_attrs = families[cls.param_family]
        # Every profile the class takes (the tf variant is a second op type), and the per-group
        # variant of classes that take groups (a third and fourth, with two more attributes).
        profiles = ("torch", "tf") if "profile" in cls._config_keys else ("torch",)
        variants = [(p, "") for p in profiles]
        if "group_size" in cls._config_keys:
            variants += [(p, GROUPED_SUFFIX) for p in profiles]
        if kind == "mx":  # with a pre-scale: one more attribute
            variants.append(("torch", PRESCALED_SUFFIX))
        extra = {"": {}, GROUPED_SUFFIX: {"group_size": I, "group_axis": I},
                 PRESCALED_SUFFIX: {"tensor_scale": F}}
        for profile, suffix in variants:
            op_type = (f"{DOMAIN}::{cls.onnx_op}" + ("" if profile == "torch" else TF_SUFFIX)
                       + suffix)
            attrs = dict(plain_attrs, **extra[suffix])
            kernel = make(class_name, kind, profile)
            if op_type in existing:
                for opdef in existing[op_type]:
                    if set(opdef._nativedef.attrs) != set(attrs):
                        raise RuntimeError(f"qi: {op_type} is already registered with "
                                           f"onnxruntime-extensions with other attributes")
                    opdef.body = kernel
            else:
                onnx_op(op_type=op_type, inputs=[F] * n_inputs, outputs=[F],
                        attrs=dict(attrs))(kernel)
    _KERNELS_REGISTERED = True


def get_ort_session_options():
    """An onnxruntime.SessionOptions with qi's custom-op kernels registered (onnxruntime-
    extensions), for models holding mct_quantizers custom nodes."""
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path
    register_ort_kernels()
    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return options


# Opset 21 export (after the names it uses are defined).
from quantizers_infrastructure.pytorch.onnx_opset21 import export, to_opset21  # noqa: E402

# GROUPED_SUFFIX ("_grouped") stays out of __all__ until docs/api.md describes it.
__all__ = ["DOMAIN", "TF_SUFFIX", "use_custom_ops", "custom_ops", "qdq_parameters", "export_kind",
           "custom_op_spec", "fake_quant_symbolic", "register", "register_ort_kernels",
           "get_ort_session_options", "fake_quant_translation", "translation_table", "export",
           "to_opset21"]
