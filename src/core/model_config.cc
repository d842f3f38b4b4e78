// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/model_config.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

#include "core/group_views.h"
#include "core/json_util.h"
#include "qi/error.h"
#include "qi/inferable_quantizers.h"
#include "qi/kernels.h"
#include "qi/trainable_math.h"
#include "qi/trainable_quantizers.h"
#include "qi/version.h"

namespace qi {
namespace {

namespace ju = json_util;
using Json = ju::Json;

constexpr std::array<const char*, 11> kSpecKeys = {
    "method",   "n_bits",  "per_channel", "calibration", "percentile", "num_candidates",
    "training", "format", "group_size",  "block_size",  "block_axis"};
constexpr std::array<const char*, 9> kConfigKeys = {
    "preset",   "weights", "activations", "activation_ops", "fold_batch_norm",
    "num_bins", "overrides", "skip",      "qi_version"};
constexpr std::array<const char*, 3> kActivationOps = {"add", "cat", "matmul"};
constexpr std::array<const char*, 4> kMatchKeys = {"name", "type", "weights", "activations"};

// The spec a patch starts from when the config quantizes nothing of that kind.
TensorQuantizationSpec default_spec(bool weights) {
  TensorQuantizationSpec s;
  s.method = weights ? QuantizationMethod::SYMMETRIC : QuantizationMethod::UNIFORM;
  s.per_channel = weights;
  return s;
}

bool is_integer_method(QuantizationMethod m) {
  return m == QuantizationMethod::SYMMETRIC || m == QuantizationMethod::POWER_OF_TWO ||
         m == QuantizationMethod::UNIFORM;
}
bool is_block_method(QuantizationMethod m) {
  return m == QuantizationMethod::MX || m == QuantizationMethod::NVFP4;
}
bool is_format_method(QuantizationMethod m) {
  return m == QuantizationMethod::FLOAT || is_block_method(m);
}

// The element format of a FLOAT, MX or NVFP4 spec; null when the name is not one of its method's.
const kernels::FloatFormat* element_format(const TensorQuantizationSpec& s) {
  switch (s.method) {
    case QuantizationMethod::FLOAT: return kernels::find_float_format(s.format);
    case QuantizationMethod::MX: return kernels::find_mx_format(s.format);
    case QuantizationMethod::NVFP4: return s.format == "E2M1" ? kernels::find_float_format("E2M1") : nullptr;
    default: return nullptr;
  }
}
std::string format_names(QuantizationMethod m) {
  if (m == QuantizationMethod::FLOAT) return kernels::float_format_names();
  if (m == QuantizationMethod::MX) return kernels::mx_format_names();
  return "E2M1";
}
// The width in bits of an element format (MX's INT8: 8).
int64_t format_bits(const kernels::FloatFormat& f) { return f.ebits == 0 ? 8 : 1 + f.ebits + f.mbits; }

// The block size of an MX or NVFP4 spec.
int64_t block_size_of(const TensorQuantizationSpec& s) {
  return s.block_size.value_or(s.method == QuantizationMethod::NVFP4 ? kernels::kNvfp4BlockSize
                                                                     : 32);
}

Json optional_json(const std::optional<int64_t>& v) { return v ? Json(*v) : Json(nullptr); }

Json spec_json(const TensorQuantizationSpec& s) {
  return Json{{"method", to_string(s.method)},
              {"n_bits", s.n_bits},
              {"per_channel", s.per_channel},
              {"calibration", calibration::to_string(s.calibration)},
              {"percentile", s.percentile},
              {"num_candidates", s.num_candidates},
              {"training", s.training ? Json(to_string(*s.training)) : Json(nullptr)},
              {"format", s.format.empty() ? Json(nullptr) : Json(s.format)},
              {"group_size", optional_json(s.group_size)},
              {"block_size", optional_json(s.block_size)},
              {"block_axis", s.block_axis}};
}

void check_spec(const TensorQuantizationSpec& s, bool weights, const std::string& where) {
  const char* w = where.c_str();
  const std::string method = to_string(s.method);
  QI_CHECK(is_integer_method(s.method) || is_format_method(s.method), w,
           ": \"method\" must be one of SYMMETRIC, POWER_OF_TWO, UNIFORM, FLOAT, MX, NVFP4, got ",
           method);
  QI_CHECK(s.n_bits >= 2 && s.n_bits <= 16, w, ": \"n_bits\" must be in [2, 16], got ", s.n_bits);
  if (is_format_method(s.method)) {
    const kernels::FloatFormat* f = element_format(s);
    QI_CHECK(f != nullptr, w, ": \"format\" of ", method, " must be one of ",
             format_names(s.method), ", got \"", s.format, "\"");
    QI_CHECK(s.n_bits == format_bits(*f), w, ": \"n_bits\" must be ", format_bits(*f),
             " for ", method, " ", s.format, " (or left out: the format gives it), got ", s.n_bits);
    QI_CHECK(s.calibration == calibration::Method::kMinMax, w, ": \"calibration\" must be minmax for ",
             method, " (its scales come from max |x|), got ", calibration::to_string(s.calibration));
    QI_CHECK(!is_block_method(s.method) || !s.per_channel, w,
             ": \"per_channel\" must be false for ", method, ": its scales are per block");
  } else {
    QI_CHECK(s.format.empty(), w, ": \"format\" applies to FLOAT, MX and NVFP4, not ", method,
             "; give null");
  }
  if (s.group_size) {
    QI_CHECK(weights, w, ": \"group_size\" applies to weights: activation quantizers are per tensor");
    QI_CHECK(!is_block_method(s.method), w, ": \"group_size\" does not apply to ", method,
             ", whose blocks are \"block_size\"");
    QI_CHECK(*s.group_size >= 1, w, ": \"group_size\" must be >= 1 (or null: no groups), got ",
             *s.group_size);
  }
  if (s.block_size) {
    QI_CHECK(is_block_method(s.method), w, ": \"block_size\" applies to MX and NVFP4, not ",
             method, "; give null");
    QI_CHECK(s.method != QuantizationMethod::NVFP4 || *s.block_size == kernels::kNvfp4BlockSize,
             w, ": \"block_size\" of NVFP4 is 16, got ", *s.block_size);
    QI_CHECK(*s.block_size >= 1, w, ": \"block_size\" must be >= 1, got ", *s.block_size);
  }
  if (s.block_axis != -1) {
    QI_CHECK(is_block_method(s.method), w, ": \"block_axis\" applies to MX and NVFP4, not ",
             method);
    QI_CHECK(!weights, w, ": \"block_axis\" applies to activations: weights block their input "
             "axis");
  }
  QI_CHECK(weights || !s.per_channel, w,
           ": \"per_channel\" must be false: activation quantizers are per tensor");
  QI_CHECK(s.percentile > 0 && s.percentile <= 100, w,
           ": \"percentile\" must be in (0, 100], got ", s.percentile);
  QI_CHECK(s.num_candidates >= 1, w, ": \"num_candidates\" must be >= 1, got ", s.num_candidates);
  QI_CHECK(s.calibration != calibration::Method::kKl || s.method != QuantizationMethod::UNIFORM, w,
           ": \"calibration\" kl gives a symmetric threshold; use it with SYMMETRIC or "
           "POWER_OF_TWO, not UNIFORM");
  QI_CHECK(s.calibration != calibration::Method::kKl || s.n_bits <= 12, w,
           ": \"calibration\" kl takes \"n_bits\" <= 12, got ", s.n_bits);
  QI_CHECK(!s.training || *s.training == TrainingMethod::STE || *s.training == TrainingMethod::LSQ,
           w, ": \"training\" must be null, \"STE\" or \"LSQ\", got \"", to_string(*s.training),
           "\"");
}

// `base` with the keys of the object `patch` changed; validated.
TensorQuantizationSpec patched(TensorQuantizationSpec s, const Json& patch, bool weights,
                               const std::string& where) {
  const char* w = where.c_str();
  const QuantizationMethod base_method = s.method;
  const std::string base_format = s.format;
  QI_CHECK(patch.is_object(), w, ": expected an object of quantization settings or null, got ",
           patch.type_name(), " ", patch.dump());
  ju::reject_unknown_keys(patch, kSpecKeys, w);
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    const std::string& k = it.key();
    const Json& v = it.value();
    if (k == "method") {
      try {
        s.method = quantization_method_from_string(ju::get_string(v, k, w));
      } catch (const Error& e) {
        throw Error(str_cat(w, ": \"method\": ", e.what()));
      }
    } else if (k == "n_bits") {
      s.n_bits = ju::get_int(v, k, w);
    } else if (k == "per_channel") {
      s.per_channel = ju::get_bool(v, k, w);
    } else if (k == "calibration") {
      try {
        s.calibration = calibration::method_from_string(ju::get_string(v, k, w));
      } catch (const Error& e) {
        throw Error(str_cat(w, ": \"calibration\": ", e.what()));
      }
    } else if (k == "percentile") {
      s.percentile = ju::get_double(v, k, w);
    } else if (k == "num_candidates") {
      s.num_candidates = ju::get_int(v, k, w);
    } else if (k == "training") {
      if (v.is_null()) {
        s.training.reset();
      } else {
        const std::string name = ju::get_string(v, k, w);
        QI_CHECK(name == "STE" || name == "LSQ", w,
                 ": \"training\" must be null, \"STE\" or \"LSQ\", got \"", name, "\"");
        s.training = training_method_from_string(name);
      }
    } else if (k == "format") {
      s.format = v.is_null() ? std::string() : ju::get_string(v, k, w);
    } else if (k == "group_size") {
      s.group_size = v.is_null() ? std::nullopt : std::optional<int64_t>(ju::get_int(v, k, w));
    } else if (k == "block_size") {
      s.block_size = v.is_null() ? std::nullopt : std::optional<int64_t>(ju::get_int(v, k, w));
    } else if (k == "block_axis") {
      s.block_axis = ju::get_int(v, k, w);
    }
  }
  // A change of method brings the new method's defaults for what the patch leaves out: a format
  // method calibrates by minmax and takes E4M3 (or keeps a format of the old method that is
  // one of its own), block formats are not per channel, the other methods have no format.
  const auto given = [&](const char* key) { return patch.contains(key); };
  if (s.method != base_method) {
    if (is_format_method(s.method)) {
      if (!given("format")) {
        s.format = base_format;
        if (element_format(s) == nullptr) s.format = s.method == QuantizationMethod::NVFP4 ? "E2M1" : "E4M3";
      }
      if (!given("calibration")) s.calibration = calibration::Method::kMinMax;
      if (is_block_method(s.method) && !given("per_channel")) s.per_channel = false;
      if (is_block_method(s.method) && !given("group_size")) s.group_size.reset();
    } else if (!given("format")) {
      s.format.clear();
    }
    if (!is_block_method(s.method) && !given("block_size")) s.block_size.reset();
    if (!is_block_method(s.method) && !given("block_axis")) s.block_axis = -1;
  }
  // The format gives the width.
  if (is_format_method(s.method) && !given("n_bits"))
    if (const kernels::FloatFormat* f = element_format(s)) s.n_bits = format_bits(*f);
  check_spec(s, weights, where);
  return s;
}

// A spec, null, or (in a patch) absent.
std::optional<TensorQuantizationSpec> apply_patch(const std::optional<TensorQuantizationSpec>& s,
                                                  const Json& patch, bool weights,
                                                  const std::string& where) {
  if (patch.is_null()) return std::nullopt;
  return patched(s ? *s : default_spec(weights), patch, weights, where);
}

LayerMatch match_of(const Json& j, const std::string& where, bool with_patches) {
  const char* w = where.c_str();
  if (j.is_string()) {
    QI_CHECK(!with_patches, w, ": expected an object {\"name\", \"type\", \"weights\", "
             "\"activations\"}, got string ", j.dump());
    return LayerMatch{j.get<std::string>(), ""};
  }
  QI_CHECK(j.is_object(), w, ": expected ", with_patches ? "an object" : "a name pattern or an object",
           ", got ", j.type_name(), " ", j.dump());
  if (with_patches) {
    ju::reject_unknown_keys(j, kMatchKeys, w);
  } else {
    ju::reject_unknown_keys(j, std::array<const char*, 2>{"name", "type"}, w);
  }
  LayerMatch m;
  if (j.contains("name")) m.name = ju::get_string(j["name"], "name", w);
  if (j.contains("type")) m.type = ju::get_string(j["type"], "type", w);
  QI_CHECK(!m.name.empty() || !m.type.empty(), w, ": give \"name\" (a pattern) and/or \"type\"");
  return m;
}

Json match_json(const LayerMatch& m) {
  Json j = Json::object();
  if (!m.name.empty()) j["name"] = m.name;
  if (!m.type.empty()) j["type"] = m.type;
  return j;
}

ModelQuantizationConfig preset_config(const std::string& name) {
  ModelQuantizationConfig c;
  TensorQuantizationSpec w;  // 8-bit per-channel symmetric weights, MSE
  w.per_channel = true;
  w.calibration = calibration::Method::kMse;
  TensorQuantizationSpec a = default_spec(false);  // 8-bit uniform activations, MSE
  a.calibration = calibration::Method::kMse;
  if (name == "w8a8") {
    c.weights = w;
    c.activations = a;
  } else if (name == "w4a8_lsq") {
    w.n_bits = 4;
    w.training = TrainingMethod::LSQ;
    a.training = TrainingMethod::LSQ;
    c.weights = w;
    c.activations = a;
  } else if (name == "w8_weight_only") {
    c.weights = w;
    c.activation_ops.clear();
  } else {
    std::string known;
    for (const auto& n : ModelQuantizationConfig::preset_names())
      known += (known.empty() ? "" : ", ") + n;
    throw Error(str_cat("model config: unknown preset \"", name, "\"; known presets: ", known));
  }
  return c;
}

}  // namespace

bool TensorQuantizationSpec::operator==(const TensorQuantizationSpec& o) const {
  return spec_json(*this) == spec_json(o);
}

std::string TensorQuantizationSpec::to_json() const { return spec_json(*this).dump(); }

TensorQuantizationSpec TensorQuantizationSpec::from_json(const std::string& text, bool weights) {
  const char* what = weights ? "weights spec" : "activations spec";
  return patched(default_spec(weights), ju::parse(text, what), weights, what);
}

namespace {
std::vector<double> pot_ceil(std::vector<double> t) {
  for (double& v : t) v = trainable::power_of_two_ceil(v);
  return t;
}
}  // namespace

namespace {

// The integer or FLOAT calibration of a view: thresholds (FLOAT: max |x|, turned into scales by
// the caller), or ranges; per channel along `axis` when it is set.
CalibratedParams calibrate_view(const TensorQuantizationSpec& spec, ConstTensorView w,
                                std::optional<int64_t> axis) {
  namespace cal = calibration;
  CalibratedParams out;
  const bool histogram = spec.calibration == cal::Method::kPercentile ||
                         spec.calibration == cal::Method::kKl;
  cal::Histogram h(2048, axis);
  if (histogram) h.update(w);
  if (spec.method == QuantizationMethod::UNIFORM) {
    cal::Range r;
    if (spec.calibration == cal::Method::kMinMax) r = cal::range_min_max(w, axis);
    else if (spec.calibration == cal::Method::kMse)
      r = cal::range_mse(w, axis, spec.n_bits, /*activation=*/false, spec.num_candidates);
    else r = h.range_percentile(spec.percentile);  // kl is refused for UNIFORM by check_spec
    out.min_range = r.min;
    out.max_range = r.max;
    return out;
  }
  const bool pot = spec.method == QuantizationMethod::POWER_OF_TWO;
  switch (spec.calibration) {
    case cal::Method::kMinMax: out.threshold = cal::threshold_max(w, axis); break;
    case cal::Method::kMse:
      out.threshold = cal::threshold_mse(w, axis, spec.n_bits, true, pot, spec.num_candidates);
      break;
    case cal::Method::kPercentile: out.threshold = h.threshold_percentile(spec.percentile); break;
    case cal::Method::kKl: out.threshold = h.threshold_kl(spec.n_bits, true); break;
  }
  if (pot) out.threshold = pot_ceil(out.threshold);
  return out;
}

// FLOAT: a threshold t becomes the scale t / (the format's largest value); NVFP4: max |x|
// becomes the tensor scale amax / (448 * 6), none for an all-zero (or non-finite) tensor.
void float_scales(const TensorQuantizationSpec& spec, CalibratedParams& p) {
  const double max = element_format(spec)->max;
  p.scale.clear();
  for (double t : p.threshold) p.scale.push_back(t / max);
  p.threshold.clear();
}
std::optional<double> nvfp4_tensor_scale(double amax) {
  if (!(amax > 0) || !std::isfinite(amax)) return std::nullopt;
  return amax / (448.0 * 6.0);
}

std::string shape_string(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

int64_t weight_input_axis(int64_t rank, int64_t channel_axis) {
  QI_CHECK(rank >= 2, "weight_input_axis: groups and blocks lie along a weight's input axis, "
           "which a weight of rank ", rank, " does not have");
  const int64_t c = channel_axis < 0 ? channel_axis + rank : channel_axis;
  QI_CHECK(c >= 0 && c < rank, "weight_input_axis: channel_axis ", channel_axis,
           " is out of range for a weight of rank ", rank);
  if (c == rank - 1) return rank - 2;
  return c == 0 ? 1 : 0;
}

CalibratedParams calibrate_weights(const TensorQuantizationSpec& spec, ConstTensorView w,
                                   int64_t channel_axis) {
  const int64_t a = channel_axis < 0 ? channel_axis + w.dim() : channel_axis;
  QI_CHECK(a >= 0 && a < w.dim(), "calibrate_weights: channel_axis ", channel_axis,
           " is out of range for a weight of rank ", w.dim());
  const std::optional<int64_t> axis = spec.per_channel ? std::optional<int64_t>(a) : std::nullopt;
  const std::string method = to_string(spec.method);
  if (is_block_method(spec.method)) {
    const int64_t in = weight_input_axis(w.dim(), a);
    const int64_t block = block_size_of(spec);
    QI_CHECK(w.sizes[in] % block == 0, "calibrate_weights: ", method, " blocks of ", block,
             " elements lie along the weight's input axis ", in, ", whose size ", w.sizes[in],
             " is not a multiple of ", block, " (weight sizes ", shape_string(w.sizes),
             "); skip this layer or give it other weights with an override");
    CalibratedParams out;
    if (spec.method == QuantizationMethod::NVFP4)
      out.tensor_scale = nvfp4_tensor_scale(calibration::threshold_max(w, std::nullopt, 0.0)[0]);
    return out;
  }
  CalibratedParams out;
  if (!spec.group_size) {
    out = calibrate_view(spec, w, axis);
  } else {
    // Each group, the last one shorter when the axis is ragged, calibrated on its own elements.
    std::vector<std::vector<double>> threshold, min_range, max_range;
    for (const ConstTensorView& part :
         detail::group_views(w, weight_input_axis(w.dim(), a), *spec.group_size)) {
      CalibratedParams p = calibrate_view(spec, part, axis);
      threshold.push_back(std::move(p.threshold));
      min_range.push_back(std::move(p.min_range));
      max_range.push_back(std::move(p.max_range));
    }
    out.threshold = detail::interleave(threshold);
    out.min_range = detail::interleave(min_range);
    out.max_range = detail::interleave(max_range);
  }
  if (spec.method == QuantizationMethod::FLOAT) float_scales(spec, out);
  return out;
}

CalibratedParams calibrate_activations(const TensorQuantizationSpec& spec,
                                       const calibration::Histogram& h) {
  namespace cal = calibration;
  QI_CHECK(h.channels() == 1, "calibrate_activations: expected a per-tensor histogram, got ",
           h.channels(), " channels");
  CalibratedParams out;
  if (spec.method == QuantizationMethod::MX) return out;
  if (spec.method == QuantizationMethod::NVFP4) {
    out.tensor_scale = nvfp4_tensor_scale(h.threshold_max(0.0)[0]);
    return out;
  }
  if (spec.method == QuantizationMethod::FLOAT) {
    out.threshold = h.threshold_max();
    float_scales(spec, out);
    return out;
  }
  if (spec.method == QuantizationMethod::UNIFORM) {
    cal::Range r;
    if (spec.calibration == cal::Method::kMinMax) r = h.range_min_max();
    else if (spec.calibration == cal::Method::kPercentile) r = h.range_percentile(spec.percentile);
    else r = h.range_mse(spec.n_bits, spec.num_candidates);
    out.min_range = r.min;
    out.max_range = r.max;
    return out;
  }
  out.is_signed = h.range_min_max().min[0] < 0;
  const bool pot = spec.method == QuantizationMethod::POWER_OF_TWO;
  switch (spec.calibration) {
    case cal::Method::kMinMax: out.threshold = h.threshold_max(); break;
    case cal::Method::kPercentile: out.threshold = h.threshold_percentile(spec.percentile); break;
    case cal::Method::kMse:
      out.threshold = h.threshold_mse(spec.n_bits, out.is_signed, pot, spec.num_candidates);
      break;
    case cal::Method::kKl: out.threshold = h.threshold_kl(spec.n_bits, out.is_signed); break;
  }
  if (pot) out.threshold = pot_ceil(out.threshold);
  return out;
}

bool LayerOverride::operator==(const LayerOverride& o) const {
  auto parse = [](const std::optional<std::string>& s) {
    return s ? ju::parse(*s, "LayerOverride") : Json("absent");
  };
  return match == o.match && parse(weights) == parse(o.weights) &&
         parse(activations) == parse(o.activations);
}

bool ModelQuantizationConfig::operator==(const ModelQuantizationConfig& o) const {
  return to_json() == o.to_json();
}

bool glob_match(const std::string& pattern, const std::string& text) {
  // Iterative matcher with backtracking to the last '*'.
  size_t p = 0, t = 0, star = std::string::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool LayerMatch::matches(const std::string& layer_name, const std::string& layer_type) const {
  return (name.empty() || glob_match(name, layer_name)) && (type.empty() || type == layer_type);
}

std::vector<std::string> ModelQuantizationConfig::preset_names() {
  return {"w8a8", "w4a8_lsq", "w8_weight_only"};
}

ModelQuantizationConfig ModelQuantizationConfig::preset(const std::string& name) {
  return preset_config(name);
}

ModelQuantizationConfig ModelQuantizationConfig::from_json(const std::string& text) {
  const char* what = "model config";
  const Json j = ju::parse(text, what);
  ju::require_object(j, what);
  ju::reject_unknown_keys(j, kConfigKeys, what);
  ModelQuantizationConfig c;
  if (j.contains("preset")) c = preset_config(ju::get_string(j["preset"], "preset", what));
  if (j.contains("weights")) c.weights = apply_patch(c.weights, j["weights"], true, "model config: weights");
  if (j.contains("activations"))
    c.activations = apply_patch(c.activations, j["activations"], false, "model config: activations");
  if (j.contains("activation_ops")) {
    const Json& ops = j["activation_ops"];
    QI_CHECK(ops.is_array(), what, ": \"activation_ops\" must be a list, got ", ops.type_name(),
             " ", ops.dump());
    c.activation_ops.clear();
    for (size_t i = 0; i < ops.size(); ++i)
      c.activation_ops.push_back(ju::get_string(ops[i], str_cat("activation_ops[", i, "]"), what));
  }
  if (j.contains("fold_batch_norm"))
    c.fold_batch_norm = ju::get_bool(j["fold_batch_norm"], "fold_batch_norm", what);
  if (j.contains("num_bins")) c.num_bins = ju::get_int(j["num_bins"], "num_bins", what);
  if (j.contains("overrides")) {
    const Json& list = j["overrides"];
    QI_CHECK(list.is_array(), what, ": \"overrides\" must be a list, got ", list.type_name(), " ",
             list.dump());
    c.overrides.clear();
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string where = str_cat("model config: overrides[", i, "]");
      LayerOverride o;
      o.match = match_of(list[i], where, /*with_patches=*/true);
      if (list[i].contains("weights")) o.weights = list[i]["weights"].dump();
      if (list[i].contains("activations")) o.activations = list[i]["activations"].dump();
      c.overrides.push_back(std::move(o));
    }
  }
  if (j.contains("skip")) {
    const Json& list = j["skip"];
    QI_CHECK(list.is_array(), what, ": \"skip\" must be a list, got ", list.type_name(), " ",
             list.dump());
    c.skip.clear();
    for (size_t i = 0; i < list.size(); ++i)
      c.skip.push_back(match_of(list[i], str_cat("model config: skip[", i, "]"), false));
  }
  c.validate();
  return c;
}

void ModelQuantizationConfig::validate() const {
  if (weights) check_spec(*weights, true, "model config: weights");
  if (activations) check_spec(*activations, false, "model config: activations");
  for (size_t i = 0; i < activation_ops.size(); ++i) {
    bool known = false;
    for (const char* op : kActivationOps) known = known || activation_ops[i] == op;
    QI_CHECK(known, "model config: activation_ops[", i, "] must be one of add, cat, matmul, got \"",
             activation_ops[i], "\"");
  }
  QI_CHECK(num_bins >= 16 && num_bins <= (1 << 20),
           "model config: \"num_bins\" must be in [16, 1048576], got ", num_bins);
  for (size_t i = 0; i < overrides.size(); ++i) {
    const std::string where = str_cat("model config: overrides[", i, "]");
    const auto& o = overrides[i];
    QI_CHECK(!o.match.name.empty() || !o.match.type.empty(), where,
             ": give \"name\" (a pattern) and/or \"type\"");
    // Each patch must give a valid spec from the config's own (what it changes first).
    if (o.weights) apply_patch(weights, ju::parse(*o.weights, where.c_str()), true, where + ".weights");
    if (o.activations)
      apply_patch(activations, ju::parse(*o.activations, where.c_str()), false,
                  where + ".activations");
  }
  for (size_t i = 0; i < skip.size(); ++i)
    QI_CHECK(!skip[i].name.empty() || !skip[i].type.empty(), "model config: skip[", i,
             "]: give \"name\" (a pattern) and/or \"type\"");
}

std::string ModelQuantizationConfig::to_json() const {
  Json j;
  j["weights"] = weights ? spec_json(*weights) : Json(nullptr);
  j["activations"] = activations ? spec_json(*activations) : Json(nullptr);
  j["activation_ops"] = activation_ops;
  j["fold_batch_norm"] = fold_batch_norm;
  j["num_bins"] = num_bins;
  Json list = Json::array();
  for (const auto& o : overrides) {
    Json e = match_json(o.match);
    if (o.weights) e["weights"] = ju::parse(*o.weights, "model config");
    if (o.activations) e["activations"] = ju::parse(*o.activations, "model config");
    list.push_back(e);
  }
  j["overrides"] = list;
  Json skips = Json::array();
  for (const auto& s : skip) skips.push_back(match_json(s));
  j["skip"] = skips;
  j["qi_version"] = kVersion;
  return j.dump();
}

ModelQuantizationConfig::Layer ModelQuantizationConfig::resolve(const std::string& name,
                                                                const std::string& type) const {
  Layer out;
  for (const auto& s : skip)
    if (s.matches(name, type)) {
      out.skipped = true;
      return out;
    }
  out.weights = weights;
  out.activations = activations;
  for (size_t i = 0; i < overrides.size(); ++i) {
    const auto& o = overrides[i];
    if (!o.match.matches(name, type)) continue;
    const std::string where = str_cat("model config: overrides[", i, "]");
    if (o.weights)
      out.weights = apply_patch(out.weights, ju::parse(*o.weights, where.c_str()), true,
                                where + ".weights");
    if (o.activations)
      out.activations = apply_patch(out.activations, ju::parse(*o.activations, where.c_str()),
                                    false, where + ".activations");
  }
  return out;
}

// ---- the quantizers of calibrated sites ----------------------------------------------------------

namespace {

// A per-channel parameter as a trainable config holds it: shaped [1, .., n, .., 1] along the
// channel axis of a rank-`rank` weight, or one number per tensor.
QuantizationParam trainable_param(const std::vector<double>& v, bool per_channel, int64_t rank,
                                  int64_t axis, bool grouped) {
  QI_CHECK(!v.empty(), "make_weights_quantizer: no calibrated value");
  if (grouped) return ParamArray{{static_cast<int64_t>(v.size())}, v};
  if (!per_channel) return v[0];
  std::vector<int64_t> shape(static_cast<size_t>(rank), 1);
  shape[static_cast<size_t>(axis)] = static_cast<int64_t>(v.size());
  return ParamArray{shape, v};
}

// What an inferable weights or activation quantizer takes from its spec and calibration.
QuantizerParams inferable_params(const TensorQuantizationSpec& spec,
                                 const CalibratedParams& params) {
  QuantizerParams p;
  p.num_bits = spec.n_bits;
  p.threshold = params.threshold;
  p.min_range = params.min_range;
  p.max_range = params.max_range;
  p.scale = params.scale;
  p.tensor_scale = params.tensor_scale;
  if (spec.method == QuantizationMethod::FLOAT || spec.method == QuantizationMethod::MX)
    p.format = spec.format;
  if (is_block_method(spec.method)) p.block_size = block_size_of(spec);
  return p;
}

// The trainable format quantizers' parameters of a spec: the element format as n_bits and
// "ebits" (MX's INT8: 8 and 0), the blocks, and the calibrated scales.
void set_format_params(const TensorQuantizationSpec& spec, const CalibratedParams& params,
                       int64_t block_axis, int64_t* n_bits, QuantizationParams* out) {
  const std::string name = spec.method == QuantizationMethod::NVFP4 ? "E2M1" : spec.format;
  const kernels::FloatFormat* f = kernels::find_mx_format(name);
  QI_CHECK(f != nullptr, "make_quantizer: unknown format \"", name, "\"");
  *n_bits = f->ebits == 0 ? 8 : 1 + f->ebits + f->mbits;
  (*out)["ebits"] = static_cast<double>(f->ebits);
  if (is_block_method(spec.method)) (*out)["block_axis"] = static_cast<double>(block_axis);
  if (spec.method == QuantizationMethod::MX)
    (*out)["block_size"] = static_cast<double>(block_size_of(spec));
  if (params.tensor_scale) (*out)["tensor_scale"] = *params.tensor_scale;
}

}  // namespace

std::shared_ptr<BaseQuantizer> make_weights_quantizer(const TensorQuantizationSpec& spec,
                                                      const CalibratedParams& params,
                                                      int64_t rank, int64_t channel_axis) {
  QI_CHECK(rank >= 1, "make_weights_quantizer: the weight's rank must be >= 1, got ", rank);
  const int64_t axis = channel_axis < 0 ? channel_axis + rank : channel_axis;
  QI_CHECK(axis >= 0 && axis < rank, "make_weights_quantizer: channel_axis ", channel_axis,
           " is out of range for a weight of rank ", rank);
  const bool uniform = spec.method == QuantizationMethod::UNIFORM;
  const bool grouped = spec.group_size.has_value();
  if (!spec.training) {
    QuantizerParams p = inferable_params(spec, params);
    p.per_channel = spec.per_channel;
    p.channel_axis = axis;
    p.input_rank = rank;
    if (spec.group_size) {
      p.group_size = spec.group_size;
      p.group_axis = weight_input_axis(rank, axis);
    }
    if (is_block_method(spec.method)) p.block_axis = weight_input_axis(rank, axis);
    return make_inferable_quantizer(QuantizationTarget::Weights, spec.method, p);
  }
  TrainableQuantizerWeightsConfig cfg;
  cfg.weights_quantization_method = spec.method;
  cfg.weights_n_bits = spec.n_bits;
  cfg.weights_channels_axis = axis;
  cfg.weights_per_channel_threshold = spec.per_channel;
  if (!is_integer_method(spec.method)) {
    // FLOAT: its scales (per channel or group); MX and NVFP4: blocks along the input axis (NVFP4
    // LSQ learns block scales per (channel, block), started from the weight's).
    set_format_params(spec, params, weight_input_axis(rank, axis), &cfg.weights_n_bits,
                      &cfg.weights_quantization_params);
    if (spec.method == QuantizationMethod::FLOAT)
      cfg.weights_quantization_params["scale"] =
          trainable_param(params.scale, spec.per_channel, rank, axis, grouped);
    if (spec.method == QuantizationMethod::NVFP4) cfg.weights_per_channel_threshold = true;
  }
  if (spec.group_size) {
    // One value per (channel, group), in the inferable per-group order.
    cfg.weights_quantization_params["group_size"] = static_cast<double>(*spec.group_size);
    cfg.weights_quantization_params["group_axis"] =
        static_cast<double>(weight_input_axis(rank, axis));
  }
  if (uniform) {
    cfg.weights_quantization_params["range_min"] =
        trainable_param(params.min_range, spec.per_channel, rank, axis, grouped);
    cfg.weights_quantization_params["range_max"] =
        trainable_param(params.max_range, spec.per_channel, rank, axis, grouped);
  } else if (is_integer_method(spec.method)) {
    cfg.weights_quantization_params["threshold"] =
        trainable_param(params.threshold, spec.per_channel, rank, axis, grouped);
  }
  const auto& info = get_trainable_quantizer_class(QuantizationTarget::Weights, spec.method,
                                                   *spec.training);
  return std::make_shared<TrainableQuantizer>(info.kind, cfg);
}

std::shared_ptr<BaseQuantizer> make_activation_quantizer(const TensorQuantizationSpec& spec,
                                                         const CalibratedParams& params) {
  const bool uniform = spec.method == QuantizationMethod::UNIFORM;
  const std::vector<double>& first = uniform ? params.min_range
                                     : spec.method == QuantizationMethod::FLOAT ? params.scale
                                                                                : params.threshold;
  QI_CHECK(is_block_method(spec.method) ||
               (first.size() == 1 && (!uniform || params.max_range.size() == 1)),
           "make_activation_quantizer: activations take one calibrated value per tensor, got ",
           first.size());
  if (!spec.training) {
    QuantizerParams p = inferable_params(spec, params);
    p.is_signed = params.is_signed;
    p.block_axis = spec.block_axis;
    return make_inferable_quantizer(QuantizationTarget::Activation, spec.method, p);
  }
  TrainableQuantizerActivationConfig cfg;
  cfg.activation_quantization_method = spec.method;
  cfg.activation_n_bits = spec.n_bits;
  if (!is_integer_method(spec.method)) {
    set_format_params(spec, params, spec.block_axis, &cfg.activation_n_bits,
                      &cfg.activation_quantization_params);
    if (spec.method == QuantizationMethod::FLOAT)
      cfg.activation_quantization_params["scale"] = params.scale[0];
  } else if (uniform) {
    cfg.activation_quantization_params["range_min"] = params.min_range[0];
    cfg.activation_quantization_params["range_max"] = params.max_range[0];
  } else {
    cfg.activation_quantization_params["threshold"] = params.threshold[0];
    cfg.activation_quantization_params["is_signed"] = params.is_signed;
  }
  const auto& info = get_trainable_quantizer_class(QuantizationTarget::Activation, spec.method,
                                                   *spec.training);
  return std::make_shared<TrainableQuantizer>(info.kind, cfg);
}

}  // namespace qi
