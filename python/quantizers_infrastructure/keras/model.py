# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Whole-model quantization of a tf.keras model (Keras 2) in one call.

    import quantizers_infrastructure.keras as qk
    qmodel = qk.quantize(model, "w8a8", calibration_data)       # post-training
    print(qmodel.qi_report)                                      # per-layer SQNR table

    qat = qk.prepare_qat(model, "w4a8_lsq", calibration_data)   # trainable quantizers
    qat.compile(...); qat.fit(...)
    qmodel = qk.convert(qat)                                     # inferable quantizers

The model (Sequential or functional) is rebuilt layer by layer from its graph with fresh copies of
its layers (the float model is left as it was). Batch normalizations that follow a Conv1D/2D/3D,
DepthwiseConv2D, Conv2DTranspose or Dense layer are folded into it; those layers and Embedding
are wrapped (KerasQuantizationWrapper, their kernel quantized); KerasActivationQuantizationHolder
layers go on the quantized layers' outputs (after the activation layers that follow them) and on
the outputs of the Add / Concatenate / Dot layers the config names ("add", "cat", "matmul").

Which layer gets what is the config's (ModelQuantizationConfig, the core's rules, with Keras
class names as types: "Conv2D", "Dense", ..., and "add" / "cat" / "matmul" for Add,
Concatenate and Dot layers); calibration statistics are the core's
(qi::calibration, through quantizers_infrastructure.common.calibration)."""

import time
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import tensorflow as tf

from quantizers_infrastructure.common import calibration as cal
from quantizers_infrastructure.common import model_quantizers
from quantizers_infrastructure.common.base_trainable_quantizer import BaseTrainableQuantizer
from quantizers_infrastructure.common.model_config import ModelQuantizationConfig
from quantizers_infrastructure.common.report import (LayerReport, QuantizationReport, describe,
                                                     sqnr_db)
from quantizers_infrastructure.keras.load import convert_to_inferable_quantizers
from quantizers_infrastructure.keras.trainable_quantizers import get_trainable_quantizer_class
from quantizers_infrastructure.keras.wrapper import (KerasActivationQuantizationHolder,
                                                     KerasQuantizationWrapper)

L = tf.keras.layers

# The layers whose weights are quantized: (weight attribute, output channel axis as an offset
# from the weight's last axis: -1 for kernels (..., out), -2 for transposed convolutions'
# (..., out, in) and depthwise kernels' (..., in, multiplier); Embedding's rows are axis 0).
QUANTIZED_LAYERS = {
    L.Conv1D: ("kernel", -1), L.Conv2D: ("kernel", -1), L.Conv3D: ("kernel", -1),
    L.Dense: ("kernel", -1), L.DepthwiseConv2D: ("depthwise_kernel", -2),
    L.Conv1DTranspose: ("kernel", -2), L.Conv2DTranspose: ("kernel", -2),
    L.Conv3DTranspose: ("kernel", -2), L.Embedding: ("embeddings", 0),
}
_FOLDABLE = (L.Conv1D, L.Conv2D, L.Conv3D, L.Dense, L.DepthwiseConv2D, L.Conv1DTranspose,
             L.Conv2DTranspose, L.Conv3DTranspose)

# Layers whose outputs may get an activation quantizer (config "activation_ops").
_FUNCTIONAL_OPS = {L.Add: "add", L.Concatenate: "cat", L.Dot: "matmul"}

# Element-wise activations a layer's output quantizer moves past (as deployed kernels fuse them).
_ACTIVATION_LAYERS = (L.ReLU, L.LeakyReLU, L.ELU)
_ACTIVATION_NAMES = {"relu", "relu6", "sigmoid", "tanh", "swish", "silu", "gelu", "elu",
                     "selu", "hard_sigmoid", "hard_swish", "leaky_relu", "softplus"}

HOLDER_SUFFIX = "_activation_holder_quantizer"


def _class_of(layer) -> Optional[type]:
    """The QUANTIZED_LAYERS key of the layer (exact class first, then subclasses)."""
    if type(layer) in QUANTIZED_LAYERS:
        return type(layer)
    # Transposed convolutions subclass the plain ones: the most derived match wins.
    hits = [c for c in QUANTIZED_LAYERS if isinstance(layer, c)]
    return max(hits, key=lambda c: len(c.__mro__)) if hits else None


def weight_channel_axis(layer) -> int:
    """The non-negative output channel axis of the layer's quantized weight."""
    attr, offset = QUANTIZED_LAYERS[_class_of(layer)]
    rank = len(getattr(layer, attr).shape)
    return offset % rank if offset < 0 else offset


def _is_linear(layer) -> bool:
    act = getattr(layer, "activation", None)
    return act is None or act is tf.keras.activations.linear or \
        getattr(act, "__name__", "") == "linear"


def _is_activation(layer) -> bool:
    if isinstance(layer, _ACTIVATION_LAYERS):
        return True
    if isinstance(layer, L.Activation):
        return getattr(layer.activation, "__name__", "") in _ACTIVATION_NAMES
    return False


# ---- batch norm folding -------------------------------------------------------------------------

def fold_batch_norm(layer, bn) -> Optional[List[np.ndarray]]:
    """The weights of `layer` with the inference-mode batch normalization `bn` that follows it
    folded in: w' = w * g / sqrt(var + eps) per output channel, b' = (b - mean) * g /
    sqrt(var + eps) + beta (numpy, in float64 then float32), as [kernel, bias]. None when it
    cannot be folded: a non-linear activation inside the layer, a normalization over another axis
    than the last (channels-first data), or a channel count that does not match."""
    if not isinstance(layer, _FOLDABLE) or not _is_linear(layer):
        return None
    axis = list(bn.axis) if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    rank = len(layer.output_shape) if not isinstance(layer.output_shape, list) else None
    if rank is None or len(axis) != 1 or axis[0] % rank != rank - 1:
        return None
    attr, _ = QUANTIZED_LAYERS[_class_of(layer)]
    kernel = getattr(layer, attr).numpy().astype(np.float64)
    mean = bn.moving_mean.numpy().astype(np.float64)
    var = bn.moving_variance.numpy().astype(np.float64)
    gamma = bn.gamma.numpy().astype(np.float64) if bn.gamma is not None else np.ones_like(var)
    beta = bn.beta.numpy().astype(np.float64) if bn.beta is not None else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)
    if isinstance(layer, L.DepthwiseConv2D):
        # (kh, kw, in, multiplier): output channel i * multiplier + m.
        if kernel.shape[-2] * kernel.shape[-1] != scale.size:
            return None
        kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    elif isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        if kernel.shape[-2] != scale.size:
            return None
        kernel = kernel * scale.reshape(-1, 1)
    else:
        if kernel.shape[-1] != scale.size:
            return None
        kernel = kernel * scale
    bias = layer.bias.numpy().astype(np.float64) if layer.use_bias else np.zeros_like(mean)
    bias = (bias - mean) * scale + beta
    return [kernel.astype(np.float32), bias.astype(np.float32)]


# ---- the plan -----------------------------------------------------------------------------------

def _nodes(model: tf.keras.Model, who: str) -> list:
    """The model's layer calls (Keras nodes, input layers excluded) in an order where each runs
    after those it reads."""
    if not getattr(model, "_is_graph_network", False):
        raise ValueError(f"{who}: model '{model.name}' ({type(model).__name__}) has no layer "
                         f"graph: pass a functional model or a Sequential model built with an "
                         f"input shape (subclassed models cannot be rebuilt layer by layer)")
    order = []
    for depth in sorted(model._nodes_by_depth, reverse=True):  # noqa: SLF001 (Keras 2 graph)
        order += [n for n in model._nodes_by_depth[depth] if not n.is_input]  # noqa: SLF001
    return order


def _outs(node) -> list:
    return tf.nest.flatten(node.outputs)


class _Site:
    """An activation quantizer's place: the original tensor whose value it quantizes."""

    def __init__(self, name: str, type_name: str, spec: Dict[str, Any]):
        self.name, self.type, self.spec = name, type_name, spec
        self.histogram = None
        self.quantizer = None
        self.seen = False


class _Plan:
    """What one quantize / prepare_qat call does to the model's graph."""

    def __init__(self, model: tf.keras.Model, config: ModelQuantizationConfig, trainable: bool,
                 who: str):
        self.model, self.config, self.trainable = model, config, trainable
        self.nodes = _nodes(model, who)
        self.notes: List[str] = []
        self.folded: Dict[int, Any] = {}     # id(bn node) -> the node of the layer it folds into
        self.weights: Dict[str, List[np.ndarray]] = {}  # layer name -> its (folded) weights
        self.wrapped: Dict[str, Dict[str, Any]] = {}    # layer name -> resolved config
        self.sites: Dict[int, _Site] = {}  # id(original tensor) -> site
        self._float = None  # the float (folded) graph, built once
        users: Dict[int, int] = {}
        for node in self.nodes:
            for t in node.keras_inputs:
                users[id(t)] = users.get(id(t), 0) + 1
        for t in model.outputs:
            users[id(t)] = users.get(id(t), 0) + 1
        self.users = users
        producer = {}
        for node in self.nodes:
            for t in _outs(node):
                producer[id(t)] = node
        self.producer = producer
        self._fold()
        self._find()

    def _fold(self) -> None:
        if not self.config.fold_batch_norm:
            return
        calls = {}
        for node in self.nodes:
            calls[id(node.layer)] = calls.get(id(node.layer), 0) + 1
        for node in self.nodes:
            bn = node.layer
            if not isinstance(bn, L.BatchNormalization) or len(node.keras_inputs) != 1:
                continue
            src = self.producer.get(id(node.keras_inputs[0]))
            if src is None or calls[id(src.layer)] != 1 or calls[id(bn)] != 1 or \
                    self.users.get(id(node.keras_inputs[0])) != 1 or \
                    src.layer.name in self.weights:
                continue
            folded = fold_batch_norm(src.layer, bn)
            if folded is not None:
                self.weights[src.layer.name] = folded
                self.folded[id(node)] = src

    def _anchor(self, tensor):
        """The tensor quantized for `tensor`: the output of the element-wise activation layer
        that is its only user, if any (followed through chains of them)."""
        while self.users.get(id(tensor)) == 1:
            user = next((n for n in self.nodes if any(t is tensor for t in n.keras_inputs)), None)
            if user is None or not _is_activation(user.layer) or len(_outs(user)) != 1:
                break
            tensor = _outs(user)[0]
        return tensor

    def _output_of(self, node):
        """A node's output tensor as the graph sees it once batch norms are folded: a folded
        layer's output stands for its batch norm's."""
        for bn_id, src in self.folded.items():
            if src is node:
                bn = next(n for n in self.nodes if id(n) == bn_id)
                return _outs(bn)[0]
        return _outs(node)[0] if len(_outs(node)) == 1 else None

    def _find(self) -> None:
        noted, calls = set(), {}
        ops = set(self.config.activation_ops)
        for node in self.nodes:
            layer = node.layer
            if isinstance(layer, tf.keras.Model):
                if layer.name not in noted:
                    noted.add(layer.name)
                    self.notes.append(f"'{layer.name}' ({type(layer).__name__}) is a model inside "
                                      f"the model: it is copied as it is and its layers stay float")
                continue
            cls = _class_of(layer)
            op = next((o for c, o in _FUNCTIONAL_OPS.items() if isinstance(layer, c)), None)
            if cls is None and (op is None or op not in ops):
                continue
            type_name = cls.__name__ if cls is not None else op
            r = self.config.resolve(layer.name, type_name)
            if r["skipped"]:
                if layer.name not in noted:
                    noted.add(layer.name)
                    self.notes.append(f"skipped '{layer.name}' ({type_name}): the config's skip "
                                      f"list")
                continue
            if cls is not None and r["weights"] is not None:
                self.wrapped[layer.name] = r
            # A layer called more than once (shared) gets a site per call: name, name_1, ...
            k = calls[layer.name] = calls.get(layer.name, -1) + 1
            out = self._output_of(node)
            if r["activations"] is None or out is None:
                continue
            name = layer.name if k == 0 else f"{layer.name}_{k}"
            self.sites[id(self._anchor(out))] = _Site(name, type_name, r["activations"])

    # -- rebuilding --
    def float_graph(self):
        """rebuild(quantized=False), built once (calibration and the report share it)."""
        if self._float is None:
            self._float = self.rebuild(quantized=False)
        return self._float

    def rebuild(self, quantized: bool):
        """A new graph of fresh layers: float (batch norms folded) or quantized. Returns (model,
        {site name: tensor quantized or observed there}, {wrapped layer name: its output})."""
        m = self.model
        tensors: Dict[int, Any] = {}
        new_inputs = []
        for t in m.inputs:
            x = tf.keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.node.layer.name)
            tensors[id(t)] = x
            new_inputs.append(x)
        layers: Dict[int, Any] = {}
        site_tensors, layer_outputs = {}, {}
        skip_bn = set(self.folded)
        for node in self.nodes:
            if id(node) in skip_bn:
                tensors[id(_outs(node)[0])] = tensors[id(node.keras_inputs[0])]
            else:
                layer = layers.get(id(node.layer))
                if layer is None:
                    layer = layers[id(node.layer)] = self._copy(node, quantized)
                args, kwargs = tf.nest.map_structure(lambda v: tensors.get(id(v), v),
                                                     (node.call_args, node.call_kwargs))
                out = layer(*args, **kwargs)
                for t, y in zip(_outs(node), tf.nest.flatten(out)):
                    tensors[id(t)] = y
                if node.layer.name in self.wrapped:
                    layer_outputs.setdefault(node.layer.name, tf.nest.flatten(out)[0])
            for t in _outs(node) if id(node) not in skip_bn else []:
                self._at_site(t, tensors, quantized, site_tensors)
            if id(node) in skip_bn:
                self._at_site(_outs(node)[0], tensors, quantized, site_tensors)
        outputs = tf.nest.map_structure(lambda t: tensors[id(t)], m._nested_outputs)  # noqa: SLF001
        return tf.keras.Model(new_inputs, outputs, name=m.name), site_tensors, layer_outputs

    def _at_site(self, t, tensors, quantized: bool, site_tensors) -> None:
        site = self.sites.get(id(t))
        if site is None:
            return
        if quantized:
            if site.quantizer is None:
                return
            tensors[id(t)] = KerasActivationQuantizationHolder(
                site.quantizer, name=site.name + HOLDER_SUFFIX)(tensors[id(t)])
        site_tensors[site.name] = tensors[id(t)]

    def _copy(self, node, quantized: bool):
        """A fresh copy of the node's layer with its (folded) weights; wrapped when quantized and
        the config quantizes its weights."""
        old = node.layer
        new = old.__class__.from_config(self._layer_config(old))
        weights = self.weights.get(old.name, old.get_weights())
        if weights:
            shapes = [t.shape for t in node.keras_inputs]
            new.build(shapes[0] if len(shapes) == 1 else shapes)
            new.set_weights(weights)
        if not quantized or old.name not in self.wrapped:
            return new
        r = self.wrapped[old.name]
        attr, _ = QUANTIZED_LAYERS[_class_of(old)]
        w = getattr(new, attr).numpy()
        axis = weight_channel_axis(new)
        q = _weights_quantizer(r["weights"], w, axis, self.trainable)
        return KerasQuantizationWrapper(new, {attr: q}, name=f"quant_{old.name}")

    def _layer_config(self, old) -> Dict[str, Any]:
        config = old.get_config()
        if old.name in self.weights:
            config["use_bias"] = True  # the folded batch norm's shift
        return config


# ---- quantizers ---------------------------------------------------------------------------------

def _training(spec, trainable: bool) -> Optional[str]:
    """The spec's training method in QAT; post-training quantization trains nothing."""
    return spec["training"] if trainable else None


def _weights_quantizer(spec, weight, axis: int, trainable: bool):
    return model_quantizers.weights_quantizer(spec, weight, axis,
                                              _training(spec, trainable),
                                              get_trainable_quantizer_class)


def _activation_quantizer(spec, histogram, trainable: bool):
    return model_quantizers.activation_quantizer(spec, histogram, _training(spec, trainable),
                                                 get_trainable_quantizer_class)


# ---- calibration and report ---------------------------------------------------------------------

def _inputs_of(batch, forward: Optional[Callable]):
    """A batch's model inputs: a tuple is (x, y[, sample_weight]) as in fit's data, a list or dict
    is the inputs of a multi-input model, anything else is x; `forward` picks them otherwise."""
    if forward is not None:
        return forward(batch)
    if isinstance(batch, tuple) and 1 <= len(batch) <= 3:
        return batch[0]
    return batch


def _run(model, x):
    out = model(x, training=False)
    return [o.numpy() for o in tf.nest.flatten(out)]


def _calibrate(plan: _Plan, data, forward, progress: bool, who: str):
    """One pass over the data through the float (folded) graph with the sites as outputs; each
    site's values go to its histogram (the core's). Returns (batches, seconds, first inputs)."""
    if not plan.sites:
        return 0, 0.0, None
    if data is None:
        raise ValueError(f"{who}: the config quantizes activations; pass calibration_data (an "
                         f"iterable of batches) to calibrate their ranges")
    float_model, site_tensors, _ = plan.float_graph()
    sites = [s for s in plan.sites.values() if s.name in site_tensors]
    probe = tf.keras.Model(float_model.inputs, [site_tensors[s.name] for s in sites])
    for s in sites:
        s.histogram = cal.Histogram(plan.config.num_bins)
    from tqdm.auto import tqdm
    total = len(data) if hasattr(data, "__len__") else None
    start = time.perf_counter()
    batches, first = 0, None
    for batch in tqdm(data, total=total, desc="qi calibration", disable=not progress,
                      leave=False):
        x = _inputs_of(batch, forward)
        for s, v in zip(sites, _run(probe, x)):
            if v.dtype.kind == "f":
                s.histogram.update(np.ascontiguousarray(v, dtype=np.float32))
                s.seen = True
        if first is None:
            first = x
        batches += 1
    if batches == 0:
        raise ValueError(f"{who}: calibration_data gave no batches")
    return batches, time.perf_counter() - start, first


def _report(plan: _Plan, qmodel, q_sites, q_layers, first, batches: int,
            seconds: float) -> QuantizationReport:
    """SQNR of each wrapped layer's quantized weight and, on the first calibration batch, of each
    wrapped layer's and activation site's output against the float (folded) model's."""
    report = QuantizationReport(calibration_batches=batches, calibration_seconds=seconds,
                                notes=list(plan.notes))
    if plan.folded:
        report.notes.append(f"folded {len(plan.folded)} batch norms into the preceding layers")
    rows: Dict[str, LayerReport] = {}
    wrappers = {l.layer.name: l for l in qmodel.layers if isinstance(l, KerasQuantizationWrapper)}
    for name, r in plan.wrapped.items():
        w = wrappers[name]
        attr = next(iter(w.weights_quantizers))
        q = w.weights_quantizers[attr]
        var = getattr(w.layer, attr)
        row = LayerReport(name, _class_of(w.layer).__name__, describe(r["weights"]))
        qw = q(var, training=False) if isinstance(q, BaseTrainableQuantizer) else q(var)
        row.weight_sqnr_db = sqnr_db(var.numpy(), qw.numpy())
        rows[name] = row
    for site in plan.sites.values():
        if site.quantizer is None:
            continue
        row = rows.get(site.name) or LayerReport(site.name, site.type)
        row.activations = describe(site.spec)
        rows[site.name] = row
    report.layers = list(rows.values())
    if first is not None:
        float_model, f_sites, f_layers = plan.float_graph()
        names = [n for n in rows if n in f_layers or n in f_sites]
        f_out = [f_sites.get(n, f_layers.get(n)) for n in names]
        q_out = [q_sites.get(n, q_layers.get(n)) for n in names]
        fv = _run(tf.keras.Model(float_model.inputs, f_out + float_model.outputs), first)
        qv = _run(tf.keras.Model(qmodel.inputs, q_out + qmodel.outputs), first)
        for i, n in enumerate(names):
            rows[n].output_sqnr_db = sqnr_db(fv[i], qv[i])
        report.model_output_sqnr_db = sqnr_db(fv[len(names)], qv[len(names)])
    return report


# ---- the calls ----------------------------------------------------------------------------------

def _quantize(model, config, calibration_data, *, trainable: bool, forward, progress: bool,
              report: bool, who: str) -> tf.keras.Model:
    cfg = ModelQuantizationConfig.of(config)
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"{who}: model must be a tf.keras.Model, got {type(model).__name__}")
    plan = _Plan(model, cfg, trainable, who)
    batches, seconds, first = _calibrate(plan, calibration_data, forward, progress, who)
    for site in plan.sites.values():
        if not site.seen:
            plan.notes.append(f"no activation quantizer on '{site.name}' ({site.type}): its "
                              f"output is not a float tensor in calibration")
            continue
        site.quantizer = _activation_quantizer(site.spec, site.histogram, trainable)
    qmodel, q_sites, q_layers = plan.rebuild(quantized=True)
    if report:
        qmodel.qi_report = _report(plan, qmodel, q_sites, q_layers, first, batches, seconds)
    return qmodel


def quantize(model: tf.keras.Model, config="w8a8", calibration_data: Optional[Iterable] = None,
             *, forward: Optional[Callable[[Any], Any]] = None, progress: bool = True,
             report: bool = True) -> tf.keras.Model:
    """Post-training quantization of a whole Keras model in one call; returns the quantized copy
    (a functional model with the same inputs and outputs).

    Args:
      model: a functional or built Sequential tf.keras model (left unchanged).
      config: a ModelQuantizationConfig, a preset name ("w8a8", "w8_weight_only", ...), a dict
        or JSON text of the config (a spec's "training" is ignored here: nothing trains). Layer
        types are Keras class names ("Conv2D", "Dense", ...) and "add" / "cat".
      calibration_data: an iterable of batches (a list of arrays, a tf.data.Dataset, a
        generator); needed when the config quantizes activations. A tuple batch is (x, y[,
        sample_weight]) as in fit's data; a list or dict is the inputs of a multi-input model;
        anything else is x.
      forward: forward(batch) -> the model's inputs, for other batch layouts.
      progress: show a progress bar over the calibration batches.
      report: compute the per-layer report (model.qi_report, a QuantizationReport) on the first
        calibration batch.
    Errors (bad config, missing data, a model without a layer graph) raise ValueError."""
    return _quantize(model, config, calibration_data, trainable=False, forward=forward,
                     progress=progress, report=report, who="quantize")


def prepare_qat(model: tf.keras.Model, config="w4a8_lsq",
                calibration_data: Optional[Iterable] = None, *,
                forward: Optional[Callable[[Any], Any]] = None,
                progress: bool = True) -> tf.keras.Model:
    """Quantization-aware training, step 1: a copy of the model with the trainable Keras
    quantizers the config's specs name ("training": STE or LSQ) and inferable ones elsewhere,
    their parameters started from calibration (weights from themselves, activations from
    calibration_data). Batch normalizations are folded first. Compile and fit it as usual."""
    return _quantize(model, config, calibration_data, trainable=True, forward=forward,
                     progress=progress, report=False, who="prepare_qat")


def convert(model: tf.keras.Model) -> tf.keras.Model:
    """Quantization-aware training, step 2: a copy of the model with every trainable quantizer
    replaced by its inferable conversion (the same outputs as the trainable model's inference
    forward)."""
    return convert_to_inferable_quantizers(model)


def quantized_layers(model: tf.keras.Model) -> Dict[str, tf.keras.layers.Layer]:
    """{name: layer} of the model's wrappers and activation holders."""
    return {l.name: l for l in model.layers
            if isinstance(l, (KerasQuantizationWrapper, KerasActivationQuantizationHolder))}


__all__ = ["quantize", "prepare_qat", "convert", "fold_batch_norm", "quantized_layers",
           "weight_channel_axis", "QUANTIZED_LAYERS", "ModelQuantizationConfig"]
