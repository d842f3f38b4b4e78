# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Configurations of trainable quantizers: TrainableQuantizerWeightsConfig,
TrainableQuantizerActivationConfig and the mixed-precision TrainableQuantizerCandidateConfig.

They are the C++ core's configs: the objects keep MCT's attributes, and every rule, message and
JSON form comes from the core (quantizers_infrastructure._core.config_json / config_fields). A
violation raises ValueError with the core's message."""

import json
from typing import Any, Dict, Optional

from quantizers_infrastructure import _core
from quantizers_infrastructure.common.constants import QI_VERSION_KEY
from quantizers_infrastructure.common.enums import QuantizationMethod

MIN_THRESHOLD = _core.kMinThreshold  # MCT's MIN_THRESHOLD, 2^-16


class TrainableQuantizerCandidateConfig:
    """A mixed-precision candidate: bit width and quantization params."""

    def __init__(self, n_bits: int, quantization_params: Optional[Dict[str, Any]] = None):
        self.n_bits = n_bits
        self.quantization_params = {} if quantization_params is None else quantization_params

    def __eq__(self, other) -> bool:
        return (type(other) is type(self) and self.n_bits == other.n_bits
                and _same_params(self.quantization_params, other.quantization_params))

    def __repr__(self) -> str:
        return f"TrainableQuantizerCandidateConfig({self.n_bits}, {self.quantization_params!r})"


def _same_params(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    return _params_json(a) == _params_json(b)


def _params_json(params: Dict[str, Any]) -> Any:
    """A params dict in the core's JSON form (validated)."""
    fields = {"activation_quantization_method": QuantizationMethod.SYMMETRIC,
              "activation_n_bits": 8, "activation_quantization_params": params,
              "enable_activation_quantization": True, "min_threshold": 0.0,
              "activation_bits_candidates": None}
    return json.loads(_core.config_json(False, fields))["activation_quantization_params"]


class _TrainableConfig:
    """Shared by both configs: fields in, the core's validation, JSON and equality."""

    _weights = True
    _candidates = ""  # the attribute that stores the candidates (MCT's name)

    def _fields(self) -> Dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def _set(self, fields: Dict[str, Any]) -> None:
        for key, value in fields.items():
            setattr(self, key, value)
        self.validate()
        method = [k for k in fields if k.endswith("_quantization_method")][0]
        setattr(self, method, QuantizationMethod[json.loads(self._json())[method]])

    def _json(self) -> str:
        return _core.config_json(self._weights, self._fields())

    def validate(self) -> None:
        """Checks the core's rules (ValueError with the core's message)."""
        self._json()

    def get_config(self) -> Dict[str, Any]:
        """The core's JSON object as a dict: every field by name (the method by name, parameter
        arrays as {"shape", "values"}), "is_weights"/"is_activations" and "qi_version"."""
        return json.loads(self._json())

    @classmethod
    def from_config(cls, config) -> "_TrainableConfig":
        """Rebuilds a config from get_config() output (a dict or JSON text); MCT's integer
        method values and nested-list parameter arrays are read too."""
        text = config if isinstance(config, str) else json.dumps(config)
        fields = _core.config_fields(cls._weights, text)
        cands = fields.pop(cls._candidates)
        obj = cls.__new__(cls)
        obj._set({**fields, cls._candidates: None if cands is None else [
            TrainableQuantizerCandidateConfig(c["n_bits"], c["quantization_params"])
            for c in cands]})
        return obj

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        a, b = self.get_config(), other.get_config()
        a.pop(QI_VERSION_KEY, None)
        b.pop(QI_VERSION_KEY, None)
        return a == b

    def __repr__(self) -> str:
        cfg = self.get_config()
        cfg.pop(QI_VERSION_KEY, None)
        return f"{type(self).__name__}({cfg})"

    def __reduce__(self):
        # Pickled as its JSON text: loadable with torch.load(weights_only=True).
        return (config_from_json, (type(self), self._json()))


def config_from_json(cls, text: str) -> "_TrainableConfig":
    """A config of class `cls` from its JSON text (how configs unpickle)."""
    return cls.from_config(text)


class TrainableQuantizerWeightsConfig(_TrainableConfig):
    """How a weights trainable quantizer starts. weights_quantization_params holds MCT's dict:
    {"threshold": array} (symmetric/POT; per-channel values may be shaped for broadcasting, e.g.
    (C, 1, 1, 1)) or {"range_min": ..., "range_max": ...} (uniform).
    weights_quantization_candidates is stored as `weights_bits_candidates` (as MCT does)."""

    _weights = True
    _candidates = "weights_bits_candidates"

    def __init__(self, weights_quantization_method: QuantizationMethod = QuantizationMethod.SYMMETRIC,
                 weights_n_bits: int = 8,
                 weights_quantization_params: Optional[Dict[str, Any]] = None,
                 enable_weights_quantization: bool = True,
                 weights_channels_axis: int = 0,
                 weights_per_channel_threshold: bool = True,
                 min_threshold: float = MIN_THRESHOLD,
                 weights_quantization_candidates: Optional[list] = None):
        self._set(dict(
            weights_quantization_method=weights_quantization_method,
            weights_n_bits=weights_n_bits,
            weights_quantization_params=({} if weights_quantization_params is None
                                         else weights_quantization_params),
            enable_weights_quantization=enable_weights_quantization,
            weights_channels_axis=weights_channels_axis,
            weights_per_channel_threshold=weights_per_channel_threshold,
            min_threshold=min_threshold,
            weights_bits_candidates=weights_quantization_candidates))


class TrainableQuantizerActivationConfig(_TrainableConfig):
    """How an activation trainable quantizer starts: activation_quantization_params holds
    {"threshold": t, "is_signed": bool} (symmetric/POT) or {"range_min": a, "range_max": b}
    (uniform). activation_quantization_candidates is stored as `activation_bits_candidates`."""

    _weights = False
    _candidates = "activation_bits_candidates"

    def __init__(self,
                 activation_quantization_method: QuantizationMethod = QuantizationMethod.SYMMETRIC,
                 activation_n_bits: int = 8,
                 activation_quantization_params: Optional[Dict[str, Any]] = None,
                 enable_activation_quantization: bool = True,
                 min_threshold: float = MIN_THRESHOLD,
                 activation_quantization_candidates: Optional[list] = None):
        self._set(dict(
            activation_quantization_method=activation_quantization_method,
            activation_n_bits=activation_n_bits,
            activation_quantization_params=({} if activation_quantization_params is None
                                            else activation_quantization_params),
            enable_activation_quantization=enable_activation_quantization,
            min_threshold=min_threshold,
            activation_bits_candidates=activation_quantization_candidates))


__all__ = ["TrainableQuantizerWeightsConfig", "TrainableQuantizerActivationConfig",
           "TrainableQuantizerCandidateConfig", "MIN_THRESHOLD", "config_from_json"]
