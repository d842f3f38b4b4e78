# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.pytorch.onnxruntime_session_options: session options with qi's kernels for the
mct_quantizers custom ops (they run qi's C++ core)."""

from quantizers_infrastructure.pytorch.onnx import get_ort_session_options  # noqa: F401

__all__ = ["get_ort_session_options"]
