# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Low-precision float formats (QuantizationMethod.FLOAT): bit-exact with torch's float8 casts
for E4M3 and E5M2 (`torch.clamp(x / s, -max, max).to(float8).float() * s`) and with torchao's
reference casts (torchao.prototype.custom_fp_utils) for the MX element types E3M2, E2M3 and
E2M1; special values, every axis, odd sizes; bad arguments."""

import numpy as np
import pytest

import quantizers_infrastructure as qi

torch = pytest.importorskip("torch")

# name: (exponent bits, mantissa bits, largest finite value)
FORMATS = {"E4M3": (4, 3, 448.0), "E5M2": (5, 2, 57344.0), "E3M2": (3, 2, 28.0),
           "E2M3": (2, 3, 7.5), "E2M1": (2, 1, 6.0)}
TORCH_DTYPES = {"E4M3": torch.float8_e4m3fn, "E5M2": torch.float8_e5m2}


def grid(fmt):
    """The format's non-negative finite values, ascending (from the format's definition)."""
    e, m, largest = FORMATS[fmt]
    bias = 2 ** (e - 1) - 1
    values = []
    for code in range(2 ** (e + m)):
        ef, mf = code >> m, code & (2 ** m - 1)
        v = mf * 2.0 ** (1 - bias - m) if ef == 0 else (2 ** m + mf) * 2.0 ** (ef - bias - m)
        if v > largest:
            break
        values.append(v)
    return np.array(values)


def reference(x, fmt, scale, axis=None):
    """The reference of `fmt` on a float32 tensor x with float32 scales (per tensor, or one per
    slice along axis): torch's float8 cast, or torchao's casts for the MX element types."""
    s = torch.tensor(np.asarray(scale, dtype=np.float32))
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        s = s.reshape(shape)
    largest = FORMATS[fmt][2]
    v = x / s
    if fmt in TORCH_DTYPES:
        return torch.clamp(v, -largest, largest).to(TORCH_DTYPES[fmt]).float() * s
    from torchao.prototype.custom_fp_utils import _f32_to_floatx_unpacked, _floatx_unpacked_to_f32
    e, m, _ = FORMATS[fmt]
    # torchao's cast saturates by itself; it has no NaN (qi keeps NaN, checked separately).
    return _floatx_unpacked_to_f32(_f32_to_floatx_unpacked(v.contiguous(), e, m), e, m) * s


def special_values(fmt, scale):
    """Grid values, exact midpoints (ties) and their float32 neighbours, the largest value and
    beyond, subnormals of the format and of float32, +-0, +-inf, NaN; times `scale`."""
    g = grid(fmt)
    mids = (g[1:] + g[:-1]) / 2
    largest = FORMATS[fmt][2]
    units = np.concatenate([g, mids, [largest * 1.01, largest * 1.5, largest * 4, 1e30]])
    with np.errstate(over="ignore"):  # huge scales: the largest units become inf
        x = (units * scale).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(0)), np.nextafter(x, np.float32(np.inf)),
                        np.array([1e-40, 1e-45, 3.4e38, np.inf, 0.0], dtype=np.float32)])
    return np.concatenate([x, -x, np.array([np.nan], dtype=np.float32)]).astype(np.float32)


def random_values(n, scale, seed):
    """Magnitudes spread over 2^-40..2^20 times the scale, both signs."""
    rng = np.random.default_rng(seed)
    mag = np.exp2(rng.uniform(-40, 20, n)) * (1 + rng.random(n))
    return (np.where(rng.random(n) < 0.5, -1, 1) * mag * scale).astype(np.float32)


def strided_float32(step=4099):
    """Every step-th float32 bit pattern: all exponents, NaNs and infinities."""
    return np.arange(0, 2 ** 32, step, dtype=np.uint64).astype(np.uint32).view(np.float32)


def compare(got, want, x, suite, parity_stats):
    """Bitwise equality where x is not NaN (NaN stays NaN in qi); returns the mismatch count."""
    got = np.asarray(got, dtype=np.float32).reshape(-1)
    want = np.asarray(want, dtype=np.float32).reshape(-1)
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    nan = np.isnan(x)
    assert np.isnan(got[nan]).all(), "NaN inputs must give NaN"
    bad = (got.view(np.int32) != want.view(np.int32)) & ~nan
    if bad.any():
        i = np.flatnonzero(bad)[:5]
        raise AssertionError(f"{suite}: {bad.sum()} mismatches, e.g. x={x[i]} got={got[i]} "
                             f"want={want[i]}")
    parity_stats.add(suite, int((~nan).sum()), 0)


def suite_name(fmt):
    return (f"FLOAT {fmt} vs torch float8 cast" if fmt in TORCH_DTYPES
            else f"FLOAT {fmt} vs torchao custom_fp_utils")


@pytest.fixture(params=list(FORMATS))
def fmt(request):
    if request.param not in TORCH_DTYPES:
        pytest.importorskip("torchao")
    return request.param


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0 ** -20, 0.3, 7.25, 1e30, 1e-30])
def test_per_tensor_bit_exact(fmt, scale, parity_stats):
    q = qi.WeightsFloatInferableQuantizer(format=fmt, scale=scale, per_channel=False)
    act = qi.ActivationFloatInferableQuantizer(fmt, [scale])
    inputs = [special_values(fmt, scale), random_values(10007, scale, 1)]
    if scale in (1.0, 0.3):
        inputs.append(strided_float32())
    for x in inputs:
        want = reference(torch.from_numpy(x), fmt, scale)
        compare(q(x), want, x, suite_name(fmt), parity_stats)
        np.testing.assert_array_equal(act(x), q(x))
        np.testing.assert_array_equal(q(torch.from_numpy(x)).numpy(), q(x))


def test_float32_patterns_up_to_beyond_the_largest_value(fmt, parity_stats):
    """With scale 1: about 2^20 float32 bit patterns evenly spread from 0 to 1.25 times the
    largest value (an odd stride, so that every mantissa bit varies), both signs."""
    largest = np.float32(FORMATS[fmt][2])
    top = int(np.array(largest * np.float32(1.25), dtype=np.float32).view(np.int32))
    step = (top >> 20) | 1
    x = np.arange(0, top, step, dtype=np.int32).view(np.float32)
    x = np.concatenate([x, -x])
    q = qi.ActivationFloatInferableQuantizer(fmt, 1.0)
    compare(q(x), reference(torch.from_numpy(x), fmt, 1.0), x, suite_name(fmt), parity_stats)


@pytest.mark.parametrize("shape", [(3, 5, 7, 19), (1, 17), (33,), (2, 1, 3)])
def test_per_channel_every_axis(fmt, shape, parity_stats):
    rng = np.random.default_rng(len(shape))
    for axis in range(-len(shape), len(shape)):
        channels = shape[axis]
        scale = np.exp2(rng.uniform(-8, 8, channels)) * rng.uniform(1, 2, channels)
        q = qi.WeightsFloatInferableQuantizer(fmt, scale.tolist(), True, axis)
        x = random_values(int(np.prod(shape)), 1.0, axis + 7).reshape(shape)
        want = reference(torch.from_numpy(x), fmt, scale, axis % len(shape))
        compare(q(x), want, x, suite_name(fmt), parity_stats)
        # Strided and transposed views give the same values.
        xt = np.ascontiguousarray(np.swapaxes(x, 0, -1)).swapaxes(0, -1)
        np.testing.assert_array_equal(q(xt), q(x))
        np.testing.assert_array_equal(q(torch.from_numpy(x)).numpy(), q(x))


def test_nan_inf_and_signed_zero():
    q = qi.ActivationFloatInferableQuantizer("E4M3", [0.5])
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -1e-30], dtype=np.float32)
    y = q(x)
    assert np.isnan(y[0])
    assert y[1] == 224.0 and y[2] == -224.0
    assert np.signbit(y[3:]).tolist() == [False, True, True] and (y[3:] == 0).all()


def test_format_width_plan_and_json():
    q = qi.WeightsFloatInferableQuantizer("E2M3", [0.25, 4.0], True, 1, input_rank=2)
    assert q.format == "E2M3" and q.per_channel and q.channel_axis == 1
    assert q.plan["kind"] == "float" and (q.plan["ebits"], q.plan["mbits"]) == (2, 3)
    assert q.plan["max"] == 7.5 and q.plan["scale"].tolist() == [0.25, 4.0]
    assert q.scale == [0.25, 4.0] and q.scales == [0.25, 4.0]  # the configured argument
    assert q.get_config() == {"format": "E2M3", "scale": [0.25, 4.0], "per_channel": True,
                              "channel_axis": 1, "input_rank": 2, "group_size": None,
                              "group_axis": -1, "qi_version": qi.__version__}
    assert qi.quantizer_from_json(q.to_json()).get_config() == q.get_config()
    assert qi.get_inferable_quantizer_class(qi.QuantizationTarget.Activation,
                                            qi.QuantizationMethod.FLOAT) is \
        qi.ActivationFloatInferableQuantizer
    assert qi.QuantizationMethod.FLOAT.value == 100


@pytest.mark.parametrize("kwargs,message", [
    (dict(format="FP8", scale=1.0), 'format must be one of E4M3, E5M2, E3M2, E2M3, E2M1, got '
                                    '"FP8"'),
    (dict(format="E4M3", scale=0.0), "scale must be > 0, got 0 at index 0"),
    (dict(format="E4M3", scale=-1.0), "scale must be > 0, got -1 at index 0"),
    (dict(format="E4M3", scale=float("nan")), "scale must be finite, got nan at index 0"),
    (dict(format="E4M3", scale=float("inf")), "scale must be finite, got inf at index 0"),
    (dict(format="E4M3", scale=1e-45), "scale must be a normal float32"),
    (dict(format="E4M3", scale=[1.0, 2.0]), "scale must hold exactly one value"),
    (dict(format="E4M3", scale=[]), "scale must hold (at least|exactly) one value"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        qi.ActivationFloatInferableQuantizer(**kwargs)
    with pytest.raises(ValueError, match=message):
        qi.WeightsFloatInferableQuantizer(per_channel=False, **kwargs)


def test_bad_format_type_and_tensor():
    with pytest.raises(ValueError, match='"format" must be a string'):
        qi.ActivationFloatInferableQuantizer(8, 1.0)
    q = qi.WeightsFloatInferableQuantizer("E4M3", [1.0, 2.0, 3.0], True, 0)
    with pytest.raises(ValueError, match="holds 3 per-channel values but the tensor has 2"):
        q(np.zeros((2, 3), dtype=np.float32))
