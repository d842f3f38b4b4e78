# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The CUDA layer (libqi_torch_cuda.so, QI_WITH_CUDA): on a GPU, every registry quantizer gives the
CPU kernels' bits in float32, float16, bfloat16 and float64, in contiguous, channels-last and
strided layouts; the trainable ops' forwards and input gradients are bit-identical and their
parameter gradients within a bound from the order of the float64 sums; a training step is
captured in a CUDA graph and replayed with no host synchronization. Without a GPU only the tests
of the build itself run: the library is loaded exactly when it was built and a GPU is visible,
and (when built) it registers a CUDA kernel for every op it claims, loads with no GPU and
carries its own CUDA runtime."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import quantizers_infrastructure as qi  # noqa: E402
import quantizers_infrastructure.pytorch as qp  # noqa: E402
from quantizers_infrastructure import _core  # noqa: E402

PACKAGE = os.path.dirname(os.path.abspath(qi.__file__))
CUDA_LIBRARY = os.path.join(PACKAGE, "libqi_torch_cuda.so")
HAS_GPU = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU (scripts/qi gpu-check)")
built = pytest.mark.skipif(not os.path.exists(CUDA_LIBRARY),
                           reason="the CUDA layer is not built (scripts/qi cuda-build)")

# Every op with a CUDA kernel (torch/csrc/cuda/ops.cc).
CUDA_OPS = ["fake_quant", "fake_quant.out", "quantize", "quantize.out", "symmetric_quant",
            "_symmetric_quant_backward", "uniform_quant", "_uniform_quant_backward",
            "format_quant", "_format_quant_backward"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
INFERABLE = _core.inferable_quantizers()


# ---- the build (runs everywhere) -----------------------------------------------------------------

def test_cuda_library_is_loaded_exactly_when_built_and_a_gpu_is_visible():
    expected = CUDA_LIBRARY if (HAS_GPU and os.path.exists(CUDA_LIBRARY)) else None
    assert qp.cuda_library_path() == expected
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key("qi::quantize", "CUDA")
    assert has_kernel == (expected is not None)


@built
def test_cuda_library_registers_a_cuda_kernel_for_every_op_and_loads_without_a_gpu():
    # A fresh process, so that this one's registrations stay as the package made them.
    code = (
        "import json, sys, torch, quantizers_infrastructure.pytorch as qp\n"
        "torch.ops.load_library(sys.argv[1])\n"
        "ops = json.loads(sys.argv[2])\n"
        "print(json.dumps({op: torch._C._dispatch_has_kernel_for_dispatch_key('qi::' + op, 'CUDA')"
        " for op in ops}))\n")
    out = subprocess.run([sys.executable, "-c", code, CUDA_LIBRARY, json.dumps(CUDA_OPS)],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {op: True for op in CUDA_OPS}


@built
def test_cuda_library_carries_its_runtime_and_the_cpu_library_needs_none():
    def needed(path):
        out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True)
        return [line.split("[")[1].rstrip("]") for line in out.stdout.splitlines()
                if "(NEEDED)" in line]
    cuda_needs = needed(CUDA_LIBRARY)
    assert "libc10_cuda.so" in cuda_needs
    assert not [n for n in cuda_needs if n.startswith("libcudart")]  # the static runtime
    cpu_needs = needed(os.path.join(PACKAGE, "libqi_torch.so"))
    assert not [n for n in cpu_needs if "cuda" in n]


# ---- inputs ------------------------------------------------------------------------------------

def _example(entry, channels):
    cls = qi.INFERABLE_QUANTIZER_CLASSES[entry["class_name"]]
    return cls.from_config(json.loads(_core.example_config(entry["class_name"], channels)))


def _special_values(scale):
    """+/-0, exact rounding ties of the grid step, +/-Inf, NaN, subnormals, huge values."""
    ties = (np.arange(-8, 8) + 0.5) * scale
    return np.concatenate([[0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-39, 3e38,
                            -3e38], ties]).astype(np.float32)


def _inputs(q, channels, seed):
    """(channels, 7, 2 blocks or 6) values with the special values in the first row."""
    last = 2 * q.plan["group_size"] if q.plan["kind"] in ("mx", "nvfp4") else 6
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((channels, 7, last)) * 1.5).astype(np.float32)
    special = _special_values(0.03125)
    flat = x.reshape(-1)
    flat[:special.size] = special[:flat.size]
    return torch.from_numpy(x)


def _bits(t):
    """Tensor values as integers, so that NaN == NaN and -0 != +0."""
    t = t.detach().cpu()
    view = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
            torch.bfloat16: torch.int16}[t.dtype]
    return t.contiguous().view(view)


def _layouts(x):
    """x as contiguous, channels-last (rank 4) and strided (a transposed, sliced) views."""
    yield "contiguous", x
    if x.dim() == 3:
        x4 = x.unsqueeze(-1).expand(*x.shape, 2).contiguous()
        yield "channels_last", x4.to(memory_format=torch.channels_last)
    yield "strided", x.transpose(0, 1).contiguous().transpose(0, 1)


CASES = [(e, c) for e in INFERABLE for c in ((1, 4) if e["target"] == "Weights" else (1,))]
IDS = [f"{e['class_name']}-{c}ch" for e, c in CASES]


# ---- inferable quantizers ----------------------------------------------------------------------

@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("entry,channels", CASES, ids=IDS)
def test_every_registry_quantizer_gives_the_cpu_bits(entry, channels, dtype, parity_stats):
    q = _example(entry, channels)
    for name, x in _layouts(_inputs(q, channels, 0).to(dtype)):
        if x.dim() != 3 and q.kernel_input_rank is not None:
            continue
        if x.dim() != 3 and q.plan["kind"] in ("mx", "nvfp4"):
            continue
        expected = q(x)
        got = q(x.cuda())
        assert got.is_cuda and got.dtype == dtype and got.shape == expected.shape
        assert torch.equal(_bits(got), _bits(expected)), f"{entry['class_name']} {dtype} {name}"
        # The portable op (the quantizer's JSON text) and the in-place .out form agree.
        by_json = torch.ops.qi.fake_quant(x.cuda(), q.to_json())
        assert torch.equal(_bits(by_json), _bits(expected))
        inplace = x.cuda().clone()
        plan = qp.plan_tensor(q).cuda()
        torch.ops.qi.quantize.out(inplace, plan, q.kernel_channel_axis, q.kernel_input_rank,
                                  out=inplace)
        assert torch.equal(_bits(inplace), _bits(expected))
        parity_stats.add("CUDA vs CPU: registry quantizers", 3 * x.numel(), 0)


# Beyond the registry examples: per channel on every axis, groups, both profiles, MX on axis 0.
EXTRA = [
    ("axis1", lambda: qi.WeightsSymmetricInferableQuantizer(
        4, threshold=[0.5, 1.0, 2.0, 4.0, 8.0, 0.25, 3.0], per_channel=True, channel_axis=1)),
    ("axis-1", lambda: qi.WeightsUniformInferableQuantizer(
        8, min_range=[-1.0, -0.5, -2.0, 0.1, -3.0, -1.0], max_range=[1.0, 2.0, 0.5, 3.0, -0.1, 4.0],
        per_channel=True, channel_axis=-1)),
    ("groups", lambda: qi.WeightsSymmetricInferableQuantizer(
        8, threshold=[0.5 + 0.25 * i for i in range(4 * 2)], per_channel=True, channel_axis=0,
        group_size=4, group_axis=-1)),
    ("tf-profile", lambda: qi.WeightsSymmetricInferableQuantizer(
        8, threshold=[1.0, 2.0, 3.0, 0.5], per_channel=True, channel_axis=0, profile="tf")),
    ("tf-profile-per-tensor", lambda: qi.ActivationUniformInferableQuantizer(
        8, min_range=[-1.5], max_range=[2.5], profile="tf")),
    ("mx-axis0", lambda: qi.WeightsMXInferableQuantizer("E2M1", block_size=4, block_axis=0)),
]


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,make", EXTRA, ids=[e[0] for e in EXTRA])
def test_axes_groups_and_profiles_give_the_cpu_bits(name, make, dtype):
    q = make()
    rng = np.random.default_rng(1)
    x = torch.from_numpy((rng.standard_normal((4, 7, 6)) * 2).astype(np.float32)).to(dtype)
    x.view(-1)[:10] = torch.from_numpy(_special_values(0.0625)[:10]).to(dtype)
    permuted = x.transpose(1, 2).contiguous().transpose(1, 2)  # dense, not row-major
    gaps = torch.stack([x, torch.full_like(x, 7.0)], dim=-1)[..., 0]  # not dense: copied
    for layout, v in (("contiguous", x), ("permuted", permuted), ("gaps", gaps)):
        assert torch.equal(_bits(q(v.cuda())), _bits(q(v))), f"{name} {dtype} {layout}"


@gpu
def test_plan_buffer_updated_in_place_is_read_again():
    a = qi.WeightsSymmetricInferableQuantizer(8, threshold=[1.0], per_channel=False)
    b = qi.WeightsSymmetricInferableQuantizer(8, threshold=[4.0], per_channel=False)
    x = torch.linspace(-3, 3, 101)
    plan = qp.plan_tensor(a).cuda()
    y_a = torch.ops.qi.quantize(x.cuda(), plan, None, None)
    plan.copy_(qp.plan_tensor(b))
    y_b = torch.ops.qi.quantize(x.cuda(), plan, None, None)
    assert torch.equal(y_a.cpu(), a(x)) and torch.equal(y_b.cpu(), b(x))


@gpu
def test_cuda_trainable_ops_refuse_groups():
    x = torch.ones(4, 64, device="cuda")
    t = torch.ones(8, device="cuda")
    with pytest.raises(ValueError, match=r"qi::symmetric_quant: group_size is not supported on "
                                         r"CUDA yet; per-group trainable quantizers run on the CPU"):
        torch.ops.qi.symmetric_quant(x, t, 4, True, 0, "lsq", 1.0, group_size=32, group_axis=1)
    with pytest.raises(ValueError, match=r"qi::uniform_quant: group_size is not supported"):
        torch.ops.qi.uniform_quant(x, -t, t, 4, 0, "lsq", 1.0, False, group_size=32, group_axis=1)


@gpu
def test_cuda_format_quant_is_refused_with_a_value_error():
    x = torch.ones(4, 32, device="cuda")
    s = torch.ones(1, device="cuda")
    none = torch.empty(0, device="cuda")
    with pytest.raises(ValueError, match=r"^qi::format_quant: format_quant is not supported on "
                                         r"CUDA yet"):
        torch.ops.qi.format_quant(x, s, none, "E4M3", "scale", None, "lsq", 1.0)
    with pytest.raises(ValueError, match=r"^qi::_format_quant_backward: format_quant is not "
                                         r"supported on CUDA yet"):
        torch.ops.qi._format_quant_backward(x, x, s, none, "E4M3", "scale", None, "lsq", 1.0,
                                            None, None, -1, True, True)


@gpu
def test_cuda_ops_refuse_mixed_devices_with_the_argument_named():
    x = torch.ones(4, 3, device="cuda")
    with pytest.raises(ValueError, match=r"qi::symmetric_quant: threshold must be a CUDA tensor, "
                                         r"got cpu"):
        torch.ops.qi.symmetric_quant(x, torch.tensor([1.0]), 8, True, None, "ste", 1.0)
    with pytest.raises(ValueError, match=r"qi::uniform_quant: min_range must be a CUDA tensor"):
        torch.ops.qi.uniform_quant(x, torch.tensor([-1.0]), torch.tensor([1.0]).cuda(), 8, None,
                                   "ste", 1.0, False)
    with pytest.raises(ValueError, match=r"qi::quantize: plan must be a 1-D int32 tensor on the "
                                         r"CPU or on cuda:0"):
        torch.ops.qi.quantize(x, torch.ones(3), None, None)


# ---- trainable ops -----------------------------------------------------------------------------

def _symmetric(x, t, mode, axis, pot=False):
    return torch.ops.qi.symmetric_quant(x, t, 8, True, axis, mode, 0.5, None, 0.0, pot)


def _uniform(x, lo, hi, mode, axis, activation=False):
    return torch.ops.qi.uniform_quant(x, lo, hi, 8, axis, mode, 0.5, activation)


def _run(op, x, params, device):
    x = x.detach().to(device).requires_grad_(True)
    ps = [p.detach().to(device).requires_grad_(True) for p in params]
    y = op(x, *ps)
    g = torch.linspace(-1, 1, y.numel(), dtype=torch.float32).reshape(y.shape).to(y.dtype)
    y.backward(g.to(device))
    return y, x.grad, [p.grad for p in ps]


def _bound(count):
    """The parameter gradients' bound from the order of the float64 sums: count terms, each of
    magnitude at most 1 (|dy|) x 512 (|dq/dscale| on an 8-bit grid with |x / scale| < 256), so
    any two orders differ by at most count * eps * count * 512 (the classic bound of recursive
    summation)."""
    return count * np.finfo(np.float64).eps * count * 512.0


TRAINABLE_CASES = []
for _mode in ("ste", "lsq"):
    for _axis in (None, 0, 1, -1):
        TRAINABLE_CASES.append(("symmetric", _mode, _axis, False))
        TRAINABLE_CASES.append(("symmetric_pot", _mode, _axis, False))
        TRAINABLE_CASES.append(("uniform", _mode, _axis, False))
        TRAINABLE_CASES.append(("uniform", _mode, _axis, True))


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind,mode,axis,activation", TRAINABLE_CASES)
def test_trainable_ops_forward_and_gradients_match_the_cpu(kind, mode, axis, activation, dtype):
    rng = np.random.default_rng(5)
    x = torch.from_numpy((rng.standard_normal((6, 5, 33)) * 2).astype(np.float32)).to(dtype)
    # +/-0, a subnormal, values far outside the grid (the clip) and exact ties of a 2^-5 step.
    x.view(-1)[:8] = torch.tensor([0.0, -0.0, 1e-39, 40.0, -40.0, 0.015625, -0.046875,
                                   0.078125]).to(dtype)
    count = 1 if axis is None else x.shape[axis]
    if kind.startswith("symmetric"):
        t = torch.from_numpy(rng.uniform(0.5, 3.0, count).astype(np.float32))
        params = [t]

        def op(x_, t_):
            return _symmetric(x_, t_, mode, axis, pot=kind == "symmetric_pot")
    else:
        lo = torch.from_numpy(rng.uniform(-3.0, -0.5, count).astype(np.float32))
        hi = torch.from_numpy(rng.uniform(0.5, 3.0, count).astype(np.float32))
        lo[0], hi[0] = hi[0].item(), lo[0].item()  # a crossed range is used in order
        params = [lo, hi]

        def op(x_, lo_, hi_):
            return _uniform(x_, lo_, hi_, mode, axis, activation)
    y_cpu, dx_cpu, dp_cpu = _run(op, x, params, "cpu")
    y_gpu, dx_gpu, dp_gpu = _run(op, x, params, "cuda")
    assert torch.equal(_bits(y_gpu), _bits(y_cpu))
    assert torch.equal(_bits(dx_gpu), _bits(dx_cpu))
    per_channel = x.numel() // count
    for a, b in zip(dp_gpu, dp_cpu):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a.cpu().double().numpy(), b.double().numpy(), rtol=1e-6,
                                   atol=_bound(per_channel))


@gpu
def test_parameter_gradients_are_deterministic():
    x = torch.randn(64, 256, 7, 7, device="cuda")
    t = torch.full((256,), 2.0, device="cuda", requires_grad=True)
    grads = []
    for _ in range(3):
        t.grad = None
        _symmetric(x, t, "lsq", 1).backward(torch.ones_like(x))
        grads.append(t.grad.clone())
    assert all(torch.equal(g, grads[0]) for g in grads)


@gpu
def test_invalid_parameters_give_nan_on_the_gpu_where_the_cpu_raises():
    x = torch.linspace(-1, 1, 10)
    with pytest.raises(ValueError, match="threshold must be > 0"):
        _symmetric(x, torch.tensor([-1.0]), "ste", None)
    y = _symmetric(x.cuda(), torch.tensor([-1.0], device="cuda"), "ste", None)
    assert torch.isnan(y).all()


# ---- CUDA graphs -------------------------------------------------------------------------------

class _QatNet(torch.nn.Module):
    """A conv + linear net whose weights and activations go through LSQ quantizers."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)
        self.t_conv = torch.nn.Parameter(torch.full((8,), 0.5))
        self.t_fc = torch.nn.Parameter(torch.full((10,), 0.5))
        self.lo = torch.nn.Parameter(torch.tensor([-1.0]))
        self.hi = torch.nn.Parameter(torch.tensor([4.0]))

    def forward(self, x):
        w = _symmetric(self.conv.weight, self.t_conv, "lsq", 0)
        x = torch.nn.functional.conv2d(x, w, self.conv.bias, padding=1).relu()
        x = _uniform(x, self.lo, self.hi, "lsq", None, activation=True)
        w = _symmetric(self.fc.weight, self.t_fc, "lsq", 0)
        return torch.nn.functional.linear(x.flatten(1), w, self.fc.bias)


@gpu
def test_training_step_is_captured_in_a_cuda_graph_and_replayed(monkeypatch):
    # cuDNN's fastest convolution backwards sum in an order of their own: the eager twin must
    # follow the same order as the graph.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    torch.manual_seed(0)
    model = _QatNet().cuda()
    eager = _QatNet().cuda()
    eager.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    opt_eager = torch.optim.SGD(eager.parameters(), lr=0.01)
    x = torch.randn(16, 3, 8, 8, device="cuda")
    target = torch.randint(0, 10, (16,), device="cuda")

    def step(m, o):
        o.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(m(x), target)
        loss.backward()
        o.step()
        return loss

    # Warm up on a side stream (allocator pools, lazy initialization), as torch.cuda.graphs asks.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(model, opt)
            step(eager, opt_eager)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step(model, opt)
    losses = []
    for _ in range(5):
        graph.replay()
        loss = step(eager, opt_eager)
        torch.cuda.synchronize()
        losses.append(static_loss.item())
        # cuBLAS may pick other kernels under capture: equal up to float32 rounding.
        torch.testing.assert_close(static_loss, loss, rtol=1e-5, atol=1e-6)
    assert len(set(losses)) > 1  # every replay trained one more step
    for a, b in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
