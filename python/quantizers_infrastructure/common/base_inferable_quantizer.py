# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""BaseInferableQuantizer, mark_quantizer, and the table that routes `quantizer(x)` to the code
for x's type (numpy here; the torch and TensorFlow front ends register their tensor types)."""

import importlib
import inspect
from typing import Any, Callable, Dict, List, Optional

from quantizers_infrastructure.common.enums import QuantizationMethod, QuantizationTarget


def mark_quantizer(quantization_target: Optional[QuantizationTarget] = None,
                   quantization_method: Optional[List[QuantizationMethod]] = None,
                   identifier: Any = None):
    """Class decorator that sets the static properties `quantization_target`,
    `quantization_method` (a list of QuantizationMethod) and `identifier` used by the lookups,
    and returns the class unchanged."""

    def mark(quantizer_class):
        quantizer_class.quantization_target = quantization_target
        quantizer_class.quantization_method = quantization_method
        quantizer_class.identifier = identifier
        return quantizer_class

    return mark


def get_all_subclasses(cls: type) -> set:
    """Every subclass of `cls`, recursively (a set; MCT's helper for the quantizer
    lookups)."""
    out = set()
    for sub in cls.__subclasses__():
        out.add(sub)
        out |= get_all_subclasses(sub)
    return out


class BaseInferableQuantizer:
    """Base of every quantizer that runs inference with fixed parameters. Subclasses are marked
    with mark_quantizer and implement `__call__(inputs)`, which returns the fake-quantized
    inputs (same type, shape and dtype)."""

    quantization_target = None
    quantization_method = None
    identifier = None

    def __init__(self):
        pass

    def initialize_quantization(self, tensor_shape: Any, name: str, layer: Any) -> Dict[Any, Any]:
        """Returns the variables a wrapper must create on `layer` for this quantizer; inferable
        quantizers hold all their parameters themselves, so the dict is empty."""
        return {}

    def __call__(self, inputs):
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")


def is_quantizer(obj: Any) -> bool:
    """A BaseInferableQuantizer, or an object that follows MCT Quantizers' quantizer protocol
    without deriving from it (callable, with initialize_quantization; MCT wraps its quantizers
    in such objects): what wrappers and holders accept."""
    return isinstance(obj, BaseInferableQuantizer) or (
        callable(obj) and callable(getattr(obj, "initialize_quantization", None)))


QUANTIZER_KINDS = ("a BaseInferableQuantizer (or an object with initialize_quantization and "
                   "__call__)")


# Quantizer class -> whether its __call__ has a `training` parameter.
_TAKES_TRAINING: Dict[type, bool] = {}


def call_takes_training(quantizer: Any) -> bool:
    """Whether quantizer.__call__ has a `training` parameter (cached per class): MCT Quantizers'
    rule for which quantizers a wrapper passes its training mode to."""
    cls = type(quantizer)
    known = _TAKES_TRAINING.get(cls)
    if known is None:
        try:
            known = "training" in inspect.signature(quantizer.__call__).parameters
        except (TypeError, ValueError):
            known = False
        _TAKES_TRAINING[cls] = known
    return known


# ---- input-type dispatch --------------------------------------------------------------------

# Input type -> handler(quantizer, inputs) returning the quantized inputs.
_INPUT_HANDLERS: Dict[type, Callable[[Any, Any], Any]] = {}
# Top-level module of an input type (e.g. "torch") -> module that registers its handlers when
# imported. Lets `import quantizers_infrastructure` stay free of torch and TensorFlow: a front end
# is imported the first time a quantizer sees one of its tensors.
_LAZY_FRONTENDS: Dict[str, str] = {}


# Exact input type -> its resolved handler (what find_input_handler found), so that a call costs
# one dict lookup; cleared whenever a handler is registered.
_RESOLVED_HANDLERS: Dict[type, Callable[[Any, Any], Any]] = {}


def register_input_type(input_type: type, handler: Callable[[Any, Any], Any]) -> None:
    """Makes `quantizer(x)` return `handler(quantizer, x)` for instances of `input_type` and of
    its subclasses (the most derived registered base wins)."""
    _INPUT_HANDLERS[input_type] = handler
    _RESOLVED_HANDLERS.clear()


def register_lazy_frontend(top_module: str, frontend_module: str) -> None:
    """Imports `frontend_module` (which calls register_input_type) the first time a quantizer is
    called with an object whose type lives in the package `top_module`, e.g. ("torch",
    "quantizers_infrastructure.pytorch")."""
    _LAZY_FRONTENDS[top_module] = frontend_module


def find_input_handler(input_type: type) -> Optional[Callable[[Any, Any], Any]]:
    """The handler registered for `input_type` or its nearest registered base, importing a lazy
    front end if one is registered for the type's package; None when there is none."""
    handler = _RESOLVED_HANDLERS.get(input_type)
    if handler is not None:
        return handler
    for attempt in range(2):
        for base in input_type.__mro__:
            handler = _INPUT_HANDLERS.get(base)
            if handler is not None:
                _RESOLVED_HANDLERS[input_type] = handler
                return handler
        if attempt == 0:
            frontend = _LAZY_FRONTENDS.get(input_type.__module__.split(".")[0])
            if frontend is None:
                return None
            importlib.import_module(frontend)
    return None


def supported_input_types() -> List[str]:
    """Names of the input types quantizers accept now (registered handlers and lazy front ends)."""
    names = [f"{t.__module__}.{t.__qualname__}" for t in _INPUT_HANDLERS]
    names += [f"{m} tensors" for m in _LAZY_FRONTENDS]
    return names
