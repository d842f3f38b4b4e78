# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The PyTorch trainable quantizers: one class per entry of the core's trainable registry (STE
and LSQ, symmetric/POT and uniform, weights and activations; soft rounding), generated here.

Their policy is the core's; this module only binds it: variables are nn.Parameters registered on
the wrapping module as "<name>_<variable>", and the forward is one torch.ops.qi call with the
arguments the core names, so C++, PyTorch and Keras give the same bits."""

import sys
from typing import List, Optional

import numpy as np
import torch
from torch import nn

from quantizers_infrastructure import _core
from quantizers_infrastructure.common.base_trainable_quantizer import (
    GROUP, VAR, BaseTrainableQuantizer, find_trainable_class, generate_trainable_classes,
    get_all_subclasses)
from quantizers_infrastructure.common.enums import (QuantizationMethod, QuantizationTarget,
                                                    TrainingMethod, VariableGroup)


class BasePytorchTrainableQuantizer(BaseTrainableQuantizer):
    """Base of the PyTorch trainable quantizers: variables are nn.Parameters registered on the
    wrapping module (initialize_quantization(tensor_shape, name, layer))."""

    activation_channel_axis = 1  # NCHW

    def _create_variable(self, layer: nn.Module, name: str, variable: str, initial: np.ndarray,
                         trainable: bool) -> nn.Parameter:
        p = nn.Parameter(torch.from_numpy(initial), requires_grad=trainable)
        layer.register_parameter(f"{name}_{variable}", p)
        self.registered_names = getattr(self, "registered_names", []) + [f"{name}_{variable}"]
        return p

    def _trains(self, variable) -> bool:
        return variable.requires_grad

    def _values(self, variable) -> np.ndarray:
        return variable.detach().to(torch.float32).cpu().numpy()

    def _weight_values(self, layer: nn.Module, name: str) -> np.ndarray:
        if hasattr(layer, "get_float_weight"):  # a wrapper: the layer's own weight
            w = layer.get_float_weight(name)
        else:
            w = dict(layer.named_parameters(recurse=False)).get(name)
        if w is None:
            raise ValueError(f"{type(self).__name__}: initialize_quantization needs the weight "
                             f"\"{name}\" registered on the module")
        return w.detach().to(torch.float32).cpu().numpy()

    def _run(self, inputs, training):
        op, args, requires_grad, kwargs, empty = self._forward[bool(training)]
        tensors = {a: inputs.new_empty((0,), dtype=torch.float32) for a in empty}
        for a, v in args:
            p = self.quantizer_parameters[v][VAR]
            tensors[a] = p if requires_grad else p.detach()
        return getattr(torch.ops.qi, op)(inputs, **tensors, **kwargs)

    def freeze_quant_params_now(self) -> None:
        """Stops training the quantization parameters (QPARAMS)."""
        for v in self.quantizer_parameters.values():
            if v[GROUP] == VariableGroup.QPARAMS:
                v[VAR].requires_grad_(False)
        self.freeze_quant_params = True

    def get_soft_targets(self) -> torch.Tensor:
        """Soft rounding: h(alpha) = clip(sigmoid(alpha) * (zeta - gamma) + gamma, 0, 1)."""
        a = self.get_quantizer_variable("auxvar_tensor")
        gamma, zeta = _core.kSoftRoundingGamma, _core.kSoftRoundingZeta
        return torch.clamp(torch.sigmoid(a) * (zeta - gamma) + gamma, 0, 1)


class BasePytorchQATWeightTrainableQuantizer(BasePytorchTrainableQuantizer):
    """Base of the QAT weights quantizers."""


class BasePytorchActivationTrainableQuantizer(BasePytorchTrainableQuantizer):
    """Base of the activation trainable quantizers."""


class BasePytorchGPTQTrainableQuantizer(BasePytorchTrainableQuantizer):
    """Base of the GPTQ (soft rounding) weights quantizers."""


TRAINABLE_QUANTIZER_CLASSES = generate_trainable_classes(
    sys.modules[__name__].__dict__, {"qat_weights": BasePytorchQATWeightTrainableQuantizer,
                                     "activation": BasePytorchActivationTrainableQuantizer,
                                     "gptq": BasePytorchGPTQTrainableQuantizer})


def get_trainable_quantizer_class(quant_target: QuantizationTarget,
                                  quant_method: QuantizationMethod,
                                  training_method: Optional[TrainingMethod] = None,
                                  quantizer_base_class=None, *,
                                  quantizer_type=None, quantizer_id=None) -> type:
    """The trainable class registered for (target, method, training method); exactly one must
    match, else ValueError with the core's message. quantizer_base_class, when given, searches
    its marked subclasses instead (user-defined quantizers included), as MCT does. The training
    method may be given as training_method, quantizer_type (the seed era's keyword) or
    quantizer_id (MCT's)."""
    return find_trainable_class(TRAINABLE_QUANTIZER_CLASSES, quant_target, quant_method,
                                training_method, quantizer_base_class, quantizer_type,
                                quantizer_id)


def trainable_quantizer_from_json(text: str) -> BasePytorchTrainableQuantizer:
    """A fresh trainable quantizer from to_json() text (Python's or the C++ front end's)."""
    import json
    j = json.loads(text)
    if not isinstance(j, dict) or j.get("class_name") not in TRAINABLE_QUANTIZER_CLASSES:
        raise ValueError(f"trainable_quantizer_from_json: unknown class_name "
                         f"{j.get('class_name') if isinstance(j, dict) else j!r}")
    return TRAINABLE_QUANTIZER_CLASSES[j["class_name"]].from_config(j.get("config"))


class SoftRoundingRegularization:
    """The soft rounding regularizer: beta follows the core's schedule (linear from beta_start
    to beta_end between warmup_fraction * total_steps and total_steps); each call is one step
    and returns entropy_reg * sum_l w_l * sum(1 - |2 (h_l - 0.5)|^beta) / max(w) over the soft
    rounding quantizers given."""

    def __init__(self, total_steps: int, warmup_fraction: float = 0.2, beta_start: float = 20.0,
                 beta_end: float = 2.0):
        self._schedule = _core.SoftRoundingSchedule(total_steps, warmup_fraction, beta_start,
                                                    beta_end)
        self.step = 0

    def beta(self) -> float:
        """The soft-rounding beta of the current step (the schedule's value at self.step)."""
        return self._schedule.beta(self.step)

    def __call__(self, quantizers, entropy_reg: float, layer_weights=None) -> torch.Tensor:
        soft = [q for q in quantizers if isinstance(q, BasePytorchGPTQTrainableQuantizer)]
        if layer_weights is not None and len(layer_weights) not in (0, len(soft)):
            raise ValueError(f"SoftRoundingRegularization: layer_weights must have one entry per "
                             f"soft rounding quantizer ({len(soft)}), got {len(layer_weights)}")
        b = self.beta()
        self.step += 1
        reg = torch.zeros(())
        if not soft:
            return reg
        weights = list(layer_weights) if layer_weights else [1.0] * len(soft)
        for w, q in zip(weights, soft):
            reg = reg + w * torch.ops.qi.soft_round_regularization(
                q.get_quantizer_variable("auxvar_tensor"), b)
        return entropy_reg * reg / max(weights)


__all__ = ["BasePytorchTrainableQuantizer", "BasePytorchQATWeightTrainableQuantizer",
           "BasePytorchActivationTrainableQuantizer", "BasePytorchGPTQTrainableQuantizer",
           "get_trainable_quantizer_class", "get_all_subclasses", "trainable_quantizer_from_json",
           "TRAINABLE_QUANTIZER_CLASSES", "SoftRoundingRegularization",
           ] + list(TRAINABLE_QUANTIZER_CLASSES)
