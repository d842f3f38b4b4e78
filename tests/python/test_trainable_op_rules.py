# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The trainable ops apply the inferable quantizers' parameter rules at every call, in both
frameworks (one set of rules, in the core): a step that is not a finite, normal float32, a range
with equal ends and a non-finite soft-rounding beta are errors naming the parameter; a range whose
ends crossed in training is used in order; a NaN input
gives NaN parameter gradients; parameter gradients do not depend on the input's strides.
Each case is a finding of the fuzzing and API sweep that once returned NaN, zeros or a subnormal
grid silently."""

import numpy as np
import pytest
import torch

import quantizers_infrastructure.pytorch  # noqa: F401  (registers torch.ops.qi)

X = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)

# (what, torch call, TF call, message after the op's name). The TF calls take the keras ops
# module. The op names the message: qi::symmetric_quant in torch, QiSymmetricQuant in TF.
BAD_PARAMETERS = [
    ("group size below one",
     lambda x: torch.ops.qi.symmetric_quant(x, torch.ones(4), 8, True, 0, "ste", 1.0,
                                            group_size=0),
     lambda ops, x: ops.symmetric_quant(x, [1.0] * 4, 8, channel_axis=0, group_size=0),
     r"group_size must be >= 1 \(or None: no groups\), got 0"),
    ("group count that does not fit the tensor (a ragged last group counts)",
     lambda x: torch.ops.qi.uniform_quant(x, -torch.ones(4), torch.ones(4), 8, 0, "lsq", 1.0,
                                          False, group_size=2, group_axis=1),
     lambda ops, x: ops.uniform_quant(x, [-1.0] * 4, [1.0] * 4, 8, channel_axis=0, mode="lsq",
                                      group_size=2, group_axis=1),
     r"the quantizer holds 4 values \(one per channel and group\) but the tensor has 4 channels "
     r"along channel_axis 0 x 2 groups of up to 2 along group_axis 1 = 8 \(sizes \[4, 3\]\)"),
    ("groups along the channel axis",
     lambda x: torch.ops.qi.symmetric_quant(x, torch.ones(4), 8, True, 0, "ste", 1.0,
                                            group_size=1, group_axis=-2),
     lambda ops, x: ops.symmetric_quant(x, [1.0] * 4, 8, channel_axis=0, group_size=1,
                                        group_axis=-2),
     r"channel_axis 0 and group_axis -2 are the same axis of a tensor of rank 2"),
    ("uniform range that overflows the step",
     lambda x: torch.ops.qi.uniform_quant(x, torch.tensor([-3e38]), torch.tensor([3e38]), 8, None,
                                          "ste", 1.0, False),
     lambda ops, x: ops.uniform_quant(x, [-3e38], [3e38], 8),
     r"max_range - min_range must give a finite, normal float32 step "
     r"\(max - min\) / 255, got min_range=-3.00000001e\+38 and max_range=3.00000001e\+38 at index 0"),
    ("threshold whose step is below the smallest normal float",
     lambda x: torch.ops.qi.symmetric_quant(x, torch.tensor([1e-44]), 8, True, None, "ste", 1.0),
     lambda ops, x: ops.symmetric_quant(x, [1e-44], 8),
     r"threshold is too small: the step threshold / 2\^7 must be a normal "
     r"float32 \(>= 1.17549435e-38\), got threshold 9.80908925e-45 at index 0"),
    ("threshold giving a subnormal grid",
     lambda x: torch.ops.qi.symmetric_quant(x, torch.tensor([1e-40]), 8, True, None, "lsq", 1.0),
     lambda ops, x: ops.symmetric_quant(x, [1e-40], 8, mode="lsq"),
     r"threshold is too small: the step threshold / 2\^7 must be a normal "
     r"float32 \(>= 1.17549435e-38\), got threshold 9.9999461e-41 at index 0"),
    ("NaN threshold",
     lambda x: torch.ops.qi.symmetric_quant(x, torch.tensor([float("nan")]), 8, True, None, "ste",
                                            1.0),
     lambda ops, x: ops.symmetric_quant(x, [float("nan")], 8),
     r"threshold must be finite, got nan at index 0"),
    ("range with equal ends",
     lambda x: torch.ops.qi.uniform_quant(x, torch.tensor([1.0]), torch.tensor([1.0]), 8, None,
                                          "lsq", 1.0, False),
     lambda ops, x: ops.uniform_quant(x, [1.0], [1.0], 8, mode="lsq"),
     r"min_range and max_range must differ, got both 1 at index 0"),
    ("NaN soft-rounding beta",
     lambda x: torch.ops.qi.soft_round_regularization(x, float("nan")),
     lambda ops, x: ops.soft_round_regularization(x, float("nan")),
     r"beta must be finite, got nan"),
    ("infinite soft-rounding beta",
     lambda x: torch.ops.qi.soft_round_regularization(x, float("inf")),
     lambda ops, x: ops.soft_round_regularization(x, float("inf")),
     r"beta must be finite, got inf"),
]


@pytest.mark.parametrize("what,torch_call,tf_call,message", BAD_PARAMETERS,
                         ids=[c[0] for c in BAD_PARAMETERS])
def test_torch_op_refuses(what, torch_call, tf_call, message):
    with pytest.raises(ValueError, match=r"^qi::[a-z_]+: " + message):
        torch_call(torch.from_numpy(X))


@pytest.mark.parametrize("what,torch_call,tf_call,message", BAD_PARAMETERS,
                         ids=[c[0] for c in BAD_PARAMETERS])
def test_tf_op_refuses(what, torch_call, tf_call, message):
    pytest.importorskip("tensorflow")
    from quantizers_infrastructure.keras import ops
    if "too small" in message:
        # TensorFlow runs kernels with subnormals flushed to zero: the op reads the threshold as 0.
        message = r"threshold must be > 0, got 0 at index 0"
    with pytest.raises(ValueError, match=r"^Qi[A-Za-z]+: " + message):
        tf_call(ops, X)


@pytest.mark.parametrize("per_channel", [False, True])
def test_nan_input_gives_nan_lsq_parameter_gradients(per_channel):
    x = torch.from_numpy(X.copy())
    x[1, 2] = float("nan")
    x.requires_grad_()
    axis = 1 if per_channel else None
    t = torch.full((3 if per_channel else 1,), 1.5, requires_grad=True)
    torch.ops.qi.symmetric_quant(x, t, 8, True, axis, "lsq", 1.0).sum().backward()
    # Only the NaN's channel is NaN (per channel); per tensor the one threshold is.
    expected = [False, False, True] if per_channel else [True]
    assert torch.isnan(t.grad).tolist() == expected
    lo = torch.full_like(t, -1.0).requires_grad_()
    hi = torch.full_like(t, 2.0).requires_grad_()
    torch.ops.qi.uniform_quant(x.detach(), lo, hi, 8, axis, "lsq", 1.0, False).sum().backward()
    assert torch.isnan(lo.grad).tolist() == expected
    assert torch.isnan(hi.grad).tolist() == expected


def test_nan_input_gives_nan_tf_lsq_threshold_gradient():
    tf = pytest.importorskip("tensorflow")
    from quantizers_infrastructure.keras import ops
    x = X.copy()
    x[0, 0] = np.nan
    t = tf.Variable([1.5])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(ops.symmetric_quant(tf.constant(x), t, 8, mode="lsq"))
    assert np.isnan(tape.gradient(y, t).numpy()).all()


@pytest.mark.parametrize("mode", ["ste", "lsq"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_parameter_gradients_do_not_depend_on_strides(mode, per_channel):
    """An expanded view (stride 0), a transposed view and a contiguous copy of the same values
    give the same threshold, range and scale gradients, bit for bit."""
    base = torch.from_numpy(np.random.default_rng(5).standard_normal((1, 67)).astype(np.float32))
    dense = base.expand(301, 67).contiguous()
    views = {"expanded": base.expand(301, 67),
             "transposed": dense.t().contiguous().t(),
             "contiguous": dense}
    axis = 1 if per_channel else None
    c = 67 if per_channel else 1
    grads = {}
    for name, v in views.items():
        x = v.detach().requires_grad_(False)
        t = torch.full((c,), 1.25, requires_grad=True)
        lo = torch.full((c,), -1.0, requires_grad=True)
        hi = torch.full((c,), 1.5, requires_grad=True)
        s = torch.full((c,), 0.004, requires_grad=True)
        dy = torch.linspace(-1, 1, 301 * 67).reshape(301, 67)
        torch.ops.qi.symmetric_quant(x, t, 8, True, axis, mode, 0.3).backward(dy)
        torch.ops.qi.uniform_quant(x, lo, hi, 8, axis, mode, 0.3, False).backward(dy)
        torch.ops.qi.format_quant(x, s, torch.empty(0), "E4M3", "scale", axis, mode,
                                  0.3).backward(dy)
        grads[name] = (t.grad, lo.grad, hi.grad, s.grad)
    for name in ("expanded", "transposed"):
        for got, want in zip(grads[name], grads["contiguous"]):
            assert torch.equal(got.view(torch.int32), want.view(torch.int32)), name


@pytest.mark.parametrize("mode", ["ste", "lsq"])
@pytest.mark.parametrize("activation", [False, True])
def test_crossed_range_is_used_in_order(mode, activation):
    """Training can move min_range past max_range (2-bit activations do, with SGD). The op then
    quantizes over the same interval as with the ends in order, and each end's gradient reaches
    the variable it came from: swapping the two variables swaps their gradients, bit for bit."""
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((64, 3)).astype(np.float32))
    dy = torch.linspace(-1, 1, 64 * 3).reshape(64, 3)
    lo_vals, hi_vals = [-0.7, 0.2, -1.5], [1.1, 2.0, -0.3]

    def run(first, second):
        a = torch.tensor(first, requires_grad=True)
        b = torch.tensor(second, requires_grad=True)
        xi = x.clone().requires_grad_()
        y = torch.ops.qi.uniform_quant(xi, a, b, 2, 1, mode, 0.5, activation)
        y.backward(dy)
        return y.detach(), a.grad, b.grad, xi.grad

    y_in_order, g_lo, g_hi, gx = run(lo_vals, hi_vals)
    y_crossed, g_a, g_b, gx_crossed = run(hi_vals, lo_vals)
    assert torch.equal(y_crossed, y_in_order)
    assert torch.equal(gx_crossed, gx)
    assert torch.equal(g_a, g_hi) and torch.equal(g_b, g_lo)
    assert (g_lo != 0).any() and (g_hi != 0).any()


def test_crossed_range_converts_to_the_range_in_order():
    """A trained uniform activation quantizer whose ends crossed converts to the inferable
    quantizer of the ordered range, bit for bit with its own eval forward (PyTorch and Keras)."""
    import quantizers_infrastructure as qi
    from quantizers_infrastructure.pytorch.trainable_quantizers import (
        get_trainable_quantizer_class)
    cls = get_trainable_quantizer_class(qi.QuantizationTarget.Activation,
                                        qi.QuantizationMethod.UNIFORM, qi.TrainingMethod.LSQ)
    cfg = qi.TrainableQuantizerActivationConfig(qi.QuantizationMethod.UNIFORM, 2,
                                                {"range_min": -1.0, "range_max": 3.0})
    q = cls(cfg)
    holder = torch.nn.Module()
    q.initialize_quantization(None, "act", holder)
    with torch.no_grad():
        q.get_quantizer_variable("min").fill_(2.5)   # crossed: min > max
        q.get_quantizer_variable("max").fill_(-0.5)
    x = torch.from_numpy(np.linspace(-2, 4, 97, dtype=np.float32))
    y_eval = q(x, training=False)
    inferable = q.convert2inferable()
    assert inferable.get_config()["min_range"][0] <= 0 < inferable.get_config()["max_range"][0]
    assert torch.equal(inferable(x), y_eval)
    assert torch.equal(q(x, training=True).detach(), y_eval)


def test_tf_crossed_range_is_used_in_order():
    tf = pytest.importorskip("tensorflow")
    from quantizers_infrastructure.keras import ops
    lo, hi = tf.Variable([-0.4]), tf.Variable([1.3])
    with tf.GradientTape(persistent=True) as tape:
        y_in_order = ops.uniform_quant(tf.constant(X), lo, hi, 2, mode="lsq")
        y_crossed = ops.uniform_quant(tf.constant(X), hi, lo, 2, mode="lsq")
        loss_in_order = tf.reduce_sum(y_in_order * X)
        loss_crossed = tf.reduce_sum(y_crossed * X)
    np.testing.assert_array_equal(y_crossed.numpy(), y_in_order.numpy())
    d_lo, d_hi = tape.gradient(loss_in_order, [lo, hi])
    d_hi_crossed, d_lo_crossed = tape.gradient(loss_crossed, [hi, lo])
    np.testing.assert_array_equal(d_lo_crossed.numpy(), d_lo.numpy())
    np.testing.assert_array_equal(d_hi_crossed.numpy(), d_hi.numpy())
