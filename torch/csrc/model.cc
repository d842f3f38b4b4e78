// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// quantize / prepare_qat / convert over a LibTorch module tree: the entries of its Sequentials
// are folded, observed, then replaced by wrappers (see qi/torch/model.h). Which layer gets what
// is the core's ModelQuantizationConfig::resolve; the quantizers are the core's
// make_weights_quantizer / make_activation_quantizer of calibrated parameters.
#include "qi/torch/model.h"

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>

#include <torch/torch.h>

#include "module_access.h"
#include "ops/common.h"
#include "qi/error.h"
#include "qi/torch/wrapper.h"

namespace qi::torch {
namespace {

namespace tnn = ::torch::nn;

// ---- what a module is ---------------------------------------------------------------------------

struct QuantizedLayerKind {
  const char* type;
  int64_t axis;  // of the output channels in the weight
};

std::optional<QuantizedLayerKind> quantized_layer(const tnn::Module& m) {
#define QI_LAYER(T, AXIS) \
  if (dynamic_cast<const tnn::T##Impl*>(&m) != nullptr) return QuantizedLayerKind{#T, AXIS};
  QI_LAYER(Conv1d, 0)
  QI_LAYER(Conv2d, 0)
  QI_LAYER(Conv3d, 0)
  QI_LAYER(ConvTranspose1d, 1)
  QI_LAYER(ConvTranspose2d, 1)
  QI_LAYER(ConvTranspose3d, 1)
  QI_LAYER(Linear, 0)
  QI_LAYER(Embedding, 0)
#undef QI_LAYER
  return std::nullopt;
}

// Element-wise activations that a layer's output quantizer moves past.
const char* activation_type(const tnn::Module& m) {
#define QI_ACT(T) \
  if (dynamic_cast<const tnn::T##Impl*>(&m) != nullptr) return #T;
  QI_ACT(ReLU)
  QI_ACT(ReLU6)
  QI_ACT(Hardtanh)
  QI_ACT(LeakyReLU)
  QI_ACT(SiLU)
  QI_ACT(GELU)
  QI_ACT(Sigmoid)
  QI_ACT(Tanh)
#undef QI_ACT
  return nullptr;
}

bool is_identity(const tnn::Module& m) { return dynamic_cast<const tnn::IdentityImpl*>(&m) != nullptr; }

// ---- batch norm folding -------------------------------------------------------------------------

// eps of a BatchNorm1d/2d/3d; none for other modules.
std::optional<double> batch_norm_eps(const tnn::Module& m) {
  if (auto* b = dynamic_cast<const tnn::BatchNorm1dImpl*>(&m)) return b->options.eps();
  if (auto* b = dynamic_cast<const tnn::BatchNorm2dImpl*>(&m)) return b->options.eps();
  if (auto* b = dynamic_cast<const tnn::BatchNorm3dImpl*>(&m)) return b->options.eps();
  return std::nullopt;
}

// Groups of a transposed convolution (its output channels are one weight axis only when 1).
int64_t transposed_groups(const tnn::Module& m) {
  if (auto* c = dynamic_cast<const tnn::ConvTranspose1dImpl*>(&m)) return c->options.groups();
  if (auto* c = dynamic_cast<const tnn::ConvTranspose2dImpl*>(&m)) return c->options.groups();
  if (auto* c = dynamic_cast<const tnn::ConvTranspose3dImpl*>(&m)) return c->options.groups();
  return 1;
}

// Gives a layer created with bias(false) a bias parameter that its forward reads (LibTorch
// registers such a layer's "bias" undefined).
template <class Impl>
bool add_bias_as(tnn::Module& m, const at::Tensor& b) {
  auto* impl = dynamic_cast<Impl*>(&m);
  if (impl == nullptr) return false;
  impl->options.bias(true);
  auto& params = detail::ParameterDict::of(*impl);
  if (params.contains("bias")) params["bias"] = b;
  else impl->register_parameter("bias", b);
  impl->bias = b;
  return true;
}
void add_bias(tnn::Module& m, const at::Tensor& b) {
  const bool added = add_bias_as<tnn::Conv1dImpl>(m, b) || add_bias_as<tnn::Conv2dImpl>(m, b) ||
                     add_bias_as<tnn::Conv3dImpl>(m, b) || add_bias_as<tnn::ConvTranspose1dImpl>(m, b) ||
                     add_bias_as<tnn::ConvTranspose2dImpl>(m, b) ||
                     add_bias_as<tnn::ConvTranspose3dImpl>(m, b) || add_bias_as<tnn::LinearImpl>(m, b);
  QI_CHECK(added, "qi::torch: cannot add a bias to a ", m.name());
}

// Folds an eval-mode batch norm into the layer before it: w' = w * g / sqrt(var + eps) per
// output channel, b' = (b - mean) * g / sqrt(var + eps) + beta. Empty when it can be (and, with
// `apply`, was) folded, else why not.
std::string fold_batch_norm(tnn::Module& layer, int64_t axis, tnn::Module& bn, double eps,
                            bool apply) {
  const auto buffers = bn.named_buffers(false);
  const at::Tensor* mean = buffers.find("running_mean");
  const at::Tensor* var = buffers.find("running_var");
  if (mean == nullptr || var == nullptr || !mean->defined() || !var->defined())
    return "it keeps no running statistics";
  if (transposed_groups(layer) != 1) return "the transposed convolution is grouped";
  auto params = layer.named_parameters(false);
  at::Tensor w = params["weight"];
  if (w.size(axis) != mean->numel())
    return str_cat("the layer has ", w.size(axis), " output channels, the batch norm ",
                   mean->numel());
  if (!apply) return "";
  const auto bn_params = bn.named_parameters(false);
  const at::Tensor* gamma = bn_params.find("weight");
  const at::Tensor* beta = bn_params.find("bias");
  ::torch::NoGradGuard no_grad;
  const at::Tensor scale =
      (gamma != nullptr && gamma->defined() ? *gamma : at::ones_like(*var)) / at::sqrt(*var + eps);
  const at::Tensor shift = beta != nullptr && beta->defined() ? *beta : at::zeros_like(*mean);
  std::vector<int64_t> shape(static_cast<size_t>(w.dim()), 1);
  shape[static_cast<size_t>(axis)] = -1;
  w.mul_(scale.reshape(shape).to(w.scalar_type()));
  const at::Tensor* bias = params.find("bias");
  const at::Tensor old_bias = bias != nullptr && bias->defined() ? *bias : at::zeros_like(*mean);
  const at::Tensor new_bias = ((old_bias - *mean) * scale + shift).to(w.scalar_type());
  if (bias != nullptr && bias->defined()) {
    at::Tensor b = *bias;
    b.copy_(new_bias);
  } else {
    add_bias(layer, new_bias.detach().clone().set_requires_grad(w.requires_grad()));
  }
  return "";
}

// ---- observing an entry's output ------------------------------------------------------------------

class ObserverImpl : public tnn::Module {
 public:
  ObserverImpl(tnn::AnyModule inner, int64_t num_bins) : inner_(std::move(inner)), hist_(num_bins) {
    register_module("inner", inner_.ptr());
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = inner_.forward(x);
    ++calls_;
    if (!y.is_floating_point()) {
      non_float_ = true;
      return y;
    }
    if (y.numel() > 0) {
      const at::Tensor f = y.detach().to(at::kCPU, at::kFloat).contiguous();
      hist_.update(detail::const_view(f));
      seen_ = true;
    }
    return y;
  }
  const calibration::Histogram& histogram() const { return hist_; }
  bool seen() const { return seen_; }
  bool non_float() const { return non_float_; }
  int64_t calls() const { return calls_; }

 private:
  tnn::AnyModule inner_;
  calibration::Histogram hist_;
  bool seen_ = false, non_float_ = false;
  int64_t calls_ = 0;
};

// ---- the plan of one call -------------------------------------------------------------------------

// An entry of a Sequential, addressed by position.
struct Entry {
  tnn::SequentialImpl* seq = nullptr;
  size_t index = 0;
  std::string child;  // its name among the Sequential's children
  std::string name;   // qualified

  tnn::AnyModule& any() const { return *(seq->begin() + static_cast<std::ptrdiff_t>(index)); }
  void replace(tnn::AnyModule m) const {
    seq->replace_module(child, m.ptr());
    any() = std::move(m);
  }
};

struct Layer {
  Entry entry;
  QuantizedLayerKind kind;
  std::optional<TensorQuantizationSpec> weights;
  std::shared_ptr<BaseQuantizer> weight_quantizer;
  int site = -1;  // index into sites when the output is quantized at the layer itself
};

struct Site {
  Entry anchor;        // the entry whose output is quantized
  std::string type;    // its module type, for the report
  TensorQuantizationSpec spec;
  int layer = -1;      // the layer whose output (after activations) this is
  std::shared_ptr<ObserverImpl> observer;
  std::shared_ptr<BaseQuantizer> quantizer;
};

std::string qualified(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

double sqnr_db(const at::Tensor& ref, const at::Tensor& q) {
  const double signal = ref.to(at::kDouble).pow(2).sum().item<double>();
  const double noise = (ref.to(at::kDouble) - q.to(at::kDouble)).pow(2).sum().item<double>();
  if (noise == 0) return INFINITY;
  return 10.0 * std::log10(signal / noise);
}

ModelReport run(::torch::nn::Module& model, const ModelQuantizationConfig& config,
                const ForwardLoop& calibrate, bool trainable, const char* who) {
  config.validate();
  ModelReport report;
  const bool was_training = model.is_training();

  // 1. The Sequentials' entries; quantizable layers elsewhere are noted.
  std::vector<std::pair<std::string, tnn::SequentialImpl*>> seqs;
  std::vector<std::string> wrapped_already;
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    tnn::Module& m = *item.value();
    if (dynamic_cast<QuantizationWrapperImpl*>(&m) != nullptr ||
        dynamic_cast<ActivationQuantizationHolderImpl*>(&m) != nullptr)
      wrapped_already.push_back(item.key().empty() ? "(the model)" : item.key());
    if (auto* s = dynamic_cast<tnn::SequentialImpl*>(&m)) {
      seqs.emplace_back(item.key(), s);
      continue;
    }
    for (const auto& child : m.named_children())
      if (auto kind = quantized_layer(*child.value()))
        report.notes.push_back(str_cat(
            "not quantized: '", qualified(item.key(), child.key()), "' (", kind->type,
            ") is held by a custom module (", m.name(),
            "), whose compiled forward qi cannot re-route; build that part as a "
            "torch::nn::Sequential, or wrap the layer with qi::torch::QuantizationWrapper"));
  }
  QI_CHECK(wrapped_already.empty(), who, ": the model already holds qi wrappers or holders (",
           wrapped_already.front(), "); quantize a float model");
  if (auto kind = quantized_layer(model))
    report.notes.push_back(str_cat("not quantized: the model itself is a ", kind->type,
                                   "; put it in a torch::nn::Sequential to quantize it"));

  // 2. Which batch norms fold, each layer's specs, each output's anchor. Nothing changes in the
  // model before the calibration has run (a failing forward loop leaves it as it was).
  std::vector<Layer> layers;
  std::vector<Site> sites;
  struct Fold {
    Entry layer, bn;
    int64_t axis;
    double eps;
  };
  std::vector<Fold> folds;
  for (const auto& item : seqs) {
    const std::string& prefix = item.first;  // not a structured binding: lambdas capture it
    tnn::SequentialImpl* seq = item.second;
    const auto children = seq->named_children();
    auto entry = [&](size_t i) {
      return Entry{seq, i, children[i].key(), qualified(prefix, children[i].key())};
    };
    std::vector<bool> folded(seq->size(), false);  // batch norms that will fold
    for (size_t i = 0; i < seq->size(); ++i) {
      tnn::Module& m = *seq->ptr(i);
      auto kind = quantized_layer(m);
      if (!kind) continue;
      const Entry e = entry(i);
      if (config.fold_batch_norm && i + 1 < seq->size() && std::string(kind->type) != "Embedding") {
        tnn::Module& next = *seq->ptr(i + 1);
        if (auto eps = batch_norm_eps(next)) {
          const Entry bn = entry(i + 1);
          const std::string why = fold_batch_norm(m, kind->axis, next, *eps, /*apply=*/false);
          if (why.empty()) {
            folds.push_back(Fold{e, bn, kind->axis, *eps});
            folded[i + 1] = true;
          } else {
            report.notes.push_back(str_cat("batch norm '", bn.name, "' not folded into '", e.name,
                                           "': ", why));
          }
        }
      }
      const auto r = config.resolve(e.name, kind->type);
      if (r.skipped) {
        report.notes.push_back(str_cat("skipped '", e.name, "' (", kind->type,
                                       "): the config's skip list"));
        continue;
      }
      if (!r.weights && !r.activations) continue;
      Layer layer{e, *kind, r.weights, nullptr, -1};
      if (layer.weights && !trainable) layer.weights->training.reset();
      if (r.activations) {
        // Past a batch norm that folds into the layer and the activations that follow.
        auto passes = [&](size_t k) {
          return folded[k] || activation_type(*seq->ptr(k)) != nullptr || is_identity(*seq->ptr(k));
        };
        size_t a = i;
        while (a + 1 < seq->size() && passes(a + 1)) ++a;
        while (a > i && activation_type(*seq->ptr(a)) == nullptr) --a;  // end on an activation
        Site site{entry(a), a == i ? kind->type : activation_type(*seq->ptr(a)), *r.activations,
                  static_cast<int>(layers.size()), nullptr, nullptr};
        if (!trainable) site.spec.training.reset();
        if (a == i) layer.site = static_cast<int>(sites.size());
        sites.push_back(std::move(site));
      }
      layers.push_back(std::move(layer));
    }
  }

  // 3. Activation statistics over the calibration data, observers in place of the anchors.
  if (!sites.empty()) {
    QI_CHECK(static_cast<bool>(calibrate), who,
             ": the config quantizes activations; pass a forward loop that runs the model over "
             "calibration data, e.g. [&](torch::nn::Module&) { for (auto& x : batches) "
             "model->forward(x); }");
    std::vector<tnn::AnyModule> originals;
    for (auto& s : sites) {
      originals.push_back(s.anchor.any());
      s.observer = std::make_shared<ObserverImpl>(s.anchor.any(), config.num_bins);
      s.anchor.replace(tnn::AnyModule(s.observer));
    }
    const auto t0 = std::chrono::steady_clock::now();
    try {
      ::torch::NoGradGuard no_grad;
      model.eval();
      calibrate(model);
    } catch (...) {
      for (size_t k = 0; k < sites.size(); ++k) sites[k].anchor.replace(originals[k]);
      model.train(was_training);
      throw;
    }
    report.calibration_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    report.calibration_calls = sites.front().observer->calls();
    for (size_t k = 0; k < sites.size(); ++k) sites[k].anchor.replace(originals[k]);
    for (auto& s : sites) {
      if (!s.observer->seen()) {
        report.notes.push_back(str_cat("no activation quantizer on '", s.anchor.name, "' (",
                                       s.type, "): its output ",
                                       s.observer->non_float() ? "is not a float tensor"
                                                               : "was never reached",
                                       " in calibration"));
        continue;
      }
      s.quantizer = make_activation_quantizer(s.spec, calibrate_activations(s.spec, s.observer->histogram()));
    }
  }

  // 4. The batch norms folded; weights, calibrated from themselves.
  for (const auto& f : folds) {
    fold_batch_norm(*f.layer.any().ptr(), f.axis, *f.bn.any().ptr(), f.eps, /*apply=*/true);
    f.bn.replace(tnn::AnyModule(tnn::Identity()));
    report.folded.push_back(str_cat(f.bn.name, " into ", f.layer.name));
  }
  for (auto& l : layers) {
    if (!l.weights) continue;
    const at::Tensor w = l.entry.any().ptr()->named_parameters(false)["weight"].detach().to(
        at::kCPU, at::kFloat).contiguous();
    const CalibratedParams p = calibrate_weights(*l.weights, detail::const_view(w), l.kind.axis);
    l.weight_quantizer = make_weights_quantizer(*l.weights, p, w.dim(), l.kind.axis);
  }

  // 5. The wrappers, in place of the entries.
  for (auto& l : layers) {
    std::map<std::string, NodeQuantizationDispatcher::QuantizerPtr> wq;
    if (l.weight_quantizer) wq["weight"] = l.weight_quantizer;
    std::vector<NodeQuantizationDispatcher::QuantizerPtr> acts;
    if (l.site >= 0 && sites[static_cast<size_t>(l.site)].quantizer)
      acts.push_back(sites[static_cast<size_t>(l.site)].quantizer);
    LayerReport row{l.entry.name, l.kind.type, "", "", std::nullopt};
    if (wq.empty() && acts.empty()) continue;
    QuantizationWrapper wrapper(l.entry.any(), NodeQuantizationDispatcher(wq, acts));
    l.entry.replace(tnn::AnyModule(wrapper));
    if (l.weight_quantizer) {
      row.weights = wrapper->dispatcher().weight_quantizers().at("weight")->class_name();
      ::torch::NoGradGuard no_grad;
      row.weight_sqnr_db = sqnr_db(wrapper->float_weight("weight").detach(),
                                   wrapper->get_quantized_weights().at("weight"));
    }
    if (!acts.empty()) row.activations = wrapper->dispatcher().activation_quantizers()[0]->class_name();
    report.layers.push_back(std::move(row));
  }
  for (auto& s : sites) {
    if (!s.quantizer || layers[static_cast<size_t>(s.layer)].site >= 0) continue;
    QuantizationWrapper wrapper(s.anchor.any(), NodeQuantizationDispatcher({}, {s.quantizer}));
    s.anchor.replace(tnn::AnyModule(wrapper));
    report.layers.push_back(LayerReport{s.anchor.name, s.type, "",
                                        wrapper->dispatcher().activation_quantizers()[0]->class_name(),
                                        std::nullopt});
  }
  model.train(trainable);
  return report;
}

std::string fmt_db(const std::optional<double>& v) {
  if (!v) return "-";
  if (std::isinf(*v)) return "inf";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", *v);
  return buf;
}

}  // namespace

int64_t ModelReport::num_wrapped() const {
  int64_t n = 0;
  for (const auto& l : layers) n += l.weights.empty() ? 0 : 1;
  return n;
}

int64_t ModelReport::num_activation_quantizers() const {
  int64_t n = 0;
  for (const auto& l : layers) n += l.activations.empty() ? 0 : 1;
  return n;
}

std::string ModelReport::to_string() const {
  std::vector<std::array<std::string, 5>> rows = {{"layer", "type", "weights", "activations", "W SQNR dB"}};
  for (const auto& l : layers)
    rows.push_back({l.name, l.type, l.weights.empty() ? "-" : l.weights,
                    l.activations.empty() ? "-" : l.activations, fmt_db(l.weight_sqnr_db)});
  std::array<size_t, 5> width{};
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  std::ostringstream out;
  auto line = [&](const std::array<std::string, 5>& r) {
    for (size_t c = 0; c < r.size(); ++c) {
      if (c) out << "  ";
      const std::string pad(width[c] - r[c].size(), ' ');
      out << (c < 4 ? r[c] + pad : pad + r[c]);
    }
    out << "\n";
  };
  line(rows[0]);
  std::array<std::string, 5> rule;
  for (size_t c = 0; c < rule.size(); ++c) rule[c] = std::string(width[c], '-');
  line(rule);
  for (size_t i = 1; i < rows.size(); ++i) line(rows[i]);
  out << num_wrapped() << " layers with quantized weights, " << num_activation_quantizers()
      << " activation quantizers; calibration: " << calibration_calls << " forward calls in ";
  char secs[32];
  std::snprintf(secs, sizeof(secs), "%.2f s", calibration_seconds);
  out << secs << "\n";
  for (const auto& f : folded) out << "folded " << f << "\n";
  for (const auto& n : notes) out << "note: " << n << "\n";
  return out.str();
}

ModelReport quantize(::torch::nn::Module& model, const ModelQuantizationConfig& config,
                     const ForwardLoop& calibrate) {
  return run(model, config, calibrate, /*trainable=*/false, "qi::torch::quantize");
}

ModelReport prepare_qat(::torch::nn::Module& model, const ModelQuantizationConfig& config,
                        const ForwardLoop& calibrate) {
  return run(model, config, calibrate, /*trainable=*/true, "qi::torch::prepare_qat");
}

void convert(::torch::nn::Module& model) {
  for (auto& [name, w] : find_wrappers(model)) w->convert_to_inferable_quantizers();
  for (auto& [name, h] : find_holders(model)) h->convert_to_inferable_quantizers();
  model.eval();
}

}  // namespace qi::torch
