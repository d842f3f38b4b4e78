# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Quantizing numpy arrays: any strides (views, transposes, negative and zero strides,
misaligned buffers), in place, per channel on every axis, special values, dtype and type errors,
threads and every compiled SIMD target. References are numpy float32 formulas over the
quantizer's kernel plan."""

import numpy as np
import pytest

import quantizers_infrastructure as qi
from quantizers_infrastructure import _core


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.int32)


def reference(q, x, axis=None):
    """Q(x) in numpy float32 from q's plan (docs/numerics.md); axis: normalized channel
    axis or None."""
    plan = q.plan
    x = np.asarray(x, np.float32)

    def per_channel(v):
        v = np.asarray(v, np.float32)
        if axis is None:
            return v[0]
        shape = [1] * x.ndim
        shape[axis] = -1
        return v.reshape(shape)

    with np.errstate(invalid="ignore", over="ignore"):
        if plan["kind"] == "affine_torch":
            scale, inv, zp = (per_channel(plan[k]) for k in ("scale", "inv_scale", "zero_point"))
            qv = np.rint(x * inv) + zp
            qv = np.minimum(np.maximum(qv, np.float32(plan["qmin"])), np.float32(plan["qmax"]))
            y = ((qv - zp) * scale).astype(np.float32)
        elif plan["kind"] == "affine_tf":
            scale, inv, nmin, nmax, qz = (per_channel(plan[k]) for k in (
                "scale", "inv_scale", "nudged_min", "nudged_max", "quant_zero"))
            c = np.maximum(np.minimum(x, nmax), nmin) - nmin
            v = c / scale if plan["use_division"] else c * inv
            y = (np.floor(v - qz + np.float32(0.5)) * scale).astype(np.float32)
        else:
            lut = np.asarray(plan["lut"], np.float32)
            divisor = per_channel(plan["divisor"])
            v = np.clip((x / divisor) * np.float32(plan["multiplier"]), np.float32(plan["lo"]),
                        np.float32(plan["hi"]))
            k = np.argmin(np.abs(v[..., None] - lut), axis=-1)
            table = np.asarray(plan["table"], np.float32).reshape(-1, lut.size)
            if axis is None:
                y = table[0][k]
            else:
                c = np.indices(x.shape)[axis]
                y = table[c, k]
        return np.where(np.isnan(x), x, y).astype(np.float32)


def sym(**kw):
    args = dict(num_bits=8, threshold=[1.5], per_channel=False)
    args.update(kw)
    return qi.WeightsSymmetricInferableQuantizer(**args)


RNG = np.random.default_rng(1234)


def test_contiguous_matches_reference():
    q = sym()
    x = RNG.normal(0, 1, size=(7, 11)).astype(np.float32)
    y = q(x)
    assert y.dtype == np.float32 and y.shape == x.shape and y.flags.c_contiguous
    assert np.array_equal(bits(y), bits(reference(q, x)))
    assert y is not x and not np.shares_memory(x, y)


VIEWS = {
    "step": lambda a: a[::2, 1::3],
    "transpose": lambda a: a.T,
    "fortran": lambda a: np.asfortranarray(a),
    "negative": lambda a: a[::-1, ::-2],
    "broadcast": lambda a: np.broadcast_to(a[:1], a.shape),
    "size1_dims": lambda a: a[3:4, :, None],
    "zero_d": lambda a: a[2, 3],
    "empty": lambda a: a[:0],
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_strided_inputs(view):
    base = RNG.normal(0, 1, size=(9, 13)).astype(np.float32)
    x = VIEWS[view](base)
    if view == "zero_d":
        x = np.asarray(x)
        assert x.ndim == 0
    q = sym()
    y = q(x)
    assert y.shape == x.shape and y.flags.c_contiguous
    assert np.array_equal(bits(y), bits(reference(q, x)))


def test_misaligned_buffer():
    buf = np.zeros(4 * 101 + 1, np.uint8)
    x = np.frombuffer(buf.data, dtype=np.float32, count=100, offset=1)
    assert x.ctypes.data % 4 != 0
    q = sym()
    assert np.array_equal(bits(q(x)), bits(reference(q, x)))


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -2, -3, -4])
def test_per_channel_every_axis_on_views(axis):
    shape = (3, 4, 5, 6)
    thresholds = RNG.uniform(0.1, 4.0, size=shape[axis]).tolist()
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=5, threshold=thresholds, per_channel=True,
                                              channel_axis=axis)
    x = RNG.normal(0, 2, size=shape).astype(np.float32)
    norm = axis % 4
    assert np.array_equal(bits(q(x)), bits(reference(q, x, norm)))
    # The same channels seen through a non-contiguous, partly reversed view.
    big = RNG.normal(0, 2, size=tuple(2 * s for s in shape)).astype(np.float32)
    view = big[::2, ::-2, 1::2, ::2]
    assert view.shape == shape
    assert np.array_equal(bits(q(view)), bits(reference(q, view, norm)))


def test_per_channel_uniform_and_lut():
    x = RNG.normal(0, 1, size=(6, 5, 4)).astype(np.float32)
    u = qi.WeightsUniformInferableQuantizer(num_bits=4, min_range=[-1.0, -0.3, 0.2, -2.0],
                                            max_range=[1.0, 2.0, 1.5, -0.5], per_channel=True,
                                            channel_axis=-1)
    assert np.array_equal(bits(u(x)), bits(reference(u, x, 2)))
    lut = qi.WeightsLUTSymmetricInferableQuantizer(
        num_bits=3, lut_values=[-128, -60, -5, 0, 4, 50, 127], threshold=[0.5, 1.0, 2.0, 4.0, 8.0],
        per_channel=True, channel_axis=1)
    assert np.array_equal(bits(lut(x)), bits(reference(lut, x, 1)))
    alut = qi.ActivationLutPOTInferableQuantizer(num_bits=2, lut_values=[0, 30, 200, 255],
                                                 threshold=[4.0], signed=False)
    assert np.array_equal(bits(alut(x)), bits(reference(alut, x)))


def test_tf_profile_matches_reference():
    x = RNG.normal(0, 1, size=(8, 9)).astype(np.float32)
    for q, axis in [
        (qi.ActivationUniformInferableQuantizer(num_bits=8, min_range=[-0.7], max_range=[1.3],
                                                profile="tf"), None),
        (qi.WeightsSymmetricInferableQuantizer(num_bits=4, threshold=RNG.uniform(
            0.5, 2, 9).tolist(), per_channel=True, channel_axis=-1, profile="tf"), 1),
    ]:
        assert np.array_equal(bits(q(x)), bits(reference(q, x, axis)))


def test_special_values():
    q = sym(num_bits=4, threshold=[2.0])  # step 0.25, grid [-2, 1.75]
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.125, 0.375, -0.125, 1e30, -1e30,
                  np.float32(1e-40)], np.float32)
    y = q(x)
    assert np.isnan(y[0])
    np.testing.assert_array_equal(y[1:], np.array([1.75, -2.0, 0.0, 0.0, 0.0, 0.5, 0.0, 1.75,
                                                   -2.0, 0.0], np.float32))
    assert np.array_equal(bits(y[1:]), bits(reference(q, x)[1:]))


def test_in_place():
    q = sym()
    x = RNG.normal(0, 1, size=(10, 12)).astype(np.float32)
    expected = q(x)
    out = q.apply_(x)
    assert out is x
    assert np.array_equal(bits(x), bits(expected))


@pytest.mark.parametrize("view", ["step", "transpose", "negative"])
def test_in_place_on_views_touches_only_the_view(view):
    q = sym(num_bits=3)
    base = RNG.normal(0, 1, size=(9, 13)).astype(np.float32)
    original = base.copy()
    v = VIEWS[view](base)
    expected = q(v)
    q.apply_(v)
    assert np.array_equal(bits(v), bits(expected))
    mask = np.zeros(base.shape, bool)
    VIEWS[view](mask)[...] = True
    assert np.array_equal(bits(base[~mask]), bits(original[~mask]))


def test_in_place_rejects_read_only():
    q = sym()
    x = np.ones((3, 3), np.float32)
    x.setflags(write=False)
    with pytest.raises(ValueError) as e:
        q.apply_(x)
    assert str(e.value) == ("WeightsSymmetricInferableQuantizer: in-place quantization needs a "
                            "writeable array")
    with pytest.raises(ValueError, match="writeable"):
        q.apply_(np.broadcast_to(np.ones(3, np.float32), (4, 3)))


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.dtype(">f4")])
def test_dtype_errors(dtype):
    q = sym()
    with pytest.raises(ValueError) as e:
        q(np.zeros(4, dtype))
    assert str(e.value) == ("WeightsSymmetricInferableQuantizer: input must be a float32 array, "
                            f"got dtype {np.dtype(dtype)}")
    with pytest.raises(ValueError, match="float32"):
        q.apply_(np.zeros(4, dtype))


def test_type_errors():
    q = sym()
    with pytest.raises(TypeError) as e:
        q([1.0, 2.0])
    assert "cannot quantize an input of type builtins.list" in str(e.value)
    assert "numpy.ndarray" in str(e.value)
    with pytest.raises(TypeError, match="expected a numpy.ndarray, got list"):
        q.apply_([1.0])


def test_shape_errors_come_from_the_core():
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0, 2.0, 3.0],
                                              per_channel=True, channel_axis=-1)
    with pytest.raises(ValueError) as e:
        q(np.zeros((2, 4), np.float32))
    assert str(e.value) == ("WeightsSymmetricInferableQuantizer: the quantizer holds 3 "
                            "per-channel values but the tensor has 4 channels along channel_axis "
                            "-1 (sizes [2, 4])")
    with pytest.raises(ValueError,
                       match=r"channel_axis must be in \[0, 0\) for a tensor of rank 0"):
        q(np.zeros((), np.float32))
    r = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False,
                                              input_rank=2)
    with pytest.raises(ValueError, match="tensor rank must equal input_rank 2, got rank 3"):
        r(np.zeros((1, 1, 1), np.float32))


def test_threads_give_identical_results():
    q = qi.WeightsUniformInferableQuantizer(num_bits=8, min_range=RNG.uniform(-2, 0, 64).tolist(),
                                            max_range=RNG.uniform(0.1, 2, 64).tolist(),
                                            per_channel=True, channel_axis=1)
    x = RNG.normal(0, 1, size=(256, 64, 65)).astype(np.float32)
    n = qi.get_num_threads()
    try:
        qi.set_num_threads(1)
        one = q(x)
        qi.set_num_threads(2)
        two = q(x)
    finally:
        qi.set_num_threads(n)
    assert np.array_equal(bits(one), bits(two))
    assert np.array_equal(bits(one), bits(reference(q, x, 1)))


ALL_QUANTIZERS = [
    lambda: sym(num_bits=4, threshold=[0.7]),
    lambda: qi.WeightsPOTInferableQuantizer(num_bits=8, threshold=[0.5, 2.0, 1.0], per_channel=True,
                                            channel_axis=-1),
    lambda: qi.WeightsUniformInferableQuantizer(num_bits=6, min_range=[-0.3], max_range=[2.1],
                                                per_channel=False),
    lambda: qi.WeightsLUTSymmetricInferableQuantizer(num_bits=2, lut_values=[-90, -3, 9, 120],
                                                     threshold=[1.3, 0.2, 3.0], per_channel=True,
                                                     channel_axis=-1),
    lambda: qi.WeightsLUTPOTInferableQuantizer(num_bits=3, lut_values=[-128, -1, 0, 64, 127],
                                               threshold=[2.0], per_channel=False),
    lambda: qi.ActivationSymmetricInferableQuantizer(num_bits=8, threshold=[6.0], signed=False),
    lambda: qi.ActivationPOTInferableQuantizer(num_bits=4, threshold=[1.0], signed=True),
    lambda: qi.ActivationUniformInferableQuantizer(num_bits=8, min_range=[-1.1], max_range=[4.0]),
    lambda: qi.ActivationLutPOTInferableQuantizer(num_bits=2, lut_values=[0, 30, 200, 255],
                                                  threshold=[4.0], signed=False),
    lambda: qi.ActivationSymmetricInferableQuantizer(num_bits=8, threshold=[3.0], signed=True,
                                                     profile="tf"),
]


@pytest.mark.parametrize("target", _core.supported_simd_targets())
def test_every_simd_target(target):
    # Rows around the SIMD widths (0, 1, W-1, W, W+1, 2W+3, a prime) on every compiled target.
    quantizers = [make() for make in ALL_QUANTIZERS]
    try:
        _core.force_simd_target(target)
        for n in [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 19, 31, 32, 33, 67, 1031]:
            x = RNG.normal(0, 2, size=(n, 3)).astype(np.float32)
            for q in quantizers:
                axis = 1 if q.num_channels > 1 else None
                assert np.array_equal(bits(q(x)), bits(reference(q, x, axis))), (target, n, q)
                xt = np.ascontiguousarray(x.T)
                if axis is None:
                    assert np.array_equal(bits(q(xt)), bits(reference(q, xt))), (target, n, q)
    finally:
        _core.force_simd_target("")
    assert _core.simd_target_name() == _core.supported_simd_targets()[0]


@pytest.mark.parametrize("target", _core.supported_simd_targets())
def test_nan_keeps_sign_and_payload_on_every_simd_target(target):
    # A NaN comes out with its sign and payload, in SIMD lanes and scalar tails alike: quiet from
    # the affine grids (their arithmetic quiets a signalling NaN, as x / scale does), unchanged
    # from LUTs.
    quantizers = [make() for make in ALL_QUANTIZERS]
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7FC12345, 0xFFE00001,  # quiet
                     0x7F800001, 0xFF812345, 0x7FA00000], np.uint32)  # signalling
    try:
        _core.force_simd_target(target)
        for n in [1, 3, 5, 8, 9, 17, 33]:
            x = RNG.normal(0, 2, size=(n, 3)).astype(np.float32)
            flat = x.reshape(-1).view(np.uint32)
            flat[::2] = np.resize(nans, flat[::2].size)
            assert np.isnan(x).sum() == (x.size + 1) // 2
            for q in quantizers:
                axis = 1 if q.num_channels > 1 else None
                got = bits(q(x))
                quiet = 0x00400000 if q.plan["kind"].startswith("affine") else 0
                want = np.where(np.isnan(x), bits(x) | quiet, bits(reference(q, x, axis)))
                assert np.array_equal(got, want), (target, n, q)
    finally:
        _core.force_simd_target("")


@pytest.mark.parametrize("target", _core.supported_simd_targets())
def test_power_of_two_scales_on_every_simd_target(target):
    # Power-of-two scales take the kernels' multiply-free path (rounding in x's own units): the
    # same bits as the reference at exact ties, the clamp ends, +/-0, +/-Inf, subnormals and
    # inputs whose x / scale underflows or overflows, for tiny and huge scales.
    tiny = np.float32(1e-40)
    try:
        _core.force_simd_target(target)
        for e in [-110, -20, -7, 0, 5, 60, 100]:
            t = float(2.0 ** e)
            quantizers = [
                qi.WeightsPOTInferableQuantizer(num_bits=8, threshold=[t], per_channel=False),
                qi.ActivationPOTInferableQuantizer(num_bits=4, threshold=[t], signed=False),
                qi.WeightsSymmetricInferableQuantizer(num_bits=6, threshold=[t, 2 * t],
                                                      per_channel=True, channel_axis=0),
                qi.ActivationUniformInferableQuantizer(num_bits=8, min_range=[0.0],
                                                       max_range=[255 * t]),
            ]
            for q in quantizers:
                s = np.float32(q.plan["scale"][0])
                k = np.arange(-140, 140, dtype=np.float32)
                x = np.concatenate([(k + np.float32(0.5)) * s, k * s, (k + np.float32(0.25)) * s,
                                    np.array([0.0, -0.0, np.inf, -np.inf, tiny, -tiny, 3e38,
                                              -3e38, 1e-30, -1e-30], np.float32)])
                x = np.resize(x, (2, x.size + 3)).astype(np.float32)
                axis = 0 if q.num_channels > 1 else None
                assert np.array_equal(bits(q(x)), bits(reference(q, x, axis))), (target, e, q)
    finally:
        _core.force_simd_target("")


def test_concurrent_callers():
    # The GIL is released around the kernels; concurrent callers share qi's pool safely.
    import threading

    q = qi.WeightsSymmetricInferableQuantizer(num_bits=6, threshold=[1.0, 2.0], per_channel=True,
                                              channel_axis=0)
    xs = [RNG.normal(0, 1, size=(2, 300_000)).astype(np.float32) for _ in range(4)]
    expected = [q(x) for x in xs]
    results = [None] * len(xs)

    def work(i):
        for _ in range(5):
            results[i] = q(xs[i])

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    for got, exp in zip(results, expected):
        assert np.array_equal(bits(got), bits(exp))
