// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

namespace qi {

using Shape = std::vector<int64_t>;

// A non-owning strided view of float32 data. Strides count elements, not bytes, and may be any
// non-negative value (broadcast views with stride 0 are allowed as inputs only).
template <typename T>
struct BasicTensorView {
  T* data = nullptr;
  Shape sizes;
  Shape strides;

  BasicTensorView() = default;
  BasicTensorView(T* d, Shape s, Shape st) : data(d), sizes(std::move(s)), strides(std::move(st)) {}
  // Contiguous (row-major) view.
  BasicTensorView(T* d, Shape s) : data(d), sizes(std::move(s)), strides(contiguous_strides(sizes)) {}
  template <typename U, typename = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  BasicTensorView(const BasicTensorView<U>& other)  // NOLINT: float view -> const float view
      : data(other.data), sizes(other.sizes), strides(other.strides) {}

  int64_t dim() const { return static_cast<int64_t>(sizes.size()); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : sizes) n *= s;
    return n;
  }

  static Shape contiguous_strides(const Shape& sizes) {
    Shape st(sizes.size());
    int64_t acc = 1;
    for (size_t i = sizes.size(); i-- > 0;) {
      st[i] = acc;
      acc *= sizes[i];
    }
    return st;
  }
};

using TensorView = BasicTensorView<float>;
using ConstTensorView = BasicTensorView<const float>;

}  // namespace qi
