# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""BaseTrainableQuantizer, framework neutral: MCT's API (config checks, variable bookkeeping,
JSON) and the binding of the classes generated from the core's trainable registry.

A generated class (STEWeightQATQuantizer, ...) takes its whole policy from the core
(quantizers_infrastructure._core._TrainableQuantizer): which variables exist and how they start,
which op its forward runs with which arguments in training and in eval, and how it converts to an
inferable quantizer. A framework base only says how to create a variable, read it back and call
an op (the four `_`-hooks below). Custom subclasses (MCT lets users write their own) override
initialize_quantization, __call__ and convert2inferable instead."""

import json
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from quantizers_infrastructure import _core
from quantizers_infrastructure.common.base_inferable_quantizer import (BaseInferableQuantizer,
                                                                       get_all_subclasses)
from quantizers_infrastructure.common.enums import QuantizationTarget, VariableGroup
from quantizers_infrastructure.common.trainable_configs import (
    TrainableQuantizerActivationConfig, TrainableQuantizerWeightsConfig)

VAR = "var"
GROUP = "group"

# Tensor arguments of an op that a policy may leave out of its forward's inputs: the front ends
# pass them as empty (0-element) float32 tensors.
OPTIONAL_TENSOR_ARGUMENTS: Dict[str, Tuple[str, ...]] = {
    "format_quant": ("scale", "tensor_scale")}

# The core's trainable registry, in registry order.
TRAINABLE_REGISTRY: List[Dict[str, Any]] = _core.trainable_quantizers()


class BaseTrainableQuantizer(BaseInferableQuantizer):
    """A quantizer with learnable variables. Subclasses are marked with mark_quantizer (target,
    methods, TrainingMethod), create their variables on the wrapping module in
    initialize_quantization, quantize in __call__(inputs, training) and convert to an inferable
    quantizer in convert2inferable()."""

    _core_class: Optional[str] = None  # the registry class a generated class binds
    # Where the framework's activations keep channels (PyTorch 1, Keras -1).
    activation_channel_axis = 1

    def __init__(self, quantization_config, freeze_quant_params: bool = False):
        super().__init__()
        name = type(self).__name__
        target = getattr(type(self), "quantization_target", None)
        methods = getattr(type(self), "quantization_method", None)
        if target is None or methods is None:
            raise ValueError("Quantizer class inheriting from 'BaseTrainableQuantizer' is "
                             "improperly defined. Ensure it includes the '@mark_quantizer' "
                             "decorator and is correctly applied.")
        if target == QuantizationTarget.Weights:
            if not isinstance(quantization_config, TrainableQuantizerWeightsConfig):
                raise ValueError(f"{name}: expected weight quantization configuration; received "
                                 f"activation quantization instead.")
            method = quantization_config.weights_quantization_method
        else:
            if not isinstance(quantization_config, TrainableQuantizerActivationConfig):
                raise ValueError(f"{name}: expected activation quantization configuration; "
                                 f"received weight quantization instead.")
            method = quantization_config.activation_quantization_method
        if method not in methods:
            raise ValueError(f"{name}: Quantization method mismatch. Expected methods: "
                             f"{methods}, received: {method}.")
        if not isinstance(freeze_quant_params, bool):
            raise ValueError(f"{name}: freeze_quant_params must be a bool, got "
                             f"{freeze_quant_params!r}")
        self.quantization_config = quantization_config
        self.freeze_quant_params = freeze_quant_params
        self.quantizer_parameters: Dict[str, Dict[str, Any]] = {}
        # training -> (op, [(op argument, variable)], requires_grad, static kwargs,
        #              op arguments passed empty)
        self._forward: Dict[bool, Tuple[str, List[Tuple[str, str]], bool, Dict[str, Any],
                                        List[str]]] = {}
        self._policy = (None if self._core_class is None else
                        _core._TrainableQuantizer(self._core_class, json.dumps(self.get_config())))

    # ---- variables ----
    def add_quantizer_variable(self, name: str, variable: Any,
                               group: VariableGroup = VariableGroup.WEIGHTS) -> None:
        """Records `variable` under `name` in `group`."""
        self.quantizer_parameters[name] = {VAR: variable, GROUP: group}

    def get_quantizer_variable(self, name: str) -> Any:
        """The variable recorded under `name` (ValueError if there is none)."""
        if name not in self.quantizer_parameters:
            raise ValueError(f"{type(self).__name__}: variable \"{name}\" does not exist; call "
                             f"initialize_quantization first")
        return self.quantizer_parameters[name][VAR]

    def get_trainable_variables(self, group: VariableGroup) -> List[Any]:
        """The variables of `group` that train. With freeze_quant_params, asking for QPARAMS
        when some would train is an error (as in MCT)."""
        out = [p[VAR] for p in self.quantizer_parameters.values()
               if p[GROUP] == group and self._trains(p[VAR])]
        if self.freeze_quant_params and group == VariableGroup.QPARAMS and out:
            raise ValueError(f"{type(self).__name__}: quantization parameters were created "
                             f"trainable although freeze_quant_params is set")
        return out

    # ---- the generated classes' behaviour: the core's policy, bound by the framework hooks ----
    def initialize_quantization(self, tensor_shape, name: str, layer) -> None:
        """Creates the policy's variables on `layer` (the wrapper) for a tensor of
        `tensor_shape` (None for activations) and fixes the forward for that shape."""
        if self._policy is None:
            raise NotImplementedError(f"{type(self).__name__} must implement "
                                      f"initialize_quantization")
        shape = [] if tensor_shape is None else [int(d) for d in tensor_shape]
        weight = self._weight_values(layer, name) if self._policy.needs_weight else None
        for v in self._policy.variables(shape, weight):
            var = self._create_variable(layer, name, v["name"], v["initial"], v["trainable"])
            self.add_quantizer_variable(v["name"], var, VariableGroup(v["group"]))
        for training in (False, True):
            f = self._policy.forward(training, shape, self.activation_channel_axis)
            given = {a for a, _ in f["inputs"]}
            empty = [a for a in OPTIONAL_TENSOR_ARGUMENTS.get(f["op"], ()) if a not in given]
            self._forward[training] = (f["op"], f["inputs"], f["requires_grad"], f["kwargs"],
                                       empty)

    def __call__(self, inputs, training: bool = True):
        if not self._forward:
            raise ValueError(f"{type(self).__name__}: call initialize_quantization (build the "
                             f"wrapper) before quantizing")
        return self._run(inputs, training)

    def convert2inferable(self) -> BaseInferableQuantizer:
        """The inferable quantizer whose output equals the eval-mode output bit for bit."""
        if self._policy is None:
            raise NotImplementedError(f"{type(self).__name__} must implement convert2inferable")
        from quantizers_infrastructure.common.inferable_quantizers import from_core_quantizer
        values = {k: np.asarray(self._values(p[VAR]), dtype=np.float32).reshape(-1)
                  for k, p in self.quantizer_parameters.items()}
        return from_core_quantizer(self._policy.convert(values))

    def convert_to_inferable(self) -> BaseInferableQuantizer:
        """Same as convert2inferable() (the C++ spelling)."""
        return self.convert2inferable()

    @property
    def replaces_weight(self) -> bool:
        """True when conversion also replaces the float weight by the eval forward of it (soft
        rounding: the eval output is not a function of the weight through the inferable
        quantizer alone)."""
        return self._policy is not None and self._policy.replaces_weight

    # ---- framework hooks ----
    def _create_variable(self, layer, name: str, variable: str, initial: np.ndarray,
                         trainable: bool) -> Any:
        raise NotImplementedError

    def _trains(self, variable) -> bool:
        raise NotImplementedError

    def _values(self, variable) -> np.ndarray:
        raise NotImplementedError

    def _weight_values(self, layer, name: str) -> np.ndarray:
        raise NotImplementedError

    def _run(self, inputs, training):
        raise NotImplementedError

    # ---- MCT helpers ----
    def activation_quantization(self) -> bool:
        """True when the quantizer was built from an activation config."""
        return isinstance(self.quantization_config, TrainableQuantizerActivationConfig)

    def weights_quantization(self) -> bool:
        """True when the quantizer was built from a weights config."""
        return isinstance(self.quantization_config, TrainableQuantizerWeightsConfig)

    # ---- serialization (the C++ trainable quantizers' JSON) ----
    def get_config(self) -> Dict[str, Any]:
        """{"quantization_config": config JSON, "freeze_quant_params": bool}: the "config" of
        the C++ twin's to_json()."""
        return {"quantization_config": self.quantization_config.get_config(),
                "freeze_quant_params": self.freeze_quant_params}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "BaseTrainableQuantizer":
        """A fresh quantizer (variables not created yet) from get_config() output."""
        if not isinstance(config, dict) or not isinstance(config.get("quantization_config"),
                                                          dict):
            raise ValueError(f"{cls.__name__}: config must be an object with "
                             f"\"quantization_config\"")
        freeze = config.get("freeze_quant_params", False)
        if not isinstance(freeze, bool):
            raise ValueError(f"{cls.__name__}: \"freeze_quant_params\" must be a boolean")
        cfg_cls = (TrainableQuantizerWeightsConfig
                   if cls.quantization_target == QuantizationTarget.Weights
                   else TrainableQuantizerActivationConfig)
        return cls(cfg_cls.from_config(config["quantization_config"]),
                   freeze_quant_params=freeze)

    def to_json(self) -> str:
        """{"class_name", "config"}, as the C++ trainable quantizers write it."""
        return json.dumps({"class_name": type(self).__name__, "config": self.get_config()})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.quantization_config!r})"

    # ---- pickling: the core's policy object is rebuilt from the config ----
    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_policy", None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._policy = (None if self._core_class is None else
                        _core._TrainableQuantizer(self._core_class, json.dumps(self.get_config())))


def generate_trainable_classes(namespace: Dict[str, Any], bases: Dict[str, type]) -> Dict[str, type]:
    """One class per entry of the core's registry, named as the registry names it, derived from
    bases[role] (role: "qat_weights", "activation" or "gptq") and marked with mark_quantizer;
    returns {name: class} and puts each in `namespace` (a module's globals())."""
    from quantizers_infrastructure.common.base_inferable_quantizer import mark_quantizer
    from quantizers_infrastructure.common.enums import QuantizationMethod, TrainingMethod
    classes = {}
    for entry in TRAINABLE_REGISTRY:
        target = QuantizationTarget(entry["target"])
        tm = TrainingMethod(entry["training_method"])
        role = ("activation" if target == QuantizationTarget.Activation
                else "gptq" if tm == TrainingMethod.SoftRounding else "qat_weights")
        name = entry["class_name"]
        methods = [QuantizationMethod[m] for m in entry["methods"]]
        doc = (f"{entry['doc']}\n\nTarget {target.value}, methods "
               f"{', '.join(m.name for m in methods)}, training method {tm.value}; the policy "
               f"is the C++ core's (qi::{name}).")
        cls = type(name, (bases[role],), {"__doc__": doc, "__module__": namespace["__name__"],
                                          "__qualname__": name, "_core_class": name})
        classes[name] = namespace[name] = mark_quantizer(target, methods, tm)(cls)
    return classes


def find_trainable_class(classes: Dict[str, type], quant_target, quant_method, training_method,
                         quantizer_base_class: Optional[type] = None,
                         quantizer_type: Any = None, quantizer_id: Any = None) -> type:
    """The class of `classes` (a front end's generated classes) registered for (target, method,
    training method): the core's lookup, with its message when not exactly one matches. With
    quantizer_base_class, searches its marked subclasses instead (user-defined quantizers
    included), as MCT does. The training method may also come as `quantizer_type` (the seed
    era's keyword) or `quantizer_id` (MCT's); giving two different ones is an error."""
    from quantizers_infrastructure.common.enums import TrainingMethod
    given = {k: v for k, v in (("training_method", training_method),
                               ("quantizer_type", quantizer_type),
                               ("quantizer_id", quantizer_id)) if v is not None}
    if len(set(map(repr, given.values()))) > 1:
        raise ValueError(f"get_trainable_quantizer_class: {' and '.join(given)} name different "
                         f"training methods: {', '.join(repr(v) for v in given.values())}")
    if not given:
        raise ValueError("get_trainable_quantizer_class: training_method (or quantizer_type) is "
                         "missing")
    training_method = next(iter(given.values()))
    training_method = TrainingMethod(getattr(training_method, "value", training_method))
    if quantizer_base_class is None:
        return classes[_core.trainable_class_name(quant_target.value, quant_method.name,
                                                  training_method.value)]
    found = [c for c in get_all_subclasses(quantizer_base_class)
             if getattr(c, "quantization_target", None) == quant_target
             and getattr(c, "identifier", None) == training_method
             and quant_method in (getattr(c, "quantization_method", None) or [])]
    if len(found) != 1:
        raise ValueError(f"get_trainable_quantizer_class: found {len(found)} trainable "
                         f"quantizers for target {quant_target.value}, method {quant_method.name} "
                         f"and training method {training_method.value}; expected exactly one")
    return found[0]
