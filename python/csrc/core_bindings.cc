// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// quantizers_infrastructure._core: thin pybind11 bindings over qi::core. Every argument rule lives
// in C++; this file only turns numpy arrays into strided views, qi::Error into ValueError, and
// releases the GIL around the kernels.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "qi/qi.h"
#include "qi/dispatcher.h"
#include "qi/model_config.h"

namespace py = pybind11;

namespace {

using QuantizerPtr = std::shared_ptr<qi::BaseInferableQuantizer>;

// The input of apply/apply_: a float32 ndarray in native byte order, else TypeError/ValueError
// naming what was given. No silent conversion: a float64 array would be quantized on a float32
// grid and returned in another dtype, which hides precision loss from the caller.
py::array require_float32_array(const qi::BaseInferableQuantizer& q, const py::handle& obj) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(qi::str_cat(q.class_name(), ": expected a numpy.ndarray, got ",
                                     std::string(py::str(py::type::of(obj).attr("__name__")))));
  }
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().equal(py::dtype::of<float>())) {
    throw py::value_error(qi::str_cat(q.class_name(), ": input must be a float32 array, got dtype ",
                                      std::string(py::str(arr.dtype()))));
  }
  return arr;
}

// Row-major strides in elements for `sizes`, counting empty dimensions as 1 so that no stride is
// 0 (qi rejects stride-0 outputs in dimensions of size > 1, even in empty tensors).
qi::Shape dense_strides(const qi::Shape& sizes) {
  qi::Shape strides(sizes.size());
  int64_t acc = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    strides[i] = acc;
    acc *= std::max<int64_t>(sizes[i], 1);
  }
  return strides;
}

// Sizes and element strides of `arr` when qi's strided views can address it directly: strides
// that are non-negative multiples of the item size and an aligned data pointer. Strides of
// dimensions of size <= 1, and all strides of empty arrays, are never used to address memory, so
// they are replaced by dense values (numpy leaves arbitrary numbers there, which would only
// defeat the drivers' contiguity checks). `for_output` also rejects overlapping (stride 0)
// dimensions.
bool element_view(const py::array& arr, bool for_output, qi::Shape* sizes, qi::Shape* strides) {
  const auto ndim = static_cast<size_t>(arr.ndim());
  sizes->assign(ndim, 0);
  for (size_t i = 0; i < ndim; ++i)
    (*sizes)[i] = static_cast<int64_t>(arr.shape(static_cast<py::ssize_t>(i)));
  *strides = dense_strides(*sizes);
  if (arr.size() == 0) return true;
  if (reinterpret_cast<std::uintptr_t>(arr.data()) % alignof(float) != 0) return false;
  int64_t inner = 1;  // dense stride for the next size-1 dimension, from the right
  for (size_t i = ndim; i-- > 0;) {
    const int64_t size = (*sizes)[i];
    const int64_t bytes = static_cast<int64_t>(arr.strides(static_cast<py::ssize_t>(i)));
    if (size <= 1) {
      (*strides)[i] = inner;
    } else {
      if (bytes < 0 || bytes % static_cast<int64_t>(sizeof(float)) != 0) return false;
      if (for_output && bytes == 0) return false;
      (*strides)[i] = bytes / static_cast<int64_t>(sizeof(float));
    }
    inner = (*strides)[i] * size;
  }
  return true;
}

py::array contiguous_copy(const py::array& arr) {
  return py::module_::import("numpy").attr("array")(arr, py::arg("dtype") = "float32",
                                                    py::arg("order") = "C", py::arg("copy") = true);
}

// Q(x) into a new C-contiguous float32 array of x's shape; x may have any strides.
py::array apply(const qi::BaseInferableQuantizer& q, const py::handle& obj) {
  py::array in = require_float32_array(q, obj);
  qi::Shape sizes, strides;
  if (!element_view(in, /*for_output=*/false, &sizes, &strides)) {
    in = contiguous_copy(in);
    element_view(in, false, &sizes, &strides);
  }
  py::array_t<float, py::array::c_style> out(std::vector<py::ssize_t>(sizes.begin(), sizes.end()));
  qi::ConstTensorView vin(static_cast<const float*>(in.data()), sizes, strides);
  qi::TensorView vout(out.mutable_data(), sizes, dense_strides(sizes));
  {
    py::gil_scoped_release release;
    q.apply(vin, vout);
  }
  return std::move(out);
}

// x = Q(x) in place; returns x. Views qi cannot address directly (negative or odd strides,
// overlapping dimensions) are quantized through a contiguous copy and written back.
py::array apply_inplace(const qi::BaseInferableQuantizer& q, const py::handle& obj) {
  py::array arr = require_float32_array(q, obj);
  if (!arr.writeable()) {
    throw py::value_error(
        qi::str_cat(q.class_name(), ": in-place quantization needs a writeable array"));
  }
  qi::Shape sizes, strides;
  if (element_view(arr, /*for_output=*/true, &sizes, &strides)) {
    qi::TensorView view(static_cast<float*>(arr.mutable_data()), sizes, strides);
    py::gil_scoped_release release;
    q.apply_inplace(view);
  } else {
    py::array tmp = contiguous_copy(arr);
    element_view(tmp, true, &sizes, &strides);
    qi::TensorView view(static_cast<float*>(tmp.mutable_data()), sizes, strides);
    {
      py::gil_scoped_release release;
      q.apply_inplace(view);
    }
    arr.attr("__setitem__")(py::ellipsis(), tmp);
  }
  return arr;
}

py::array read_only(const std::vector<float>& v) {
  py::array_t<float> a(static_cast<py::ssize_t>(v.size()), v.data());
  a.attr("setflags")(py::arg("write") = false);
  return std::move(a);
}

// The kernel plan as a dict of read-only float32 arrays (per channel) and scalars.
py::dict plan_dict(const qi::kernels::Plan& plan) {
  py::dict d;
  std::visit(
      [&d](const auto& p) {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, qi::kernels::AffineTorchPlan>) {
          d["kind"] = "affine_torch";
          d["scale"] = read_only(p.scale);
          d["inv_scale"] = read_only(p.inv_scale);
          d["zero_point"] = read_only(p.zero_point);
          d["qmin"] = p.qmin;
          d["qmax"] = p.qmax;
        } else if constexpr (std::is_same_v<P, qi::kernels::AffineTfPlan>) {
          d["kind"] = "affine_tf";
          d["scale"] = read_only(p.scale);
          d["inv_scale"] = read_only(p.inv_scale);
          d["nudged_min"] = read_only(p.nudged_min);
          d["nudged_max"] = read_only(p.nudged_max);
          d["quant_zero"] = read_only(p.quant_zero);
          d["use_division"] = p.use_division;
        } else if constexpr (std::is_same_v<P, qi::kernels::FloatPlan>) {
          d["kind"] = "float";
          d["scale"] = read_only(p.scale);
          d["ebits"] = p.ebits;
          d["mbits"] = p.mbits;
          d["max"] = p.max;
        } else if constexpr (std::is_same_v<P, qi::kernels::MxPlan>) {
          d["kind"] = "mx";
          d["ebits"] = p.ebits;
          d["mbits"] = p.mbits;
          d["max"] = p.max;
          d["emax"] = p.emax;
          d["tensor_scale"] = p.tensor_scale;
        } else if constexpr (std::is_same_v<P, qi::kernels::Nvfp4Plan>) {
          d["kind"] = "nvfp4";
          d["tensor_scale"] = p.tensor_scale;
        } else {
          d["kind"] = "lut";
          d["divisor"] = read_only(p.divisor);
          d["lut"] = read_only(p.lut);
          d["table"] = read_only(p.table);
          d["multiplier"] = p.multiplier;
          d["lo"] = p.lo;
          d["hi"] = p.hi;
        }
      },
      plan);
  const auto& groups = qi::kernels::plan_groups(plan);
  if (groups.group_size > 0) {
    d["group_size"] = groups.group_size;  // the block size of block-scaled plans
    d["group_axis"] = groups.group_axis;
  }
  return d;
}

// WeightsUniform's zero-adjusted ranges (read-only float32, one per channel); None otherwise.
py::object adjusted_range(const qi::BaseInferableQuantizer& q, bool max) {
  const auto* u = dynamic_cast<const qi::WeightsUniformInferableQuantizer*>(&q);
  if (u == nullptr) return py::none();
  return read_only(max ? u->adjusted_max_range() : u->adjusted_min_range());
}

const qi::InferableQuantizerInfo& info_by_name(const std::string& class_name) {
  return qi::inferable_quantizer_info(class_name.c_str());
}


// ---- trainable quantizers ----

py::dict args_dict(const qi::TrainableQuantizer::Forward& f) {
  py::dict d;
  auto mode = [](qi::trainable::GradMode m) {
    return m == qi::trainable::GradMode::kLsq ? "lsq" : "ste";
  };
  switch (f.op) {
    case qi::TrainableOp::kSymmetricQuant: {
      const auto& a = f.symmetric;
      d["num_bits"] = a.num_bits;
      d["is_signed"] = a.is_signed;
      d["channel_axis"] = a.channel_axis;
      d["mode"] = mode(a.mode);
      d["grad_scale"] = a.grad_scale;
      d["grad_scale_axis"] = a.grad_scale_axis;
      d["min_threshold"] = a.min_threshold;
      d["power_of_two"] = a.power_of_two;
      d["group_size"] = a.group_size;
      d["group_axis"] = a.group_axis;
      break;
    }
    case qi::TrainableOp::kUniformQuant: {
      const auto& a = f.uniform;
      d["num_bits"] = a.num_bits;
      d["channel_axis"] = a.channel_axis;
      d["mode"] = mode(a.mode);
      d["grad_scale"] = a.grad_scale;
      d["activation"] = a.activation;
      d["grad_scale_axis"] = a.grad_scale_axis;
      d["group_size"] = a.group_size;
      d["group_axis"] = a.group_axis;
      break;
    }
    case qi::TrainableOp::kSoftRound: {
      const auto& a = f.soft_round;
      d["num_bits"] = a.num_bits;
      d["power_of_two"] = a.power_of_two;
      d["channel_axis"] = a.channel_axis;
      d["training"] = f.training;
      break;
    }
    case qi::TrainableOp::kFormatQuant: {
      const auto& a = f.format;
      d["format"] = a.format;
      d["scaling"] = qi::trainable::to_string(a.scaling);
      d["channel_axis"] = a.channel_axis;
      d["mode"] = mode(a.mode);
      d["grad_scale"] = a.grad_scale;
      d["grad_scale_axis"] = a.grad_scale_axis;
      d["group_size"] = a.group_size;
      d["group_axis"] = a.group_axis;
      d["tensor_grad_scale"] = a.tensor_grad_scale;
      break;
    }
  }
  return d;
}

using TrainablePtr = std::shared_ptr<qi::TrainableQuantizer>;

py::list variables_of(const qi::TrainableQuantizer& q, const std::vector<int64_t>& shape,
                      const py::object& weight) {
  std::vector<qi::TrainableQuantizer::Variable> vars;
  if (weight.is_none()) {
    vars = q.variables(shape);
  } else {
    auto w = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(weight);
    if (!w) throw py::value_error(qi::str_cat(q.class_name(), ": the weight must be an array"));
    qi::Shape wshape(w.shape(), w.shape() + w.ndim());
    if (wshape != shape)
      throw py::value_error(qi::str_cat(q.class_name(), ": the weight's shape differs from the "
                                        "tensor shape given"));
    vars = q.variables(shape, w.data());
  }
  py::list out;
  for (const auto& v : vars) {
    py::dict d;
    d["name"] = v.name;
    d["shape"] = py::tuple(py::cast(v.shape));
    py::array_t<float> init(std::vector<py::ssize_t>(v.shape.begin(), v.shape.end()));
    std::copy(v.initial.begin(), v.initial.end(), init.mutable_data());
    d["initial"] = init;
    d["trainable"] = v.trainable;
    d["group"] = static_cast<int>(v.group);
    out.append(d);
  }
  return out;
}

py::dict forward_of(const qi::TrainableQuantizer& q, bool training,
                    const std::vector<int64_t>& shape, int64_t activation_axis) {
  const auto f = q.forward(training, shape, activation_axis);
  py::dict d;
  d["op"] = qi::to_string(f.op);
  py::list inputs;
  for (const auto& [argument, name] : f.inputs) inputs.append(py::make_tuple(argument, name));
  d["inputs"] = inputs;
  d["requires_grad"] = f.variables_require_grad;
  d["kwargs"] = args_dict(f);
  return d;
}

std::shared_ptr<qi::BaseInferableQuantizer> convert_of(const qi::TrainableQuantizer& q,
                                                      const py::dict& values) {
  qi::TrainableQuantizer::VariableValues v;
  for (const auto& [key, value] : values) {
    auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(value);
    if (!a) throw py::value_error(qi::str_cat(q.class_name(), ": variable values must be arrays"));
    v[py::cast<std::string>(key)].assign(a.data(), a.data() + a.size());
  }
  return q.convert(v);
}


// ---- configs: Python fields <-> the core's config structs ----

std::string type_and_repr(const py::handle& v) {
  return qi::str_cat(std::string(py::str(py::type::of(v).attr("__name__"))), " ",
                     std::string(py::repr(v)));
}

bool is_bool(const py::handle& v) {
  return py::isinstance<py::bool_>(v) ||
         py::isinstance(v, py::module_::import("numpy").attr("bool_"));
}

int64_t field_int(const py::handle& v, const char* what, const std::string& name) {
  if (is_bool(v) || !py::isinstance(v, py::module_::import("numbers").attr("Integral")))
    throw qi::Error(qi::str_cat(what, ": ", name, " must be an integer, got ", type_and_repr(v)));
  return py::cast<int64_t>(py::int_(py::reinterpret_borrow<py::object>(v)));
}

bool field_bool(const py::handle& v, const char* what, const std::string& name) {
  if (!is_bool(v))
    throw qi::Error(qi::str_cat(what, ": ", name, " must be a boolean, got ", type_and_repr(v)));
  return py::cast<bool>(py::bool_(py::reinterpret_borrow<py::object>(v)));
}

double field_double(const py::handle& v, const char* what, const std::string& name) {
  if (is_bool(v) || !py::isinstance(v, py::module_::import("numbers").attr("Real")))
    throw qi::Error(qi::str_cat(what, ": ", name, " must be a number, got ", type_and_repr(v)));
  return py::cast<double>(py::float_(py::reinterpret_borrow<py::object>(v)));
}

// A QuantizationMethod given as the Python enum, its name or MCT's integer value.
qi::QuantizationMethod field_method(const py::handle& v, const char* what,
                                    const std::string& name) {
  try {
    if (py::hasattr(v, "name") && !py::isinstance<py::str>(v))
      return qi::quantization_method_from_string(py::cast<std::string>(v.attr("name")));
    if (py::isinstance<py::str>(v)) return qi::quantization_method_from_string(py::cast<std::string>(v));
    if (!is_bool(v) && py::isinstance(v, py::module_::import("numbers").attr("Integral")))
      return qi::quantization_method_from_value(py::cast<int64_t>(py::int_(py::reinterpret_borrow<py::object>(v))));
  } catch (const qi::Error& e) {
    throw qi::Error(qi::str_cat(what, ": ", name, ": ", e.what()));
  }
  throw qi::Error(qi::str_cat(what, ": ", name,
                              " must be a QuantizationMethod, a method name or MCT's integer "
                              "value, got ", type_and_repr(v)));
}

// {key: bool | number | array-like (numpy, torch, TensorFlow, nested lists)}.
qi::QuantizationParams field_params(const py::handle& v, const char* what,
                                    const std::string& name) {
  if (v.is_none()) return {};
  if (!py::isinstance<py::dict>(v))
    throw qi::Error(qi::str_cat(what, ": ", name, " must be a dict, got ", type_and_repr(v)));
  const auto np = py::module_::import("numpy");
  qi::QuantizationParams out;
  for (const auto& [key, value] : py::reinterpret_borrow<py::dict>(v)) {
    const std::string k = py::cast<std::string>(py::str(key));
    const std::string entry = qi::str_cat(name, "[\"", k, "\"]");
    if (is_bool(value)) {
      out[k] = py::cast<bool>(py::bool_(py::reinterpret_borrow<py::object>(value)));
      continue;
    }
    if (py::isinstance(value, py::module_::import("numbers").attr("Real"))) {
      out[k] = py::cast<double>(py::float_(py::reinterpret_borrow<py::object>(value)));
      continue;
    }
    py::object obj = py::reinterpret_borrow<py::object>(value);
    if (py::hasattr(obj, "detach")) obj = obj.attr("detach")().attr("cpu")().attr("numpy")();
    else if (py::hasattr(obj, "numpy") && !py::isinstance<py::array>(obj)) obj = obj.attr("numpy")();
    py::array_t<double, py::array::c_style | py::array::forcecast> a;
    try {
      a = np.attr("asarray")(obj, py::arg("dtype") = "float64");
    } catch (const py::error_already_set&) {
      throw qi::Error(qi::str_cat(what, ": ", entry, " must be a boolean, a number or an array of "
                                  "numbers, got ", type_and_repr(value)));
    }
    qi::ParamArray pa;
    pa.shape.assign(a.shape(), a.shape() + a.ndim());
    pa.values.assign(a.data(), a.data() + a.size());
    out[k] = std::move(pa);
  }
  return out;
}

std::optional<std::vector<qi::TrainableQuantizerCandidateConfig>> field_candidates(
    const py::handle& v, const char* what, const std::string& name) {
  if (v.is_none()) return std::nullopt;
  if (!py::isinstance<py::list>(v) && !py::isinstance<py::tuple>(v))
    throw qi::Error(qi::str_cat(what, ": ", name, " must be a list or None, got ", type_and_repr(v)));
  std::vector<qi::TrainableQuantizerCandidateConfig> out;
  size_t i = 0;
  for (const auto& c : v) {
    const std::string entry = qi::str_cat(name, "[", i++, "]");
    py::object n_bits, params;
    if (py::isinstance<py::dict>(c)) {
      auto d = py::reinterpret_borrow<py::dict>(c);
      n_bits = d.contains("n_bits") ? py::object(d["n_bits"]) : py::object(py::none());
      params = d.contains("quantization_params") ? py::object(d["quantization_params"])
                                                 : py::object(py::none());
    } else if (py::hasattr(c, "n_bits")) {
      n_bits = c.attr("n_bits");
      params = py::getattr(c, "quantization_params", py::none());
    } else {
      throw qi::Error(qi::str_cat(what, ": ", entry, " must be a TrainableQuantizerCandidateConfig, "
                                  "got ", type_and_repr(c)));
    }
    qi::TrainableQuantizerCandidateConfig cand;
    cand.n_bits = field_int(n_bits, what, entry + ".n_bits");
    cand.quantization_params = field_params(params, what, entry + ".quantization_params");
    out.push_back(std::move(cand));
  }
  return out;
}

py::object param_to_py(const qi::QuantizationParam& p) {
  if (const bool* b = std::get_if<bool>(&p)) return py::bool_(*b);
  if (const double* d = std::get_if<double>(&p)) return py::float_(*d);
  const auto& a = std::get<qi::ParamArray>(p);
  py::array_t<double> out(std::vector<py::ssize_t>(a.shape.begin(), a.shape.end()));
  std::copy(a.values.begin(), a.values.end(), out.mutable_data());
  return std::move(out);
}

py::dict params_to_py(const qi::QuantizationParams& params) {
  py::dict d;
  for (const auto& [k, v] : params) d[py::str(k)] = param_to_py(v);
  return d;
}

py::object candidates_to_py(
    const std::optional<std::vector<qi::TrainableQuantizerCandidateConfig>>& cands) {
  if (!cands) return py::none();
  py::list out;
  for (const auto& c : *cands) {
    py::dict d;
    d["n_bits"] = c.n_bits;
    d["quantization_params"] = params_to_py(c.quantization_params);
    out.append(d);
  }
  return std::move(out);
}

constexpr const char* kWeightsWhat = "TrainableQuantizerWeightsConfig";
constexpr const char* kActivationWhat = "TrainableQuantizerActivationConfig";

qi::TrainableQuantizerWeightsConfig weights_config_of(const py::dict& f) {
  const char* w = kWeightsWhat;
  qi::TrainableQuantizerWeightsConfig c;
  c.weights_quantization_method = field_method(f["weights_quantization_method"], w, "weights_quantization_method");
  c.weights_n_bits = field_int(f["weights_n_bits"], w, "weights_n_bits");
  c.weights_quantization_params = field_params(f["weights_quantization_params"], w, "weights_quantization_params");
  c.enable_weights_quantization = field_bool(f["enable_weights_quantization"], w, "enable_weights_quantization");
  c.weights_channels_axis = field_int(f["weights_channels_axis"], w, "weights_channels_axis");
  c.weights_per_channel_threshold = field_bool(f["weights_per_channel_threshold"], w, "weights_per_channel_threshold");
  c.min_threshold = field_double(f["min_threshold"], w, "min_threshold");
  c.weights_bits_candidates = field_candidates(f["weights_bits_candidates"], w, "weights_bits_candidates");
  c.validate();
  return c;
}

qi::TrainableQuantizerActivationConfig activation_config_of(const py::dict& f) {
  const char* w = kActivationWhat;
  qi::TrainableQuantizerActivationConfig c;
  c.activation_quantization_method = field_method(f["activation_quantization_method"], w, "activation_quantization_method");
  c.activation_n_bits = field_int(f["activation_n_bits"], w, "activation_n_bits");
  c.activation_quantization_params = field_params(f["activation_quantization_params"], w, "activation_quantization_params");
  c.enable_activation_quantization = field_bool(f["enable_activation_quantization"], w, "enable_activation_quantization");
  c.min_threshold = field_double(f["min_threshold"], w, "min_threshold");
  c.activation_bits_candidates = field_candidates(f["activation_bits_candidates"], w, "activation_bits_candidates");
  c.validate();
  return c;
}

py::dict fields_of(const qi::TrainableQuantizerWeightsConfig& c) {
  py::dict d;
  d["weights_quantization_method"] = qi::to_string(c.weights_quantization_method);
  d["weights_n_bits"] = c.weights_n_bits;
  d["weights_quantization_params"] = params_to_py(c.weights_quantization_params);
  d["enable_weights_quantization"] = c.enable_weights_quantization;
  d["weights_channels_axis"] = c.weights_channels_axis;
  d["weights_per_channel_threshold"] = c.weights_per_channel_threshold;
  d["min_threshold"] = c.min_threshold;
  d["weights_bits_candidates"] = candidates_to_py(c.weights_bits_candidates);
  return d;
}

py::dict fields_of(const qi::TrainableQuantizerActivationConfig& c) {
  py::dict d;
  d["activation_quantization_method"] = qi::to_string(c.activation_quantization_method);
  d["activation_n_bits"] = c.activation_n_bits;
  d["activation_quantization_params"] = params_to_py(c.activation_quantization_params);
  d["enable_activation_quantization"] = c.enable_activation_quantization;
  d["min_threshold"] = c.min_threshold;
  d["activation_bits_candidates"] = candidates_to_py(c.activation_bits_candidates);
  return d;
}


// ---- calibration ----

// A read-only strided view of a float32 ndarray (through a contiguous copy held in `keep` when
// qi cannot address it directly).
qi::ConstTensorView input_view(const py::handle& obj, const char* what, py::array* keep) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(qi::str_cat(what, ": expected a numpy.ndarray, got ",
                                     std::string(py::str(py::type::of(obj).attr("__name__")))));
  *keep = py::reinterpret_borrow<py::array>(obj);
  if (!keep->dtype().equal(py::dtype::of<float>()))
    throw py::value_error(qi::str_cat(what, ": input must be a float32 array, got dtype ",
                                      std::string(py::str(keep->dtype()))));
  qi::Shape sizes, strides;
  if (!element_view(*keep, /*for_output=*/false, &sizes, &strides)) {
    *keep = contiguous_copy(*keep);
    element_view(*keep, false, &sizes, &strides);
  }
  return qi::ConstTensorView(static_cast<const float*>(keep->data()), sizes, strides);
}

py::tuple range_tuple(const qi::calibration::Range& r) { return py::make_tuple(r.min, r.max); }

py::dict calibrated_to_py(const qi::CalibratedParams& p) {
  py::dict d;
  if (!p.threshold.empty()) {
    d["threshold"] = p.threshold;
    d["signed"] = p.is_signed;
  } else if (!p.min_range.empty()) {
    d["min_range"] = p.min_range;
    d["max_range"] = p.max_range;
  } else if (!p.scale.empty()) {
    d["scale"] = p.scale;
  } else {
    d["tensor_scale"] = p.tensor_scale ? py::object(py::float_(*p.tensor_scale)) : py::none();
  }
  return d;
}

py::object spec_to_py(const std::optional<qi::TensorQuantizationSpec>& s) {
  if (!s) return py::none();
  // Every key of the spec's JSON, as the core writes it.
  return py::module_::import("json").attr("loads")(s->to_json());
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "qi core bindings (quantizers_infrastructure._core); use the package's classes.";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const qi::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.attr("kVersion") = qi::kVersion;
  m.attr("__version__") = qi::kVersion;
  m.attr("kIdentifier") = qi::BaseInferableQuantizer::kIdentifier;

  // ---- registry ----
  m.def(
      "inferable_quantizers",
      []() {
        py::list out;
        for (const auto& info : qi::kInferableQuantizers) {
          py::dict d;
          d["class_name"] = info.class_name;
          d["target"] = qi::to_string(info.target);
          d["method"] = qi::to_string(info.method);
          d["method_value"] = static_cast<int>(info.method);
          d["family"] = qi::to_string(info.family);
          d["onnx_op"] = info.onnx_op;
          d["doc"] = info.doc;
          py::list params;
          const auto json_loads = py::module_::import("json").attr("loads");
          for (const auto& spec : qi::inferable_param_specs(info.kind)) {
            py::dict p;
            p["key"] = spec.key;
            p["required"] = !spec.default_json.has_value();
            p["default"] = spec.default_json ? json_loads(*spec.default_json) : py::none();
            p["keyword_only"] = spec.keyword_only;
            p["doc"] = spec.doc;
            params.append(p);
          }
          d["params"] = params;
          d["config_keys"] = qi::inferable_quantizer_config_keys(info.kind);
          out.append(d);
        }
        return out;
      },
      "The registry of inferable quantizers, in registry order: a list of dicts with class_name, "
      "target and method (names), method_value (MCT's integer), family, onnx_op, doc, params "
      "(the constructor arguments in order: key, required, default, keyword_only, doc) and "
      "config_keys (the JSON keys of the class's config, without qi_version).");
  m.def(
      "example_config",
      [](const std::string& class_name, int64_t channels, int64_t channel_axis) {
        return qi::example_inferable_config(info_by_name(class_name).kind, channels,
                                            channel_axis);
      },
      py::arg("class_name"), py::arg("channels") = 1, py::arg("channel_axis") = 0,
      "A valid example config (JSON text) of the class: `channels` per-channel values along "
      "channel_axis for weights quantizers.");
  m.def(
      "inferable_class_name",
      [](const std::string& target, const std::string& method) {
        return std::string(qi::get_inferable_quantizer_class(
                               qi::quantization_target_from_string(target),
                               qi::quantization_method_from_string(method))
                               .class_name);
      },
      py::arg("target"), py::arg("method"),
      "Class name registered for (target, method); ValueError when none matches.");

  // ---- enums ----
  m.def(
      "quantization_method_value",
      [](const std::string& s) {
        return static_cast<int>(qi::quantization_method_from_string(s));
      },
      py::arg("name"), "MCT's integer value of a QuantizationMethod given by name or value.");
  m.def(
      "quantization_method_name",
      [](int64_t v) { return qi::to_string(qi::quantization_method_from_value(v)); },
      py::arg("value"), "Name of the QuantizationMethod with MCT's integer value `value`.");
  m.def(
      "quantization_target_name",
      [](const std::string& s) { return qi::to_string(qi::quantization_target_from_string(s)); },
      py::arg("name"), "Canonical QuantizationTarget name.");
  m.def(
      "training_method_name",
      [](const std::string& s) { return qi::to_string(qi::training_method_from_string(s)); },
      py::arg("name"), "Canonical TrainingMethod name.");
  m.def(
      "numeric_profile_name",
      [](const std::string& s) { return qi::to_string(qi::numeric_profile_from_string(s)); },
      py::arg("name"), "Canonical numeric profile name ('torch' or 'tf').");

  m.def(
      "check_fits_weight",
      [](const std::string& quantizer_json, const qi::Shape& shape) {
        qi::check_fits_weight(*qi::quantizer_from_json(quantizer_json), shape);
      },
      py::arg("quantizer_json"), py::arg("shape"),
      "ValueError unless the quantizer (its to_json() text) can quantize a weight of this shape.");

  // ---- threads and SIMD ----
  m.def("set_num_threads", &qi::set_num_threads, py::arg("n"),
        "Threads of qi's own pool (n >= 1).");
  m.def("get_num_threads", &qi::get_num_threads, "Threads of qi's own pool.");
  m.def("simd_target_name", &qi::kernels::simd_target_name,
        "SIMD target the kernels dispatch to on this machine.");
  m.def("supported_simd_targets", &qi::kernels::supported_simd_targets,
        "SIMD targets compiled in and supported on this machine.");
  m.def("force_simd_target", &qi::kernels::force_simd_target, py::arg("name"),
        "Restricts the kernels to one SIMD target ('' restores the best).");

  // ---- quantizers ----
  using Q = qi::BaseInferableQuantizer;
  py::class_<Q, QuantizerPtr>(m, "_Quantizer", "A validated C++ inferable quantizer.")
      .def_property_readonly("class_name", [](const Q& q) { return q.class_name(); })
      .def_property_readonly("quantization_target",
                             [](const Q& q) { return qi::to_string(q.quantization_target()); })
      .def_property_readonly("quantization_method",
                             [](const Q& q) { return qi::to_string(q.quantization_method()); })
      .def_property_readonly("num_bits", &Q::num_bits)
      .def_property_readonly("per_channel", &Q::per_channel)
      .def_property_readonly("channel_axis", &Q::channel_axis)
      .def_property_readonly("signed", &Q::is_signed)
      .def_property_readonly("num_channels", &Q::num_channels)
      .def_property_readonly("plan", [](const Q& q) { return plan_dict(q.plan()); })
      .def_property_readonly("adjusted_min_range",
                             [](const Q& q) { return adjusted_range(q, /*max=*/false); })
      .def_property_readonly("adjusted_max_range",
                             [](const Q& q) { return adjusted_range(q, /*max=*/true); })
      .def("resolve_channel_axis", &Q::resolve_channel_axis, py::arg("rank"))
      .def(
          "packed_plan",
          [](const Q& q) {
            const std::vector<int32_t> words = q.packed_plan();
            py::array_t<int32_t> a(static_cast<py::ssize_t>(words.size()));
            std::copy(words.begin(), words.end(), a.mutable_data());
            return a;
          },
          "The kernel plan as one int32 array (what qi::quantize takes as a tensor).")
      .def("get_config", &Q::get_config)
      .def("to_json", &Q::to_json)
      .def("apply", &apply, py::arg("x"), "Q(x) as a new float32 array; x: any float32 ndarray.")
      .def("apply_", &apply_inplace, py::arg("x"), "x = Q(x) in place; returns x.");

  m.def(
      "make_quantizer",
      [](const std::string& class_name, const std::string& config_json) -> QuantizerPtr {
        return qi::inferable_quantizer_from_config(info_by_name(class_name).kind, config_json);
      },
      py::arg("class_name"), py::arg("config_json"),
      "Builds and validates the named inferable quantizer from its JSON config.");
  m.def(
      "quantizer_from_json",
      [](const std::string& json) -> QuantizerPtr {
        return qi::inferable_quantizer_from_json(json);
      },
      py::arg("json"), "Builds a quantizer from to_json() text ({class_name, config}).");

  // ---- trainable quantizers: registry and policy ----
  m.def(
      "trainable_quantizers",
      []() {
        py::list out;
        for (const auto& info : qi::kTrainableQuantizers) {
          py::dict d;
          d["class_name"] = info.class_name;
          d["target"] = qi::to_string(info.target);
          d["training_method"] = qi::to_string(info.training_method);
          py::list methods;
          for (auto m : info.methods()) methods.append(qi::to_string(m));
          d["methods"] = methods;
          d["doc"] = info.doc;
          d["replaces_weight"] = info.training_method == qi::TrainingMethod::SoftRounding;
          out.append(d);
        }
        return out;
      },
      "The registry of trainable quantizers: a list of dicts with class_name, target, "
      "training_method, methods (names), doc and replaces_weight.");
  m.def(
      "trainable_class_name",
      [](const std::string& target, const std::string& method, const std::string& tm) {
        return std::string(qi::get_trainable_quantizer_class(
                               qi::quantization_target_from_string(target),
                               qi::quantization_method_from_string(method),
                               qi::training_method_from_string(tm))
                               .class_name);
      },
      py::arg("target"), py::arg("method"), py::arg("training_method"),
      "Class name registered for (target, method, training method); ValueError unless exactly "
      "one matches.");
  py::class_<qi::TrainableQuantizer, TrainablePtr>(
      m, "_TrainableQuantizer", "A trainable quantizer's policy (variables, forward, conversion).")
      .def(py::init([](const std::string& class_name, const std::string& config_json) {
             return qi::TrainableQuantizer::from_config(
                 qi::trainable_quantizer_info(class_name).kind, config_json);
           }),
           py::arg("class_name"), py::arg("config_json"),
           "From the class name and the JSON of {quantization_config, freeze_quant_params}.")
      .def_property_readonly("class_name", [](const qi::TrainableQuantizer& q) { return q.class_name(); })
      .def_property_readonly("freeze_quant_params", &qi::TrainableQuantizer::freeze_quant_params)
      .def_property_readonly("replaces_weight", &qi::TrainableQuantizer::replaces_weight)
      .def_property_readonly("needs_weight", &qi::TrainableQuantizer::needs_weight)
      .def("frozen", [](const qi::TrainableQuantizer& q) -> TrainablePtr { return q.frozen(); })
      .def("config_json", &qi::TrainableQuantizer::config_json)
      .def("to_json", &qi::TrainableQuantizer::to_json)
      .def("variables", &variables_of, py::arg("shape"), py::arg("weight") = py::none(),
           "The variables to create: dicts with name, shape, initial (float32 array), "
           "trainable and group (VariableGroup value).")
      .def("forward", &forward_of, py::arg("training"), py::arg("shape"),
           py::arg("activation_axis"),
           "The forward: dict with op, inputs [(op argument, variable name)], requires_grad "
           "and kwargs (the op's static arguments).")
      .def("convert", &convert_of, py::arg("values"),
           "The inferable quantizer (a _Quantizer) from {variable name: values}.")
      .def("check_frozen", &qi::TrainableQuantizer::check_frozen, py::arg("trainable_qparams"));

  // ---- configs: one validation and one JSON form, the core's ----
  m.def(
      "config_json",
      [](bool weights, const py::dict& fields) {
        return weights ? weights_config_of(fields).get_config()
                       : activation_config_of(fields).get_config();
      },
      py::arg("weights"), py::arg("fields"),
      "Validates a trainable quantizer config given as its constructor fields (Python objects: "
      "enums, numbers, arrays) and returns the core's JSON text.");
  m.def(
      "config_fields",
      [](bool weights, const std::string& json) -> py::dict {
        if (weights) return fields_of(qi::TrainableQuantizerWeightsConfig::from_config(json));
        return fields_of(qi::TrainableQuantizerActivationConfig::from_config(json));
      },
      py::arg("weights"), py::arg("json"),
      "Reads a config's JSON (the core's or MCT's) into its constructor fields: the method by "
      "name, parameter arrays as float64 ndarrays.");
  m.def(
      "dispatcher_config",
      [](const std::string& json) { return qi::NodeQuantizationDispatcher::from_config(json).get_config(); },
      py::arg("json"),
      "Validates a NodeQuantizationDispatcher JSON (quantizers included); returns its normal form.");

  py::class_<qi::trainable::SoftRoundingSchedule>(m, "SoftRoundingSchedule",
                                                 "The soft rounding regularizer's beta schedule.")
      .def(py::init<int64_t, double, double, double>(), py::arg("total_steps"),
           py::arg("warmup_fraction") = 0.2, py::arg("beta_start") = 20.0,
           py::arg("beta_end") = 2.0)
      .def("beta", &qi::trainable::SoftRoundingSchedule::beta, py::arg("step"));
  m.attr("kMinThreshold") = qi::trainable::kMinThreshold;
  m.attr("kSoftRoundingGamma") = qi::trainable::kSoftRoundingGamma;
  m.attr("kSoftRoundingZeta") = qi::trainable::kSoftRoundingZeta;
  // ---- calibration: the core's statistics over float32 arrays ----
  namespace cal = qi::calibration;
  using Axis = std::optional<int64_t>;
  m.def(
      "calibration_threshold_max",
      [](const py::handle& x, Axis axis) {
        py::array keep;
        auto v = input_view(x, "threshold_max", &keep);
        py::gil_scoped_release r;
        return cal::threshold_max(v, axis);
      },
      py::arg("x"), py::arg("channel_axis") = py::none(),
      "max |x| per tensor or per channel (qi::calibration::threshold_max).");
  m.def(
      "calibration_range_min_max",
      [](const py::handle& x, Axis axis) {
        py::array keep;
        auto v = input_view(x, "range_min_max", &keep);
        cal::Range out;
        {
          py::gil_scoped_release r;
          out = cal::range_min_max(v, axis);
        }
        return range_tuple(out);
      },
      py::arg("x"), py::arg("channel_axis") = py::none(), "(min, max) per tensor or per channel.");
  m.def(
      "calibration_threshold_mse",
      [](const py::handle& x, Axis axis, int64_t num_bits, bool is_signed, bool power_of_two,
         int64_t num_candidates) {
        py::array keep;
        auto v = input_view(x, "threshold_mse", &keep);
        py::gil_scoped_release r;
        return cal::threshold_mse(v, axis, num_bits, is_signed, power_of_two, num_candidates);
      },
      py::arg("x"), py::arg("channel_axis"), py::arg("num_bits"), py::arg("signed"),
      py::arg("power_of_two"), py::arg("num_candidates") = 100,
      "The symmetric (or power-of-two) threshold of least squared error.");
  m.def(
      "calibration_range_mse",
      [](const py::handle& x, Axis axis, int64_t num_bits, bool activation,
         int64_t num_candidates) {
        py::array keep;
        auto v = input_view(x, "range_mse", &keep);
        cal::Range out;
        {
          py::gil_scoped_release r;
          out = cal::range_mse(v, axis, num_bits, activation, num_candidates);
        }
        return range_tuple(out);
      },
      py::arg("x"), py::arg("channel_axis"), py::arg("num_bits"), py::arg("activation") = false,
      py::arg("num_candidates") = 100, "The uniform range of least squared error.");
  m.def(
      "calibration_method_name",
      [](const std::string& s) { return cal::to_string(cal::method_from_string(s)); },
      py::arg("name"), "Canonical calibration method name (minmax, percentile, mse, kl).");
  py::class_<cal::Histogram>(m, "Histogram",
                             "Streaming min/max and histogram of a tensor (qi::calibration::Histogram).")
      .def(py::init<int64_t, Axis>(), py::arg("num_bins") = 2048,
           py::arg("channel_axis") = py::none())
      .def(
          "update",
          [](cal::Histogram& h, const py::handle& x) {
            py::array keep;
            auto v = input_view(x, "Histogram.update", &keep);
            py::gil_scoped_release r;
            h.update(v);
          },
          py::arg("x"), "Adds a batch (a float32 array).")
      .def_property_readonly("num_bins", &cal::Histogram::num_bins, "Bins per channel.")
      .def_property_readonly("channels", &cal::Histogram::channels,
                             "Channels seen (one without a channel axis; 0 before the first update).")
      .def("counts", &cal::Histogram::counts, "Finite values seen, per channel.")
      .def(
          "bins",
          [](const cal::Histogram& h, int64_t c) {
            const auto& b = h.bins(c);
            return py::array_t<double>(static_cast<py::ssize_t>(b.size()), b.data());
          },
          py::arg("channel") = 0,
          "The channel's bin counts: bin b covers [lower + b * width, lower + (b + 1) * width).")
      .def("lower", &cal::Histogram::lower, py::arg("channel") = 0,
           "The lower edge of the channel's first bin.")
      .def("width", &cal::Histogram::width, py::arg("channel") = 0,
           "The width of the channel's bins.")
      .def(
          "range_min_max", [](const cal::Histogram& h) { return range_tuple(h.range_min_max()); },
          "(min list, max list): the exact min and max per channel.")
      .def(
          "threshold_max", [](const cal::Histogram& h) { return h.threshold_max(); },
          "max |x| per channel: a symmetric threshold.")
      .def("threshold_percentile", &cal::Histogram::threshold_percentile, py::arg("percentile"),
           "The percentile (in (0, 100]) of |x| per channel: a symmetric threshold.")
      .def(
          "range_percentile",
          [](const cal::Histogram& h, double p) { return range_tuple(h.range_percentile(p)); },
          py::arg("percentile"),
          "[the (100 - percentile) percentile, the percentile] of x per channel: a uniform range.")
      .def("threshold_mse", &cal::Histogram::threshold_mse, py::arg("num_bits"),
           py::arg("signed"), py::arg("power_of_two"), py::arg("num_candidates") = 100,
           "The symmetric threshold of least squared error, as calibration.threshold_mse, over "
           "the histogram.")
      .def(
          "range_mse",
          [](const cal::Histogram& h, int64_t n, int64_t k) { return range_tuple(h.range_mse(n, k)); },
          py::arg("num_bits"), py::arg("num_candidates") = 100,
          "The uniform range of least squared error, as calibration.range_mse, over the "
          "histogram.")
      .def("threshold_kl", &cal::Histogram::threshold_kl, py::arg("num_bits"), py::arg("signed"),
           "The symmetric threshold minimizing the KL divergence between |x| and its quantized "
           "version (TensorRT's entropy calibration).");

  m.def(
      "calibrate_weights",
      [](const std::string& spec, const py::handle& w, int64_t channel_axis) {
        const auto s = qi::TensorQuantizationSpec::from_json(spec, /*weights=*/true);
        py::array keep;
        auto v = input_view(w, "calibrate_weights", &keep);
        qi::CalibratedParams p;
        {
          py::gil_scoped_release r;
          p = qi::calibrate_weights(s, v, channel_axis);
        }
        return calibrated_to_py(p);
      },
      py::arg("spec"), py::arg("weight"), py::arg("channel_axis"),
      "A weights quantizer's calibrated parameters (qi::calibrate_weights) from its spec (JSON): "
      "{threshold: [...], signed} or {min_range: [...], max_range: [...]}.");
  m.def(
      "calibrate_activations",
      [](const std::string& spec, const cal::Histogram& h) {
        return calibrated_to_py(
            qi::calibrate_activations(qi::TensorQuantizationSpec::from_json(spec, false), h));
      },
      py::arg("spec"), py::arg("histogram"),
      "An activation quantizer's calibrated parameters from its spec (JSON) and Histogram.");
  m.def(
      "make_weights_quantizer",
      [](const std::string& spec, const py::handle& w, int64_t channel_axis) {
        const auto s = qi::TensorQuantizationSpec::from_json(spec, /*weights=*/true);
        py::array keep;
        auto v = input_view(w, "make_weights_quantizer", &keep);
        py::gil_scoped_release r;
        return qi::make_weights_quantizer(s, qi::calibrate_weights(s, v, channel_axis), v.dim(),
                                          channel_axis)
            ->to_json();
      },
      py::arg("spec"), py::arg("weight"), py::arg("channel_axis"),
      "The weights quantizer of a spec (JSON) calibrated on `weight` (qi::calibrate_weights, "
      "qi::make_weights_quantizer): its JSON {\"class_name\", \"config\"}, inferable when the "
      "spec's training is null, else trainable.");
  m.def(
      "make_activation_quantizer",
      [](const std::string& spec, const cal::Histogram& h) {
        const auto s = qi::TensorQuantizationSpec::from_json(spec, /*weights=*/false);
        return qi::make_activation_quantizer(s, qi::calibrate_activations(s, h))->to_json();
      },
      py::arg("spec"), py::arg("histogram"),
      "The activation quantizer of a spec (JSON) calibrated from a Histogram: its JSON.");

  // ---- whole-model configs ----
  py::class_<qi::ModelQuantizationConfig>(m, "ModelQuantizationConfig",
                                          "A whole-model quantization config (the core's).")
      .def_static("from_json", &qi::ModelQuantizationConfig::from_json, py::arg("text"))
      .def_static("preset", &qi::ModelQuantizationConfig::preset, py::arg("name"))
      .def_static("preset_names", &qi::ModelQuantizationConfig::preset_names)
      .def("to_json", &qi::ModelQuantizationConfig::to_json)
      .def(
          "resolve",
          [](const qi::ModelQuantizationConfig& c, const std::string& name,
             const std::string& type) {
            const auto l = c.resolve(name, type);
            py::dict d;
            d["skipped"] = l.skipped;
            d["weights"] = spec_to_py(l.weights);
            d["activations"] = spec_to_py(l.activations);
            return d;
          },
          py::arg("name"), py::arg("type"),
          "{skipped, weights, activations} for the layer (specs as dicts, None: not quantized).")
      .def_property_readonly("activation_ops",
                             [](const qi::ModelQuantizationConfig& c) { return c.activation_ops; })
      .def_property_readonly("fold_batch_norm",
                             [](const qi::ModelQuantizationConfig& c) { return c.fold_batch_norm; })
      .def_property_readonly("num_bins",
                             [](const qi::ModelQuantizationConfig& c) { return c.num_bins; })
      .def("__eq__", [](const qi::ModelQuantizationConfig& a,
                        const qi::ModelQuantizationConfig& b) { return a == b; });
}
