# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Model metadata (MCT Quantizers' add_metadata): a dict of string keys and JSON-like values that
a quantized model carries, checked here for every front end."""

import sys
from typing import Any, Dict, Optional

from quantizers_infrastructure.common import constants as C


def _valid_value(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float, str)):
        return True
    if isinstance(value, list):
        return all(_valid_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _valid_value(v) for k, v in value.items())
    return False


def verify_and_init_metadata(metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """`metadata` (None means {}) checked and completed with "python_version" and "qi_version"
    when missing. ValueError unless it is a dict with string keys whose values are ints, floats,
    strings, or lists and dicts of them (MCT Quantizers logs an error for a non-dict and warns
    about other values; qi refuses both, since such values do not survive saving)."""
    from quantizers_infrastructure import _core
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata should be a dictionary, but got type {type(metadata)}.")
    bad_keys = [k for k in metadata if not isinstance(k, str)]
    if bad_keys:
        raise ValueError(f"metadata dictionary should only have string keys, got {bad_keys!r}")
    bad = [k for k, v in metadata.items() if not _valid_value(v)]
    if bad:
        raise ValueError(f"metadata values must be strings, integers, floats, or lists and "
                         f"dictionaries of them; the values of {bad!r} are not")
    metadata.setdefault(C.PYTHON_VERSION, sys.version)
    metadata.setdefault(C.QI_METADATA_VERSION, _core.kVersion)
    return metadata


__all__ = ["verify_and_init_metadata"]
