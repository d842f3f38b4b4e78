# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Parity on the torch-tensor path: every inferable quantizer called on a torch tensor (through
torch.ops.qi.fake_quant) against mct-quantizers 1.6.0's PyTorch quantizer with the same
parameters, bit for bit, on random inputs and on exact rounding ties (x = (k + 1/2) * scale on
every grid step of every channel). Also: the torch path equals the numpy path (the C++ core), and
the output of a Python-wrapped layer equals a computation made directly with torch.ops.qi.
The one documented departure, mct's truncated zero point in WeightsUniformInferableQuantizer
(docs/numerics.md), is compared only where the zero points agree (as test_mct_parity)."""

import warnings
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
mctq = pytest.importorskip("mct_quantizers")

import quantizers_infrastructure as qi  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from mct_quantizers.pytorch import quantizers as mt  # noqa: E402

SHAPE = (16, 24, 40)  # 15,360 random inputs per case
R = np.random.default_rng(77)
SUITE = "mct-quantizers PyTorch parity, torch tensors (random + ties)"


def th(c, pot=False):
    if pot:
        return [float(2.0 ** k) for k in R.integers(-3, 3, c)]
    return [float(v) for v in R.uniform(0.2, 3.0, c)]


def rng_ranges(c):
    mins = [float(v) for v in R.uniform(-3.0, 0.3, c)]
    return mins, [m + float(w) for m, w in zip(mins, R.uniform(0.5, 4.0, c))]


LUT = [-128, -90, -31, -2, 0, 5, 44, 127]
ULUT = [0, 3, 17, 64, 100, 180, 255]
MINS, MAXS = rng_ranges(24)
CASES = [
    ("wsym_pt", "WeightsSymmetricInferableQuantizer",
     dict(num_bits=8, threshold=[1.3], per_channel=False)),
    ("wsym_pc0", "WeightsSymmetricInferableQuantizer",
     dict(num_bits=4, threshold=th(16), per_channel=True, channel_axis=0)),
    ("wpot_pc2", "WeightsPOTInferableQuantizer",
     dict(num_bits=8, threshold=th(40, pot=True), per_channel=True, channel_axis=2)),
    ("wuni_pc1", "WeightsUniformInferableQuantizer",
     dict(num_bits=8, min_range=MINS, max_range=MAXS, per_channel=True, channel_axis=1)),
    ("wuni_pt", "WeightsUniformInferableQuantizer",
     dict(num_bits=5, min_range=[-0.83], max_range=[1.4], per_channel=False)),
    ("wlut_pt", "WeightsLUTSymmetricInferableQuantizer",
     dict(num_bits=3, lut_values=LUT, threshold=[1.7], per_channel=False)),
    ("wlut_pc1", "WeightsLUTSymmetricInferableQuantizer",
     dict(num_bits=3, lut_values=LUT, threshold=th(24), per_channel=True, channel_axis=1,
          input_rank=3)),
    ("wlutpot_pc2", "WeightsLUTPOTInferableQuantizer",
     dict(num_bits=3, lut_values=LUT, threshold=th(40, pot=True), per_channel=True,
          channel_axis=2, input_rank=3)),
    ("asym_s", "ActivationSymmetricInferableQuantizer",
     dict(num_bits=8, threshold=[2.9], signed=True)),
    ("asym_u", "ActivationSymmetricInferableQuantizer",
     dict(num_bits=8, threshold=[2.9], signed=False)),
    ("apot", "ActivationPOTInferableQuantizer", dict(num_bits=5, threshold=[2.0], signed=True)),
    ("auni", "ActivationUniformInferableQuantizer",
     dict(num_bits=8, min_range=[-1.37], max_range=[2.6])),
    ("auni_pos", "ActivationUniformInferableQuantizer",
     dict(num_bits=4, min_range=[0.4], max_range=[2.6])),
    ("alut_u", "ActivationLutPOTInferableQuantizer",
     dict(num_bits=3, lut_values=ULUT, threshold=[4.0], signed=False)),
    ("alut_s", "ActivationLutPOTInferableQuantizer",
     dict(num_bits=3, lut_values=LUT, threshold=[0.5], signed=True, eps=1e-3)),
]


def random_inputs(case_id, scale=3.0):
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    n = int(np.prod(SHAPE))
    x = np.concatenate([rng.normal(0, scale / 2, n - n // 3),
                        rng.uniform(-2 * scale, 2 * scale, n // 3)])
    return x.astype(np.float32).reshape(SHAPE)


def tie_inputs(ours):
    """x = (k + 1/2) * scale - zp * scale for every k of the grid, per channel (affine), or the
    midpoints between neighbouring LUT levels (LUT); shaped along the quantizer's channel axis."""
    plan = ours.plan
    channels = ours.num_channels
    axis = ours.core_quantizer.channel_axis if channels > 1 else None
    if "scale" in plan and plan.get("zero_point") is not None:
        scale = np.asarray(plan["scale"], np.float32)
        zp = np.asarray(plan["zero_point"], np.float32)
        k = np.arange(int(plan["qmin"]) - 1, int(plan["qmax"]) + 1, dtype=np.float32) + 0.5
        per_c = [((k - zp[c]) * scale[c]).astype(np.float32) for c in range(channels)]
    else:  # LUT: levels L / 2^(B - s) * t, ties halfway between neighbours
        cfg = ours.get_config()
        lut = np.sort(np.asarray(cfg["lut_values"], np.float64))
        s = 1 if cfg.get("signed", True) else 0
        mids = (lut[:-1] + lut[1:]) / 2 / 2.0 ** (cfg["lut_values_bitwidth"] - s)
        t = cfg["threshold"] * (channels if len(cfg["threshold"]) == 1 else 1)
        per_c = [(mids * tc).astype(np.float32) for tc in t]
    m = max(len(v) for v in per_c)
    grid = np.stack([np.resize(v, m) for v in per_c])  # [channels, m]
    if axis is None:
        return grid.reshape(-1)
    out = np.moveaxis(np.broadcast_to(grid.reshape(channels, m, 1), (channels, m, 2)), 0, axis)
    assert out.shape[axis] == channels and out.ndim == 3
    return np.ascontiguousarray(out)


def compare(got, expected, parity_stats, suite=SUITE, mask=None):
    g = got.detach().contiguous().view(torch.int32).numpy()
    e = expected.detach().contiguous().view(torch.int32).numpy()
    if mask is not None:
        g, e = g[mask], e[mask]
    mismatches = int(np.count_nonzero(g != e))
    parity_stats.add(suite, g.size, mismatches)
    return mismatches


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_torch_tensor_matches_mct_pytorch(case, parity_stats):
    case_id, name, kwargs = case
    ours = getattr(qi, name)(**kwargs)
    mct_kwargs = {k: v for k, v in kwargs.items()
                  if not (k == "input_rank" and name.startswith("WeightsSymmetric"))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(mt, name)(**mct_kwargs)
    for x_np in (random_inputs(case_id), tie_inputs(ours)):
        x = torch.from_numpy(x_np.copy())
        with torch.no_grad():
            expected = theirs(x.clone())
        got = ours(x)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        # the torch path is the numpy path (same C++ kernels)
        np.testing.assert_array_equal(got.numpy().view(np.int32),
                                      ours(x_np).view(np.int32))
        mask = None
        if name == "WeightsUniformInferableQuantizer":
            zp_mct = theirs.zero_points.cpu().numpy().reshape(-1).astype(np.float32)
            same = zp_mct == ours.zero_point
            shape = [1] * x.dim()
            if ours.num_channels > 1:
                shape[ours.core_quantizer.channel_axis] = -1
            mask = np.broadcast_to(same.reshape(shape), x.shape)
            assert mask.any()
        mismatches = compare(got, expected, parity_stats, mask=mask)
        assert mismatches == 0, f"{case_id}: {mismatches} outputs differ"


def test_torch_path_gradient_is_straight_through():
    q = qi.ActivationSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], signed=True)
    x = torch.randn(50, requires_grad=True)
    q(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(50))
    # Other float dtypes are quantized on the float32 grid and come back in their dtype.
    x64 = torch.randn(50, dtype=torch.float64)
    y64 = q(x64)
    assert y64.dtype == torch.float64 and torch.equal(y64, q(x64.float()).double())
    with pytest.raises(ValueError, match="x must be float32, float16, bfloat16 or float64, got Int"):
        q(torch.ones(3, dtype=torch.int32))


def test_wrapper_equals_direct_op_calls(parity_stats):
    """The Python wrapper's output equals the same computation written directly with the C++
    ops: fake_quant on the weight with the quantizer's JSON, the layer, fake_quant on the
    output (what the C++ QuantizationWrapper runs; test_pytorch_jit compares with it too)."""
    torch.manual_seed(9)
    wq = qi.WeightsPOTInferableQuantizer(num_bits=4, threshold=th(8, pot=True), per_channel=True,
                                         channel_axis=0)
    aq = qi.ActivationUniformInferableQuantizer(num_bits=8, min_range=[-2.0], max_range=[3.0])
    conv = torch.nn.Conv2d(4, 8, 3)
    w0, b0 = conv.weight.detach().clone(), conv.bias.detach().clone()
    wrapper = qi.PytorchQuantizationWrapper(conv, qi.PytorchNodeQuantizationDispatcher(wq, [aq]))
    x = torch.randn(2, 4, 12, 12)
    with torch.no_grad():
        direct = torch.ops.qi.fake_quant(
            torch.nn.functional.conv2d(x, torch.ops.qi.fake_quant(w0, wq.to_json()), b0),
            aq.to_json())
        got = wrapper(x)
    assert compare(got, direct, parity_stats, suite="Python wrapper vs direct torch.ops.qi") == 0
