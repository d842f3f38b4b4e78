# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.common.get_all_subclasses."""

from quantizers_infrastructure.common.base_inferable_quantizer import \
    get_all_subclasses  # noqa: F401

__all__ = ["get_all_subclasses"]
