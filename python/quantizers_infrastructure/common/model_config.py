# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Whole-model quantization configs, shared by every front end: named presets, per-layer overrides
by name pattern or type, skip lists, one JSON form.

The schema, its rules and messages, the presets and which layer gets what are the C++ core's
(qi::ModelQuantizationConfig); this class only carries it:

    cfg = ModelQuantizationConfig("w8a8", skip=["fc"],
                                  overrides=[{"type": "Linear", "weights": {"n_bits": 4}}])
    cfg.resolve("layer1.0.conv1", "Conv2d")   # {"skipped", "weights", "activations"}
    ModelQuantizationConfig.from_json(cfg.to_json()) == cfg

Every bad preset, key or value raises ValueError with the core's message."""

import json
from typing import Any, Dict, List, Optional, Union

from quantizers_infrastructure import _core

PRESETS = tuple(_core.ModelQuantizationConfig.preset_names())


class ModelQuantizationConfig:
    """A whole-model quantization config.

    Args:
      preset: a preset name ("w8a8", "w4a8_lsq", "w8_weight_only"), or None (nothing is
        quantized unless the keywords say so).
      **changes: the config's JSON keys, applied over the preset: weights / activations (a
        partial spec dict changing the preset's, or None to quantize none), activation_ops,
        fold_batch_norm, num_bins, overrides, skip.
    A spec dict's keys: method ("SYMMETRIC", "POWER_OF_TWO", "UNIFORM"), n_bits, per_channel,
    calibration ("minmax", "percentile", "mse", "kl"), percentile, num_candidates, training
    (None, "STE" or "LSQ")."""

    def __init__(self, preset: Optional[str] = None, **changes: Any):
        document = dict(changes)
        if preset is not None:
            document["preset"] = preset
        self._core = _core.ModelQuantizationConfig.from_json(json.dumps(document))

    @classmethod
    def _of(cls, core) -> "ModelQuantizationConfig":
        out = cls.__new__(cls)
        out._core = core
        return out

    @classmethod
    def from_json(cls, text: str) -> "ModelQuantizationConfig":
        """From JSON text: to_json() output, or a partial document with an optional "preset"."""
        return cls._of(_core.ModelQuantizationConfig.from_json(text))

    @classmethod
    def from_dict(cls, document: Dict[str, Any]) -> "ModelQuantizationConfig":
        """From a dict of the JSON document (as from_json)."""
        return cls.from_json(json.dumps(document))

    @classmethod
    def of(cls, config: Union[None, str, Dict[str, Any], "ModelQuantizationConfig"]
           ) -> "ModelQuantizationConfig":
        """A config from what the one-call functions take: a config, a preset name, JSON text
        (starting with "{") or a dict."""
        if isinstance(config, ModelQuantizationConfig):
            return config
        if isinstance(config, dict):
            return cls.from_dict(config)
        if isinstance(config, str):
            return cls.from_json(config) if config.lstrip().startswith("{") else cls(config)
        raise ValueError(f"model config: expected a ModelQuantizationConfig, a preset name, JSON "
                         f"text or a dict, got {type(config).__name__}")

    def to_json(self) -> str:
        """The complete config (every key; no preset), which from_json reads back equal."""
        return self._core.to_json()

    def to_dict(self) -> Dict[str, Any]:
        """The complete config as a dict (to_json() parsed)."""
        return json.loads(self.to_json())

    def resolve(self, name: str, layer_type: str) -> Dict[str, Any]:
        """What the layer `name` of type `layer_type` gets: {"skipped": bool, "weights": spec
        dict or None, "activations": spec dict or None}, after the skip list and overrides."""
        return self._core.resolve(name, layer_type)

    @property
    def activation_ops(self) -> List[str]:
        """The functional ops whose outputs get activation quantizers ("add", "cat", "matmul")."""
        return list(self._core.activation_ops)

    @property
    def fold_batch_norm(self) -> bool:
        """Whether batch norms are folded into the layers before them."""
        return self._core.fold_batch_norm

    @property
    def num_bins(self) -> int:
        """The bins of each activation site's calibration histogram."""
        return self._core.num_bins

    @property
    def weights(self) -> Optional[Dict[str, Any]]:
        """The default weights spec (a dict), or None when weights are not quantized."""
        return self.to_dict()["weights"]

    @property
    def activations(self) -> Optional[Dict[str, Any]]:
        """The default activations spec (a dict), or None when activations are not quantized."""
        return self.to_dict()["activations"]

    def __eq__(self, other) -> bool:
        return isinstance(other, ModelQuantizationConfig) and self._core == other._core

    def __repr__(self) -> str:
        return f"ModelQuantizationConfig.from_json({self.to_json()!r})"


__all__ = ["ModelQuantizationConfig", "PRESETS"]
