# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Bit-exact parity of the torch profile with torch.fake_quantize_per_tensor_affine /
torch.fake_quantize_per_channel_affine (docs/numerics.md).

The torch op's scale and zero point are derived here independently of the core, as
include/qi/kernels.h and docs/numerics.md document them:
  symmetric/POT: scale = float32(t / 2^(n - s)), zero point 0, [qmin, qmax] = [-2^(n-1),
    2^(n-1)-1] (signed) or [0, 2^n - 1] (unsigned);
  weights uniform: range adjusted in float32 (no clamping), scale = float32((max - min) /
    (2^n - 1)), zero point = -round_half_even(min / scale) (rounded, not truncated);
  activation uniform: as weights, but scale and zero point in float64 from the float32 range.
They must equal the quantizer's kernel plan; then each case compares >= 1,000,000 random inputs
plus exact rounding ties (x = (k + 0.5) * scale) bit for bit. NaN and +/-Inf are left out: the
torch op casts them to int64 (undefined), qi keeps NaN and clamps Inf (test_numpy_apply)."""

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure import _core  # noqa: E402

N = 1_000_000
SHAPE = (24, 20, 45, 47)  # 1,015,200 elements
assert np.prod(SHAPE) >= N


def symmetric_params(thresholds, n, signed):
    steps = 2.0 ** (n - 1 if signed else n)
    scale = np.array([np.float32(t / steps) for t in thresholds], np.float32)
    qmin, qmax = (-(2 ** (n - 1)), 2 ** (n - 1) - 1) if signed else (0, 2 ** n - 1)
    return scale, np.zeros(len(thresholds), np.float32), qmin, qmax


def adjust_range_float32(mn, mx, n):
    """mct_quantizers' torch fix_range_to_include_zero, in float32 (docs/numerics.md)."""
    mn, mx = np.float32(mn), np.float32(mx)
    scale = (mx - mn) / np.float32(2 ** n - 1)
    min_adj = scale * np.rint(mn / scale)
    max_adj = (mx - mn) + min_adj
    if mn > 0:
        return np.float32(0), mx
    if mx < 0:
        return mn, np.float32(0)
    return np.float32(min_adj), np.float32(max_adj)


def uniform_params(mins, maxs, n, scale_in_double):
    scales, zps = [], []
    qmax = 2 ** n - 1
    for mn, mx in zip(mins, maxs):
        lo, hi = adjust_range_float32(mn, mx, n)
        if scale_in_double:
            s = (float(hi) - float(lo)) / qmax
            zp = -np.rint(float(lo) / s)
            s = np.float32(s)
        else:
            s = (hi - lo) / np.float32(qmax)
            zp = -np.rint(lo / s)
        scales.append(np.float32(s))
        zps.append(min(max(float(zp), 0.0), float(qmax)) + 0.0)
    return np.array(scales, np.float32), np.array(zps, np.float32), 0, qmax


def make_inputs(rng, shape, scale, zp, qmin, qmax, axis):
    """Random values over and beyond the grid, plus ~15% exact rounding ties and their float32
    neighbours, per channel."""
    size = int(np.prod(shape))
    span = float(np.max(scale)) * (qmax - qmin + 1)
    x = np.concatenate([
        rng.uniform(-0.8 * span, 0.8 * span, size // 2),
        rng.normal(0.0, span / 4, size - size // 2),
    ]).astype(np.float32)
    rng.shuffle(x)
    x = x.reshape(shape)
    if axis is None:
        s, z = scale[0], zp[0]
    else:
        bshape = [1] * len(shape)
        bshape[axis] = -1
        s = np.broadcast_to(scale.reshape(bshape), shape)
        z = np.broadcast_to(zp.reshape(bshape), shape)
    mask = rng.random(shape) < 0.15
    k = rng.integers(qmin - 3, qmax + 3, size=shape).astype(np.float64) - np.asarray(z, np.float64)
    ties = ((k + 0.5) * np.asarray(s, np.float64)).astype(np.float32)
    ulps = rng.integers(-1, 2, size=shape).astype(np.int32)  # the tie and its neighbours
    ties = (ties.view(np.int32) + np.where(rng.random(shape) < 0.7, 0, ulps)).view(np.float32)
    x = np.where(mask, ties, x)
    x.reshape(-1)[:4] = [0.0, -0.0, np.float32(1e-30), -np.float32(1e-30)]
    return x


def exact_ties(x, scale, axis):
    """Number of inputs with x * (1/scale) exactly k + 0.5 in float32 (what the kernels round)."""
    inv = (np.float32(1.0) / scale).astype(np.float32)
    if axis is not None:
        bshape = [1] * x.ndim
        bshape[axis] = -1
        inv = inv.reshape(bshape)
    v = (x * inv).astype(np.float32)
    return int(np.count_nonzero(v - np.floor(v) == np.float32(0.5)))


def torch_fake_quant(x, scale, zp, qmin, qmax, axis):
    xt = torch.from_numpy(x)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(xt, float(scale[0]), int(zp[0]), qmin,
                                                     qmax).numpy()
    return torch.fake_quantize_per_channel_affine(
        xt, torch.from_numpy(scale), torch.from_numpy(zp.astype(np.int32)), axis, qmin,
        qmax).numpy()


RNG_THRESHOLDS = np.random.default_rng(7)


def per_channel_thresholds(count, pot=False):
    if pot:
        return [float(2.0 ** k) for k in RNG_THRESHOLDS.integers(-6, 4, count)]
    return RNG_THRESHOLDS.uniform(0.05, 4.0, count).tolist()


def build_cases():
    cases = []
    # (id, class name, kwargs, expected-params function, channel axis or None)
    for n, t in [(8, 2.0), (4, 0.37), (2, 1.0), (16, 3.3)]:
        cases.append((f"wsym_n{n}_t{t}", "WeightsSymmetricInferableQuantizer",
                      dict(num_bits=n, threshold=[t], per_channel=False),
                      lambda n=n, t=t: symmetric_params([t], n, True), None))
    cases.append(("wsym_unsigned", "WeightsSymmetricInferableQuantizer",
                  dict(num_bits=8, threshold=[1.7], per_channel=False, signed=False),
                  lambda: symmetric_params([1.7], 8, False), None))
    for n, t in [(8, 0.5), (3, 4.0)]:
        cases.append((f"wpot_n{n}", "WeightsPOTInferableQuantizer",
                      dict(num_bits=n, threshold=[t], per_channel=False),
                      lambda n=n, t=t: symmetric_params([t], n, True), None))
    for axis in [0, 1, 2, 3, -1, -2, -4]:
        th = per_channel_thresholds(SHAPE[axis])
        cases.append((f"wsym_pc_axis{axis}", "WeightsSymmetricInferableQuantizer",
                      dict(num_bits=8, threshold=th, per_channel=True, channel_axis=axis),
                      lambda th=th: symmetric_params(th, 8, True), axis))
    th = per_channel_thresholds(SHAPE[1])
    cases.append(("wsym_pc_unsigned_axis1", "WeightsSymmetricInferableQuantizer",
                  dict(num_bits=6, threshold=th, per_channel=True, channel_axis=1, signed=False),
                  lambda th=th: symmetric_params(th, 6, False), 1))
    for axis in [0, -1]:
        th = per_channel_thresholds(SHAPE[axis], pot=True)
        cases.append((f"wpot_pc_axis{axis}", "WeightsPOTInferableQuantizer",
                      dict(num_bits=4, threshold=th, per_channel=True, channel_axis=axis),
                      lambda th=th: symmetric_params(th, 4, True), axis))
    for n, mn, mx in [(8, -0.7, 1.3), (8, 0.2, 1.5), (8, -2.0, -0.1), (4, -1.0, 1.0),
                      (5, -0.013, 3.7)]:
        cases.append((f"wuni_n{n}_{mn}_{mx}", "WeightsUniformInferableQuantizer",
                      dict(num_bits=n, min_range=[mn], max_range=[mx], per_channel=False),
                      lambda n=n, mn=mn, mx=mx: uniform_params([mn], [mx], n, False), None))
    for axis in [0, 2, -1, -3]:
        c = SHAPE[axis]
        mins = RNG_THRESHOLDS.uniform(-3.0, 0.5, c).tolist()
        maxs = [m + w for m, w in zip(mins, RNG_THRESHOLDS.uniform(0.1, 4.0, c))]
        cases.append((f"wuni_pc_axis{axis}", "WeightsUniformInferableQuantizer",
                      dict(num_bits=8, min_range=mins, max_range=maxs, per_channel=True,
                           channel_axis=axis),
                      lambda mins=mins, maxs=maxs: uniform_params(mins, maxs, 8, False), axis))
    for signed in [True, False]:
        cases.append((f"asym_signed{signed}", "ActivationSymmetricInferableQuantizer",
                      dict(num_bits=8, threshold=[5.3], signed=signed),
                      lambda signed=signed: symmetric_params([5.3], 8, signed), None))
    cases.append(("apot", "ActivationPOTInferableQuantizer",
                  dict(num_bits=4, threshold=[8.0], signed=False),
                  lambda: symmetric_params([8.0], 4, False), None))
    for n, mn, mx in [(8, -1.2, 5.3), (8, 0.3, 2.0), (3, -0.77, 0.41)]:
        cases.append((f"auni_n{n}_{mn}_{mx}", "ActivationUniformInferableQuantizer",
                      dict(num_bits=n, min_range=[mn], max_range=[mx]),
                      lambda n=n, mn=mn, mx=mx: uniform_params([mn], [mx], n, True), None))
    return cases


CASES = build_cases()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bit_exact_with_torch(case, parity_stats):
    case_id, name, kwargs, expected_params, axis = case
    q = getattr(qi, name)(**kwargs)
    scale, zp, qmin, qmax = expected_params()
    plan = q.plan
    assert plan["kind"] == "affine_torch"
    np.testing.assert_array_equal(plan["scale"].view(np.int32), scale.view(np.int32))
    np.testing.assert_array_equal(plan["zero_point"], zp)
    assert (plan["qmin"], plan["qmax"]) == (qmin, qmax)

    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    shape = SHAPE if axis is not None or "wsym_n" not in case_id else (N,)
    norm_axis = None if axis is None else axis % len(shape)
    x = make_inputs(rng, shape, scale, zp, qmin, qmax, norm_axis)
    ties = exact_ties(x, scale, norm_axis)
    assert ties > 10_000, f"only {ties} exact ties"

    expected = torch_fake_quant(x, scale, zp, qmin, qmax, norm_axis)
    got = q(x)
    mismatch = got.view(np.int32) != expected.view(np.int32)
    count = int(np.count_nonzero(mismatch))
    parity_stats.add("torch fake_quantize parity", x.size, count)
    if count:
        idx = np.argwhere(mismatch)[:5]
        detail = [(tuple(i), float(x[tuple(i)]), float(got[tuple(i)]), float(expected[tuple(i)]))
                  for i in idx]
        pytest.fail(f"{count} of {x.size} outputs differ from torch; first (index, x, qi, torch): "
                    f"{detail}")


@pytest.mark.parametrize("target", _core.supported_simd_targets())
def test_bit_exact_with_torch_on_every_simd_target(target, parity_stats):
    # A smaller run of a per-channel and a per-tensor case on every compiled ISA.
    rng = np.random.default_rng(99)
    shape = (64, 33, 7)
    th = rng.uniform(0.1, 3.0, shape[1]).tolist()
    pc = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=th, per_channel=True,
                                               channel_axis=1)
    uni = qi.ActivationUniformInferableQuantizer(num_bits=8, min_range=[-1.2], max_range=[5.3])
    cases = [(pc, symmetric_params(th, 8, True), 1), (uni, uniform_params([-1.2], [5.3], 8, True),
                                                      None)]
    try:
        _core.force_simd_target(target)
        for q, (scale, zp, qmin, qmax), axis in cases:
            x = make_inputs(rng, shape, scale, zp, qmin, qmax, axis)
            expected = torch_fake_quant(x, scale, zp, qmin, qmax, axis)
            count = int(np.count_nonzero(q(x).view(np.int32) != expected.view(np.int32)))
            parity_stats.add("torch fake_quantize parity, each SIMD target", x.size, count)
            assert count == 0, (target, count)
    finally:
        _core.force_simd_target("")
