// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// save / load of wrapped models (serialize.h): round trips, and every bad file a qi::Error that
// names the file and the part at fault, found before the model changes.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "qi/configs.h"
#include "qi/dispatcher.h"
#include "qi/inferable_quantizers.h"
#include "qi/torch/qi_torch.h"
#include "torch_test_util.h"

namespace {

namespace fs = std::filesystem;
namespace nn = ::torch::nn;
using Json = nlohmann::json;
using qi::NodeQuantizationDispatcher;
using qi::ParamArray;
using qi::QuantizationMethod;
using qi::TrainingMethod;
using qi::torch::ActivationQuantizationHolder;
using qi::torch::QuantizationWrapper;
using qi_torch_test::bit_equal;
using qi_torch_test::expect_qi_error;
using QuantizerPtr = NodeQuantizationDispatcher::QuantizerPtr;

// A per-channel symmetric weights quantizer (4 bits, thresholds 0.3, 0.4, ...).
QuantizerPtr per_channel_quantizer(int64_t channels, int64_t axis) {
  std::vector<double> t;
  for (int64_t c = 0; c < channels; ++c) t.push_back(0.3 + 0.1 * static_cast<double>(c));
  return std::make_shared<qi::WeightsSymmetricInferableQuantizer>(4, t, true, axis);
}

NodeQuantizationDispatcher weights_only(QuantizerPtr q) {
  return NodeQuantizationDispatcher({{"weight", std::move(q)}}, {});
}

qi::TrainableQuantizerWeightsConfig symmetric_weights_config(QuantizationMethod method,
                                                             std::vector<double> thresholds) {
  qi::TrainableQuantizerWeightsConfig c;
  c.weights_quantization_method = method;
  c.weights_n_bits = 4;
  c.weights_channels_axis = 0;
  c.weights_per_channel_threshold = true;
  const int64_t n = static_cast<int64_t>(thresholds.size());
  c.weights_quantization_params = {{"threshold", ParamArray{{n, 1}, std::move(thresholds)}}};
  return c;
}

qi::TrainableQuantizerActivationConfig activation_config(QuantizationMethod method) {
  qi::TrainableQuantizerActivationConfig c;
  c.activation_quantization_method = method;
  c.activation_n_bits = 6;
  if (method == QuantizationMethod::UNIFORM)
    c.activation_quantization_params = {{"range_min", -1.5}, {"range_max", 2.0}};
  else
    c.activation_quantization_params = {{"threshold", 2.0}, {"is_signed", true}};
  return c;
}

// ---- save / load -------------------------------------------------------------------------------

enum class Kind { kInferable, kTrainable };

struct NetImpl : nn::Module {
  NetImpl(Kind kind, int64_t width = 6) {
    nn::Conv2d c(nn::Conv2dOptions(2, width, 3).padding(1));
    nn::Linear l(width * 4 * 4, 5);
    NodeQuantizationDispatcher dc, dl;
    QuantizerPtr holder_q;
    if (kind == Kind::kInferable) {
      std::vector<double> t;
      for (int64_t i = 0; i < width; ++i) t.push_back(std::ldexp(1.0, static_cast<int>(i % 3) - 2));
      dc = NodeQuantizationDispatcher(
          {{"weight", std::make_shared<qi::WeightsPOTInferableQuantizer>(4, t, true, 0)}}, {});
      holder_q = std::make_shared<qi::ActivationSymmetricInferableQuantizer>(
          6, std::vector<double>{1.7}, false);
      dl = NodeQuantizationDispatcher(
          {{"weight", std::make_shared<qi::WeightsUniformInferableQuantizer>(
                          5, std::vector<double>(5, -0.1), std::vector<double>(5, 0.12), true, 0)}},
          {std::make_shared<qi::ActivationUniformInferableQuantizer>(
              8, std::vector<double>{-2.0}, std::vector<double>{2.0})});
    } else {
      std::vector<double> t;
      for (int64_t i = 0; i < width; ++i) t.push_back(0.15 + 0.02 * static_cast<double>(i));
      dc = NodeQuantizationDispatcher(
          {{"weight", qi::torch::make_trainable_quantizer(
                          TrainingMethod::LSQ,
                          symmetric_weights_config(QuantizationMethod::POWER_OF_TWO, t))}},
          {qi::torch::make_trainable_quantizer(TrainingMethod::LSQ,
                                               activation_config(QuantizationMethod::UNIFORM))});
      holder_q = qi::torch::make_trainable_quantizer(
          TrainingMethod::STE, activation_config(QuantizationMethod::SYMMETRIC));
      dl = NodeQuantizationDispatcher(
          {{"weight", qi::torch::make_trainable_quantizer(
                          TrainingMethod::SoftRounding,
                          symmetric_weights_config(QuantizationMethod::SYMMETRIC,
                                                   std::vector<double>(5, 0.12)))}},
          {});
    }
    conv = register_module("conv", QuantizationWrapper(nn::AnyModule(c), dc));
    act = register_module("act", ActivationQuantizationHolder(holder_q));
    fc = register_module("fc", QuantizationWrapper(nn::AnyModule(l), dl));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = act->forward(::torch::relu(conv->forward(x)));
    return fc->forward(y.flatten(1));
  }
  QuantizationWrapper conv{nullptr}, fc{nullptr};
  ActivationQuantizationHolder act{nullptr};
};
QI_TORCH_MODULE(Net);

// A wrapped model with a different set of wrappers.
struct SmallNetImpl : nn::Module {
  SmallNetImpl() {
    conv = register_module(
        "conv", QuantizationWrapper(nn::AnyModule(nn::Conv2d(nn::Conv2dOptions(2, 6, 3).padding(1))),
                                    weights_only(per_channel_quantizer(6, 0))));
  }
  QuantizationWrapper conv{nullptr};
};
QI_TORCH_MODULE(SmallNet);

Net make_net(Kind kind, uint64_t seed, int64_t width = 6) {
  ::torch::manual_seed(seed);
  return Net(kind, width);
}

class SaveLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qi_torch_tests_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    ::torch::manual_seed(99);
    x_ = ::torch::randn({3, 2, 4, 4});
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  void train(Net& net, int steps) {
    net->train();
    ::torch::optim::SGD opt(net->parameters(), ::torch::optim::SGDOptions(0.05));
    const at::Tensor target = ::torch::randn({3, 5});
    for (int i = 0; i < steps; ++i) {
      opt.zero_grad();
      ::torch::mse_loss(net->forward(x_), target).backward();
      opt.step();
    }
  }
  // Saves `a`, loads into `b`, and checks bit-identical eval (and train) outputs.
  void round_trip(Net& a, Net& b, bool check_train_mode) {
    a->eval();
    b->eval();
    const at::Tensor ya = a->forward(x_);
    EXPECT_FALSE(b->forward(x_).equal(ya));  // a fresh model differs before loading
    qi::torch::save(*a, path("model.pt"));
    qi::torch::load(*b, path("model.pt"));
    EXPECT_TRUE(bit_equal(b->forward(x_), ya));
    if (check_train_mode) {
      a->train();
      b->train();
      EXPECT_TRUE(bit_equal(b->forward(x_), a->forward(x_)));
    }
    EXPECT_FALSE(fs::exists(path("model.pt") + ".tmp-qi"));
  }

  std::string read_bytes(const std::string& file) const {
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void write_bytes(const std::string& file, const std::string& bytes) const {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  // The quantizer record save would write for `net`, as JSON.
  static Json record_of(Net& net) { return Json::parse(qi::torch::detail::quantizer_record(*net)); }
  // Writes `net`'s tensors with `record` and valid checksums of both: a file whose only fault is
  // in the record.
  std::string write_with_record(Net& net, const std::string& record, const std::string& name) {
    std::ofstream out(path(name), std::ios::binary | std::ios::trunc);
    qi::torch::detail::write_archive(*net, record, out);
    return path(name);
  }
  std::string write_with_record(Net& net, const Json& record, const std::string& name) {
    return write_with_record(net, record.dump(), name);
  }

  // What a model's state is, to check that a failed load changed nothing.
  struct State {
    std::map<std::string, std::string> configs;
    std::map<std::string, at::Tensor> tensors;
    at::Tensor eval_output;
  };
  State state_of(Net& net) {
    State st;
    for (auto& [name, w] : qi::torch::find_wrappers(*net)) st.configs[name] = w->dispatcher().get_config();
    for (auto& [name, h] : qi::torch::find_holders(*net)) st.configs[name] = h->quantizer()->to_json();
    for (const auto& p : net->named_parameters()) st.tensors[p.key()] = p.value().detach().clone();
    for (const auto& b : net->named_buffers()) st.tensors[b.key()] = b.value().detach().clone();
    const bool training = net->is_training();
    net->eval();
    {
      at::NoGradGuard guard;
      st.eval_output = net->forward(x_).clone();
    }
    net->train(training);
    return st;
  }
  void expect_same_state(Net& net, const State& before) {
    const State now = state_of(net);
    EXPECT_EQ(now.configs, before.configs);
    ASSERT_EQ(now.tensors.size(), before.tensors.size());
    for (const auto& [name, t] : before.tensors) {
      ASSERT_TRUE(now.tensors.count(name)) << name;
      EXPECT_TRUE(bit_equal(now.tensors.at(name), t)) << name;
    }
    EXPECT_TRUE(bit_equal(now.eval_output, before.eval_output));
  }
  // Loading `file` into `net` raises qi::Error holding `part` and leaves `net` as it was.
  void expect_refused(Net& net, const std::string& file, const std::string& part) {
    const State before = state_of(net);
    expect_qi_error([&] { qi::torch::load(*net, file); }, part);
    expect_same_state(net, before);
  }

  fs::path dir_;
  at::Tensor x_;
};

TEST_F(SaveLoad, InferableModelReloadsBitIdentical) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  round_trip(a, b, /*check_train_mode=*/true);
}

TEST_F(SaveLoad, TrainedQuantizersReloadBitIdentical) {
  Net a = make_net(Kind::kTrainable, 1), b = make_net(Kind::kTrainable, 2);
  train(a, 3);
  round_trip(a, b, /*check_train_mode=*/true);
  // The learned variables came back.
  EXPECT_TRUE(bit_equal(b->conv->named_parameters(false)["weight_ptq_threshold_tensor"],
                        a->conv->named_parameters(false)["weight_ptq_threshold_tensor"]));
  EXPECT_TRUE(bit_equal(b->fc->named_parameters(false)["weight_auxvar_tensor"],
                        a->fc->named_parameters(false)["weight_auxvar_tensor"]));
}

TEST_F(SaveLoad, ConvertedModelReloadsIntoAnUnconvertedOne) {
  Net a = make_net(Kind::kTrainable, 1), b = make_net(Kind::kTrainable, 2);
  train(a, 2);
  a->eval();
  const at::Tensor before = a->forward(x_);
  a->conv->convert_to_inferable_quantizers();
  a->fc->convert_to_inferable_quantizers();
  a->act->convert_to_inferable_quantizers();
  EXPECT_TRUE(bit_equal(a->forward(x_), before));
  round_trip(a, b, /*check_train_mode=*/true);
  for (auto& [name, w] : qi::torch::find_wrappers(*b))
    for (const auto& [attr, q] : w->dispatcher().weight_quantizers()) EXPECT_FALSE(q->is_trainable());
  EXPECT_FALSE(b->act->quantizer()->is_trainable());
  EXPECT_TRUE(bit_equal(b->forward(x_), before));
}

TEST_F(SaveLoad, OverwritesAnExistingFile) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2),
      c = make_net(Kind::kInferable, 3);
  qi::torch::save(*b, path("model.pt"));
  round_trip(a, c, false);
}

TEST_F(SaveLoad, MissingFileRaises) {
  Net b = make_net(Kind::kInferable, 2);
  expect_qi_error([&] { qi::torch::load(*b, path("nope.pt")); }, "cannot open the file");
}

TEST_F(SaveLoad, TruncatedFileRaises) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  qi::torch::save(*a, path("model.pt"));
  std::string bytes;
  {
    std::ifstream in(path("model.pt"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GT(bytes.size(), 100u);
  for (size_t keep : {bytes.size() / 2, bytes.size() - 30, size_t{10}, size_t{0}}) {
    SCOPED_TRACE(::testing::Message() << "kept " << keep << " of " << bytes.size() << " bytes");
    {
      std::ofstream out(path("truncated.pt"), std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(keep));
    }
    expect_qi_error([&] { qi::torch::load(*b, path("truncated.pt")); }, "qi::torch::load: \"");
  }
}

TEST_F(SaveLoad, RandomBytesFileRaises) {
  Net b = make_net(Kind::kInferable, 2);
  std::mt19937 rng(7);
  std::string bytes(4096, '\0');
  for (char& ch : bytes) ch = static_cast<char>(rng() & 0xff);
  {
    std::ofstream out(path("random.pt"), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  expect_qi_error([&] { qi::torch::load(*b, path("random.pt")); }, "not a readable model file");
}

TEST_F(SaveLoad, NonQiArchiveRaises) {
  nn::Linear plain(3, 2);
  ::torch::save(plain, path("plain.pt"));
  Net b = make_net(Kind::kInferable, 2);
  expect_qi_error([&] { qi::torch::load(*b, path("plain.pt")); }, "no qi quantizer record");
}

TEST_F(SaveLoad, DifferentArchitectureRaises) {
  Net a = make_net(Kind::kInferable, 1);
  qi::torch::save(*a, path("model.pt"));
  SmallNet small;
  expect_qi_error([&] { qi::torch::load(*small, path("model.pt")); }, "mismatched architecture");
  // Same names, other shapes (8 instead of 6 convolution channels).
  Net wide = make_net(Kind::kInferable, 2, 8);
  expect_qi_error([&] { qi::torch::load(*wide, path("model.pt")); },
                  "mismatched architecture: parameter \"conv.weight\" is Float[8, 2, 3, 3] in "
                  "the model but Float[6, 2, 3, 3] in the file");
  // Trainable quantizers that do not fit the wider layer.
  Net trained = make_net(Kind::kTrainable, 1);
  qi::torch::save(*trained, path("trained.pt"));
  Net wide_trainable = make_net(Kind::kTrainable, 2, 8);
  expect_qi_error([&] { qi::torch::load(*wide_trainable, path("trained.pt")); },
                  "mismatched architecture: parameter \"conv.weight\" is Float[8, 2, 3, 3] in "
                  "the model but Float[6, 2, 3, 3] in the file");
  // A model with more wrappers than the file.
  qi::torch::save(*small, path("small.pt"));
  Net b = make_net(Kind::kInferable, 2);
  expect_qi_error([&] { qi::torch::load(*b, path("small.pt")); }, "mismatched architecture");
}

// A load refused (here: quantizers and tensors that do not fit) leaves the model as it was: same
// quantizers, same parameters, same outputs.
TEST_F(SaveLoad, FailedLoadLeavesTheModelUnchanged) {
  Net trained = make_net(Kind::kTrainable, 1);
  qi::torch::save(*trained, path("trained.pt"));
  Net wide = make_net(Kind::kTrainable, 2, 8);
  // Change a learned value so that a silent reset to the config's initial values would show.
  {
    at::NoGradGuard guard;
    for (auto& p : wide->parameters()) p.add_(0.01);
  }
  wide->eval();
  const at::Tensor x = ::torch::randn({2, 2, 4, 4});
  const at::Tensor before = wide->forward(x).detach().clone();
  const std::string conv_before = wide->conv->dispatcher().get_config();
  expect_qi_error([&] { qi::torch::load(*wide, path("trained.pt")); }, "mismatched architecture");
  EXPECT_EQ(wide->conv->dispatcher().get_config(), conv_before);
  EXPECT_TRUE(::torch::equal(wide->forward(x), before));
}

TEST_F(SaveLoad, FailedSaveRaisesAndLeavesNoFile) {
  Net a = make_net(Kind::kInferable, 1);
  const std::string target = (dir_ / "no_such_dir" / "model.pt").string();
  expect_qi_error([&] { qi::torch::save(*a, target); }, "qi::torch::save: cannot write");
  EXPECT_FALSE(fs::exists(target));
  EXPECT_FALSE(fs::exists(target + ".tmp-qi"));
  EXPECT_FALSE(fs::exists(dir_ / "no_such_dir"));
  // Saving onto a directory fails too, and keeps it.
  fs::create_directories(dir_ / "a_dir");
  expect_qi_error([&] { qi::torch::save(*a, (dir_ / "a_dir").string()); }, "qi::torch::save");
  EXPECT_TRUE(fs::is_directory(dir_ / "a_dir"));
  EXPECT_FALSE(fs::exists((dir_ / "a_dir").string() + ".tmp-qi"));
}

// A file whose quantizers are rebuilt before a tensor turns out to be missing (the record of a
// trainable model over the tensors of an inferable one: the trainable quantizers' variables are
// not in the file): the model gets its quantizers, variables and tensors back.
TEST_F(SaveLoad, LoadFailingAfterQuantizersAreReplacedRestoresTheModel) {
  Net inferable = make_net(Kind::kInferable, 1), trained = make_net(Kind::kTrainable, 2);
  train(trained, 2);
  const std::string file =
      write_with_record(inferable, qi::torch::detail::quantizer_record(*trained), "mixed.pt");
  Net b = make_net(Kind::kTrainable, 3);
  {
    at::NoGradGuard guard;
    for (auto& p : b->parameters()) p.add_(0.01);
  }
  expect_refused(b, file,
                 "mismatched architecture: the file has no parameter "
                 "\"conv.weight_ptq_threshold_tensor\"");
}

// ---- checksums -----------------------------------------------------------------------------------

TEST(Sha256, KnownDigests) {
  using qi::torch::detail::sha256_hex;
  auto of = [](const std::string& s) { return sha256_hex(s.data(), s.size()); };
  EXPECT_EQ(of(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(of("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // Lengths around the padding boundaries (55/56 and 63/64/65 bytes).
  const std::map<size_t, std::string> a_digests = {
      {1, "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"},
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
      {1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"}};
  for (const auto& [n, digest] : a_digests) EXPECT_EQ(of(std::string(n, 'a')), digest) << n;
}

// The archive holds the record's checksum and one per tensor, by dotted name.
TEST_F(SaveLoad, FileHoldsChecksumsOfTheRecordAndEveryTensor) {
  Net a = make_net(Kind::kInferable, 1);
  qi::torch::save(*a, path("model.pt"));
  ::torch::serialize::InputArchive archive;
  archive.load_from(path("model.pt"));
  c10::IValue record, checksums;
  ASSERT_TRUE(archive.try_read("qi_quantizers", record));
  ASSERT_TRUE(archive.try_read("qi_checksums", checksums));
  const std::string& text = record.toStringRef();
  EXPECT_EQ(Json::parse(text)["format"], "qi.torch.model/2");
  const Json sums = Json::parse(checksums.toStringRef());
  EXPECT_EQ(sums["algorithm"], "sha256");
  EXPECT_EQ(sums["quantizers"], qi::torch::detail::sha256_hex(text.data(), text.size()));
  std::set<std::string> names;
  for (auto it = sums["parameters"].begin(); it != sums["parameters"].end(); ++it)
    names.insert(it.key());
  std::set<std::string> expected;
  for (const auto& p : a->named_parameters()) expected.insert(p.key());
  EXPECT_EQ(names, expected);
  EXPECT_TRUE(names.count("conv.weight"));
  // A tensor's digest: dtype and sizes, then its bytes.
  const at::Tensor w = a->conv->float_weight("weight").contiguous();
  std::string bytes = "Float[6, 2, 3, 3]";
  bytes.append(static_cast<const char*>(w.const_data_ptr()), w.nbytes());
  EXPECT_EQ(sums["parameters"]["conv.weight"], qi::torch::detail::sha256_hex(bytes.data(), bytes.size()));
}

// One flipped byte in a weight's data: the file loads no more, and says which tensor.
TEST_F(SaveLoad, FlippedWeightByteRaises) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  qi::torch::save(*a, path("model.pt"));
  std::string bytes = read_bytes(path("model.pt"));
  const at::Tensor w = a->conv->float_weight("weight").contiguous();
  const std::string data(static_cast<const char*>(w.const_data_ptr()), w.nbytes());
  const size_t at = bytes.find(data);
  ASSERT_NE(at, std::string::npos) << "the weight's bytes are stored uncompressed";
  for (size_t offset : {size_t{0}, size_t{37}, data.size() - 1}) {
    SCOPED_TRACE(offset);
    std::string flipped = bytes;
    flipped[at + offset] = static_cast<char>(flipped[at + offset] ^ 0x10);
    write_bytes(path("flipped.pt"), flipped);
    expect_refused(b, path("flipped.pt"),
                   "qi::torch::load: \"" + path("flipped.pt") +
                       "\": parameter \"conv.weight\" does not match its checksum (the file is "
                       "corrupt)");
  }
}

// A changed character of the quantizer record (still valid JSON, a valid quantizer).
TEST_F(SaveLoad, ChangedRecordByteRaises) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  qi::torch::save(*a, path("model.pt"));
  std::string bytes = read_bytes(path("model.pt"));
  const size_t at = bytes.find("\"num_bits\":6");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 11] = '7';
  write_bytes(path("changed.pt"), bytes);
  expect_refused(b, path("changed.pt"),
                 "the quantizer record \"qi_quantizers\" does not match its checksum (the file is "
                 "corrupt)");
  // The checksum record itself changed.
  bytes = read_bytes(path("model.pt"));
  const size_t sum = bytes.find("\"algorithm\":\"sha256\"");
  ASSERT_NE(sum, std::string::npos);
  bytes[sum + 18] = '5';
  write_bytes(path("changed.pt"), bytes);
  expect_refused(b, path("changed.pt"), "checksum record \"qi_checksums\": \"algorithm\" must be \"sha256\", got \"sha255\"");
}

// A corrupt TorchScript member of the archive (its code) raised torch::jit::ErrorReport.
TEST_F(SaveLoad, CorruptArchiveMemberRaisesQiError) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  qi::torch::save(*a, path("model.pt"));
  const std::string bytes = read_bytes(path("model.pt"));
  for (const std::string& from : {std::string("class Module(Module):"), std::string("__parameters__ = ["),
                                  std::string("def "), std::string("Tensor")}) {
    const size_t at = bytes.find(from);
    if (at == std::string::npos) continue;
    SCOPED_TRACE(from);
    std::string broken = bytes;
    broken[at + from.size() - 1] = '}';
    write_bytes(path("broken.pt"), broken);
    const State before = state_of(b);
    bool raised = false;
    try {
      qi::torch::load(*b, path("broken.pt"));
    } catch (const qi::Error& e) {
      raised = true;
      EXPECT_PRED_FORMAT2(::testing::IsSubstring, "qi::torch::load: \"" + path("broken.pt") + "\"",
                          e.what());
    } catch (...) {
      ADD_FAILURE() << "an exception other than qi::Error escaped";
    }
    if (raised) {
      expect_same_state(b, before);
    } else {
      expect_same_state(b, state_of(a));
    }
    // The class definition itself must not compile.
    if (from == "class Module(Module):") {
      EXPECT_TRUE(raised);
    }
  }
}

// ---- sizes the archive declares, checked before LibTorch reads them ------------------------------

// A damaged length of a pickled string made LibTorch reserve and fill up to 4 GB (found by
// fuzz_model_load); the length must fit in the pickle.
TEST_F(SaveLoad, PickledStringLongerThanThePickleRaises) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  qi::torch::save(*a, path("model.pt"));
  std::string bytes = read_bytes(path("model.pt"));
  const size_t text = bytes.find("{\"format\":\"qi.torch.model/2\"");
  ASSERT_NE(text, std::string::npos);
  ASSERT_EQ(bytes[text - 5], 'X');  // BINUNICODE, then a 4-byte little-endian length
  bytes.replace(text - 4, 4, std::string("\xff\xff\xff\x7f", 4));
  write_bytes(path("long_string.pt"), bytes);
  expect_refused(b, path("long_string.pt"), "member \"data.pkl\" at byte ");
  expect_refused(b, path("long_string.pt"),
                 "the pickle declares a string of 2147483647 bytes with ");
}

// A storage whose element count exceeds its data: tensors would be read past the data's end.
TEST_F(SaveLoad, StorageLargerThanItsDataRaises) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  qi::torch::save(*a, path("model.pt"));
  std::string bytes = read_bytes(path("model.pt"));
  // ('storage', torch.FloatStorage, '0', 'cpu', 108): the first storage, conv's 6x2x3x3 weight.
  const std::string cpu("X\x03\x00\x00\x00" "cpuq", 9);  // split: \x00c would be one escape
  const size_t at = bytes.find(cpu);
  ASSERT_NE(at, std::string::npos);
  const size_t numel = at + cpu.size() + 1;  // after the memo index
  ASSERT_EQ(bytes[numel], 'K');             // BININT1
  ASSERT_EQ(static_cast<uint8_t>(bytes[numel + 1]), 108);
  bytes[numel + 1] = static_cast<char>(0xff);
  write_bytes(path("big_storage.pt"), bytes);
  expect_refused(b, path("big_storage.pt"),
                 "storage \"0\" declares 255 elements of 4 bytes but its data holds 432 bytes "
                 "(corrupt file)");
}

// A tensor whose sizes reach past its storage: LibTorch's reader does not compare the view with
// the storage, and hashing the tensor read past the heap block (found by fuzz_model_load).
TEST_F(SaveLoad, TensorViewPastItsStorageRaises) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  qi::torch::save(*a, path("model.pt"));
  std::string bytes = read_bytes(path("model.pt"));
  // conv's weight, 6x2x3x3 over storage "0" of 108 floats: its sizes follow its storage's
  // persistent id as BININT1 6, 2, 3, 3. Made 7x2x3x3, the view needs 126 floats.
  const size_t storage = bytes.find(std::string("X\x03\x00\x00\x00" "cpuq", 9));
  ASSERT_NE(storage, std::string::npos);
  const std::string sizes("K\x06K\x02K\x03K\x03", 8);
  const size_t at = bytes.find(sizes, storage);
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1] = '\x07';
  write_bytes(path("long_view.pt"), bytes);
  expect_refused(b, path("long_view.pt"),
                 "its view (sizes [7, 2, 3, 3], strides [18, 9, 3, 1], offset 0) reaches 504 "
                 "bytes, past the 432 bytes of its storage (corrupt file)");
}

// A memo index beyond the entries stored so far made LibTorch reserve room for it.
TEST_F(SaveLoad, MemoIndexBeyondTheMemoRaises) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  qi::torch::save(*a, path("model.pt"));
  std::string bytes = read_bytes(path("model.pt"));
  const std::string storage("X\x07\x00\x00\x00storageq", 13);
  const size_t at = bytes.find(storage);
  ASSERT_NE(at, std::string::npos);
  bytes[at + storage.size()] = static_cast<char>(0xff);  // BINPUT 255
  write_bytes(path("memo.pt"), bytes);
  expect_refused(b, path("memo.pt"), "the pickle stores memo entry 255 after only ");
}

// A member whose declared (uncompressed) size exceeds the whole file.
TEST_F(SaveLoad, MemberLargerThanTheFileRaises) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  qi::torch::save(*a, path("model.pt"));
  std::string bytes = read_bytes(path("model.pt"));
  // The central directory entry of data.pkl: method at offset 10, uncompressed size at 24, the
  // name at 46. Declared deflated, 2 GB once inflated.
  size_t entry = std::string::npos;
  for (size_t at = bytes.find("PK\x01\x02"); at != std::string::npos; at = bytes.find("PK\x01\x02", at + 4)) {
    const size_t name_len = static_cast<uint8_t>(bytes[at + 28]) | (static_cast<uint8_t>(bytes[at + 29]) << 8);
    const std::string name = bytes.substr(at + 46, name_len);
    if (name.size() >= 8 && name.compare(name.size() - 8, 8, "data.pkl") == 0) entry = at;
  }
  ASSERT_NE(entry, std::string::npos);
  bytes[entry + 10] = 8;
  bytes.replace(entry + 24, 4, std::string("\x00\x00\x00\x80", 4));
  write_bytes(path("big_member.pt"), bytes);
  const State before = state_of(b);
  try {
    qi::torch::load(*b, path("big_member.pt"));
    ADD_FAILURE() << "loaded";
  } catch (const qi::Error& e) {
    // miniz may refuse the directory itself; otherwise the size check does.
    const std::string msg = e.what();
    EXPECT_TRUE(msg.find("member \"data.pkl\" declares 2147483648 bytes in a file of ") != std::string::npos ||
                msg.find("is not a readable model file") != std::string::npos)
        << msg;
  }
  expect_same_state(b, before);
}

// ---- the record against the schema and the model -----------------------------------------------

// Each wrapper's record must quantize what the model's wrapper quantizes: an empty
// "weight_quantizer" or "activation_quantizers" ran the layer unquantized, silently.
TEST_F(SaveLoad, EmptyQuantizerRecordRaises) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  Json r = record_of(a);
  r["wrappers"]["conv"]["weight_quantizer"] = Json::object();
  expect_refused(b, write_with_record(a, r, "no_weights.pt"),
                 "qi::torch::load: \"" + path("no_weights.pt") +
                     "\": wrapper \"conv\": the file has no quantizer for weight \"weight\", which "
                     "the model's wrapper quantizes (\"weight_quantizer\" holds 0 entries)");
  r = record_of(a);
  r["wrappers"]["fc"]["activation_quantizers"] = Json::array();
  expect_refused(b, write_with_record(a, r, "no_acts.pt"),
                 "wrapper \"fc\": the file has 0 activation quantizers, the model's wrapper 1");
  r = record_of(a);
  r["wrappers"]["conv"]["activation_quantizers"].push_back(
      r["wrappers"]["fc"]["activation_quantizers"][0]);
  expect_refused(b, write_with_record(a, r, "more_acts.pt"),
                 "wrapper \"conv\": the file has 1 activation quantizers, the model's wrapper 0");
  r = record_of(a);
  r["wrappers"]["conv"]["weight_quantizer"]["bias"] = r["wrappers"]["conv"]["weight_quantizer"]["weight"];
  expect_refused(b, write_with_record(a, r, "bias.pt"),
                 "wrapper \"conv\": the file quantizes weight \"bias\", which the model's wrapper "
                 "does not quantize");
  r = record_of(a);
  r["wrappers"]["conv"] = Json::object();
  expect_refused(b, write_with_record(a, r, "empty_wrapper.pt"),
                 "wrapper \"conv\": NodeQuantizationDispatcher: missing key \"activation_quantizers\"");
  r = record_of(a);
  r["holders"]["act"] = Json::object();
  expect_refused(b, write_with_record(a, r, "empty_holder.pt"), "activation holder \"act\": ");
}

// "format": 1 let nlohmann's type_error.302 escape.
TEST_F(SaveLoad, RecordFieldsOfTheWrongTypeRaise) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  const std::string rec = "quantizer record \"qi_quantizers\": ";
  struct Case {
    std::function<void(Json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](Json& r) { r["format"] = 1; }, rec + "\"format\" must be a string, got number 1"},
      {[](Json& r) { r["format"] = "qi.torch.model/3"; },
       rec + "\"format\" must be \"qi.torch.model/2\", got \"qi.torch.model/3\""},
      {[](Json& r) { r.erase("format"); }, rec + "missing key \"format\""},
      {[](Json& r) { r["qi_version"] = 3; }, rec + "\"qi_version\" must be a string, got number 3"},
      {[](Json& r) { r["extra"] = true; }, rec + "unknown key \"extra\""},
      {[](Json& r) { r["wrappers"] = Json::array(); },
       rec + "\"wrappers\" must be an object mapping names to dispatcher configs, got array []"},
      {[](Json& r) { r["holders"] = nullptr; },
       rec + "\"holders\" must be an object mapping names to quantizers, got null null"},
      {[](Json& r) { r["wrappers"]["conv"] = "x"; },
       rec + "\"wrappers\"[\"conv\"] must be a JSON object, got string \"x\""},
      {[](Json& r) { r["holders"]["act"] = 5; },
       rec + "\"holders\"[\"act\"] must be a JSON object, got number 5"},
      {[](Json& r) { r = Json::array(); }, rec + "expected a JSON object, got array []"},
      {[](Json& r) { r["wrappers"]["conv"]["weight_quantizer"] = Json::array(); },
       "wrapper \"conv\": NodeQuantizationDispatcher: \"weight_quantizer\" must be an object"},
      {[](Json& r) {
         r["wrappers"]["conv"]["weight_quantizer"]["weight"]["config"]["num_bits"] = "4";
       },
       "wrapper \"conv\": NodeQuantizationDispatcher: weight_quantizer[\"weight\"]: "},
      {[](Json& r) { r["wrappers"]["conv"]["weight_quantizer"]["weight"]["class_name"] = "Nope"; },
       "wrapper \"conv\": NodeQuantizationDispatcher: weight_quantizer[\"weight\"]: "},
      // A quantizer of the wrong target.
      {[](Json& r) { r["holders"]["act"] = r["wrappers"]["conv"]["weight_quantizer"]["weight"]; },
       "activation holder \"act\": the quantizer is a Weights quantizer "
       "(WeightsPOTInferableQuantizer), expected Activation"},
      {[](Json& r) {
         r["wrappers"]["fc"]["activation_quantizers"][0] = r["wrappers"]["fc"]["weight_quantizer"]["weight"];
       },
       "wrapper \"fc\": activation quantizer 0 is a Weights quantizer "
       "(WeightsUniformInferableQuantizer), expected Activation"},
      {[](Json& r) { r["wrappers"]["fc"]["weight_quantizer"]["weight"] = r["holders"]["act"]; },
       "wrapper \"fc\": the quantizer of weight \"weight\" is an Activation quantizer "
       "(ActivationSymmetricInferableQuantizer), expected Weights"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].message);
    Json r = record_of(a);
    cases[i].edit(r);
    expect_refused(b, write_with_record(a, r, "case" + std::to_string(i) + ".pt"), cases[i].message);
  }
  // Not JSON at all; nested too deep.
  expect_refused(b, write_with_record(a, std::string("{\"format\": "), "truncated_json.pt"),
                 rec + "malformed JSON");
  expect_refused(b, write_with_record(a, std::string(100000, '['), "deep.pt"),
                 rec + "JSON nested deeper than 128 levels");
}

// Files of the first format have no checksums; they are refused with an error that says so.
TEST_F(SaveLoad, OldFormatRaisesClearly) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  Json r = record_of(a);
  r["format"] = "qi.torch.model/1";
  ::torch::serialize::OutputArchive archive;
  a->save(archive);
  archive.write("qi_quantizers", c10::IValue(r.dump()));
  archive.save_to(path("old.pt"));
  expect_refused(b, path("old.pt"),
                 "qi::torch::load: \"" + path("old.pt") +
                     "\": the file has the old format \"qi.torch.model/1\" (no checksums); this qi "
                     "reads only \"qi.torch.model/2\": write the model again with qi::torch::save "
                     "of this version");
  // The current format without its checksum record.
  ::torch::serialize::OutputArchive no_sums;
  a->save(no_sums);
  no_sums.write("qi_quantizers", c10::IValue(record_of(a).dump()));
  no_sums.save_to(path("no_sums.pt"));
  expect_refused(b, path("no_sums.pt"), "no checksum record \"qi_checksums\" (corrupt file?)");
}

// A channel axis outside the weight's rank (and other quantizers that cannot quantize the weight)
// loaded and failed only at the first forward.
TEST_F(SaveLoad, QuantizerThatDoesNotFitTheWeightRaises) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  const std::string at_conv =
      "wrapper \"conv\": the file's quantizer of weight \"weight\" does not fit the model's "
      "Float[6, 2, 3, 3] weight (mismatched architecture?): WeightsPOTInferableQuantizer: ";
  struct Case {
    std::function<void(Json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](Json& c) { c["channel_axis"] = 65; },
       at_conv + "channel_axis must be in [-4, 4) for a tensor of rank 4, got 65"},
      {[](Json& c) { c["channel_axis"] = -5; },
       at_conv + "channel_axis must be in [-4, 4) for a tensor of rank 4, got -5"},
      {[](Json& c) { c["channel_axis"] = 1; },
       at_conv + "the quantizer holds 6 per-channel values but the tensor has 2 channels along "
                 "channel_axis 1"},
      {[](Json& c) { c["threshold"].erase(c["threshold"].size() - 1); },
       at_conv + "the quantizer holds 5 per-channel values but the tensor has 6 channels along "
                 "channel_axis 0"},
      {[](Json& c) { c["input_rank"] = 3; }, at_conv + "input_rank is 3 but the weight has rank 4"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].message);
    Json r = record_of(a);
    cases[i].edit(r["wrappers"]["conv"]["weight_quantizer"]["weight"]["config"]);
    expect_refused(b, write_with_record(a, r, "case" + std::to_string(i) + ".pt"), cases[i].message);
  }
  // A single per-channel value broadcasts, but its axis must still fit the weight.
  Json r = record_of(a);
  Json& c = r["wrappers"]["conv"]["weight_quantizer"]["weight"]["config"];
  c["threshold"] = Json::array({0.5});
  c["channel_axis"] = 65;
  expect_refused(b, write_with_record(a, r, "one_value.pt"),
                 at_conv + "channel_axis must be in [-4, 4) for a tensor of rank 4, got 65");

  // Trainable quantizers: the channel axis and the number of thresholds.
  Net ta = make_net(Kind::kTrainable, 1), tb = make_net(Kind::kTrainable, 2);
  const std::string lsq =
      "wrapper \"conv\": the file's quantizer of weight \"weight\" does not fit the model's "
      "Float[6, 2, 3, 3] weight (mismatched architecture?): LSQWeightQATQuantizer: ";
  r = record_of(ta);
  Json& q = r["wrappers"]["conv"]["weight_quantizer"]["weight"]["config"]["quantization_config"];
  q["weights_channels_axis"] = 65;
  expect_refused(tb, write_with_record(ta, r, "trainable_axis.pt"),
                 lsq + "weights_channels_axis must be in [-4, 4) for a weight of rank 4, got 65");
}

// Every mutation of a saved file either loads exactly what was saved or raises qi::Error (and
// then leaves the model as it was): byte flips, byte runs overwritten, truncations.
TEST_F(SaveLoad, MutatedFilesRaiseQiErrorOrLoadIdentically) {
  Net a = make_net(Kind::kInferable, 1), b = make_net(Kind::kInferable, 2);
  qi::torch::save(*a, path("model.pt"));
  const std::string bytes = read_bytes(path("model.pt"));
  a->eval();
  const State saved = state_of(a);
  std::mt19937_64 rng(20240611);
  int loaded = 0, refused = 0;
  constexpr int kMutations = 500;
  for (int i = 0; i < kMutations; ++i) {
    std::string m = bytes;
    const int how = static_cast<int>(rng() % 4);
    if (how == 0) {  // one bit
      const size_t at = rng() % m.size();
      m[at] = static_cast<char>(m[at] ^ (1 << (rng() % 8)));
    } else if (how == 1) {  // a few random bytes
      for (int k = 1 + static_cast<int>(rng() % 4); k > 0; --k) m[rng() % m.size()] = static_cast<char>(rng());
    } else if (how == 2) {  // a run of bytes
      const size_t at = rng() % m.size();
      const size_t len = std::min<size_t>(1 + rng() % 64, m.size() - at);
      for (size_t k = 0; k < len; ++k) m[at + k] = static_cast<char>(rng());
    } else {  // truncated
      m.resize(rng() % m.size());
    }
    SCOPED_TRACE(::testing::Message() << "mutation " << i << " (kind " << how << ")");
    const State before = state_of(b);
    bool ok = false;
    try {
      qi::torch::load_from_memory(*b, m.data(), m.size(), "mutated");
      ok = true;
    } catch (const qi::Error& e) {
      EXPECT_PRED_FORMAT2(::testing::IsSubstring, "qi::torch::load: \"mutated\"", e.what());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a qi::Error: " << e.what();
    } catch (...) {
      ADD_FAILURE() << "not a qi::Error, not a std::exception";
    }
    if (ok) {
      ++loaded;
      expect_same_state(b, saved);
    } else {
      ++refused;
      expect_same_state(b, before);
    }
  }
  EXPECT_EQ(loaded + refused, kMutations);
  EXPECT_GT(refused, kMutations / 2);
  std::printf("[ info ] %d mutated files: %d loaded identically, %d raised qi::Error\n", kMutations,
              loaded, refused);
}

TEST_F(SaveLoad, LoadFromMemoryEqualsLoad) {
  Net a = make_net(Kind::kTrainable, 1), b = make_net(Kind::kTrainable, 2);
  train(a, 2);
  qi::torch::save(*a, path("model.pt"));
  const std::string bytes = read_bytes(path("model.pt"));
  qi::torch::load_from_memory(*b, bytes.data(), bytes.size());
  expect_same_state(b, state_of(a));
  expect_qi_error([&] { qi::torch::load_from_memory(*b, bytes.data(), 10, "ten bytes"); },
                  "qi::torch::load: \"ten bytes\" is not a readable model file");
}

}  // namespace
