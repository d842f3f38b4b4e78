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
    _RESOLVED_HANDLERS, BaseInferableQuantizer, find_input_handler, mark_quantizer,
    register_input_type, supported_input_types)
from quantizers_infrastructure.common.enums import (QuantizationMethod, QuantizationTarget,
                                                    QuantizerID)

# Keys that hold one value per channel. A scalar given for one of them means [scalar].
_LIST_KEYS = (C.THRESHOLD, C.MIN_RANGE, C.MAX_RANGE, C.LUT_VALUES)

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

    def __init__(self, *args, **kwargs):
        cls = type(self)
        bound = cls._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        config = {k: _config_value(cls._class_name, k, v) for k, v in bound.arguments.items()}
        self._set_core(_core.make_quantizer(cls._class_name, json.dumps(config, allow_nan=False)))

    def _set_core(self, core_quantizer) -> None:
        super().__init__()
        self._core = core_quantizer
        self._json = core_quantizer.to_json()  # immutable: serialized once
        self._config = json.loads(core_quantizer.get_config())
        # What the kernels take besides the plan: the axis (per-channel quantizers) and rank.
        self.kernel_channel_axis = (self._config.get("channel_axis")
                                    if self._config.get("per_channel") else None)
        self.kernel_input_rank = self._config.get("input_rank")

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
        """The constructor arguments as a dict (the C++ config: keys of REFERENCE.md, the
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
        LUT quantizers."""
        return self._core.plan.get("scale")

    @property
    def zero_point(self) -> Optional[np.ndarray]:
        """Per-channel zero point (float32 holding integers) of the torch profile; None
        otherwise."""
        return self._core.plan.get("zero_point")

    @property
    def adjusted_min_range(self) -> Optional[np.ndarray]:
        """WeightsUniform: the per-channel min_range after zero adjustment; None otherwise."""
        return self._core.adjusted_min_range

    @property
    def adjusted_max_range(self) -> Optional[np.ndarray]:
        """WeightsUniform: the per-channel max_range after zero adjustment; None otherwise."""
        return self._core.adjusted_max_range


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
        if k not in namespace and not hasattr(InferableQuantizer, k):
            namespace[k] = _config_property(k, docs[k])
    cls = type(name, (InferableQuantizer,), namespace)
    return mark_quantizer(target, [method], QuantizerID.INFERABLE)(cls)


_REGISTRY = _core.inferable_quantizers()
INFERABLE_QUANTIZER_CLASSES: Dict[str, type] = {}
for _entry in _REGISTRY:
    INFERABLE_QUANTIZER_CLASSES[_entry["class_name"]] = globals()[_entry["class_name"]] = \
        _make_class(_entry)
del _entry

__all__ = ["InferableQuantizer", "INFERABLE_QUANTIZER_CLASSES", "get_inferable_quantizer_class",
           "quantizer_from_json", "from_core_quantizer"] + list(INFERABLE_QUANTIZER_CLASSES)


def get_inferable_quantizer_class(quant_target: QuantizationTarget,
                                  quant_method: QuantizationMethod,
                                  quantizer_base_class: Optional[type] = None) -> type:
    """The inferable quantizer class registered for (quant_target, quant_method) (REFERENCE.md
    1.4); ValueError (the core's message) when none is, e.g. (Activation, LUT_SYM_QUANTIZER).
    quantizer_base_class, when given, must be a base of the class found."""
    if not isinstance(quant_target, QuantizationTarget):
        raise ValueError(f"get_inferable_quantizer_class: quant_target must be a "
                         f"QuantizationTarget, got {quant_target!r}")
    if not isinstance(quant_method, QuantizationMethod):
        raise ValueError(f"get_inferable_quantizer_class: quant_method must be a "
                         f"QuantizationMethod, got {quant_method!r}")
    cls = INFERABLE_QUANTIZER_CLASSES[_core.inferable_class_name(quant_target.value,
                                                                 quant_method.name)]
    if quantizer_base_class is not None and not issubclass(cls, quantizer_base_class):
        raise ValueError(f"get_inferable_quantizer_class: {cls.__name__} does not inherit from "
                         f"{quantizer_base_class.__name__}")
    return cls


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
