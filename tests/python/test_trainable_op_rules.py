# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The trainable ops apply the inferable quantizers' parameter rules at every call, in both
frameworks (one set of rules, in the core): a step that is not a finite, normal float32, ranges
out of order and a non-finite soft-rounding beta are errors naming the parameter; a NaN input
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
    ("ranges out of order",
     lambda x: torch.ops.qi.uniform_quant(x, torch.tensor([1.0]), torch.tensor([-1.0]), 8, None,
                                          "lsq", 1.0, False),
     lambda ops, x: ops.uniform_quant(x, [1.0], [-1.0], 8, mode="lsq"),
     r"min_range must be < max_range, got min_range=1 and max_range=-1 at index 0"),
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
    give the same threshold and range gradients, bit for bit."""
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
        dy = torch.linspace(-1, 1, 301 * 67).reshape(301, 67)
        torch.ops.qi.symmetric_quant(x, t, 8, True, axis, mode, 0.3).backward(dy)
        torch.ops.qi.uniform_quant(x, lo, hi, 8, axis, mode, 0.3, False).backward(dy)
        grads[name] = (t.grad, lo.grad, hi.grad)
    for name in ("expanded", "transposed"):
        for got, want in zip(grads[name], grads["contiguous"]):
            assert torch.equal(got.view(torch.int32), want.view(torch.int32)), name
