# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""qi's TensorFlow custom ops: parity of the tf profile with mct-quantizers' Keras quantizers
(random inputs and exact ties, bit for bit), identical outputs of the TF op, the numpy path and
the torch op for the same quantizer, eager vs tf.function, trainable gradients against qi's
PyTorch ops, and errors (ValueError with the core's message)."""

import json
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure.keras import ops  # noqa: E402

MCT_SUITE = "qi TF op (tf profile) vs mct-quantizers Keras"
# mct's Keras weights LUT quantizer adds eps to the threshold in float64 (numpy) before TF casts
# the divisor to float32; qi's core adds it in float32 as mct's PyTorch quantizer does. Inputs on
# exact ties between LUT outputs can then land on the other side (random inputs agree).
CROSS_SUITE = "qi TF op vs qi numpy and torch op (same profile)"
GRAD_SUITE = "qi TF gradients vs qi torch autograd"
R = np.random.default_rng(7)


def rng_for(case_id):
    return np.random.default_rng(zlib.crc32(case_id.encode()))


def random_inputs(case_id, shape, scale=3.0):
    rng = rng_for(case_id)
    n = int(np.prod(shape))
    x = np.concatenate([rng.normal(0, scale / 2, n - n // 3),
                        rng.uniform(-2 * scale, 2 * scale, n // 3)])
    return rng.permutation(x).astype(np.float32).reshape(shape)


def tie_inputs(quantizer, shape, axis):
    """Inputs exactly halfway between grid points (and the grid points), per channel: for
    affine plans lo + (k + 0.5) * scale; for LUT plans the midpoints of adjacent outputs."""
    plan = quantizer.plan
    rank = len(shape)
    channels = shape[axis] if axis is not None else 1
    rng = np.random.default_rng(11)
    x = np.empty(shape, np.float32)
    xm = np.moveaxis(x, axis, -1) if axis is not None else x[..., None]
    m = xm.shape[:-1]
    for c in range(channels):
        ci = c if plan_channels(plan) > 1 else 0
        if plan["kind"].startswith("affine"):
            s = float(plan["scale"][ci])
            if plan["kind"] == "affine_tf":
                lo, hi = float(plan["nudged_min"][ci]), float(plan["nudged_max"][ci])
            else:
                zp = float(plan["zero_point"][ci])
                lo, hi = (plan["qmin"] - zp) * s, (plan["qmax"] - zp) * s
            steps = int(round((hi - lo) / s))
            k = rng.integers(-2, steps + 2, size=m)
            v = lo + (k + 0.5 * rng.integers(0, 2, size=m)) * s
        else:
            t = np.asarray(quantizer.get_config()["threshold"], np.float64)[ci]
            outs = np.unique(np.asarray(plan["table"]).reshape(plan_channels(plan), -1)[ci])
            mids = (outs[:-1] + outs[1:]) / 2 if outs.size > 1 else outs
            v = rng.choice(np.concatenate([mids, outs, [-2 * t, 2 * t]]), size=m)
        xm[..., c] = v.astype(np.float32)
    return x


def plan_channels(plan):
    key = "scale" if "scale" in plan else "divisor"
    return len(plan[key])


def compare(case_id, got, expected, parity_stats, suite):
    got = np.ascontiguousarray(got, np.float32)
    expected = np.ascontiguousarray(expected, np.float32)
    assert got.shape == expected.shape
    mismatches = int(np.count_nonzero(got.view(np.int32) != expected.view(np.int32)))
    parity_stats.add(suite, got.size, mismatches)
    assert mismatches == 0, f"{case_id}: {mismatches} of {got.size} outputs differ"


# ---- the seed's example ---------------------------------------------------------------------

def test_seed_keras_example():
    # As the seed's README writes it: a Conv2D(6, 7) without bias, its kernel quantized.
    w_quantizer = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=2, signed=True,
                                                        per_channel=True)
    dispatcher = qi.KerasNodeQuantizationDispatcher(w_quantizer)
    layer = tf.keras.layers.Conv2D(6, 7, use_bias=False)
    model = tf.keras.Sequential([tf.keras.layers.Input(shape=(28, 28, 3)),
                                 qi.KerasQuantizationWrapper(layer, dispatcher)])
    x = random_inputs("seed", (2, 28, 28, 3), 1.0)
    y = model(x).numpy()
    assert y.shape == (2, 22, 22, 6)
    wq = w_quantizer(layer.kernel.numpy())
    assert not np.array_equal(wq, layer.kernel.numpy())  # the kernel is quantized ...
    np.testing.assert_array_equal(y, tf.nn.conv2d(x, wq, 1, "VALID").numpy())  # ... and used
    assert dispatcher.weight_quantizers == {"kernel": w_quantizer}
    # The layer keeps its variable (the quantized kernel is swapped in for the call only).
    assert isinstance(layer.kernel, tf.Variable)
    assert [w.name for w in model.trainable_weights] == ["keras_quantization_wrapper/kernel:0"] \
        or len(model.trainable_weights) == 1


# ---- parity with mct-quantizers' Keras quantizers (tf profile) ------------------------------

def mct_keras_cases():
    th32, pot16 = [float(v) for v in R.uniform(0.2, 3.0, 32)], \
        [float(2.0 ** k) for k in R.integers(-3, 3, 16)]
    mins = [float(v) for v in R.uniform(-3.0, 0.3, 24)]
    maxs = [m + float(w) for m, w in zip(mins, R.uniform(0.5, 4.0, 24))]
    lut = [-128.0, -90.0, -31.0, -2.0, 0.0, 5.0, 44.0, 127.0]
    ulut = [0.0, 3.0, 17.0, 64.0, 100.0, 180.0, 255.0]
    return [
        ("wsym_pt", "WeightsSymmetricInferableQuantizer", (12, 20, 16), None,
         dict(num_bits=8, threshold=[1.3], per_channel=False)),
        ("wsym_pc_last", "WeightsSymmetricInferableQuantizer", (5, 3, 7, 32), 3,
         dict(num_bits=4, threshold=th32, per_channel=True, channel_axis=-1, input_rank=4)),
        ("wsym_pc0", "WeightsSymmetricInferableQuantizer", (32, 40, 9), 0,
         dict(num_bits=8, threshold=th32, per_channel=True, channel_axis=0, input_rank=3)),
        ("wpot_pc1", "WeightsPOTInferableQuantizer", (30, 16, 20), 1,
         dict(num_bits=8, threshold=pot16, per_channel=True, channel_axis=1, input_rank=3)),
        ("wuni_pt", "WeightsUniformInferableQuantizer", (40, 50), None,
         dict(num_bits=8, min_range=[-0.71], max_range=[1.93], per_channel=False)),
        ("wuni_pc2", "WeightsUniformInferableQuantizer", (20, 30, 24), 2,
         dict(num_bits=6, min_range=mins, max_range=maxs, per_channel=True, channel_axis=2,
              input_rank=3)),
        ("wlut_pc", "WeightsLUTSymmetricInferableQuantizer", (3, 3, 8, 32), 3,
         dict(num_bits=3, lut_values=lut, threshold=th32, per_channel=True, channel_axis=3,
              input_rank=4)),
        ("wlutpot_pt", "WeightsLUTPOTInferableQuantizer", (40, 50), None,
         dict(num_bits=3, lut_values=lut, threshold=[2.0], per_channel=False)),
        ("asym_s", "ActivationSymmetricInferableQuantizer", (8, 10, 10, 16), None,
         dict(num_bits=8, threshold=[2.9], signed=True)),
        ("asym_u", "ActivationSymmetricInferableQuantizer", (8, 10, 10, 16), None,
         dict(num_bits=8, threshold=[2.9], signed=False)),
        ("apot", "ActivationPOTInferableQuantizer", (8, 100), None,
         dict(num_bits=4, threshold=[4.0], signed=True)),
        ("auni", "ActivationUniformInferableQuantizer", (8, 100), None,
         dict(num_bits=8, min_range=[-1.37], max_range=[2.6])),
        ("alutpot_u", "ActivationLutPOTInferableQuantizer", (8, 100), None,
         dict(num_bits=3, lut_values=ulut, threshold=[4.0], signed=False)),
    ]


MCT_CASES = mct_keras_cases()


def _case_id(c):
    return c.values[0][0] if hasattr(c, "values") else c[0]


@pytest.mark.parametrize("case", MCT_CASES, ids=[_case_id(c) for c in MCT_CASES])
def test_tf_op_matches_mct_keras(case, parity_stats):
    mk = pytest.importorskip("mct_quantizers.keras.quantizers")
    case_id, name, shape, axis, kwargs = case
    # Weights LUT quantizers take the tf profile too (eps added in float64, as Keras does).
    ours = getattr(qi, name)(**kwargs, profile="tf") if name != "ActivationLutPOTInferableQuantizer" \
        else getattr(qi, name)(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(mk, name)(**kwargs)
    for kind, x in (("random", random_inputs(case_id, shape)),
                    ("ties", tie_inputs(ours, shape, axis))):
        expected = theirs(tf.constant(x)).numpy()
        compare(f"{case_id}/{kind}", ours(tf.constant(x)).numpy(), expected, parity_stats,
                MCT_SUITE)


# ---- the same quantizer through TF, numpy and torch -----------------------------------------

CROSS_CASES = [
    ("wsym", "WeightsSymmetricInferableQuantizer", (6, 7, 8),
     dict(num_bits=8, threshold=[0.5 + 0.25 * i for i in range(8)], per_channel=True,
          channel_axis=-1)),
    ("wpot", "WeightsPOTInferableQuantizer", (9, 4, 5),
     dict(num_bits=4, threshold=[1.0, 2.0, 0.5, 4.0], per_channel=True, channel_axis=1)),
    ("wuni", "WeightsUniformInferableQuantizer", (50, 40),
     dict(num_bits=5, min_range=[-0.9], max_range=[2.2], per_channel=False)),
    ("asym", "ActivationSymmetricInferableQuantizer", (4, 250),
     dict(num_bits=8, threshold=[3.0], signed=False)),
    ("auni", "ActivationUniformInferableQuantizer", (4, 250),
     dict(num_bits=7, min_range=[-2.1], max_range=[1.3])),
    ("wlut", "WeightsLUTSymmetricInferableQuantizer", (10, 3),
     dict(num_bits=2, lut_values=[-100, -3, 9, 120], threshold=[1.0, 2.0, 3.0],
          per_channel=True, channel_axis=1)),
]


@pytest.mark.parametrize("profile", ["torch", "tf"])
@pytest.mark.parametrize("case", CROSS_CASES, ids=[c[0] for c in CROSS_CASES])
def test_tf_numpy_and_torch_agree(case, profile, parity_stats):
    case_id, name, shape, kwargs = case
    q = getattr(qi, name)(**kwargs, profile=profile)
    x = random_inputs(case_id + profile, shape)
    if "LUT" not in name.upper():  # every other input on an exact tie of this profile's grid
        axis = kwargs["channel_axis"] % len(shape) if kwargs.get("per_channel") else None
        x.reshape(-1)[::2] = tie_inputs(q, shape, axis).reshape(-1)[::2]
    y_tf = q(tf.constant(x)).numpy()
    compare(f"{case_id}/{profile}/numpy", y_tf, q(x), parity_stats, CROSS_SUITE)
    torch = pytest.importorskip("torch")
    y_torch = q(torch.from_numpy(x.copy())).numpy()
    compare(f"{case_id}/{profile}/torch", y_tf, y_torch, parity_stats, CROSS_SUITE)
    # The very JSON text the TF op reads loads on the torch side.
    text = ops.quantizer_json(q)
    compare(f"{case_id}/{profile}/json", y_tf,
            torch.ops.qi.fake_quant(torch.from_numpy(x.copy()), text).numpy(), parity_stats,
            CROSS_SUITE)


def test_eager_and_tf_function_agree():
    q = qi.WeightsUniformInferableQuantizer(num_bits=4, min_range=[-1.0, -0.5, -2.0],
                                            max_range=[1.0, 3.0, 0.5], per_channel=True,
                                            channel_axis=0, profile="tf")
    x = random_inputs("fn", (3, 17, 5))
    f = tf.function(lambda t: q(t))
    np.testing.assert_array_equal(f(tf.constant(x)).numpy(), q(tf.constant(x)).numpy())
    # Unknown shapes in the graph too.
    g = tf.function(lambda t: q(t), input_signature=[tf.TensorSpec([None, None, None])])
    np.testing.assert_array_equal(g(tf.constant(x)).numpy(), q(x))
    # A variable is read, and the gradient is the straight-through identity.
    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(q(v) * 2.0)
    np.testing.assert_array_equal(tape.gradient(y, v).numpy(), np.full_like(x, 2.0))


def test_nan_inf_and_empty():
    q = qi.ActivationSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], signed=True,
                                                 profile="tf")
    y = q(tf.constant([np.nan, np.inf, -np.inf, 0.0], tf.float32)).numpy()
    assert np.isnan(y[0]) and y[1] == 1.0 - 1.0 / 128 and y[2] == -1.0 and y[3] == 0.0
    assert q(tf.zeros([0, 3])).shape == (0, 3)


# ---- errors -----------------------------------------------------------------------------------

def test_errors_are_value_errors_with_core_message():
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0, 2.0, 3.0],
                                              per_channel=True, channel_axis=1)
    x = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError) as eager:
        q(tf.constant(x))
    with pytest.raises(ValueError) as numpy_err:
        q(x)
    assert str(eager.value) == str(numpy_err.value)
    assert "per-channel values but the tensor has 5 channels" in str(eager.value)
    # Graph construction (tf.function) raises the same message.
    with pytest.raises(ValueError) as graph:
        tf.function(lambda t: q(t))(tf.constant(x))
    assert str(graph.value).strip().endswith(str(numpy_err.value))
    with pytest.raises(ValueError, match="channel_axis must be in"):
        q(tf.zeros([3]))
    with pytest.raises(ValueError, match="float32"):
        q(tf.zeros([2, 3], tf.float64))
    with pytest.raises(ValueError, match="malformed JSON"):
        ops._run(ops._ops.qi_fake_quant, tf.zeros([2]), quantizer="{bad")
    with pytest.raises(ValueError, match=r"QiSymmetricQuant: threshold must be > 0, got -1 at "
                                         r"index 0"):
        ops.symmetric_quant(tf.zeros([2]), tf.constant([-1.0]), 8)
    with pytest.raises(ValueError, match="num_bits must be in"):
        ops.symmetric_quant(tf.zeros([2]), tf.constant([1.0]), 1)
    with pytest.raises(ValueError, match="mode must be"):
        ops.uniform_quant(tf.zeros([2]), [-1.0], [1.0], 8, mode="x")
    with pytest.raises(ValueError, match="holds 2 values but the tensor has 3 channels"):
        ops.symmetric_quant(tf.zeros([4, 3]), tf.constant([1.0, 2.0]), 8, channel_axis=1)


def test_import_does_not_import_torch():
    code = ("import sys, quantizers_infrastructure as qi, quantizers_infrastructure.keras; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# ---- trainable ops: gradients against qi's PyTorch autograd -----------------------------------

def _torch_grads(fn, x, params):
    torch = pytest.importorskip("torch")
    import quantizers_infrastructure.pytorch  # noqa: F401 (loads torch.ops.qi)
    tx = torch.tensor(x, requires_grad=True)
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    dy = torch.tensor(np.linspace(-1, 1, x.size, dtype=np.float32).reshape(x.shape))
    y = fn(tx, *tp)
    (y * dy).sum().backward()
    return y.detach().numpy(), [tx.grad.numpy()] + [p.grad.numpy() for p in tp]


def _tf_grads(fn, x, params):
    tx = tf.Variable(x)
    tp = [tf.Variable(p) for p in params]
    dy = tf.constant(np.linspace(-1, 1, x.size, dtype=np.float32).reshape(x.shape))
    with tf.GradientTape() as tape:
        y = fn(tx, *tp)
        loss = tf.reduce_sum(y * dy)
    grads = tape.gradient(loss, [tx] + tp)
    return y.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("mode", ["ste", "lsq"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_symmetric_quant_grads_match_torch(mode, per_channel, parity_stats):
    torch = pytest.importorskip("torch")
    x = random_inputs(f"sg{mode}{per_channel}", (6, 5, 4), 2.0)
    t = np.array([0.7, 1.3, 2.1, 0.4] if per_channel else [1.1], np.float32)
    axis = -1 if per_channel else None
    gs = 0.05
    y_t, g_t = _torch_grads(lambda a, b: torch.ops.qi.symmetric_quant(a, b, 4, True, axis, mode,
                                                                         gs), x, [t])
    for fn in (lambda a, b: ops.symmetric_quant(a, b, 4, True, axis, mode, gs),
               tf.function(lambda a, b: ops.symmetric_quant(a, b, 4, True, axis, mode, gs))):
        y_k, g_k = _tf_grads(fn, x, [t])
        compare("sym/y", y_k, y_t, parity_stats, GRAD_SUITE)
        for i, (a, b) in enumerate(zip(g_k, g_t)):
            compare(f"sym/grad{i}", a, b, parity_stats, GRAD_SUITE)


@pytest.mark.parametrize("mode", ["ste", "lsq"])
@pytest.mark.parametrize("activation", [False, True])
def test_uniform_quant_grads_match_torch(mode, activation, parity_stats):
    torch = pytest.importorskip("torch")
    x = random_inputs(f"ug{mode}{activation}", (7, 3), 2.0)
    per_channel = not activation
    lo = np.array([-1.1, -0.3, 0.2] if per_channel else [-0.8], np.float32)
    hi = np.array([0.9, 2.3, 1.7] if per_channel else [1.9], np.float32)
    axis = 1 if per_channel else None
    y_t, g_t = _torch_grads(lambda a, b, c: torch.ops.qi.uniform_quant(
        a, b, c, 5, axis, mode, 0.1, activation), x, [lo, hi])
    y_k, g_k = _tf_grads(lambda a, b, c: ops.uniform_quant(a, b, c, 5, axis, mode, 0.1,
                                                           activation), x, [lo, hi])
    compare("uni/y", y_k, y_t, parity_stats, GRAD_SUITE)
    for i, (a, b) in enumerate(zip(g_k, g_t)):
        compare(f"uni/grad{i}", a, b, parity_stats, GRAD_SUITE)


def test_soft_round_matches_torch(parity_stats):
    torch = pytest.importorskip("torch")
    import quantizers_infrastructure.pytorch  # noqa: F401
    w = random_inputs("soft", (8, 4), 0.5)
    # 8-bit grids, delta = threshold / 128 = 0.01, 0.02, 0.015, 0.03.
    threshold = np.array([1.28, 2.56, 1.92, 3.84], np.float32)
    alpha = random_inputs("alpha", (8, 4), 2.0)
    q_eval = ops.soft_round(w, alpha, threshold, 8, channel_axis=1, training=False)
    steps = q_eval.numpy() / (threshold / 128)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # hard rounding: on the grid
    ta = torch.tensor(alpha, requires_grad=True)
    tq = torch.ops.qi.soft_round(torch.tensor(w), ta, torch.tensor(threshold), 8, False, 1, True)
    (tq * 3.0).sum().backward()
    va = tf.Variable(alpha)
    with tf.GradientTape() as tape:
        q = ops.soft_round(w, va, threshold, 8, channel_axis=1, training=True)
        loss = tf.reduce_sum(q * 3.0)
    compare("soft/q", q.numpy(), tq.detach().numpy(), parity_stats, GRAD_SUITE)
    compare("soft/dalpha", tape.gradient(loss, va).numpy(), ta.grad.numpy(), parity_stats,
            GRAD_SUITE)
    # The uniform grid too.
    lo, hi = np.array([-0.5], np.float32), np.array([0.7], np.float32)
    tq = torch.ops.qi.soft_round(torch.tensor(w), torch.tensor(alpha), torch.tensor(lo), 4,
                                 False, None, False, max_range=torch.tensor(hi))
    compare("soft/q-uniform", ops.soft_round(w, alpha, lo, 4, training=False, max_range=hi).numpy(),
            tq.numpy(), parity_stats, GRAD_SUITE)
    ra = torch.tensor(alpha, requires_grad=True)
    reg_t = torch.ops.qi.soft_round_regularization(ra, 2.0)
    reg_t.backward()
    with tf.GradientTape() as tape:
        reg = ops.soft_round_regularization(va, 2.0)
    np.testing.assert_allclose(reg.numpy(), reg_t.item(), rtol=1e-6)
    compare("soft/dreg", tape.gradient(reg, va).numpy(), ra.grad.numpy(), parity_stats,
            GRAD_SUITE)


def test_quantizer_json_loads_on_both_sides():
    q = qi.WeightsLUTPOTInferableQuantizer(num_bits=3, lut_values=[-8, -2, 0, 3, 7],
                                           threshold=[2.0], per_channel=False)
    from quantizers_infrastructure.keras import deserialize_quantizer, serialize_quantizer
    d = serialize_quantizer(q)
    assert d == json.loads(q.to_json())
    q2 = qi.quantizer_from_json(json.dumps(d))
    q3 = deserialize_quantizer(d)
    x = random_inputs("json", (5, 9))
    np.testing.assert_array_equal(q2(x), q(tf.constant(x)).numpy())
    np.testing.assert_array_equal(q3(tf.constant(x)).numpy(), q(x))
