# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.keras.metadata."""

from quantizers_infrastructure.keras.metadata import (  # noqa: F401
    MetadataLayer, add_metadata, get_metadata)

__all__ = ["MetadataLayer", "add_metadata", "get_metadata"]
