// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#pragma once

namespace qi {
// The one version of qi: CMake's project version and the Python package read it.
inline constexpr const char* kVersion = "0.1.0";
}  // namespace qi
