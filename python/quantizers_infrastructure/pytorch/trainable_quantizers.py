# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The PyTorch trainable quantizers (REFERENCE.md 8, 9.2): STE and LSQ (symmetric/POT and
uniform; weights and activations) and soft rounding (symmetric and uniform weights), the ten
classes of QI_FOR_EACH_TORCH_TRAINABLE_QUANTIZER (torch/include/qi/torch/quantizers.h).

Each forward is the C++ front end's (torch/csrc/trainable_quantizers.cc), op for op and argument
for argument: the math and its gradients run in the qi ops (torch.ops.qi.symmetric_quant,
uniform_quant, soft_round), so Python and C++ give the same bits. Variables are registered on
the wrapping module as "<name>_<suffix>" (suffixes: ptq_threshold_tensor, threshold, min, max,
ptq_threshold, auxvar_tensor) and recorded under their suffix. convert2inferable() returns the
framework-neutral inferable quantizer whose output equals the eval-mode output bit for bit."""

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

import quantizers_infrastructure.pytorch  # noqa: F401  (loads the qi ops)
from quantizers_infrastructure.common import inferable_quantizers as iq
from quantizers_infrastructure.common.base_inferable_quantizer import mark_quantizer
from quantizers_infrastructure.common.base_trainable_quantizer import (GROUP, VAR,
                                                                       BaseTrainableQuantizer)
from quantizers_infrastructure.common.enums import (QuantizationMethod, QuantizationTarget,
                                                    TrainingMethod, VariableGroup)
from quantizers_infrastructure.common.trainable_configs import (
    MIN_THRESHOLD, TrainableQuantizerActivationConfig, TrainableQuantizerWeightsConfig)

_POT = QuantizationMethod.POWER_OF_TWO
_SYM = QuantizationMethod.SYMMETRIC
_UNI = QuantizationMethod.UNIFORM
SOFT_ROUNDING_GAMMA = -0.1
SOFT_ROUNDING_ZETA = 1.1


def power_of_two_ceil(t: float, min_threshold: float = 0.0) -> float:
    """2^ceil(log2(max(t, min_threshold))): how POT trainable quantizers force thresholds."""
    return math.exp2(math.ceil(math.log2(max(t, min_threshold))))


def _f32(v: float) -> float:
    """v rounded through float32 (C++ static_cast<float>)."""
    return float(np.float32(v))


def _param_values(params: Dict[str, Any], key: str, cls: str) -> List[float]:
    if key not in params:
        raise ValueError(f"{cls}: quantization params must hold \"{key}\"")
    value = params[key]
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{cls}: \"{key}\" must be a number or an array, got a boolean")
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    values = np.asarray(value, dtype=np.float64).reshape(-1).tolist()
    if not values:
        raise ValueError(f"{cls}: \"{key}\" must hold at least one value")
    return values


def _param_bool(params: Dict[str, Any], key: str, fallback: bool) -> bool:
    if key not in params:
        return fallback
    value = params[key]
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"quantization params: \"{key}\" must be a boolean")
    return bool(value)


def _to_tensor(values: Sequence[float]) -> torch.Tensor:
    """1-D float32 tensor (each value rounded to float32, as the C++ to_tensor)."""
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def _to_values(t: torch.Tensor) -> List[float]:
    return t.detach().to(torch.float32).reshape(-1).double().tolist()


def _per_channel(v: List[float], channels: int, cls: str, what: str) -> List[float]:
    if len(v) == 1 and channels > 1:
        v = v * channels
    if len(v) != channels:
        raise ValueError(f"{cls}: {what} holds {len(v)} values but the tensor has {channels} "
                         f"channels")
    return v


def _channel_count(shape, per_ch: bool, axis: int, cls: str) -> int:
    if not per_ch:
        return 1
    r = len(shape)
    if not -r <= axis < r:
        raise ValueError(f"{cls}: weights_channels_axis must be in [{-r}, {r}) for a weight of "
                         f"rank {r}, got {axis}")
    return int(shape[axis + r if axis < 0 else axis])


def _op_error(e: RuntimeError) -> ValueError:
    from quantizers_infrastructure.pytorch import value_error_from
    return value_error_from(e)


class BasePytorchTrainableQuantizer(BaseTrainableQuantizer):
    """Base of the PyTorch trainable quantizers: variables are nn.Parameters registered on the
    wrapping module (initialize_quantization(tensor_shape, name, layer))."""

    # Soft rounding: the eval output is not a function of the float weight through the
    # inferable quantizer alone, so conversion also replaces the weight by __call__(w, False).
    replaces_weight = False

    def _register(self, layer: nn.Module, name: str, suffix: str, value: torch.Tensor,
                  trainable: bool, group: VariableGroup) -> nn.Parameter:
        p = nn.Parameter(value.detach().clone(), requires_grad=trainable)
        layer.register_parameter(f"{name}_{suffix}", p)
        self.add_quantizer_variable(suffix, p, group)
        self.registered_names = getattr(self, "registered_names", []) + [f"{name}_{suffix}"]
        return p

    def get_trainable_variables(self, group: VariableGroup) -> List[nn.Parameter]:
        """The variables of `group` that require grad. With freeze_quant_params, asking for
        QPARAMS when some would train is an error (as in MCT)."""
        out = [v[VAR] for v in self.quantizer_parameters.values()
               if v[GROUP] == group and v[VAR].requires_grad]
        if self.freeze_quant_params and group == VariableGroup.QPARAMS and out:
            raise ValueError(f"{type(self).__name__}: quantization parameters were created "
                             f"trainable although freeze_quant_params is set")
        return out

    def freeze_quant_params_now(self) -> None:
        """Stops training the quantization parameters (QPARAMS)."""
        for v in self.quantizer_parameters.values():
            if v[GROUP] == VariableGroup.QPARAMS:
                v[VAR].requires_grad_(False)
        self.freeze_quant_params = True

    def _var(self, suffix: str) -> torch.Tensor:
        return self.get_quantizer_variable(suffix)

    def __call__(self, inputs: torch.Tensor, training: bool = True) -> torch.Tensor:
        try:
            return self.forward(inputs, training)
        except RuntimeError as e:
            if "qi::" in str(e):
                raise _op_error(e) from None
            raise

    def forward(self, inputs: torch.Tensor, training: bool) -> torch.Tensor:
        raise NotImplementedError


class BasePytorchQATWeightTrainableQuantizer(BasePytorchTrainableQuantizer):
    """Base of the QAT weights quantizers (REFERENCE.md 7.3)."""


class BasePytorchActivationTrainableQuantizer(BasePytorchTrainableQuantizer):
    """Base of the activation trainable quantizers."""


class BasePytorchGPTQTrainableQuantizer(BasePytorchTrainableQuantizer):
    """Base of the GPTQ (soft rounding) weights quantizers."""


# ---- weights: symmetric / POT (STE, LSQ) ------------------------------------------------------

class _SymmetricWeightQuantizer(BasePytorchQATWeightTrainableQuantizer):

    def __init__(self, quantization_config: TrainableQuantizerWeightsConfig,
                 freeze_quant_params: bool = False):
        super().__init__(quantization_config, freeze_quant_params)
        cfg = quantization_config
        self._pot = cfg.weights_quantization_method == _POT
        self._threshold = _param_values(cfg.weights_quantization_params, "threshold",
                                        type(self).__name__)
        if self._pot:  # POT thresholds start as powers of two (MCT "POT-ify" at init)
            self._threshold = [power_of_two_ceil(t, MIN_THRESHOLD) for t in self._threshold]
        self._channels = 1

    def initialize_quantization(self, tensor_shape, name: str, layer: nn.Module) -> None:
        cfg = self.quantization_config
        cls = type(self).__name__
        self._channels = _channel_count(tensor_shape, cfg.weights_per_channel_threshold,
                                        cfg.weights_channels_axis, cls)
        t = _per_channel(self._threshold, self._channels, cls, "threshold")
        learn = self.identifier == TrainingMethod.LSQ and not self.freeze_quant_params
        self._register(layer, name, "ptq_threshold_tensor", _to_tensor(t), learn,
                       VariableGroup.QPARAMS)

    def _axis(self) -> Optional[int]:
        cfg = self.quantization_config
        return (cfg.weights_channels_axis
                if cfg.weights_per_channel_threshold and self._channels > 1 else None)

    def _eval_threshold(self) -> List[float]:
        t = _to_values(self._var("ptq_threshold_tensor"))
        t = [power_of_two_ceil(v, MIN_THRESHOLD) if self._pot else max(v, MIN_THRESHOLD)
             for v in t]
        return [_f32(v) for v in t]  # through float32, as the training forward sees it

    def forward(self, inputs, training):
        n = self.quantization_config.weights_n_bits
        if training and self.identifier == TrainingMethod.LSQ:
            max_int = 2.0 ** (n - 1) - 1
            g = 1.0 / math.sqrt(max_int * float(self._channels))
            return torch.ops.qi.symmetric_quant(
                inputs, torch.clamp_min(self._var("ptq_threshold_tensor"), MIN_THRESHOLD), n,
                True, self._axis(), "lsq", g)
        return torch.ops.qi.symmetric_quant(inputs, _to_tensor(self._eval_threshold()), n, True,
                                            self._axis(), "ste", 1.0)

    def convert2inferable(self):
        cfg = self.quantization_config
        axis = cfg.weights_channels_axis if cfg.weights_per_channel_threshold else None
        cls = iq.WeightsPOTInferableQuantizer if self._pot else iq.WeightsSymmetricInferableQuantizer
        return cls(num_bits=cfg.weights_n_bits, threshold=self._eval_threshold(),
                   per_channel=cfg.weights_per_channel_threshold, channel_axis=axis)


@mark_quantizer(QuantizationTarget.Weights, [_POT, _SYM], TrainingMethod.STE)
class STEWeightQATQuantizer(_SymmetricWeightQuantizer):
    """STE weights quantizer (POT, SYMMETRIC): q = delta * clamp(round(w / delta), -2^(n-1),
    2^(n-1)-1), gradient 1 w.r.t. w; the threshold is fixed (REFERENCE.md 8.1)."""


@mark_quantizer(QuantizationTarget.Weights, [_POT, _SYM], TrainingMethod.LSQ)
class LSQWeightQATQuantizer(_SymmetricWeightQuantizer):
    """LSQ weights quantizer (POT, SYMMETRIC): learned threshold, gradient scale
    g = 1 / sqrt(max_int * C) (REFERENCE.md 8.3)."""


# ---- weights: uniform (STE, LSQ) --------------------------------------------------------------

class _UniformWeightQuantizer(BasePytorchQATWeightTrainableQuantizer):

    def __init__(self, quantization_config: TrainableQuantizerWeightsConfig,
                 freeze_quant_params: bool = False):
        super().__init__(quantization_config, freeze_quant_params)
        params = quantization_config.weights_quantization_params
        self._min = _param_values(params, "range_min", type(self).__name__)
        self._max = _param_values(params, "range_max", type(self).__name__)
        self._channels = 1

    def initialize_quantization(self, tensor_shape, name: str, layer: nn.Module) -> None:
        cfg = self.quantization_config
        cls = type(self).__name__
        self._channels = _channel_count(tensor_shape, cfg.weights_per_channel_threshold,
                                        cfg.weights_channels_axis, cls)
        learn = self.identifier == TrainingMethod.LSQ and not self.freeze_quant_params
        self._register(layer, name, "min",
                       _to_tensor(_per_channel(self._min, self._channels, cls, "range_min")),
                       learn, VariableGroup.QPARAMS)
        self._register(layer, name, "max",
                       _to_tensor(_per_channel(self._max, self._channels, cls, "range_max")),
                       learn, VariableGroup.QPARAMS)

    def _axis(self) -> Optional[int]:
        cfg = self.quantization_config
        return (cfg.weights_channels_axis
                if cfg.weights_per_channel_threshold and self._channels > 1 else None)

    def forward(self, inputs, training):
        n = self.quantization_config.weights_n_bits
        lsq = training and self.identifier == TrainingMethod.LSQ
        levels = 2.0 ** n - 1
        g = 1.0 / math.sqrt(levels * float(self._channels)) if lsq else 1.0
        lo, hi = self._var("min"), self._var("max")
        if not training:
            lo, hi = lo.detach(), hi.detach()
        return torch.ops.qi.uniform_quant(inputs, lo, hi, n, self._axis(),
                                          "lsq" if lsq else "ste", g, False)

    def convert2inferable(self):
        cfg = self.quantization_config
        axis = cfg.weights_channels_axis if cfg.weights_per_channel_threshold else None
        return iq.WeightsUniformInferableQuantizer(
            num_bits=cfg.weights_n_bits, min_range=_to_values(self._var("min")),
            max_range=_to_values(self._var("max")),
            per_channel=cfg.weights_per_channel_threshold, channel_axis=axis)


@mark_quantizer(QuantizationTarget.Weights, [_UNI], TrainingMethod.STE)
class STEUniformWeightQATQuantizer(_UniformWeightQuantizer):
    """STE uniform weights quantizer: fixed range, zero-adjusted (REFERENCE.md 8.2)."""


@mark_quantizer(QuantizationTarget.Weights, [_UNI], TrainingMethod.LSQ)
class LSQUniformWeightQATQuantizer(_UniformWeightQuantizer):
    """LSQ uniform weights quantizer: learned range, g = 1 / sqrt((2^n - 1) * C)
    (REFERENCE.md 8.4)."""


# ---- activations: symmetric / POT (STE, LSQ) --------------------------------------------------

class _SymmetricActivationQuantizer(BasePytorchActivationTrainableQuantizer):

    def __init__(self, quantization_config: TrainableQuantizerActivationConfig,
                 freeze_quant_params: bool = False):
        super().__init__(quantization_config, freeze_quant_params)
        cfg = quantization_config
        cls = type(self).__name__
        self._pot = cfg.activation_quantization_method == _POT
        t = _param_values(cfg.activation_quantization_params, "threshold", cls)
        if len(t) != 1:
            raise ValueError(f"{cls}: activation \"threshold\" must hold one value, got {len(t)}")
        self._threshold = t[0]
        self._signed = _param_bool(cfg.activation_quantization_params, "is_signed", True)

    def initialize_quantization(self, tensor_shape, name: str, layer: nn.Module) -> None:
        self._register(layer, name, "threshold", _to_tensor([self._threshold]),
                       not self.freeze_quant_params, VariableGroup.QPARAMS)

    def _eval_threshold(self) -> float:
        t = _to_values(self._var("threshold"))[0]
        return _f32(power_of_two_ceil(t, MIN_THRESHOLD) if self._pot else max(t, MIN_THRESHOLD))

    def forward(self, inputs, training):
        n = self.quantization_config.activation_n_bits
        if training:
            lsq = self.identifier == TrainingMethod.LSQ
            g = 1.0
            if lsq:
                max_int = 2.0 ** (n - (1 if self._signed else 0)) - 1
                channels = float(inputs.size(1)) if inputs.dim() >= 2 else 1.0
                g = 1.0 / math.sqrt(max_int * channels)
            return torch.ops.qi.symmetric_quant(
                inputs, torch.clamp_min(self._var("threshold"), MIN_THRESHOLD), n, self._signed,
                None, "lsq" if lsq else "ste", g)
        return torch.ops.qi.symmetric_quant(inputs, _to_tensor([self._eval_threshold()]), n,
                                            self._signed, None, "ste", 1.0)

    def convert2inferable(self):
        n = self.quantization_config.activation_n_bits
        cls = (iq.ActivationPOTInferableQuantizer if self._pot
               else iq.ActivationSymmetricInferableQuantizer)
        return cls(num_bits=n, threshold=[self._eval_threshold()], signed=self._signed)


@mark_quantizer(QuantizationTarget.Activation, [_POT, _SYM], TrainingMethod.STE)
class STESymmetricActivationTrainableQuantizer(_SymmetricActivationQuantizer):
    """STE symmetric/POT activation quantizer; the threshold learns through delta unless
    frozen (REFERENCE.md 8.5)."""


@mark_quantizer(QuantizationTarget.Activation, [_POT, _SYM], TrainingMethod.LSQ)
class LSQSymmetricActivationTrainableQuantizer(_SymmetricActivationQuantizer):
    """LSQ symmetric/POT activation quantizer, g = 1 / sqrt(max_int * inputs.size(1))."""


# ---- activations: uniform (STE, LSQ) ----------------------------------------------------------

class _UniformActivationQuantizer(BasePytorchActivationTrainableQuantizer):

    def __init__(self, quantization_config: TrainableQuantizerActivationConfig,
                 freeze_quant_params: bool = False):
        super().__init__(quantization_config, freeze_quant_params)
        params = quantization_config.activation_quantization_params
        cls = type(self).__name__
        lo = _param_values(params, "range_min", cls)
        hi = _param_values(params, "range_max", cls)
        if len(lo) != 1 or len(hi) != 1:
            raise ValueError(f"{cls}: activation \"range_min\"/\"range_max\" must hold one value "
                             f"each")
        self._min, self._max = lo[0], hi[0]

    def initialize_quantization(self, tensor_shape, name: str, layer: nn.Module) -> None:
        self._register(layer, name, "min", _to_tensor([self._min]), not self.freeze_quant_params,
                       VariableGroup.QPARAMS)
        self._register(layer, name, "max", _to_tensor([self._max]), not self.freeze_quant_params,
                       VariableGroup.QPARAMS)

    def forward(self, inputs, training):
        n = self.quantization_config.activation_n_bits
        lsq = training and self.identifier == TrainingMethod.LSQ
        g = 1.0
        if lsq:
            channels = float(inputs.size(1)) if inputs.dim() >= 2 else 1.0
            g = 1.0 / math.sqrt((2.0 ** n - 1) * channels)
        lo, hi = self._var("min"), self._var("max")
        if not training:
            lo, hi = lo.detach(), hi.detach()
        return torch.ops.qi.uniform_quant(inputs, lo, hi, n, None, "lsq" if lsq else "ste", g,
                                          True)

    def convert2inferable(self):
        return iq.ActivationUniformInferableQuantizer(
            num_bits=self.quantization_config.activation_n_bits,
            min_range=_to_values(self._var("min")), max_range=_to_values(self._var("max")))


@mark_quantizer(QuantizationTarget.Activation, [_UNI], TrainingMethod.STE)
class STEUniformActivationTrainableQuantizer(_UniformActivationQuantizer):
    """STE uniform activation quantizer (REFERENCE.md 8.5)."""


@mark_quantizer(QuantizationTarget.Activation, [_UNI], TrainingMethod.LSQ)
class LSQUniformActivationTrainableQuantizer(_UniformActivationQuantizer):
    """LSQ uniform activation quantizer, g = 1 / sqrt((2^n - 1) * inputs.size(1))."""


# ---- soft rounding (GPTQ) ---------------------------------------------------------------------

class _SoftRoundingQuantizer(BasePytorchGPTQTrainableQuantizer):
    replaces_weight = True

    def __init__(self, quantization_config: TrainableQuantizerWeightsConfig,
                 freeze_quant_params: bool = False):
        super().__init__(quantization_config, freeze_quant_params)
        cfg = quantization_config
        cls = type(self).__name__
        self._uniform = cfg.weights_quantization_method == _UNI
        self._pot = cfg.weights_quantization_method == _POT
        params = cfg.weights_quantization_params
        if self._uniform:
            self._min = _param_values(params, "range_min", cls)
            self._max = _param_values(params, "range_max", cls)
        else:
            self._threshold = _param_values(params, "threshold", cls)
        self._channels = 1

    def _thresholds(self) -> List[float]:
        t = _to_values(self._var("ptq_threshold"))
        return [_f32(power_of_two_ceil(v, MIN_THRESHOLD) if self._pot else v) for v in t]

    def _plan(self, for_init: bool):
        """(delta, offset, qmin, qmax) as float32 lists: init uses the thresholds as stored and
        the un-adjusted uniform range (MCT); the forward uses the inferable quantizer's grid."""
        cfg = self.quantization_config
        n = cfg.weights_n_bits
        cls = type(self).__name__
        if self._uniform:
            qmin, qmax = 0.0, 2.0 ** n - 1
            if for_init:
                lo = _per_channel(self._min, self._channels, cls, "range_min")
                hi = _per_channel(self._max, self._channels, cls, "range_max")
                return ([_f32((h - l) / qmax) for l, h in zip(lo, hi)], [_f32(l) for l in lo],
                        qmin, qmax)
            lo, hi = _to_values(self._var("min")), _to_values(self._var("max"))
            q = iq.WeightsUniformInferableQuantizer(num_bits=n, min_range=lo, max_range=hi,
                                                    per_channel=True, channel_axis=0)
            return (q.scale.astype(np.float64).tolist(),
                    q.adjusted_min_range.astype(np.float64).tolist(), qmin, qmax)
        t = (_per_channel(self._threshold, self._channels, cls, "threshold") if for_init
             else self._thresholds())
        steps = 2.0 ** (n - 1)
        return [_f32(v / steps) for v in t], [0.0] * len(t), -steps, steps - 1

    def _axis_index(self, rank: int) -> Optional[int]:
        if self._channels <= 1:
            return None
        a = self.quantization_config.weights_channels_axis
        return a + rank if a < 0 else a

    def initialize_quantization(self, tensor_shape, name: str, layer: nn.Module) -> None:
        cfg = self.quantization_config
        cls = type(self).__name__
        self._channels = _channel_count(tensor_shape, cfg.weights_per_channel_threshold,
                                        cfg.weights_channels_axis, cls)
        w = dict(layer.named_parameters(recurse=False)).get(name)
        if w is None:
            raise ValueError(f"{cls}: initialize_quantization needs the weight \"{name}\" "
                             f"registered on the module")
        delta, offset, qmin, qmax = self._plan(for_init=True)
        w = w.detach().to(torch.float32)
        shape = [1] * w.dim()
        axis = self._axis_index(w.dim())
        if axis is not None:
            shape[axis] = -1
        d = _to_tensor(delta).reshape(shape)
        o = _to_tensor(offset).reshape(shape)
        v = torch.clamp((w - o) / d, qmin, qmax)
        r = (v - torch.floor(v)).double().numpy()
        # rectified_sigmoid_inverse in double, rounded to float32 (trainable_math.cc)
        alpha = -np.log((SOFT_ROUNDING_ZETA - SOFT_ROUNDING_GAMMA) / (r - SOFT_ROUNDING_GAMMA)
                        - 1.0)
        alpha = torch.from_numpy(alpha.astype(np.float32))
        if self._uniform:
            self._register(layer, name, "min",
                           _to_tensor(_per_channel(self._min, self._channels, cls, "range_min")),
                           False, VariableGroup.QPARAMS)
            self._register(layer, name, "max",
                           _to_tensor(_per_channel(self._max, self._channels, cls, "range_max")),
                           False, VariableGroup.QPARAMS)
        else:
            self._register(layer, name, "ptq_threshold",
                           _to_tensor(_per_channel(self._threshold, self._channels, cls,
                                                   "threshold")),
                           False, VariableGroup.QPARAMS)
        self._register(layer, name, "auxvar_tensor", alpha, True, VariableGroup.WEIGHTS)

    def forward(self, inputs, training):
        delta, offset, qmin, qmax = self._plan(for_init=False)
        axis = self.quantization_config.weights_channels_axis if self._channels > 1 else None
        return torch.ops.qi.soft_round(inputs, self._var("auxvar_tensor"), _to_tensor(delta),
                                       _to_tensor(offset), qmin, qmax, axis, training)

    def get_soft_targets(self) -> torch.Tensor:
        """h(alpha) = clip(sigmoid(alpha) * (zeta - gamma) + gamma, 0, 1)."""
        a = self._var("auxvar_tensor")
        return torch.clamp(torch.sigmoid(a) * (SOFT_ROUNDING_ZETA - SOFT_ROUNDING_GAMMA)
                           + SOFT_ROUNDING_GAMMA, 0, 1)

    def convert2inferable(self):
        cfg = self.quantization_config
        n = cfg.weights_n_bits
        axis = cfg.weights_channels_axis if cfg.weights_per_channel_threshold else None
        per_channel = cfg.weights_per_channel_threshold
        if self._uniform:
            return iq.WeightsUniformInferableQuantizer(
                num_bits=n, min_range=_to_values(self._var("min")),
                max_range=_to_values(self._var("max")), per_channel=per_channel,
                channel_axis=axis)
        cls = iq.WeightsPOTInferableQuantizer if self._pot else iq.WeightsSymmetricInferableQuantizer
        return cls(num_bits=n, threshold=self._thresholds(), per_channel=per_channel,
                   channel_axis=axis)


@mark_quantizer(QuantizationTarget.Weights, [_POT, _SYM], TrainingMethod.SoftRounding)
class SymmetricSoftRoundingGPTQ(_SoftRoundingQuantizer):
    """Soft rounding (AdaRound-style) for symmetric/POT weights (REFERENCE.md 9.2)."""


@mark_quantizer(QuantizationTarget.Weights, [_UNI], TrainingMethod.SoftRounding)
class UniformSoftRoundingGPTQ(_SoftRoundingQuantizer):
    """Soft rounding for uniform weights (REFERENCE.md 9.2)."""


TRAINABLE_QUANTIZER_CLASSES = {c.__name__: c for c in (
    STEWeightQATQuantizer, STEUniformWeightQATQuantizer, LSQWeightQATQuantizer,
    LSQUniformWeightQATQuantizer, STESymmetricActivationTrainableQuantizer,
    STEUniformActivationTrainableQuantizer, LSQSymmetricActivationTrainableQuantizer,
    LSQUniformActivationTrainableQuantizer, SymmetricSoftRoundingGPTQ, UniformSoftRoundingGPTQ)}


def get_trainable_quantizer_class(quant_target: QuantizationTarget,
                                  quant_method: QuantizationMethod,
                                  training_method: TrainingMethod,
                                  quantizer_base_class: Optional[type] = None) -> type:
    """The trainable class registered for (target, method, training method) (REFERENCE.md
    7.3); exactly one must match, else ValueError with the C++ registry's message.
    quantizer_base_class, when given, restricts the search to its subclasses."""
    if isinstance(training_method, str):
        training_method = TrainingMethod(training_method)
    found = [c for c in TRAINABLE_QUANTIZER_CLASSES.values()
             if c.quantization_target == quant_target and c.identifier == training_method
             and quant_method in c.quantization_method
             and (quantizer_base_class is None or issubclass(c, quantizer_base_class))]
    if len(found) != 1:
        target = getattr(quant_target, "value", quant_target)
        method = getattr(quant_method, "name", quant_method)
        tm = getattr(training_method, "value", training_method)
        raise ValueError(f"get_trainable_quantizer_class: found {len(found)} trainable "
                         f"quantizers for target {target}, method {method} and training method "
                         f"{tm}; expected exactly one")
    return found[0]


def trainable_quantizer_from_json(text: str) -> BasePytorchTrainableQuantizer:
    """A fresh trainable quantizer from to_json() text (Python's or the C++ front end's)."""
    import json
    j = json.loads(text)
    if not isinstance(j, dict) or j.get("class_name") not in TRAINABLE_QUANTIZER_CLASSES:
        raise ValueError(f"trainable_quantizer_from_json: unknown class_name "
                         f"{j.get('class_name') if isinstance(j, dict) else j!r}")
    return TRAINABLE_QUANTIZER_CLASSES[j["class_name"]].from_config(j.get("config"))


class SoftRoundingRegularization:
    """The soft rounding regularizer (REFERENCE.md 9.3), as the C++ front end's: beta anneals
    linearly from beta_start to beta_end between warmup_fraction * total_steps and total_steps;
    each call is one step and returns entropy_reg * sum_l w_l * sum(1 - |2 (h_l - 0.5)|^beta) /
    max(w) over the soft rounding quantizers given."""

    def __init__(self, total_steps: int, warmup_fraction: float = 0.2, beta_start: float = 20.0,
                 beta_end: float = 2.0):
        if total_steps <= 0:
            raise ValueError(f"SoftRoundingRegularization: total_steps must be > 0, got "
                             f"{total_steps}")
        if not 0 <= warmup_fraction < 1:
            raise ValueError(f"SoftRoundingRegularization: warmup_fraction must be in [0, 1), "
                             f"got {warmup_fraction}")
        self.total_steps = int(total_steps)
        self.start = int(warmup_fraction * total_steps)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.step = 0

    def beta(self) -> float:
        f = min(max((self.step - self.start) / (self.total_steps - self.start), 0.0), 1.0)
        return self.beta_start + f * (self.beta_end - self.beta_start)

    def __call__(self, quantizers, entropy_reg: float, layer_weights=None) -> torch.Tensor:
        soft = [q for q in quantizers if isinstance(q, _SoftRoundingQuantizer)]
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
            reg = reg + w * torch.ops.qi.soft_round_regularization(q._var("auxvar_tensor"), b)
        return entropy_reg * reg / max(weights)


__all__ = ["BasePytorchTrainableQuantizer", "BasePytorchQATWeightTrainableQuantizer",
           "BasePytorchActivationTrainableQuantizer", "BasePytorchGPTQTrainableQuantizer",
           "get_trainable_quantizer_class", "trainable_quantizer_from_json",
           "TRAINABLE_QUANTIZER_CLASSES", "SoftRoundingRegularization", "power_of_two_ceil",
           ] + list(TRAINABLE_QUANTIZER_CLASSES)
