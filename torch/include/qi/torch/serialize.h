// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// One file holds a model's parameters and buffers and the quantizers of every wrapper and
// holder in it (as JSON), so that reloading gives bit-identical outputs.
//
// The file is a torch::serialize archive (TorchScript zip) with, next to the module's tensors:
//   "qi_quantizers": the quantizer record, JSON text
//       {"format": "qi.torch.model/2", "qi_version": "...",
//        "wrappers": {"<wrapper name>": <NodeQuantizationDispatcher::get_config()>, ...},
//        "holders": {"<holder name>": <quantizer to_json()>, ...}}
//   "qi_checksums": JSON text
//       {"algorithm": "sha256", "quantizers": "<SHA-256 of the record text>",
//        "parameters": {"<dotted name>": "<SHA-256>", ...}, "buffers": {...}}
// A tensor's SHA-256 covers its dtype and sizes, then its bytes (contiguous, row-major).
#pragma once

#include <cstddef>
#include <ostream>
#include <string>

#include <torch/nn/module.h>

namespace qi::torch {

// Writes `model` to `path` atomically: to a temporary file beside it, renamed on success (a
// failed save leaves no partial file and keeps an existing file intact). Throws qi::Error.
void save(::torch::nn::Module& model, const std::string& path);

// Loads `path` into `model`, which must have the same architecture (the same wrappers and
// holders by name, each wrapper quantizing the same weights with as many activation quantizers,
// the same parameters and buffers). Before anything in the model changes, the whole file is
// checked: the record's schema (types of every field, the format "qi.torch.model/2"; files of the
// older format "qi.torch.model/1" are refused with an error saying so), every quantizer against
// the weight it quantizes (channel axis within the weight's rank, one value per channel), and the
// checksum of the record and of every tensor. Then each wrapper's quantizers are rebuilt from the
// file and parameters and buffers are read; a failure there restores the model's quantizers and
// tensors. Every failure (missing, truncated or corrupt files, mismatched architectures, bad
// records) throws qi::Error naming the file and the record, wrapper, holder or tensor at fault;
// no other exception type escapes.
void load(::torch::nn::Module& model, const std::string& path);

// As load, from the bytes of a model file in memory; `name` stands for the file in messages.
void load_from_memory(::torch::nn::Module& model, const void* data, size_t size,
                      const std::string& name = "<memory>");

namespace detail {

// SHA-256 of `size` bytes as 64 lower-case hex digits.
std::string sha256_hex(const void* data, size_t size);

// The quantizer record save writes for `model` (JSON text).
std::string quantizer_record(::torch::nn::Module& model);

// Writes `model`'s tensors with `record` as its quantizer record, and the checksums of both: what
// save writes, with any record text. For tests and fuzzers of load. Throws qi::Error.
void write_archive(::torch::nn::Module& model, const std::string& record, std::ostream& out);

}  // namespace detail
}  // namespace qi::torch
