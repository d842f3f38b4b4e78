# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The whole-model config speaks the formats: per-group integer weights, FLOAT (FP8 and smaller
floats), MX and NVFP4, in quantize() on PyTorch and Keras. The config's rules and messages, the
calibrated parameters against numpy references (groups in (channel, group) order, ragged last
groups, FLOAT scales, NVFP4 tensor scales), and the same parameters from both front ends."""

import copy
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

import quantizers_infrastructure as qi  # noqa: E402
import quantizers_infrastructure.pytorch as qp  # noqa: E402
from quantizers_infrastructure import keras as qk  # noqa: E402
from quantizers_infrastructure.common import calibration as cal  # noqa: E402

E4M3_MAX, E2M1_MAX = 448.0, 6.0


def weights_of(cfg):
    return qi.ModelQuantizationConfig.of(cfg).weights


def wrapped(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, qi.PytorchQuantizationWrapper)}


def weight_quantizer(qmodel, name):
    return wrapped(qmodel)[name].weights_quantizers["weight"]


def rand(shape, seed=0):
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    w.reshape(-1)[::7] *= 5  # outliers spread over the groups
    return w


def linear(w):
    m = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
    return m


def conv(w):
    m = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2])
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
    return m


def ptq(model, weights, activations=None, data=None):
    cfg = {"weights": weights, "activations": activations}
    return qp.quantize(model, cfg, data, progress=False)


def group_reference(w, axis, k, stat):
    """stat over each (channel 0 or last, group along `axis`) slice, in (channel, group) order."""
    size = w.shape[axis]
    parts = []
    for start in range(0, size, k):
        part = np.take(w, range(start, min(start + k, size)), axis=axis)
        parts.append(stat(part))
    return np.stack(parts, axis=1).reshape(-1)  # [C, G] row-major


# ---- the config ------------------------------------------------------------------------------------

def test_switching_to_a_format_brings_its_defaults():
    w = weights_of({"weights": {"method": "FLOAT"}})
    assert (w["format"], w["n_bits"], w["calibration"], w["per_channel"]) == ("E4M3", 8, "minmax",
                                                                              True)
    w = weights_of({"preset": "w8a8", "weights": {"method": "MX", "format": "E2M1"}})
    assert (w["format"], w["n_bits"], w["per_channel"], w["block_size"]) == ("E2M1", 4, False,
                                                                             None)
    w = weights_of({"weights": {"method": "NVFP4"}})
    assert (w["format"], w["n_bits"]) == ("E2M1", 4)
    # A format of the old method that the new one has is kept; back to integers clears it.
    cfg = qi.ModelQuantizationConfig(weights={"method": "FLOAT", "format": "E3M2"},
                                     overrides=[{"name": "a", "weights": {"method": "MX"}},
                                                {"name": "b", "weights": {"method": "SYMMETRIC"}},
                                                {"name": "c", "weights": {"format": "E2M1"}}])
    assert cfg.resolve("a", "Linear")["weights"]["format"] == "E3M2"
    b = cfg.resolve("b", "Linear")["weights"]
    assert b["format"] is None and b["method"] == "SYMMETRIC"
    assert cfg.resolve("c", "Linear")["weights"]["n_bits"] == 4
    g = weights_of({"weights": {"n_bits": 4, "group_size": 32}})
    assert g["group_size"] == 32 and g["method"] == "SYMMETRIC"


@pytest.mark.parametrize("cfg", [
    {"weights": {"n_bits": 4, "group_size": 32}, "activations": {"method": "FLOAT"}},
    {"weights": {"method": "MX", "format": "INT8", "block_size": 16},
     "activations": {"method": "NVFP4", "block_axis": 1}},
])
def test_format_configs_round_trip_through_json(cfg):
    c = qi.ModelQuantizationConfig.of(cfg)
    assert qi.ModelQuantizationConfig.from_json(c.to_json()) == c
    assert json.loads(c.to_json())["weights"] == c.weights


@pytest.mark.parametrize("kwargs,message", [
    ({"weights": {"format": "E4M3"}}, '"format" applies to FLOAT, MX and NVFP4, not SYMMETRIC'),
    ({"weights": {"method": "FLOAT", "format": "E9M9"}},
     '"format" of FLOAT must be one of E4M3, E5M2, E3M2, E2M3, E2M1, got "E9M9"'),
    ({"weights": {"method": "FLOAT", "format": "INT8"}}, '"format" of FLOAT must be one of'),
    ({"weights": {"method": "MX", "format": "INT4"}},
     '"format" of MX must be one of E4M3, E5M2, E3M2, E2M3, E2M1, INT8, got "INT4"'),
    ({"weights": {"method": "NVFP4", "format": "E4M3"}},
     '"format" of NVFP4 must be one of E2M1, got "E4M3"'),
    ({"weights": {"method": "FLOAT", "n_bits": 4}},
     '"n_bits" must be 8 for FLOAT E4M3 (or left out: the format gives it), got 4'),
    ({"weights": {"method": "FLOAT", "calibration": "mse"}},
     '"calibration" must be minmax for FLOAT (its scales come from max |x|), got mse'),
    ({"weights": {"method": "MX", "per_channel": True}},
     '"per_channel" must be false for MX: its scales are per block'),
    ({"activations": {"group_size": 32}},
     '"group_size" applies to weights: activation quantizers are per tensor'),
    ({"weights": {"method": "MX", "group_size": 32}},
     '"group_size" does not apply to MX, whose blocks are "block_size"'),
    ({"weights": {"group_size": 0}}, '"group_size" must be >= 1 (or null: no groups), got 0'),
    ({"weights": {"block_size": 32}}, '"block_size" applies to MX and NVFP4, not SYMMETRIC'),
    ({"weights": {"method": "NVFP4", "block_size": 32}}, '"block_size" of NVFP4 is 16, got 32'),
    ({"weights": {"method": "MX", "block_size": 0}}, '"block_size" must be >= 1, got 0'),
    ({"weights": {"method": "MX", "block_axis": 0}},
     '"block_axis" applies to activations: weights block their input axis'),
    ({"activations": {"method": "FLOAT", "block_axis": 1}},
     '"block_axis" applies to MX and NVFP4, not FLOAT'),
    ({"weights": {"group_size": "32"}}, "group_size"),
])
def test_format_config_errors(kwargs, message):
    with pytest.raises(ValueError) as e:
        qi.ModelQuantizationConfig(**kwargs)
    assert message in str(e.value)


# ---- PyTorch: the calibrated parameters --------------------------------------------------------

@pytest.mark.parametrize("in_features", [64, 40])  # 40: a ragged last group of 8
def test_groups_symmetric_minmax_linear(in_features):
    w = rand((6, in_features))
    m = linear(w)
    qm = ptq(m, {"n_bits": 4, "group_size": 32, "calibration": "minmax"})
    q = weight_quantizer(qm, "")
    assert isinstance(q, qi.WeightsSymmetricInferableQuantizer)
    assert (q.get_config()["group_size"], q.get_config()["group_axis"]) == (32, 1)
    ref = group_reference(w, 1, 32, lambda p: np.abs(p).max(axis=1))
    np.testing.assert_array_equal(q.get_config()["threshold"], ref)
    x = torch.randn(3, in_features)
    with torch.no_grad():
        expect = torch.nn.functional.linear(x, torch.from_numpy(q(w)), m.bias)
        torch.testing.assert_close(qm(x), expect, rtol=0, atol=0)


def test_groups_uniform_mse_are_each_groups_own_search():
    w = rand((5, 48), seed=3)
    q = weight_quantizer(ptq(linear(w), {"method": "UNIFORM", "n_bits": 3, "group_size": 16,
                                         "calibration": "mse", "num_candidates": 30}), "")
    lo, hi = [], []
    for g in range(3):
        part = np.ascontiguousarray(w[:, g * 16:(g + 1) * 16])
        l, h = cal.range_mse(part, 0, 3, False, 30)
        lo.append(l)
        hi.append(h)
    np.testing.assert_array_equal(q.get_config()["min_range"], np.stack(lo, 1).reshape(-1))
    np.testing.assert_array_equal(q.get_config()["max_range"], np.stack(hi, 1).reshape(-1))


def test_groups_conv_weight_group_the_input_channels():
    w = rand((4, 12, 3, 3), seed=4)
    q = weight_quantizer(ptq(conv(w), {"method": "POWER_OF_TWO", "n_bits": 4, "group_size": 8,
                                       "calibration": "minmax"}), "")
    amax = group_reference(w, 1, 8, lambda p: np.abs(p).reshape(p.shape[0], -1).max(axis=1))
    np.testing.assert_array_equal(q.get_config()["threshold"], 2.0 ** np.ceil(np.log2(amax)))
    assert q.get_config()["group_axis"] == 1


@pytest.mark.parametrize("fmt,fmax", [("E4M3", E4M3_MAX), ("E2M1", E2M1_MAX)])
def test_float_weights_scale_is_amax_over_the_formats_max(fmt, fmax):
    w = rand((6, 64), seed=5)
    q = weight_quantizer(ptq(linear(w), {"method": "FLOAT", "format": fmt}), "")
    assert isinstance(q, qi.WeightsFloatInferableQuantizer) and q.get_config()["format"] == fmt
    np.testing.assert_allclose(q.get_config()["scale"], np.abs(w).max(axis=1).astype(np.float64) / fmax,
                               rtol=1e-15)
    g = weight_quantizer(ptq(linear(w), {"method": "FLOAT", "format": fmt, "group_size": 16}), "")
    np.testing.assert_allclose(g.get_config()["scale"],
                               group_reference(w, 1, 16, lambda p: np.abs(p).max(axis=1))
                               .astype(np.float64) / fmax,
                               rtol=1e-15)


def test_mx_and_nvfp4_weights_block_the_input_axis():
    w = rand((4, 64), seed=6)
    mx = weight_quantizer(ptq(linear(w), {"method": "MX", "format": "E2M1"}), "")
    assert isinstance(mx, qi.WeightsMXInferableQuantizer)
    cfg = mx.get_config()
    assert (cfg["format"], cfg["block_size"], cfg["block_axis"]) == ("E2M1", 32, 1)
    ref = qi.WeightsMXInferableQuantizer(format="E2M1", block_size=32, block_axis=1)
    np.testing.assert_array_equal(mx(w), ref(w))
    nv = weight_quantizer(ptq(linear(w), {"method": "NVFP4"}), "")
    assert isinstance(nv, qi.WeightsNVFP4InferableQuantizer)
    assert nv.get_config()["block_axis"] == 1
    assert nv.get_config()["tensor_scale"] == pytest.approx(float(np.abs(w).max()) / (448 * 6),
                                                            rel=1e-15)
    # An all-zero weight has no tensor scale (single-level scaling).
    z = weight_quantizer(ptq(linear(np.zeros((2, 16), np.float32)), {"method": "NVFP4"}), "")
    assert z.get_config()["tensor_scale"] is None


def test_block_formats_need_whole_blocks_along_the_input_axis():
    with pytest.raises(ValueError) as e:
        ptq(linear(rand((4, 40))), {"method": "MX"})
    assert ("MX blocks of 32 elements lie along the weight's input axis 1, whose size 40 is not "
            "a multiple of 32 (weight sizes [4, 40]); skip this layer") in str(e.value)
    with pytest.raises(ValueError, match="NVFP4 blocks of 16 elements"):
        ptq(conv(rand((4, 3, 3, 3))), {"method": "NVFP4"})


def test_format_activations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    data = [torch.randn(4, 32) * 3 for _ in range(2)]
    with torch.no_grad():  # the first site quantizes the ReLU's output
        seen = max(float(model[1](model[0](x)).max()) for x in data)
    q = ptq(model, None, {"method": "FLOAT"}, data)
    holders = [m.activation_holder_quantizer for m in q.modules()
               if isinstance(m, qi.PytorchActivationQuantizationHolder)]
    assert holders and all(isinstance(h, qi.ActivationFloatInferableQuantizer) for h in holders)
    scales = sorted(h.get_config()["scale"][0] for h in holders)
    assert any(s == pytest.approx(seen / E4M3_MAX, rel=1e-6) for s in scales)
    q = ptq(model, None, {"method": "MX", "format": "E4M3"}, data)
    mx = [m.activation_holder_quantizer for m in q.modules()
          if isinstance(m, qi.PytorchActivationQuantizationHolder)]
    assert mx and all(h.get_config()["block_axis"] == -1 for h in mx)
    q = ptq(model, None, {"method": "NVFP4"}, data)
    nv = [m.activation_holder_quantizer for m in q.modules()
          if isinstance(m, qi.PytorchActivationQuantizationHolder)]
    assert any(h.get_config()["tensor_scale"] == pytest.approx(seen / (448 * 6), rel=1e-6)
               for h in nv)
    out = q(data[0])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("method", ["SYMMETRIC", "UNIFORM"])
def test_grouped_qat_trains_and_converts_bit_for_bit(method):
    w = rand((6, 40), seed=11)  # ragged: groups of 16, 16, 8
    spec = {"method": method, "n_bits": 4, "group_size": 16, "calibration": "minmax",
            "training": "LSQ"}
    keys = ["threshold"] if method == "SYMMETRIC" else ["min_range", "max_range"]
    model = nn.Sequential(linear(w))
    cfg = {"weights": spec, "activations": None}
    ref = weight_quantizer(ptq(copy.deepcopy(model), dict(spec, training=None)), "0").get_config()
    # Started from each group's own calibration (the trainable variables are float32).
    start = weight_quantizer(qp.convert(qp.prepare_qat(copy.deepcopy(model), cfg, None,
                                                       progress=False)), "0").get_config()
    for k in keys:
        assert len(start[k]) == 18
        np.testing.assert_array_equal(start[k], np.float32(ref[k]))
    qat = qp.prepare_qat(copy.deepcopy(model), cfg, None, progress=False)
    assert "LSQ" in type(wrapped(qat)["0"].weights_quantizers["weight"]).__name__
    x = torch.randn(8, 40)
    opt = torch.optim.SGD([p for p in qat.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        qat(x).pow(2).mean().backward()
        opt.step()
    qat.eval()
    with torch.no_grad():
        before = qat(x)
    inferable = qp.convert(qat)
    trained = weight_quantizer(inferable, "0").get_config()
    assert (trained["group_size"], trained["group_axis"]) == (16, 1)
    assert any(not np.array_equal(trained[k], start[k]) for k in keys)  # the steps learned
    with torch.no_grad():
        assert torch.equal(inferable(x), before)


# ---- Keras and the same parameters from both front ends -----------------------------------------

def test_keras_dense_and_conv_groups_match_pytorch():
    w = rand((6, 40), seed=8)  # torch [out, in]; Keras kernel [in, out]
    spec = {"method": "UNIFORM", "n_bits": 4, "group_size": 16, "calibration": "minmax"}
    tq = weight_quantizer(ptq(linear(w), spec), "").get_config()
    inp = tf.keras.Input((40,))
    dense = tf.keras.layers.Dense(6, name="fc")
    km = tf.keras.Model(inp, dense(inp))
    dense.set_weights([w.T.copy(), np.zeros(6, np.float32)])
    kq = qk.quantize(km, {"weights": spec, "activations": None}, None, progress=False,
                     report=False).get_layer("quant_fc").weights_quantizers["kernel"].get_config()
    assert (kq["group_axis"], kq["channel_axis"]) == (0, 1)
    assert kq["min_range"] == tq["min_range"] and kq["max_range"] == tq["max_range"]
    # Conv2D kernels [kh, kw, in, out] group their input channels (axis 2).
    cw = rand((3, 3, 8, 4), seed=9)
    inp = tf.keras.Input((6, 6, 8))
    c = tf.keras.layers.Conv2D(4, 3, name="conv")
    km = tf.keras.Model(inp, c(inp))
    c.set_weights([cw, np.zeros(4, np.float32)])
    kq = qk.quantize(km, {"weights": {"method": "FLOAT", "format": "E2M1", "group_size": 4},
                          "activations": None}, None, progress=False,
                     report=False).get_layer("quant_conv").weights_quantizers["kernel"]
    cfg = kq.get_config()
    assert cfg["group_axis"] == 2
    amax = [np.abs(cw[:, :, g * 4:(g + 1) * 4, o]).max() for o in range(4) for g in range(2)]
    np.testing.assert_allclose(cfg["scale"], np.array(amax, np.float64) / E2M1_MAX, rtol=1e-15)
