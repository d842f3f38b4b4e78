// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// save / load of wrapped models (the file layout is described in serialize.h). load checks the
// whole file before it changes the model: the archive's declared sizes (before LibTorch reads
// it), checksums, the record's schema, the record against the
// model (wrappers, holders, quantized weights, tensor shapes) and every quantizer against the
// weight it quantizes; only then are quantizers and tensors replaced, with the old ones restored
// when that fails. Every exception is turned into qi::Error naming the file and the part at fault.
#include "qi/torch/serialize.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <vector>

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <nlohmann/json.hpp>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "qi/error.h"
#include "qi/inferable_quantizers.h"
#include "qi/trainable_quantizers.h"
#include "qi/version.h"
#include "qi/torch/quantizers.h"
#include "qi/torch/wrapper.h"

namespace qi::torch {
namespace {

using Json = nlohmann::json;

constexpr const char* kQuantizersKey = "qi_quantizers";
constexpr const char* kChecksumsKey = "qi_checksums";
constexpr const char* kFormat = "qi.torch.model/2";
constexpr const char* kOldFormat = "qi.torch.model/1";
constexpr const char* kAlgorithm = "sha256";
// Records nest about a dozen levels; deeper text is refused before anything recurses over it.
constexpr int kMaxDepth = 128;
// Tensor names are dotted module paths; longer ones are not from save.
constexpr size_t kMaxNameLength = 4096;

// ---- SHA-256 (FIPS 180-4) ------------------------------------------------------------------------

class Sha256 {
 public:
  void update(const void* data, size_t n) {
    if (n == 0) return;
    const auto* p = static_cast<const uint8_t*>(data);
    total_ += n;
    if (fill_ > 0) {
      const size_t take = std::min(n, sizeof(buf_) - fill_);
      std::memcpy(buf_ + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ < sizeof(buf_)) return;
      block(buf_);
      fill_ = 0;
    }
    for (; n >= 64; p += 64, n -= 64) block(p);
    if (n > 0) std::memcpy(buf_, p, n);
    fill_ = n;
  }
  void update(const std::string& s) { update(s.data(), s.size()); }

  // Finishes the hash (the object is spent afterwards).
  std::string hex() {
    const uint64_t bits = total_ * 8;
    const uint8_t pad_one = 0x80, zero = 0;
    update(&pad_one, 1);
    while (fill_ != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(len, 8);
    static const char* const kDigits = "0123456789abcdef";
    std::string out;
    out.reserve(64);
    for (uint32_t word : h_)
      for (int shift = 28; shift >= 0; shift -= 4) out.push_back(kDigits[(word >> shift) & 0xf]);
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void block(const uint8_t* p) {
    static constexpr std::array<uint32_t, 64> kK = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (static_cast<uint32_t>(p[4 * i]) << 24) | (static_cast<uint32_t>(p[4 * i + 1]) << 16) |
             (static_cast<uint32_t>(p[4 * i + 2]) << 8) | static_cast<uint32_t>(p[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6],
             h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 =
          h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a;
    h_[1] += b;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
    h_[5] += f;
    h_[6] += g;
    h_[7] += h;
  }

  std::array<uint32_t, 8> h_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t buf_[64] = {};
  size_t fill_ = 0;
  uint64_t total_ = 0;
};

std::string sha256(const std::string& s) {
  Sha256 h;
  h.update(s);
  return h.hex();
}

// A tensor's checksum: its dtype and sizes ("Float[6, 2, 3, 3]"), then its bytes, row-major.
std::string tensor_digest(const at::Tensor& t) {
  const at::Tensor c = t.detach().cpu().contiguous();
  Sha256 h;
  h.update(str_cat(c10::toString(c.scalar_type()), c.sizes()));
  if (c.numel() > 0) h.update(c.const_data_ptr(), c.nbytes());
  return h.hex();
}

// ---- errors ------------------------------------------------------------------------------------

// Inside a catch block: rethrows the exception in flight as qi::Error prefixed with `context`.
[[noreturn]] void rethrow_as_qi(const std::string& context) {
  try {
    throw;
  } catch (const Error& e) {
    throw Error(str_cat(context, ": ", e.what()));
  } catch (const c10::Error& e) {
    throw Error(str_cat(context, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw Error(str_cat(context, ": ", e.what()));
  } catch (...) {
    throw Error(str_cat(context, ": unknown exception"));
  }
}

// ---- the model's tensors, as Module::save writes them --------------------------------------------

using TensorFn = std::function<void(const std::string& name, const at::Tensor&, bool is_buffer)>;

void for_each_tensor(::torch::nn::Module& module, const std::string& prefix, const TensorFn& fn) {
  for (const auto& p : module.named_parameters(/*recurse=*/false)) fn(prefix + p.key(), p.value(), false);
  for (const auto& b : module.named_buffers(/*recurse=*/false)) fn(prefix + b.key(), b.value(), true);
  for (const auto& child : module.named_children())
    if (child.value()->is_serializable())
      for_each_tensor(*child.value(), prefix + child.key() + ".", fn);
}

const char* kind_name(bool is_buffer) { return is_buffer ? "buffer" : "parameter"; }
const char* list_key(bool is_buffer) { return is_buffer ? "buffers" : "parameters"; }

Json checksums_of(::torch::nn::Module& model, const std::string& record) {
  Json j = Json::object();
  j["algorithm"] = kAlgorithm;
  j["quantizers"] = sha256(record);
  j["parameters"] = Json::object();
  j["buffers"] = Json::object();
  for_each_tensor(model, "", [&](const std::string& name, const at::Tensor& t, bool is_buffer) {
    j[list_key(is_buffer)][name] = tensor_digest(t);
  });
  return j;
}

void fill_archive(::torch::nn::Module& model, const std::string& record,
                  ::torch::serialize::OutputArchive& archive) {
  model.save(archive);
  archive.write(kQuantizersKey, c10::IValue(record));
  archive.write(kChecksumsKey, c10::IValue(checksums_of(model, record).dump()));
}

// What is wrong with a tensor's view (sizes, strides and offset, in elements) within the bytes of
// its storage; empty when it lies within them. LibTorch's reader takes the view a file declares
// without comparing it with the storage's size, so a damaged size or stride would read past the
// storage (found by fuzz_model_load).
std::string view_problem(const at::Tensor& t) {
  if (!t.has_storage()) return "it has no storage";
  if (t.numel() == 0) return "";
  const std::string view = str_cat("its view (sizes ", t.sizes(), ", strides ", t.strides(),
                                   ", offset ", t.storage_offset(), ")");
  if (t.storage_offset() < 0) return str_cat(view, " has a negative offset");
  uint64_t last = static_cast<uint64_t>(t.storage_offset());  // the last element the view reads
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.stride(d) < 0) return str_cat(view, " has a negative stride");
    uint64_t step = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(t.size(d) - 1),
                               static_cast<uint64_t>(t.stride(d)), &step) ||
        __builtin_add_overflow(last, step, &last))
      return str_cat(view, " overflows 64-bit offsets");
  }
  uint64_t need = 0;
  if (__builtin_add_overflow(last, uint64_t{1}, &need) ||
      __builtin_mul_overflow(need, static_cast<uint64_t>(t.element_size()), &need))
    return str_cat(view, " overflows 64-bit offsets");
  if (need > t.storage().nbytes())
    return str_cat(view, " reaches ", need, " bytes, past the ", t.storage().nbytes(),
                   " bytes of its storage");
  return "";
}

// Reads the tensor at a dotted path ("conv.layer.bias") of the archive; false when absent.
bool read_tensor(::torch::serialize::InputArchive& root, const std::string& name,
                 at::Tensor& out) {
  std::vector<std::unique_ptr<::torch::serialize::InputArchive>> chain;
  ::torch::serialize::InputArchive* at = &root;
  size_t from = 0;
  for (size_t dot; (dot = name.find('.', from)) != std::string::npos; from = dot + 1) {
    chain.push_back(std::make_unique<::torch::serialize::InputArchive>());
    if (!at->try_read(name.substr(from, dot - from), *chain.back())) return false;
    at = chain.back().get();
  }
  return at->try_read(name.substr(from), out);
}

// ---- JSON ----------------------------------------------------------------------------------------

Json parse_json(const std::string& text, const std::string& context) {
  try {
    return Json::parse(text, [&](int depth, Json::parse_event_t, Json&) {
      QI_CHECK(depth < kMaxDepth, context, ": JSON nested deeper than ", kMaxDepth, " levels");
      return true;
    });
  } catch (const Json::exception& e) {
    throw Error(str_cat(context, ": malformed JSON: ", e.what()));
  }
}

// A short rendering of a JSON value for messages.
std::string show(const Json& v) {
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return str_cat(v.type_name(), " ", s);
}

void require_keys(const Json& obj, const std::vector<std::string>& keys, const std::string& context) {
  QI_CHECK(obj.is_object(), context, ": expected a JSON object, got ", show(obj));
  for (auto it = obj.begin(); it != obj.end(); ++it)
    QI_CHECK(std::find(keys.begin(), keys.end(), it.key()) != keys.end(), context,
             ": unknown key \"", it.key(), "\"");
  for (const auto& k : keys) QI_CHECK(obj.contains(k), context, ": missing key \"", k, "\"");
}

const std::string& require_string(const Json& v, const std::string& context) {
  QI_CHECK(v.is_string(), context, " must be a string, got ", show(v));
  return v.get_ref<const std::string&>();
}

const std::string& require_digest(const Json& v, const std::string& context) {
  const std::string& s = require_string(v, context);
  QI_CHECK(s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos, context,
           " must be a SHA-256 digest (64 lower-case hex digits), got \"",
           s.size() > 80 ? s.substr(0, 77) + "..." : s, "\"");
  return s;
}

// ---- the quantizer record --------------------------------------------------------------------------

Json record_of(::torch::nn::Module& model) {
  Json j = Json::object();
  j["format"] = kFormat;
  j["qi_version"] = kVersion;
  j["wrappers"] = Json::object();
  j["holders"] = Json::object();
  for (auto& [name, w] : find_wrappers(model))
    j["wrappers"][name] = Json::parse(w->dispatcher().get_config());
  for (auto& [name, h] : find_holders(model))
    j["holders"][name] = Json::parse(h->quantizer()->to_json());
  return j;
}

// The parsed checksum record.
struct Checksums {
  std::string quantizers;
  std::map<std::string, std::string> tensors[2];  // [is_buffer]: name -> digest
};

Checksums parse_checksums(const std::string& text, const std::string& what) {
  const std::string ctx = str_cat(what, ": checksum record \"", kChecksumsKey, "\"");
  const Json j = parse_json(text, ctx);
  require_keys(j, {"algorithm", "quantizers", "parameters", "buffers"}, ctx);
  const std::string& algorithm = require_string(j["algorithm"], ctx + ": \"algorithm\"");
  QI_CHECK(algorithm == kAlgorithm, ctx, ": \"algorithm\" must be \"", kAlgorithm, "\", got \"",
           algorithm, "\"");
  Checksums out;
  out.quantizers = require_digest(j["quantizers"], ctx + ": \"quantizers\"");
  for (bool is_buffer : {false, true}) {
    const Json& list = j[list_key(is_buffer)];
    QI_CHECK(list.is_object(), ctx, ": \"", list_key(is_buffer),
             "\" must be an object mapping tensor names to digests, got ", show(list));
    for (auto it = list.begin(); it != list.end(); ++it) {
      const std::string& name = it.key();
      QI_CHECK(!name.empty() && name.size() <= kMaxNameLength, ctx, ": \"", list_key(is_buffer),
               "\" holds a tensor name of ", name.size(), " characters");
      out.tensors[is_buffer][name] =
          require_digest(it.value(), str_cat(ctx, ": \"", list_key(is_buffer), "\"[\"", name, "\"]"));
    }
  }
  for (const auto& [name, digest] : out.tensors[1])
    QI_CHECK(!out.tensors[0].count(name), ctx, ": \"", name,
             "\" is listed both as a parameter and as a buffer");
  return out;
}

// The quantizer record's schema (not yet its quantizers): the format, the types of its fields.
void check_record_schema(const Json& j, const std::string& what) {
  const std::string ctx = str_cat(what, ": quantizer record \"", kQuantizersKey, "\"");
  QI_CHECK(j.is_object(), ctx, ": expected a JSON object, got ", show(j));
  if (auto it = j.find("format"); it != j.end() && it->is_string() && *it == kOldFormat)
    throw Error(str_cat(what, ": the file has the old format \"", kOldFormat,
                        "\" (no checksums); this qi reads only \"", kFormat,
                        "\": write the model again with qi::torch::save of this version"));
  require_keys(j, {"format", "qi_version", "wrappers", "holders"}, ctx);
  const std::string& format = require_string(j["format"], ctx + ": \"format\"");
  QI_CHECK(format == kFormat, ctx, ": \"format\" must be \"", kFormat, "\", got \"", format, "\"");
  require_string(j["qi_version"], ctx + ": \"qi_version\"");
  for (const char* key : {"wrappers", "holders"}) {
    const Json& group = j[key];
    QI_CHECK(group.is_object(), ctx, ": \"", key, "\" must be an object mapping names to ",
             std::string(key) == "wrappers" ? "dispatcher configs" : "quantizers", ", got ",
             show(group));
    for (auto it = group.begin(); it != group.end(); ++it)
      QI_CHECK(it.value().is_object(), ctx, ": \"", key, "\"[\"", it.key(),
               "\"] must be a JSON object, got ", show(it.value()));
  }
}

// Where a tensor's values come from is decided by its name: quantizer variables of trainable
// quantizers (registered by wrappers and holders) may change with the quantizers.
std::set<std::string> quantizer_variable_names(::torch::nn::Module& model) {
  std::set<std::string> names;
  auto add = [&](const std::string& owner, const std::shared_ptr<BaseQuantizer>& q) {
    if (auto t = std::dynamic_pointer_cast<TrainableQuantizer>(q))
      for (const auto& n : t->registered_names()) names.insert(owner + "." + n);
  };
  for (auto& [name, w] : find_wrappers(model)) {
    for (const auto& [attr, q] : w->dispatcher().weight_quantizers()) add(name, q);
    for (const auto& q : w->dispatcher().activation_quantizers()) add(name, q);
  }
  for (auto& [name, h] : find_holders(model)) add(name, h->quantizer());
  return names;
}

// Throws qi::Error when quantizer `q` cannot quantize `weight` (what the first forward would
// find): a channel axis outside the weight's rank, another number of per-channel values than the
// weight has channels, an input_rank other than the weight's rank.
void check_fits_weight(const BaseQuantizer& q, const at::Tensor& weight) {
  const Shape shape(weight.sizes().begin(), weight.sizes().end());
  const qi::BaseQuantizer* core = &q;
  if (const auto* bound = dynamic_cast<const TrainableQuantizer*>(&q)) core = &bound->policy();
  const at::Tensor w = weight.detach().to(at::kFloat).contiguous();
  qi::check_fits_weight(*core, shape, w.const_data_ptr<float>());
}

// ---- the archive's members, before LibTorch reads them ---------------------------------------------
// LibTorch's reader trusts the sizes a file declares: a member's size in the zip directory, a
// string's length in a pickle, a memo index, a storage's element count. A damaged 12 KB file can
// make it allocate and fill gigabytes, or read a tensor past the end of its data. These checks
// bound every such number by the bytes that are really there.

class MemoryReader final : public caffe2::serialize::ReadAdapterInterface {
 public:
  MemoryReader(const char* data, size_t size) : data_(data), size_(size) {}
  size_t size() const override { return size_; }
  size_t read(uint64_t pos, void* buf, size_t n, const char*) const override {
    if (pos >= size_) return 0;
    const size_t k = std::min<size_t>(n, size_ - static_cast<size_t>(pos));
    if (k > 0) std::memcpy(buf, data_ + pos, k);
    return k;
  }

 private:
  const char* data_;
  size_t size_;
};

// Bytes per element of the storage classes torch's pickler writes (0: not one of them).
size_t storage_itemsize(const std::string& global) {
  static const std::map<std::string, size_t> kSizes = {
      {"torch.FloatStorage", 4},       {"torch.DoubleStorage", 8},   {"torch.HalfStorage", 2},
      {"torch.BFloat16Storage", 2},    {"torch.LongStorage", 8},     {"torch.IntStorage", 4},
      {"torch.ShortStorage", 2},       {"torch.CharStorage", 1},     {"torch.ByteStorage", 1},
      {"torch.BoolStorage", 1},        {"torch.ComplexFloatStorage", 8},
      {"torch.ComplexDoubleStorage", 16}};
  auto it = kSizes.find(global);
  return it == kSizes.end() ? 0 : it->second;
}

// Walks one pickle as LibTorch's unpickler would, keeping only what the checks need: small
// strings, integers, globals and short tuples (for the storages' persistent ids). Opcodes it does
// not know end the walk (LibTorch then decides); a malformed stack ends it too.
class PickleScan {
 public:
  PickleScan(const std::string& member, const uint8_t* p, size_t n,
             caffe2::serialize::PyTorchStreamReader& reader, const std::string& what)
      : member_(member), p_(p), n_(n), reader_(reader), what_(what) {}

  void run() {
    while (at_ < n_) {
      const uint8_t op = p_[at_++];
      if (!step(op)) return;
    }
  }

 private:
  struct Value {
    enum Kind { kOther, kStr, kInt, kGlobal, kTuple } kind = kOther;
    std::string s;
    int64_t i = 0;
    std::vector<Value> items;
  };
  static constexpr size_t kMaxKept = 64;  // longer strings and tuples are kept as kOther

  std::string where() const { return str_cat(what_, ": member \"", member_, "\" at byte ", at_); }

  uint64_t uint(size_t bytes) {
    QI_CHECK(bytes <= n_ - at_, where(), ": truncated pickle (corrupt file)");
    uint64_t v = 0;
    for (size_t k = 0; k < bytes; ++k) v |= static_cast<uint64_t>(p_[at_ + k]) << (8 * k);
    at_ += bytes;
    return v;
  }
  // A length-prefixed string or byte run: the length must fit in what is left.
  std::string payload(size_t len_bytes) {
    const uint64_t len = uint(len_bytes);
    QI_CHECK(len <= n_ - at_, where(), ": the pickle declares a string of ", len, " bytes with ",
             n_ - at_, " left (corrupt file)");
    std::string s = len <= kMaxKept ? std::string(reinterpret_cast<const char*>(p_ + at_), len) : "";
    at_ += len;
    return s;
  }
  bool line(std::string& out) {
    const void* nl = std::memchr(p_ + at_, '\n', n_ - at_);
    QI_CHECK(nl != nullptr, where(), ": truncated pickle (corrupt file)");
    const size_t len = static_cast<size_t>(static_cast<const uint8_t*>(nl) - (p_ + at_));
    out.assign(reinterpret_cast<const char*>(p_ + at_), len);
    at_ += len + 1;
    return true;
  }
  void push(Value v) { stack_.push_back(std::move(v)); }
  Value str(std::string s, bool kept) {
    Value v;
    if (kept) {
      v.kind = Value::kStr;
      v.s = std::move(s);
    }
    return v;
  }
  Value integer(int64_t i) {
    Value v;
    v.kind = Value::kInt;
    v.i = i;
    return v;
  }
  bool pop(size_t k) {
    if (stack_.size() < k) return false;
    stack_.resize(stack_.size() - k);
    return true;
  }
  // Pops the items above the last mark into a tuple value (or kOther when long).
  bool pop_mark(Value* tuple) {
    if (marks_.empty() || marks_.back() > stack_.size()) return false;
    const size_t from = marks_.back();
    marks_.pop_back();
    if (tuple != nullptr) {
      *tuple = Value();
      if (stack_.size() - from <= kMaxKept) {
        tuple->kind = Value::kTuple;
        tuple->items.assign(stack_.begin() + static_cast<std::ptrdiff_t>(from), stack_.end());
      }
    }
    stack_.resize(from);
    return true;
  }
  bool tuple_of(size_t k) {
    if (stack_.size() < k) return false;
    Value t;
    t.kind = Value::kTuple;
    t.items.assign(stack_.end() - static_cast<std::ptrdiff_t>(k), stack_.end());
    stack_.resize(stack_.size() - k);
    push(std::move(t));
    return true;
  }
  void memo_put(uint64_t id) {
    QI_CHECK(id <= memo_.size(), where(), ": the pickle stores memo entry ", id, " after only ",
             memo_.size(), " (corrupt file)");
    if (stack_.empty()) return;
    if (id == memo_.size()) memo_.push_back(stack_.back());
    else memo_[id] = stack_.back();
  }
  void memo_get(uint64_t id) {
    QI_CHECK(id < memo_.size(), where(), ": the pickle reads memo entry ", id, " of ",
             memo_.size(), " (corrupt file)");
    push(memo_[id]);
  }
  // ('storage', torch.<T>Storage, key, location, numel): the record data/<key> must hold numel
  // elements.
  void persistent_id(const Value& pid) {
    if (pid.kind != Value::kTuple || pid.items.size() != 5) return;
    const auto& it = pid.items;
    if (it[0].kind != Value::kStr || it[0].s != "storage" || it[1].kind != Value::kGlobal ||
        it[2].kind != Value::kStr || it[4].kind != Value::kInt)
      return;
    const size_t itemsize = storage_itemsize(it[1].s);
    if (itemsize == 0) return;
    // data.pkl's storages are the records data/<key>, constants.pkl's constants/<key>.
    const std::string dir = member_.size() > 4 && member_.compare(member_.size() - 4, 4, ".pkl") == 0
                                ? member_.substr(0, member_.size() - 4)
                                : std::string("data");
    const std::string record = dir + "/" + it[2].s;
    QI_CHECK(reader_.hasRecord(record), where(), ": the pickle names a storage \"", it[2].s,
             "\" that the archive lacks (corrupt file)");
    const int64_t numel = it[4].i;
    const uint64_t have = reader_.getRecordSize(record);
    QI_CHECK(numel >= 0 && static_cast<uint64_t>(numel) <= have / itemsize, where(),
             ": storage \"", it[2].s, "\" declares ", numel, " elements of ", itemsize,
             " bytes but its data holds ", have, " bytes (corrupt file)");
  }

  // One opcode; false ends the walk.
  bool step(uint8_t op) {
    switch (op) {
      case 0x80: uint(1); return true;                   // PROTO
      case 0x95: uint(8); return true;                   // FRAME
      case '(': marks_.push_back(stack_.size()); return true;
      case '.': return false;                            // STOP
      case '0': return pop(1);
      case '1': return pop_mark(nullptr);
      case '2': if (stack_.empty()) return false; push(stack_.back()); return true;
      case 'N': case 0x88: case 0x89: case ']': case '}': case 0x8f: push(Value()); return true;
      case 'J': push(integer(static_cast<int32_t>(static_cast<uint32_t>(uint(4))))); return true;
      case 'K': push(integer(static_cast<int64_t>(uint(1)))); return true;
      case 'M': push(integer(static_cast<int64_t>(uint(2)))); return true;
      case 0x8a: {                                       // LONG1
        const uint64_t len = uint(1);
        QI_CHECK(len <= n_ - at_, where(), ": truncated pickle (corrupt file)");
        if (len == 0 || len > 8) {
          at_ += len;
          push(Value());
          return true;
        }
        uint64_t v = uint(len);
        if (len < 8 && (v >> (8 * len - 1)) & 1) v |= ~uint64_t{0} << (8 * len);  // sign
        push(integer(static_cast<int64_t>(v)));
        return true;
      }
      case 0x8b: payload(4); push(Value()); return true;   // LONG4
      case 'G': uint(8); push(Value()); return true;       // BINFLOAT
      case 'X': case 'T': { auto s = payload(4); push(str(s, !s.empty())); return true; }
      case 0x8c: case 'U': { auto s = payload(1); push(str(s, !s.empty())); return true; }
      case 0x8d: payload(8); push(Value()); return true;   // BINUNICODE8
      case 'B': payload(4); push(Value()); return true;    // BINBYTES
      case 'C': payload(1); push(Value()); return true;    // SHORT_BINBYTES
      case 0x8e: case 0x96: payload(8); push(Value()); return true;  // BINBYTES8, BYTEARRAY8
      case 'c': {                                          // GLOBAL module\nname\n
        std::string module, name;
        line(module);
        line(name);
        Value v;
        v.kind = Value::kGlobal;
        v.s = module + "." + name;
        push(std::move(v));
        return true;
      }
      case 0x93: {                                         // STACK_GLOBAL
        if (stack_.size() < 2) return false;
        Value v;
        const Value& m = stack_[stack_.size() - 2];
        const Value& n = stack_.back();
        if (m.kind == Value::kStr && n.kind == Value::kStr) {
          v.kind = Value::kGlobal;
          v.s = m.s + "." + n.s;
        }
        pop(2);
        push(std::move(v));
        return true;
      }
      case ')': tuple_of(0); return true;
      case 't': { Value t; if (!pop_mark(&t)) return false; push(std::move(t)); return true; }
      case 0x85: return tuple_of(1);
      case 0x86: return tuple_of(2);
      case 0x87: return tuple_of(3);
      case 'a': return pop(1);                             // APPEND
      case 's': return pop(2);                             // SETITEM
      case 'e': case 'u': case 0x90: return pop_mark(nullptr);  // APPENDS, SETITEMS, ADDITEMS
      case 'l': case 'd': case 0x91:                       // LIST, DICT, FROZENSET
        if (!pop_mark(nullptr)) return false;
        push(Value());
        return true;
      case 'R': case 0x81: if (!pop(2)) return false; push(Value()); return true;  // REDUCE, NEWOBJ
      case 0x92: if (!pop(3)) return false; push(Value()); return true;            // NEWOBJ_EX
      case 'b': return pop(1);                             // BUILD
      case 'Q': {                                          // BINPERSID
        if (stack_.empty()) return false;
        const Value pid = stack_.back();
        stack_.pop_back();
        persistent_id(pid);
        push(Value());
        return true;
      }
      case 'q': memo_put(uint(1)); return true;            // BINPUT
      case 'r': memo_put(uint(4)); return true;            // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); return true;      // MEMOIZE
      case 'h': memo_get(uint(1)); return true;            // BINGET
      case 'j': memo_get(uint(4)); return true;            // LONG_BINGET
      default: return false;                               // not known here: LibTorch decides
    }
  }

  const std::string& member_;
  const uint8_t* p_;
  size_t n_;
  size_t at_ = 0;
  caffe2::serialize::PyTorchStreamReader& reader_;
  const std::string& what_;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::vector<Value> memo_;
};

// Every member's declared size within the file; every pickle member walked (see above).
void check_members(caffe2::serialize::PyTorchStreamReader& reader, uint64_t file_size,
                   const std::string& what) {
  for (const std::string& name : reader.getAllRecords()) {
    const uint64_t size = reader.getRecordSize(name);
    QI_CHECK(size <= file_size, what, ": member \"", name, "\" declares ", size,
             " bytes in a file of ", file_size, " bytes (corrupt file)");
  }
  for (const std::string& name : reader.getAllRecords()) {
    const bool pickle = (name.size() >= 4 && name.compare(name.size() - 4, 4, ".pkl") == 0) ||
                        (name.size() >= 10 && name.compare(name.size() - 10, 10, ".debug_pkl") == 0);
    if (!pickle) continue;
    auto [data, size] = reader.getRecord(name);
    PickleScan(name, static_cast<const uint8_t*>(data.get()), size, reader, what).run();
  }
}

// ---- load --------------------------------------------------------------------------------------

// Where the bytes are: a file, or memory.
struct Source {
  std::string path;
  const char* data = nullptr;
  size_t size = 0;
};

void load_checked(::torch::nn::Module& model, const std::string& what, const Source& src) {
  ::torch::serialize::InputArchive archive;
  try {
    if (src.data == nullptr) {
      caffe2::serialize::PyTorchStreamReader reader(src.path);
      check_members(reader, std::filesystem::file_size(src.path), what);
      archive.load_from(src.path);
    } else {
      caffe2::serialize::PyTorchStreamReader reader(std::make_shared<MemoryReader>(src.data, src.size));
      check_members(reader, src.size, what);
      archive.load_from(src.data, src.size);
    }
  } catch (const Error&) {
    throw;
  } catch (...) {
    rethrow_as_qi(str_cat(what, " is not a readable model file (truncated or corrupt?)"));
  }

  // The two records, as text.
  auto read_text = [&](const char* key, std::string& out) {
    c10::IValue v;
    bool found = false;
    try {
      found = archive.try_read(key, v);
    } catch (...) {
      rethrow_as_qi(str_cat(what, ": corrupt record \"", key, "\""));
    }
    if (!found) return false;
    QI_CHECK(v.isString(), what, ": record \"", key, "\" must be a string, got ", v.tagKind());
    out = v.toStringRef();
    return true;
  };
  std::string record_text, checksums_text;
  QI_CHECK(read_text(kQuantizersKey, record_text), what,
           ": no qi quantizer record; was it written by qi::torch::save?");
  if (!read_text(kChecksumsKey, checksums_text)) {
    // Files of the first format have no checksums: say so rather than "corrupt".
    check_record_schema(parse_json(record_text, str_cat(what, ": quantizer record")), what);
    throw Error(str_cat(what, ": no checksum record \"", kChecksumsKey, "\" (corrupt file?)"));
  }

  // 1. Checksums: of the record, then of every tensor the file lists.
  const Checksums sums = parse_checksums(checksums_text, what);
  QI_CHECK(sha256(record_text) == sums.quantizers, what, ": the quantizer record \"",
           kQuantizersKey, "\" does not match its checksum (the file is corrupt)");
  std::map<std::string, std::pair<at::Tensor, bool>> stored;  // name -> (tensor, is_buffer)
  for (bool is_buffer : {false, true}) {
    for (const auto& [name, digest] : sums.tensors[is_buffer]) {
      at::Tensor t;
      bool found = false, matches = false;
      try {
        found = read_tensor(archive, name, t);
        if (found) {
          const std::string problem = view_problem(t);
          QI_CHECK(problem.empty(), problem, " (corrupt file)");
        }
        matches = found && tensor_digest(t) == digest;
      } catch (...) {
        rethrow_as_qi(str_cat(what, ": ", kind_name(is_buffer), " \"", name, "\" is unreadable"));
      }
      QI_CHECK(found, what, ": ", kind_name(is_buffer), " \"", name,
               "\" is listed in the checksum record but missing from the archive (corrupt file?)");
      QI_CHECK(matches, what, ": ", kind_name(is_buffer), " \"", name,
               "\" does not match its checksum (the file is corrupt)");
      stored.emplace(name, std::make_pair(t, is_buffer));
    }
  }

  // 2. The record's schema.
  const Json j = parse_json(record_text, str_cat(what, ": quantizer record \"", kQuantizersKey, "\""));
  check_record_schema(j, what);

  // 3. The same wrappers and holders, by name.
  auto wrappers = find_wrappers(model);
  auto holders = find_holders(model);
  const Json& file_wrappers = j["wrappers"];
  const Json& file_holders = j["holders"];
  {
    std::set<std::string> in_model;
    for (auto& [name, w] : wrappers) in_model.insert(name);
    for (auto it = file_wrappers.begin(); it != file_wrappers.end(); ++it)
      QI_CHECK(in_model.count(it.key()), what, ": mismatched architecture: the file has a wrapper \"",
               it.key(), "\" that the model lacks");
    for (const auto& n : in_model)
      QI_CHECK(file_wrappers.contains(n), what, ": mismatched architecture: the model has a wrapper \"",
               n, "\" that the file lacks");
    std::set<std::string> holders_in_model;
    for (auto& [name, h] : holders) holders_in_model.insert(name);
    for (auto it = file_holders.begin(); it != file_holders.end(); ++it)
      QI_CHECK(holders_in_model.count(it.key()), what,
               ": mismatched architecture: the file has an activation holder \"", it.key(),
               "\" that the model lacks");
    for (const auto& n : holders_in_model)
      QI_CHECK(file_holders.contains(n), what,
               ": mismatched architecture: the model has a holder \"", n, "\" that the file lacks");
  }

  // 4. Tensors the model has now and keeps whatever the quantizers: same dtype and sizes.
  {
    const std::set<std::string> variables = quantizer_variable_names(model);
    for_each_tensor(model, "", [&](const std::string& name, const at::Tensor& t, bool is_buffer) {
      if (variables.count(name)) return;
      auto it = stored.find(name);
      QI_CHECK(it != stored.end(), what, ": mismatched architecture: the file has no ",
               kind_name(is_buffer), " \"", name, "\"");
      const at::Tensor& s = it->second.first;
      QI_CHECK(it->second.second == is_buffer, what, ": mismatched architecture: \"", name,
               "\" is a ", kind_name(is_buffer), " in the model but a ",
               kind_name(it->second.second), " in the file");
      QI_CHECK(s.sizes() == t.sizes() && s.scalar_type() == t.scalar_type(), what,
               ": mismatched architecture: ", kind_name(is_buffer), " \"", name, "\" is ",
               t.scalar_type(), t.sizes(), " in the model but ", s.scalar_type(), s.sizes(),
               " in the file");
    });
  }

  // 5. Every quantizer: parsed, of the right target, quantizing the weights the model's wrapper
  // quantizes (an empty record where the model has quantizers is refused), fitting them.
  std::vector<NodeQuantizationDispatcher> new_dispatchers;
  std::vector<std::shared_ptr<BaseQuantizer>> new_holders;
  for (auto& [name, w] : wrappers) {
    const std::string ctx = str_cat(what, ": wrapper \"", name, "\"");
    const Json& rec = file_wrappers[name];
    NodeQuantizationDispatcher d;
    try {
      d = NodeQuantizationDispatcher::from_config(rec.dump());
    } catch (...) {
      rethrow_as_qi(ctx);
    }
    const NodeQuantizationDispatcher& now = w->dispatcher();
    for (const auto& [attr, q] : now.weight_quantizers())
      QI_CHECK(d.weight_quantizers().count(attr), ctx,
               ": the file has no quantizer for weight \"", attr,
               "\", which the model's wrapper quantizes (\"weight_quantizer\" holds ",
               d.num_weight_quantizers(), " entries)");
    for (const auto& [attr, q] : d.weight_quantizers())
      QI_CHECK(now.weight_quantizers().count(attr), ctx, ": the file quantizes weight \"", attr,
               "\", which the model's wrapper does not quantize");
    QI_CHECK(d.num_act_quantizers() == now.num_act_quantizers(), ctx, ": the file has ",
             d.num_act_quantizers(), " activation quantizers, the model's wrapper ",
             now.num_act_quantizers());
    for (const auto& [attr, q] : d.weight_quantizers()) {
      QI_CHECK(q->quantization_target() == QuantizationTarget::Weights, ctx, ": the quantizer of weight \"",
               attr, "\" is an ", to_string(q->quantization_target()), " quantizer (",
               q->class_name(), "), expected Weights");
      const at::Tensor weight = w->float_weight(attr);
      try {
        check_fits_weight(*q, weight);
      } catch (...) {
        rethrow_as_qi(str_cat(ctx, ": the file's quantizer of weight \"", attr,
                              "\" does not fit the model's ", weight.scalar_type(), weight.sizes(),
                              " weight (mismatched architecture?)"));
      }
    }
    for (int64_t i = 0; i < d.num_act_quantizers(); ++i) {
      const auto& q = d.activation_quantizers()[static_cast<size_t>(i)];
      QI_CHECK(q->quantization_target() == QuantizationTarget::Activation, ctx,
               ": activation quantizer ", i, " is a ", to_string(q->quantization_target()),
               " quantizer (", q->class_name(), "), expected Activation");
    }
    new_dispatchers.push_back(std::move(d));
  }
  for (auto& [name, h] : holders) {
    const std::string ctx = str_cat(what, ": activation holder \"", name, "\"");
    std::shared_ptr<BaseQuantizer> q;
    try {
      q = quantizer_from_json(file_holders[name].dump());
    } catch (...) {
      rethrow_as_qi(ctx);
    }
    QI_CHECK(q->quantization_target() == QuantizationTarget::Activation, ctx, ": the quantizer is a ",
             to_string(q->quantization_target()), " quantizer (", q->class_name(),
             "), expected Activation");
    new_holders.push_back(std::move(q));
  }

  // 6. Replace the quantizers, check the tensors the model now has against the file, read them.
  // A failure restores the quantizers and tensors the model had.
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
    std::set<std::string> seen;
    for_each_tensor(model, "", [&](const std::string& name, const at::Tensor& t, bool is_buffer) {
      auto it = stored.find(name);
      QI_CHECK(it != stored.end(), "mismatched architecture: the file has no ",
               kind_name(is_buffer), " \"", name, "\"");
      const at::Tensor& s = it->second.first;
      QI_CHECK(it->second.second == is_buffer, "mismatched architecture: \"", name, "\" is a ",
               kind_name(is_buffer), " in the model but a ", kind_name(it->second.second),
               " in the file");
      QI_CHECK(s.sizes() == t.sizes() && s.scalar_type() == t.scalar_type(),
               "mismatched architecture: ", kind_name(is_buffer), " \"", name, "\" is ",
               t.scalar_type(), t.sizes(), " in the model but ", s.scalar_type(), s.sizes(),
               " in the file");
      seen.insert(name);
    });
    for (const auto& [name, entry] : stored)
      QI_CHECK(seen.count(name), "mismatched architecture: the file has a ",
               kind_name(entry.second), " \"", name, "\" that the model lacks");
    model.load(archive);
  } catch (...) {
    try {
      restore();
    } catch (...) {
      rethrow_as_qi(str_cat(what, ": the load failed and the model could not be restored"));
    }
    rethrow_as_qi(what);
  }
}

void load_guarded(::torch::nn::Module& model, const std::string& what, const Source& src) {
  try {
    load_checked(model, what, src);
  } catch (const Error&) {
    throw;  // already names the file
  } catch (...) {
    rethrow_as_qi(what);
  }
}

}  // namespace

// ---- public --------------------------------------------------------------------------------------

namespace detail {

std::string sha256_hex(const void* data, size_t size) {
  Sha256 h;
  h.update(data, size);
  return h.hex();
}

std::string quantizer_record(::torch::nn::Module& model) {
  try {
    return record_of(model).dump();
  } catch (...) {
    rethrow_as_qi("qi::torch::detail::quantizer_record");
  }
}

void write_archive(::torch::nn::Module& model, const std::string& record, std::ostream& out) {
  try {
    ::torch::serialize::OutputArchive archive;
    fill_archive(model, record, archive);
    archive.save_to(out);
  } catch (...) {
    rethrow_as_qi("qi::torch::detail::write_archive");
  }
}

}  // namespace detail

void save(::torch::nn::Module& model, const std::string& path) {
  namespace fs = std::filesystem;
  const std::string tmp = path + ".tmp-qi";
  try {
    ::torch::serialize::OutputArchive archive;
    fill_archive(model, record_of(model).dump(), archive);
    archive.save_to(tmp);
  } catch (...) {
    std::remove(tmp.c_str());
    rethrow_as_qi(str_cat("qi::torch::save: cannot write \"", path, "\""));
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
  Source src;
  src.path = path;
  load_guarded(model, what, src);
}

void load_from_memory(::torch::nn::Module& model, const void* data, size_t size,
                      const std::string& name) {
  const std::string what = str_cat("qi::torch::load: \"", name, "\"");
  QI_CHECK(data != nullptr || size == 0, what, ": no data");
  static const char kEmpty = 0;
  Source src;
  src.data = data != nullptr ? static_cast<const char*>(data) : &kEmpty;
  src.size = size;
  load_guarded(model, what, src);
}

}  // namespace qi::torch
