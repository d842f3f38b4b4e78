# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Trainable FLOAT, MX and NVFP4 quantizers through the public classes (PyTorch and Keras):
the STE forward equals the formats' references (torch's float8 casts, the inferable MX and NVFP4
quantizers), LSQ learns the FLOAT scales, the MX pre-scale and the NVFP4 block scales
with the documented gradients (against float64 references), every trained quantizer converts to
its inferable quantizer bit for bit, whole-model QAT (prepare_qat / convert) runs the formats,
and each bad config is refused with its message. LibTorch, PyTorch and Keras agree bit for bit
in tests/python/test_cross_frontend.py."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure import keras as qk  # noqa: E402
from quantizers_infrastructure import pytorch as qp  # noqa: E402

QM = qi.QuantizationMethod
FORMATS = {"E4M3": (8, 4, 448.0), "E5M2": (8, 5, 57344.0), "E3M2": (6, 3, 28.0),
           "E2M3": (6, 2, 7.5), "E2M1": (4, 2, 6.0)}
MBITS = {"E4M3": 3, "E5M2": 2, "E3M2": 2, "E2M3": 3, "E2M1": 1}


def bits_equal(a, b):
    a = np.ascontiguousarray(np.asarray(a, np.float32))
    b = np.ascontiguousarray(np.asarray(b, np.float32))
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))


def rand(shape, seed, scale=0.4):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def round_to(v, name):
    """float64 v (|v| <= max) rounded to the element format, half to even, subnormals kept."""
    ebits, mbits = FORMATS[name][1], MBITS[name]
    emin = 2 - 2 ** (ebits - 1)
    a = np.abs(v)
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    q = np.exp2(np.maximum(e, emin) - mbits)
    return np.round(v / q) * q


def blocks_e4m3(b):
    """e4m3(clamp(b, 2^-6, 448)) as float32."""
    c = torch.from_numpy(np.clip(np.asarray(b, np.float32), 2.0 ** -6, 448.0))
    return c.to(torch.float8_e4m3fn).float().numpy()


def torch_quantizer(name, cfg, w=None):
    q = qp.TRAINABLE_QUANTIZER_CLASSES[name](cfg)
    m = torch.nn.Module()
    if w is None:
        q.initialize_quantization(None, "act", m)
        return q, None
    p = torch.nn.Parameter(torch.from_numpy(w.copy()))
    m.register_parameter("weight", p)
    q.initialize_quantization(p.shape, "weight", m)
    return q, p


def variables(q):
    return {k: v["var"] for k, v in q.quantizer_parameters.items()}


def step(q, t, dy, lr=0.05):
    """One SGD step of sum(q(t) * dy) on the quantizer's trainable variables (and t)."""
    y = q(t, True)
    (y * dy).sum().backward()
    with torch.no_grad():
        for v in list(variables(q).values()) + ([t] if isinstance(t, torch.nn.Parameter) else []):
            if v.requires_grad and v.grad is not None:
                v.sub_(lr * v.grad)
                v.grad = None
    return y.detach()


def converts_bit_for_bit(q, t):
    with torch.no_grad():
        ev = q(t, False)
        conv = q.convert2inferable()
        bits_equal(conv(t.detach()), ev)
    return conv


# ---- FLOAT ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,dtype", [("E4M3", torch.float8_e4m3fn),
                                       ("E5M2", torch.float8_e5m2)])
def test_float_ste_weights_equal_torchs_float8_cast(fmt, dtype):
    n, ebits, fmax = FORMATS[fmt]
    w = rand((6, 5, 3), 1, scale=3.0)
    s = np.array([0.002, 0.01, 0.05, 0.004, 0.2, 0.001], np.float32)
    cfg = qi.TrainableQuantizerWeightsConfig(QM.FLOAT, n, {"scale": s.reshape(6, 1, 1),
                                                           "ebits": ebits}, True, 0, True)
    q, p = torch_quantizer("STEFloatWeightQATQuantizer", cfg, w)
    st = torch.from_numpy(s).reshape(6, 1, 1)
    ref = torch.clamp(p.detach() / st, -fmax, fmax).to(dtype).float() * st
    y = q(p, True)
    bits_equal(y.detach(), ref)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    bits_equal(p.grad, dy)  # straight through
    assert not variables(q)["scale"].requires_grad  # STE weights keep their scales
    conv = converts_bit_for_bit(q, p)
    assert type(conv).__name__ == "WeightsFloatInferableQuantizer" and conv.format == fmt


@pytest.mark.parametrize("fmt", ["E4M3", "E3M2", "E2M1"])
def test_float_lsq_weights_learn_grouped_scales_with_lsq_gradients(fmt):
    n, ebits, fmax = FORMATS[fmt]
    w = rand((3, 40), 2)
    rows, k, groups = 3, 16, 3  # ragged: 16, 16, 8
    s0 = (np.abs(w).max() / fmax * np.linspace(0.3, 1.2, rows * groups)).astype(np.float32)
    cfg = qi.TrainableQuantizerWeightsConfig(
        QM.FLOAT, n, {"scale": s0, "ebits": ebits, "group_size": k, "group_axis": 1}, True, 0,
        True)
    q, p = torch_quantizer("LSQFloatWeightQATQuantizer", cfg, w)
    dy = rand((3, 40), 3, scale=1.0)
    y = q(p, True)
    (y * torch.from_numpy(dy)).sum().backward()
    # float64 reference of the documented gradients (hard clip, g = 1 / sqrt(L * C)).
    e = np.repeat(s0.reshape(rows, groups), k, axis=1)[:, :40].astype(np.float64)
    u = (w / e.astype(np.float32)).astype(np.float64)
    qv = round_to(np.clip(u, -fmax, fmax), fmt)
    inside = np.abs(u) <= fmax
    bits_equal(y.detach(), (qv * e).astype(np.float32))
    terms = dy * np.where(inside, qv - u, qv)
    levels = 2.0 ** (ebits + MBITS[fmt]) - 1
    want = np.array([terms[r, g * k:(g + 1) * k].sum() for r in range(rows) for g in range(groups)])
    want /= np.sqrt(levels * rows * groups) * fmax ** 2  # the range's gradient, on the scale
    np.testing.assert_allclose(variables(q)["scale"].grad.numpy(), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(p.grad.numpy(), np.where(inside, dy, 0.0).astype(np.float32))
    for _ in range(3):
        step(q, p, torch.from_numpy(dy))
    assert not np.array_equal(variables(q)["scale"].detach().numpy(), s0)
    conv = converts_bit_for_bit(q, p)
    assert conv.get_config()["group_size"] == k


def test_float_activations_learn_their_scale_in_both_front_ends():
    x = rand((2, 3, 4, 5), 4, scale=2.0)
    cfg = qi.TrainableQuantizerActivationConfig(QM.FLOAT, 8, {"scale": 0.01})
    for name in ("STEFloatActivationTrainableQuantizer", "LSQFloatActivationTrainableQuantizer"):
        q, _ = torch_quantizer(name, cfg)
        t = torch.from_numpy(x)
        y = q(t, True)
        y.sum().backward()
        assert variables(q)["scale"].grad is not None
        kq = qk.TRAINABLE_QUANTIZER_CLASSES[name](cfg)
        kq.initialize_quantization(None, "act", tf.keras.layers.Layer())
        bits_equal(kq(tf.constant(x), training=True).numpy(), y.detach())
        assert type(q.convert2inferable()).__name__ == "ActivationFloatInferableQuantizer"


# ---- MX -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["E4M3", "E2M1", "INT8"])
def test_mx_ste_weights_equal_the_inferable_mx_quantizer(fmt):
    n, ebits = (8, 0) if fmt == "INT8" else FORMATS[fmt][:2]
    w = rand((4, 64), 5)
    cfg = qi.TrainableQuantizerWeightsConfig(QM.MX, n, {"ebits": ebits, "block_axis": 1},
                                             True, 0, True)
    q, p = torch_quantizer("STEFloatWeightQATQuantizer", cfg, w)
    ref = qi.WeightsMXInferableQuantizer(fmt, 32, 1)(w)
    bits_equal(q(p, True).detach(), ref)
    conv = converts_bit_for_bit(q, p)
    assert conv.get_config()["format"] == fmt


def test_mx_lsq_learns_a_pre_scale_and_converts_with_it():
    w = rand((4, 64), 6)
    cfg = qi.TrainableQuantizerWeightsConfig(QM.MX, 4, {"block_axis": 1, "pre_scale": 1.0},
                                             True, 0, True)
    q, p = torch_quantizer("LSQFloatWeightQATQuantizer", cfg, w)
    dy = torch.from_numpy(rand((4, 64), 7, scale=1.0))
    y = q(p, True)
    (y * dy).sum().backward()
    # d/dp of p * MX(w / p) at p = 1: per block X * (q - u) inside, X * q outside, g = 1/sqrt(7).
    d = 0.0
    blocks, dys = w.reshape(-1, 32), dy.numpy().reshape(-1, 32)
    for b, g in zip(blocks, dys):
        X = 2.0 ** (np.floor(np.log2(np.abs(b).max())) - 2)  # emax(E2M1) = 2
        u = b.astype(np.float64) / X
        qv = round_to(np.clip(u, -6, 6), "E2M1")
        d += (g * X * np.where(np.abs(u) <= 6, qv - u, qv)).sum()
    np.testing.assert_allclose(variables(q)["pre_scale"].grad.numpy(),
                               [d / np.sqrt(7 * w.size)], rtol=1e-5)
    for _ in range(4):
        step(q, p, dy, lr=5.0)
    pre = float(variables(q)["pre_scale"].detach()[0])
    assert pre != 1.0
    conv = converts_bit_for_bit(q, p)
    assert conv.get_config()["tensor_scale"] == pytest.approx(pre)
    # y = p * MX(w / p) with the inferable MX quantizer of the trained p.
    ref = qi.WeightsMXInferableQuantizer("E2M1", 32, 1, tensor_scale=pre)(p.detach().numpy())
    bits_equal(conv(p.detach()), ref)


# ---- NVFP4 --------------------------------------------------------------------------------------

def test_nvfp4_lsq_starts_at_the_data_scales_and_learns_its_block_and_tensor_scales():
    w = rand((8, 64), 8)
    t = float(np.abs(w).max() / (448 * 6))
    # By default the tensor scale stays at its configured value; "learn_tensor_scale" learns it.
    fixed = qi.TrainableQuantizerWeightsConfig(QM.NVFP4, 4, {"block_axis": 1, "tensor_scale": t},
                                               True, 0, True)
    qf, _ = torch_quantizer("LSQFloatWeightQATQuantizer", fixed, w)
    assert not variables(qf)["tensor_scale"].requires_grad
    assert variables(qf)["block_scale"].requires_grad
    cfg = qi.TrainableQuantizerWeightsConfig(
        QM.NVFP4, 4, {"block_axis": 1, "tensor_scale": t, "learn_tensor_scale": True}, True, 0,
        True)
    q, p = torch_quantizer("LSQFloatWeightQATQuantizer", cfg, w)
    assert variables(q)["block_scale"].shape == (8 * 4,)
    # At first: the data-scaled NVFP4 quantizer, bit for bit.
    bits_equal(q(p, True).detach(), qi.WeightsNVFP4InferableQuantizer(t, 1)(w))
    b0 = variables(q)["block_scale"].detach().clone()
    dy = torch.from_numpy(rand((8, 64), 9, scale=1.0))
    y = q(p, True)
    (y * dy).sum().backward()
    # The block range's gradient on b: dL/db = g * t * sum(dy * dy/dE) / (6 t)^2.
    e = (np.float32(t) * torch.from_numpy(blocks_e4m3(b0.numpy()))).numpy().astype(np.float64)
    e = np.repeat(e.reshape(8, 4), 16, axis=1)
    u = (w / e.astype(np.float32)).astype(np.float64)
    qv = round_to(np.clip(u, -6, 6), "E2M1")
    terms = (dy.numpy() * np.where(np.abs(u) <= 6, qv - u, qv)).reshape(32, 16).sum(axis=1)
    want = terms * np.float32(t) / np.sqrt(7 * 32) / (36 * t ** 2)
    np.testing.assert_allclose(variables(q)["block_scale"].grad.numpy(), want, rtol=1e-4)
    # The tensor range's gradient on t: dL/dt = g * sum(dy * dy/dE * e4m3(b)) / (6 * 448)^2,
    # g = 1 / sqrt(7 * the weight's elements).
    want_t = (terms * blocks_e4m3(b0.numpy())).sum() / np.sqrt(7 * w.size) / (6 * 448) ** 2
    np.testing.assert_allclose(variables(q)["tensor_scale"].grad.numpy(), [want_t], rtol=1e-4)
    for v in variables(q).values():
        v.grad = None
    p.grad = None
    t0 = variables(q)["tensor_scale"].detach().clone()
    for _ in range(3):
        step(q, p, dy, lr=0.01)
    assert variables(q)["tensor_scale"].requires_grad
    assert not torch.equal(variables(q)["tensor_scale"].detach(), t0)
    assert not torch.equal(variables(q)["block_scale"].detach(), b0)
    conv = converts_bit_for_bit(q, p)
    learned_t = float(variables(q)["tensor_scale"].detach()[0])
    assert conv.get_config()["tensor_scale"] == learned_t
    blocks = np.asarray(conv.get_config()["block_scales"], np.float32)
    assert blocks.shape == (32,)
    # Stored as FP8 E4M3 values.
    np.testing.assert_array_equal(blocks, torch.from_numpy(blocks).to(torch.float8_e4m3fn).float())


def test_nvfp4_ste_weights_and_activations_follow_the_data():
    w = rand((4, 32), 10)
    cfg = qi.TrainableQuantizerWeightsConfig(QM.NVFP4, 4, {"block_axis": 1}, True, 0, True)
    q, p = torch_quantizer("STEFloatWeightQATQuantizer", cfg, w)
    bits_equal(q(p, True).detach(), qi.WeightsNVFP4InferableQuantizer(None, 1)(w))
    assert not variables(q)  # nothing to learn
    converts_bit_for_bit(q, p)
    x = rand((3, 16, 2), 11, scale=2.0)
    acfg = qi.TrainableQuantizerActivationConfig(QM.NVFP4, 4, {"block_axis": 1,
                                                              "tensor_scale": 0.004})
    qa, _ = torch_quantizer("STEFloatActivationTrainableQuantizer", acfg)
    bits_equal(qa(torch.from_numpy(x), True).detach(),
               qi.ActivationNVFP4InferableQuantizer(0.004, 1)(x))


# ---- whole-model QAT ----------------------------------------------------------------------------

@pytest.mark.parametrize("weights,activations", [
    ({"method": "FLOAT", "format": "E4M3", "training": "LSQ"},
     {"method": "FLOAT", "format": "E4M3", "training": "LSQ"}),
    ({"method": "MX", "format": "E2M1", "training": "LSQ"},
     {"method": "MX", "format": "E4M3", "training": "STE"}),
    ({"method": "NVFP4", "training": "LSQ"}, {"method": "NVFP4", "training": "STE"}),
])
def test_whole_model_qat_of_the_formats_trains_and_converts(weights, activations):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32))
    data = [torch.randn(8, 64) for _ in range(4)]
    qat = qp.prepare_qat(copy.deepcopy(model), {"weights": weights, "activations": activations},
                         data, progress=False)
    opt = torch.optim.SGD([p for p in qat.parameters() if p.requires_grad], lr=1e-2)
    for x in data:
        opt.zero_grad()
        qat(x).pow(2).mean().backward()
        opt.step()
    qat.eval()
    with torch.no_grad():
        before = qat(data[0])
        inferable = qp.convert(qat)
        assert torch.equal(inferable(data[0]), before)


# ---- bad configs ----------------------------------------------------------------------------

@pytest.mark.parametrize("method,bits,params,target,message", [
    (QM.FLOAT, 8, {"scale": 0.1, "ebits": 3}, "w",
     'no FLOAT element format has 8 bits and "ebits" 3'),
    (QM.FLOAT, 8, {"scale": 0.1, "ebits": 0}, "w", 'no FLOAT element format has 8 bits'),
    (QM.FLOAT, 8, {"scale": -0.1}, "w", '"scale" must be finite and > 0, got -0.1'),
    (QM.FLOAT, 8, {"scale": 0.1, "block_size": 32}, "w",
     'FLOAT quantization params take "ebits", "scale", "group_size", "group_axis"; got '
     '"block_size"'),
    (QM.FLOAT, 8, {"scale": [0.1, 0.2]}, "a", 'activation "scale" must hold one value, got 2'),
    (QM.MX, 4, {"pre_scale": 0.0}, "w", '"pre_scale" must be finite and > 0, got 0'),
    (QM.MX, 4, {"block_size": 0}, "w", '"block_size" must be in [1, 2147483647], got 0'),
    (QM.NVFP4, 8, {}, "w", 'NVFP4 elements are E2M1 (4 bits, "ebits" 2), got E4M3'),
    (QM.NVFP4, 4, {"tensor_scale": -2.0}, "w", '"tensor_scale" must be finite and > 0, got -2'),
    (QM.NVFP4, 4, {"learn_tensor_scale": True}, "w",
     '"learn_tensor_scale" is for NVFP4 LSQ weights with a "tensor_scale" (no tensor_scale was '
     'given)'),
    (QM.NVFP4, 4, {"tensor_scale": 0.1, "learn_tensor_scale": True}, "w-ste",
     '"learn_tensor_scale" is for NVFP4 LSQ weights with a "tensor_scale" (STE keeps its '
     'scales)'),
    (QM.NVFP4, 4, {"tensor_scale": 0.1, "learn_tensor_scale": True}, "a-ste",
     '"learn_tensor_scale" is for NVFP4 LSQ weights with a "tensor_scale" (activations keep '
     'theirs fixed)'),
    (QM.NVFP4, 4, {"tensor_scale": 0.1, "learn_tensor_scale": 1.0}, "w",
     '"learn_tensor_scale" must be a boolean'),
])
def test_bad_format_configs_are_refused(method, bits, params, target, message):
    if target.startswith("w"):
        cfg = qi.TrainableQuantizerWeightsConfig(method, bits, params, True, 0, True)
        name = "STEFloatWeightQATQuantizer" if target == "w-ste" else "LSQFloatWeightQATQuantizer"
    else:
        cfg = qi.TrainableQuantizerActivationConfig(method, bits, params)
        name = ("STEFloatActivationTrainableQuantizer" if target == "a-ste"
                else "LSQFloatActivationTrainableQuantizer")
    for front in (qp, qk):
        with pytest.raises(ValueError) as e:
            front.TRAINABLE_QUANTIZER_CLASSES[name](cfg)
        assert message in str(e.value)


def test_nvfp4_rules():
    cfg = qi.TrainableQuantizerWeightsConfig(QM.NVFP4, 4, {}, True, 0, False)
    with pytest.raises(ValueError) as e:
        qp.TRAINABLE_QUANTIZER_CLASSES["LSQFloatWeightQATQuantizer"](cfg)
    assert "NVFP4 LSQ weights learn one block scale per (channel, block of 16); set " \
        "weights_per_channel_threshold" in str(e.value)
    acfg = qi.TrainableQuantizerActivationConfig(QM.NVFP4, 4, {})
    with pytest.raises(ValueError) as e:
        qp.TRAINABLE_QUANTIZER_CLASSES["LSQFloatActivationTrainableQuantizer"](acfg)
    assert "LSQ is not available for NVFP4 activations" in str(e.value)
    cfg = qi.TrainableQuantizerWeightsConfig(QM.NVFP4, 4, {"block_scale": [0.1]}, True, 0, True)
    with pytest.raises(ValueError) as e:
        qp.TRAINABLE_QUANTIZER_CLASSES["STEFloatWeightQATQuantizer"](cfg)
    assert '"block_scale" is learned by NVFP4 LSQ weights only' in str(e.value)
    # Blocks of 16 along the block axis.
    cfg = qi.TrainableQuantizerWeightsConfig(QM.NVFP4, 4, {"block_axis": 1}, True, 0, True)
    with pytest.raises(ValueError) as e:
        torch_quantizer("LSQFloatWeightQATQuantizer", cfg, rand((4, 24), 12))
    assert "NVFP4 blocks hold 16 elements, but the weight has 24 elements along block_axis 1" \
        in str(e.value)
    # Given block scales must fit the weight's (channel, block) pairs.
    cfg = qi.TrainableQuantizerWeightsConfig(QM.NVFP4, 4, {"block_axis": 1,
                                                           "block_scale": [0.1, 0.2, 0.3]},
                                             True, 0, True)
    with pytest.raises(ValueError) as e:
        torch_quantizer("LSQFloatWeightQATQuantizer", cfg, rand((4, 32), 13))
    assert "block_scale holds 3 values but the tensor has 8 (channel, block) pairs" in str(e.value)
