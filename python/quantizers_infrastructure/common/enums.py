# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Enums with MCT Quantizers' names and values. The C++ core uses the same
names; tests check that both sides agree."""

from enum import Enum


class QuantizationMethod(Enum):
    """How a quantizer maps values to its grid (mct_quantizers >= 1.5 values), then qi's
    extensions at 100 and above, which MCT does not have: FLOAT (low-precision float elements,
    FP8/FP6/FP4, with float32 scales), MX (OCP Microscaling: blocks sharing a power-of-two
    scale) and NVFP4 (E2M1 blocks of 16 with FP8 E4M3 scales and a float32 tensor scale)."""

    POWER_OF_TWO = 0
    LUT_POT_QUANTIZER = 1
    SYMMETRIC = 2
    UNIFORM = 3
    LUT_SYM_QUANTIZER = 4
    FLOAT = 100
    MX = 101
    NVFP4 = 102


class QuantizationTarget(Enum):
    """Whether a quantizer applies to a layer's weights or to its outputs."""

    Activation = "Activation"
    Weights = "Weights"


class TrainingMethod(Enum):
    """How a trainable quantizer learns. MCT's STE and DQA values are 1-tuples (a trailing-comma
    accident in mct-quantizers); here every value is its name, which is what the C++ core reads."""

    STE = "STE"
    DQA = "DQA"
    LSQ = "LSQ"
    SoftRounding = "SoftRounding"


class QuantizerID(Enum):
    """Identifier of every inferable quantizer class."""

    INFERABLE = "inferable_quantizer_id"


class VariableGroup(Enum):
    """Which optimizer a trainable quantizer's variable belongs to (MCT values): WEIGHTS for
    variables that stand for the weights (soft-rounding auxiliaries), QPARAMS for quantization
    parameters (thresholds, ranges)."""

    WEIGHTS = 0
    QPARAMS = 1
