# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.common.constants: MCT Quantizers' names and values. Keys are qi's own
constants; where mct-quantizers gives a name another meaning than qi's constants module
(MIN_THRESHOLD is a key name here, a number in qi's trainable configs; LUT_VALUES_BITWIDTH is the
default bit width here, a key name in qi), this module follows mct-quantizers."""

import importlib.util

from quantizers_infrastructure.common import constants as _qi
from quantizers_infrastructure.common.constants import (  # noqa: F401
    ACTIVATION_HOLDER_QUANTIZER, ACTIVATION_N_BITS, ACTIVATION_QUANTIZATION_METHOD,
    ACTIVATION_QUANTIZATION_PARAMS, ACTIVATION_QUANTIZERS, CHANNEL_AXIS,
    ENABLE_ACTIVATION_QUANTIZATION, ENABLE_WEIGHTS_QUANTIZATION, EPS, FRAMEWORK_VERSION,
    INPUT_RANK, IS_ACTIVATIONS, IS_INPUT_AS_LIST, IS_WEIGHTS, LAYER, LUT_VALUES, MAX_RANGE,
    MCTQ_VERSION, MIN_RANGE, NUM_BITS, ONNX_CUSTOM_OP_DOMAIN, ONNX_VERSION, OP_CALL_ARGS,
    OP_CALL_KWARGS, PER_CHANNEL, POSITIONAL_WEIGHT, PYTHON_VERSION, QUANTIZATION_METHOD,
    QUANTIZATION_TARGET, QUANTIZED_POSITIONAL_WEIGHT, QUANTIZER_ID, SIGNED, STEPS, THRESHOLD,
    TRAINING, WEIGHTS_CHANNELS_AXIS, WEIGHTS_N_BITS, WEIGHTS_PER_CHANNEL_THRESHOLD,
    WEIGHTS_QUANTIZATION_METHOD, WEIGHTS_QUANTIZATION_PARAMS, WEIGHTS_QUANTIZERS, WEIGHTS_VALUES)

TENSORFLOW = "tensorflow"
TORCH = "torch"
ONNX = "onnx"
ONNXRUNTIME = "onnxruntime"
ONNXRUNTIME_EXTENSIONS = "onnxruntime_extensions"
FOUND_TF = importlib.util.find_spec(TENSORFLOW) is not None
FOUND_TORCH = importlib.util.find_spec(TORCH) is not None
FOUND_ONNX = importlib.util.find_spec(ONNX) is not None
FOUND_ONNXRUNTIME = importlib.util.find_spec(ONNXRUNTIME) is not None
FOUND_ONNXRUNTIME_EXTENSIONS = importlib.util.find_spec(ONNXRUNTIME_EXTENSIONS) is not None

MIN_THRESHOLD = _qi.MIN_THRESHOLD_KEY
LUT_VALUES_BITWIDTH = _qi.LUT_VALUES_BITWIDTH_DEFAULT
