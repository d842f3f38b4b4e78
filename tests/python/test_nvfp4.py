# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""NVFP4 (QuantizationMethod.NVFP4): E2M1 elements in blocks of 16 with FP8 E4M3 block scales and
an optional float32 tensor scale. torchao 0.11 has no NVFP4, so the reference is written here
from the format's definition (NVIDIA's two-level scaling, as later torchao releases implement
it): block scale amax / 6 (divided by the tensor scale), clamped to [2^-6, 448] and rounded to
E4M3; elements clamp(x / total, -6, 6) rounded to E2M1, times total = tensor scale x block scale.
The E4M3 and E2M1 roundings are torch's float8 cast and torchao's custom_fp_utils cast."""

import numpy as np
import pytest

import quantizers_infrastructure as qi

torch = pytest.importorskip("torch")


def e2m1(v):
    fp = pytest.importorskip("torchao.prototype.custom_fp_utils")
    return fp._floatx_unpacked_to_f32(fp._f32_to_floatx_unpacked(v.contiguous(), 2, 1), 2, 1)


def nvfp4_reference(x, tensor_scale, axis):
    xt = torch.movedim(x, axis, -1).contiguous()
    b = xt.reshape(-1, 16)
    block_scale = b.abs().amax(1) / 6.0
    if tensor_scale is None:
        total = torch.clamp(block_scale, 2.0 ** -6, 448.0).to(torch.float8_e4m3fn).float()
    else:
        ts = torch.tensor(tensor_scale, dtype=torch.float32)
        scaled = torch.clamp(block_scale / ts, 2.0 ** -6, 448.0)
        total = ts * scaled.to(torch.float8_e4m3fn).float()
    v = torch.clamp(b / total[:, None], -6.0, 6.0)
    y = e2m1(v) * total[:, None]
    y = torch.where(torch.isnan(total)[:, None], torch.tensor(float("nan")), y)
    return torch.movedim(y.reshape(xt.shape), -1, axis)


def data(rows, seed):
    """Blocks of 16 with magnitudes from 2^-30 to 2^30, zero blocks, ties, one outlier each."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 64)).astype(np.float32)
    x *= np.exp2(rng.uniform(-30, 30, (rows, 4, 1))).repeat(16, 2).reshape(rows, 64)
    x[::7, :16] = 0.0
    x[1::7, 16:32] = rng.integers(-12, 13, (len(x[1::7]), 16)) / 2  # E2M1 grid and ties
    x[2::7, 40] *= 1000.0
    return x


@pytest.mark.parametrize("tensor_scale", [None, 1.0, 0.02, 3.7e-5, 250.0])
def test_bit_exact_with_the_definition(tensor_scale, parity_stats):
    x = data(4000, 1)
    q = qi.WeightsNVFP4InferableQuantizer(tensor_scale)
    want = nvfp4_reference(torch.from_numpy(x), tensor_scale, -1).numpy()
    y = q(x)
    assert np.array_equal(y.view(np.int32), want.view(np.int32))
    parity_stats.add("NVFP4 vs the definition (torch e4m3 cast, torchao e2m1 cast)", y.size, 0)
    a = qi.ActivationNVFP4InferableQuantizer(tensor_scale)
    assert np.array_equal(a(x).view(np.int32), y.view(np.int32))
    assert np.array_equal(q(torch.from_numpy(x)).numpy().view(np.int32), y.view(np.int32))


def test_blocks_along_another_axis():
    x = data(48, 2)
    q = qi.WeightsNVFP4InferableQuantizer(0.01, block_axis=0)
    ref = qi.WeightsNVFP4InferableQuantizer(0.01, block_axis=-1)
    xt = np.ascontiguousarray(x.T)  # [64, 48]: blocks of 16 along axis 0
    assert np.array_equal(q(xt).view(np.int32), ref(x).T.view(np.int32))
    want = nvfp4_reference(torch.from_numpy(xt), 0.01, 0).numpy()
    assert np.array_equal(q(xt).view(np.int32), want.view(np.int32))


def test_special_values():
    q = qi.ActivationNVFP4InferableQuantizer(None)
    x = np.zeros(48, dtype=np.float32)
    x[0], x[1] = np.nan, 1.0            # a NaN makes the block NaN
    x[16], x[17], x[18] = 6.0, 3.0, -0.0  # scale 1: the E2M1 grid itself
    x[32:48] = -0.0
    y = q(x)
    assert np.isnan(y[:16]).all()
    assert y[16] == 6.0 and y[17] == 3.0 and np.signbit(y[18]) and y[18] == 0
    assert (y[32:] == 0).all() and np.signbit(y[32:]).all()


def test_config_and_errors():
    q = qi.WeightsNVFP4InferableQuantizer(0.5, 0, input_rank=2)
    assert q.get_config() == {"tensor_scale": 0.5, "block_axis": 0, "input_rank": 2,
                              "block_scales": None, "channel_axis": 0,
                              "qi_version": qi.__version__}
    assert q.num_bits == 4 and q.plan["kind"] == "nvfp4"
    assert qi.quantizer_from_json(q.to_json()).get_config() == q.get_config()
    with pytest.raises(ValueError, match=r"the size along block_axis 0 \(20\) must be a multiple "
                                         r"of block_size 16"):
        q(np.zeros((20, 3), dtype=np.float32))
    for bad, message in [(0.0, "tensor_scale must be > 0, got 0"),
                         (-1.0, "tensor_scale must be > 0, got -1"),
                         (float("nan"), "tensor_scale must be finite, got nan"),
                         (1e-45, "tensor_scale must be a normal float32")]:
        with pytest.raises(ValueError, match=message):
            qi.ActivationNVFP4InferableQuantizer(bad)


# ---- stored block scales ----

E2M1_GRID = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def e2m1_numpy(v):
    """v (float32, clamped to [-6, 6]) to the nearest E2M1 value, ties to the even code."""
    a = np.abs(v.astype(np.float64))
    k = np.clip(np.searchsorted(E2M1_GRID, a), 1, 7)
    below, above = a - E2M1_GRID[k - 1], E2M1_GRID[k] - a
    pick = np.where((below < above) | ((below == above) & ((k - 1) % 2 == 0)), k - 1, k)
    return np.copysign(E2M1_GRID[pick], v).astype(np.float32)


def stored_reference(x, block_scales, tensor_scale):
    """x [C, 16 * G] with one stored scale s per (row, block): total = t * s (float32), y =
    e2m1(clip(x / total, -6, 6)) * total; NaN stays NaN."""
    s = np.asarray(block_scales, dtype=np.float32).reshape(x.shape[0], -1)
    total = s if tensor_scale is None else np.float32(tensor_scale) * s
    total = np.repeat(total, 16, axis=1)
    v = np.clip(x / total, np.float32(-6), np.float32(6))
    return np.where(np.isnan(x), x, e2m1_numpy(v) * total)


def data_block_scales(x, tensor_scale):
    """The E4M3 scales the data-derived NVFP4 computes for x's blocks along the last axis."""
    b = torch.from_numpy(x).reshape(-1, 16)
    s = b.abs().amax(1) / 6.0
    if tensor_scale is not None:
        s = s / torch.tensor(tensor_scale, dtype=torch.float32)
    return torch.clamp(s, 2.0 ** -6, 448.0).to(torch.float8_e4m3fn).float().numpy()


@pytest.mark.parametrize("tensor_scale", [None, 0.02, 3.7e-5])
def test_stored_scales_of_the_data_equal_the_data_derived_quantizer(tensor_scale):
    x = data(300, 3)
    scales = data_block_scales(x, tensor_scale)
    q = qi.WeightsNVFP4InferableQuantizer(tensor_scale, block_scales=scales, channel_axis=0)
    want = qi.WeightsNVFP4InferableQuantizer(tensor_scale)(x)
    assert np.array_equal(q(x).view(np.int32), want.view(np.int32))
    assert q.plan["kind"] == "float" and q.num_channels == scales.size
    assert np.array_equal(q(torch.from_numpy(x)).numpy().view(np.int32), want.view(np.int32))


@pytest.mark.parametrize("tensor_scale", [None, 0.25, 1e-3])
def test_stored_scales_against_numpy(tensor_scale, parity_stats):
    rng = np.random.default_rng(4)
    x = data(64, 5)
    codes = rng.integers(8, 127, x.size // 16)  # E4M3 codes from 2^-6 to 448
    scales = np.ldexp(8.0 + (codes & 7), (codes >> 3) - 10)
    q = qi.WeightsNVFP4InferableQuantizer(tensor_scale, block_scales=scales.tolist())
    want = stored_reference(x, scales, tensor_scale)
    y = q(x)
    assert np.array_equal(y.view(np.int32), want.view(np.int32))
    parity_stats.add("NVFP4 stored block scales vs numpy", y.size, 0)
    assert not np.array_equal(y, qi.WeightsNVFP4InferableQuantizer(tensor_scale)(x))
    # Blocks along axis 0, channels along axis 1: the transposed layout gives the transpose.
    t = qi.WeightsNVFP4InferableQuantizer(tensor_scale, block_axis=0, input_rank=2,
                                          block_scales=scales, channel_axis=1)
    assert np.array_equal(t(np.ascontiguousarray(x.T)).view(np.int32), y.T.view(np.int32))
    assert np.array_equal(t(x.T).view(np.int32), y.T.view(np.int32))  # a strided view


def test_stored_scales_config_and_onnx():
    scales = [1.0, 0.5, 448.0, 0.015625]
    q = qi.WeightsNVFP4InferableQuantizer(0.5, block_scales=scales, channel_axis=-2)
    assert q.get_config() == {"tensor_scale": 0.5, "block_axis": -1, "input_rank": None,
                              "block_scales": scales, "channel_axis": -2,
                              "qi_version": qi.__version__}
    assert q.block_scales == scales and q.channel_axis == -2
    assert qi.quantizer_from_json(q.to_json()).get_config() == q.get_config()
    assert list(q.plan["scale"]) == [0.5, 0.25, 224.0, 0.0078125]
    x = data(2, 6)[:, :32]
    with pytest.raises(ValueError, match=r"the size along block_axis -1 \(24\) must be a "
                                         r"multiple of block_size 16"):
        q(np.zeros((2, 24), dtype=np.float32))
    with pytest.raises(ValueError, match=r"the quantizer holds 4 values \(one per channel and "
                                         r"group\) but the tensor has 3 channels"):
        q(np.zeros((3, 32), dtype=np.float32))
    for y in (q(torch.from_numpy(x)).numpy(), q(x)):
        assert np.array_equal(y.view(np.int32), stored_reference(x, scales, 0.5).view(np.int32))
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    import io
    from quantizers_infrastructure.pytorch import onnx as qonnx
    op, inputs, attrs = qonnx.custom_op_spec(q)
    assert op == "WeightsFloatQuantizer" + qonnx.GROUPED_SUFFIX
    assert attrs["format"] == "E2M1" and attrs["group_size"] == 16 and attrs["channel_axis"] == -2
    w = torch.from_numpy(x)
    model = qi.PytorchQuantizationWrapper(torch.add, {1: q}, weight_values={1: w})
    f = io.BytesIO()
    torch.onnx.export(model.eval(), (torch.zeros(2, 32),), f, opset_version=16,
                      input_names=["input"], output_names=["output"], dynamo=False)
    assert [n.op_type for n in onnx.load_from_string(f.getvalue()).graph.node
            if n.domain == qonnx.DOMAIN] == [op]
    sess = ort.InferenceSession(f.getvalue(), qonnx.get_ort_session_options(),
                                providers=["CPUExecutionProvider"])
    zeros = np.zeros((2, 32), dtype=np.float32)
    got = sess.run(None, {"input": zeros})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(zeros)).numpy()  # 0 + Q(w): -0 becomes +0
    assert np.array_equal(got.view(np.int32), want.view(np.int32))
    assert np.array_equal(got, q(x))


@pytest.mark.parametrize("kwargs,message", [
    (dict(block_scales=[1.0, 0.3]),
     r"block_scales must be FP8 E4M3 values in \[2\^-6, 448\] \(0.015625 to 448\), got 0.3 "
     r"at index 1"),
    (dict(block_scales=[480.0]), r"block_scales must be FP8 E4M3 values in .*got 480 at index 0"),
    (dict(block_scales=[2.0, 0.0078125]),
     r"block_scales must be FP8 E4M3 values in .*got 0.0078125 at index 1"),
    (dict(block_scales=[-1.0]), r"block_scales must be FP8 E4M3 values in .*got -1 at index 0"),
    (dict(block_scales=[]), r"block_scales must hold at least one value \(or be null\), got \[\]"),
    (dict(block_scales=[1.0], channel_axis=None),
     "channel_axis is required with block_scales, got none"),
    (dict(block_scales=[1.0], channel_axis=-1),
     "channel_axis -1 and block_axis -1 must be different axes"),
    (dict(block_scales=[1.0], channel_axis=1, input_rank=2),
     "channel_axis 1 and block_axis -1 must be different axes"),
    (dict(block_scales=[1.0], channel_axis=2, input_rank=2),
     r"channel_axis must be in \[-2, 2\) for input_rank 2, got 2"),
])
def test_bad_stored_scales(kwargs, message):
    with pytest.raises(ValueError, match="WeightsNVFP4InferableQuantizer: " + message):
        qi.WeightsNVFP4InferableQuantizer(None, **kwargs)


def test_stored_scales_keep_a_nan_in_its_element_and_agree_in_tensorflow():
    x = data(4, 7)
    x[1, 3] = np.nan
    q = qi.WeightsNVFP4InferableQuantizer(None, block_scales=np.full(16, 0.5), channel_axis=0)
    y = q(x)
    assert np.isnan(y[1, 3]) and np.isnan(y).sum() == 1  # data-derived: the whole block
    assert np.isnan(qi.WeightsNVFP4InferableQuantizer(None)(x)[1, :16]).all()
    tf = pytest.importorskip("tensorflow")
    assert np.array_equal(q(tf.constant(x)).numpy().view(np.int32), y.view(np.int32))
