# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Parity with the reference implementation, mct-quantizers 1.6.0: the torch profile against its
PyTorch quantizers (all nine classes, LUT included), the tf profile against its Keras quantizers
(TensorFlow fake_quant). Outputs compared bit for bit. The one documented departure, the
truncated zero point of mct's torch WeightsUniformInferableQuantizer (docs/numerics.md),
is checked to be the only difference there."""

import warnings
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
mctq = pytest.importorskip("mct_quantizers")

import quantizers_infrastructure as qi  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from mct_quantizers.keras import quantizers as mk  # noqa: E402
    from mct_quantizers.pytorch import quantizers as mt  # noqa: E402

SHAPE = (40, 30, 50)  # 60,000 elements per case
R = np.random.default_rng(2024)


def inputs(case_id, scale=3.0):
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    x = np.concatenate([rng.normal(0, scale / 2, 40_000), rng.uniform(-2 * scale, 2 * scale,
                                                                      20_000)])
    return x.astype(np.float32).reshape(SHAPE)


def thresholds(c, pot=False):
    if pot:
        return [float(2.0 ** k) for k in R.integers(-3, 3, c)]
    return [float(v) for v in R.uniform(0.2, 3.0, c)]


def ranges(c):
    mins = [float(v) for v in R.uniform(-3.0, 0.3, c)]
    return mins, [m + float(w) for m, w in zip(mins, R.uniform(0.5, 4.0, c))]


def compare(case_id, got, expected, parity_stats, suite):
    mismatches = int(np.count_nonzero(got.view(np.int32) != expected.view(np.int32)))
    parity_stats.add(suite, got.size, mismatches)
    assert mismatches == 0, f"{case_id}: {mismatches} of {got.size} outputs differ"


# ---- torch profile vs mct_quantizers.pytorch --------------------------------------------------

def torch_cases():
    th30, th50 = thresholds(30), thresholds(50, pot=True)
    mins, maxs = ranges(40)
    lut = [-128, -90, -31, -2, 0, 5, 44, 127]
    ulut = [0, 3, 17, 64, 100, 180, 255]
    return [
        ("wsym_pt", "WeightsSymmetricInferableQuantizer",
         dict(num_bits=8, threshold=[1.3], per_channel=False)),
        ("wsym_pc1", "WeightsSymmetricInferableQuantizer",
         dict(num_bits=4, threshold=th30, per_channel=True, channel_axis=1)),
        ("wpot_pc2", "WeightsPOTInferableQuantizer",
         dict(num_bits=8, threshold=th50, per_channel=True, channel_axis=2)),
        ("wuni_pc0", "WeightsUniformInferableQuantizer",
         dict(num_bits=8, min_range=mins, max_range=maxs, per_channel=True, channel_axis=0)),
        ("wlut_pt", "WeightsLUTSymmetricInferableQuantizer",
         dict(num_bits=3, lut_values=lut, threshold=[1.7], per_channel=False)),
        ("wlut_pc1", "WeightsLUTSymmetricInferableQuantizer",
         dict(num_bits=3, lut_values=lut, threshold=th30, per_channel=True, channel_axis=1,
              input_rank=3)),
        ("wlutpot_pc2", "WeightsLUTPOTInferableQuantizer",
         dict(num_bits=3, lut_values=lut, threshold=th50, per_channel=True, channel_axis=2,
              input_rank=3, lut_values_bitwidth=8, eps=1e-8)),
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
         dict(num_bits=3, lut_values=ulut, threshold=[4.0], signed=False)),
        ("alut_s", "ActivationLutPOTInferableQuantizer",
         dict(num_bits=3, lut_values=lut, threshold=[0.5], signed=True, eps=1e-3)),
    ]


TORCH_CASES = torch_cases()


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_torch_profile_matches_mct_pytorch(case, parity_stats):
    case_id, name, kwargs = case
    ours = getattr(qi, name)(**kwargs)
    mct_kwargs = {k: v for k, v in kwargs.items()
                  if not (k == "input_rank" and name.startswith("WeightsSymmetric"))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(mt, name)(**mct_kwargs)
    x = inputs(case_id)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x.copy())).numpy()
    got = ours(x)
    if name == "WeightsUniformInferableQuantizer":
        # mct truncates the zero point (-(min/scale).int()); qi rounds it. Where they agree the
        # outputs must be identical; elsewhere mct's zero point is the rounded one minus one.
        zp_mct = theirs.zero_points.cpu().numpy().reshape(-1).astype(np.float32)
        zp_qi = ours.zero_point
        same = zp_mct == zp_qi
        assert np.all(zp_qi[~same] - zp_mct[~same] == 1), (zp_qi, zp_mct)
        np.testing.assert_array_equal(ours.scale, theirs.scales.cpu().numpy().reshape(-1))
        assert same.sum() > 0
        x, got, expected = x[same], got[same], expected[same]
    compare(case_id, got, expected, parity_stats, "mct-quantizers PyTorch parity (torch profile)")


# ---- tf profile vs mct_quantizers.keras ---------------------------------------------------------

def keras_cases():
    th50, th30 = thresholds(50), thresholds(30, pot=True)
    mins, maxs = ranges(50)
    return [
        ("k_wsym_pt", "WeightsSymmetricInferableQuantizer",
         dict(num_bits=8, threshold=[1.3], per_channel=False)),
        ("k_wsym_pc_last", "WeightsSymmetricInferableQuantizer",
         dict(num_bits=4, threshold=th50, per_channel=True, channel_axis=-1, input_rank=3)),
        ("k_wpot_pc1", "WeightsPOTInferableQuantizer",
         dict(num_bits=8, threshold=th30, per_channel=True, channel_axis=1, input_rank=3)),
        ("k_wuni_pt", "WeightsUniformInferableQuantizer",
         dict(num_bits=8, min_range=[-0.71], max_range=[1.93], per_channel=False)),
        ("k_wuni_pc2", "WeightsUniformInferableQuantizer",
         dict(num_bits=6, min_range=mins, max_range=maxs, per_channel=True, channel_axis=2,
              input_rank=3)),
        ("k_asym_s", "ActivationSymmetricInferableQuantizer",
         dict(num_bits=8, threshold=[2.9], signed=True)),
        ("k_asym_u", "ActivationSymmetricInferableQuantizer",
         dict(num_bits=8, threshold=[2.9], signed=False)),
        ("k_apot", "ActivationPOTInferableQuantizer",
         dict(num_bits=4, threshold=[4.0], signed=False)),
        ("k_auni", "ActivationUniformInferableQuantizer",
         dict(num_bits=8, min_range=[-1.37], max_range=[2.6])),
    ]


KERAS_CASES = keras_cases()


@pytest.mark.parametrize("case", KERAS_CASES, ids=[c[0] for c in KERAS_CASES])
def test_tf_profile_matches_mct_keras(case, parity_stats):
    import tensorflow as tf

    case_id, name, kwargs = case
    ours = getattr(qi, name)(**kwargs, profile="tf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(mk, name)(**kwargs)
    x = inputs(case_id)
    expected = theirs(tf.constant(x)).numpy()
    compare(case_id, ours(x), expected, parity_stats, "mct-quantizers Keras parity (tf profile)")
