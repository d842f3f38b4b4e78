# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""TorchScript into C++: a model wrapped in Python is traced, saved, then loaded and run from C++
(tests/torch/test_jit_load.cc in build/tests/torch/qi_torch_tests) with bit-identical output;
the same C++ test checks that a Python-wrapped Conv2d gives the C++ front end's
QuantizationWrapper output for the same weights and dispatcher. Skipped when the C++ test binary
is not built (scripts/qi build)."""

import os
import re
import subprocess

import pytest

torch = pytest.importorskip("torch")

import quantizers_infrastructure as qi  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(os.environ.get("QI_BUILD_DIR", os.path.join(ROOT, "build")), "tests",
                      "torch", "qi_torch_tests")
LINK_BINARY = os.path.join(os.path.dirname(BINARY), "qi_torch_link_test")
F = torch.nn.functional


class Tensors(torch.nn.Module):
    """A TorchScript container of named tensors and strings, readable from C++ with
    torch::jit::load(...).attr(name)."""

    def __init__(self, tensors, strings):
        super().__init__()
        for k, v in tensors.items():
            self.register_buffer(k, v)
        for k, v in strings.items():
            setattr(self, k, v)

    def forward(self, x):
        return x


def build_model():
    torch.manual_seed(11)
    wq = qi.WeightsSymmetricInferableQuantizer(num_bits=4, threshold=[0.2, 0.25, 0.3, 0.35],
                                               per_channel=True, channel_axis=0)
    conv = qi.PytorchQuantizationWrapper(torch.nn.Conv2d(1, 4, 3), qi.PytorchNodeQuantizationDispatcher(
        wq, [qi.ActivationUniformInferableQuantizer(num_bits=8, min_range=[-0.7], max_range=[1.1])]))
    fc = qi.PytorchQuantizationWrapper(torch.nn.Linear(4 * 6 * 6, 10), qi.WeightsUniformInferableQuantizer(
        num_bits=6, min_range=[-0.2] * 10, max_range=[0.15] * 10, per_channel=True, channel_axis=0))
    return torch.nn.Sequential(
        conv, torch.nn.ReLU(),
        qi.PytorchActivationQuantizationHolder(
            qi.ActivationPOTInferableQuantizer(num_bits=8, threshold=[2.0], signed=False)),
        torch.nn.Flatten(), fc,
        qi.PytorchPreservingActivationQuantizationHolder(
            qi.ActivationSymmetricInferableQuantizer(num_bits=8, threshold=[4.0], signed=True)),
    ).eval()


def _traced(model, x, tmp_path):
    """Eager output, and the path of the traced model saved under tmp_path."""
    with torch.no_grad():
        y = model(x)
        traced = torch.jit.trace(model, x)
    path = tmp_path / "model.pt"
    traced.save(str(path))
    return y, path


def test_traced_model_runs_from_cpp(tmp_path):
    if not os.path.exists(BINARY):
        pytest.skip(f"{BINARY} is not built (scripts/qi build)")
    listing = subprocess.run([BINARY, "--gtest_list_tests", "--gtest_filter=JitLoad.*"],
                             capture_output=True, text=True, timeout=60).stdout
    if "PythonTracedWrappedModelRunsFromCpp" not in listing:
        pytest.skip("qi_torch_tests predates tests/torch/test_jit_load.cc; rebuild")
    model = build_model()
    x = torch.randn(8, 1, 8, 8)
    y, model_path = _traced(model, x, tmp_path)
    data_path = tmp_path / "data.pt"
    conv = model[0]
    conv_x = torch.randn(3, 1, 9, 9)
    with torch.no_grad():
        conv_y = conv(conv_x)
    data = Tensors({"input": x, "expected": y, "conv_input": conv_x, "conv_expected": conv_y,
                    "conv_weight": conv.weight.detach().clone(),
                    "conv_bias": conv.layer.bias.detach().clone()},
                   {"conv_dispatcher": __import__("json").dumps(conv.dispatcher.get_config())})
    torch.jit.script(data).save(str(data_path))
    env = dict(os.environ, QI_JIT_MODEL=str(model_path), QI_JIT_DATA=str(data_path))
    run = subprocess.run([BINARY, "--gtest_filter=JitLoad.*"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = dict(re.findall(r"QI_JIT_RESULT (\w+) compared=\d+ mismatches=(\d+)", run.stdout))
    assert results == {"model": "0", "frontend": "0"}, run.stdout[-3000:]
    assert "SKIPPED" not in run.stdout


def test_traced_model_loads_in_a_program_that_only_links_qi(tmp_path):
    """tests/torch/link: no qi::torch::init(), no load_library; linking is enough."""
    if not os.path.exists(LINK_BINARY):
        pytest.skip(f"{LINK_BINARY} is not built (scripts/qi build)")
    x = torch.randn(4, 1, 8, 8)
    y, model_path = _traced(build_model(), x, tmp_path)
    data_path = tmp_path / "data.pt"
    torch.jit.script(Tensors({"input": x, "expected": y}, {})).save(str(data_path))
    run = subprocess.run([LINK_BINARY, str(model_path), str(data_path)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "traced model loaded and ran bit for bit (40 values)" in run.stdout
