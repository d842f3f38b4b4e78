# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""ONNX opset 21 export (qp.onnx.export, qp.onnx.to_opset21): every format and bit width, weights
and activations, per tensor, channel and group (ragged groups too), run in ONNX Runtime and
compared bit for bit with PyTorch; onnx.checker on every file; bad arguments."""

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import quantizers_infrastructure as qi  # noqa: E402
import quantizers_infrastructure.pytorch as qp  # noqa: E402
from quantizers_infrastructure.pytorch import (  # noqa: E402
    PytorchActivationQuantizationHolder, PytorchQuantizationWrapper)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.onnx",
                                        "ignore::UserWarning")
T = onnx.TensorProto
NON_POT_SUITE = "ONNX opset 21 QuantizeLinear, integer scales not powers of two (ORT divides)"


def thresholds(count, seed):
    """Float32 values: custom nodes carry their parameters as float32 tensors."""
    return np.exp2(np.random.default_rng(seed).uniform(-3, 1, count)).astype(np.float32).tolist()


def ranges(count, seed):
    rng = np.random.default_rng(seed)
    return (-rng.uniform(0.1, 2, count)).tolist(), rng.uniform(0.1, 2, count).tolist()


def weight(shape, seed, step=None):
    """Normal values, a quarter of them replaced by exact half-steps of `step` (ties)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * 0.8).astype(np.float32)
    if step is not None:
        flat = w.reshape(-1)
        k = rng.integers(-40, 40, flat.size // 4)
        flat[: k.size] = ((k + 0.5) * step).astype(np.float32)
    return w


def storage(bits, signed):
    if bits == 4:
        return T.INT4 if signed else T.UINT4
    return T.INT8 if signed else T.UINT8


# (id, quantizer, weight shape, ONNX storage type or None for the custom node)
def weight_cases():
    cases = []
    for b in range(2, 9):
        lo, hi = ranges(6 * 3, b)
        cases += [
            (f"sym{b}_tensor", qi.WeightsSymmetricInferableQuantizer(b, [1.0], False),
             (6, 10), storage(b, True)),
            (f"sym{b}_channel", qi.WeightsSymmetricInferableQuantizer(b, thresholds(6, b), True,
                                                                     0), (6, 10), storage(b, True)),
            (f"sym{b}_group4_ragged", qi.WeightsSymmetricInferableQuantizer(
                b, thresholds(18, b), True, 0, group_size=4, group_axis=1), (6, 10),
             storage(b, True)),
            (f"uni{b}_channel", qi.WeightsUniformInferableQuantizer(b, lo[:6], hi[:6], True, 0),
             (6, 10), storage(b, False)),
            (f"uni{b}_group4_ragged", qi.WeightsUniformInferableQuantizer(
                b, lo, hi, True, 0, group_size=4, group_axis=1), (6, 10), storage(b, False)),
        ]
    cases += [
        ("pot4_conv_channel", qi.WeightsPOTInferableQuantizer(4, [0.5, 1.0, 2.0, 0.25], True, 0),
         (4, 3, 3, 3), T.INT4),
        ("sym8_channel_axis-1", qi.WeightsSymmetricInferableQuantizer(8, thresholds(3, 2), True,
                                                                      -1), (2, 5, 3), T.INT8),
        ("sym4_tensor_groups", qi.WeightsSymmetricInferableQuantizer(
            4, thresholds(4, 3), False, group_size=3, group_axis=-1), (4, 3, 10), T.INT4),
        ("sym4_group_axis0_channel_axis1", qi.WeightsSymmetricInferableQuantizer(
            4, thresholds(3 * 6, 4), True, 1, group_size=4, group_axis=0), (10, 6), T.INT4),
        ("sym3_conv_group2", qi.WeightsSymmetricInferableQuantizer(
            3, thresholds(4 * 2, 5), True, 0, group_size=2, group_axis=1), (4, 3, 3, 3),
         T.INT8),
    ]
    for fmt, onnx_type in (("E4M3", T.FLOAT8E4M3FN), ("E5M2", T.FLOAT8E5M2)):
        cases += [
            (f"{fmt}_tensor", qi.WeightsFloatInferableQuantizer(fmt, [0.01], False), (6, 10),
             onnx_type),
            (f"{fmt}_channel", qi.WeightsFloatInferableQuantizer(fmt, thresholds(6, 6), True, 0),
             (6, 10), onnx_type),
            (f"{fmt}_group4_ragged", qi.WeightsFloatInferableQuantizer(
                fmt, thresholds(18, 7), True, 0, group_size=4, group_axis=1), (6, 10), onnx_type),
        ]
    cases += [
        (f"{fmt}_channel_custom", qi.WeightsFloatInferableQuantizer(fmt, thresholds(6, 8), True,
                                                                    0), (6, 10), None)
        for fmt in ("E3M2", "E2M3", "E2M1")]
    cases += [
        ("E2M1_group_custom", qi.WeightsFloatInferableQuantizer(
            "E2M1", thresholds(18, 9), True, 0, group_size=4, group_axis=1), (6, 10), None),
        ("sym4_group_tf_custom", qi.WeightsSymmetricInferableQuantizer(
            4, thresholds(18, 10), True, 0, group_size=4, group_axis=1, profile="tf"), (6, 10),
         None),
        ("lut_custom", qi.WeightsLUTSymmetricInferableQuantizer(
            4, [-100, -20, -3, 0, 7, 30, 127], thresholds(6, 11), True, 0), (6, 10), None),
        ("nvfp4_custom", qi.WeightsNVFP4InferableQuantizer(0.002), (6, 32), None),
        ("nvfp4_none_custom", qi.WeightsNVFP4InferableQuantizer(), (6, 32), None),
    ]
    cases += [(f"mx_{fmt}_custom", qi.WeightsMXInferableQuantizer(fmt), (6, 64), None)
              for fmt in ("E4M3", "E5M2", "E3M2", "E2M3", "E2M1", "INT8")]
    return cases


def activation_cases():
    """(id, quantizer, storage type or None, whether ORT must equal torch bit for bit)."""
    cases = []
    for b in range(2, 9):
        pot = 2.0 ** (b % 3)  # power-of-two thresholds: power-of-two scales
        cases += [
            (f"sym{b}_signed", qi.ActivationSymmetricInferableQuantizer(b, [pot], True),
             storage(b, True), True),
            (f"sym{b}_unsigned", qi.ActivationSymmetricInferableQuantizer(b, [pot], False),
             storage(b, False), True),
            (f"pot{b}", qi.ActivationPOTInferableQuantizer(b, [4.0], True), storage(b, True), True),
            # scale 0.25, zero point 2^(b-2)
            (f"uni{b}_pot_scale", qi.ActivationUniformInferableQuantizer(
                b, [-0.25 * 2 ** (b - 2)], [0.25 * (2 ** b - 1 - 2 ** (b - 2))]),
             storage(b, False), True),
            (f"sym{b}_non_pot", qi.ActivationSymmetricInferableQuantizer(b, [3.0], True),
             storage(b, True), False),
            (f"uni{b}_non_pot", qi.ActivationUniformInferableQuantizer(b, [-1.0], [3.0]),
             storage(b, False), False),
        ]
    cases += [
        ("E4M3", qi.ActivationFloatInferableQuantizer("E4M3", 0.37), T.FLOAT8E4M3FN, True),
        ("E5M2", qi.ActivationFloatInferableQuantizer("E5M2", 3e-3), T.FLOAT8E5M2, True),
        ("E2M1_custom", qi.ActivationFloatInferableQuantizer("E2M1", 0.5), None, True),
        ("E3M2_custom", qi.ActivationFloatInferableQuantizer("E3M2", 0.5), None, True),
        ("mx_E4M3_custom", qi.ActivationMXInferableQuantizer("E4M3"), None, True),
        ("mx_E2M1_custom", qi.ActivationMXInferableQuantizer("E2M1"), None, True),
        ("nvfp4_custom", qi.ActivationNVFP4InferableQuantizer(0.01), None, True),
        ("sym8_tf_custom", qi.ActivationSymmetricInferableQuantizer(8, [2.0], True,
                                                                    profile="tf"), None, True),
        ("lut_custom", qi.ActivationLutPOTInferableQuantizer(4, [0, 5, 20, 100, 255], [4.0],
                                                             False), None, True),
    ]
    return cases


def _ids(cases):
    return [c[0] for c in cases]


def export(model, x, **kwargs):
    f = io.BytesIO()
    proto = qp.onnx.export(model.eval(), (x,), f, input_names=["input"], output_names=["output"],
                           **kwargs)
    assert onnx.load_from_string(f.getvalue()) == proto  # what was written is what is returned
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain == ""] == [21]
    assert all(n.domain != "qi_export" for n in proto.graph.node)
    return proto


def run(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(), qp.onnx.get_ort_session_options(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def mismatches(got, want):
    """Elements whose bits differ (NaN equals NaN: the formats keep NaN, not its payload)."""
    nan = np.isnan(got) & np.isnan(want)
    return int(np.sum(~nan & (got.view(np.int32) != want.view(np.int32))))


def initializer(proto, name):
    return next(t for t in proto.graph.initializer if t.name == name)


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "qdq"])
@pytest.mark.parametrize("name,q,shape,stored", weight_cases(), ids=_ids(weight_cases()))
def test_weights(name, q, shape, stored, fold, parity_stats):
    scale = q.plan.get("scale")
    step = None if scale is None or "sym" not in name else float(np.min(scale))
    w = torch.from_numpy(weight(shape, len(name), step))
    model = PytorchQuantizationWrapper(torch.add, {1: q}, weight_values={1: w})
    x = torch.zeros(shape)
    proto = export(model, x, fold_weights=fold)
    assert qp.onnx.export_kind(q, 21) == ("custom" if stored is None else "qdq")
    ops = [n.op_type for n in proto.graph.node]
    if stored is None:
        assert [n.domain for n in proto.graph.node] == [qp.onnx.DOMAIN, ""]
        assert ops[0] == qp.onnx.custom_op_spec(q)[0]
    elif fold:
        assert ops == ["DequantizeLinear", "Add"]
        assert initializer(proto, proto.graph.node[0].input[0]).data_type == stored
        assert not [t for t in proto.graph.initializer if t.data_type == T.FLOAT and
                    list(t.dims) == list(shape)]  # the float weight is gone
    else:
        narrow = stored in (T.INT8, T.UINT8) and q.num_bits < 8
        assert ops == ["QuantizeLinear"] + ["Clip"] * narrow + ["DequantizeLinear", "Add"]
    if stored is not None:
        dq = proto.graph.node[-2]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dq.attribute}
        assert initializer(proto, dq.input[2]).data_type == stored
        group = q.get_config().get("group_size")
        if group is not None:
            assert attrs["block_size"] == group
            assert attrs["axis"] == q.get_config()["group_axis"] % len(shape)
            dims = list(initializer(proto, dq.input[1]).dims)
            assert dims[attrs["axis"]] == -(-shape[attrs["axis"]] // group)
            assert len(dims) == len(shape)
    got = run(proto, x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_array_equal(want, q(w.numpy()))
    bad = mismatches(got, want)
    power_of_two = scale is None or np.all(np.log2(np.asarray(scale, np.float64)) % 1 == 0)
    if fold or power_of_two or stored is None or "E" in name[:2]:
        parity_stats.add("ONNX opset 21 weights (ORT vs torch)", got.size, bad)
        assert bad == 0
    else:
        # Unfolded integer weights with other scales: ORT's QuantizeLinear divides by the scale
        # where qi multiplies by its float32 reciprocal (see test_activations).
        np.testing.assert_array_equal(q(got), got)
        parity_stats.add(NON_POT_SUITE, got.size, bad)


def activation_values(q, n=4096, seed=0):
    """Values over and beyond the grid, exact half-steps of the affine grids, the float
    formats' ties, special values (floats: NaN, +-Inf, +-0, subnormals)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 3.0).astype(np.float32)
    plan = q.plan
    if plan["kind"] == "affine_torch":
        s = float(plan["scale"][0])
        k = rng.integers(-300, 300, n // 2)
        x[: n // 2] = ((k + 0.5) * s).astype(np.float32)
    elif plan["kind"] == "float":
        s = float(plan["scale"][0])
        x[: n // 2] = (rng.integers(-2000, 2000, n // 2) / 16.0 * s).astype(np.float32)
        x[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-42, 1e30]
    return x.reshape(4, -1)


@pytest.mark.parametrize("name,q,stored,exact", activation_cases(),
                         ids=_ids(activation_cases()))
def test_activations(name, q, stored, exact, parity_stats):
    model = PytorchActivationQuantizationHolder(q)
    x = activation_values(q)
    proto = export(model, torch.from_numpy(x))
    ops = [n.op_type for n in proto.graph.node]
    if stored is None:
        assert ops == [qp.onnx.custom_op_spec(q)[0]]
    else:
        narrow = stored in (T.INT8, T.UINT8) and q.num_bits < 8
        assert ops == ["QuantizeLinear"] + ["Clip"] * narrow + ["DequantizeLinear"]
        assert initializer(proto, proto.graph.node[0].input[2]).data_type == stored
    got = run(proto, x)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    bad = mismatches(got, want)
    if exact:
        parity_stats.add("ONNX opset 21 activations (ORT vs torch)", got.size, bad)
        assert bad == 0
        return
    # Integer grids with a scale that is not a power of two: ONNX's QuantizeLinear divides by
    # the scale, qi (as torch's fake_quantize) multiplies by its float32 reciprocal. ORT equals
    # the division formula bit for bit, and differs from torch only where the two quotients
    # round to different integers.
    plan = q.plan
    s, inv, zp = (np.float32(plan[k][0]) for k in ("scale", "inv_scale", "zero_point"))
    lo, hi = np.float32(plan["qmin"]), np.float32(plan["qmax"])
    by_division = np.clip(np.rint(x / s) + zp, lo, hi)
    by_reciprocal = np.clip(np.rint(x * inv) + zp, lo, hi)
    np.testing.assert_array_equal(got, (by_division - zp) * s)
    np.testing.assert_array_equal(want, (by_reciprocal - zp) * s)
    differ = by_division != by_reciprocal
    assert bad == int(np.sum(differ))
    parity_stats.add(NON_POT_SUITE, got.size, bad)


def test_model_with_groups_fp8_and_clip():
    """A small model: 4-bit per-group weights, FP8 weights, 3-bit and FP8 activations."""
    torch.manual_seed(0)
    w4 = qi.WeightsSymmetricInferableQuantizer(4, thresholds(18, 0), True, 0, group_size=4,
                                               group_axis=1)
    fp8 = qi.WeightsFloatInferableQuantizer("E4M3", thresholds(3, 1), True, 0)
    model = torch.nn.Sequential(
        PytorchActivationQuantizationHolder(qi.ActivationSymmetricInferableQuantizer(3, [4.0],
                                                                                     True)),
        PytorchQuantizationWrapper(torch.nn.Linear(10, 6), {"weight": w4}),
        torch.nn.ReLU(),
        PytorchQuantizationWrapper(torch.nn.Linear(6, 3), {"weight": fp8}),
        PytorchActivationQuantizationHolder(qi.ActivationFloatInferableQuantizer("E4M3", 0.01)))
    x = torch.randn(5, 10)
    proto = export(model, x, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    types = sorted(initializer(proto, n.input[0]).data_type for n in proto.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in
                   {t.name for t in proto.graph.initializer})
    assert types == sorted([T.INT4, T.FLOAT8E4M3FN])
    assert [n.op_type for n in proto.graph.node].count("Clip") == 1
    got = run(proto, x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    # The matrix products sum in another order than torch's: within one FP8 step.
    np.testing.assert_allclose(got, want, rtol=2 ** -3, atol=0.01 * 2 ** -9)


def test_custom_ops_switch_keeps_custom_nodes():
    q = qi.WeightsSymmetricInferableQuantizer(4, thresholds(18, 0), True, 0, group_size=4,
                                              group_axis=1)
    w = torch.from_numpy(weight((6, 10), 0))
    model = PytorchQuantizationWrapper(torch.add, {1: q}, weight_values={1: w})
    x = torch.zeros(6, 10)
    with qp.onnx.custom_ops():
        assert qp.onnx.export_kind(q, 21) == "custom"
        proto = export(model, x)
    assert [n.domain for n in proto.graph.node if n.op_type != "Constant"] == [qp.onnx.DOMAIN, ""]
    assert mismatches(run(proto, x.numpy()), q(w.numpy())) == 0


def test_qdq_parameters_per_opset():
    q4 = qi.WeightsSymmetricInferableQuantizer(4, [1.0], False)
    q8g = qi.WeightsSymmetricInferableQuantizer(8, [1.0, 2.0], False, group_size=4)
    fp8 = qi.ActivationFloatInferableQuantizer("E5M2", 0.5)
    for q in (q4, q8g, fp8):
        assert qp.onnx.qdq_parameters(q) is None and qp.onnx.export_kind(q, 20) == "custom"
    p = qp.onnx.qdq_parameters(q4, 21)
    assert (p["onnx_type"], p["clip"], p["block_size"]) == ("INT4", None, None)
    p = qp.onnx.qdq_parameters(q8g, 21)
    assert (p["onnx_type"], p["block_size"], p["group_axis"]) == ("INT8", 4, -1)
    np.testing.assert_array_equal(p["scale"], np.float32([1 / 128, 2 / 128]))
    p = qp.onnx.qdq_parameters(fp8, 21)
    assert (p["onnx_type"], p["zero_point"].tolist()) == ("FLOAT8E5M2", [0.0])
    p = qp.onnx.qdq_parameters(qi.ActivationSymmetricInferableQuantizer(6, [1.0], False), 21)
    assert (p["onnx_type"], p["clip"]) == ("UINT8", (0, 63))
    assert qp.onnx.qdq_parameters(qi.WeightsSymmetricInferableQuantizer(8, [1.0], False), 13)[
        "onnx_type"] == "INT8"


# ---- bad arguments ----

def _small_model():
    q = qi.WeightsSymmetricInferableQuantizer(4, [1.0] * 6, True, 0, group_size=4, group_axis=1)
    return PytorchQuantizationWrapper(torch.add, {1: q}, weight_values={
        1: torch.from_numpy(weight((2, 12), 0))}), torch.zeros(2, 12)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(opset_version=20), ValueError,
     r"qp.onnx.export: opset_version must be 21, got 20 \(torch.onnx.export writes opsets 13 to "
     r"20\)"),
    (dict(opset_version=True), ValueError, "opset_version must be 21, got True"),
    (dict(fold_weights=1), TypeError, "qp.onnx.export: fold_weights must be a bool, got int 1"),
    (dict(dynamo=True), ValueError,
     r"qp.onnx.export: dynamo is set by qp.onnx.export \(the TorchScript exporter\), got "
     r"dynamo=True"),
])
def test_export_bad_arguments(kwargs, error, message):
    model, x = _small_model()
    with pytest.raises(error, match=message):
        qp.onnx.export(model, (x,), None, **kwargs)


@pytest.mark.parametrize("opset", [12, 22, 2.0, True])
def test_opset_argument(opset):
    q = qi.WeightsSymmetricInferableQuantizer(8, [1.0], False)
    message = rf"qi ONNX export: opset must be an integer in \[13, 21\], got {opset!r}"
    with pytest.raises(ValueError, match=message):
        qp.onnx.qdq_parameters(q, opset)
    with pytest.raises(ValueError, match=message):
        qp.onnx.export_kind(q, opset)


def _temporary_model(attrs, shape=(2, 12), opset=20):
    """A graph x -> qi_export::QDQ -> y, as export's first step writes it."""
    node = onnx.helper.make_node("QDQ", ["input"], ["output"], domain="qi_export", name="n",
                                 **attrs)
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info(
        "input", T.FLOAT, list(shape))], [onnx.helper.make_tensor_value_info(
            "output", T.FLOAT, list(shape))])
    return onnx.helper.make_model(graph, opset_imports=[
        onnx.helper.make_opsetid("", opset), onnx.helper.make_opsetid("qi_export", 1)])


def test_to_opset21_bad_arguments():
    q = qi.WeightsSymmetricInferableQuantizer(4, [1.0] * 6, True, 0, group_size=4, group_axis=1)
    good = _temporary_model(dict(quantizer=q.to_json(), input_shape=[2, 12], input_rank=2))
    assert [n.op_type for n in qp.onnx.to_opset21(good).graph.node] == [
        "QuantizeLinear", "DequantizeLinear"]
    assert good.graph.node[0].domain == "qi_export"  # the argument is not modified
    with pytest.raises(TypeError, match="to_opset21: model_proto must be an onnx.ModelProto, "
                                        "got bytes"):
        qp.onnx.to_opset21(good.SerializeToString())
    with pytest.raises(TypeError, match="to_opset21: fold_weights must be a bool, got str 'no'"):
        qp.onnx.to_opset21(good, fold_weights="no")
    with pytest.raises(ValueError, match=r"to_opset21: the model's default-domain opset must be "
                                         r"in \[13, 21\], got 12"):
        qp.onnx.to_opset21(_temporary_model(dict(quantizer=q.to_json()), opset=12))
    with pytest.raises(ValueError, match=r"to_opset21: node 'n' \(qi_export::QDQ\) has no "
                                         r"quantizer attribute"):
        qp.onnx.to_opset21(_temporary_model(dict(input_rank=2)))
    with pytest.raises(ValueError, match="to_opset21: node 'n': a per-group quantizer needs a "
                                         r"static input shape, got \[-1, 12\]"):
        qp.onnx.to_opset21(_temporary_model(dict(quantizer=q.to_json(), input_shape=[-1, 12],
                                                 input_rank=2)))
    with pytest.raises(ValueError, match=r"to_opset21: node 'n': the quantizer has 6 values, the "
                                         r"input \[2, 8\] needs 2 channels x 2 groups of 4 = 4"):
        qp.onnx.to_opset21(_temporary_model(dict(quantizer=q.to_json(), input_shape=[2, 8],
                                                 input_rank=2), shape=(2, 8)))
    bad_op = _temporary_model(dict(quantizer=q.to_json()))
    bad_op.graph.node[0].op_type = "Other"
    with pytest.raises(ValueError, match="to_opset21: node 'n' of the domain qi_export must be "
                                         "a QDQ, got Other"):
        qp.onnx.to_opset21(bad_op)
    trainable = _temporary_model(dict(quantizer='{"class_name": "Nope", "config": {}}'))
    with pytest.raises(ValueError):
        qp.onnx.to_opset21(trainable)


def test_nan_weight_cannot_be_folded():
    q = qi.WeightsSymmetricInferableQuantizer(8, [1.0], False)
    w = torch.ones(2, 4)
    w[1, 2] = float("nan")
    model = PytorchQuantizationWrapper(torch.add, {1: q}, weight_values={1: w})
    with pytest.raises(ValueError, match=r"to_opset21: weight '.*': the quantized value nan at "
                                         r"flat index 6 is not a INT8 code times its scale; "
                                         r"export with fold_weights=False"):
        qp.onnx.export(model, (torch.zeros(2, 4),), None)
    proto = qp.onnx.export(model, (torch.zeros(2, 4),), None, fold_weights=False)
    assert [n.op_type for n in proto.graph.node] == ["QuantizeLinear", "DequantizeLinear", "Add"]
