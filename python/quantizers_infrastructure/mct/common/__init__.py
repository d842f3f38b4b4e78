# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""mct_quantizers.common over qi."""
