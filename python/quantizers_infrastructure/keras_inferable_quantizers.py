# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Seed-era alias module `quantizers_infrastructure.keras_inferable_quantizers`. The classes are
framework-neutral, so this module holds the very same classes as the package."""

from quantizers_infrastructure.common.base_inferable_quantizer import (  # noqa: F401
    BaseInferableQuantizer)
from quantizers_infrastructure.common.inferable_quantizers import *  # noqa: F401,F403
from quantizers_infrastructure.common.inferable_quantizers import __all__ as _names

__all__ = ["BaseInferableQuantizer"] + list(_names)
