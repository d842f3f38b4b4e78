# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Quantizer state as model state: what wrappers and holders put in their state dict (the
quantizers' JSON as extra state, with a checksum), and the list of qi's classes for loading whole
pickled models with torch.load(weights_only=True).

Safe loading of untrusted files: torch.load(path) (weights_only=True, the default) of a state
dict never runs code from the file; load it into a model you built with
model.load_state_dict(...), which checks every quantizer record. Whole pickled models
(torch.save(model)) need torch.serialization.safe_globals(qi.pytorch.safe_globals() + your
model's own classes) to load with weights_only=True."""

import hashlib
import json
from typing import Any, Dict, List

from quantizers_infrastructure import _core

STATE_VERSION = 1


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_extra_state(quantizers: Dict[str, Any]):
    """The extra state of a module holding quantizers, as a uint8 tensor of JSON text (a tensor,
    so that tracing and exporting, which walk the state dict, take it as any buffer): the
    quantizers' JSON (the dispatcher schema), the qi version and a SHA-256 of the JSON."""
    import torch
    text = json.dumps(quantizers, sort_keys=True)
    record = json.dumps({"qi_state": STATE_VERSION, "qi_version": _core.kVersion,
                         "quantizers": text, "sha256": _digest(text)})
    return torch.frombuffer(bytearray(record.encode()), dtype=torch.uint8)


def read_extra_state(state: Any, who: str) -> Dict[str, Any]:
    """The quantizers' JSON of make_extra_state output, checked: the layout, the checksum and
    the dispatcher schema (every quantizer's arguments, by the core). ValueError otherwise."""
    import torch
    record = None
    if isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.dim() == 1:
        try:
            record = json.loads(bytes(state.cpu().numpy()).decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
    if not isinstance(record, dict) or record.get("qi_state") != STATE_VERSION or \
            not isinstance(record.get("quantizers"), str) or \
            not isinstance(record.get("sha256"), str):
        raise ValueError(f"{who}: the state dict's quantizer record is not one qi wrote (a uint8 "
                         f"tensor of JSON with qi_state {STATE_VERSION}, quantizers and sha256)")
    text = record["quantizers"]
    if _digest(text) != record["sha256"]:
        raise ValueError(f"{who}: the state dict's quantizer record does not match its checksum "
                         f"(corrupted or edited)")
    return json.loads(_core.dispatcher_config(text))


def safe_globals() -> List[Any]:
    """qi's classes and functions that pickled models reference, for
    torch.serialization.safe_globals / add_safe_globals (torch.load with weights_only=True).
    The model's other classes (torch.nn layers, your modules) must be added too."""
    from quantizers_infrastructure.common import enums, inferable_quantizers, trainable_configs
    from quantizers_infrastructure.pytorch import activation_holders, trainable_quantizers, wrapper
    out: List[Any] = [wrapper.PytorchQuantizationWrapper,
                      activation_holders.PytorchActivationQuantizationHolder,
                      activation_holders.PytorchPreservingActivationQuantizationHolder,
                      activation_holders.PytorchFLNActivationQuantizationHolder,
                      inferable_quantizers._from_config_of, trainable_configs.config_from_json,
                      trainable_configs.TrainableQuantizerWeightsConfig,
                      trainable_configs.TrainableQuantizerActivationConfig,
                      trainable_configs.TrainableQuantizerCandidateConfig,
                      enums.QuantizationMethod, enums.QuantizationTarget, enums.TrainingMethod,
                      enums.VariableGroup, enums.QuantizerID]
    out += list(inferable_quantizers.INFERABLE_QUANTIZER_CLASSES.values())
    out += list(trainable_quantizers.TRAINABLE_QUANTIZER_CLASSES.values())
    return out


__all__ = ["make_extra_state", "read_extra_state", "safe_globals"]
