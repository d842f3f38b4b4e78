# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""PyTorch trainable quantizers (STE, LSQ, soft rounding), their configs and lookup: variables
on the wrapper, gradients through the qi ops, eval output bit-identical to the converted
inferable quantizer (before and after training steps), wrapper/holder conversion, and the
configs' JSON (the C++ configs' keys)."""

import io
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure import pytorch as qp  # noqa: E402

QM, QT, TM, VG = qi.QuantizationMethod, qi.QuantizationTarget, qi.TrainingMethod, qi.VariableGroup


def bits_equal(a, b):
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.int32),
                                              b.contiguous().view(torch.int32))


def wcfg(method, n=4, per_channel=True, axis=0, c=6):
    if method == QM.UNIFORM:
        params = {"range_min": np.linspace(-0.4, -0.2, c if per_channel else 1),
                  "range_max": np.linspace(0.25, 0.5, c if per_channel else 1)}
    else:
        t = np.linspace(0.3, 0.6, c if per_channel else 1).reshape(-1, 1, 1, 1)
        params = {"threshold": t}
    return qi.TrainableQuantizerWeightsConfig(method, n, params, True, axis, per_channel,
                                              2.0 ** -16)


def acfg(method, n=8, signed=True):
    params = ({"range_min": -1.3, "range_max": 2.1} if method == QM.UNIFORM
              else {"threshold": 3.0, "is_signed": signed})
    return qi.TrainableQuantizerActivationConfig(method, n, params, True, 2.0 ** -16)


EXPECTED_CLASSES = [
    (QT.Weights, QM.POWER_OF_TWO, TM.STE, "STEWeightQATQuantizer"),
    (QT.Weights, QM.SYMMETRIC, TM.STE, "STEWeightQATQuantizer"),
    (QT.Weights, QM.UNIFORM, TM.STE, "STEUniformWeightQATQuantizer"),
    (QT.Weights, QM.POWER_OF_TWO, TM.LSQ, "LSQWeightQATQuantizer"),
    (QT.Weights, QM.SYMMETRIC, TM.LSQ, "LSQWeightQATQuantizer"),
    (QT.Weights, QM.UNIFORM, TM.LSQ, "LSQUniformWeightQATQuantizer"),
    (QT.Activation, QM.POWER_OF_TWO, TM.STE, "STESymmetricActivationTrainableQuantizer"),
    (QT.Activation, QM.SYMMETRIC, TM.STE, "STESymmetricActivationTrainableQuantizer"),
    (QT.Activation, QM.UNIFORM, TM.STE, "STEUniformActivationTrainableQuantizer"),
    (QT.Activation, QM.POWER_OF_TWO, TM.LSQ, "LSQSymmetricActivationTrainableQuantizer"),
    (QT.Activation, QM.SYMMETRIC, TM.LSQ, "LSQSymmetricActivationTrainableQuantizer"),
    (QT.Activation, QM.UNIFORM, TM.LSQ, "LSQUniformActivationTrainableQuantizer"),
    (QT.Weights, QM.POWER_OF_TWO, TM.SoftRounding, "SymmetricSoftRoundingGPTQ"),
    (QT.Weights, QM.SYMMETRIC, TM.SoftRounding, "SymmetricSoftRoundingGPTQ"),
    (QT.Weights, QM.UNIFORM, TM.SoftRounding, "UniformSoftRoundingGPTQ"),
] + [(target, method, tm, f"{tm.name}Float{kind}")
     for method in (QM.FLOAT, QM.MX, QM.NVFP4) for tm in (TM.STE, TM.LSQ)
     for target, kind in ((QT.Weights, "WeightQATQuantizer"),
                          (QT.Activation, "ActivationTrainableQuantizer"))]


@pytest.mark.parametrize("target,method,tm,name", EXPECTED_CLASSES)
def test_lookup(target, method, tm, name):
    assert qp.get_trainable_quantizer_class(target, method, tm).__name__ == name


def test_lookup_errors_and_class_list():
    assert len(qp.TRAINABLE_QUANTIZER_CLASSES) == 14
    with pytest.raises(ValueError, match="found 0 trainable quantizers for target Activation, "
                                         "method UNIFORM and training method SoftRounding"):
        qp.get_trainable_quantizer_class(QT.Activation, QM.UNIFORM, TM.SoftRounding)
    with pytest.raises(ValueError, match="found 0"):
        qp.get_trainable_quantizer_class(QT.Weights, QM.LUT_POT_QUANTIZER, TM.STE)


def test_constructor_checks():
    with pytest.raises(ValueError, match="expected weight quantization configuration; received "
                                         "activation quantization instead"):
        qp.STEWeightQATQuantizer(acfg(QM.SYMMETRIC))
    with pytest.raises(ValueError, match="expected activation quantization configuration"):
        qp.LSQUniformActivationTrainableQuantizer(wcfg(QM.UNIFORM))
    with pytest.raises(ValueError, match="Quantization method mismatch"):
        qp.STEWeightQATQuantizer(wcfg(QM.UNIFORM))
    with pytest.raises(ValueError, match='quantization params must hold "threshold"'):
        qp.STEWeightQATQuantizer(qi.TrainableQuantizerWeightsConfig(QM.SYMMETRIC, 8, {}))
    with pytest.raises(ValueError, match="threshold holds 6 values but the tensor has 3 channels"):
        qi.PytorchQuantizationWrapper(torch.nn.Conv2d(1, 3, 2), qp.STEWeightQATQuantizer(
            wcfg(QM.SYMMETRIC)))


# ---- weights ------------------------------------------------------------------------------------

WEIGHT_CASES = [(cls, m, pc) for cls, ms in [
    ("STEWeightQATQuantizer", [QM.POWER_OF_TWO, QM.SYMMETRIC]),
    ("LSQWeightQATQuantizer", [QM.POWER_OF_TWO, QM.SYMMETRIC]),
    ("STEUniformWeightQATQuantizer", [QM.UNIFORM]),
    ("LSQUniformWeightQATQuantizer", [QM.UNIFORM]),
    ("SymmetricSoftRoundingGPTQ", [QM.POWER_OF_TWO, QM.SYMMETRIC]),
    ("UniformSoftRoundingGPTQ", [QM.UNIFORM]),
] for m in ms for pc in (True, False)]


@pytest.mark.parametrize("name,method,per_channel", WEIGHT_CASES,
                         ids=[f"{c}-{m.name}-{'pc' if p else 'pt'}" for c, m, p in WEIGHT_CASES])
def test_weights_trainable(name, method, per_channel):
    torch.manual_seed(5)
    cls = getattr(qp, name)
    q = cls(wcfg(method, per_channel=per_channel))
    conv = torch.nn.Conv2d(3, 6, 3)
    with torch.no_grad():
        conv.weight.mul_(2.0)
    wrapper = qi.PytorchQuantizationWrapper(conv, q)
    x = torch.randn(2, 3, 6, 6)
    names = {n for n, _ in wrapper.named_parameters(recurse=False)}
    soft = "SoftRounding" in name
    assert names == {f"weight_{s}" for s in (
        ["auxvar_tensor"] + (["min", "max"] if method == QM.UNIFORM else ["ptq_threshold"])
        if soft else (["min", "max"] if method == QM.UNIFORM else ["ptq_threshold_tensor"]))}
    lsq = name.startswith("LSQ")
    assert len(q.get_trainable_variables(VG.QPARAMS)) == (
        (2 if method == QM.UNIFORM else 1) if lsq else 0)
    assert len(q.get_trainable_variables(VG.WEIGHTS)) == (1 if soft else 0)

    # a few training steps move the learnable variables
    params = [p for p in wrapper.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05)
    wrapper.train()
    for _ in range(3):
        opt.zero_grad()
        loss = (wrapper(x) ** 2).mean()
        loss.backward()
        for v in q.get_trainable_variables(VG.QPARAMS) + q.get_trainable_variables(VG.WEIGHTS):
            assert v.grad is not None and torch.isfinite(v.grad).all()
        opt.step()

    # eval output == converted inferable quantizer, bit for bit
    wrapper.eval()
    w = wrapper.weight.detach().clone()
    with torch.no_grad():
        q_eval = q(w, False)
        y_eval = wrapper(x)
    inferable = q.convert2inferable()
    assert isinstance(inferable, qi.InferableQuantizer)
    assert inferable.quantization_method == [
        QM.UNIFORM if method == QM.UNIFORM else method]
    if soft:  # hard-rounded weights are fixed points of the converted quantizer
        assert bits_equal(inferable(q_eval), q_eval)
    else:
        assert bits_equal(inferable(w), q_eval)
    wrapper.convert_to_inferable_quantizers()
    assert {n for n, _ in wrapper.named_parameters(recurse=False)} == set()
    assert set(wrapper.state_dict()) == {"weight", "bias", "_extra_state"}
    assert wrapper.weights_quantizers["weight"].get_config() == inferable.get_config()
    with torch.no_grad():
        assert bits_equal(wrapper(x), y_eval)
        buf = io.BytesIO()
        torch.save(wrapper, buf)
        buf.seek(0)
        assert bits_equal(torch.load(buf, weights_only=False)(x), y_eval)


def test_soft_rounding_starts_at_the_float_weight():
    # As in mct-quantizers: right after wrapping, training output ~ float kernel; eval differs.
    cfg = qi.TrainableQuantizerWeightsConfig(QM.SYMMETRIC, 8, {"threshold": 2.0}, True, 0, False)
    conv = torch.nn.Conv2d(1, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.1, -0.3, 0.67]).reshape(3, 1, 1, 1))
    wrapper = qi.PytorchQuantizationWrapper(conv, qp.SymmetricSoftRoundingGPTQ(cfg))
    x = torch.ones(1, 1, 1, 1)
    w = wrapper.weight.detach()
    q = wrapper.weights_quantizers["weight"]
    assert torch.allclose(q(w, True), w, atol=1e-6)
    assert not torch.equal(q(w, False), w)
    reg = qp.SoftRoundingRegularization(total_steps=10)
    r = reg([q], entropy_reg=0.01)
    assert r.requires_grad and r.item() > 0 and reg.step == 1
    r.backward()
    assert q.get_trainable_variables(VG.WEIGHTS)[0].grad is not None
    assert wrapper(x).shape == (1, 3, 1, 1)


# ---- activations --------------------------------------------------------------------------------

ACT_CASES = [(c, m, s) for c, ms in [
    ("STESymmetricActivationTrainableQuantizer", [QM.POWER_OF_TWO, QM.SYMMETRIC]),
    ("LSQSymmetricActivationTrainableQuantizer", [QM.POWER_OF_TWO, QM.SYMMETRIC]),
    ("STEUniformActivationTrainableQuantizer", [QM.UNIFORM]),
    ("LSQUniformActivationTrainableQuantizer", [QM.UNIFORM]),
] for m in ms for s in ((True, False) if m != QM.UNIFORM else (True,))]


@pytest.mark.parametrize("name,method,signed", ACT_CASES,
                         ids=[f"{c}-{m.name}-{s}" for c, m, s in ACT_CASES])
def test_activation_trainable(name, method, signed):
    torch.manual_seed(6)
    q = getattr(qp, name)(acfg(method, signed=signed))
    holder = qi.PytorchActivationQuantizationHolder(q)
    prefix = "activation_holder_quantizer_"
    expected = ({prefix + "min", prefix + "max"} if method == QM.UNIFORM
                else {prefix + "ptq_threshold_tensor"})
    assert {n for n, _ in holder.named_parameters()} == expected
    x = torch.randn(4, 3, 5) * 2.5
    opt = torch.optim.SGD(holder.parameters(), lr=0.1)
    holder.train()
    for _ in range(3):
        opt.zero_grad()
        ((holder(x) - x * 0.9) ** 2).mean().backward()
        assert all(p.grad is not None for p in holder.parameters())
        opt.step()
    holder.eval()
    with torch.no_grad():
        y = holder(x)
    inferable = q.convert2inferable()
    assert bits_equal(inferable(x), y)
    holder.convert_to_inferable_quantizers()
    assert list(holder.parameters()) == []
    assert bits_equal(holder(x), y)
    # in a wrapper, as the output quantizer
    q2 = getattr(qp, name)(acfg(method, signed=signed))
    wrapper = qi.PytorchQuantizationWrapper(torch.nn.Linear(5, 4), activation_quantizers=[q2])
    assert any(n.startswith("tensor0_") for n, _ in wrapper.named_parameters())
    wrapper.eval()
    with torch.no_grad():
        y2 = wrapper(x)
    wrapper.convert_to_inferable_quantizers()
    assert bits_equal(wrapper(x), y2)


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_quant_params(freeze):
    for q in (qp.STESymmetricActivationTrainableQuantizer(acfg(QM.POWER_OF_TWO), freeze),
              qp.STEUniformActivationTrainableQuantizer(acfg(QM.UNIFORM), freeze)):
        qi.PytorchActivationQuantizationHolder(q)
        for v in q.quantizer_parameters.values():
            assert v["var"].requires_grad == (not freeze)
        if freeze:
            assert q.get_trainable_variables(VG.QPARAMS) == []
        else:
            assert len(q.get_trainable_variables(VG.QPARAMS)) >= 1


# ---- configs --------------------------------------------------------------------------------------

CPP_WEIGHTS_KEYS = {"weights_quantization_method", "weights_n_bits", "weights_quantization_params",
                    "enable_weights_quantization", "weights_channels_axis",
                    "weights_per_channel_threshold", "min_threshold", "weights_bits_candidates",
                    "is_weights", "is_activations", "qi_version"}
CPP_ACTIVATION_KEYS = {"activation_quantization_method", "activation_n_bits",
                       "activation_quantization_params", "enable_activation_quantization",
                       "min_threshold", "activation_bits_candidates", "is_weights",
                       "is_activations", "qi_version"}


def test_config_json():
    cfg = wcfg(QM.POWER_OF_TWO)
    c = cfg.get_config()
    assert set(c) == CPP_WEIGHTS_KEYS
    assert c["weights_quantization_method"] == "POWER_OF_TWO"
    assert c["weights_quantization_params"]["threshold"]["shape"] == [6, 1, 1, 1]
    assert qi.TrainableQuantizerWeightsConfig.from_config(json.dumps(c)) == cfg
    a = acfg(QM.SYMMETRIC)
    assert set(a.get_config()) == CPP_ACTIVATION_KEYS
    assert qi.TrainableQuantizerActivationConfig.from_config(a.get_config()) == a
    # MCT's integer method value and nested lists are read too
    c2 = dict(c, weights_quantization_method=0,
              weights_quantization_params={"threshold": [[1.0], [2.0]]})
    cfg2 = qi.TrainableQuantizerWeightsConfig.from_config(c2)
    assert cfg2.weights_quantization_method == QM.POWER_OF_TWO
    assert cfg2.weights_quantization_params["threshold"].shape == (2, 1)
    cand = qi.TrainableQuantizerWeightsConfig(
        QM.SYMMETRIC, 8, {"threshold": 1.0},
        weights_quantization_candidates=[qi.TrainableQuantizerCandidateConfig(4, {"threshold": 1.0})])
    back = qi.TrainableQuantizerWeightsConfig.from_config(cand.get_config())
    assert back == cand and back.weights_bits_candidates[0].n_bits == 4
    # a trainable quantizer's config is {"quantization_config", "freeze_quant_params"}
    q = qp.LSQWeightQATQuantizer(cfg)
    j = json.loads(q.to_json())
    assert j["class_name"] == "LSQWeightQATQuantizer"
    assert set(j["config"]) == {"quantization_config", "freeze_quant_params"}
    q2 = qp.quantizer_from_json(q.to_json())
    assert type(q2) is qp.LSQWeightQATQuantizer and q2.quantization_config == cfg


def test_config_errors():
    W, A = qi.TrainableQuantizerWeightsConfig, qi.TrainableQuantizerActivationConfig
    with pytest.raises(ValueError, match=r"weights_n_bits must be in \[2, 16\] for SYMMETRIC "
                                         r"quantization, got 0"):
        W(QM.SYMMETRIC, 0, {})
    with pytest.raises(ValueError, match=r"min_threshold must be finite and >= 0, got -1"):
        A(QM.SYMMETRIC, 8, {}, True, -1.0)
    with pytest.raises(ValueError, match=r'weights_quantization_params\["threshold"\] must be '
                                         r'finite, got nan'):
        W(QM.SYMMETRIC, 8, {"threshold": float("nan")})
    with pytest.raises(ValueError, match='QuantizationMethod: unknown name "KMEANS"'):
        W("KMEANS", 8, {})
    with pytest.raises(ValueError, match="must be a QuantizationMethod, a method name or MCT's "
                                         "integer value, got float 2.5"):
        W(2.5, 8, {})
    with pytest.raises(ValueError, match='"is_weights" must be true in a weights quantization'):
        W.from_config(A().get_config())
    with pytest.raises(ValueError, match="unknown key"):
        W.from_config(dict(W().get_config(), extra=1))


# ---- float64 gradcheck of the smooth gradients --------------------------------------------------
# STE and LSQ gradients are surrogates of a staircase, so a numerical gradcheck is not defined
# for them (they are compared with plain-torch references instead); soft rounding's alpha
# gradient and its regularizer are smooth and pass torch.autograd.gradcheck in float64.

def test_gradcheck_soft_round_alpha_float64():
    import torch
    torch.manual_seed(0)
    # |w / delta| < 7: inside the grid, where the clip does not bind (MCT's ste_clip passes the
    # gradient through the clip, a surrogate a numerical check cannot confirm).
    w = torch.empty(3, 5, dtype=torch.float64).uniform_(-0.3, 0.3)
    alpha = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    # 4-bit grids with delta = threshold / 8 = 0.1, 0.05, 0.2.
    threshold = torch.tensor([0.8, 0.4, 1.6], dtype=torch.float32)

    def f(a):
        return torch.ops.qi.soft_round(w, a, threshold, 4, False, 0, True)

    assert torch.autograd.gradcheck(f, (alpha,), eps=1e-6, atol=1e-5)


def test_gradcheck_soft_round_regularization_float64():
    import torch
    torch.manual_seed(1)
    # Away from h(alpha) in {0, 0.5, 1}, where |2(h - 0.5)|^beta has a kink or the clip binds.
    alpha = (torch.rand(4, 6, dtype=torch.float64) * 1.5 + 0.3)
    alpha = (alpha * torch.where(torch.rand(4, 6) > 0.5, 1.0, -1.0).double()).requires_grad_()
    for beta in (2.0, 5.5, 20.0):
        assert torch.autograd.gradcheck(
            lambda a: torch.ops.qi.soft_round_regularization(a, beta), (alpha,), eps=1e-6,
            atol=1e-5)


def test_soft_round_rejects_mixed_dtypes():
    import torch
    w = torch.randn(2, 3, dtype=torch.float64)
    alpha = torch.randn(2, 3)
    with pytest.raises(ValueError, match="qi::soft_round: alpha must have dtype Double, got Float"):
        torch.ops.qi.soft_round(w, alpha, torch.tensor([0.8]), 4, False, None, True)


@pytest.mark.parametrize("op", ["symmetric", "uniform", "format"])
def test_ste_hands_on_its_contiguous_copy_of_an_expanded_gradient(op):
    """q(x).sum().backward() gives q an expanded (stride 0) upstream gradient; STE's backward
    copies it contiguously for the parameter sums and hands that copy on as dx, so autograd
    keeps it as x.grad (no second copy): dx has x's strides and the upstream values. Where x is
    laid out otherwise (a transposed view), dx is the upstream gradient itself."""
    x = torch.linspace(-1.2, 1.2, 24).reshape(4, 6).requires_grad_()
    p = torch.full((1,), 1.0, requires_grad=True)
    lo = torch.full((1,), -1.0, requires_grad=True)

    def q(v):
        if op == "symmetric":
            return torch.ops.qi.symmetric_quant(v, p, 8, True, None, "ste", 1.0)
        if op == "uniform":
            return torch.ops.qi.uniform_quant(v, lo, p, 8, None, "ste", 1.0, False)
        return torch.ops.qi.format_quant(v, p, torch.empty(0), "E4M3", "scale", None, "ste", 1.0)

    # The parameter's gradient is asked for too: that is when STE's backward runs its kernel.
    dx, dp = torch.autograd.grad(q(x).sum(), (x, p))
    assert dx.stride() == x.stride() and torch.equal(dx, torch.ones_like(x))
    xt = x.detach().t().requires_grad_()
    dxt, dpt = torch.autograd.grad(q(xt).sum(), (xt, p))
    assert dxt.stride() == (0, 0) and torch.equal(dxt, torch.ones_like(xt))
    assert torch.equal(dp, dpt)  # the same elements summed
