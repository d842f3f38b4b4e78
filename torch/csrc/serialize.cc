// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/torch/serialize.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "qi/error.h"
#include "qi/version.h"
#include "qi/torch/wrapper.h"

namespace qi::torch {
namespace {

constexpr const char* kQuantizersKey = "qi_quantizers";
constexpr const char* kFormat = "qi.torch.model/1";

nlohmann::json quantizers_of(::torch::nn::Module& model) {
  nlohmann::json j;
  j["format"] = kFormat;
  j["qi_version"] = kVersion;
  j["wrappers"] = nlohmann::json::object();
  j["holders"] = nlohmann::json::object();
  for (auto& [name, w] : find_wrappers(model))
    j["wrappers"][name] = nlohmann::json::parse(w->dispatcher().get_config());
  for (auto& [name, h] : find_holders(model))
    j["holders"][name] = nlohmann::json::parse(h->quantizer()->to_json());
  return j;
}

// Every parameter and buffer of `module` must be in `archive` with the same sizes and dtype
// (Module::load would silently take other sizes). Walks the archive as Module::load does.
void check_tensors(::torch::nn::Module& module, ::torch::serialize::InputArchive& archive,
                   const std::string& prefix, const std::string& what) {
  auto check = [&](const std::string& key, const at::Tensor& expected, bool is_buffer) {
    const std::string name = prefix + key;
    const char* kind = is_buffer ? "buffer" : "parameter";
    at::Tensor stored;
    QI_CHECK(archive.try_read(key, stored, is_buffer), what, ": mismatched architecture: the file has no ",
             kind, " \"", name, "\"");
    QI_CHECK(stored.sizes() == expected.sizes() && stored.scalar_type() == expected.scalar_type(),
             what, ": mismatched architecture: ", kind, " \"", name, "\" is ",
             expected.scalar_type(), expected.sizes(), " in the model but ", stored.scalar_type(),
             stored.sizes(), " in the file");
  };
  for (const auto& p : module.named_parameters(/*recurse=*/false)) check(p.key(), p.value(), false);
  for (const auto& b : module.named_buffers(/*recurse=*/false)) check(b.key(), b.value(), true);
  for (const auto& child : module.named_children()) {
    ::torch::serialize::InputArchive child_archive;
    QI_CHECK(archive.try_read(child.key(), child_archive), what,
             ": mismatched architecture: the file has no module \"", prefix + child.key(), "\"");
    check_tensors(*child.value(), child_archive, prefix + child.key() + ".", what);
  }
}

}  // namespace

void save(::torch::nn::Module& model, const std::string& path) {
  namespace fs = std::filesystem;
  const std::string tmp = path + ".tmp-qi";
  try {
    ::torch::serialize::OutputArchive archive;
    model.save(archive);
    archive.write(kQuantizersKey, c10::IValue(quantizers_of(model).dump()));
    archive.save_to(tmp);
  } catch (const c10::Error& e) {
    std::remove(tmp.c_str());
    throw Error(str_cat("qi::torch::save: cannot write \"", path, "\": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    throw Error(str_cat("qi::torch::save: cannot write \"", path, "\": ", e.what()));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(str_cat("qi::torch::save: cannot rename the temporary file to \"", path,
                        "\": ", ec.message()));
  }
}

void load(::torch::nn::Module& model, const std::string& path) {
  const std::string what = str_cat("qi::torch::load: \"", path, "\"");
  {
    std::ifstream f(path, std::ios::binary);
    QI_CHECK(f.good(), what, ": cannot open the file");
  }
  ::torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw Error(str_cat(what, " is not a readable model file (truncated or corrupt?): ",
                        e.what_without_backtrace()));
  }
  c10::IValue text;
  bool found = false;
  try {
    found = archive.try_read(kQuantizersKey, text);
  } catch (const c10::Error& e) {
    throw Error(str_cat(what, ": corrupt quantizer record: ", e.what_without_backtrace()));
  }
  QI_CHECK(found && text.isString(), what, ": no qi quantizer record; was it written by qi::torch::save?");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.toStringRef());
  } catch (const nlohmann::json::exception& e) {
    throw Error(str_cat(what, ": corrupt quantizer record: ", e.what()));
  }
  QI_CHECK(j.is_object() && j.value("format", "") == kFormat && j.contains("wrappers") &&
               j["wrappers"].is_object() && j.contains("holders") && j["holders"].is_object(),
           what, ": unknown quantizer record format");

  // Same wrappers and holders, by name.
  auto wrappers = find_wrappers(model);
  auto holders = find_holders(model);
  std::set<std::string> in_model, in_file;
  for (auto& [name, w] : wrappers) in_model.insert(name);
  for (auto it = j["wrappers"].begin(); it != j["wrappers"].end(); ++it) in_file.insert(it.key());
  for (const auto& n : in_file)
    QI_CHECK(in_model.count(n), what, ": mismatched architecture: the file has a wrapper \"", n,
             "\" that the model lacks");
  for (const auto& n : in_model)
    QI_CHECK(in_file.count(n), what, ": mismatched architecture: the model has a wrapper \"", n,
             "\" that the file lacks");
  for (auto& [name, h] : holders)
    QI_CHECK(j["holders"].contains(name), what,
             ": mismatched architecture: the model has a holder \"", name, "\" that the file lacks");
  QI_CHECK(j["holders"].size() == holders.size(), what,
           ": mismatched architecture: the file has ", j["holders"].size(),
           " activation holders, the model ", holders.size());

  // Parse every quantizer before touching the model, and keep the model's state: a load that
  // fails part-way restores the quantizers and tensors the model had.
  std::vector<NodeQuantizationDispatcher> new_dispatchers;
  std::vector<std::shared_ptr<BaseQuantizer>> new_holders;
  try {
    for (auto& [name, w] : wrappers)
      new_dispatchers.push_back(NodeQuantizationDispatcher::from_config(j["wrappers"][name].dump()));
    for (auto& [name, h] : holders)
      new_holders.push_back(quantizer_from_json(j["holders"][name].dump()));
  } catch (const Error& e) {
    throw Error(str_cat(what, ": the file's quantizers do not fit the model: ", e.what()));
  }
  std::vector<NodeQuantizationDispatcher> old_dispatchers;
  std::vector<std::shared_ptr<BaseQuantizer>> old_holders;
  for (auto& [name, w] : wrappers) old_dispatchers.push_back(w->dispatcher());
  for (auto& [name, h] : holders) old_holders.push_back(h->quantizer());
  std::stringstream saved_state;
  {
    ::torch::serialize::OutputArchive state;
    model.save(state);
    state.save_to(saved_state);
  }
  auto restore = [&] {
    for (size_t i = 0; i < wrappers.size(); ++i) wrappers[i].second->set_dispatcher(old_dispatchers[i]);
    for (size_t i = 0; i < holders.size(); ++i) holders[i].second->set_quantizer(old_holders[i]);
    ::torch::serialize::InputArchive state;
    state.load_from(saved_state);
    model.load(state);
  };
  try {
    for (size_t i = 0; i < wrappers.size(); ++i) wrappers[i].second->set_dispatcher(new_dispatchers[i]);
    for (size_t i = 0; i < holders.size(); ++i) holders[i].second->set_quantizer(new_holders[i]);
    check_tensors(model, archive, "", what);
    model.load(archive);
  } catch (const Error& e) {
    restore();
    throw Error(str_cat(what, ": the file's quantizers do not fit the model (mismatched "
                        "architecture?): ", e.what()));
  } catch (const c10::Error& e) {
    restore();
    throw Error(str_cat(what, ": mismatched architecture or corrupt tensors: ",
                        e.what_without_backtrace()));
  }
}

}  // namespace qi::torch
