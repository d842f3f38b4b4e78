# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""ONNX export of wrapped PyTorch models, run in onnxruntime.

QDQ path: quantizers whose grid is an int8/uint8 QuantizeLinear/DequantizeLinear pair export as
one, with the C++ plan's scale and zero point. Custom path: the others export as mct_quantizers
custom nodes whose onnxruntime kernels (onnxruntime-extensions Python ops) run qi's C++ core."""

import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure.pytorch import (  # noqa: E402
    PytorchActivationQuantizationHolder, PytorchQuantizationWrapper)
from quantizers_infrastructure.pytorch import onnx as qonnx  # noqa: E402

# torch 2.7's TorchScript exporter warns that it is deprecated (dynamo=False is the brief).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.onnx")

OPSETS = (16, 17)
INT, FLOAT, STRING = (onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT,
                      onnx.AttributeProto.STRING)

# mct-quantizers' node attributes (plus qi's informational `profile` string attribute).
_WEIGHTS_ATTRS = {"num_bits": INT, "per_channel": INT, "channel_axis": INT, "signed": INT,
                  "mctq_version": STRING, "profile": STRING}
_LUT_ATTRS = dict(_WEIGHTS_ATTRS, input_rank=INT, lut_values_bitwidth=INT, eps=FLOAT)
_ACT_SYM_ATTRS = {"threshold": FLOAT, "signed": INT, "num_bits": INT, "mctq_version": STRING,
                  "profile": STRING}
EXPECTED = {  # op type -> (number of inputs including x, {attribute: type})
    "WeightsSymmetricQuantizer": (2, _WEIGHTS_ATTRS),
    "WeightsPOTQuantizer": (2, _WEIGHTS_ATTRS),
    "WeightsUniformQuantizer": (3, _WEIGHTS_ATTRS),
    "WeightsLUTSymmetricQuantizer": (3, _LUT_ATTRS),
    "WeightsLUTPOTQuantizer": (3, _LUT_ATTRS),
    "ActivationSymmetricQuantizer": (1, _ACT_SYM_ATTRS),
    "ActivationPOTQuantizer": (1, _ACT_SYM_ATTRS),
    "ActivationUniformQuantizer": (1, {"min_range": FLOAT, "max_range": FLOAT, "num_bits": INT,
                                       "mctq_version": STRING, "profile": STRING}),
    "ActivationLutPOTQuantizer": (3, {"num_bits": INT, "signed": INT, "lut_values_bitwidth": INT,
                                      "eps": FLOAT, "mctq_version": STRING,
                                      "profile": STRING}),
}

W_SHAPE = (4, 3, 3, 3)


# ---- helpers ----

def _export(model, x, opset=16):
    f = io.BytesIO()
    torch.onnx.export(model.eval(), (x,), f, opset_version=opset, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "batch"},
                                                             "output": {0: "batch"}},
                      dynamo=False)
    return f.getvalue()


def _run(model_bytes, x, custom=True):
    options = qonnx.get_ort_session_options() if custom else ort.SessionOptions()
    sess = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _weights_model(q, shape=W_SHAPE):
    """out = input + Q(W): with input = 0 the output is the quantized weight itself."""
    w = torch.randn(*shape) * 0.6
    return PytorchQuantizationWrapper(torch.add, {1: q}, weight_values={1: w}), w


def _values_with_ties(q, n=2000, seed=0):
    """Random values over (and beyond) q's range, plus exact half-steps of the affine grid."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 2.0).astype(np.float32)
    scale = q.scale
    if scale is not None:
        s = float(np.min(scale))
        k = rng.integers(-200, 200, n // 4)
        x[: n // 4] = ((k + 0.5) * s).astype(np.float32)
    return x


def _custom_nodes(model_bytes):
    m = onnx.load_from_string(model_bytes)
    return m, [n for n in m.graph.node if n.domain == qonnx.DOMAIN]


def _consts(m):
    return {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
            for n in m.graph.node if n.op_type == "Constant"}


def _check_attributes(node, q, n_ch):
    op_type = node.op_type[: -len(qonnx.TF_SUFFIX)] if node.op_type.endswith(
        qonnx.TF_SUFFIX) else node.op_type
    n_inputs, attrs = EXPECTED[op_type]
    assert len(node.input) == n_inputs
    got = {a.name: a.type for a in node.attribute}
    assert got == attrs, (node.op_type, got)
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    c = q.get_config()
    assert values["mctq_version"] == qi.__version__.encode()
    assert values["num_bits"] == c["num_bits"]
    assert values["profile"] == c.get("profile", "torch").encode()
    if "per_channel" in attrs:
        assert values["per_channel"] == int(c["per_channel"])
        assert values["signed"] == 1
        # per-tensor defaults: channel_axis 0, LUT input_rank 4
        assert values["channel_axis"] == (c["channel_axis"] if c["per_channel"] else 0)
        if "input_rank" in attrs:
            assert values["input_rank"] == (4 if not c["per_channel"] else
                                            (c["input_rank"] or len(W_SHAPE)))
    if "eps" in attrs:
        assert values["eps"] == np.float32(c["eps"])
        assert values["lut_values_bitwidth"] == c["lut_values_bitwidth"]
    if "threshold" in attrs:
        assert values["threshold"] == np.float32(c["threshold"][0])
        assert values["signed"] == int(c["signed"])
    if op_type == "ActivationUniformQuantizer":
        assert values["min_range"] == np.float32(c["min_range"][0])
        assert values["max_range"] == np.float32(c["max_range"][0])


# ---- quantizers under test ----

def _qdq_weights():
    return [
        ("sym8_pc_pot", qi.WeightsSymmetricInferableQuantizer(8, [0.5, 1.0, 2.0, 0.25], True, 0)),
        ("sym8_pc", qi.WeightsSymmetricInferableQuantizer(8, [0.7, 1.3, 0.9, 1.1], True, 0)),
        ("pot8_pt", qi.WeightsPOTInferableQuantizer(8, [1.0], False)),
        ("uni8_pc", qi.WeightsUniformInferableQuantizer(8, [-0.9, -1.2, -0.3, 0.2],
                                                        [1.1, 0.8, 1.7, 1.5], True, 0)),
        ("uni8_pc_axis-1", qi.WeightsUniformInferableQuantizer(8, [-0.9, -1.2, -0.3],
                                                               [1.1, 0.8, 1.7], True, -1)),
        ("uni8_pt", qi.WeightsUniformInferableQuantizer(8, [-0.7], [1.3], False)),
    ]


def _qdq_activations():
    return [
        ("asym8_signed", qi.ActivationSymmetricInferableQuantizer(8, [4.0], True)),
        ("asym8_unsigned", qi.ActivationSymmetricInferableQuantizer(8, [3.0], False)),
        ("apot8", qi.ActivationPOTInferableQuantizer(8, [2.0], True)),
        ("auni8", qi.ActivationUniformInferableQuantizer(8, [-1.0], [3.0])),
    ]


def _custom_weights():
    return [
        ("sym4_pc", qi.WeightsSymmetricInferableQuantizer(4, [0.5, 1.0, 2.0, 0.7], True, 0),
         "WeightsSymmetricQuantizer"),
        ("pot3_pt", qi.WeightsPOTInferableQuantizer(3, [1.0], False), "WeightsPOTQuantizer"),
        ("sym12_pt", qi.WeightsSymmetricInferableQuantizer(12, [1.5], False),
         "WeightsSymmetricQuantizer"),
        ("uni5_pc", qi.WeightsUniformInferableQuantizer(5, [-0.9, -1.2, -0.3, 0.2],
                                                        [1.1, 0.8, 1.7, 1.5], True, 0),
         "WeightsUniformQuantizer"),
        # Ranges travel as float32 (ONNX FLOAT): configured values float32 represents exactly.
        ("uni8_pt_tf", qi.WeightsUniformInferableQuantizer(8, [-0.6875], [1.3125], False,
                                                           profile="tf"),
         "WeightsUniformQuantizer_tf"),
        ("sym8_pc_tf", qi.WeightsSymmetricInferableQuantizer(8, [0.5, 1.0, 2.0, 0.7], True, 0,
                                                             profile="tf"),
         "WeightsSymmetricQuantizer_tf"),
        ("lutsym_pc", qi.WeightsLUTSymmetricInferableQuantizer(
            4, [-100, -20, -3, 0, 7, 30, 127], [0.5, 1.0, 2.0, 0.7], True, 0, input_rank=4),
         "WeightsLUTSymmetricQuantizer"),
        ("lutsym_pc_norank", qi.WeightsLUTSymmetricInferableQuantizer(
            3, [-100, -20, 0, 30, 127], [0.5, 1.0, 2.0, 0.7], True, 0),
         "WeightsLUTSymmetricQuantizer"),
        ("lutpot_pt", qi.WeightsLUTPOTInferableQuantizer(4, [-64, -8, 0, 5, 100], [1.0], False),
         "WeightsLUTPOTQuantizer"),
    ]


def _custom_activations():
    return [
        ("asym4", qi.ActivationSymmetricInferableQuantizer(4, [4.0], True),
         "ActivationSymmetricQuantizer"),
        ("apot8_tf", qi.ActivationPOTInferableQuantizer(8, [2.0], False, profile="tf"),
         "ActivationPOTQuantizer_tf"),
        ("apot16", qi.ActivationPOTInferableQuantizer(16, [2.0], True), "ActivationPOTQuantizer"),
        ("auni6", qi.ActivationUniformInferableQuantizer(6, [-1.0], [3.0]),
         "ActivationUniformQuantizer"),
        ("alutpot", qi.ActivationLutPOTInferableQuantizer(4, [0, 5, 20, 100, 255], [4.0], False),
         "ActivationLutPOTQuantizer"),
    ]


def _ids(items):
    return [i[0] for i in items]


# ---- tests ----

def test_package_import_stays_free_of_torch():
    code = ("import sys, quantizers_infrastructure; "
            "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_symbolic_registered_on_import():
    from torch.onnx import _internal  # noqa: F401
    from torch.onnx._internal import registration
    assert registration.registry.is_registered_op("qi::fake_quant", 16)
    assert registration.registry.is_registered_op("qi::fake_quant", 17)


@pytest.mark.parametrize("name,q", _qdq_weights(), ids=_ids(_qdq_weights()))
def test_qdq_weights(name, q, parity_stats):
    shape = (2, 3, 3, 3) if name.endswith("axis-1") else W_SHAPE
    model, w = _weights_model(q, shape)
    assert qonnx.export_kind(q) == "qdq"
    x = torch.zeros(*shape)
    data = _export(model, x)
    m, custom = _custom_nodes(data)
    assert not custom
    ql = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert len(ql) == 1 and len(dq) == 1
    consts = _consts(m)
    scale, zp = consts[ql[0].input[1]], consts[ql[0].input[2]]
    plan = q.plan
    np.testing.assert_array_equal(scale.reshape(-1), np.asarray(plan["scale"], np.float32))
    np.testing.assert_array_equal(zp.reshape(-1).astype(np.float32),
                                  np.asarray(plan["zero_point"], np.float32))
    assert zp.dtype == (np.int8 if plan["qmin"] == -128 else np.uint8)
    if q.get_config()["per_channel"]:
        axis = {a.name: a.i for a in ql[0].attribute}["axis"]
        assert axis == q.get_config()["channel_axis"] % len(shape)
    else:
        assert scale.ndim == 0
    # weights: torch vs ORT on the weights themselves (0 + Q(w))
    got = _run(data, x.numpy(), custom=False)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_array_equal(want, q(w.numpy()))
    mismatches = int(np.sum(got != want))
    parity_stats.add("onnx qdq weights (ORT vs torch)", got.size, mismatches)
    assert mismatches == 0, f"max abs diff {np.abs(got - want).max()}"


@pytest.mark.parametrize("name,q", _qdq_activations(), ids=_ids(_qdq_activations()))
@pytest.mark.parametrize("opset", OPSETS)
def test_qdq_activations(name, q, opset, parity_stats):
    model = PytorchActivationQuantizationHolder(q)
    x = torch.from_numpy(_values_with_ties(q).reshape(4, 500))
    data = _export(model, x, opset)
    m, custom = _custom_nodes(data)
    assert not custom
    assert [n.op_type for n in m.graph.node if n.op_type != "Constant"] == [
        "QuantizeLinear", "DequantizeLinear"]
    got = _run(data, x.numpy(), custom=False)
    with torch.no_grad():
        want = model(x).numpy()
    mismatches = int(np.sum(got != want))
    parity_stats.add("onnx qdq activations (ORT vs torch)", got.size, mismatches)
    # ORT's QuantizeLinear divides by the scale, torch's fake quant multiplies by its float32
    # reciprocal: exact for power-of-two scales; otherwise at most one step apart at near-ties,
    # and always on the quantizer's grid.
    scale = float(q.scale[0])
    np.testing.assert_array_equal(q(got), got)  # on the grid
    assert np.abs(got - want).max() <= scale * (1 + 1e-6)
    if float(np.log2(scale)).is_integer():
        assert mismatches == 0


@pytest.mark.parametrize("name,q,op_type", _custom_weights(), ids=_ids(_custom_weights()))
def test_custom_op_weights(name, q, op_type, parity_stats):
    model, w = _weights_model(q)
    assert qonnx.export_kind(q) == "custom"
    x = torch.zeros(*W_SHAPE)
    data = _export(model, x)
    m, custom = _custom_nodes(data)
    assert [n.op_type for n in custom] == [op_type]
    assert not [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    _check_attributes(custom[0], q, W_SHAPE[0])
    consts = _consts(m)
    c = q.get_config()
    inputs = [consts[i] for i in custom[0].input[1:]]
    assert all(a.dtype == np.float32 for a in inputs)
    if "LUT" in op_type:
        np.testing.assert_array_equal(inputs[0], np.float32(c["lut_values"]))
        np.testing.assert_array_equal(inputs[1], np.float32(c["threshold"]))
    elif "Uniform" in op_type:
        lo, hi = ((q.adjusted_min_range, q.adjusted_max_range) if c["profile"] == "torch"
                  else (c["min_range"], c["max_range"]))
        np.testing.assert_array_equal(inputs[0], np.float32(lo))
        np.testing.assert_array_equal(inputs[1], np.float32(hi))
    else:
        np.testing.assert_array_equal(inputs[0], np.float32(c["threshold"]))
    got = _run(data, x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_array_equal(want, q(w.numpy()))
    mismatches = int(np.sum(got != want))
    parity_stats.add("onnx custom weights (ORT kernels vs torch)", got.size, mismatches)
    assert mismatches == 0, f"max abs diff {np.abs(got - want).max()}"


@pytest.mark.parametrize("name,q,op_type", _custom_activations(),
                         ids=_ids(_custom_activations()))
@pytest.mark.parametrize("opset", OPSETS)
def test_custom_op_activations(name, q, op_type, opset, parity_stats):
    model = PytorchActivationQuantizationHolder(q)
    x = torch.from_numpy(_values_with_ties(q).reshape(4, 500))
    data = _export(model, x, opset)
    m, custom = _custom_nodes(data)
    assert [n.op_type for n in custom] == [op_type]
    _check_attributes(custom[0], q, 1)
    got = _run(data, x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    mismatches = int(np.sum(got != want))
    parity_stats.add("onnx custom activations (ORT kernels vs torch)", got.size, mismatches)
    assert mismatches == 0, f"max abs diff {np.abs(got - want).max()}"


@pytest.mark.parametrize("name,q", _qdq_weights()[:1] + _qdq_activations()[3:],
                         ids=["sym8_pc_pot", "auni8"])
def test_use_custom_ops_forces_custom_nodes(name, q, parity_stats):
    if name.startswith("sym"):
        model, _ = _weights_model(q)
        x = torch.zeros(*W_SHAPE)
    else:
        model = PytorchActivationQuantizationHolder(q)
        x = torch.from_numpy(_values_with_ties(q).reshape(4, 500))
    with qonnx.custom_ops():
        assert qonnx.export_kind(q) == "custom"
        data = _export(model, x)
    assert qonnx.export_kind(q) == "qdq"
    m, custom = _custom_nodes(data)
    assert len(custom) == 1
    assert not [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    got = _run(data, x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    mismatches = int(np.sum(got != want))
    parity_stats.add("onnx custom (forced) vs torch", got.size, mismatches)
    assert mismatches == 0


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = PytorchActivationQuantizationHolder(
            qi.ActivationSymmetricInferableQuantizer(8, [4.0], True))
        self.conv = PytorchQuantizationWrapper(
            torch.nn.Conv2d(3, 4, 3), qi.WeightsSymmetricInferableQuantizer(
                8, [0.5, 0.25, 0.5, 1.0], True, 0))
        self.act = PytorchActivationQuantizationHolder(
            qi.ActivationUniformInferableQuantizer(8, [-1.0], [3.0]))
        self.conv2 = PytorchQuantizationWrapper(
            torch.nn.Conv2d(4, 2, 1), qi.WeightsLUTSymmetricInferableQuantizer(
                4, [-8, 0, 5, 100], [0.5, 1.0], True, 0, input_rank=4))
        self.act2 = PytorchActivationQuantizationHolder(
            qi.ActivationPOTInferableQuantizer(4, [4.0], True))
        self.fc = PytorchQuantizationWrapper(
            torch.nn.Linear(2 * 6 * 6, 5), qi.WeightsUniformInferableQuantizer(
                8, [-0.2] * 5, [0.3] * 5, True, 0),
            activation_quantizers=[qi.ActivationSymmetricInferableQuantizer(8, [8.0], True)])

    def forward(self, x):
        x = self.act(torch.relu(self.conv(self.inp(x))))
        x = self.act2(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("opset", OPSETS)
def test_wrapped_model_end_to_end(opset, parity_stats):
    model = _Net().eval()
    x = torch.randn(2, 3, 8, 8) * 2
    data = _export(model, x, opset)
    m, custom = _custom_nodes(data)
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") == 5  # inp, conv weight, act, fc weight, fc output
    assert sorted(n.op_type for n in custom) == ["ActivationPOTQuantizer",
                                                 "WeightsLUTSymmetricQuantizer"]
    onnx.checker.check_model(m)
    xb = (torch.randn(3, 3, 8, 8) * 2)  # another batch size: the batch axis is dynamic
    got = _run(data, xb.numpy())
    with torch.no_grad():
        want = model(xb).numpy()
    assert got.shape == want.shape == (3, 5)
    mismatches = int(np.sum(got != want))
    parity_stats.add("onnx wrapped model (ORT vs torch)", got.size, mismatches)
    # Convolutions and matmuls sum in another order in ORT; the final quantizer's output is on
    # its grid either way, and at most one step (8/128) apart where a sum lands on a boundary.
    final = model.fc.activation_quantizers[0]
    np.testing.assert_array_equal(final(got), got)
    assert np.abs(got - want).max() <= 8.0 / 128 * (1 + 1e-6)
    assert mismatches <= max(1, got.size // 10)


_MCT_EXPORT = textwrap.dedent("""
    import io, json, sys, torch
    from mct_quantizers import PytorchActivationQuantizationHolder as H
    from mct_quantizers import PytorchQuantizationWrapper as W
    from mct_quantizers.pytorch.quantizers import (
        ActivationSymmetricInferableQuantizer, WeightsLUTSymmetricInferableQuantizer,
        WeightsSymmetricInferableQuantizer, WeightsUniformInferableQuantizer,
        ActivationUniformInferableQuantizer)
    out = sys.argv[1]
    qs = {
        "WeightsSymmetricQuantizer": WeightsSymmetricInferableQuantizer(4, [0.5], False),
        "WeightsUniformQuantizer": WeightsUniformInferableQuantizer(5, [-0.5], [0.75], False),
        "WeightsLUTSymmetricQuantizer": WeightsLUTSymmetricInferableQuantizer(
            4, [-8, 0, 5, 100], [0.5], False),
        "ActivationSymmetricQuantizer": ActivationSymmetricInferableQuantizer(4, [4.0], True),
        "ActivationUniformQuantizer": ActivationUniformInferableQuantizer(6, [-1.0], [3.0]),
    }
    for name, q in qs.items():
        q.enable_custom_impl()
        if name.startswith("Weights"):
            w = torch.randn(4, 3, 3, 3) * 0.6
            m = W(torch.add, {1: q}, weight_values={1: w})
            x = torch.zeros(4, 3, 3, 3)
        else:
            m = H(q)
            x = torch.randn(4, 50) * 3
        torch.onnx.export(m.eval(), (x,), f"{out}/{name}.onnx", opset_version=16,
                          input_names=["input"], output_names=["output"], dynamo=False)
        torch.save(w if name.startswith("Weights") else x, f"{out}/{name}.pt")
""")


def test_mct_exported_models_run_on_qi_kernels(tmp_path):
    """Models exported by MCT Quantizers 1.6.0 (enable_custom_impl) carry the same op types and
    attributes as qi's (minus qi's `profile`), and run on qi's kernels with qi's numbers."""
    import importlib.util
    if importlib.util.find_spec("mct_quantizers") is None:  # not imported here: see below
        pytest.skip("mct_quantizers is not installed")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, "-c", _MCT_EXPORT, str(tmp_path)], check=True, env=env,
                   capture_output=True, timeout=120)
    mine = {
        "WeightsSymmetricQuantizer": qi.WeightsSymmetricInferableQuantizer(4, [0.5], False),
        "WeightsUniformQuantizer": qi.WeightsUniformInferableQuantizer(5, [-0.5], [0.75], False),
        "WeightsLUTSymmetricQuantizer": qi.WeightsLUTSymmetricInferableQuantizer(
            4, [-8, 0, 5, 100], [0.5], False),
        "ActivationSymmetricQuantizer": qi.ActivationSymmetricInferableQuantizer(4, [4.0], True),
        "ActivationUniformQuantizer": qi.ActivationUniformInferableQuantizer(6, [-1.0], [3.0]),
    }
    for name, q in mine.items():
        data = (tmp_path / f"{name}.onnx").read_bytes()
        _, custom = _custom_nodes(data)
        assert [n.op_type for n in custom] == [name]
        theirs = {a.name: a.type for a in custom[0].attribute}
        assert theirs == {k: v for k, v in EXPECTED[name][1].items() if k != "profile"}
        assert len(custom[0].input) == EXPECTED[name][0]
        t = torch.load(tmp_path / f"{name}.pt")
        if name.startswith("Weights"):
            x = np.zeros((4, 3, 3, 3), np.float32)
            want = q(t.numpy())
        else:
            x = t.numpy()
            want = q(x)
        got = _run(data, x)
        if name == "ActivationUniformQuantizer":
            # MCT exports the adjusted range, which qi's kernel adjusts again: same grid up
            # to float32 rounding of the adjustment, so compare on the grid.
            assert np.abs(got - want).max() <= float(q.scale[0]) * (1 + 1e-6)
        else:
            np.testing.assert_array_equal(got, want)
