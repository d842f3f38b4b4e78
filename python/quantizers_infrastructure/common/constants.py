# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Names and numbers shared with MCT Quantizers."""

# Quantizer keyword arguments (also the JSON config keys of the C++ core).
NUM_BITS = "num_bits"
SIGNED = "signed"
THRESHOLD = "threshold"
PER_CHANNEL = "per_channel"
MIN_RANGE = "min_range"
MAX_RANGE = "max_range"
CHANNEL_AXIS = "channel_axis"
INPUT_RANK = "input_rank"
LUT_VALUES = "lut_values"
LUT_VALUES_BITWIDTH = "lut_values_bitwidth"
EPS_KEY = "eps"
PROFILE = "profile"
FORMAT = "format"  # qi's FLOAT quantizers: the element format
SCALE = "scale"

# Static class properties set by mark_quantizer.
QUANTIZATION_TARGET = "quantization_target"
QUANTIZATION_METHOD = "quantization_method"
QUANTIZER_ID = "identifier"

# Dispatcher / wrapper keys.
WEIGHTS_QUANTIZERS = "weights_quantizer"
ACTIVATION_QUANTIZERS = "activation_quantizers"
ACTIVATION_HOLDER_QUANTIZER = "activation_holder_quantizer"
WEIGHTS_VALUES = "weights_value"
OP_CALL_ARGS = "op_call_args"
OP_CALL_KWARGS = "op_call_kwargs"
IS_INPUT_AS_LIST = "is_inputs_as_list"
LAYER = "layer"
STEPS = "optimizer_step"  # the Keras wrapper's step counter weight
TRAINING = "training"
POSITIONAL_WEIGHT = "positional_weight"
QUANTIZED_POSITIONAL_WEIGHT = f"quantized_{POSITIONAL_WEIGHT}"

# Keys of the trainable quantizers' configs (MCT's Keras serialization of them).
IS_WEIGHTS = "is_weights"
IS_ACTIVATIONS = "is_activations"
WEIGHTS_QUANTIZATION_METHOD = "weights_quantization_method"
WEIGHTS_N_BITS = "weights_n_bits"
WEIGHTS_QUANTIZATION_PARAMS = "weights_quantization_params"
ENABLE_WEIGHTS_QUANTIZATION = "enable_weights_quantization"
WEIGHTS_CHANNELS_AXIS = "weights_channels_axis"
WEIGHTS_PER_CHANNEL_THRESHOLD = "weights_per_channel_threshold"
MIN_THRESHOLD_KEY = "min_threshold"  # mct-quantizers calls this key MIN_THRESHOLD
ACTIVATION_QUANTIZATION_METHOD = "activation_quantization_method"
ACTIVATION_N_BITS = "activation_n_bits"
ACTIVATION_QUANTIZATION_PARAMS = "activation_quantization_params"
ENABLE_ACTIVATION_QUANTIZATION = "enable_activation_quantization"

# Model metadata keys (add_metadata).
FRAMEWORK_VERSION = "framework_version"
PYTHON_VERSION = "python_version"
MCTQ_VERSION = "mctq_version"
ONNX_VERSION = "onnx_version"
QI_METADATA_VERSION = "qi_version"
ONNX_CUSTOM_OP_DOMAIN = "mct_quantizers"

# Numbers.
EPS = 1e-8
LUT_VALUES_BITWIDTH_DEFAULT = 8
QI_VERSION_KEY = "qi_version"
