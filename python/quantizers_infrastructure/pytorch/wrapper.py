# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""PytorchNodeQuantizationDispatcher and PytorchQuantizationWrapper.

The wrapper quantizes a layer's weights before it runs and its outputs after. The layer keeps
its own parameters (the float weights), so the model's parameters and state-dict names are the
float model's: a float checkpoint loads into the wrapped model with strict=True, and
`fc.weight` stays `fc.weight`. At each forward the layer runs with each quantized attribute
replaced by its quantized value (torch.func.functional_call), so gradients reach the float
weights and the quantizers' variables, and torch.compile, torch.export, torch.jit.trace and
torch.fx.symbolic_trace all follow it. Functional ops (torch.add, torch.cat, ...) take positional
constant weights: weight_values {position: tensor}, op_call_args, op_call_kwargs,
is_inputs_as_list.

Quantizer state is model state: inferable quantizers' packed plans are (non-persistent) buffers
that move with the model, trainable quantizers' variables are parameters, and the quantizers'
configs travel in the state dict as extra state, checked and checksummed on load."""

import json
from typing import Any, Dict, List, Optional

import torch
import torch.fx
from torch import nn

from quantizers_infrastructure.common.base_inferable_quantizer import (
    QUANTIZER_KINDS, BaseInferableQuantizer, call_takes_training, is_quantizer)
from quantizers_infrastructure.common.constants import ACTIVATION_QUANTIZERS
from quantizers_infrastructure.common.enums import QuantizationTarget
from quantizers_infrastructure.common.inferable_quantizers import InferableQuantizer
from quantizers_infrastructure.common.node_quantization_dispatcher import (
    WEIGHT_QUANTIZER, NodeQuantizationDispatcher)
from quantizers_infrastructure.pytorch import plan_tensor, quantize_tensor
from quantizers_infrastructure.pytorch.serialization import make_extra_state, read_extra_state
from quantizers_infrastructure.pytorch.trainable_quantizers import (
    BasePytorchTrainableQuantizer, TRAINABLE_QUANTIZER_CLASSES)

WEIGHTS_VALUES = "weights_value"
OP_CALL_ARGS = "op_call_args"
OP_CALL_KWARGS = "op_call_kwargs"
IS_INPUT_AS_LIST = "is_inputs_as_list"
POSITIONAL_WEIGHT = "positional_weight"
QUANTIZED_POSITIONAL_WEIGHT = "quantized_positional_weight"
PLAN_PREFIX = "_qi_plan_"
LAYER = "layer"


def _is_trainable(q) -> bool:
    return isinstance(q, BasePytorchTrainableQuantizer)


def _is_foreign(q) -> bool:
    """A quantizer that is neither qi's inferable nor qi's trainable kind (e.g. MCT's own
    trainable quantizers, subclasses of BaseInferableQuantizer): wrappers and holders drive it
    by MCT Quantizers' protocol: initialize_quantization(shape, name, module) when bound,
    __call__(x[, training]) to quantize, convert2inferable() when converted."""
    return not isinstance(q, (InferableQuantizer, BasePytorchTrainableQuantizer))


def _convertible(q) -> bool:
    """True for quantizers that convert_to_inferable_quantizers replaces."""
    return _is_trainable(q) or (_is_foreign(q) and callable(getattr(q, "convert2inferable", None)))




def quantizer_from_json(text: str):
    """An inferable or (fresh) trainable quantizer from its to_json() text."""
    from quantizers_infrastructure.common.inferable_quantizers import \
        quantizer_from_json as inferable_from_json
    j = json.loads(text) if isinstance(text, str) else text
    if isinstance(j, dict) and j.get("class_name") in TRAINABLE_QUANTIZER_CLASSES:
        return TRAINABLE_QUANTIZER_CLASSES[j["class_name"]].from_config(j.get("config"))
    return inferable_from_json(json.dumps(j) if not isinstance(text, str) else text)


class PytorchNodeQuantizationDispatcher(NodeQuantizationDispatcher):
    """NodeQuantizationDispatcher for PyTorch layers: a single weights quantizer stands for the
    layer's "weight"; JSON as every dispatcher (NodeQuantizationDispatcher.get_config), with the
    PyTorch trainable quantizer classes."""

    default_weight_attribute = "weight"

    @classmethod
    def quantizer_from_config(cls, config: Dict[str, Any]):
        return quantizer_from_json(json.dumps(config))


def _owner_and_name(module: nn.Module, attribute: str):
    """(submodule, leaf name) of a dotted attribute path such as "0.weight"."""
    if "." not in attribute:
        return module, attribute
    path, leaf = attribute.rsplit(".", 1)
    return module.get_submodule(path), leaf


def _conv_transpose(fn, dims):
    def call(layer, w, b, x, output_size=None):
        output_padding = layer._output_padding(x, output_size, layer.stride, layer.padding,
                                               layer.kernel_size, dims, layer.dilation)
        return fn(x, w, b, layer.stride, layer.padding, output_padding, layer.groups,
                  layer.dilation)
    return call


# The layers whose forward is one functional op of (weight, bias): they run it directly with the
# quantized tensors (no attribute swapping, which every tracer follows and which costs nothing).
_FUNCTIONAL_FORWARD = {
    nn.Linear: lambda layer, w, b, x: torch.nn.functional.linear(x, w, b),
    nn.Conv1d: lambda layer, w, b, x: layer._conv_forward(x, w, b),
    nn.Conv2d: lambda layer, w, b, x: layer._conv_forward(x, w, b),
    nn.Conv3d: lambda layer, w, b, x: layer._conv_forward(x, w, b),
    nn.ConvTranspose1d: _conv_transpose(torch.nn.functional.conv_transpose1d, 1),
    nn.ConvTranspose2d: _conv_transpose(torch.nn.functional.conv_transpose2d, 2),
    nn.ConvTranspose3d: _conv_transpose(torch.nn.functional.conv_transpose3d, 3),
    nn.Embedding: lambda layer, w, b, x: torch.nn.functional.embedding(
        x, w, layer.padding_idx, layer.max_norm, layer.norm_type, layer.scale_grad_by_freq,
        layer.sparse),
}


@torch.fx.wrap
def call_layer_with_weights(layer, names, weights, args, kwargs):
    """Runs `layer` with each attribute names[i] replaced by weights[i] (the quantized weights).
    Linear, ConvNd, ConvTransposeNd and Embedding run their functional op on the quantized
    tensors; other layers run through torch.func.functional_call (which torch.compile and
    non-strict torch.export follow). A leaf for torch.fx: traced graphs show this one call.
    TorchScript tracing, which functional_call does not support, swaps the tensors in the
    layer's parameter dicts for the call instead."""
    direct = _FUNCTIONAL_FORWARD.get(type(layer))
    if direct is not None and set(names) <= {"weight", "bias"}:
        given = dict(zip(names, weights))
        return direct(layer, given.get("weight", layer.weight),
                      given.get("bias", getattr(layer, "bias", None)), *args, **kwargs)
    if not torch.jit.is_tracing():
        return torch.func.functional_call(layer, dict(zip(names, weights)), tuple(args), kwargs)
    owners = [_owner_and_name(layer, name) for name in names]
    saved = [owner._parameters[leaf] for owner, leaf in owners]
    try:
        for (owner, leaf), w in zip(owners, weights):
            owner._parameters[leaf] = w
        return layer(*args, **kwargs)
    finally:
        for (owner, leaf), p in zip(owners, saved):
            owner._parameters[leaf] = p


# The state-dict metadata entry by which a quantized model's checkpoint is told from a float one.
QUANTIZED_MARK = "qi_quantized"


class _QuantizerSlots(nn.Module):
    """What wrappers and holders share: their quantizers' packed plans as buffers and their
    configs as checked extra state."""

    def _bind(self, key: str, quantizer, shape, name: Any = None) -> None:
        """Creates a trainable quantizer's variables, or an inferable quantizer's plan buffer;
        a foreign quantizer's initialize_quantization gets `name` (MCT Quantizers' name for
        the tensor: the weight's attribute or position, the holder's
        "activation_holder_quantizer_out"), or `key` when none is given."""
        if _is_trainable(quantizer):
            quantizer.initialize_quantization(shape, key, self)
        elif _is_foreign(quantizer):
            quantizer.initialize_quantization(shape, key if name is None else name, self)
        else:
            self.register_buffer(PLAN_PREFIX + key, plan_tensor(quantizer), persistent=False)

    def _unbind(self, key: str, quantizer) -> None:
        for name in getattr(quantizer, "registered_names", []):
            self._parameters.pop(name, None)
        self._buffers.pop(PLAN_PREFIX + key, None)

    def _run(self, key: str, quantizer, x: torch.Tensor, training: bool,
             pass_training: bool = True) -> torch.Tensor:
        if _is_trainable(quantizer):
            return quantizer(x, training)
        if _is_foreign(quantizer):
            # MCT Quantizers' wrapper passes its mode to quantizers whose __call__ takes
            # `training`; its holder passes nothing (pass_training=False).
            if pass_training and call_takes_training(quantizer):
                return quantizer(x, training)
            return quantizer(x)
        return quantize_tensor(quantizer, x, getattr(self, PLAN_PREFIX + key))

    def _quantizer_keys(self) -> List[str]:
        """State-dict keys of this module's quantizer state (for float checkpoints)."""
        keys = ["_extra_state"]
        for q in self._all_quantizers():
            keys += getattr(q, "registered_names", [])
        return keys

    def state_dict(self, *args, **kwargs):
        out = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        meta = getattr(out, "_metadata", {}).get(prefix[:-1])
        if meta is not None:
            meta[QUANTIZED_MARK] = True  # so that a missing quantizer entry is reported on load
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        self._state_dict_names_in(state_dict, prefix)
        own = set(self._quantizer_keys())
        # Entries of a float model (no quantizer state, no mark from a quantized model's
        # state_dict): the quantizers keep their state. A quantized checkpoint must be complete.
        has_quantizer_state = bool(local_metadata.get(QUANTIZED_MARK)) or any(
            k.startswith(prefix) and k[len(prefix):] in own for k in state_dict)
        first = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if not has_quantizer_state:
            missing_keys[first:] = [k for k in missing_keys[first:]
                                    if k[len(prefix):] not in own]

    def _all_quantizers(self):
        raise NotImplementedError

    def _state_dict_names_in(self, state_dict, prefix) -> None:
        """Renames a state dict's entries to this module's own names before loading."""


class PytorchQuantizationWrapper(_QuantizerSlots):
    """Wraps `module` (an nn.Module, or a function such as torch.add) so that its weights are
    quantized before it runs and its outputs after.

    Args:
      module: the layer or function.
      weights_quantizers: a PytorchNodeQuantizationDispatcher / NodeQuantizationDispatcher (its
        weight and activation quantizers), a dict {attribute name: quantizer} (attribute mode)
        or {position: quantizer} (positional mode, with weight_values), or one quantizer (the
        layer's "weight", or the single position of weight_values).
      weight_values: {position: tensor} constants of a functional op, inserted among the inputs.
      op_call_args, op_call_kwargs: extra arguments of every call (call-time kwargs win).
      is_inputs_as_list: the op takes its inputs as one list (torch.cat).
      activation_quantizers: one quantizer per output (also taken from a dispatcher).
    Errors raise ValueError."""

    def __init__(self, module, weights_quantizers=None, weight_values: Optional[Dict[int, Any]] = None,
                 op_call_args: Optional[List[Any]] = None,
                 op_call_kwargs: Optional[Dict[str, Any]] = None, is_inputs_as_list: bool = False,
                 activation_quantizers: Optional[List[BaseInferableQuantizer]] = None):
        super().__init__()
        if isinstance(weights_quantizers, NodeQuantizationDispatcher):
            if activation_quantizers is not None:
                raise ValueError("PytorchQuantizationWrapper: give activation quantizers in the "
                                 "dispatcher or as activation_quantizers, not both")
            activation_quantizers = list(weights_quantizers.activation_quantizers)
            weights_quantizers = dict(weights_quantizers.weight_quantizers)
        elif isinstance(weights_quantizers, BaseInferableQuantizer):
            if weight_values:
                if len(weight_values) != 1:
                    raise ValueError("PytorchQuantizationWrapper: one quantizer for several "
                                     "weight_values; pass a dict {position: quantizer}")
                weights_quantizers = {next(iter(weight_values)): weights_quantizers}
            else:
                weights_quantizers = {"weight": weights_quantizers}
        elif weights_quantizers is None:
            weights_quantizers = {}
        if not isinstance(weights_quantizers, dict):
            raise ValueError(f"PytorchQuantizationWrapper: weights_quantizers must be a "
                             f"dispatcher, a dict or a quantizer, got "
                             f"{type(weights_quantizers).__name__}")
        for key, q in weights_quantizers.items():
            if not is_quantizer(q):
                raise ValueError(f"PytorchQuantizationWrapper: the quantizer of {key!r} must be "
                                 f"{QUANTIZER_KINDS}, got {type(q).__name__}")
            if getattr(q, "quantization_target", None) not in (None, QuantizationTarget.Weights):
                raise ValueError(f"PytorchQuantizationWrapper: the quantizer of {key!r} is an "
                                 f"{q.quantization_target.value} quantizer, expected Weights")
        weight_values = dict(weight_values or {})
        if weight_values:
            for pos, v in weight_values.items():
                if not isinstance(v, torch.Tensor):
                    raise ValueError(f"Positional weight at position {pos} should be a "
                                     f"torch.Tensor, but type is {type(v)}")
            if not all(isinstance(k, int) for k in weight_values):
                raise ValueError('"weight_values" keys should be all integers')
            if sorted(weights_quantizers) != sorted(weight_values):
                raise ValueError('Mismatch between "weights_quantizers" and "weight_values" keys')
        elif not all(isinstance(k, str) for k in weights_quantizers):
            raise ValueError('"weights_quantizers" keys should be all strings')
        activation_quantizers = list(activation_quantizers or [])
        for i, q in enumerate(activation_quantizers):
            if not is_quantizer(q):
                raise ValueError(f"PytorchQuantizationWrapper: activation quantizer {i} must be "
                                 f"{QUANTIZER_KINDS}, got {type(q).__name__}")
            if getattr(q, "quantization_target", None) not in (None,
                                                              QuantizationTarget.Activation):
                raise ValueError(f"PytorchQuantizationWrapper: activation quantizer {i} is a "
                                 f"{q.quantization_target.value} quantizer")

        if isinstance(module, nn.Module):
            self.layer = module
        elif callable(module):
            self.__dict__[LAYER] = module  # a function: a plain attribute
        else:
            raise ValueError(f"PytorchQuantizationWrapper: module must be an nn.Module or a "
                             f"function, got {type(module).__name__}")
        self.weights_quantizers = dict(weights_quantizers)
        self.activation_quantizers = activation_quantizers
        self.weight_values = weight_values
        self.op_call_args = list(op_call_args or [])
        self.op_call_kwargs = dict(op_call_kwargs or {})
        self.is_inputs_as_list = bool(is_inputs_as_list)
        self.is_str_attr = not weight_values
        for key, q in self.weights_quantizers.items():
            if isinstance(key, str):
                self._float_weight(key)  # checks the attribute exists
            else:
                self.register_parameter(self._param_key(key), nn.Parameter(
                    weight_values[key].detach().clone(), requires_grad=False))
                self.__dict__[f"{QUANTIZED_POSITIONAL_WEIGHT}_{key}"] = weight_values[key]
            self._bind(self._param_key(key), q, tuple(self._weight(key).shape), key)
        for i, q in enumerate(self.activation_quantizers):
            self._bind(f"tensor{i}", q, None)

    # ---- weights ----
    @staticmethod
    def _param_key(attribute) -> str:
        return (str(attribute).replace(".", "_") if isinstance(attribute, str)
                else f"{POSITIONAL_WEIGHT}_{attribute}")

    def _float_weight(self, attribute: str) -> torch.Tensor:
        owner, leaf = _owner_and_name(self.layer, attribute) if isinstance(
            self.layer, nn.Module) else (None, attribute)
        w = getattr(owner, leaf, None) if owner is not None else None
        if not isinstance(w, (torch.Tensor, torch.fx.Proxy)):  # fx tracing sees proxies
            names = ([n for n, _ in self.layer.named_parameters()]
                     if isinstance(self.layer, nn.Module) else [])
            raise ValueError(f"PytorchQuantizationWrapper: the layer has no parameter "
                             f"\"{attribute}\"; it has: {', '.join(names) or '(none)'}")
        return w

    def _weight(self, key) -> torch.Tensor:
        """The float value a weight quantizer quantizes: the layer's parameter (attribute mode)
        or the wrapper's positional constant."""
        if isinstance(key, str):
            return self._float_weight(key)
        return self._parameters[self._param_key(key)]

    def get_float_weight(self, name: str) -> torch.Tensor:
        """The float weight that quantizer variables named `name` belong to (soft rounding
        initializes from it)."""
        for key in self.weights_quantizers:
            if self._param_key(key) == name:
                return self._weight(key)
        raise ValueError(f"PytorchQuantizationWrapper: no quantized weight \"{name}\"")

    @property
    def _weights_vars(self):
        return [(key, self._weight(key), q) for key, q in self.weights_quantizers.items()]

    def __getattr__(self, name: str):
        # The quantized attributes of the layer read through the wrapper (wrapper.weight), as
        # in MCT's wrapper.
        try:
            return super().__getattr__(name)
        except AttributeError:
            quantizers = self.__dict__.get("weights_quantizers", {})
            if name in quantizers and isinstance(self.__dict__.get("_modules", {}).get(LAYER),
                                                 nn.Module):
                return self._float_weight(name)
            raise

    # ---- forward ----
    def forward(self, inputs, *args, **kwargs):
        """Quantized weights -> layer(inputs, *args, *op_call_args, **op_call_kwargs, **kwargs)
        -> activation quantizers (positional weights inserted among the inputs)."""
        # torch.fx.symbolic_trace of a wrapper as the root passes *args / **kwargs as one proxy
        # each; calls with extra arguments are traced through a parent module instead.
        args = () if isinstance(args, torch.fx.Proxy) else args
        kwargs = {} if isinstance(kwargs, torch.fx.Proxy) else kwargs
        args = (inputs,) + tuple(args)
        names, qweights = [], []
        positional = {}
        for key, q in self.weights_quantizers.items():
            qw = self._run(self._param_key(key), q, self._weight(key), self.training)
            if isinstance(key, str):
                names.append(key)
                qweights.append(qw)
            else:
                positional[key] = qw
        call_kwargs = {**self.op_call_kwargs, **kwargs}
        if self.is_str_attr:
            if self.is_inputs_as_list:
                inputs = (list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple))
                          else list(args))
                call_args = [inputs] + self.op_call_args
            else:
                call_args = list(args) + self.op_call_args
            if names:
                out = call_layer_with_weights(self.layer, names, qweights, call_args, call_kwargs)
            else:
                out = self.layer(*call_args, **call_kwargs)
        else:
            inputs = (list(args[0]) if self.is_inputs_as_list and len(args) == 1
                      and isinstance(args[0], (list, tuple)) else list(args))
            for pos in sorted(positional):
                inputs.insert(pos, positional[pos])
            if self.is_inputs_as_list:
                out = self.layer(inputs, *self.op_call_args, **call_kwargs)
            else:
                out = self.layer(*inputs, *self.op_call_args, **call_kwargs)
        return self._quantize_outputs(out)

    def _quantize_outputs(self, out):
        acts = self.activation_quantizers
        if not acts:
            return out
        if isinstance(out, (list, tuple)):
            if len(acts) != len(out):
                raise ValueError(f"PytorchQuantizationWrapper: {len(acts)} activation quantizers "
                                 f"for {len(out)} layer outputs")
            res = [self._run(f"tensor{i}", q, o, self.training)
                   for i, (q, o) in enumerate(zip(acts, out))]
            return type(out)(res) if isinstance(out, tuple) else res
        if len(acts) != 1:
            raise ValueError(f"PytorchQuantizationWrapper: {len(acts)} activation quantizers for "
                             f"one layer output")
        return self._run("tensor0", acts[0], out, self.training)

    # ---- conversion and inspection ----
    def convert_to_inferable_quantizers(self) -> None:
        """Replaces every trainable quantizer (weights and activations) by its inferable
        conversion, in place; soft rounding also writes its hard-rounded weights into the float
        weight. The trainable variables are removed from the wrapper."""
        for key, q in list(self.weights_quantizers.items()):
            if not _convertible(q):
                continue
            w = self._weight(key)
            if _is_trainable(q) and q.replaces_weight:
                with torch.no_grad():
                    w.copy_(q(w, False))
            new = q.convert2inferable()
            self._unbind(self._param_key(key), q)
            self.weights_quantizers[key] = new
            self._bind(self._param_key(key), new, tuple(w.shape), key)
        for i, q in enumerate(self.activation_quantizers):
            if _convertible(q):
                new = q.convert2inferable()
                self._unbind(f"tensor{i}", q)
                self.activation_quantizers[i] = new
                self._bind(f"tensor{i}", new, None)
        self._move_plans()

    def _move_plans(self) -> None:
        """New plan buffers follow the device of the wrapper's tensors."""
        device = next((t.device for t in list(self.parameters()) + list(self.buffers())
                       if not self._is_plan(t)), None)
        if device is not None:
            for name, b in list(self._buffers.items()):
                if name.startswith(PLAN_PREFIX) and b.device != device:
                    self._buffers[name] = b.to(device)

    def _is_plan(self, t) -> bool:
        return any(t is b for n, b in self._buffers.items() if n.startswith(PLAN_PREFIX))

    def get_weights_vars(self):
        """[(attribute or position, float weight tensor, quantizer)]."""
        return self._weights_vars

    def get_quantized_weights(self) -> Dict[Any, torch.Tensor]:
        """{attribute or position: quantized weight} (eval-mode quantizers, no grad)."""
        with torch.no_grad():
            return {key: self._run(self._param_key(key), q, self._weight(key), False)
                    for key, q in self.weights_quantizers.items()}

    @property
    def dispatcher(self) -> PytorchNodeQuantizationDispatcher:
        """The quantizers as a dispatcher (attribute mode)."""
        return PytorchNodeQuantizationDispatcher(
            {k: q for k, q in self.weights_quantizers.items() if isinstance(k, str)},
            list(self.activation_quantizers))

    @property
    def is_weights_quantization(self) -> bool:
        """True when the wrapper quantizes at least one weight."""
        return self.num_weights_quantizers > 0

    @property
    def num_weights_quantizers(self) -> int:
        """The number of weight quantizers."""
        return len(self.weights_quantizers)

    @property
    def is_activation_quantization(self) -> bool:
        """True when the wrapper quantizes its outputs."""
        return len(self.activation_quantizers) > 0

    @property
    def num_activation_quantizers(self) -> int:
        """The number of output quantizers."""
        return len(self.activation_quantizers)

    def _all_quantizers(self):
        return list(self.weights_quantizers.values()) + list(self.activation_quantizers)

    # ---- state dict ----
    # The wrapped layer's entries go under the layer's own names ("weight", not "layer.weight"),
    # so that float checkpoints and wrapped models share one naming.
    def state_dict(self, *args, **kwargs):
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        out = super().state_dict(*args, **kwargs)
        head = prefix + LAYER + "."
        for key in [k for k in out if k.startswith(head)]:
            out[prefix + key[len(head):]] = out.pop(key)
        return out

    def _state_dict_names_in(self, state_dict, prefix) -> None:
        # Entries under the layer's own names go back to the layer (files that already say
        # "layer." load as they are).
        if not isinstance(self.__dict__.get("_modules", {}).get(LAYER), nn.Module):
            return
        layer_keys = set(self.layer.state_dict(keep_vars=True).keys())
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            if rest in layer_keys and prefix + LAYER + "." + rest not in state_dict:
                state_dict[prefix + LAYER + "." + rest] = state_dict.pop(key)

    def get_extra_state(self) -> Dict[str, Any]:
        """The quantizers' JSON (the dispatcher schema; positions as strings), checksummed."""
        return make_extra_state({
            WEIGHT_QUANTIZER: {str(k): json.loads(q.to_json())
                               for k, q in self.weights_quantizers.items()},
            ACTIVATION_QUANTIZERS: [json.loads(q.to_json()) for q in self.activation_quantizers],
        })

    def set_extra_state(self, state: Any) -> None:
        """Loads the quantizers of get_extra_state output: inferable quantizers are replaced
        (and checked against their weights), trainable ones must be of the same class (their
        variables load as parameters). ValueError, changing nothing, when the record does not
        fit this wrapper."""
        who = "PytorchQuantizationWrapper"
        config = read_extra_state(state, who)
        keys = {str(k): k for k in self.weights_quantizers}
        if set(config[WEIGHT_QUANTIZER]) != set(keys) or \
                len(config[ACTIVATION_QUANTIZERS]) != len(self.activation_quantizers):
            raise ValueError(f"{who}: the state dict quantizes weights {sorted(config[WEIGHT_QUANTIZER])}"
                             f" and {len(config[ACTIVATION_QUANTIZERS])} outputs, the wrapper "
                             f"{sorted(keys)} and {len(self.activation_quantizers)}")
        weights = {keys[k]: self._loaded(f"weight quantizer {k!r}", self.weights_quantizers[keys[k]],
                                         v) for k, v in config[WEIGHT_QUANTIZER].items()}
        acts = [self._loaded(f"activation quantizer {i}", q, v) for i, (q, v) in
                enumerate(zip(self.activation_quantizers, config[ACTIVATION_QUANTIZERS]))]
        for key, q in weights.items():  # checked against the weights before anything changes
            if not _is_trainable(q):
                w = self._weight(key)
                q(w.detach().to("cpu", torch.float32))
        for key, q in weights.items():
            if q is not self.weights_quantizers[key]:
                self._unbind(self._param_key(key), self.weights_quantizers[key])
                self.weights_quantizers[key] = q
                self._bind(self._param_key(key), q, tuple(self._weight(key).shape))
        for i, q in enumerate(acts):
            if q is not self.activation_quantizers[i]:
                self._unbind(f"tensor{i}", self.activation_quantizers[i])
                self.activation_quantizers[i] = q
                self._bind(f"tensor{i}", q, None)
        self._move_plans()

    @staticmethod
    def _loaded(where: str, current, config: Dict[str, Any]):
        who = "PytorchQuantizationWrapper"
        if _is_trainable(current) or config["class_name"] in TRAINABLE_QUANTIZER_CLASSES:
            if config["class_name"] != type(current).__name__:
                raise ValueError(f"{who}: the state dict's {where} is a {config['class_name']}, "
                                 f"the wrapper's a {type(current).__name__}")
            return current
        return quantizer_from_json(json.dumps(config))

    def extra_repr(self) -> str:
        ws = ", ".join(f"{k}: {type(q).__name__}" for k, q in self.weights_quantizers.items())
        acts = ", ".join(type(q).__name__ for q in self.activation_quantizers)
        layer = "" if isinstance(self.layer, nn.Module) else f"layer={getattr(self.layer, '__name__', self.layer)}, "
        return f"{layer}weights={{{ws}}}, activations=[{acts}]"


__all__ = ["PytorchNodeQuantizationDispatcher", "PytorchQuantizationWrapper",
           "call_layer_with_weights", "quantizer_from_json"]
