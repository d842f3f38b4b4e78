# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""KerasQuantizationWrapper and KerasActivationQuantizationHolder:
Keras layers that quantize a layer's weights before it runs and its outputs after, with qi's
TF ops. Both are registered Keras serializable objects (package "qi"): models holding them save
and load as .keras files, and their get_config() is plain JSON."""

import inspect
from typing import Any, Dict, List, Optional, Union

import numpy as np
import tensorflow as tf

from quantizers_infrastructure import _core
from quantizers_infrastructure.common import constants as C
from quantizers_infrastructure.common.base_inferable_quantizer import (
    QUANTIZER_KINDS, BaseInferableQuantizer, call_takes_training, is_quantizer)
from quantizers_infrastructure.common.base_trainable_quantizer import BaseTrainableQuantizer
from quantizers_infrastructure.common.inferable_quantizers import InferableQuantizer
from quantizers_infrastructure.common.node_quantization_dispatcher import \
    NodeQuantizationDispatcher
from quantizers_infrastructure.keras.dispatcher import KerasNodeQuantizationDispatcher
from quantizers_infrastructure.keras.serialization import (deserialize_quantizer,
                                                           serialize_quantizer)

DISPATCHER = "dispatcher"
WEIGHTS_VALUE = "weights_value"
OP_CALL_ARGS = "op_call_args"
OP_CALL_KWARGS = "op_call_kwargs"
IS_INPUTS_AS_LIST = "is_inputs_as_list"
ACTIVATION_HOLDER_QUANTIZER = "activation_holder_quantizer"
QI_VERSION = C.QI_VERSION_KEY
# SHA-256 of the wrapper's quantizer records as written (see _records_digest): a record emptied,
# dropped or edited in a saved file is reported on load instead of running the layer unquantized.
RECORDS_SHA256 = "qi_records_sha256"
_RECORDS = (DISPATCHER, C.WEIGHTS_QUANTIZERS, C.ACTIVATION_QUANTIZERS)


def _records_digest(config: Dict[str, Any]) -> str:
    import hashlib
    import json
    records = {k: config.get(k) for k in _RECORDS}
    text = json.dumps(records, sort_keys=True, separators=(",", ":"), allow_nan=True,
                      default=lambda o: list(o) if isinstance(o, tuple) else repr(o))
    return hashlib.sha256(text.encode()).hexdigest()


def _weight_name(name: str) -> str:
    """"dense_2/kernel:0" -> "kernel"."""
    return name.split(":")[0].split("/")[-1]


def _accepts(fn, arg: str) -> bool:
    try:
        return arg in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _quantize(quantizer, x, training):
    if isinstance(quantizer, BaseTrainableQuantizer):
        return quantizer(x, training=training)
    if not isinstance(quantizer, InferableQuantizer) and call_takes_training(quantizer):
        # A foreign quantizer (MCT's own trainable ones) gets the mode as MCT Quantizers gives
        # it: the Keras learning phase when the call has none.
        if training is None:
            training = tf.keras.backend.learning_phase()
        if isinstance(training, (bool, int, np.bool_)):
            return quantizer(x, training=bool(training))
        return tf.__internal__.smart_cond.smart_cond(
            training, lambda: quantizer(x, training=True), lambda: quantizer(x, training=False))
    return quantizer(x)


def _file_layout_as_mct_quantizers(layer, moved) -> None:
    """Makes `layer` save to .keras files as it does inside MCT Quantizers' wrapper, whose call
    takes the quantized weights (`moved`) out of the layer's own variables: the layer saves the
    others, the wrapper saves the moved ones among its own. The layer loads that layout and the
    one qi wrote before (all its variables), and keeps its weight lists (get_weights,
    set_weights) as they are."""
    def own():
        return list(layer._trainable_weights) + list(layer._non_trainable_weights)

    def kept():
        return [v for v in own() if not any(v is m for m in moved)]

    def save_own_variables(store):
        for i, v in enumerate(kept()):
            store[str(i)] = v.numpy()

    def load_own_variables(store):
        targets = kept() if len(store.keys()) == len(kept()) else own()
        if len(store.keys()) != len(targets):
            raise ValueError(f"Layer '{layer.name}' expected {len(kept())} variables (or "
                             f"{len(own())}, as older qi files hold), but received "
                             f"{len(store.keys())} variables during loading")
        for i, v in enumerate(targets):
            v.assign(store[str(i)])

    object.__setattr__(layer, "save_own_variables", save_own_variables)
    object.__setattr__(layer, "load_own_variables", load_own_variables)


def _is_foreign(q) -> bool:
    """Neither qi's inferable nor qi's trainable kind (e.g. MCT's own trainable quantizers)."""
    return not isinstance(q, (InferableQuantizer, BaseTrainableQuantizer))


def _convertible(q) -> bool:
    """qi's trainable quantizers and foreign ones with a convert2inferable()."""
    return isinstance(q, BaseTrainableQuantizer) or (
        not isinstance(q, InferableQuantizer) and callable(getattr(q, "convert2inferable", None)))


def _check_training(training, who: str) -> None:
    if training is not None and not isinstance(training, (bool, np.bool_)) \
            and not tf.is_tensor(training) and training not in (0, 1):
        raise ValueError(f"{who}: training must be a bool or None, got {training!r}")


def _value_to_json(value) -> Dict[str, Any]:
    a = value.numpy() if tf.is_tensor(value) else np.asarray(value)
    return {"value": a.tolist(), "dtype": str(a.dtype), "shape": list(a.shape)}


def _value_from_json(d: Any, who: str) -> np.ndarray:
    if not isinstance(d, dict) or "value" not in d:
        raise ValueError(f"{who}: a positional weight value must be an object with \"value\", got "
                         f"{d!r}")
    a = np.asarray(d["value"], dtype=d.get("dtype", "float32"))
    return a.reshape(d["shape"]) if "shape" in d else a


@tf.keras.utils.register_keras_serializable(package="qi")
class KerasQuantizationWrapper(tf.keras.layers.Wrapper):
    """Quantizes the weights of `layer` before it runs and its outputs after.

    Two forms:
      * the seed's: KerasQuantizationWrapper(layer, dispatcher) with a
        KerasNodeQuantizationDispatcher (weights by attribute name, one activation quantizer
        per output);
      * MCT Quantizers': KerasQuantizationWrapper(layer, {"kernel": q}) for
        attributes, or positional weights: KerasQuantizationWrapper(layer, {1: q},
        weight_values={1: const}, op_call_args=[...], op_call_kwargs={...},
        is_inputs_as_list=False) runs layer(*inputs_with_q(const)_inserted_at_1, ...).

    Trainable quantizers create their variables on this wrapper when it is built and get the
    `training` flag. Errors raise ValueError."""

    def __init__(self, layer: tf.keras.layers.Layer,
                 weights_quantizers: Union[None, NodeQuantizationDispatcher, BaseInferableQuantizer,
                                           Dict[Union[int, str], BaseInferableQuantizer]] = None,
                 weight_values: Optional[Dict[int, Any]] = None,
                 op_call_args: Optional[List[Any]] = None,
                 op_call_kwargs: Optional[Dict[str, Any]] = None,
                 is_inputs_as_list: bool = False,
                 activation_quantizers: Optional[List[BaseInferableQuantizer]] = None,
                 **kwargs):
        kwargs.pop(QI_VERSION, None)
        super().__init__(layer, **kwargs)
        who = type(self).__name__
        if not isinstance(layer, tf.keras.layers.Layer):
            raise ValueError(f"{who}: layer must be a Keras layer, got {type(layer).__name__}")
        if isinstance(weights_quantizers, NodeQuantizationDispatcher):
            dispatcher = weights_quantizers
            if not isinstance(dispatcher, KerasNodeQuantizationDispatcher):
                dispatcher = KerasNodeQuantizationDispatcher(dispatcher.weight_quantizers,
                                                             dispatcher.activation_quantizers)
            if activation_quantizers is not None:
                raise ValueError(f"{who}: pass activation quantizers in the dispatcher, not as "
                                 f"activation_quantizers")
            self._dispatcher_form = True
            weights = dict(dispatcher.weight_quantizers)
            acts = list(dispatcher.activation_quantizers)
        else:
            self._dispatcher_form = False
            if weights_quantizers is None:
                weights = {}
            elif isinstance(weights_quantizers, BaseInferableQuantizer):
                weights = {KerasNodeQuantizationDispatcher.default_weight_attribute:
                           weights_quantizers}
            elif isinstance(weights_quantizers, dict):
                weights = dict(weights_quantizers)
            else:
                raise ValueError(f"{who}: weights_quantizers must be a "
                                 f"KerasNodeQuantizationDispatcher, a quantizer or a dict, got "
                                 f"{type(weights_quantizers).__name__}")
            acts = list(activation_quantizers or [])
        for key, q in list(weights.items()) + list(enumerate(acts)):
            if not is_quantizer(q):
                raise ValueError(f"{who}: quantizer {key!r} must be {QUANTIZER_KINDS}, got "
                                 f"{type(q).__name__}")
        weight_values = dict(weight_values or {})
        if weight_values:
            for pos, value in weight_values.items():
                if not isinstance(value, (np.ndarray, tf.Tensor)):
                    raise ValueError(f"Positional weight at position {pos} should be either an "
                                     f"ndarray or a tf.Tensor,but type is {type(value)}")
            if not all(isinstance(k, int) and not isinstance(k, bool) for k in weights):
                raise ValueError(f"{who}: with weight_values, \"weights_quantizers\" keys must "
                                 f"all be ints (positions), got {list(weights)}")
            if sorted(weights) != sorted(weight_values):
                raise ValueError("Mismatch between \"weights_quantizers\" and \"weight_values\" "
                                 f"keys: {sorted(weights)} and {sorted(weight_values)}")
        else:
            if not all(isinstance(k, str) for k in weights):
                raise ValueError("\"weights_quantizers\" keys should be all strings, got "
                                 f"{list(weights)}")
            weights = {_weight_name(k): q for k, q in weights.items()}
        self.weights_quantizers = weights
        self.activation_quantizers = acts
        self.weight_values = weight_values
        self.op_call_args = list(op_call_args or [])
        self.op_call_kwargs = dict(op_call_kwargs or {})
        self.is_inputs_as_list = bool(is_inputs_as_list)
        self.is_str_attr = not weight_values
        self._set_weights_vars([])

    # ---- properties ----
    @property
    def dispatcher(self) -> KerasNodeQuantizationDispatcher:
        """The quantizers as a KerasNodeQuantizationDispatcher (attribute form only)."""
        if not self.is_str_attr:
            raise ValueError(f"{type(self).__name__}: positional weights have no dispatcher")
        return KerasNodeQuantizationDispatcher(dict(self.weights_quantizers),
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
    def qi_version(self) -> str:
        """The version of qi that runs the layer (qi.__version__)."""
        return _core.kVersion

    def _all_quantizers(self):
        return list(self.weights_quantizers.values()) + list(self.activation_quantizers)

    @property
    def has_trainable_quantizers(self) -> bool:
        """True while a quantizer of the layer is trainable (convert_to_inferable_quantizers
        replaces it)."""
        return any(_convertible(q) for q in self._all_quantizers())

    # ---- build / call ----
    def build(self, input_shape=None):
        if self.is_str_attr and not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        # MCT Quantizers' variable layout, which its .keras files and MCT's exporters (reading
        # get_weights() by index) rely on: a step counter, then the quantized weights of the
        # layer among the wrapper's own trainable weights, then the quantizers' variables.
        self.optimizer_step = self.add_weight(
            C.STEPS, initializer=tf.keras.initializers.Constant(-1), dtype=tf.int32,
            trainable=False)
        weights_vars = []
        for key, q in self._build_order():
            if self.is_str_attr:
                var = self.layer.__dict__.get(key, getattr(self.layer, key, None))
                if not isinstance(var, tf.Variable):
                    raise ValueError(f"{type(self).__name__}: layer {self.layer.name} "
                                     f"({type(self.layer).__name__}) has no weight attribute "
                                     f"\"{key}\"")
                self._check_fits(key, q, var.shape)
                if not any(var is w for w in self._trainable_weights):
                    self._trainable_weights.append(var)
                q.initialize_quantization(tuple(var.shape), key, self)  # MCT's name too
            else:
                value = np.asarray(self.weight_values[key].numpy() if tf.is_tensor(
                    self.weight_values[key]) else self.weight_values[key])
                var = self.add_weight(name=f"positional_weight_{key}", shape=value.shape,
                                      dtype=tf.as_dtype(value.dtype),
                                      initializer=tf.keras.initializers.Constant(value),
                                      trainable=False)
                self._check_fits(key, q, var.shape)
                q.initialize_quantization(tuple(var.shape), None if _is_foreign(q) else
                                          f"positional_weight_{key}_", self)
            weights_vars.append((key, var, q))
        self._set_weights_vars(weights_vars)
        if self.is_str_attr:
            _file_layout_as_mct_quantizers(self.layer, self._moved_weights())
        for i, q in enumerate(self.activation_quantizers):
            q.initialize_quantization(None, f"out{i}_", self)
        self.built = True

    def _check_fits(self, key, q, shape) -> None:
        """The core's rule that an inferable quantizer fits its weight (axis, channel count,
        input_rank), at build time: a model file with a record that does not fit fails to load,
        naming the layer and the weight, instead of failing at the first call. Trainable
        quantizers are checked by the core policy when they create their variables."""
        if isinstance(q, BaseTrainableQuantizer) or _is_foreign(q):
            return
        try:
            _core.check_fits_weight(q.to_json(), [int(d) for d in shape])
        except ValueError as e:
            raise ValueError(f"{type(self).__name__} \"{self.name}\": the quantizer of weight "
                             f"\"{key}\" does not fit the layer's weight of shape "
                             f"{[int(d) for d in shape]}: {e}") from None

    def _moved_weights(self):
        """The layer's quantized weights, which count as the wrapper's own (MCT Quantizers'
        wrapper moves them out of the layer on its first call)."""
        return [var for _, var, _ in self._weights_vars] if self.is_str_attr else []

    def _children(self, attribute: str):
        moved = self._moved_weights()
        return [w for w in self._gather_children_attribute(attribute)
                if not any(w is m for m in moved)]

    # Keras's own definitions, with the quantized weights counted once, as the wrapper's: the
    # order of get_weights() is MCT Quantizers' (its TFLite INT8 exporter reads it by index).
    @property
    def trainable_weights(self):
        self._update_trackables()
        if not self.trainable:
            return []
        return self._dedup_weights(self._trainable_weights + self._children("trainable_variables"))

    @property
    def non_trainable_weights(self):
        self._update_trackables()
        if self.trainable:
            weights = self._non_trainable_weights + self._children("non_trainable_variables")
        else:
            weights = (self._trainable_weights + self._non_trainable_weights
                       + self._children("variables"))
        return self._dedup_weights(weights)

    def _build_order(self):
        """The weight quantizers in the order of the layer's own variables (positions in
        increasing order): a fixed order of the wrapper's variables, whatever order the
        quantizers dict came in (a config read back by the core lists its keys sorted)."""
        items = list(self.weights_quantizers.items())
        if not self.is_str_attr:
            return sorted(items, key=lambda kv: kv[0])
        own = getattr(self.layer, "_qi_own_variables", None) or (
            list(self.layer._trainable_weights) + list(self.layer._non_trainable_weights))

        def index(kv):
            var = self.layer.__dict__.get(kv[0], getattr(self.layer, kv[0], None))
            return next((i for i, w in enumerate(own) if w is var), len(own))

        return sorted(items, key=index)

    def load_own_variables(self, store):
        own = self._trainable_weights + self._non_trainable_weights
        if len(store.keys()) != len(own):
            # A file written before the wrapper had MCT Quantizers' layout: no step counter and
            # none of the layer's weights (they load with the layer) among its own.
            layer_vars = [w for _, w, _ in self._weights_vars] if self.is_str_attr else []
            legacy = [v for v in own if v is not self.optimizer_step
                      and not any(v is w for w in layer_vars)]
            if len(store.keys()) == len(legacy):
                for i, v in enumerate(legacy):
                    v.assign(store[str(i)])
                return
        super().load_own_variables(store)

    def _set_weights_vars(self, weights_vars) -> None:
        # Not through Keras's attribute tracking: a tracked list holding the layer's variables
        # would make Keras count them as this wrapper's own when loading (_update_trackables).
        object.__setattr__(self, "_weights_vars", list(weights_vars))

    def get_weights_vars(self):
        """[(attribute name or position, variable, quantizer)] after build."""
        return list(self._weights_vars)

    def get_quantized_weights(self) -> Dict[Union[int, str], tf.Tensor]:
        """{attribute or position: quantized weight} (inference mode)."""
        return {k: _quantize(q, tf.convert_to_tensor(w), False) for k, w, q in self._weights_vars}

    def call(self, inputs, training=None, **kwargs):
        who = type(self).__name__
        _check_training(training, who)
        quantized = [(k, w, _quantize(q, tf.convert_to_tensor(w), training))
                     for k, w, q in self._weights_vars]
        layer_kwargs = dict(kwargs)
        if _accepts(self.layer.call, "training"):
            layer_kwargs["training"] = training
        if self.is_str_attr:
            # Swap the quantized weights in for this call only (not through Keras's attribute
            # tracking, so the layer keeps its variables for saving and weight lists).
            try:
                for k, _, qw in quantized:
                    object.__setattr__(self.layer, k, qw)
                outputs = self.layer.call(inputs, **layer_kwargs)
            finally:
                for k, w, _ in quantized:
                    object.__setattr__(self.layer, k, w)
        else:
            args = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
            for k, _, qw in sorted(quantized, key=lambda t: t[0]):
                args.insert(k, qw)
            call_kwargs = dict(self.op_call_kwargs)
            if "training" in layer_kwargs:
                call_kwargs.setdefault("training", training)
            if self.is_inputs_as_list:
                outputs = self.layer(args, *self.op_call_args, **call_kwargs)
            else:
                outputs = self.layer(*(args + self.op_call_args), **call_kwargs)
        if not self.activation_quantizers:
            return outputs
        is_seq = isinstance(outputs, (list, tuple))
        outs = list(outputs) if is_seq else [outputs]
        if len(outs) != len(self.activation_quantizers):
            raise ValueError(f"{who}: the layer has {len(outs)} outputs but the dispatcher holds "
                             f"{len(self.activation_quantizers)} activation quantizers")
        outs = [_quantize(q, o, training) for q, o in zip(self.activation_quantizers, outs)]
        return type(outputs)(outs) if is_seq else outs[0]

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # ---- conversion ----
    def convert_to_inferable_quantizers(self) -> "KerasQuantizationWrapper":
        """A new, built wrapper whose trainable quantizers are replaced by their
        convert2inferable() result, with this wrapper's layer weights (inferable quantizers are
        kept as they are)."""
        if not self.built:
            raise ValueError(f"{type(self).__name__}: build the wrapper (call it once) before "
                             f"converting its quantizers")

        def convert(q):
            return q.convert2inferable() if _convertible(q) else q

        weights = {k: convert(q) for k, q in self.weights_quantizers.items()}
        acts = [convert(q) for q in self.activation_quantizers]
        layer = self.layer.__class__.from_config(self.layer.get_config())
        kwargs = dict(name=self.name, trainable=self.trainable, dtype=self.dtype)
        if self._dispatcher_form:
            new = type(self)(layer, KerasNodeQuantizationDispatcher(weights, acts), **kwargs)
        else:
            new = type(self)(layer, weights, self.weight_values or None, self.op_call_args,
                             self.op_call_kwargs, self.is_inputs_as_list, acts or None, **kwargs)
        new.build(self._build_input_shape)
        if self.layer.weights:
            new.layer.set_weights(self.layer.get_weights())
        if self.is_str_attr:  # the quantized weights, which the wrapper holds
            for key, var, _ in self._weights_vars:
                getattr(new.layer, key).assign(var)
        # Soft rounding: the converted quantizer keeps the hard-rounded weights, so they replace
        # the float ones.
        for key, var, q in self._weights_vars:
            if isinstance(q, BaseTrainableQuantizer) and q.replaces_weight and self.is_str_attr:
                getattr(new.layer, key).assign(_quantize(q, tf.convert_to_tensor(var), False))
        return new

    # ---- serialization ----
    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        if self._dispatcher_form:
            config[DISPATCHER] = {"class_name": KerasNodeQuantizationDispatcher.__name__,
                                  "config": self.dispatcher.get_config()}
        else:
            config[C.WEIGHTS_QUANTIZERS] = {str(k): serialize_quantizer(q)
                                            for k, q in self.weights_quantizers.items()}
            if self.activation_quantizers:
                config[C.ACTIVATION_QUANTIZERS] = [serialize_quantizer(q)
                                                   for q in self.activation_quantizers]
            if self.weight_values:
                config[WEIGHTS_VALUE] = {str(k): _value_to_json(v)
                                         for k, v in self.weight_values.items()}
                # Plain containers: Keras wraps list/dict attributes in tracking proxies.
                config[OP_CALL_ARGS] = list(self.op_call_args)
                config[OP_CALL_KWARGS] = dict(self.op_call_kwargs)
                config[IS_INPUTS_AS_LIST] = self.is_inputs_as_list
        config[QI_VERSION] = _core.kVersion
        config[RECORDS_SHA256] = _records_digest(config)
        return config

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects=None) -> "KerasQuantizationWrapper":
        config = dict(config)
        who = cls.__name__
        if "layer" not in config:
            raise ValueError(f"{who}: config has no \"layer\"")
        layer = tf.keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        config.pop(QI_VERSION, None)
        config.pop(C.MCTQ_VERSION, None)  # files written by MCT Quantizers
        digest = config.pop(RECORDS_SHA256, None)  # absent in files of other writers
        if digest is not None and digest != _records_digest(config):
            raise ValueError(f"{who} \"{config.get('name', '?')}\": the quantizer records "
                             f"({', '.join(k for k in _RECORDS if k in config) or 'none left'}) do "
                             f"not match the checksum written with them: the file is damaged or "
                             f"was edited")
        if DISPATCHER in config:
            d = config.pop(DISPATCHER)
            if not isinstance(d, dict) or d.get("class_name") != \
                    KerasNodeQuantizationDispatcher.__name__:
                raise ValueError(f"{who}: \"dispatcher\" must be a serialized "
                                 f"KerasNodeQuantizationDispatcher, got {d!r}")
            return cls(layer, KerasNodeQuantizationDispatcher.from_config(d.get("config")),
                       **config)

        def key(k):  # JSON turns int keys into strings
            return int(k) if isinstance(k, str) and k.isdigit() else k

        weights = {key(k): deserialize_quantizer(v)
                   for k, v in (config.pop(C.WEIGHTS_QUANTIZERS, None) or {}).items()}
        acts = [deserialize_quantizer(v) for v in config.pop(C.ACTIVATION_QUANTIZERS, None) or []]
        values = {key(k): _value_from_json(v, who)
                  for k, v in (config.pop(WEIGHTS_VALUE, None) or {}).items()}
        return cls(layer, weights, values or None, config.pop(OP_CALL_ARGS, None),
                   config.pop(OP_CALL_KWARGS, None), config.pop(IS_INPUTS_AS_LIST, False),
                   acts or None, **config)


@tf.keras.utils.register_keras_serializable(package="qi")
class KerasActivationQuantizationHolder(tf.keras.layers.Layer):
    """A layer that applies one activation quantizer to its input. Trainable
    quantizers create their variables on it and get the `training` flag."""

    def __init__(self, activation_holder_quantizer: BaseInferableQuantizer, **kwargs):
        kwargs.pop(QI_VERSION, None)
        super().__init__(**kwargs)
        if not is_quantizer(activation_holder_quantizer):
            raise ValueError(f"{type(self).__name__}: activation_holder_quantizer must be "
                             f"{QUANTIZER_KINDS}, "
                             f"got {type(activation_holder_quantizer).__name__}")
        self.activation_holder_quantizer = activation_holder_quantizer

    def build(self, input_shape=None):
        # A step counter first, as MCT Quantizers' holder has (its files hold one).
        self.optimizer_step = self.add_weight(
            C.STEPS, initializer=tf.keras.initializers.Constant(-1), dtype=tf.int32,
            trainable=False)
        q = self.activation_holder_quantizer
        # Foreign quantizers get MCT Quantizers' name for the tensor; qi's name their variables
        # as the C++ holder does.
        q.initialize_quantization(None, self.name + "/out_" if _is_foreign(q) else "out_", self)
        self.built = True

    def load_own_variables(self, store):
        own = self._trainable_weights + self._non_trainable_weights
        if len(store.keys()) == len(own) - 1:  # a file of qi before the step counter
            for i, v in enumerate(v for v in own if v is not self.optimizer_step):
                v.assign(store[str(i)])
            return
        super().load_own_variables(store)

    def call(self, inputs, training=None):
        _check_training(training, type(self).__name__)
        return _quantize(self.activation_holder_quantizer, inputs, training)

    def compute_output_shape(self, input_shape):
        return input_shape

    @property
    def has_trainable_quantizers(self) -> bool:
        """True while the holder's quantizer is trainable (convert_to_inferable_quantizers
        replaces it)."""
        return _convertible(self.activation_holder_quantizer)

    def convert_to_inferable_quantizers(self) -> Optional["KerasActivationQuantizationHolder"]:
        """A new holder with the converted quantizer, or None when the quantizer is not
        trainable (as MCT)."""
        q = self.activation_holder_quantizer
        if not _convertible(q):
            return None
        new = type(self)(q.convert2inferable(), name=self.name, dtype=self.dtype)
        new.build(None)
        return new

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config[ACTIVATION_HOLDER_QUANTIZER] = serialize_quantizer(self.activation_holder_quantizer)
        config[QI_VERSION] = _core.kVersion
        return config

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "KerasActivationQuantizationHolder":
        config = dict(config)
        if ACTIVATION_HOLDER_QUANTIZER not in config and "function" in config:
            # MCT's fake-quant exporter rewrites a holder's entry of a model config into a
            # TFOpLambda (TensorFlow's fake_quant) but keeps its registered name, which is
            # this class's.
            return tf.keras.layers.deserialize({"class_name": "TFOpLambda", "config": config})
        if ACTIVATION_HOLDER_QUANTIZER not in config:
            raise ValueError(f"{cls.__name__}: config has no \"{ACTIVATION_HOLDER_QUANTIZER}\"")
        q = deserialize_quantizer(config.pop(ACTIVATION_HOLDER_QUANTIZER))
        config.pop(QI_VERSION, None)
        config.pop(C.MCTQ_VERSION, None)  # files written by MCT Quantizers
        return cls(q, **config)
