// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#pragma once

namespace qi {
inline constexpr const char* kVersion = "0.1.0";
}  // namespace qi
