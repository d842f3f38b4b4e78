# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.common.metadata: verify_and_init_metadata (qi's: bad metadata is an error)."""

from quantizers_infrastructure.common.metadata import verify_and_init_metadata  # noqa: F401

__all__ = ["verify_and_init_metadata"]
