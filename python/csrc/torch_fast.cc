// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// quantizers_infrastructure._torch_fast: the eager call of an inferable quantizer on a torch
// tensor with the least per-call cost. A FastQuantizer holds the quantizer's unpacked plan;
// calling it on a tensor runs qi::torch::quantize_eager (the kernel of qi::quantize, without
// the dispatcher) and returns the result, or None when the call needs the dispatcher (autograd,
// tracing, modes, subclasses...), which the Python front end then takes. Plain CPython (vectorcall)
// rather than pybind11: the point of this module is a call that costs about a clone().
#include <Python.h>

#include <exception>
#include <optional>
#include <utility>

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include "qi/kernels.h"
#include "qi/torch/ops.h"

namespace {

struct FastQuantizer {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  qi::kernels::Plan* plan;
  std::optional<int64_t> channel_axis;
  std::optional<int64_t> input_rank;
};

// Releases the GIL while the kernel runs (other Python threads go on), and takes it back even
// when the kernel throws.
class GilReleased {
 public:
  GilReleased() : state_(PyEval_SaveThread()) {}
  ~GilReleased() { PyEval_RestoreThread(state_); }
  GilReleased(const GilReleased&) = delete;
  GilReleased& operator=(const GilReleased&) = delete;

 private:
  PyThreadState* state_;
};

std::optional<int64_t> optional_int(PyObject* o, const char* what, bool* ok) {
  if (o == Py_None) return std::nullopt;
  const long long v = PyLong_AsLongLong(o);
  if (v == -1 && PyErr_Occurred()) {
    PyErr_Format(PyExc_TypeError, "FastQuantizer: %s must be an int or None", what);
    *ok = false;
    return std::nullopt;
  }
  return static_cast<int64_t>(v);
}

PyObject* fast_call(PyObject* self_obj, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  HANDLE_TH_ERRORS
  auto* self = reinterpret_cast<FastQuantizer*>(self_obj);
  if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != nullptr && PyTuple_GET_SIZE(kwnames) != 0)) {
    PyErr_SetString(PyExc_TypeError, "FastQuantizer takes exactly one tensor");
    return nullptr;
  }
  PyObject* x_obj = args[0];
  if (!THPVariable_CheckExact(x_obj)) Py_RETURN_NONE;  // subclasses go through the dispatcher
  const at::Tensor& x = THPVariable_Unpack(x_obj);
  at::Tensor y;
  {
    GilReleased released;
    y = qi::torch::quantize_eager(x, *self->plan, self->channel_axis, self->input_rank);
  }
  if (!y.defined()) Py_RETURN_NONE;
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

PyObject* fast_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  HANDLE_TH_ERRORS
  static const char* names[] = {"plan", "channel_axis", "input_rank", nullptr};
  PyObject *plan_obj = nullptr, *axis_obj = Py_None, *rank_obj = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO", const_cast<char**>(names), &plan_obj,
                                   &axis_obj, &rank_obj))
    return nullptr;
  if (!THPVariable_Check(plan_obj)) {
    PyErr_SetString(PyExc_TypeError, "FastQuantizer: plan must be an int32 tensor");
    return nullptr;
  }
  const at::Tensor plan = THPVariable_Unpack(plan_obj).contiguous();
  TORCH_CHECK_VALUE(plan.is_cpu() && plan.scalar_type() == at::kInt && plan.dim() == 1,
                    "FastQuantizer: plan must be a 1-D int32 CPU tensor (a packed plan)");
  bool ok = true;
  const auto axis = optional_int(axis_obj, "channel_axis", &ok);
  const auto rank = ok ? optional_int(rank_obj, "input_rank", &ok) : std::nullopt;
  if (!ok) return nullptr;
  qi::kernels::Plan unpacked;
  try {
    unpacked = qi::kernels::unpack_plan(plan.const_data_ptr<int32_t>(), plan.numel());
  } catch (const std::exception& e) {  // qi::Error: a plan this build cannot have written
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
  PyObject* obj = type->tp_alloc(type, 0);
  if (obj == nullptr) return nullptr;
  auto* self = reinterpret_cast<FastQuantizer*>(obj);
  self->vectorcall = fast_call;
  self->plan = new qi::kernels::Plan(std::move(unpacked));
  new (&self->channel_axis) std::optional<int64_t>(axis);
  new (&self->input_rank) std::optional<int64_t>(rank);
  return obj;
  END_HANDLE_TH_ERRORS
}

void fast_dealloc(PyObject* obj) {
  delete reinterpret_cast<FastQuantizer*>(obj)->plan;
  Py_TYPE(obj)->tp_free(obj);
}

PyTypeObject FastQuantizerType;  // filled in by PyInit__torch_fast

void fill_type(PyTypeObject& t) {
  Py_SET_TYPE(&t, &PyType_Type);
  Py_SET_REFCNT(&t, 1);
  t.tp_name = "quantizers_infrastructure._torch_fast.FastQuantizer";
  t.tp_basicsize = sizeof(FastQuantizer);
  t.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL;
  t.tp_doc = "FastQuantizer(plan, channel_axis=None, input_rank=None): q(x) on a torch tensor "
             "through the eager fast path; None when the call needs the dispatcher.";
  t.tp_new = fast_new;
  t.tp_dealloc = fast_dealloc;
  t.tp_call = PyVectorcall_Call;
  t.tp_vectorcall_offset = offsetof(FastQuantizer, vectorcall);
}

PyModuleDef module_def = {PyModuleDef_HEAD_INIT,
                          "_torch_fast",
                          "The eager fast path of inferable quantizers on torch tensors.",
                          -1,
                          nullptr,
                          nullptr,
                          nullptr,
                          nullptr,
                          nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__torch_fast() {
  fill_type(FastQuantizerType);
  if (PyType_Ready(&FastQuantizerType) < 0) return nullptr;
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
  Py_INCREF(&FastQuantizerType);
  if (PyModule_AddObject(m, "FastQuantizer", reinterpret_cast<PyObject*>(&FastQuantizerType)) < 0) {
    Py_DECREF(&FastQuantizerType);
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
