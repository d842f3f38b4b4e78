# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The inferable quantizer classes, generated from the C++ registry (one class per entry of
QI_FOR_EACH_INFERABLE_QUANTIZER). Each class turns its keyword arguments into the JSON config of
its C++ twin; the C++ core validates it (ValueError with the core's message) and runs the
kernels. Quantizers are framework-neutral: `q(x)` dispatches on the type of x."""

import inspect
import json
import math
from numbers import Number
from typing import Any, Dict, List, Optional

import numpy as np

from quantizers_infrastructure import _core
from quantizers_infrastructure.common import constants as C
from quantizers_infrastructure.common.base_inferable_quantizer import (
    _RESOLVED_HANDLERS, BaseInferableQuantizer, find_input_handler, get_all_subclasses,
    mark_quantizer, register_input_type, supported_input_types)
from quantizers_infrastructure.common.enums import (QuantizationMethod, QuantizationTarget,
                                                    QuantizerID)

# Keys that hold one value per channel. A scalar given for one of them means [scalar].
_LIST_KEYS = (C.THRESHOLD, C.MIN_RANGE, C.MAX_RANGE, C.LUT_VALUES, C.SCALE)

def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, tuples -> lists, arrays (numpy, torch, TF) -> lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if not isinstance(value, (str, bytes)) and hasattr(value, "tolist"):
        return _plain(value.tolist())
    if not isinstance(value, (str, bytes)) and hasattr(value, "numpy"):  # TensorFlow tensors
        return _plain(value.numpy())
    return value


def _config_value(class_name: str, key: str, value: Any) -> Any:
    """The JSON value of one constructor argument. Type and range rules are the core's; only
    what JSON cannot carry is rejected here: non-finite numbers and non-JSON objects."""
    value = _plain(value)
    if key in _LIST_KEYS and (isinstance(value, Number) and not isinstance(value, bool)):
        value = [value]
    # Worded as the core's own finiteness check ("... must be finite, got inf at index 1").
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"{class_name}: {key} must be finite, got {item} at index {i}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{class_name}: {key} must be finite, got {value}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise TypeError(f"{class_name}: {key} must be a number, a bool, None or a list of "
                        f"numbers, got {type(value).__name__} {value!r}") from None
    return value


def _numpy_call(quantizer: "InferableQuantizer", inputs: np.ndarray) -> np.ndarray:
    return quantizer.core_quantizer.apply(inputs)


register_input_type(np.ndarray, _numpy_call)


class InferableQuantizer(BaseInferableQuantizer):
    """Base of the registered inferable quantizers: a framework-neutral handle on a validated
    C++ quantizer. Immutable; `q(x)` returns the fake-quantized x (float32) for every supported
    input type."""

    _class_name: str = ""
    _config_keys: tuple = ()
    _signature: Optional[inspect.Signature] = None

    def __init__(self, *args, qi_version: Optional[str] = None, **kwargs):
        cls = type(self)
        bound = cls._signature.bind(*args, **_seed_keywords(cls, kwargs))
        bound.apply_defaults()
        config = {k: _config_value(cls._class_name, k, v) for k, v in bound.arguments.items()}
        # get_config() carries qi_version, so that type(q)(**q.get_config()) rebuilds q (as
        # Keras does with a layer's quantizers); the core checks it as in from_config.
        if qi_version is not None:
            config[C.QI_VERSION_KEY] = qi_version
        self._set_core(_core.make_quantizer(cls._class_name, json.dumps(config, allow_nan=False)))

    def _set_core(self, core_quantizer) -> None:
        super().__init__()
        self._core = core_quantizer
        self._json = core_quantizer.to_json()  # immutable: serialized once
        self._config = json.loads(core_quantizer.get_config())
        # What the kernels take besides the plan: the axis (per-channel quantizers, NVFP4 with
        # stored block scales) and rank.
        self.kernel_channel_axis = (core_quantizer.channel_axis
                                    if core_quantizer.per_channel else None)
        self.kernel_input_rank = self._config.get("input_rank")

    # ---- MCT Quantizers' PyTorch export switches (read by the PyTorch front end) ----
    # reuse: MCT marks the quantizers of a layer used several times; while reuse is enabled the
    # PyTorch front end returns the first call's output for every later call (so that an export
    # records the quantization once). A custom implementation, once enabled, makes ONNX export
    # write this quantizer as its mct_quantizers custom op even where a QDQ pair would fit.
    reuse = False
    enable_reuse = False
    quantizer_first_run = True
    reuse_outputs = None
    _use_custom_impl = False

    def enable_reuse_quantizer(self) -> None:
        """From now on, calls on torch tensors return the first call's output (until
        disable_reuse_quantizer)."""
        self.enable_reuse = True
        self.quantizer_first_run = True
        self.reuse_outputs = None

    def disable_reuse_quantizer(self) -> None:
        """Every call quantizes its input again."""
        self.enable_reuse = False
        self.reuse_outputs = None

    def enable_custom_impl(self) -> None:
        """ONNX export writes this quantizer as its custom op (MCT Quantizers' op type) instead
        of a QuantizeLinear/DequantizeLinear pair; the numbers are the same."""
        self._use_custom_impl = True

    # ---- calling ----
    def __call__(self, inputs):
        """Returns Q(inputs), a new tensor of the same kind and shape (numpy: float32 ndarray of
        any strides; other float dtypes raise ValueError). Raises TypeError for input types no
        front end handles."""
        handler = _RESOLVED_HANDLERS.get(type(inputs)) or find_input_handler(type(inputs))
        if handler is None:
            raise TypeError(f"{self._class_name}: cannot quantize an input of type "
                            f"{type(inputs).__module__}.{type(inputs).__qualname__}; supported: "
                            f"{', '.join(supported_input_types())}")
        return handler(self, inputs)

    def apply_(self, inputs: np.ndarray) -> np.ndarray:
        """Quantizes a writeable float32 ndarray in place (any strides) and returns it."""
        return self._core.apply_(inputs)

    # ---- serialization ----
    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments as a dict (the C++ config: mct-quantizers' keys, the
        numeric profile and "qi_version"); from_config(get_config()) rebuilds an identical
        quantizer."""
        return json.loads(self._core.get_config())

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "InferableQuantizer":
        """Rebuilds a quantizer from get_config() output (validated by the core)."""
        if not isinstance(config, dict):
            raise ValueError(f"{cls._class_name}: config must be a dict, got "
                             f"{type(config).__name__}")
        config = {k: _config_value(cls._class_name, k, v) for k, v in config.items()}
        obj = cls.__new__(cls)
        obj._set_core(_core.make_quantizer(cls._class_name, json.dumps(config, allow_nan=False)))
        return obj

    def to_json(self) -> str:
        """JSON text {"class_name": ..., "config": get_config()}; see quantizer_from_json."""
        return self._json

    def __reduce__(self):
        return (_from_config_of, (type(self), self.get_config()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={self._config[k]!r}" for k in self._config_keys if k in self._config)
        return f"{self._class_name}({args})"

    # ---- derived properties ----
    @property
    def core_quantizer(self):
        """The C++ quantizer (quantizers_infrastructure._core._Quantizer); front ends call it."""
        return self._core

    @property
    def num_bits(self) -> int:
        """Bits per quantized value: num_bits as configured, or the element width of a float or
        block format (8, 6 or 4)."""
        return self._core.num_bits

    @property
    def num_channels(self) -> int:
        """Number of channels (1 for per-tensor quantizers)."""
        return self._core.num_channels

    @property
    def packed_plan(self) -> np.ndarray:
        """The kernel plan as one int32 array: what the framework ops take (torch.ops.qi.quantize
        keeps it as a buffer, so it moves with the model and no JSON is parsed per call)."""
        return self._core.packed_plan()

    @property
    def plan(self) -> Dict[str, Any]:
        """The kernel plan: per-channel float32 parameters (read-only arrays) the kernels use,
        e.g. {"kind": "affine_torch", "scale", "inv_scale", "zero_point", "qmin", "qmax"}."""
        return self._core.plan

    @property
    def scale(self) -> Optional[np.ndarray]:
        """Per-channel float32 step of an affine (symmetric, POT, uniform) quantizer; None for
        LUT quantizers. (FLOAT quantizers take `scale` as an argument: theirs is the config's.)"""
        return self._core.plan.get("scale")

    @property
    def zero_point(self) -> Optional[np.ndarray]:
        """Per-channel zero point (float32 holding integers) of the torch profile; None
        otherwise."""
        return self._core.plan.get("zero_point")

    # Whether TensorFlow tensors go through TensorFlow's own fake_quant ops when they compute
    # the same bits (tf profile, per tensor or per channel on the last axis): what MCT
    # Quantizers' Keras quantizers run, and what the TFLite converter understands. qi's own
    # classes run qi's op; the Keras classes of quantizers_infrastructure.mct set it.
    tf_native_fake_quant = False

    def tf_range(self) -> Optional[tuple]:
        """([min...], [max...]) per channel, as TensorFlow's fake_quant_with_min_max_vars takes
        them, for symmetric, POT and uniform quantizers (None for LUT ones): the grid's ends
        ([-t] or [0.0] to [t - t / 2^(num_bits - signed)]; the configured range for uniform),
        adjusted to hold zero by the core's tf-profile rule, as float32 values."""
        ends = self.__dict__.get("_tf_range")
        if ends is None:
            c = self._config
            if self.param_family in ("symmetric_weights", "symmetric_activation"):
                signed = bool(c.get(C.SIGNED, True))
                bits = int(c[C.NUM_BITS]) - int(signed)
                lo = [-float(t) if signed else 0.0 for t in c[C.THRESHOLD]]
                hi = [float(t) - float(t) / (2 ** bits) for t in c[C.THRESHOLD]]
            elif self.param_family in ("uniform_weights", "uniform_activation"):
                lo, hi = list(c[C.MIN_RANGE]), list(c[C.MAX_RANGE])
            else:
                return None
            ends = self.__dict__["_tf_range"] = _adjusted_range(lo, hi, int(c[C.NUM_BITS]), "tf")
        return list(ends[0]), list(ends[1])

    @property
    def threshold_np(self) -> Optional[np.ndarray]:
        """The configured thresholds as a float64 array; None for uniform quantizers."""
        threshold = self._config.get(C.THRESHOLD)
        return None if threshold is None else np.asarray(threshold, dtype=np.float64)

    @property
    def scales(self) -> Optional[np.ndarray]:
        """Same as scale (MCT Quantizers' name)."""
        return self.scale

    @property
    def zero_points(self) -> Optional[np.ndarray]:
        """The per-channel zero points as int32 (torch profile); None otherwise."""
        zp = self.zero_point
        return None if zp is None else np.asarray(zp).astype(np.int32)

    @property
    def adjusted_min_range(self) -> Optional[np.ndarray]:
        """Uniform quantizers: the per-channel min_range after zero adjustment (float32, the
        profile's rule); None otherwise."""
        return self._adjusted(0)

    @property
    def adjusted_max_range(self) -> Optional[np.ndarray]:
        """Uniform quantizers: the per-channel max_range after zero adjustment (float32, the
        profile's rule); None otherwise."""
        return self._adjusted(1)

    def _adjusted(self, index: int) -> Optional[np.ndarray]:
        own = self._core.adjusted_max_range if index else self._core.adjusted_min_range
        if own is not None or self.param_family != "uniform_activation":
            return own
        c = self._config
        ends = _adjusted_range(c[C.MIN_RANGE], c[C.MAX_RANGE], int(c[C.NUM_BITS]),
                               c.get(C.PROFILE, "torch"))
        return np.asarray(ends[index], dtype=np.float32)


# Keywords of the seed era's LUT quantizers (mct-quantizers before 1.2) -> today's names.
_SEED_KEYWORDS = {"cluster_centers": C.LUT_VALUES, "multiplier_nbits": C.LUT_VALUES_BITWIDTH}


def _seed_keywords(cls, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """kwargs with the seed-era LUT keywords renamed, for classes that take the new name."""
    if not any(k in kwargs for k in _SEED_KEYWORDS):
        return kwargs
    out = dict(kwargs)
    for old, new in _SEED_KEYWORDS.items():
        if old in out and new in cls._signature.parameters:
            if new in out:
                raise TypeError(f"{cls._class_name}: {old} is the old name of {new}; give one "
                                f"of them, not both")
            out[new] = out.pop(old)
    return out


def _adjusted_range(lo: List[float], hi: List[float], num_bits: int, profile: str) -> tuple:
    """([min...], [max...]) adjusted to hold zero on the grid by the core's rule for `profile`
    (that of its uniform weights quantizer), as float32 values."""
    adjusted = _core.make_quantizer("WeightsUniformInferableQuantizer", json.dumps({
        C.NUM_BITS: num_bits, C.MIN_RANGE: list(lo), C.MAX_RANGE: list(hi),
        C.PER_CHANNEL: len(lo) > 1, C.CHANNEL_AXIS: 0, C.PROFILE: profile}))
    return ([float(v) for v in adjusted.adjusted_min_range],
            [float(v) for v in adjusted.adjusted_max_range])


def _symmetric_activation_range(self, index: int) -> List[float]:
    """min_range ([min]) or max_range ([max]) of a symmetric or POT activation quantizer: the
    range MCT Quantizers' Keras quantizers hand TensorFlow's fake_quant (tf_range())."""
    return self.tf_range()[index]


def _from_config_of(cls, config):
    return cls.from_config(config)


def _config_property(key: str, doc: str) -> property:
    def getter(self):
        value = self._config.get(key)
        return list(value) if isinstance(value, list) else value

    getter.__doc__ = f"{key}: {doc} (read-only)."
    return property(getter)


def _make_signature(params: List[Dict[str, Any]]) -> inspect.Signature:
    """The constructor's signature from the registry's argument list (MCT's positional order):
    a required argument after an optional one can only be given by keyword."""
    out, seen_default = [], False
    for p in params:
        if p["keyword_only"]:
            continue
        if not p["required"]:
            seen_default = True
            out.append(inspect.Parameter(p["key"], inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                         default=p["default"]))
        else:
            out.append(inspect.Parameter(p["key"], inspect.Parameter.KEYWORD_ONLY if seen_default
                                         else inspect.Parameter.POSITIONAL_OR_KEYWORD))
    out.sort(key=lambda p: p.kind)  # keyword-only after positional, stable otherwise
    out += [inspect.Parameter(p["key"], inspect.Parameter.KEYWORD_ONLY,
                              default=inspect.Parameter.empty if p["required"] else p["default"])
            for p in params if p["keyword_only"]]
    return inspect.Signature(out)


def _make_class(entry: Dict[str, Any]) -> type:
    name = entry["class_name"]
    target = QuantizationTarget(entry["target"])
    method = QuantizationMethod[entry["method"]]
    keys = list(entry["config_keys"])
    signature = _make_signature(entry["params"])
    docs = {p["key"]: p["doc"] for p in entry["params"]}

    def __init__(self, *args, **kwargs):
        InferableQuantizer.__init__(self, *args, **kwargs)

    __init__.__signature__ = signature.replace(
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
        + list(signature.parameters.values()))
    __init__.__qualname__ = f"{name}.__init__"
    __init__.__doc__ = (f"Builds a {name}: the arguments go to the C++ core as a JSON config "
                        f"and are validated there (ValueError with the core's message).")

    args_doc = "\n".join(f"    {k}: {docs[k]}" for k in signature.parameters)
    doc = (f"Inferable {target.value.lower()} quantizer, QuantizationMethod.{method.name} "
           f"(C++ qi::{name}).\n\n{entry['doc']}\n\nArgs:\n{args_doc}\n\n"
           f"Bad arguments raise ValueError with the C++ core's message.")
    namespace = {
        "__init__": __init__,
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": doc,
        "_class_name": name,
        "_config_keys": tuple(keys),
        "_signature": signature,
        "onnx_op": entry["onnx_op"],
        "param_family": entry["family"],
    }
    for k in keys:
        # A FLOAT quantizer's scale is its configured argument (the affine classes' `scale` is
        # their plan's step, which they do not take as an argument).
        if k not in namespace and (not hasattr(InferableQuantizer, k) or k == C.SCALE):
            namespace[k] = _config_property(k, docs[k])
    if target == QuantizationTarget.Activation and C.THRESHOLD in keys and \
            entry["family"] == "symmetric_activation":
        for i, key in enumerate((C.MIN_RANGE, C.MAX_RANGE)):
            namespace[key] = property(
                lambda self, i=i: _symmetric_activation_range(self, i),
                doc=f"{key}: the grid's {'lower' if i == 0 else 'upper'} end as a one-element "
                    f"list (what TensorFlow's fake_quant takes), derived from the threshold.")
    cls = type(name, (InferableQuantizer,), namespace)
    return mark_quantizer(target, [method], QuantizerID.INFERABLE)(cls)


_REGISTRY = _core.inferable_quantizers()
INFERABLE_QUANTIZER_CLASSES: Dict[str, type] = {}
for _entry in _REGISTRY:
    INFERABLE_QUANTIZER_CLASSES[_entry["class_name"]] = globals()[_entry["class_name"]] = \
        _make_class(_entry)
del _entry

__all__ = ["InferableQuantizer", "INFERABLE_QUANTIZER_CLASSES", "get_inferable_quantizer_class",
           "quantizer_from_json", "from_core_quantizer",
           "framework_classes"] + list(INFERABLE_QUANTIZER_CLASSES)


def get_inferable_quantizer_class(quant_target: QuantizationTarget,
                                  quant_method: QuantizationMethod,
                                  quantizer_base_class: Optional[type] = None) -> type:
    """The inferable quantizer class registered for (quant_target, quant_method), as
    mct-quantizers looks it up; ValueError (the core's message) when none is, e.g.
    (Activation, LUT_SYM_QUANTIZER).
    With quantizer_base_class: that class when it derives from the base, else the one subclass
    of the base marked for (quant_target, quant_method) as inferable (MCT's search, which finds
    framework classes such as quantizers_infrastructure.mct's); ValueError unless exactly one
    is."""
    if not isinstance(quant_target, QuantizationTarget):
        raise ValueError(f"get_inferable_quantizer_class: quant_target must be a "
                         f"QuantizationTarget, got {quant_target!r}")
    if not isinstance(quant_method, QuantizationMethod):
        raise ValueError(f"get_inferable_quantizer_class: quant_method must be a "
                         f"QuantizationMethod, got {quant_method!r}")
    cls = INFERABLE_QUANTIZER_CLASSES[_core.inferable_class_name(quant_target.value,
                                                                 quant_method.name)]
    if quantizer_base_class is None or issubclass(cls, quantizer_base_class):
        return cls
    found = [c for c in get_all_subclasses(quantizer_base_class)
             if getattr(c, C.QUANTIZATION_TARGET, None) == quant_target
             and quant_method in (getattr(c, C.QUANTIZATION_METHOD, None) or [])
             and getattr(c, C.QUANTIZER_ID, None) is QuantizerID.INFERABLE]
    if len(found) != 1:
        raise ValueError(f"get_inferable_quantizer_class: found {len(found)} quantizers deriving "
                         f"from {quantizer_base_class.__name__} for target {quant_target.value} "
                         f"and method {quant_method.name} "
                         f"({', '.join(sorted(c.__name__ for c in found)) or 'none'}); expected "
                         f"exactly one")
    return found[0]


def quantizer_from_json(text: str) -> InferableQuantizer:
    """Rebuilds a quantizer of the right class from to_json() text."""
    return from_core_quantizer(_core.quantizer_from_json(text))


def from_core_quantizer(core_quantizer) -> InferableQuantizer:
    """The Python class of a core inferable quantizer (a quantizers_infrastructure._core
    _Quantizer, e.g. a trainable quantizer's conversion)."""
    cls = INFERABLE_QUANTIZER_CLASSES[core_quantizer.class_name]
    obj = cls.__new__(cls)
    obj._set_core(core_quantizer)
    return obj


def framework_classes(base: type, module: str, profile: Optional[str] = None,
                      tf_native_fake_quant: bool = False) -> Dict[str, type]:
    """One subclass of every registered class that also derives from `base` (a framework's
    quantizer base, such as MCT Quantizers' BaseKerasInferableQuantizer), defined in `module`,
    marked as its parent (so MCT's get_inferable_quantizer_class(target, method, base) finds
    exactly one per pair) and, when `profile` is given, taking that numeric profile by default;
    tf_native_fake_quant as the class attribute. {class name: class}."""
    out = {}
    for name, parent in INFERABLE_QUANTIZER_CLASSES.items():
        namespace = {"__module__": module, "__qualname__": name, "__doc__": parent.__doc__,
                     "tf_native_fake_quant": tf_native_fake_quant}
        if profile is not None and C.PROFILE in parent._signature.parameters:
            params = [p.replace(default=profile) if p.name == C.PROFILE else p
                      for p in parent._signature.parameters.values()]
            namespace["_signature"] = parent._signature.replace(parameters=params)
        if tf_native_fake_quant and parent.param_family in ("uniform_weights",
                                                            "uniform_activation"):
            # What TensorFlow's op gets, as MCT Quantizers' Keras quantizers report it.
            for i, key in enumerate((C.MIN_RANGE, C.MAX_RANGE)):
                namespace[key] = property(
                    lambda self, i=i: self.tf_range()[i],
                    doc=f"{key}: the configured range adjusted to hold zero (tf_range()), per "
                        f"channel.")
        cls = type(name, (parent, base), namespace)
        out[name] = mark_quantizer(parent.quantization_target, parent.quantization_method,
                                   parent.identifier)(cls)
    return out
