# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Per-group granularity (group_size, group_axis) of the weights quantizers: bit-exact with the
equivalent per-channel computation on the reshaped weight (and with torch's
fake_quantize_per_channel_affine for symmetric grids), ragged last groups, every layout, the
front ends, JSON, wrappers and ONNX; bad arguments."""

import io

import numpy as np
import pytest

import quantizers_infrastructure as qi

torch = pytest.importorskip("torch")


def weight(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * np.exp2(rng.uniform(-3, 3, shape[:1] + (1,) *
                                                            (len(shape) - 1)))).astype(np.float32)


def thresholds(count, seed):
    return (np.exp2(np.random.default_rng(seed).uniform(-4, 3, count))).tolist()


def bits_equal(a, b):
    np.testing.assert_array_equal(np.asarray(a).view(np.int32), np.asarray(b).view(np.int32))


@pytest.mark.parametrize("num_bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("group_size", [8, 32, 128])
def test_symmetric_groups_equal_torch_per_channel_on_the_reshaped_weight(num_bits, group_size,
                                                                        parity_stats):
    out, groups = 12, 4
    w = weight((out, groups * group_size), num_bits)
    t = thresholds(out * groups, group_size)
    q = qi.WeightsSymmetricInferableQuantizer(num_bits, t, True, 0, group_size=group_size,
                                              group_axis=1)
    y = q(w)
    # Each (row, group) is a channel of the [out * groups, group_size] reshape.
    flat = torch.from_numpy(w.reshape(out * groups, group_size))
    scale = torch.tensor(np.float32(np.array(t) / 2 ** (num_bits - 1)))
    want = torch.fake_quantize_per_channel_affine(
        flat, scale, torch.zeros(out * groups, dtype=torch.int32), 0, -2 ** (num_bits - 1),
        2 ** (num_bits - 1) - 1)
    bits_equal(y, want.numpy().reshape(w.shape))
    per_channel = qi.WeightsSymmetricInferableQuantizer(num_bits, t, True, 0)
    bits_equal(y, per_channel(flat.numpy()).reshape(w.shape))
    parity_stats.add("per-group symmetric vs torch per-channel on the reshape", y.size, 0)


@pytest.mark.parametrize("profile", ["torch", "tf"])
@pytest.mark.parametrize("num_bits", [2, 4, 8])
def test_uniform_groups_equal_per_channel_on_the_reshaped_weight(profile, num_bits):
    out, groups, k = 6, 5, 16
    w = weight((out, groups * k), 3)
    rng = np.random.default_rng(num_bits)
    lo = (-rng.uniform(0.1, 2, out * groups)).tolist()
    hi = rng.uniform(0.1, 2, out * groups).tolist()
    q = qi.WeightsUniformInferableQuantizer(num_bits, lo, hi, True, 0, profile=profile,
                                            group_size=k)
    ref = qi.WeightsUniformInferableQuantizer(num_bits, lo, hi, True, 0, profile=profile)
    bits_equal(q(w), ref(w.reshape(out * groups, k)).reshape(w.shape))


@pytest.mark.parametrize("fmt", ["E4M3", "E5M2", "E2M1"])
def test_float_groups_equal_per_channel_on_the_reshaped_weight(fmt):
    out, groups, k = 5, 3, 32
    w = weight((out, groups * k), 4)
    s = thresholds(out * groups, 5)
    q = qi.WeightsFloatInferableQuantizer(fmt, s, True, 0, group_size=k, group_axis=-1)
    ref = qi.WeightsFloatInferableQuantizer(fmt, s, True, 0)
    bits_equal(q(w), ref(w.reshape(out * groups, k)).reshape(w.shape))


def test_ragged_last_group_and_per_tensor_groups():
    # [6, 37] in groups of 8 along axis 1: groups of 8, 8, 8, 8 and 5 per row.
    w = weight((6, 37), 6)
    t = np.array(thresholds(6 * 5, 7)).reshape(6, 5)
    q = qi.WeightsSymmetricInferableQuantizer(4, t.reshape(-1), True, 0, group_size=8,
                                              group_axis=1)
    y = q(w)
    for g in range(5):
        part = qi.WeightsSymmetricInferableQuantizer(4, t[:, g].tolist(), True, 0)
        bits_equal(y[:, 8 * g:8 * g + 8], part(np.ascontiguousarray(w[:, 8 * g:8 * g + 8])))
    # No channel axis: groups along the last axis of every row share the group's value.
    v = weight((3, 10), 8)
    p = qi.WeightsSymmetricInferableQuantizer(8, [0.5, 1.0, 2.0, 4.0], False, group_size=3)
    yv = p(v)
    for g, t_g in enumerate([0.5, 1.0, 2.0, 4.0]):
        one = qi.WeightsSymmetricInferableQuantizer(8, [t_g], False)
        bits_equal(yv[:, 3 * g:3 * g + 3], one(np.ascontiguousarray(v[:, 3 * g:3 * g + 3])))


def test_layouts_agree():
    """[out, in] grouped along in equals the transposed [in, out] (Keras Dense) with the channel
    axis last and the groups along axis 0; and a conv weight's groups along in."""
    w = weight((8, 40), 9)
    t = thresholds(8 * 5, 10)
    a = qi.WeightsUniformInferableQuantizer(4, [-x for x in t], t, True, 0, group_size=8,
                                            group_axis=1)
    b = qi.WeightsUniformInferableQuantizer(4, [-x for x in t], t, True, -1, group_size=8,
                                            group_axis=0)
    bits_equal(a(w), b(np.ascontiguousarray(w.T)).T)
    bits_equal(a(w), b(w.T).T)  # a strided view
    conv = weight((4, 12, 3, 3), 11)
    tc = thresholds(4 * 3, 12)
    c = qi.WeightsSymmetricInferableQuantizer(8, tc, True, 0, group_size=4, group_axis=1)
    moved = np.ascontiguousarray(np.moveaxis(conv, 1, -1))  # [out, kh, kw, in]
    ref = qi.WeightsSymmetricInferableQuantizer(8, tc, True, 0, group_size=4, group_axis=-1)
    bits_equal(np.moveaxis(c(conv), 1, -1), ref(moved))


def test_front_ends_json_and_wrapper():
    w = weight((6, 64), 13)
    q = qi.WeightsSymmetricInferableQuantizer(4, thresholds(6 * 2, 14), True, 0, group_size=32,
                                              group_axis=1)
    assert q.group_size == 32 and q.group_axis == 1 and q.num_channels == 12
    config = q.get_config()
    assert config["group_size"] == 32 and config["group_axis"] == 1
    assert qi.quantizer_from_json(q.to_json()).get_config() == config
    y = q(w)
    bits_equal(q(torch.from_numpy(w)).numpy(), y)
    tf = pytest.importorskip("tensorflow")
    bits_equal(q(tf.constant(w)).numpy(), y)
    # Ungrouped quantizers say so.
    assert qi.WeightsSymmetricInferableQuantizer(8, [1.0], False).group_size is None
    # In a wrapper around a Linear layer, on its weight.
    linear = torch.nn.Linear(64, 6, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w))
    wrapped = qi.PytorchQuantizationWrapper(linear, {"weight": q})
    x = torch.randn(3, 64)
    with torch.no_grad():
        bits_equal(wrapped(x).numpy(), (x @ torch.from_numpy(y).T).numpy())


def test_onnx_custom_node_runs_in_onnxruntime(parity_stats):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from quantizers_infrastructure.pytorch import onnx as qonnx
    w = torch.from_numpy(weight((4, 3, 10), 15))
    cases = [
        qi.WeightsSymmetricInferableQuantizer(4, thresholds(4 * 4, 16), True, 0, group_size=3,
                                              group_axis=-1),
        qi.WeightsUniformInferableQuantizer(8, [-1.0] * 3, [2.0] * 3, False, group_size=4,
                                            group_axis=-1, profile="tf"),
        qi.WeightsFloatInferableQuantizer("E2M1", thresholds(4 * 3, 17), True, 0, group_size=1,
                                          group_axis=1),
    ]
    for q in cases:
        model = qi.PytorchQuantizationWrapper(torch.add, {1: q}, weight_values={1: w})
        x = torch.zeros(4, 3, 10)
        f = io.BytesIO()
        torch.onnx.export(model.eval(), (x,), f, opset_version=16, input_names=["input"],
                          output_names=["output"], dynamo=False)
        nodes = [n for n in onnx.load_from_string(f.getvalue()).graph.node
                 if n.domain == qonnx.DOMAIN]
        assert [n.op_type for n in nodes] == [qonnx.custom_op_spec(q)[0]]
        assert nodes[0].op_type.endswith(qonnx.GROUPED_SUFFIX)
        sess = ort.InferenceSession(f.getvalue(), qonnx.get_ort_session_options(),
                                    providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        bits_equal(got, want)
        parity_stats.add("per-group ONNX Runtime vs torch", got.size, 0)


@pytest.mark.parametrize("kwargs,message", [
    (dict(group_size=0), r"group_size must be in \[1, 2147483647\] \(or null: no groups\), got 0"),
    (dict(group_size=4, group_axis=0), "channel_axis 0 and group_axis 0 must be different axes"),
    (dict(group_size=4, group_axis=2, input_rank=2),
     r"group_axis must be in \[-2, 2\) for input_rank 2, got 2"),
    (dict(group_size=2.5), '"group_size" must be an integer'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        qi.WeightsSymmetricInferableQuantizer(8, [1.0, 1.0], True, 0, **kwargs)


def test_count_must_fit_the_tensor():
    q = qi.WeightsSymmetricInferableQuantizer(8, [1.0] * 5, True, 0, group_size=4, group_axis=1)
    with pytest.raises(ValueError, match=r"holds 5 values \(one per channel and group\) but the "
                                         r"tensor has 2 channels along channel_axis 0 x 3 groups "
                                         r"of up to 4 along group_axis 1 = 6"):
        q(np.zeros((2, 10), dtype=np.float32))
    with pytest.raises(ValueError, match="holds 5 values"):
        q(torch.zeros(2, 10))
