// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "fashion_mnist.h"

#include <zlib.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

#include <torch/torch.h>

namespace qi_demo {
namespace {

std::vector<uint8_t> read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path + " (install dataset-fashion-mnist)");
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.insert(out.end(), buf, buf + n);
  const bool ok = n == 0;
  gzclose(f);
  if (!ok) throw std::runtime_error("corrupt gzip data in " + path);
  return out;
}

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return (uint32_t{b[at]} << 24) | (uint32_t{b[at + 1]} << 16) | (uint32_t{b[at + 2]} << 8) |
         uint32_t{b[at + 3]};
}

}  // namespace

Dataset load_fashion_mnist(const std::string& dir, const std::string& split) {
  const std::string ip = dir + "/" + split + "-images-idx3-ubyte.gz";
  const std::string lp = dir + "/" + split + "-labels-idx1-ubyte.gz";
  const auto img = read_gz(ip);
  const auto lab = read_gz(lp);
  if (img.size() < 16 || be32(img, 0) != 2051) throw std::runtime_error("bad IDX header in " + ip);
  if (lab.size() < 8 || be32(lab, 0) != 2049) throw std::runtime_error("bad IDX header in " + lp);
  const int64_t n = be32(img, 4), rows = be32(img, 8), cols = be32(img, 12);
  if (static_cast<int64_t>(be32(lab, 4)) != n || rows != 28 || cols != 28 ||
      img.size() != static_cast<size_t>(16 + n * rows * cols) ||
      lab.size() != static_cast<size_t>(8 + n))
    throw std::runtime_error("inconsistent sizes in " + ip + " / " + lp);
  Dataset d;
  d.images = torch::from_blob(const_cast<uint8_t*>(img.data() + 16), {n, 1, rows, cols}, torch::kUInt8)
                 .to(torch::kFloat)
                 .div_(255.0)
                 .sub_(0.2860)
                 .div_(0.3530);
  d.labels = torch::from_blob(const_cast<uint8_t*>(lab.data() + 8), {n}, torch::kUInt8).to(torch::kLong);
  return d;
}

}  // namespace qi_demo
