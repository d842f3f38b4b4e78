# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.common.get_quantizers: get_inferable_quantizer_class(target, method, base)."""

from quantizers_infrastructure.common.inferable_quantizers import \
    get_inferable_quantizer_class  # noqa: F401

__all__ = ["get_inferable_quantizer_class"]
