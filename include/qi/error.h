// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace qi {

// The one exception type of the core. Messages name the argument, the rule and the value given,
// e.g. "WeightsPOTInferableQuantizer: threshold must be a power of two, got 3 at channel 1".
// The torch layer turns it into c10::Error, the Python package into ValueError.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
inline void append_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void append_all(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append_all(os, rest...);
}
}  // namespace detail

// Concatenates its arguments with operator<< into one message.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  os.precision(9);
  detail::append_all(os, args...);
  return os.str();
}

}  // namespace qi

// Throws qi::Error with the streamed message when `cond` is false.
#define QI_CHECK(cond, ...)                           \
  do {                                                \
    if (!(cond)) throw ::qi::Error(::qi::str_cat(__VA_ARGS__)); \
  } while (0)
