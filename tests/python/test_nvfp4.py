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
