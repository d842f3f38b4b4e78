# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Per-group trainable weights quantizers (STE and LSQ; symmetric, power-of-two and uniform):
the ops' group_size and group_axis (forward and gradients equal to the per-channel op on the
reshaped weight bit for bit, gradients against a float64 autograd reference, ragged last groups,
strided views), the PyTorch and Keras classes (training moves the per-group parameters; the eval
output equals the converted inferable per-group quantizer bit for bit) and the bad inputs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure import pytorch as qp  # noqa: E402

QM, VG = qi.QuantizationMethod, qi.VariableGroup


def bits_equal(a, b):
    a = np.ascontiguousarray(np.asarray(a, np.float32))
    b = np.ascontiguousarray(np.asarray(b, np.float32))
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))


def weight(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 0.4).astype(np.float32)


def expand(p, rows, groups, k, size):
    """Per-(row, group) values [rows * groups] as a [rows, size] tensor (ragged last group)."""
    return p.reshape(rows, groups).repeat_interleave(k, dim=1)[:, :size]


def reference(x, params, method, n, mode, grad_scale, k):
    """The grouped fake quantizer of a [rows, size] x in float64 autograd, as the ops define it:
    q = a + s * clamp(round((x - a) / s), qmin, qmax) per (row, group) with offset a and step s,
    ste_round with ste_clip (STE) or a hard clip (LSQ), and the gradient scale on s."""
    rows, size = x.shape
    groups = (size + k - 1) // k
    if method == QM.UNIFORM:
        lo, hi = params
        # The torch-profile range adjustment as MCT's differentiable version computes it (the
        # rounded zero point carries no gradient).
        levels = 2 ** n - 1
        s0 = (hi - lo) / levels
        a = s0 * torch.round(lo / s0).detach()
        s = (hi - lo) / levels
        qmin, qmax = 0.0, float(levels)
    else:
        s = params[0] / 2 ** (n - 1)
        a = torch.zeros_like(s)
        qmin, qmax = -2.0 ** (n - 1), 2.0 ** (n - 1) - 1
    s = s * grad_scale + (s - s * grad_scale).detach()  # the op scales s's gradient in both modes
    s, a = expand(s, rows, groups, k, size), expand(a, rows, groups, k, size)
    v = (x - a) / s
    r = v + (torch.round(v) - v).detach()
    if mode == "ste":
        c = r + (torch.clamp(r, qmin, qmax) - r).detach()
    else:
        c = torch.clamp(r, qmin, qmax)
    return a + s * c


def op_call(method, x, params, n, mode, grad_scale, k, axis=1, channel_axis=0, **kw):
    if method == QM.UNIFORM:
        return torch.ops.qi.uniform_quant(x, params[0], params[1], n, channel_axis, mode,
                                          grad_scale, False, group_size=k, group_axis=axis, **kw)
    return torch.ops.qi.symmetric_quant(x, params[0], n, True, channel_axis, mode, grad_scale,
                                        min_threshold=0.0, group_size=k, group_axis=axis, **kw)


def op_params(method, count, seed):
    rng = np.random.default_rng(seed)
    if method == QM.UNIFORM:
        return [torch.tensor(-rng.uniform(0.3, 1.0, count), dtype=torch.float32),
                torch.tensor(rng.uniform(0.3, 1.0, count), dtype=torch.float32)]
    return [torch.tensor(rng.uniform(0.3, 1.2, count), dtype=torch.float32)]


@pytest.mark.parametrize("method", [QM.SYMMETRIC, QM.UNIFORM])
@pytest.mark.parametrize("mode", ["ste", "lsq"])
@pytest.mark.parametrize("num_bits", [2, 4, 8])
def test_op_equals_per_channel_op_on_the_reshape(method, mode, num_bits):
    rows, groups, k = 5, 4, 8
    w = torch.from_numpy(weight((rows, groups * k), num_bits)).requires_grad_(True)
    p = [v.requires_grad_(True) for v in op_params(method, rows * groups, num_bits)]
    dy = torch.from_numpy(weight((rows, groups * k), 7))
    y = op_call(method, w, p, num_bits, mode, 0.25, k)
    (y * dy).sum().backward()
    w2 = w.detach().clone().reshape(rows * groups, k).requires_grad_(True)
    p2 = [v.detach().clone().requires_grad_(True) for v in p]
    if method == QM.UNIFORM:
        y2 = torch.ops.qi.uniform_quant(w2, p2[0], p2[1], num_bits, 0, mode, 0.25, False)
    else:
        y2 = torch.ops.qi.symmetric_quant(w2, p2[0], num_bits, True, 0, mode, 0.25)
    (y2 * dy.reshape(rows * groups, k)).sum().backward()
    bits_equal(y.detach(), y2.detach().reshape(rows, groups * k))
    bits_equal(w.grad, w2.grad.reshape(rows, groups * k))
    for a, b in zip(p, p2):
        bits_equal(a.grad, b.grad)


@pytest.mark.parametrize("method", [QM.SYMMETRIC, QM.UNIFORM])
@pytest.mark.parametrize("mode", ["ste", "lsq"])
@pytest.mark.parametrize("size,k", [(37, 8), (32, 32), (5, 8), (64, 1)])
def test_gradients_against_float64_autograd(method, mode, size, k):
    rows, n, gs = 3, 4, 0.3
    groups = (size + k - 1) // k
    x = torch.from_numpy(weight((rows, size), size + k)).requires_grad_(True)
    p = [v.requires_grad_(True) for v in op_params(method, rows * groups, size)]
    dy = torch.from_numpy(weight((rows, size), 11))
    y = op_call(method, x, p, n, mode, gs, k)
    (y * dy).sum().backward()
    x64 = x.detach().double().requires_grad_(True)
    p64 = [v.detach().double().requires_grad_(True) for v in p]
    y64 = reference(x64, p64, method, n, mode, gs, k)
    (y64 * dy.double()).sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), y64.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(x.grad.numpy(), x64.grad.numpy(), rtol=1e-6, atol=1e-7)
    for a, b in zip(p, p64):
        assert a.grad.shape == a.shape
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-5, atol=1e-6)
        assert np.any(a.grad.numpy() != 0)


def test_op_layouts_group_axis_first_and_strided_views():
    # A Keras-style kernel [in, out]: channels along 1, groups along 0, gives the values and
    # input gradients of the [out, in] weight bit for bit; the parameter gradients sum the same
    # terms in another order (rows of the group are contiguous in one layout only). A strided
    # view of the kernel gives the kernel's bits.
    w = torch.from_numpy(weight((6, 20), 3))
    t = op_params(QM.SYMMETRIC, 6 * 3, 4)[0]
    a = w.clone().requires_grad_(True)
    ta = t.clone().requires_grad_(True)
    ya = torch.ops.qi.symmetric_quant(a, ta, 4, True, 0, "lsq", 1.0, group_size=8, group_axis=1)
    ya.sum().backward()
    b = w.t().contiguous().requires_grad_(True)
    tb = t.clone().requires_grad_(True)
    yb = torch.ops.qi.symmetric_quant(b, tb, 4, True, 1, "lsq", 1.0, group_size=8, group_axis=0)
    yb.sum().backward()
    bits_equal(ya.detach(), yb.detach().t())
    bits_equal(a.grad, b.grad.t())
    np.testing.assert_allclose(ta.grad.numpy(), tb.grad.numpy(), rtol=1e-6)
    c = w.t().requires_grad_(True)  # non-contiguous
    tc = t.clone().requires_grad_(True)
    yc = torch.ops.qi.symmetric_quant(c, tc, 4, True, 1, "lsq", 1.0, group_size=8, group_axis=0)
    yc.sum().backward()
    bits_equal(yc.detach(), yb.detach())
    bits_equal(tc.grad, tb.grad)
    # Per-tensor groups (no channel axis): one value per group.
    d = w.clone().requires_grad_(True)
    td = op_params(QM.SYMMETRIC, 3, 5)[0].requires_grad_(True)
    yd = torch.ops.qi.symmetric_quant(d, td, 4, True, None, "lsq", 1.0, group_size=8,
                                      group_axis=1)
    inferable = qi.WeightsSymmetricInferableQuantizer(4, td.detach().tolist(), False,
                                                      group_size=8, group_axis=1)
    bits_equal(yd.detach(), inferable(w.numpy()))


def test_op_errors():
    w = torch.randn(4, 10)
    t = torch.ones(12)
    with pytest.raises(ValueError, match=r"qi::symmetric_quant: group_size must be >= 1 \(or "
                                         r"None: no groups\), got 0"):
        torch.ops.qi.symmetric_quant(w, t, 4, True, 0, "ste", 1.0, group_size=0)
    with pytest.raises(ValueError, match=r"qi::symmetric_quant: the quantizer holds 8 values "
                                         r"\(one per channel and group\) but the tensor has 4 "
                                         r"channels along channel_axis 0 x 3 groups"):
        torch.ops.qi.symmetric_quant(w, torch.ones(8), 4, True, 0, "ste", 1.0, group_size=4)
    with pytest.raises(ValueError, match="qi::uniform_quant: channel_axis 1 and group_axis -1 "
                                         "are the same axis"):
        torch.ops.qi.uniform_quant(w, -t, t, 4, 1, "ste", 1.0, False, group_size=4)
    with pytest.raises(ValueError, match=r"qi::uniform_quant: group_axis must be in \[-2, 2\)"):
        torch.ops.qi.uniform_quant(w, -t, t, 4, 0, "ste", 1.0, False, group_size=4, group_axis=2)
    with pytest.raises(ValueError, match="qi::_symmetric_quant_backward: group_size must be >= 1"):
        torch.ops.qi._symmetric_quant_backward(w, w, t, 4, True, 0, "lsq", 1.0, None, 0.0, False,
                                               True, True, group_size=-2)


# ---- the trainable classes ----------------------------------------------------------------------

def wcfg(method, count, k, axis=-1, per_channel=True, channel_axis=0, seed=0, n=4):
    rng = np.random.default_rng(seed)
    if method == QM.UNIFORM:
        params = {"range_min": -rng.uniform(0.3, 0.8, count),
                  "range_max": rng.uniform(0.3, 0.8, count)}
    else:
        params = {"threshold": rng.uniform(0.3, 1.0, count)}
    params.update({"group_size": k, "group_axis": axis})
    return qi.TrainableQuantizerWeightsConfig(method, n, params, True, channel_axis, per_channel)


CLASS_CASES = [(name, m, pc) for name, ms in [
    ("STEWeightQATQuantizer", [QM.POWER_OF_TWO, QM.SYMMETRIC]),
    ("LSQWeightQATQuantizer", [QM.POWER_OF_TWO, QM.SYMMETRIC]),
    ("STEUniformWeightQATQuantizer", [QM.UNIFORM]),
    ("LSQUniformWeightQATQuantizer", [QM.UNIFORM]),
] for m in ms for pc in (True, False)]


@pytest.mark.parametrize("name,method,per_channel", CLASS_CASES,
                         ids=[f"{c}-{m.name}-{'pc' if p else 'pt'}" for c, m, p in CLASS_CASES])
def test_pytorch_classes_train_and_convert_bit_exact(name, method, per_channel):
    torch.manual_seed(3)
    out, inp, k = 6, 40, 16  # groups of 16, 16 and 8 (ragged)
    groups = 3
    count = out * groups if per_channel else groups
    q = getattr(qp, name)(wcfg(method, count, k, per_channel=per_channel, seed=len(name)))
    layer = torch.nn.Linear(inp, out)
    wrapper = qi.PytorchQuantizationWrapper(layer, q)
    variables = dict(wrapper.named_parameters(recurse=False))
    for v in (["weight_min", "weight_max"] if method == QM.UNIFORM
              else ["weight_ptq_threshold_tensor"]):
        assert variables[v].shape == (count,)
    lsq = name.startswith("LSQ")
    learned = q.get_trainable_variables(VG.QPARAMS)
    assert len(learned) == ((2 if method == QM.UNIFORM else 1) if lsq else 0)
    before = [v.detach().clone() for v in learned]
    opt = torch.optim.SGD([p for p in wrapper.parameters() if p.requires_grad], lr=0.05)
    x = torch.randn(8, inp)
    wrapper.train()
    for _ in range(3):
        opt.zero_grad()
        (wrapper(x) ** 2).mean().backward()
        opt.step()
    for b, v in zip(before, learned):
        assert not torch.equal(b, v.detach())  # every group's parameters can move
    wrapper.eval()
    w = wrapper.weight.detach().clone()
    with torch.no_grad():
        q_eval = q(w, False)
        y_eval = wrapper(x)
    inferable = q.convert2inferable()
    cfg = inferable.get_config()
    assert cfg["group_size"] == k and cfg["group_axis"] == -1
    bits_equal(inferable(w), q_eval)
    # The same quantizer built directly from the trained values.
    values = {n: p.detach().numpy() for n, p in variables.items()}
    if method == QM.UNIFORM:
        lo, hi = values["weight_min"].tolist(), values["weight_max"].tolist()
        # the trained range as the op uses it: ordered ends
        direct = qi.WeightsUniformInferableQuantizer(
            4, np.minimum(lo, hi).tolist(), np.maximum(lo, hi).tolist(), per_channel,
            0 if per_channel else None, group_size=k)
    else:
        direct = type(inferable)(4, [float(v) for v in cfg["threshold"]], per_channel,
                                 0 if per_channel else None, group_size=k)
    bits_equal(direct(w), q_eval)
    wrapper.convert_to_inferable_quantizers()
    with torch.no_grad():
        bits_equal(wrapper(x), y_eval)


def test_pot_thresholds_stay_powers_of_two_per_group():
    q = qp.STEWeightQATQuantizer(wcfg(QM.POWER_OF_TWO, 4 * 2, 5))
    wrapper = qi.PytorchQuantizationWrapper(torch.nn.Linear(10, 4), q)
    t = wrapper.weight_ptq_threshold_tensor.detach().numpy()
    np.testing.assert_array_equal(np.exp2(np.round(np.log2(t))), t)
    inferable = q.convert2inferable()
    assert isinstance(inferable, qi.WeightsPOTInferableQuantizer)
    bits_equal(inferable(wrapper.weight.detach()), q(wrapper.weight.detach(), False))


def test_one_value_broadcasts_to_every_group():
    cfg = qi.TrainableQuantizerWeightsConfig(QM.SYMMETRIC, 4, {"threshold": 0.7, "group_size": 4,
                                                               "group_axis": 1}, True, 0, True)
    wrapper = qi.PytorchQuantizationWrapper(torch.nn.Linear(12, 5), qp.LSQWeightQATQuantizer(cfg))
    t = wrapper.weight_ptq_threshold_tensor
    assert t.shape == (15,) and torch.all(t == np.float32(0.7))


def test_json_round_trip_keeps_the_groups():
    q = qp.LSQUniformWeightQATQuantizer(wcfg(QM.UNIFORM, 6, 8, axis=1))
    back = qp.trainable_quantizer_from_json(q.to_json())
    assert back.get_config() == q.get_config()
    params = back.get_config()["quantization_config"]["weights_quantization_params"]
    assert params["group_size"] == 8 and params["group_axis"] == 1


def test_class_errors():
    def wrap(cfg, cls=qp.STEWeightQATQuantizer, shape=(4, 10)):
        return qi.PytorchQuantizationWrapper(torch.nn.Linear(shape[1], shape[0]), cls(cfg))

    def cfg_with(params, per_channel=True, axis=0, method=QM.SYMMETRIC):
        return qi.TrainableQuantizerWeightsConfig(method, 4, params, True, axis, per_channel)

    with pytest.raises(ValueError, match=r'STEWeightQATQuantizer: "group_size" must be in '
                                         r'\[1, 2147483647\], got 0'):
        qp.STEWeightQATQuantizer(cfg_with({"threshold": 1.0, "group_size": 0}))
    with pytest.raises(ValueError, match='LSQWeightQATQuantizer: quantization params: '
                                         '"group_size" must be an integer, got 2.5'):
        qp.LSQWeightQATQuantizer(cfg_with({"threshold": 1.0, "group_size": 2.5}))
    with pytest.raises(ValueError, match='"group_axis" is given without "group_size"'):
        qp.STEWeightQATQuantizer(cfg_with({"threshold": 1.0, "group_axis": 1}))
    with pytest.raises(ValueError, match='STESymmetricActivationTrainableQuantizer: "group_size" '
                                         'is taken by the weights STE and LSQ quantizers only'):
        qp.STESymmetricActivationTrainableQuantizer(qi.TrainableQuantizerActivationConfig(
            QM.SYMMETRIC, 8, {"threshold": 1.0, "group_size": 4}))
    with pytest.raises(ValueError, match='SymmetricSoftRoundingGPTQ: "group_size" is taken by '
                                         'the weights STE and LSQ quantizers only'):
        qp.SymmetricSoftRoundingGPTQ(cfg_with({"threshold": 1.0, "group_size": 4}))
    with pytest.raises(ValueError, match=r"STEWeightQATQuantizer: threshold holds 8 values but "
                                         r"the tensor has 12 \(channel, group\) pairs"):
        wrap(cfg_with({"threshold": np.ones(8), "group_size": 4}))
    with pytest.raises(ValueError, match=r"LSQUniformWeightQATQuantizer: range_min holds 4 values "
                                         r"but the tensor has 3 \(channel, group\) pairs"):
        wrap(cfg_with({"range_min": -np.ones(4), "range_max": np.ones(4), "group_size": 4},
                      per_channel=False, method=QM.UNIFORM), qp.LSQUniformWeightQATQuantizer)
    with pytest.raises(ValueError, match='STEWeightQATQuantizer: weights_channels_axis 1 and '
                                         '"group_axis" -1 are the same axis of a weight of rank 2'):
        wrap(cfg_with({"threshold": 1.0, "group_size": 4}, axis=1))
    with pytest.raises(ValueError, match=r'STEWeightQATQuantizer: "group_axis" must be in '
                                         r'\[-2, 2\) for a weight of rank 2, got 3'):
        wrap(cfg_with({"threshold": 1.0, "group_size": 4, "group_axis": 3}))


@pytest.mark.parametrize("name,method", [("STEWeightQATQuantizer", QM.SYMMETRIC),
                                         ("LSQWeightQATQuantizer", QM.POWER_OF_TWO),
                                         ("LSQUniformWeightQATQuantizer", QM.UNIFORM)])
def test_keras_dense_equals_pytorch_linear(name, method):
    """A Keras Dense kernel [in, out] grouped along axis 0 (channels -1) and the PyTorch Linear
    weight [out, in] grouped along axis 1 (channels 0) hold the same (channel, group) layout:
    the same values, parameter gradients and converted quantizer."""
    tf = pytest.importorskip("tensorflow")
    from quantizers_infrastructure import keras as qk
    out, inp, k = 5, 20, 8  # groups of 8, 8 and 4
    w = weight((out, inp), 13)
    dy = weight((out, inp), 14)
    pt = getattr(qp, name)(wcfg(method, out * 3, k, axis=1, channel_axis=0, seed=2))
    module = torch.nn.Module()
    wt = torch.nn.Parameter(torch.from_numpy(w.copy()))
    module.register_parameter("weight", wt)
    pt.initialize_quantization(wt.shape, "weight", module)
    y_pt = pt(wt, True)
    (y_pt * torch.from_numpy(dy)).sum().backward()
    kq = getattr(qk, name)(wcfg(method, out * 3, k, axis=0, channel_axis=-1, seed=2))
    layer = tf.keras.layers.Layer()
    layer.kernel = tf.Variable(w.T.copy())
    kq.initialize_quantization(w.T.shape, "kernel", layer)
    variables = {n: p["var"] for n, p in kq.quantizer_parameters.items()}
    with tf.GradientTape() as tape:
        y_k = kq(layer.kernel, training=True)
        loss = tf.reduce_sum(y_k * dy.T)
    grads = tape.gradient(loss, list(variables.values()))
    bits_equal(y_k.numpy().T, y_pt.detach())
    for (n, v), g in zip(variables.items(), grads):
        ref = pt.quantizer_parameters[n]["var"]
        bits_equal(v.numpy(), ref.detach())
        if name.startswith("LSQ"):
            np.testing.assert_allclose(g.numpy(), ref.grad.numpy(), rtol=1e-5, atol=1e-8)
        else:
            assert ref.grad is None and (g is None or not np.any(g.numpy()))
    conv_k = kq.convert2inferable()
    conv_pt = pt.convert2inferable()
    ck, cp = conv_k.get_config(), conv_pt.get_config()
    assert ck["group_axis"] == 0 and cp["group_axis"] == 1
    bits_equal(np.asarray(conv_k(w.T)).T, conv_pt(torch.from_numpy(w)))
