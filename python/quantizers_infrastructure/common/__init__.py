# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Framework-neutral parts of quantizers_infrastructure: enums, constants, the inferable
quantizer classes over the C++ core, lookup and the node quantization dispatcher."""
