# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Names and numbers shared with MCT Quantizers (REFERENCE.md 1.2)."""

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

# Static class properties set by mark_quantizer.
QUANTIZATION_TARGET = "quantization_target"
QUANTIZATION_METHOD = "quantization_method"
QUANTIZER_ID = "identifier"

# Dispatcher / wrapper keys.
WEIGHTS_QUANTIZERS = "weights_quantizer"
ACTIVATION_QUANTIZERS = "activation_quantizers"

# Numbers.
EPS = 1e-8
LUT_VALUES_BITWIDTH_DEFAULT = 8
QI_VERSION_KEY = "qi_version"
