// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Fuzz target: the apply path with fuzzed parameters and layouts. The bytes choose a registered
// inferable quantizer and every QuantizerParams field (NaN, infinities and out-of-range values
// included), then a small tensor view: rank, sizes, strides (0 and overlapping ones for the
// input), dimension order and padding, offsets, in place or not, partially overlapping output.
// Building the quantizer and apply() may only throw qi::Error. What apply accepts must equal the
// double-precision reference bit for bit and must write nothing outside the output view (and
// nothing at all into a separate input).
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "fuzz_util.h"
#include "kernels/reference.h"
#include "qi/qi.h"

namespace {

using qi::Shape;

constexpr int64_t kMaxRank = 4;
constexpr int64_t kMaxSize = 5;
constexpr float kSentinel = -12345.75f;

double fuzz_double(qi_fuzz::Bytes& b) {
  switch (b.u8() % 12) {
    case 0: return b.take<double>();  // any bits
    case 1: return std::numeric_limits<double>::quiet_NaN();
    case 2: return std::numeric_limits<double>::infinity();
    case 3: return -std::numeric_limits<double>::infinity();
    case 4: return 0.0;
    case 5: return std::ldexp(1.0, static_cast<int>(b.in_range(-40, 40)));  // powers of two
    case 6: return std::numeric_limits<double>::denorm_min();
    case 7: return std::numeric_limits<double>::max();
    default: return static_cast<double>(b.take<int16_t>()) / 64.0;
  }
}

float fuzz_float(qi_fuzz::Bytes& b) {
  switch (b.u8() % 10) {
    case 0: return b.take<float>();  // any bits
    case 1: return std::numeric_limits<float>::quiet_NaN();
    case 2: return std::numeric_limits<float>::infinity();
    case 3: return -std::numeric_limits<float>::infinity();
    case 4: return std::numeric_limits<float>::denorm_min();
    default: return static_cast<float>(b.take<int16_t>()) / 256.0f;
  }
}

std::vector<double> fuzz_list(qi_fuzz::Bytes& b, int64_t max_count) {
  std::vector<double> v(static_cast<size_t>(b.in_range(0, max_count)));
  for (double& x : v) x = fuzz_double(b);
  return v;
}

qi::QuantizerParams fuzz_params(qi_fuzz::Bytes& b) {
  qi::QuantizerParams p;
  p.num_bits = b.in_range(-2, 20);
  p.per_channel = b.flag();
  if (b.flag()) p.channel_axis = b.in_range(-6, 6);
  if (b.flag()) p.input_rank = b.in_range(-1, 6);
  p.is_signed = b.flag();
  p.lut_values_bitwidth = b.in_range(0, 18);
  p.eps = b.flag() ? fuzz_double(b) : 1e-8;
  p.profile = b.flag() ? qi::NumericProfile::kTf : qi::NumericProfile::kTorch;
  p.threshold = fuzz_list(b, 6);
  p.min_range = fuzz_list(b, 6);
  p.max_range = b.flag() ? fuzz_list(b, 6) : [&] {
    std::vector<double> hi = p.min_range;  // a usually valid range: min + something
    for (double& x : hi) x += std::fabs(fuzz_double(b));
    return hi;
  }();
  const int64_t n_lut = b.in_range(0, 20);
  for (int64_t i = 0; i < n_lut; ++i)
    p.lut_values.push_back(b.flag() ? fuzz_double(b) : static_cast<double>(b.take<int8_t>()));
  return p;
}

// Strides that never map two elements to one place: dimensions laid out in a fuzzed order,
// each with some padding.
Shape non_overlapping_strides(qi_fuzz::Bytes& b, const Shape& sizes) {
  const size_t rank = sizes.size();
  std::vector<size_t> order(rank);
  for (size_t i = 0; i < rank; ++i) order[i] = i;
  for (size_t i = rank; i > 1; --i) std::swap(order[i - 1], order[static_cast<size_t>(b.u8()) % i]);
  Shape strides(rank);
  int64_t step = 1 + b.in_range(0, 1);
  for (size_t k = 0; k < rank; ++k) {  // order[0] innermost
    strides[order[k]] = step;
    step *= std::max<int64_t>(sizes[order[k]], 1) + b.in_range(0, 2);
  }
  return strides;
}

int64_t span_of(const Shape& sizes, const Shape& strides) {
  int64_t n = 1, span = 0;
  for (size_t k = 0; k < sizes.size(); ++k) {
    n *= sizes[k];
    span += (sizes[k] - 1) * strides[k];
  }
  return n == 0 ? 0 : span + 1;
}

// Calls fn(flat logical index, offset) for every element of the view.
template <typename F>
void for_each_element(const Shape& sizes, const Shape& strides, F&& fn) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, off = 0;
    for (size_t k = sizes.size(); k-- > 0;) {
      off += (rem % sizes[k]) * strides[k];
      rem /= sizes[k];
    }
    fn(i, off);
  }
}

// The reference reads per-channel values from whichever of threshold or min_range is longer: it
// gets only the lists the class reads (the quantizer ignores the others).
qi::QuantizerParams lists_of_the_class(const qi::InferableQuantizerInfo& info, qi::QuantizerParams p) {
  const bool uniform = info.family == qi::ParamFamily::kUniformWeights ||
                       info.family == qi::ParamFamily::kUniformActivation;
  if (uniform) {
    p.threshold.clear();
  } else {
    p.min_range.clear();
    p.max_range.clear();
  }
  return p;
}

bool same_bits(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, sizeof(float)) == 0;
}

// Bit-identical buffers (NaN payloads included).
bool identical(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return false;
  return true;
}

// One seed per class and layout mode: pseudo-random bytes (fixed generator), the first byte
// choosing the class.
void write_seeds() {
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (size_t kind = 0; kind < qi::kInferableQuantizers.size(); ++kind) {
    for (int variant = 0; variant < 2; ++variant) {
      std::string bytes(1, static_cast<char>(kind));
      for (int i = 0; i < 160; ++i) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        bytes.push_back(static_cast<char>(state >> 56));
      }
      qi_fuzz::write_seed(std::string(qi::kInferableQuantizers[kind].class_name) + "_" +
                              std::to_string(variant),
                          bytes);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (qi_fuzz::seed_dir() != nullptr) write_seeds();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qi_fuzz::Bytes b(data, size);
  const auto& info = qi::kInferableQuantizers[b.u8() % qi::kInferableQuantizers.size()];
  const qi::QuantizerParams params = fuzz_params(b);

  const int64_t rank = b.in_range(0, kMaxRank);
  Shape sizes(static_cast<size_t>(rank));
  for (int64_t& s : sizes) s = b.in_range(0, kMaxSize);
  // 0: in place; 1: separate contiguous output; 2: separate strided output; 3: output in the
  // input's buffer at an offset (overlapping unless it is the very same view).
  const int mode = static_cast<int>(b.u8() % 4);
  Shape in_strides;
  if (mode == 0 || b.flag()) {
    in_strides = non_overlapping_strides(b, sizes);
  } else {  // reads only: 0 and overlapping strides are allowed
    in_strides.resize(sizes.size());
    for (int64_t& s : in_strides) s = b.in_range(0, 7);
  }
  const int64_t in_offset = b.in_range(0, 3);
  const Shape out_strides = mode == 0 ? in_strides
                            : mode == 1 ? qi::TensorView::contiguous_strides(sizes)
                                        : non_overlapping_strides(b, sizes);
  const int64_t out_offset = mode == 3 ? b.in_range(0, 8) : b.in_range(0, 3);

  const int64_t in_span = span_of(sizes, in_strides);
  const int64_t out_span = span_of(sizes, out_strides);
  std::vector<float> in_buf(static_cast<size_t>(in_offset + in_span + (mode == 3 ? out_offset + out_span : 0)));
  for (float& x : in_buf) x = fuzz_float(b);
  std::vector<float> out_buf(mode == 0 || mode == 3 ? 0 : static_cast<size_t>(out_offset + out_span),
                             kSentinel);
  const std::vector<float> in_before = in_buf;

  float* in_data = in_buf.data() + in_offset;
  float* out_data = mode == 0 ? in_data : mode == 3 ? in_buf.data() + out_offset : out_buf.data() + out_offset;
  const qi::ConstTensorView in(in_data, sizes, in_strides);
  const qi::TensorView out(out_data, sizes, out_strides);

  std::unique_ptr<qi::BaseInferableQuantizer> q;
  bool applied = false;
  qi_fuzz::expect_only_qi_errors("make_inferable_quantizer", [&] {
    q = qi::make_inferable_quantizer(info.kind, params);
  });
  if (!q) return 0;
  qi_fuzz::expect_only_qi_errors("apply", [&] {
    q->apply(in, out);
    applied = true;
  });
  if (!applied) {
    // A refused call writes nothing.
    QI_FUZZ_CHECK(identical(in_buf, in_before), info.class_name, ": a refused apply changed its input");
    for (float v : out_buf) QI_FUZZ_CHECK(same_bits(v, kSentinel), info.class_name, ": a refused apply wrote");
    return 0;
  }

  const bool lut = info.family == qi::ParamFamily::kLutWeights ||
                   info.family == qi::ParamFamily::kLutActivation;
  if (qi_fuzz::known_unfixed_finding(q->params(), lut)) return 0;
  // The expected values, from the input as it was.
  const qi::ConstTensorView in_was(in_before.data() + in_offset, sizes, in_strides);
  const std::vector<float> want =
      qi::reference::fake_quant(info.kind, lists_of_the_class(info, q->params()), in_was);
  std::vector<char> written((mode == 0 || mode == 3 ? in_buf.size() : out_buf.size()), 0);
  const float* out_base = mode == 0 || mode == 3 ? in_buf.data() : out_buf.data();
  const int64_t base_offset = out_data - out_base;
  for_each_element(sizes, out_strides, [&](int64_t i, int64_t off) {
    const float got = out_data[off];
    written[static_cast<size_t>(base_offset + off)] = 1;
    QI_FUZZ_CHECK(same_bits(got, want[static_cast<size_t>(i)]), info.class_name, ": element ", i,
                  " is ", got, ", the reference gives ", want[static_cast<size_t>(i)], "; config ",
                  q->get_config());
  });
  // Nothing written outside the output view; a separate input is left as it was.
  if (mode == 0 || mode == 3) {
    for (size_t k = 0; k < in_buf.size(); ++k)
      if (!written[k])
        QI_FUZZ_CHECK(same_bits(in_buf[k], in_before[k]), info.class_name, ": wrote outside the view at ", k);
  } else {
    QI_FUZZ_CHECK(identical(in_buf, in_before), info.class_name, ": changed its input");
    for (size_t k = 0; k < out_buf.size(); ++k)
      if (!written[k]) QI_FUZZ_CHECK(same_bits(out_buf[k], kSentinel), info.class_name, ": wrote outside the view at ", k);
  }
  return 0;
}
