# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Whole-model quantization in one call.

    qmodel = qi.pytorch.quantize(model, "w8a8", calibration_data)      # post-training
    print(qmodel.qi_report)                                             # per-layer SQNR table

    qat = qi.pytorch.prepare_qat(model, "w4a8_lsq", calibration_data)   # trainable quantizers
    ... train qat ...
    qmodel = qi.pytorch.convert(qat)                                    # inferable quantizers

The model is copied (the float model is left as it was) and traced with torch.fx. Batch norms
that follow a convolution or linear layer are folded into it; Conv1d/2d/3d, ConvTranspose1d/2d/3d,
Linear and Embedding layers are wrapped (PytorchQuantizationWrapper, their weights quantized);
activation holders (PytorchActivationQuantizationHolder) go on the layers' outputs (after the
activation function that follows, when one does) and on the outputs of the functional adds,
concatenations and matmuls the config names. A submodule that torch.fx cannot trace stays whole
in its parent's graph and is entered instead, its children quantized one by one: a warning (and
the report's notes) name it and what inside it stays float. The model takes and returns what it
did.

Which layer gets what is the config's (ModelQuantizationConfig, the core's rules); calibration
statistics are the core's (qi::calibration, through quantizers_infrastructure.common.calibration).
"""

import copy
import operator
import time
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.fx
from torch import nn

from quantizers_infrastructure.common import calibration as cal
from quantizers_infrastructure.common import model_quantizers
from quantizers_infrastructure.common.model_config import ModelQuantizationConfig
from quantizers_infrastructure.common.report import (LayerReport, QuantizationReport, describe,
                                                     sqnr_db)
from quantizers_infrastructure.pytorch.activation_holders import \
    PytorchActivationQuantizationHolder
from quantizers_infrastructure.pytorch.trainable_quantizers import get_trainable_quantizer_class
from quantizers_infrastructure.pytorch.wrapper import (PytorchQuantizationWrapper,
                                                        call_layer_with_weights)

# The layers whose weights are quantized, and the axis of their output channels in the weight.
QUANTIZED_LAYERS = {
    nn.Conv1d: 0, nn.Conv2d: 0, nn.Conv3d: 0, nn.Linear: 0, nn.Embedding: 0,
    nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 1, nn.ConvTranspose3d: 1,
}
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d)

# Functional ops whose outputs may get an activation quantizer (config "activation_ops").
_FUNCTIONAL_OPS = {
    "add": {operator.add, operator.iadd, torch.add},
    "cat": {torch.cat, torch.concat, torch.concatenate},
    "matmul": {operator.matmul, torch.matmul, torch.bmm, torch.mm},
}
_METHOD_OPS = {"add": {"add", "add_"}, "cat": set(), "matmul": {"matmul", "bmm", "mm"}}

# Element-wise activation functions a layer's output quantizer moves past (the quantized value
# is the activation's output, as deployed kernels fuse them).
_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.SiLU, nn.GELU,
                       nn.Hardswish, nn.Sigmoid, nn.Tanh)
_ACTIVATION_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6,
                         torch.nn.functional.hardtanh, torch.nn.functional.silu,
                         torch.nn.functional.gelu, torch.nn.functional.hardswish, torch.sigmoid,
                         torch.tanh, torch.nn.functional.leaky_relu}
_ACTIVATION_METHODS = {"relu", "relu_", "sigmoid", "tanh"}

HOLDER_SUFFIX = "_activation_holder_quantizer"


# ---- batch norm folding -------------------------------------------------------------------------

def _batch_norm_scale(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """gamma / sqrt(running_var + eps) per channel (gamma 1 without affine)."""
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    return gamma / torch.sqrt(bn.running_var + bn.eps)


@torch.no_grad()
def fold_batch_norm(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """Folds an eval-mode batch norm that follows `layer` into its weight and bias, in place:
    w' = w * g / sqrt(var + eps) per output channel, b' = (b - mean) * g / sqrt(var + eps) +
    beta. False (nothing changed) when it cannot: no running statistics, or a grouped
    transposed convolution (whose output channels are not one weight axis)."""
    if bn.running_mean is None or bn.running_var is None:
        return False
    is_transpose = isinstance(layer, nn.modules.conv._ConvTransposeNd)
    if is_transpose and layer.groups != 1:
        return False
    w = layer.weight
    axis = 1 if is_transpose else 0
    if w.shape[axis] != bn.num_features:
        return False
    scale = _batch_norm_scale(bn)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    shape = [1] * w.dim()
    shape[axis] = -1
    w.mul_(scale.reshape(shape).to(w.dtype))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + shift
    layer.bias = nn.Parameter(new_bias.to(w.dtype).detach().clone())
    return True


class BatchNormFoldedLayer(nn.Module):
    """A convolution or linear layer and the batch norm after it, trained as one quantized layer
    (prepare_qat(..., batch_norm="train")): the weight is quantized folded with the batch
    norm's running statistics, w_q = Q(w * s) with s = gamma / sqrt(running_var + eps) per
    output channel, and the batch norm still normalizes with the batch's statistics in training:

        y = bn((layer(x; w_q) - b) / s + b)        (b: the layer's bias, or 0)

    In eval mode this is layer(x; w_q) + (b - mean) * s + beta up to float rounding, the
    folded layer that convert() installs (its quantized weight is the same bits). `layer` is the
    layer's PytorchQuantizationWrapper, whose weight quantizer quantizes the folded weight (the
    plain layer while prepare_qat calibrates); `bn` is the batch norm, whose running statistics
    keep updating in training mode."""

    def __init__(self, layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.layer = layer
        self.bn = bn

    def _float_layer(self) -> nn.Module:
        layer = self.layer
        return layer.layer if isinstance(layer, PytorchQuantizationWrapper) else layer

    def _scale(self) -> torch.Tensor:
        return _batch_norm_scale(self.bn)

    def _shape(self, dim: int, axis: int) -> List[int]:
        shape = [1] * dim
        shape[axis] = -1
        return shape

    def folded_weight(self) -> torch.Tensor:
        """The layer's weight times the batch norm's scale per output channel (what is
        quantized, and what convert() writes into the layer)."""
        w = self._float_layer().weight
        return w * self._scale().reshape(self._shape(w.dim(), 0)).to(w.dtype)

    def forward(self, x):
        wrapper = self.layer
        if not isinstance(wrapper, PytorchQuantizationWrapper):
            return self.bn(wrapper(x))  # calibration: the float layer
        layer = wrapper.layer
        q = wrapper.weights_quantizers["weight"]
        wq = wrapper._run("weight", q, self.folded_weight(), wrapper.training)
        y = call_layer_with_weights(layer, ["weight", "bias"], [wq, None], [x], {})
        scale = self._scale()
        y = y / scale.reshape(self._shape(y.dim(), 1 if y.dim() > 1 else 0)).to(y.dtype)
        if layer.bias is not None:
            y = y + layer.bias.reshape(self._shape(y.dim(), 1 if y.dim() > 1 else 0))
        return self.bn(y)

    @torch.no_grad()
    def fold(self) -> "PytorchQuantizationWrapper":
        """The wrapper with the batch norm folded into its layer's weight and bias (the running
        statistics), its quantizers converted to inferable ones."""
        layer = self._float_layer()
        folded = self.folded_weight()
        layer.weight.copy_(folded)
        bn = self.bn
        scale = self._scale()
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        layer.bias = nn.Parameter(((bias - bn.running_mean) * scale + shift)
                                  .to(layer.weight.dtype).detach().clone())
        self.layer.convert_to_inferable_quantizers()
        return self.layer


def _foldable_pairs(gm: torch.fx.GraphModule):
    """(batch norm node, layer node, layer, batch norm) for each batch norm whose input is a
    foldable layer used by nothing else."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BATCH_NORMS):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        layer = modules.get(src.target)
        if not isinstance(layer, _FOLDABLE) or len(node.args) != 1 or node.kwargs:
            continue
        yield node, src, layer, modules[node.target]


def _trainable_fold_reason(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> Optional[str]:
    if bn.running_mean is None or bn.running_var is None:
        return "it has no running statistics"
    if not bn.track_running_stats:
        return "it does not track running statistics"
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return "it follows a transposed convolution (folded before training instead)"
    if layer.weight.shape[0] != bn.num_features:
        return "its channels are not the layer's output channels"
    return None


def _fold_graph_batch_norms(gm: torch.fx.GraphModule,
                            train: bool = False) -> Tuple[List[str], List[str]]:
    """Folds each batch norm whose input is a foldable layer used by nothing else; with `train`,
    replaces each pair that can train together by a BatchNormFoldedLayer at the layer's name
    instead (the batch norm node removed). Returns (kept for training, folded now) batch norm
    names."""
    kept, folded = [], []
    for node, src, layer, bn in list(_foldable_pairs(gm)):
        if train and _trainable_fold_reason(layer, bn) is None:
            parent, _, leaf = src.target.rpartition(".")
            fused = BatchNormFoldedLayer(layer, bn)
            fused.bn_name = node.target
            setattr(gm.get_submodule(parent) if parent else gm, leaf, fused)
            kept.append(node.target)
        elif fold_batch_norm(layer, bn):
            folded.append(node.target)
        else:
            continue
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        # delete_all_unused_submodules skips it: named_modules reaches it first inside `fused`
        gm.delete_submodule(node.target)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return kept, folded


# ---- calibration observers -----------------------------------------------------------------------

class _Observer(nn.Module):
    """Passes its input through and adds it to a histogram (the core's, in C++)."""

    def __init__(self, num_bins: int):
        super().__init__()
        self.histogram = cal.Histogram(num_bins)
        self.seen = False
        self.non_float = False

    def forward(self, x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            self.histogram.update(x.detach().to(device="cpu", dtype=torch.float32).numpy())
            self.seen = True
        else:
            self.non_float = True
        return x

    def __deepcopy__(self, memo):  # the histogram (a C++ object) is not copied: a fresh one
        return _Observer(self.histogram.num_bins)


class _Site:
    """A place that gets an activation quantizer: its name and type for the config, its spec,
    the observer that calibrates it, and how the holder (or nothing) replaces the observer."""

    def __init__(self, name: str, type_name: str, spec: Dict[str, Any]):
        self.name, self.type, self.spec = name, type_name, spec
        self.observer: Optional[_Observer] = None
        # Graph sites: install(holder or None) replaces the observer's node. Sites of layers
        # found by traversal (in_wrapper) put the quantizer in the layer's wrapper instead.
        self.install: Optional[Callable[[Optional[nn.Module]], None]] = None
        self.in_wrapper = False


class _Layer:
    """A quantized layer: qualified name, the (float) module, its specs."""

    def __init__(self, name: str, module: nn.Module, weights, activations):
        self.name, self.module, self.weights, self.activations = name, module, weights, activations
        self.wrapper: Optional[PytorchQuantizationWrapper] = None
        self.graph: Optional[Tuple[torch.fx.GraphModule, str]] = None  # (traced module, target)
        self.weight_quantizer = None
        self.activation_quantizer = None  # traversal layers: their wrapper's output quantizer
        self.fused: Optional[BatchNormFoldedLayer] = None  # batch_norm="train": layer + its BN


def _run_batch(model: nn.Module, batch, forward: Optional[Callable]):
    if forward is not None:
        return forward(model, batch)
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (list, tuple)):
        return model(*batch)
    return model(batch)


def _first_output_tensor(out) -> Optional[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)):
        for o in out:
            t = _first_output_tensor(o)
            if t is not None:
                return t
    if isinstance(out, dict):
        for o in out.values():
            t = _first_output_tensor(o)
            if t is not None:
                return t
    return None


def _functional_op(node: torch.fx.Node) -> Optional[str]:
    """"add" / "cat" / "matmul" when the node is one of them on tensors (two node operands for
    add and matmul: x + 1 is not an activation site)."""
    for op, targets in _FUNCTIONAL_OPS.items():
        hit = (node.op == "call_function" and node.target in targets) or (
            node.op == "call_method" and node.target in _METHOD_OPS[op])
        if hit:
            if op == "cat":
                return op
            operands = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
            return op if len(operands) == 2 else None
    return None


def _is_activation(node: torch.fx.Node, modules: Dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _ACTIVATION_MODULES)
    if node.op == "call_function":
        return node.target in _ACTIVATION_FUNCTIONS
    return node.op == "call_method" and node.target in _ACTIVATION_METHODS


def _anchor(node: torch.fx.Node, modules: Dict[str, nn.Module]) -> torch.fx.Node:
    """The node whose output is quantized for `node`: the activation function that is its only
    user, if any (followed through chains of them)."""
    while len(node.users) == 1:
        user = next(iter(node.users))
        if not _is_activation(user, modules) or user.args[0] is not node:
            break
        node = user
    return node


def _module_path(node: torch.fx.Node) -> str:
    """The qualified name of the module whose forward made the node ("" at the top)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.keys())[-1]
    return path if isinstance(path, str) else ""


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer with some submodules kept whole (call_module nodes)."""

    def __init__(self, leaves):
        super().__init__()
        self.leaves = {id(m) for m in leaves}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return id(m) in self.leaves or super().is_leaf_module(m, qualname)


def _error_text(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _trace_with(module: nn.Module, leaves) -> torch.fx.GraphModule:
    tracer = _Tracer(leaves)
    graph = tracer.trace(module)
    return torch.fx.GraphModule(tracer.root, graph, type(module).__name__)


def _untraceable(module: nn.Module, tracer: torch.fx.Tracer) -> List[nn.Module]:
    """The smallest descendants that make `module` fail to trace: each child that does not
    trace even with its own untraceable descendants kept whole, else those descendants."""
    leaves = []
    for name, child in module.named_children():
        if tracer.is_leaf_module(child, name):
            continue
        inner = _untraceable(child, tracer)
        try:
            _trace_with(child, inner)
            leaves += inner
        except Exception:  # noqa: BLE001 (any failure: the child stays whole)
            leaves.append(child)
    return leaves


def _trace(module: nn.Module):
    """(graph module, qualified names of the submodules kept whole, None) when the module
    traces, with its untraceable descendants kept as modules if need be; else (None, [], the
    reason)."""
    try:
        return torch.fx.symbolic_trace(module), [], None
    except Exception as e:  # noqa: BLE001 (any tracing failure)
        reason = _error_text(e)
    leaves = _untraceable(module, torch.fx.Tracer())
    if not leaves:
        return None, [], reason
    try:
        gm = _trace_with(module, leaves)
    except Exception:  # noqa: BLE001 (its own forward does not trace)
        return None, [], reason
    names = {id(m): n for n, m in module.named_modules()}
    return gm, [names[id(m)] for m in leaves], None


def _optional_arguments_used(module: nn.Module, gm: torch.fx.GraphModule) -> Optional[str]:
    """Why a traced graph cannot stand for the module: it uses an argument whose default is
    None, so tracing fixed the branch where it is given (`if mask is not None` is always true on
    a proxy) and a call without it would fail. None when there is no such argument."""
    import inspect
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return None
    optional = {n for n, p in params.items() if p.default is None}
    used = [n.target for n in gm.graph.nodes
            if n.op == "placeholder" and n.target in optional and n.users]
    if not used:
        return None
    return (f"its forward uses the optional argument(s) {', '.join(repr(u) for u in used)} "
            f"(default None), whose branch tracing would fix")


class _Quantizer:
    """One quantize / prepare_qat call."""

    def __init__(self, config: ModelQuantizationConfig, trainable: bool,
                 batch_norm: str = "fold"):
        self.config = config
        self.trainable = trainable
        self.batch_norm = batch_norm
        self.layers: List[_Layer] = []
        self.sites: List[_Site] = []
        self.notes: List[str] = []
        self.folded: List[str] = []
        self.kept_for_training: List[str] = []  # batch_norm="train": folded at convert

    # -- finding the layers and sites --
    def build(self, model: nn.Module) -> nn.Module:
        return self._enter(model, "")

    def _enter(self, module: nn.Module, prefix: str) -> nn.Module:
        """The module quantized: traced by torch.fx when it can be (the descendants that cannot
        be traced kept as modules of its graph, and entered in turn), else entered child by
        child."""
        if type(module) in QUANTIZED_LAYERS:
            self._plain_layer(module, prefix)
            return module
        gm, leaves, reason = _trace(module)
        if gm is not None:
            reason = _optional_arguments_used(module, gm)
        if reason is not None:
            where = f"'{prefix[:-1]}' ({type(module).__name__})" if prefix else \
                f"the model ({type(module).__name__})"
            message = (f"torch.fx could not trace {where}: {reason}. Its children were "
                       f"quantized one by one; functional ops directly in its forward are not "
                       f"quantized and its batch norms are not folded")
            warnings.warn(f"quantizers_infrastructure.pytorch: {message}", stacklevel=4)
            self.notes.append(message)
            for name, child in list(module.named_children()):
                new = self._enter(child, f"{prefix}{name}.")
                if new is not child:
                    setattr(module, name, new)
            return module
        self._graph(gm, prefix)
        for target in leaves:  # untraceable descendants, now call_module nodes of gm
            child = gm.get_submodule(target)
            new = self._enter(child, f"{prefix}{target}.")
            if new is not child:
                parent, _, leaf = target.rpartition(".")
                setattr(gm.get_submodule(parent) if parent else gm, leaf, new)
        return gm

    def _plain_layer(self, module: nn.Module, prefix: str) -> None:
        """A layer found by module traversal (outside any traced graph): its output quantizer
        goes in its wrapper."""
        name = prefix[:-1]
        layer = self._layer(name, module)
        if layer is None or layer.activations is None:
            return
        site = _Site(name, type(module).__name__, layer.activations)
        site.observer = _Observer(self.config.num_bins)
        site.in_wrapper = True
        handle = module.register_forward_hook(lambda m, i, o, obs=site.observer: obs(o))

        def install(quantizer, layer=layer, handle=handle):
            handle.remove()
            layer.activation_quantizer = quantizer
        site.install = install
        self.sites.append(site)

    def _layer(self, name: str, module: nn.Module) -> Optional[_Layer]:
        r = self.config.resolve(name, type(module).__name__)
        if r["skipped"]:
            self.notes.append(f"skipped '{name}' ({type(module).__name__}): the config's skip "
                              f"list")
            return None
        if r["weights"] is None and r["activations"] is None:
            return None
        layer = _Layer(name, module, r["weights"], r["activations"])
        self.layers.append(layer)
        return layer

    def _graph(self, gm: torch.fx.GraphModule, prefix: str) -> None:
        if self.config.fold_batch_norm and self.batch_norm == "train":
            kept, folded = _fold_graph_batch_norms(gm, train=True)
            self.kept_for_training += [prefix + n for n in kept]
            self.folded += [prefix + n for n in folded]
        elif self.config.fold_batch_norm:
            self.folded += [prefix + n for n in _fold_graph_batch_norms(gm)[1]]
        modules = dict(gm.named_modules())
        counters: Dict[Tuple[str, str], int] = {}
        ops = set(self.config.activation_ops)
        seen: Dict[str, Optional[_Layer]] = {}  # a layer called more than once is wrapped once
        for node in list(gm.graph.nodes):
            module = modules.get(node.target) if node.op == "call_module" else None
            fused = module if isinstance(module, BatchNormFoldedLayer) else None
            if fused is not None or type(module) in QUANTIZED_LAYERS:
                if node.target in seen:
                    layer = seen[node.target]
                else:
                    layer = seen[node.target] = self._layer(
                        prefix + node.target, fused.layer if fused is not None else module)
                    if fused is not None and (layer is None or layer.weights is None):
                        self._fold_now(gm, node.target, fused, prefix)  # no weights to train
                    elif layer is not None:
                        layer.fused = fused
                if layer is not None:
                    layer.graph = (gm, node.target)
                    if layer.activations is not None:
                        self._graph_site(gm, _anchor(node, modules), node.target,
                                         prefix + node.target, type(layer.module).__name__,
                                         layer.activations)
                continue
            op = _functional_op(node)
            if op is None or op not in ops:
                continue
            path = _module_path(node)
            key = (path, op)
            k = counters.get(key, 0)
            counters[key] = k + 1
            local = f"{path}.{op}" if path else op
            local += f"_{k}" if k else ""
            r = self.config.resolve(prefix + local, op)
            if r["skipped"]:
                self.notes.append(f"skipped '{prefix + local}' ({op}): the config's skip list")
                continue
            if r["activations"] is not None:
                self._graph_site(gm, _anchor(node, modules), local, prefix + local, op,
                                 r["activations"])
        gm.graph.lint()
        gm.recompile()

    def _fold_now(self, gm: torch.fx.GraphModule, target: str, fused: "BatchNormFoldedLayer",
                  prefix: str) -> None:
        """A batch norm kept for training whose layer's weights are not quantized: folded now,
        the plain layer put back."""
        fold_batch_norm(fused.layer, fused.bn)
        parent, _, leaf = target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, fused.layer)
        name = prefix + fused.bn_name
        self.kept_for_training = [n for n in self.kept_for_training if n != name]
        self.folded.append(name)

    def _graph_site(self, gm, anchor: torch.fx.Node, local: str, name: str, type_name: str,
                    spec) -> None:
        site = _Site(name, type_name, spec)
        site.observer = _Observer(self.config.num_bins)
        target = local + HOLDER_SUFFIX
        while target in dict(gm.named_modules()):
            target += "_"
        gm.add_submodule(target, site.observer)
        with gm.graph.inserting_after(anchor):
            new = gm.graph.call_module(target, (anchor,))
        anchor.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)

        def install(holder, gm=gm, node=new, target=target):
            if holder is None:  # not a float tensor: no quantizer
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
                gm.delete_submodule(target)
            else:
                parent, _, leaf = target.rpartition(".")
                setattr(gm.get_submodule(parent) if parent else gm, leaf, holder)
            gm.recompile()
        site.install = install
        self.sites.append(site)

    # -- weights --
    def wrap_weights(self) -> None:
        for layer in self.layers:
            if layer.weights is None:
                continue
            w = layer.fused.folded_weight() if layer.fused is not None else layer.module.weight
            w = w.detach().to(device="cpu", dtype=torch.float32).numpy()
            axis = QUANTIZED_LAYERS[type(layer.module)]
            layer.weight_quantizer = self._weights_quantizer(layer.weights, w, axis)

    def _training(self, spec) -> Optional[str]:
        """The spec's training method in QAT; post-training quantization trains nothing."""
        return spec["training"] if self.trainable else None

    def _weights_quantizer(self, spec, weight, axis: int):
        return model_quantizers.weights_quantizer(spec, weight, axis, self._training(spec),
                                                  get_trainable_quantizer_class)

    def _activation_quantizer(self, spec, histogram):
        return model_quantizers.activation_quantizer(spec, histogram, self._training(spec),
                                                     get_trainable_quantizer_class)

    def install_wrappers(self, root: nn.Module) -> nn.Module:
        """Replaces each quantized layer by its wrapper (weights quantizer, and for layers found
        by traversal, the output quantizer); returns the root (itself a wrapper when the model
        is one layer)."""
        for layer in self.layers:
            wq = layer.weight_quantizer
            acts = [layer.activation_quantizer] if layer.activation_quantizer is not None else []
            if wq is None and not acts:
                continue
            layer.wrapper = PytorchQuantizationWrapper(
                layer.module, {"weight": wq} if wq is not None else {},
                activation_quantizers=acts)
            if layer.fused is not None:
                layer.fused.layer = layer.wrapper
            elif layer.graph is not None:
                gm, target = layer.graph
                parent, _, leaf = target.rpartition(".")
                setattr(gm.get_submodule(parent) if parent else gm, leaf, layer.wrapper)
            elif layer.name == "":
                root = layer.wrapper
            else:
                parent, _, leaf = layer.name.rpartition(".")
                setattr(root.get_submodule(parent) if parent else root, leaf, layer.wrapper)
        for m in root.modules():
            if isinstance(m, torch.fx.GraphModule):
                m.recompile()
        return root

    # -- activations --
    def calibrate(self, model: nn.Module, data: Iterable, forward, progress: bool, who: str):
        """Runs the data through the model with observers in place; returns (batches, seconds,
        first batch)."""
        if not self.sites:
            return 0, 0.0, None
        if data is None:
            raise ValueError(f"{who}: the config quantizes activations; pass calibration_data "
                             f"(an iterable of batches) to calibrate their ranges")
        from tqdm.auto import tqdm
        total = len(data) if hasattr(data, "__len__") else None
        start = time.perf_counter()
        batches, first = 0, None
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for batch in tqdm(data, total=total, desc="qi calibration", disable=not progress,
                              leave=False):
                _run_batch(model, batch, forward)
                if first is None:
                    first = batch
                batches += 1
        model.train(was_training)
        if batches == 0:
            raise ValueError(f"{who}: calibration_data gave no batches")
        return batches, time.perf_counter() - start, first

    def make_activation_quantizers(self) -> None:
        """Each site's quantizer from its histogram: traversal sites into their layers, graph
        sites as holders in place of the observers (none where no float tensor was seen)."""
        for site in self.sites:
            obs = site.observer
            if not obs.seen:
                why = "is not a float tensor" if obs.non_float else "was never reached"
                self.notes.append(f"no activation quantizer on '{site.name}' ({site.type}): its "
                                  f"output {why} in calibration")
                site.install(None)
                site.spec = None
                continue
            q = self._activation_quantizer(site.spec, obs.histogram)
            site.install(q if site.in_wrapper else PytorchActivationQuantizationHolder(q))


def _describe_sites(q: _Quantizer) -> Dict[str, Optional[str]]:
    return {s.name: describe(s.spec) for s in q.sites}


@torch.no_grad()
def _report(q: _Quantizer, float_model: nn.Module, qmodel: nn.Module, batch, forward,
            batches: int, seconds: float) -> QuantizationReport:
    """SQNR of each layer's quantized weight and, on `batch`, of each quantized layer's output
    against the float (batch-norm folded) model's."""
    report = QuantizationReport(calibration_batches=batches, calibration_seconds=seconds,
                                notes=list(q.notes))
    if q.folded:
        report.notes.append(f"folded {len(q.folded)} batch norms into the preceding layers")
    float_modules = dict(float_model.named_modules())
    q_modules = dict(qmodel.named_modules())

    def qualified(layer):
        if layer.graph is not None:
            gm, target = layer.graph
            for name, m in qmodel.named_modules():
                if m is gm:
                    return f"{name}.{target}" if name else target
        return layer.name
    captured_f, captured_q, hooks = {}, {}, []
    rows = []
    sites = _describe_sites(q)
    for layer in q.layers:
        if layer.wrapper is None:
            continue
        path = qualified(layer)
        row = LayerReport(layer.name, type(layer.module).__name__, describe(layer.weights),
                          sites.get(layer.name))
        if layer.weights is not None:
            wq = layer.wrapper.get_quantized_weights()["weight"]
            row.weight_sqnr_db = sqnr_db(layer.module.weight.detach().cpu().numpy(),
                                         wq.detach().cpu().numpy())
        fm, qm = float_modules.get(path), q_modules.get(path)
        if fm is not None and qm is not None and batch is not None:
            hooks.append(fm.register_forward_hook(
                lambda m, i, o, k=path: captured_f.__setitem__(k, o)))
            hooks.append(qm.register_forward_hook(
                lambda m, i, o, k=path: captured_q.__setitem__(k, o)))
        rows.append((row, path))
    for site in q.sites:
        if site.spec is not None and site.name not in {l.name for l in q.layers}:
            rows.append((LayerReport(site.name, site.type, None, describe(site.spec)), None))
    if batch is not None:
        try:
            out_f = _first_output_tensor(_run_batch(float_model.eval(), batch, forward))
            out_q = _first_output_tensor(_run_batch(qmodel, batch, forward))
            if out_f is not None and out_q is not None:
                report.model_output_sqnr_db = sqnr_db(out_f.float().cpu().numpy(),
                                                      out_q.float().cpu().numpy())
        finally:
            for h in hooks:
                h.remove()
    for row, path in rows:
        f, o = captured_f.get(path), captured_q.get(path)
        if isinstance(f, torch.Tensor) and isinstance(o, torch.Tensor):
            row.output_sqnr_db = sqnr_db(f.float().cpu().numpy(), o.float().cpu().numpy())
        report.layers.append(row)
    return report


_BATCH_NORM_MODES = ("fold", "train")


def _quantize(model: nn.Module, config, calibration_data, *, trainable: bool,
              forward: Optional[Callable], progress: bool, report: bool, who: str,
              batch_norm: str = "fold") -> nn.Module:
    cfg = ModelQuantizationConfig.of(config)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{who}: model must be a torch.nn.Module, got {type(model).__name__}")
    if batch_norm not in _BATCH_NORM_MODES:
        raise ValueError(f"{who}: batch_norm must be one of {', '.join(map(repr, _BATCH_NORM_MODES))}"
                         f", got {batch_norm!r}")
    if batch_norm == "train" and not cfg.fold_batch_norm:
        raise ValueError(f"{who}: batch_norm='train' folds the batch norms at convert, but the "
                         f"config keeps them float (fold_batch_norm is false); use "
                         f"batch_norm='fold' or a config that folds")
    work = copy.deepcopy(model).eval()
    q = _Quantizer(cfg, trainable, batch_norm)
    work = q.build(work)  # batch norms folded, observers at the activation sites
    # Activation statistics of the float (folded) model, one pass over the data.
    batches, seconds, first = q.calibrate(work, calibration_data, forward, progress, who)
    float_model = None
    if report:
        float_model = copy.deepcopy(work)
        _strip_observers(float_model)
    q.wrap_weights()
    q.make_activation_quantizers()
    work = q.install_wrappers(work)
    for m in work.modules():
        if isinstance(m, torch.fx.GraphModule):
            m.graph.lint()
            m.recompile()
    if report:
        work.qi_report = _report(q, float_model, work, first, forward, batches, seconds)
    work.train(trainable)
    return work


def _strip_observers(model: nn.Module) -> None:
    """The float reference without observers (identity modules there)."""
    for name, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, _Observer):
                setattr(m, child_name, nn.Identity())
        m._forward_hooks.clear()


def quantize(model: nn.Module, config="w8a8", calibration_data: Optional[Iterable] = None, *,
             forward: Optional[Callable[[nn.Module, Any], Any]] = None, progress: bool = True,
             report: bool = True) -> nn.Module:
    """Post-training quantization of a whole model in one call; returns the quantized copy.

    Args:
      model: any nn.Module (left unchanged).
      config: a ModelQuantizationConfig, a preset name ("w8a8", "w8_weight_only", ...), a dict
        or JSON text of the config (a spec's "training" is ignored here: nothing trains).
      calibration_data: an iterable of batches (a DataLoader, a list of tensors, a generator);
        needed when the config quantizes activations. A batch runs as model(batch),
        model(*batch) for a tuple or list, model(**batch) for a dict, unless `forward` is given.
      forward: forward(model, batch) for other batch layouts (e.g. lambda m, b: m(b[0]) for
        (input, label) pairs).
      progress: show a progress bar over the calibration batches.
      report: compute the per-layer report (model.qi_report, a QuantizationReport) on the first
        calibration batch.
    Errors (bad config, missing data) raise ValueError."""
    return _quantize(model, config, calibration_data, trainable=False, forward=forward,
                     progress=progress, report=report, who="quantize")


def prepare_qat(model: nn.Module, config="w4a8_lsq", calibration_data: Optional[Iterable] = None,
                *, forward: Optional[Callable[[nn.Module, Any], Any]] = None,
                progress: bool = True, batch_norm: str = "fold") -> nn.Module:
    """Quantization-aware training, step 1: a copy of the model (in train mode) with trainable
    quantizers where the config's spec has "training" (STE or LSQ) and inferable ones elsewhere,
    their parameters started from calibration (weights from themselves, activations from
    calibration_data, which is needed when the config quantizes activations).

    batch_norm says what happens to the batch norms that follow a convolution or linear layer
    (when the config folds them):
      "fold": folded before training (their running statistics become the layers' weights and
        biases); training runs the deployed arithmetic.
      "train": each layer and its batch norm become one BatchNormFoldedLayer: the weight is
        quantized folded with the batch norm's running statistics, and the batch norm goes on
        normalizing with batch statistics while training (as torch.ao's QAT convolution-batch
        norm modules do). convert() folds them. Training costs a little more per step and
        usually reaches a higher accuracy at low bit widths."""
    return _quantize(model, config, calibration_data, trainable=True, forward=forward,
                     progress=progress, report=False, who="prepare_qat", batch_norm=batch_norm)


def convert(model: nn.Module) -> nn.Module:
    """Quantization-aware training, step 2: every trainable quantizer in the model replaced by
    its inferable conversion (the same outputs as the trainable quantizer's eval forward), in
    place; returns the model in eval mode. Each BatchNormFoldedLayer (prepare_qat's
    batch_norm="train") is replaced by its layer's wrapper with the batch norm folded in (the
    running statistics): the quantized weight keeps its bits, and the output equals the
    trained model's eval output up to float rounding."""
    fused = [(n, m) for n, m in model.named_modules() if isinstance(m, BatchNormFoldedLayer)]
    for name, m in fused:
        folded = m.fold()
        parent, _, leaf = name.rpartition(".")
        if name == "":
            model = folded
        else:
            setattr(model.get_submodule(parent) if parent else model, leaf, folded)
    for m in model.modules():
        if isinstance(m, (PytorchQuantizationWrapper, PytorchActivationQuantizationHolder)):
            m.convert_to_inferable_quantizers()
    return model.eval()


def quantized_modules(model: nn.Module) -> Dict[str, nn.Module]:
    """{qualified name: module} of the model's wrappers and activation holders."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, (PytorchQuantizationWrapper, PytorchActivationQuantizationHolder))}


__all__ = ["quantize", "prepare_qat", "convert", "fold_batch_norm", "quantized_modules",
           "BatchNormFoldedLayer", "QUANTIZED_LAYERS", "ModelQuantizationConfig"]
