# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The eager fast path of q(x) on torch tensors (quantizers_infrastructure._torch_fast): it gives
qi::quantize's outputs bit for bit, and it steps aside (returns None, so the call goes through
the dispatcher) whenever something must see the op: autograd, forward-mode AD, dispatch and
function modes, tensor subclasses, functorch, the JIT tracer."""

import pytest

torch = pytest.importorskip("torch")

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure._torch_fast import FastQuantizer  # noqa: E402
from quantizers_infrastructure.pytorch import _fast_of, plan_tensor  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402


def _quantizers():
    return [qi.WeightsSymmetricInferableQuantizer(4, [0.5, 1.0, 2.0], True, 1),
            qi.WeightsUniformInferableQuantizer(6, [-0.3] * 3, [0.7] * 3, True, 1),
            qi.ActivationPOTInferableQuantizer(8, [2.0], True),
            qi.WeightsLUTSymmetricInferableQuantizer(4, [-7, -2, 0, 3, 7], [1.0] * 3, True, 1,
                                                     input_rank=3)]


def _dispatcher(q, x):
    return torch.ops.qi.quantize(x, plan_tensor(q), q.kernel_channel_axis, q.kernel_input_rank)


_SAME_SIZE_INT = {torch.float32: torch.int32, torch.float16: torch.int16,
                  torch.bfloat16: torch.int16, torch.float64: torch.int64}


def bits_equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(_SAME_SIZE_INT[a.dtype]), b.contiguous().view(_SAME_SIZE_INT[b.dtype]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_fast_path_equals_the_op(dtype, layout):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(4, 3, 40, generator=g) * 2
    x = {"contiguous": base, "transposed": base.transpose(0, 2).contiguous().transpose(0, 2),
         "sliced": torch.randn(4, 3, 80, generator=g)[..., ::2]}[layout].to(dtype)
    for q in _quantizers():
        y = _fast_of(q)(x)
        assert y is not None, type(q).__name__
        assert bits_equal(y, _dispatcher(q, x)), type(q).__name__
        assert bits_equal(q(x), y)
        assert y.stride() == torch.empty_like(x).stride()


def test_autograd_calls_take_the_op_and_keep_the_straight_through_gradient():
    q = _quantizers()[0]
    x = torch.randn(2, 3, 5, requires_grad=True)
    assert _fast_of(q)(x) is None
    y = q(x)
    assert y.grad_fn is not None
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    with torch.no_grad():  # nothing to record: the fast path takes it
        assert _fast_of(q)(x) is not None
        assert q(x).grad_fn is None
    w = torch.nn.Parameter(torch.randn(2, 3, 5))  # Parameter is a plain tensor to the kernel
    with torch.inference_mode():
        assert _fast_of(q)(w) is not None


def test_forward_mode_ad_is_not_dropped():
    import torch.autograd.forward_ad as fwAD
    q = _quantizers()[0]
    with fwAD.dual_level():
        x = fwAD.make_dual(torch.randn(2, 3, 5), torch.ones(2, 3, 5))
        assert _fast_of(q)(x) is None


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_dispatch_and_function_modes_see_the_op():
    q = _quantizers()[2]
    x = torch.randn(16)
    with _Recorder() as rec:
        y = q(x)
    assert "qi.quantize.default" in rec.ops
    assert bits_equal(y, _fast_of(q)(x))

    class Fn(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))
    with Fn():
        assert _fast_of(q)(x) is None


def test_subclasses_functorch_and_tracing_take_the_op():
    q = _quantizers()[2]

    class Sub(torch.Tensor):
        pass
    assert _fast_of(q)(torch.randn(8).as_subclass(Sub)) is None
    seen = []

    def probe(t):
        seen.append(_fast_of(q)(t))
        return q(t)
    torch.func.vmap(probe)(torch.randn(3, 8))
    assert seen == [None]
    traced = torch.jit.trace(lambda t: q(t), torch.randn(8))
    assert "qi::" in str(traced.graph)


def test_profiler_records_the_call():
    q = _quantizers()[2]
    x = torch.randn(64)
    with torch.profiler.profile() as prof:
        q(x)
    assert "qi::quantize" in {e.name for e in prof.events()}


def test_bad_inputs():
    with pytest.raises(ValueError, match="plan must be a 1-D int32 CPU tensor"):
        FastQuantizer(torch.zeros(3))
    with pytest.raises(TypeError, match="plan must be an int32 tensor"):
        FastQuantizer([1, 2, 3])
    with pytest.raises(ValueError, match="packed"):
        FastQuantizer(torch.zeros(3, dtype=torch.int32))
    fast = _fast_of(_quantizers()[0])
    with pytest.raises(TypeError, match="exactly one tensor"):
        fast()
    assert fast("not a tensor") is None  # the front end then raises its own TypeError
    with pytest.raises(ValueError, match="channel"):  # the kernel's checks, as the op's
        fast(torch.randn(2, 5))
    assert fast(torch.zeros(3, 3, dtype=torch.int32)) is None  # the op reports the dtype
    with pytest.raises(ValueError, match="must be float32, float16, bfloat16 or float64"):
        _quantizers()[0](torch.zeros(3, 3, dtype=torch.int32))
