# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""ONNX opset 21 export of models holding qi quantizers (`qp.onnx.export`, `qp.onnx.to_opset21`).

torch 2.7's TorchScript exporter writes opsets up to 20, which have neither 4-bit types nor
blocked quantization. `export` therefore exports at opset 20 with one temporary node
`qi_export::QDQ` per quantizer (attributes: the quantizer's JSON, the input's sizes), then
`to_opset21` rewrites each into standard opset-21 operators where the grid fits them
(`qdq_parameters(q, 21)`), and into the quantizer's `mct_quantizers` custom node otherwise:

* per-group integers: QuantizeLinear/DequantizeLinear with `block_size` and `axis` (one scale
  per channel and group, repeated along the other axes, as blocked quantization requires);
* 4-bit grids store as INT4/UINT4, 8-bit grids as INT8/UINT8, and 2, 3, 5, 6 and 7 bits as
  INT8/UINT8 followed by a Clip to the grid's range (an integer Clip between the two nodes);
* FLOAT quantizers of the E4M3 and E5M2 formats: FLOAT8E4M3FN / FLOAT8E5M2 zero points (0);
* everything else (LUT, the tf profile, FP6/FP4 elements, MX, NVFP4): the custom node, run by
  qi's kernels through `get_ort_session_options()`.

With `fold_weights` (the default), a quantizer whose input is an initializer (a weight) is
applied at export time: the initializer becomes its integer (or FLOAT8) codes, followed by a
DequantizeLinear alone, so the runtime computes exactly qi's `(q - zero_point) * scale`.
Moving from opset 20 to 21 changes no other operator's meaning (opset 21 only adds types and
the blocked attributes), so the rest of the graph stays as exported."""

import io
from typing import Any, Dict, List, Optional

import numpy as np
import torch

TEMPORARY_DOMAIN = "qi_export"
TEMPORARY_OP = "QDQ"
EXPORT_OPSET = 20  # the highest opset of torch's TorchScript exporter
OPSET = 21
IR_VERSION = 10  # the IR version of opset 21 (INT4 / UINT4)

_TORCH_FLOAT8 = {"FLOAT8E4M3FN": torch.float8_e4m3fn, "FLOAT8E5M2": torch.float8_e5m2}


def export(model, args, f=None, opset_version: int = OPSET, fold_weights: bool = True,
           **kwargs):
    """Exports `model` (holding qi inferable quantizers) to ONNX opset 21 and returns the
    ModelProto; also writes it to `f` (a path or a binary file object) unless f is None.

    `args` and `kwargs` (input_names, output_names, dynamic_axes, ...) go to
    `torch.onnx.export(..., dynamo=False)`, which runs at opset 20 with temporary nodes that
    `to_opset21` rewrites (see the module's doc). `fold_weights`: store quantized weights as
    their codes followed by DequantizeLinear (True) or as float weights followed by
    QuantizeLinear/DequantizeLinear (False). `use_custom_ops(True)` and
    `quantizer.enable_custom_impl()` keep their meaning (the custom node).
    Raises ValueError for an opset_version other than 21 and for `dynamo` (this function sets
    it); TypeError for a non-bool fold_weights."""
    import onnx
    from quantizers_infrastructure.pytorch.onnx import _state
    if isinstance(opset_version, bool) or opset_version != OPSET:
        raise ValueError(f"qp.onnx.export: opset_version must be {OPSET}, got {opset_version!r} "
                         f"(torch.onnx.export writes opsets 13 to {EXPORT_OPSET})")
    _check_bool("qp.onnx.export", fold_weights)
    if "dynamo" in kwargs:
        raise ValueError(f"qp.onnx.export: dynamo is set by qp.onnx.export (the TorchScript "
                         f"exporter), got dynamo={kwargs['dynamo']!r}")
    buffer = io.BytesIO()
    old = _state["opset21"]
    _state["opset21"] = True
    try:
        torch.onnx.export(model, args, buffer, opset_version=EXPORT_OPSET, dynamo=False,
                          **kwargs)
    finally:
        _state["opset21"] = old
    proto = to_opset21(onnx.load_from_string(buffer.getvalue()), fold_weights=fold_weights)
    if f is not None:
        onnx.save(proto, f)
    return proto


def to_opset21(model_proto, fold_weights: bool = True):
    """A copy of `model_proto` (an onnx.ModelProto exported by qp.onnx.export's first step, at
    an opset of 13 to 21) with every temporary `qi_export::QDQ` node rewritten in opset 21
    (QuantizeLinear/DequantizeLinear, a Clip for narrow grids, or the custom node; see the
    module's doc), the default opset 21 and IR version 10. Raises TypeError for a model that is
    not a ModelProto or a non-bool fold_weights; ValueError for an opset outside [13, 21], a
    temporary node without its quantizer, a per-group quantizer whose input shape is not
    static, and a folded weight whose quantizer output is not on the grid (NaN weights)."""
    import onnx
    from quantizers_infrastructure.pytorch.onnx import DOMAIN
    if not isinstance(model_proto, onnx.ModelProto):
        raise TypeError(f"to_opset21: model_proto must be an onnx.ModelProto, got "
                        f"{type(model_proto).__name__}")
    _check_bool("to_opset21", fold_weights)
    default = [o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")]
    if len(default) != 1 or not 13 <= default[0] <= OPSET:
        raise ValueError(f"to_opset21: the model's default-domain opset must be in [13, {OPSET}], "
                         f"got {default[0] if default else 'none'}")
    model = onnx.ModelProto()
    model.CopyFrom(model_proto)
    rewriter = _Rewriter(model.graph, fold_weights)
    nodes = []
    for node in model.graph.node:
        if node.domain == TEMPORARY_DOMAIN:
            nodes += rewriter.rewrite(node)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    rewriter.drop_unused_initializers()
    imports = [o for o in model.opset_import if o.domain != TEMPORARY_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(imports)
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = OPSET
    if rewriter.custom and all(o.domain != DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    model.ir_version = max(model.ir_version, IR_VERSION)
    return model


def _check_bool(where: str, fold_weights) -> None:
    if not isinstance(fold_weights, bool):
        raise TypeError(f"{where}: fold_weights must be a bool, got "
                        f"{type(fold_weights).__name__} {fold_weights!r}")


def _axis(axis: int, rank: int, what: str, node: str) -> int:
    if axis < 0:
        if rank < 0:
            raise ValueError(f"to_opset21: node {node!r}: the negative {what} {axis} needs the "
                             f"input's rank, which the exported graph does not give")
        axis += rank
    return axis


class _Rewriter:
    """Rewrites temporary nodes of one graph, adding initializers with unique names."""

    def __init__(self, graph, fold_weights: bool):
        self.graph = graph
        self.fold_weights = fold_weights
        self.initializers = {t.name: t for t in graph.initializer}
        self.graph_inputs = {i.name for i in graph.input}
        self.used = set(self.initializers) | self.graph_inputs | {o.name for o in graph.output}
        for n in graph.node:
            self.used.update(n.input)
            self.used.update(n.output)
        self.folded: List[str] = []
        self.custom = False

    def name(self, base: str) -> str:
        out, i = base, 1
        while out in self.used:
            out, i = f"{base}_{i}", i + 1
        self.used.add(out)
        return out

    def add(self, tensor) -> str:
        self.graph.initializer.append(tensor)
        return tensor.name

    def rewrite(self, node) -> list:
        import onnx
        from quantizers_infrastructure.pytorch.onnx import _quantizer, qdq_parameters
        label = node.name or node.output[0]
        if node.op_type != TEMPORARY_OP:
            raise ValueError(f"to_opset21: node {label!r} of the domain {TEMPORARY_DOMAIN} must be "
                             f"a {TEMPORARY_OP}, got {node.op_type}")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if "quantizer" not in attrs:
            raise ValueError(f"to_opset21: node {label!r} ({TEMPORARY_DOMAIN}::{TEMPORARY_OP}) has "
                             f"no quantizer attribute")
        q = _quantizer(attrs["quantizer"].decode())
        x, y = node.input[0], node.output[0]
        shape = [int(d) for d in attrs.get("input_shape", [])]
        rank = int(attrs.get("input_rank", -1))
        weight = self.initializers.get(x) if x not in self.graph_inputs else None
        if weight is not None:
            shape, rank = list(weight.dims), len(weight.dims)
        p = qdq_parameters(q, OPSET)
        if p is None:
            return [self._custom(q, x, y, rank, label)]
        layout = _Layout(p, shape, rank, label)
        base = label.replace("::", "_")
        scale = self.add(_tensor(self.name(f"{base}_scale"), "FLOAT", layout.dims,
                                 layout.values(p["scale"])))
        zero = self.add(_tensor(self.name(f"{base}_zero_point"), p["onnx_type"], layout.dims,
                                layout.values(p["zero_point"])))
        kw = layout.attributes()
        if self.fold_weights and weight is not None:
            codes = _codes(q, p, onnx.numpy_helper.to_array(weight), layout, x)
            stored = self.add(_tensor(self.name(f"{x}_quantized"), p["onnx_type"],
                                      list(weight.dims), codes))
            self.folded.append(x)
            return [onnx.helper.make_node("DequantizeLinear", [stored, scale, zero], [y],
                                          name=self.name(f"{base}_dequantize"), **kw)]
        codes = self.name(f"{base}_codes")
        nodes = [onnx.helper.make_node("QuantizeLinear", [x, scale, zero], [codes],
                                       name=self.name(f"{base}_quantize"), **kw)]
        if p["clip"] is not None:
            lo, hi = (self.add(_tensor(self.name(f"{base}_{k}"), p["onnx_type"], [],
                                       np.asarray(v))) for k, v in zip(("qmin", "qmax"), p["clip"]))
            clipped = self.name(f"{base}_clipped")
            nodes.append(onnx.helper.make_node("Clip", [codes, lo, hi], [clipped],
                                               name=self.name(f"{base}_clip")))
            codes = clipped
        nodes.append(onnx.helper.make_node("DequantizeLinear", [codes, scale, zero], [y],
                                           name=self.name(f"{base}_dequantize"), **kw))
        return nodes

    def _custom(self, q, x, y, rank, label):
        import onnx
        from quantizers_infrastructure.pytorch.onnx import DOMAIN, custom_op_spec
        op_type, inputs, attrs = custom_op_spec(q, rank if rank >= 0 else None)
        base = label.replace("::", "_")
        names = [self.add(_tensor(self.name(f"{base}_input{i + 1}"), "FLOAT", [a.size], a))
                 for i, a in enumerate(inputs)]
        self.custom = True
        return onnx.helper.make_node(op_type, [x] + names, [y], domain=DOMAIN,
                                     name=self.name(f"{base}_{op_type}"), **attrs)

    def drop_unused_initializers(self) -> None:
        used = {name for n in self.graph.node for name in n.input}
        used.update(o.name for o in self.graph.output)
        keep = [t for t in self.graph.initializer if t.name not in self.folded or t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)


class _Layout:
    """Where q's parameters sit for the ONNX operators: a scalar (per tensor), a 1-D tensor
    along `axis` (per channel), or, with groups, a tensor of the input's rank whose size along
    the group axis is the number of groups (blocked quantization; one value per (channel,
    group), repeated along every other axis)."""

    def __init__(self, p: Dict[str, Any], shape: List[int], rank: int, node: str):
        self.p, self.shape = p, shape
        self.axis: Optional[int] = None
        self.block_size: Optional[int] = p["block_size"]
        if self.block_size is not None:
            if rank < 0 or any(d < 0 for d in shape):
                raise ValueError(f"to_opset21: node {node!r}: a per-group quantizer needs a static "
                                 f"input shape, got {shape if rank >= 0 else 'an unknown rank'}")
            self.axis = _axis(p["group_axis"], rank, "group_axis", node)
            self.groups = -(-shape[self.axis] // self.block_size)
            self.channel_axis = (_axis(p["channel_axis"], rank, "channel_axis", node)
                                 if p["per_channel"] else None)
            channels = shape[self.channel_axis] if p["per_channel"] else 1
            if p["scale"].size != channels * self.groups:
                raise ValueError(f"to_opset21: node {node!r}: the quantizer has {p['scale'].size} "
                                 f"values, the input {shape} needs {channels} channels x "
                                 f"{self.groups} groups of {self.block_size} = "
                                 f"{channels * self.groups}")
            self.dims = list(shape)
            self.dims[self.axis] = self.groups
        elif p["per_channel"]:
            self.axis = _axis(p["channel_axis"], rank, "channel_axis", node)
            self.dims = [p["scale"].size]
        else:
            self.dims = []

    def attributes(self) -> Dict[str, int]:
        kw = {} if self.axis is None else {"axis": self.axis}
        if self.block_size is not None:
            kw["block_size"] = self.block_size
        return kw

    def values(self, compact: np.ndarray) -> np.ndarray:
        """The ONNX tensor (shape self.dims) of one value per tensor, channel or (channel,
        group)."""
        compact = np.asarray(compact).reshape(-1)
        if self.block_size is None:
            return compact.reshape(self.dims)
        rank = len(self.dims)

        def along(axis, n):
            return np.arange(n).reshape([n if d == axis else 1 for d in range(rank)])

        index = along(self.axis, self.groups)
        if self.channel_axis is not None:
            index = index + along(self.channel_axis, self.dims[self.channel_axis]) * self.groups
        return np.broadcast_to(compact[index], self.dims).copy()

    def expanded(self, compact: np.ndarray) -> np.ndarray:
        """The values broadcast against the input (one per element)."""
        v = self.values(compact)
        if self.block_size is not None:
            v = np.repeat(v, self.block_size, axis=self.axis)
            v = np.take(v, np.arange(self.shape[self.axis]), axis=self.axis)
        elif self.axis is not None:
            v = v.reshape([-1 if d == self.axis else 1 for d in range(len(self.shape))])
        return v


def _codes(q, p, w: np.ndarray, layout: _Layout, name: str) -> np.ndarray:
    """The stored codes of weight w: qi's output y = q(w) divided back by its scale. Checked:
    DequantizeLinear of the codes gives y bit for bit."""
    y = np.asarray(q(np.ascontiguousarray(w, dtype=np.float32)))
    scale = layout.expanded(p["scale"]).astype(np.float32)
    if p["onnx_type"] in _TORCH_FLOAT8:
        codes = (torch.from_numpy(y) / torch.from_numpy(np.ascontiguousarray(
            np.broadcast_to(scale, y.shape)))).to(_TORCH_FLOAT8[p["onnx_type"]])
        back = (codes.float() * torch.from_numpy(scale)).numpy()
        codes = codes.float().numpy()
        same = np.isnan(back) == np.isnan(y)
        same &= np.isnan(y) | (back.view(np.int32) == y.view(np.int32))
    else:
        zero = layout.expanded(p["zero_point"]).astype(np.float32)
        with np.errstate(invalid="ignore"):
            codes = np.rint(y / scale) + zero
            back = ((codes - zero).astype(np.float32) * scale).astype(np.float32)
        same = np.isfinite(codes) & (back.view(np.int32) == y.view(np.int32))
    if not np.all(same):
        bad = int(np.flatnonzero(~same.reshape(-1))[0])
        raise ValueError(f"to_opset21: weight {name!r}: the quantized value {y.reshape(-1)[bad]} "
                         f"at flat index {bad} is not a {p['onnx_type']} code times its scale; "
                         f"export with fold_weights=False")
    return codes


def _tensor(name: str, onnx_type: str, dims: List[int], values: np.ndarray):
    """An initializer of ONNX type `onnx_type` (FLOAT, INT8, UINT8, INT4, UINT4, FLOAT8E4M3FN,
    FLOAT8E5M2) from values exactly representable in it."""
    from onnx import TensorProto, helper, numpy_helper
    values = np.asarray(values).reshape(-1)
    if onnx_type in ("FLOAT", "INT8", "UINT8"):
        dtype = {"FLOAT": np.float32, "INT8": np.int8, "UINT8": np.uint8}[onnx_type]
        return numpy_helper.from_array(values.astype(dtype).reshape(dims), name)
    if onnx_type in _TORCH_FLOAT8:
        raw = torch.from_numpy(values.astype(np.float32)).to(_TORCH_FLOAT8[onnx_type])
        data = raw.view(torch.uint8).numpy().tobytes()
    else:  # INT4 / UINT4: two codes per byte, the first in the low nibble
        nibbles = (values.astype(np.int64) & 0xF).astype(np.uint8)
        if nibbles.size % 2:
            nibbles = np.append(nibbles, np.uint8(0))
        data = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
    return helper.make_tensor(name, getattr(TensorProto, onnx_type), dims, data, raw=True)


__all__ = ["TEMPORARY_DOMAIN", "TEMPORARY_OP", "export", "to_opset21"]
