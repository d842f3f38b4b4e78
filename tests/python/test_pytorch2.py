# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""PyTorch 2: every qi op passes torch.library.opcheck (fake kernels, autograd registration,
AOT dispatch with dynamic shapes); wrapped models compile with fullgraph=True (inductor and
aot_eager, inference and a training step: no graph break, the eager bits, no recompilation per
batch size), export (strict and non-strict), export to ONNX with the dynamo exporter, trace with
TorchScript; float16/bfloat16/float64 and autocast; channels_last; quantizer state in the state
dict (weights_only loading, float checkpoints with strict=True, checks on load); ops registered
in a fresh process."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure import _core  # noqa: E402
from quantizers_infrastructure import pytorch as qp  # noqa: E402

QM, TM = qi.QuantizationMethod, qi.TrainingMethod
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPCHECK_SUITE = "torch.library.opcheck (op, arguments) cases passed"
FAMILIES = ("inferable", "STE", "LSQ", "SoftRounding")


def bits_equal(a, b) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


# ---- opcheck ----------------------------------------------------------------------------------

def _example(entry, channels):
    cls = qi.INFERABLE_QUANTIZER_CLASSES[entry["class_name"]]
    return cls.from_config(json.loads(_core.example_config(entry["class_name"], channels, 1)))


def opcheck_cases():
    """(id, op, args, kwargs) for every op and overload: per tensor and per channel, every
    method, with and without requires_grad."""
    torch.manual_seed(0)
    cases = []
    for entry in _core.inferable_quantizers():
        for channels in ((1, 3) if entry["target"] == "Weights" else (1,)):
            q = _example(entry, channels)
            # Block formats (MX, NVFP4) block the last axis: two whole blocks there.
            last = 2 * q.plan["group_size"] if q.plan["kind"] in ("mx", "nvfp4") else 4
            for grad in (False, True):
                x = (torch.randn(2, channels, last) * 2).requires_grad_(grad)
                tag = f"{entry['class_name']}-{channels}ch-{'grad' if grad else 'nograd'}"
                cases.append((f"fake_quant-{tag}", torch.ops.qi.fake_quant.default,
                              (x, q.to_json()), {}))
                cases.append((f"quantize-{tag}", torch.ops.qi.quantize.default,
                              (x, qp.plan_tensor(q), q.kernel_channel_axis,
                               q.kernel_input_rank), {}))
            x = torch.randn(2, channels, last) * 2
            cases.append((f"fake_quant.out-{entry['class_name']}-{channels}ch",
                          torch.ops.qi.fake_quant.out, (x, q.to_json()),
                          {"out": torch.empty_like(x)}))
            cases.append((f"quantize.out-{entry['class_name']}-{channels}ch",
                          torch.ops.qi.quantize.out,
                          (x, qp.plan_tensor(q), q.kernel_channel_axis, q.kernel_input_rank),
                          {"out": torch.empty_like(x)}))
    for mode in ("ste", "lsq"):
        for channels, axis in ((1, None), (3, 1)):
            for grad in (False, True):
                x = (torch.randn(2, 3, 5) * 2).requires_grad_(grad)
                t = torch.full((channels,), 1.5).requires_grad_(grad)
                lo = torch.full((channels,), -1.0).requires_grad_(grad)
                hi = torch.full((channels,), 2.0).requires_grad_(grad)
                tag = f"{mode}-{channels}ch-{'grad' if grad else 'nograd'}"
                cases.append((f"symmetric_quant-{tag}", torch.ops.qi.symmetric_quant.default,
                              (x, t, 4, True, axis, mode, 0.5),
                              {"grad_scale_axis": 1, "min_threshold": 2.0 ** -16,
                               "power_of_two": mode == "ste"}))
                cases.append((f"uniform_quant-{tag}", torch.ops.qi.uniform_quant.default,
                              (x, lo, hi, 4, axis, mode, 0.5, channels == 1),
                              {"grad_scale_axis": 1 if channels == 1 else None}))
            x, dy = torch.randn(2, 3, 5) * 2, torch.randn(2, 3, 5)
            t = torch.full((channels,), 1.5)
            lo, hi = torch.full((channels,), -1.0), torch.full((channels,), 2.0)
            cases.append((f"_symmetric_quant_backward-{mode}-{channels}ch",
                          torch.ops.qi._symmetric_quant_backward.default,
                          (dy, x, t, 4, True, axis, mode, 0.5, None, 0.0, False, True, True), {}))
            cases.append((f"_uniform_quant_backward-{mode}-{channels}ch",
                          torch.ops.qi._uniform_quant_backward.default,
                          (dy, x, lo, hi, 4, axis, mode, 0.5, False, None, True, True), {}))
    # The formats' op: each scaling once (unused parameters are empty tensors).
    none = torch.empty(0)
    for scaling, fmt, scale, ts, kw in (
            ("scale", "E4M3", torch.full((3,), 0.01), none, {}),
            ("fp8_scale", "E2M1", torch.full((6,), 0.2), torch.tensor([0.5]),
             {"group_size": 16, "group_axis": -1}),
            ("mx", "E2M1", torch.tensor([0.7]), none, {"group_size": 16, "group_axis": -1}),
            ("nvfp4", "E2M1", none, torch.tensor([0.01]), {"group_size": 16, "group_axis": -1})):
        axis = 1 if scaling in ("scale", "fp8_scale") else None
        for mode in ("ste", "lsq"):
            for grad in (False, True):
                x = (torch.randn(2, 3, 32) * 2).requires_grad_(grad)
                cases.append((f"format_quant-{scaling}-{mode}-{'grad' if grad else 'nograd'}",
                              torch.ops.qi.format_quant.default,
                              (x, scale.clone().requires_grad_(grad),
                               ts.clone().requires_grad_(grad), fmt, scaling, axis, mode, 0.5),
                              dict(kw)))
            cases.append((f"_format_quant_backward-{scaling}-{mode}",
                          torch.ops.qi._format_quant_backward.default,
                          (torch.randn(2, 3, 32), torch.randn(2, 3, 32) * 2, scale, ts, fmt,
                           scaling, axis, mode, 0.5, None, kw.get("group_size"),
                           kw.get("group_axis", -1), True, True), {}))
    for uniform in (False, True):
        for training in (True, False):
            for grad in (False, True):
                w = torch.randn(3, 4) * 0.3
                alpha = torch.randn(3, 4).requires_grad_(grad)
                p = torch.tensor([0.8, 0.4, 1.6]) if not uniform else torch.full((3,), -0.5)
                kw = {"max_range": torch.full((3,), 0.7)} if uniform else {}
                cases.append((f"soft_round-{'uni' if uniform else 'sym'}-{training}-{grad}",
                              torch.ops.qi.soft_round.default,
                              (w, alpha, p, 4, not uniform, 0, training), kw))
        cases.append((f"_soft_round_backward-{'uni' if uniform else 'sym'}",
                      torch.ops.qi._soft_round_backward.default,
                      (torch.randn(3, 4), torch.randn(3, 4),
                       torch.tensor([0.8, 0.4, 1.6]) if not uniform else torch.full((3,), -0.5),
                       4, False, 0, torch.full((3,), 0.7) if uniform else None), {}))
    for grad in (False, True):
        cases.append((f"soft_round_regularization-{grad}",
                      torch.ops.qi.soft_round_regularization.default,
                      (torch.randn(3, 4).requires_grad_(grad), 3.5), {}))
    cases.append(("_soft_round_regularization_backward",
                  torch.ops.qi._soft_round_regularization_backward.default,
                  (torch.tensor(1.5), torch.randn(3, 4), 3.5), {}))
    return cases


CASES = opcheck_cases()


@pytest.mark.parametrize("name,op,args,kwargs", CASES, ids=[c[0] for c in CASES])
def test_opcheck(name, op, args, kwargs, parity_stats):
    torch.library.opcheck(op, args, kwargs)
    parity_stats.add(OPCHECK_SUITE, 1, 0)


def test_opcheck_covers_every_op_and_overload():
    covered = {str(c[1]) for c in CASES}
    schemas = torch._C._dispatch_get_registrations_for_dispatch_key("CPU")
    ops = {s.split("::", 1)[1] for s in schemas if s.startswith("qi::")}
    expected = {f"qi.{o}" if "." in o else f"qi.{o}.default" for o in ops}
    assert expected <= covered, sorted(expected - covered)


# ---- models of each quantizer family ------------------------------------------------------------

def weights_cfg(method, channels):
    params = ({"range_min": np.full(channels, -0.4), "range_max": np.full(channels, 0.5)}
              if method == QM.UNIFORM else {"threshold": np.full(channels, 0.5)})
    return qi.TrainableQuantizerWeightsConfig(method, 4, params, True, 0, True)


def act_cfg(method):
    params = ({"range_min": -1.0, "range_max": 3.0} if method == QM.UNIFORM
              else {"threshold": 3.0, "is_signed": True})
    return qi.TrainableQuantizerActivationConfig(method, 8, params)


class Net(torch.nn.Module):
    """Conv (no bias) -> quantized output -> ReLU -> holder -> Linear, with the quantizers of
    one family (activations: STE for soft rounding, as GPTQ uses)."""

    def __init__(self, family: str):
        super().__init__()
        torch.manual_seed(4)
        conv, fc = torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.Linear(4 * 6 * 6, 5, bias=False)
        if family == "inferable":
            wq = qi.WeightsSymmetricInferableQuantizer(4, [0.5] * 4, True, 0)
            fq = qi.WeightsUniformInferableQuantizer(6, [-0.2] * 5, [0.15] * 5, True, 0)
            aq = qi.ActivationUniformInferableQuantizer(8, [-1.0], [3.0])
            hq = qi.ActivationPOTInferableQuantizer(8, [4.0], False)
        else:
            tm = TM(family)
            act_tm = TM.STE if tm == TM.SoftRounding else tm
            wq = qp.get_trainable_quantizer_class(qi.QuantizationTarget.Weights, QM.SYMMETRIC,
                                                  tm)(weights_cfg(QM.SYMMETRIC, 4))
            fq = qp.get_trainable_quantizer_class(qi.QuantizationTarget.Weights, QM.UNIFORM,
                                                  tm)(weights_cfg(QM.UNIFORM, 5))
            aq = qp.get_trainable_quantizer_class(qi.QuantizationTarget.Activation, QM.UNIFORM,
                                                  act_tm)(act_cfg(QM.UNIFORM))
            hq = qp.get_trainable_quantizer_class(qi.QuantizationTarget.Activation,
                                                  QM.POWER_OF_TWO, act_tm)(act_cfg(QM.POWER_OF_TWO))
        self.conv = qi.PytorchQuantizationWrapper(conv, qi.PytorchNodeQuantizationDispatcher(wq, [aq]))
        self.act = qi.PytorchActivationQuantizationHolder(hq)
        self.fc = qi.PytorchQuantizationWrapper(fc, fq)

    def forward(self, x):
        x = self.act(torch.relu(self.conv(x)))
        return self.fc(torch.flatten(x, 1))


def _inputs(batch=2, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 8, 8, generator=g) * 1.5


def _step(model, x):
    """Output and every trainable gradient of one step on L = sum(y * w)."""
    model.zero_grad(set_to_none=True)
    y = model(x)
    w = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    (y * w).sum().backward()
    return y.detach(), {n.replace("_orig_mod.", ""): p.grad.detach().clone()
                        for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("family", FAMILIES)
def test_compile_fullgraph_matches_eager(family, backend):
    torch.compiler.reset()
    model = Net(family)
    x = _inputs()
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    # Inference.
    model.eval()
    with torch.no_grad():
        assert bits_equal(compiled(x), model(x))
    # A training step: outputs and gradients.
    model.train()
    y_eager, g_eager = _step(model, x)
    y_comp, g_comp = _step(compiled, x)
    assert bits_equal(y_comp, y_eager)
    assert set(g_comp) == set(g_eager) and g_eager
    for name in g_eager:
        assert bits_equal(g_comp[name], g_eager[name]), name


def test_compile_does_not_recompile_for_every_batch_size():
    torch.compiler.reset()
    counts = {"compiles": 0}

    def counting_backend(gm, example_inputs):
        counts["compiles"] += 1
        return gm.forward

    model = Net("LSQ").eval()
    compiled = torch.compile(model, fullgraph=True, backend=counting_backend)
    with torch.no_grad():
        for batch in (2, 3, 4, 5, 7):
            x = _inputs(batch)
            assert bits_equal(compiled(x), model(x))
    assert counts["compiles"] <= 2, counts  # static, then one dynamic-batch graph


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_export_matches_eager(family, strict):
    model = Net(family).eval()
    x = _inputs()
    with torch.no_grad():
        y = model(x)
    program = torch.export.export(model, (x,), strict=strict)
    assert bits_equal(program.module()(x), y)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    buf.seek(0)
    assert bits_equal(torch.export.load(buf).module()(x), y)


@pytest.mark.parametrize("family", FAMILIES)
def test_torchscript_trace_matches_eager(family):
    model = Net(family).eval()
    x = _inputs()
    with torch.no_grad():
        y = model(x)
        traced = torch.jit.trace(model, x)
    assert bits_equal(traced(x), y)


@pytest.mark.parametrize("custom", [False, True])
def test_onnx_dynamo_export_runs_in_onnxruntime(custom, parity_stats):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from quantizers_infrastructure.pytorch import onnx as qonnx
    model = Net("inferable").eval()
    model.out = qi.PytorchActivationQuantizationHolder(
        qi.ActivationLutPOTInferableQuantizer(4, [-8, -2, 0, 3, 7], [2.0], True))
    forward = model.forward
    model.forward = lambda x: model.out(forward(x))
    x = _inputs()
    with torch.no_grad():
        y = model(x).numpy()
    with qonnx.custom_ops(custom):
        program = torch.onnx.export(model, (x,), dynamo=True,
                                    custom_translation_table=qonnx.translation_table())
    nodes = [(n.domain, n.op_type) for n in program.model_proto.graph.node]
    custom_nodes = [t for d, t in nodes if d == qonnx.DOMAIN]
    if custom:
        assert custom_nodes == ["WeightsSymmetricQuantizer", "ActivationUniformQuantizer",
                                "ActivationPOTQuantizer", "WeightsUniformQuantizer",
                                "ActivationLutPOTQuantizer"]
    else:  # QDQ where the grid fits (8-bit affine), custom nodes otherwise
        assert custom_nodes == ["WeightsSymmetricQuantizer", "WeightsUniformQuantizer",
                                "ActivationLutPOTQuantizer"]
        assert ("", "DequantizeLinear") in nodes
    sess = ort.InferenceSession(program.model_proto.SerializeToString(),
                                qonnx.get_ort_session_options(),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    mismatches = int(np.sum(got != y))
    parity_stats.add("onnx dynamo exporter (ORT vs torch)", got.size, mismatches)
    assert mismatches == 0


@pytest.mark.parametrize("family", ["STE", "LSQ", "SoftRounding"])
def test_onnx_dynamo_export_of_a_trainable_model_asks_for_conversion(family):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from quantizers_infrastructure.pytorch import onnx as qonnx
    model, x = Net(family).eval(), _inputs()
    with pytest.raises(Exception, match=r"trainable quantizer, which has no ONNX form: call "
                                        r"convert_to_inferable_quantizers\(\)"):
        torch.onnx.export(model, (x,), dynamo=True,
                          custom_translation_table=qonnx.translation_table())
    with torch.no_grad():
        y = model(x).numpy()
    for m in (model.conv, model.act, model.fc):
        m.convert_to_inferable_quantizers()
    program = torch.onnx.export(model, (x,), dynamo=True,
                                custom_translation_table=qonnx.translation_table())
    sess = ort.InferenceSession(program.model_proto.SerializeToString(),
                                qonnx.get_ort_session_options(),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    # The quantizer nodes are exact (the test above); ORT's Conv and Gemm may sum in another
    # order than torch's, which moves the model's output by an ULP here and there.
    np.testing.assert_allclose(got, y, rtol=1e-6, atol=1e-6)


# ---- dtypes, autocast, memory format --------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_match_torch_fake_quantize_and_keep_the_dtype(dtype, parity_stats):
    torch.manual_seed(8)
    q = qi.WeightsSymmetricInferableQuantizer(8, [2.0, 1.0, 4.0], True, 0)
    x = torch.randn(3, 4000) * 3
    x[:, :500] = (torch.randint(-200, 200, (3, 500)) + 0.5) * torch.tensor(q.scale)[:, None]
    xd = x.to(dtype).requires_grad_(True)
    y = q(xd)
    ref = torch.fake_quantize_per_channel_affine(
        xd.detach(), torch.tensor(q.scale), torch.zeros(3, dtype=torch.int32), 0, -128, 127)
    assert y.dtype == dtype and bits_equal(y, ref)
    y.sum().backward()
    assert xd.grad.dtype == dtype
    parity_stats.add("torch fake_quantize parity, float16/bfloat16/float64", y.numel(), 0)
    # The trainable ops: outputs and gradients in the input's and the parameters' dtypes.
    t = torch.tensor([1.5], dtype=dtype, requires_grad=True)
    xs = x[0].to(dtype).requires_grad_(True)
    ys = torch.ops.qi.symmetric_quant(xs, t, 4, True, None, "lsq", 0.5)
    assert ys.dtype == dtype
    ys.sum().backward()
    assert xs.grad.dtype == dtype and t.grad.dtype == dtype
    assert bits_equal(ys.detach(), torch.ops.qi.symmetric_quant(
        xs.detach().float(), t.detach().float(), 4, True, None, "lsq", 0.5).to(dtype))
    alpha = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    ws = (torch.randn(3, 4) * 0.3).to(dtype)
    yr = torch.ops.qi.soft_round(ws, alpha, torch.tensor([0.8, 0.4, 1.6]), 4, False, 0, True)
    assert yr.dtype == dtype
    yr.sum().backward()
    assert alpha.grad.dtype == dtype


@pytest.mark.parametrize("family", ["inferable", "LSQ"])
def test_autocast_regions(family):
    model = Net(family)
    x = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
        y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_channels_last_stays_channels_last():
    model = Net("inferable").eval()
    x = _inputs().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model.conv(x)
        z = model.act(y)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert z.is_contiguous(memory_format=torch.channels_last) and z.stride() == y.stride()
    assert bits_equal(z.contiguous(), model.act(y.contiguous()))


# ---- checkpoints ----------------------------------------------------------------------------------

def _state_bytes(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("family", FAMILIES)
def test_state_dict_holds_every_quantizer_and_reloads_exactly(family):
    model = Net(family).eval()
    if family == "inferable":  # other quantizer parameters than a fresh model's
        model.conv.weights_quantizers["weight"] = qi.WeightsSymmetricInferableQuantizer(
            4, [0.25, 0.5, 1.0, 2.0], True, 0)
        model.conv.set_extra_state(model.conv.get_extra_state())  # same record, new buffers
        model.conv._bind("weight", model.conv.weights_quantizers["weight"], None)
    x = _inputs()
    with torch.no_grad():
        y = model(x)
    state = model.state_dict()
    assert {"conv._extra_state", "act._extra_state", "fc._extra_state", "conv.weight",
            "fc.weight"} <= set(state)
    loaded = torch.load(_state_bytes(state))  # weights_only=True, torch's default
    fresh = Net(family).eval()
    fresh.load_state_dict(loaded)
    with torch.no_grad():
        assert bits_equal(fresh(x), y)


def test_float_checkpoint_loads_strictly_into_the_wrapped_model():
    torch.manual_seed(6)
    float_model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                      torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    wrapped = torch.nn.Sequential(
        qi.PytorchQuantizationWrapper(torch.nn.Conv2d(3, 4, 3),
                                      qi.WeightsSymmetricInferableQuantizer(8, [0.5] * 4, True, 0)),
        torch.nn.ReLU(), torch.nn.Flatten(),
        qi.PytorchQuantizationWrapper(torch.nn.Linear(4 * 6 * 6, 5), qp.LSQWeightQATQuantizer(
            weights_cfg(QM.SYMMETRIC, 5))))
    assert set(float_model.state_dict()) <= set(wrapped.state_dict())
    result = wrapped.load_state_dict(float_model.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(wrapped[0].weight, float_model[0].weight)
    # Quantized checkpoints must be complete: a missing quantizer record is reported.
    state = wrapped.state_dict()
    del state["0._extra_state"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"0._extra_state\""):
        wrapped.load_state_dict(state, strict=True)


def test_quantizer_records_are_checked_on_load():
    model = Net("inferable")
    state = model.state_dict()
    record = json.loads(bytes(state["conv._extra_state"].numpy()).decode())
    edited = dict(record, quantizers=record["quantizers"].replace("0.5", "0.75"))
    bad = dict(state)
    bad["conv._extra_state"] = torch.frombuffer(bytearray(json.dumps(edited).encode()),
                                                dtype=torch.uint8)
    with pytest.raises(ValueError, match="does not match its checksum"):
        Net("inferable").load_state_dict(bad)
    bad["conv._extra_state"] = torch.zeros(3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="not one qi wrote"):
        Net("inferable").load_state_dict(bad)
    # A record that does not fit the model (another family) is refused by name.
    with pytest.raises(ValueError, match="the state dict's weight quantizer 'weight' is a "
                                         "WeightsSymmetricInferableQuantizer"):
        Net("LSQ").load_state_dict(state, strict=False)
    # A per-channel quantizer that does not fit the weight fails at load, not at the forward.
    other = qi.PytorchQuantizationWrapper(torch.nn.Conv2d(3, 4, 3),
                                          qi.WeightsSymmetricInferableQuantizer(4, [0.5], False))
    wide = qi.PytorchQuantizationWrapper(torch.nn.Conv2d(3, 6, 3),
                                         qi.WeightsSymmetricInferableQuantizer(4, [0.5] * 6, True, 0))
    sd = dict(other.state_dict())
    sd["_extra_state"] = wide.get_extra_state()
    with pytest.raises(ValueError, match="holds 6 per-channel values but the tensor has 4"):
        other.load_state_dict(sd)


@pytest.mark.parametrize("family", FAMILIES)
def test_whole_model_loads_with_weights_only_and_safe_globals(family):
    model = Net(family).eval()
    x = _inputs()
    with torch.no_grad():
        y = model(x)
    data = _state_bytes(model).getvalue()
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(io.BytesIO(data))
    allowed = qp.safe_globals() + [Net, torch.nn.Conv2d, torch.nn.Linear, set]
    with torch.serialization.safe_globals(allowed):
        loaded = torch.load(io.BytesIO(data))
    with torch.no_grad():
        assert bits_equal(loaded(x), y)


# ---- ops registered in a fresh process ----------------------------------------------------------

def test_fresh_process_loads_traced_and_exported_models(tmp_path):
    model = Net("inferable").eval()
    x = _inputs()
    with torch.no_grad():
        y = model(x)
        torch.jit.trace(model, x).save(str(tmp_path / "traced.pt"))
    torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "exported.pt2"))
    torch.save({"x": x, "y": y}, str(tmp_path / "io.pt"))
    # Importing qi (before or after torch) is all a fresh process needs.
    for imports in ("import quantizers_infrastructure; import torch",
                    "import torch; import quantizers_infrastructure"):
        code = (f"{imports}\n"
                f"d = torch.load({str(tmp_path / 'io.pt')!r})\n"
                f"a = torch.jit.load({str(tmp_path / 'traced.pt')!r})(d['x'])\n"
                f"b = torch.export.load({str(tmp_path / 'exported.pt2')!r}).module()(d['x'])\n"
                f"print(torch.equal(a, d['y']), torch.equal(b, d['y']))\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.strip().endswith("True True"), r.stdout
