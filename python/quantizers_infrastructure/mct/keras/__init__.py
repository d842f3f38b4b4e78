# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.keras over qi's Keras front end."""

from quantizers_infrastructure.mct.keras import quantizers  # noqa: F401
