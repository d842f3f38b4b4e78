# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Configurations of trainable quantizers (REFERENCE.md 7.1): TrainableQuantizerWeightsConfig,
TrainableQuantizerActivationConfig and the mixed-precision TrainableQuantizerCandidateConfig.

get_config() returns the JSON object of the C++ configs (src/core/configs.cc) key for key: the
method by name, parameter arrays as {"shape", "values"}, "is_weights"/"is_activations" and
"qi_version"; from_config() reads that, MCT's integer method values and nested lists. Rules and
messages are those of the core; a violation raises ValueError."""

import math
from numbers import Integral, Real
from typing import Any, Dict, List, Optional

import numpy as np

from quantizers_infrastructure.common.constants import QI_VERSION_KEY
from quantizers_infrastructure.common.enums import QuantizationMethod

MIN_THRESHOLD = 2.0 ** -16  # MCT's MIN_THRESHOLD
_MIN_BITS, _MAX_BITS = 1, 32
_WEIGHTS = "TrainableQuantizerWeightsConfig"
_ACTIVATION = "TrainableQuantizerActivationConfig"


def _version() -> str:
    from quantizers_infrastructure import _core
    return _core.kVersion


def _method(value: Any, name: str, what: str) -> QuantizationMethod:
    """A QuantizationMethod from the enum, its name or MCT's integer value."""
    if isinstance(value, QuantizationMethod):
        return value
    if isinstance(value, str):
        try:
            return QuantizationMethod[value]
        except KeyError:
            pass
    elif isinstance(value, Integral) and not isinstance(value, bool):
        try:
            return QuantizationMethod(int(value))
        except ValueError:
            pass
    raise ValueError(f"{what}: \"{name}\" must be a QuantizationMethod, a method name or MCT's "
                     f"integer value, got {value!r}")


def _int(value: Any, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{what}: {name} must be an integer, got {type(value).__name__} "
                         f"{value!r}")
    return int(value)


def _bool(value: Any, name: str, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{what}: {name} must be a boolean, got {type(value).__name__} "
                         f"{value!r}")
    return bool(value)


def _check_n_bits(n_bits: int, name: str, what: str) -> None:
    if not _MIN_BITS <= n_bits <= _MAX_BITS:
        raise ValueError(f"{what}: {name} must be in [{_MIN_BITS}, {_MAX_BITS}], got {n_bits}")


def _check_min_threshold(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{what}: min_threshold must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{what}: min_threshold must be finite and >= 0, got {value}")
    return value


def _param_to_json(value: Any, entry: str, what: str) -> Any:
    """One quantization-param value as the core writes it."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, Real) and not isinstance(value, np.ndarray):
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{what}: {entry} must be finite, got {v}")
        return v
    if hasattr(value, "detach"):  # torch tensors
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {entry} must be a boolean, a number or an array of numbers, "
                         f"got {type(value).__name__} {value!r}") from None
    for i, v in enumerate(a.reshape(-1)):
        if not math.isfinite(v):
            raise ValueError(f"{what}: {entry}.values[{i}] must be finite, got {v}")
    return {"shape": list(a.shape), "values": a.reshape(-1).tolist()}


def _param_from_json(value: Any, entry: str, what: str) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, list):
        try:
            return np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: {entry} must be a rectangular list of numbers") from None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"shape", "values"})
        if unknown or "shape" not in value or "values" not in value:
            raise ValueError(f"{what}: {entry} must be a boolean, a number, a list of numbers or "
                             f"{{\"shape\", \"values\"}}, got {value!r}")
        values = np.asarray(value["values"], dtype=np.float64)
        shape = [int(d) for d in value["shape"]]
        if int(np.prod(shape, dtype=np.int64)) != values.size:
            raise ValueError(f"{what}: {entry} must hold product(shape) values, got "
                             f"{values.size} values for shape {shape}")
        return values.reshape(shape)
    raise ValueError(f"{what}: {entry} must be a boolean, a number, a list of numbers or "
                     f"{{\"shape\", \"values\"}}, got {type(value).__name__} {value!r}")


def _params_to_json(params: Dict[str, Any], name: str, what: str) -> Dict[str, Any]:
    if not isinstance(params, dict):
        raise ValueError(f"{what}: {name} must be a dict, got {type(params).__name__}")
    return {str(k): _param_to_json(v, f"{name}[\"{k}\"]", what) for k, v in params.items()}


def _params_from_json(params: Any, name: str, what: str) -> Dict[str, Any]:
    if not isinstance(params, dict):
        raise ValueError(f"{what}: \"{name}\" must be a JSON object, got {params!r}")
    return {k: _param_from_json(v, f"{name}[\"{k}\"]", what) for k, v in params.items()}


class TrainableQuantizerCandidateConfig:
    """A mixed-precision candidate: bit width and quantization params."""

    def __init__(self, n_bits: int, quantization_params: Optional[Dict[str, Any]] = None):
        self.n_bits = n_bits
        self.quantization_params = {} if quantization_params is None else quantization_params

    def _to_json(self, entry: str, what: str) -> Dict[str, Any]:
        n_bits = _int(self.n_bits, entry + ".n_bits", what)
        _check_n_bits(n_bits, entry + ".n_bits", what)
        return {"n_bits": n_bits,
                "quantization_params": _params_to_json(self.quantization_params,
                                                       entry + ".quantization_params", what)}


def _candidates_to_json(cands, name: str, what: str):
    if cands is None:
        return None
    out = []
    for i, c in enumerate(cands):
        if isinstance(c, dict):
            c = TrainableQuantizerCandidateConfig(c.get("n_bits"), c.get("quantization_params"))
        if not isinstance(c, TrainableQuantizerCandidateConfig):
            raise ValueError(f"{what}: {name}[{i}] must be a TrainableQuantizerCandidateConfig, "
                             f"got {type(c).__name__}")
        out.append(c._to_json(f"{name}[{i}]", what))
    return out


def _candidates_from_json(cands, name: str, what: str):
    if cands is None:
        return None
    if not isinstance(cands, list):
        raise ValueError(f"{what}: \"{name}\" must be a list or null, got {cands!r}")
    out = []
    for i, c in enumerate(cands):
        if not isinstance(c, dict) or set(c) != {"n_bits", "quantization_params"}:
            raise ValueError(f"{what}: {name}[{i}] must be an object with \"n_bits\" and "
                             f"\"quantization_params\", got {c!r}")
        out.append(TrainableQuantizerCandidateConfig(
            _int(c["n_bits"], f"{name}[{i}].n_bits", what),
            _params_from_json(c["quantization_params"], f"{name}[{i}].quantization_params", what)))
    return out


def _open(config: Any, is_weights: bool, keys: List[str], what: str) -> Dict[str, Any]:
    if isinstance(config, str):
        import json
        try:
            config = json.loads(config)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what}: malformed JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{what}: config must be a JSON object, got {type(config).__name__}")
    kind = "a weights" if is_weights else "an activation"
    for flag, expected in (("is_weights", is_weights), ("is_activations", not is_weights)):
        if flag not in config:
            raise ValueError(f"{what}: missing key \"{flag}\"")
        value = _bool(config[flag], flag, what)
        if value != expected:
            raise ValueError(f"{what}: \"{flag}\" must be {'true' if expected else 'false'} in "
                             f"{kind} quantization config, got {'true' if value else 'false'}")
    unknown = sorted(set(config) - set(keys) - {"is_weights", "is_activations", QI_VERSION_KEY})
    if unknown:
        raise ValueError(f"{what}: unknown key \"{unknown[0]}\"")
    for k in keys:
        if k not in config and not k.endswith("_bits_candidates"):
            raise ValueError(f"{what}: missing key \"{k}\"")
    return config


class _ConfigBase:
    _what = ""

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.get_config() == other.get_config()

    def __repr__(self) -> str:
        cfg = self.get_config()
        cfg.pop(QI_VERSION_KEY, None)
        return f"{type(self).__name__}({cfg})"


class TrainableQuantizerWeightsConfig(_ConfigBase):
    """How a weights trainable quantizer starts (REFERENCE.md 7.1). weights_quantization_params
    holds MCT's dict: {"threshold": array} (symmetric/POT; per-channel values may be shaped for
    broadcasting, e.g. (C, 1, 1, 1)) or {"range_min": ..., "range_max": ...} (uniform).
    weights_quantization_candidates is stored as `weights_bits_candidates` (as MCT does)."""

    _what = _WEIGHTS
    _keys = ["weights_quantization_method", "weights_n_bits", "weights_quantization_params",
             "enable_weights_quantization", "weights_channels_axis",
             "weights_per_channel_threshold", "min_threshold", "weights_bits_candidates"]

    def __init__(self, weights_quantization_method: QuantizationMethod = QuantizationMethod.SYMMETRIC,
                 weights_n_bits: int = 8,
                 weights_quantization_params: Optional[Dict[str, Any]] = None,
                 enable_weights_quantization: bool = True,
                 weights_channels_axis: int = 0,
                 weights_per_channel_threshold: bool = True,
                 min_threshold: float = MIN_THRESHOLD,
                 weights_quantization_candidates: Optional[list] = None):
        what = self._what
        self.weights_quantization_method = _method(weights_quantization_method,
                                                   "weights_quantization_method", what)
        self.weights_n_bits = _int(weights_n_bits, "weights_n_bits", what)
        self.weights_quantization_params = ({} if weights_quantization_params is None
                                            else weights_quantization_params)
        self.enable_weights_quantization = _bool(enable_weights_quantization,
                                                 "enable_weights_quantization", what)
        self.weights_channels_axis = _int(weights_channels_axis, "weights_channels_axis", what)
        self.weights_per_channel_threshold = _bool(weights_per_channel_threshold,
                                                   "weights_per_channel_threshold", what)
        self.min_threshold = min_threshold
        self.weights_bits_candidates = weights_quantization_candidates
        self.validate()

    def validate(self) -> None:
        """Checks the core's rules (ValueError with the core's message)."""
        self.get_config()

    def get_config(self) -> Dict[str, Any]:
        """The core's JSON object (src/core/configs.cc) as a dict."""
        what = self._what
        _check_n_bits(self.weights_n_bits, "weights_n_bits", what)
        min_threshold = _check_min_threshold(self.min_threshold, what)
        return {
            "weights_quantization_method": self.weights_quantization_method.name,
            "weights_n_bits": self.weights_n_bits,
            "weights_quantization_params": _params_to_json(self.weights_quantization_params,
                                                           "weights_quantization_params", what),
            "enable_weights_quantization": self.enable_weights_quantization,
            "weights_channels_axis": self.weights_channels_axis,
            "weights_per_channel_threshold": self.weights_per_channel_threshold,
            "min_threshold": min_threshold,
            "weights_bits_candidates": _candidates_to_json(self.weights_bits_candidates,
                                                           "weights_bits_candidates", what),
            "is_weights": True,
            "is_activations": False,
            QI_VERSION_KEY: _version(),
        }

    @classmethod
    def from_config(cls, config) -> "TrainableQuantizerWeightsConfig":
        """Rebuilds a config from get_config() output (a dict or JSON text); the method may be
        MCT's integer value and parameter arrays nested lists."""
        what = cls._what
        c = _open(config, True, cls._keys, what)
        return cls(
            _method(c["weights_quantization_method"], "weights_quantization_method", what),
            c["weights_n_bits"],
            _params_from_json(c["weights_quantization_params"], "weights_quantization_params",
                              what),
            c["enable_weights_quantization"], c["weights_channels_axis"],
            c["weights_per_channel_threshold"], c["min_threshold"],
            _candidates_from_json(c.get("weights_bits_candidates"), "weights_bits_candidates",
                                  what))


class TrainableQuantizerActivationConfig(_ConfigBase):
    """How an activation trainable quantizer starts (REFERENCE.md 7.1):
    activation_quantization_params holds {"threshold": t, "is_signed": bool} (symmetric/POT) or
    {"range_min": a, "range_max": b} (uniform). activation_quantization_candidates is stored as
    `activation_bits_candidates`."""

    _what = _ACTIVATION
    _keys = ["activation_quantization_method", "activation_n_bits",
             "activation_quantization_params", "enable_activation_quantization", "min_threshold",
             "activation_bits_candidates"]

    def __init__(self,
                 activation_quantization_method: QuantizationMethod = QuantizationMethod.SYMMETRIC,
                 activation_n_bits: int = 8,
                 activation_quantization_params: Optional[Dict[str, Any]] = None,
                 enable_activation_quantization: bool = True,
                 min_threshold: float = MIN_THRESHOLD,
                 activation_quantization_candidates: Optional[list] = None):
        what = self._what
        self.activation_quantization_method = _method(activation_quantization_method,
                                                      "activation_quantization_method", what)
        self.activation_n_bits = _int(activation_n_bits, "activation_n_bits", what)
        self.activation_quantization_params = ({} if activation_quantization_params is None
                                               else activation_quantization_params)
        self.enable_activation_quantization = _bool(enable_activation_quantization,
                                                    "enable_activation_quantization", what)
        self.min_threshold = min_threshold
        self.activation_bits_candidates = activation_quantization_candidates
        self.validate()

    def validate(self) -> None:
        """Checks the core's rules (ValueError with the core's message)."""
        self.get_config()

    def get_config(self) -> Dict[str, Any]:
        """The core's JSON object (src/core/configs.cc) as a dict."""
        what = self._what
        _check_n_bits(self.activation_n_bits, "activation_n_bits", what)
        min_threshold = _check_min_threshold(self.min_threshold, what)
        return {
            "activation_quantization_method": self.activation_quantization_method.name,
            "activation_n_bits": self.activation_n_bits,
            "activation_quantization_params": _params_to_json(
                self.activation_quantization_params, "activation_quantization_params", what),
            "enable_activation_quantization": self.enable_activation_quantization,
            "min_threshold": min_threshold,
            "activation_bits_candidates": _candidates_to_json(self.activation_bits_candidates,
                                                              "activation_bits_candidates", what),
            "is_weights": False,
            "is_activations": True,
            QI_VERSION_KEY: _version(),
        }

    @classmethod
    def from_config(cls, config) -> "TrainableQuantizerActivationConfig":
        """Rebuilds a config from get_config() output (a dict or JSON text)."""
        what = cls._what
        c = _open(config, False, cls._keys, what)
        return cls(
            _method(c["activation_quantization_method"], "activation_quantization_method", what),
            c["activation_n_bits"],
            _params_from_json(c["activation_quantization_params"],
                              "activation_quantization_params", what),
            c["enable_activation_quantization"], c["min_threshold"],
            _candidates_from_json(c.get("activation_bits_candidates"),
                                  "activation_bits_candidates", what))


__all__ = ["TrainableQuantizerWeightsConfig", "TrainableQuantizerActivationConfig",
           "TrainableQuantizerCandidateConfig", "MIN_THRESHOLD"]
