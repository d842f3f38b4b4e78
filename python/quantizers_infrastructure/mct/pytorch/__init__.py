# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.pytorch over qi's PyTorch front end."""

from quantizers_infrastructure.mct.pytorch import quantizers  # noqa: F401
