# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""PytorchNodeQuantizationDispatcher and PytorchQuantizationWrapper (REFERENCE.md 5.1, 5.3).

The wrapper keeps each quantized weight's float values as its own nn.Parameter, takes the
layer's tensor off the layer's parameters (a plain attribute, as MCT does), and at each forward
sets the layer's attribute to the quantized weight before running the layer; the activation
quantizers then quantize the layer's outputs. Functional ops (torch.add, torch.cat, ...) take
positional constant weights: weight_values {position: tensor}, op_call_args, op_call_kwargs,
is_inputs_as_list.

TorchScript tracing records torch.ops.qi.* calls; torch.fx.symbolic_trace sees the quantizers as
torch.ops.qi calls and an attribute-mode layer run with substituted weights as one call of the
leaf function `call_layer_with_weights`."""

import json
from typing import Any, Dict, List, Optional, Union

import torch
import torch.fx
from torch import nn

from quantizers_infrastructure.common.base_inferable_quantizer import BaseInferableQuantizer
from quantizers_infrastructure.common.enums import QuantizationTarget
from quantizers_infrastructure.common.node_quantization_dispatcher import \
    NodeQuantizationDispatcher
from quantizers_infrastructure.pytorch.trainable_quantizers import (
    BasePytorchTrainableQuantizer, TRAINABLE_QUANTIZER_CLASSES)

WEIGHTS_VALUES = "weights_value"
OP_CALL_ARGS = "op_call_args"
OP_CALL_KWARGS = "op_call_kwargs"
IS_INPUT_AS_LIST = "is_inputs_as_list"
POSITIONAL_WEIGHT = "positional_weight"
QUANTIZED_POSITIONAL_WEIGHT = "quantized_positional_weight"


def _is_trainable(q) -> bool:
    return isinstance(q, BasePytorchTrainableQuantizer)


def _quantize(q, x: torch.Tensor, training: bool) -> torch.Tensor:
    return q(x, training) if _is_trainable(q) else q(x)


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


@torch.fx.wrap
def call_layer_with_weights(layer, names, weights, args, kwargs):
    """Runs `layer` with each attribute names[i] set to weights[i] (the quantized weights).
    A leaf for torch.fx: traced graphs show this one call."""
    owners = [_owner_and_name(layer, name) for name in names]
    for (owner, leaf), w in zip(owners, weights):
        setattr(owner, leaf, w)
    out = layer(*args, **kwargs)
    # The layer's graph holds its own reference to w; the attribute keeps the values only, so
    # that the module stays a graph leaf (deepcopy, pickling) between forwards.
    for (owner, leaf), w in zip(owners, weights):
        setattr(owner, leaf, w.detach())
    return out


class PytorchQuantizationWrapper(nn.Module):
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
            if not isinstance(q, BaseInferableQuantizer):
                raise ValueError(f"PytorchQuantizationWrapper: the quantizer of {key!r} must be "
                                 f"a BaseInferableQuantizer, got {type(q).__name__}")
            if q.quantization_target not in (None, QuantizationTarget.Weights):
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
            if not isinstance(q, BaseInferableQuantizer):
                raise ValueError(f"PytorchQuantizationWrapper: activation quantizer {i} must be "
                                 f"a BaseInferableQuantizer, got {type(q).__name__}")
            if q.quantization_target not in (None, QuantizationTarget.Activation):
                raise ValueError(f"PytorchQuantizationWrapper: activation quantizer {i} is a "
                                 f"{q.quantization_target.value} quantizer")

        if isinstance(module, nn.Module):
            self.layer = module
        elif callable(module):
            self.__dict__["layer"] = module  # a function: a plain attribute
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
        self._weights_vars = []
        self._set_weights_vars(True)
        for i, q in enumerate(self.activation_quantizers):
            q.initialize_quantization(None, f"tensor{i}", self)

    @staticmethod
    def _param_key(attribute) -> str:
        return (str(attribute).replace(".", "_") if isinstance(attribute, str)
                else f"{POSITIONAL_WEIGHT}_{attribute}")

    def _set_weights_vars(self, is_training: bool = True) -> None:
        """(Re)builds [(key, float weight parameter, quantizer)] and, when training, takes each
        attribute's tensor off the layer and creates the quantizers' variables."""
        self._weights_vars = []
        for key, q in self.weights_quantizers.items():
            pkey = self._param_key(key)
            if isinstance(key, str):
                if is_training and pkey not in self._parameters:
                    owner, leaf = _owner_and_name(self.layer, key)
                    if not hasattr(owner, leaf):
                        names = [n for n, _ in self.layer.named_parameters()]
                        raise ValueError(f"PytorchQuantizationWrapper: the layer has no "
                                         f"parameter \"{key}\"; it has: {', '.join(names) or '(none)'}")
                    original = getattr(owner, leaf)
                    w = original.detach()
                    if leaf in owner._parameters:
                        delattr(owner, leaf)
                    setattr(owner, leaf, w)  # a plain tensor, no longer a layer parameter
                    self.register_parameter(
                        pkey, nn.Parameter(w, requires_grad=getattr(original, "requires_grad",
                                                                     True)))
            else:
                if is_training and pkey not in self._parameters:
                    value = self.weight_values[key]
                    self.register_parameter(pkey, nn.Parameter(value.detach().clone(),
                                                               requires_grad=False))
                    self.__dict__[f"{QUANTIZED_POSITIONAL_WEIGHT}_{key}"] = value
            var = self._parameters[pkey]
            if is_training:
                q.initialize_quantization(var.shape, pkey, self)
            self._weights_vars.append((key, var, q))

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
        for key, _, q in self._weights_vars:
            qw = _quantize(q, getattr(self, self._param_key(key)), self.training)
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
            res = [_quantize(q, o, self.training) for q, o in zip(acts, out)]
            return type(out)(res) if isinstance(out, tuple) else res
        if len(acts) != 1:
            raise ValueError(f"PytorchQuantizationWrapper: {len(acts)} activation quantizers for "
                             f"one layer output")
        return _quantize(acts[0], out, self.training)

    # ---- conversion and inspection ----
    def convert_to_inferable_quantizers(self) -> None:
        """Replaces every trainable quantizer (weights and activations) by its inferable
        conversion, in place; soft rounding also writes its hard-rounded weights into the float
        weight. The trainable variables are removed from the wrapper."""
        for key, var, q in self._weights_vars:
            if not _is_trainable(q):
                continue
            if q.replaces_weight:
                with torch.no_grad():
                    var.copy_(q(var, False))
            self.weights_quantizers[key] = q.convert2inferable()
            self._drop_variables(q)
        for i, q in enumerate(self.activation_quantizers):
            if _is_trainable(q):
                self.activation_quantizers[i] = q.convert2inferable()
                self._drop_variables(q)
        self._set_weights_vars(False)

    def _drop_variables(self, q) -> None:
        for name in getattr(q, "registered_names", []):
            self._parameters.pop(name, None)

    def get_weights_vars(self):
        """[(attribute or position, float weight parameter, quantizer)]."""
        return self._weights_vars

    def get_quantized_weights(self) -> Dict[Any, torch.Tensor]:
        """{attribute or position: quantized weight} (eval-mode quantizers, no grad)."""
        with torch.no_grad():
            return {key: _quantize(q, var, False) for key, var, q in self._weights_vars}

    @property
    def dispatcher(self) -> PytorchNodeQuantizationDispatcher:
        """The quantizers as a dispatcher (attribute mode)."""
        return PytorchNodeQuantizationDispatcher(
            {k: q for k, q in self.weights_quantizers.items() if isinstance(k, str)},
            list(self.activation_quantizers))

    @property
    def is_weights_quantization(self) -> bool:
        return self.num_weights_quantizers > 0

    @property
    def num_weights_quantizers(self) -> int:
        return len(self.weights_quantizers)

    @property
    def is_activation_quantization(self) -> bool:
        return len(self.activation_quantizers) > 0

    @property
    def num_activation_quantizers(self) -> int:
        return len(self.activation_quantizers)

    def extra_repr(self) -> str:
        ws = ", ".join(f"{k}: {type(q).__name__}" for k, q in self.weights_quantizers.items())
        acts = ", ".join(type(q).__name__ for q in self.activation_quantizers)
        layer = "" if isinstance(self.layer, nn.Module) else f"layer={getattr(self.layer, '__name__', self.layer)}, "
        return f"{layer}weights={{{ws}}}, activations=[{acts}]"


__all__ = ["PytorchNodeQuantizationDispatcher", "PytorchQuantizationWrapper",
           "call_layer_with_weights", "quantizer_from_json"]
