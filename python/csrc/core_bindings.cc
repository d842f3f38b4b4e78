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
          d["config_keys"] = qi::inferable_quantizer_config_keys(info.kind);
          out.append(d);
        }
        return out;
      },
      "The registry of inferable quantizers, in registry order: a list of dicts with class_name, "
      "target and method (names), method_value (MCT's integer) and config_keys (the JSON keys of "
      "the class's config, without qi_version).");
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
}
