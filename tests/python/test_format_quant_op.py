# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The formats' trainable op through its public bindings (torch.ops.qi.format_quant and
quantizers_infrastructure.keras.ops.format_quant): for every scaling (a scale per tensor, per
channel and per group; learned NVFP4 block scales with and without a tensor scale; MX after a
pre-scale of 1 and of 0.37; NVFP4 from the data) and every element format it takes, the output
equals a reference written here from the documented formula, bit for bit (FLOAT E4M3/E5M2 also
equal torch's float8 casts), and dx, d_scale, d_tensor_scale equal a float64 implementation of
the documented gradients (STE and LSQ); TensorFlow gives the same bits and the same gradients;
float16/bfloat16 inputs; torch.compile(fullgraph=True); the core's bad-input rules reach Python
as ValueError with their message."""

import inspect
import math
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import quantizers_infrastructure as qi  # noqa: E402
import quantizers_infrastructure.pytorch  # noqa: E402,F401  (registers torch.ops.qi)

# name: (exponent bits, mantissa bits, largest value, exponent of the largest power of two);
# INT8 is MX's integer element: k / 64 for k in [-127, 127].
FORMATS = {"E4M3": (4, 3, 448.0, 8), "E5M2": (5, 2, 57344.0, 15), "E3M2": (3, 2, 28.0, 4),
           "E2M3": (2, 3, 7.5, 2), "E2M1": (2, 1, 6.0, 2), "INT8": (0, 6, 127.0 / 64.0, 0)}
FLOATS = ["E4M3", "E5M2", "E3M2", "E2M3", "E2M1"]
F32 = np.float32


# ---- the reference, from the documented formulas ------------------------------------------------

def round_to_format(v, fmt):
    """v (float32, already clamped to +-max) rounded to the element format, half to even, with
    the format's subnormals; exact in float64, returned as float32."""
    ebits, mbits, _, _ = FORMATS[fmt]
    a = np.abs(v.astype(np.float64))
    if ebits == 0:
        step = np.full_like(a, 2.0 ** -mbits)
    else:
        emin = 2 - 2 ** (ebits - 1)  # 1 - bias
        _, e = np.frexp(np.where(a > 0, a, 1.0))
        step = np.exp2(np.maximum(e - 1, emin) - mbits)
    return np.copysign(np.round(a / step) * step, v).astype(F32)


def e4m3(v):
    return round_to_format(v.astype(F32), "E4M3")


def parameter_index(shape, channel_axis, group_size, group_axis):
    """For each element of a tensor of `shape`: the index of its parameter (c * G + g)."""
    rank = len(shape)
    idx = np.zeros(shape, dtype=np.int64)
    groups = 1
    if group_size is not None:
        ga = group_axis % rank
        groups = -(-shape[ga] // group_size)
        g = np.arange(shape[ga]) // group_size
        idx = idx + g.reshape([-1 if i == ga else 1 for i in range(rank)])
    if channel_axis is not None:
        ca = channel_axis % rank
        c = np.arange(shape[ca]) * groups
        idx = idx + c.reshape([-1 if i == ca else 1 for i in range(rank)])
    return idx


def block_amax(x, block, axis):
    """max |x| over each block of `block` elements along `axis`, broadcast back to x's shape."""
    xt = np.moveaxis(x, axis, -1)
    a = np.abs(xt.reshape(xt.shape[:-1] + (-1, block))).max(-1, keepdims=True)
    a = np.broadcast_to(a, xt.shape[:-1] + (xt.shape[-1] // block, block)).reshape(xt.shape)
    return np.moveaxis(a, -1, axis)


def reference(x, dy, case, fmt, mode, grad_scale=1.0, grad_scale_axis=None,
              tensor_grad_scale=None):
    """(y, dx, d_scale, d_tensor_scale) of the op on float32 x with upstream gradient dy. The
    forward follows the documented float32 arithmetic; with u = x / E the value the element format
    rounds and q = F(clamp(u, -max, max)), the gradients are dy/dx = 1 (STE) or the inside mask
    (LSQ), dy/dE = q - u (STE; LSQ inside) or q (LSQ outside), chained to the parameters straight
    through every rounding and summed in float64."""
    scaling, kw = case["scaling"], case["kwargs"]
    largest = FORMATS[fmt][2]
    s = np.asarray(case["scale"], F32)
    t = np.asarray(case["tensor_scale"], F32)
    d_scale, d_ts = np.zeros(s.size), np.zeros(t.size)
    # E: each element's scale, and per element dE/d(parameter) with the parameter's index.
    if scaling == "scale":
        idx = parameter_index(x.shape, kw.get("channel_axis"), kw.get("group_size"),
                              kw.get("group_axis", -1))
        E = s.reshape(-1)[idx]
        u = (x / E).astype(F32)
        chain = [(d_scale, idx, np.ones(x.shape))]
        post = lambda q: (q * E).astype(F32)  # noqa: E731
    elif scaling == "fp8_scale":
        idx = parameter_index(x.shape, kw.get("channel_axis"), kw["group_size"], kw["group_axis"])
        b = s.reshape(-1)
        clamped = np.clip(b, F32(2.0 ** -6), F32(448.0))
        sb = e4m3(clamped)
        E = sb[idx] if t.size == 0 else (t[0] * sb[idx]).astype(F32)
        u = (x / E).astype(F32)
        live = ((b >= 2.0 ** -6) & (b <= 448.0)).astype(np.float64)
        chain = [(d_scale, idx, (1.0 if t.size == 0 else float(t[0])) * live[idx])]
        if t.size:
            chain.append((d_ts, np.zeros(x.shape, np.int64), sb[idx].astype(np.float64)))
        post = lambda q: (q * E).astype(F32)  # noqa: E731
    elif scaling == "mx":
        p = s[0]
        _, _, _, emax = FORMATS[fmt]
        u0 = (x / p).astype(F32)
        amax = block_amax(u0, kw["group_size"], kw["group_axis"]).astype(np.float64)
        _, e = np.frexp(np.where(amax > 0, amax, 2.0 ** -126))
        X = np.exp2(np.clip(e - 1 - emax, -127, 128)).astype(F32)
        u = (u0 / np.maximum(X, F32(2.0 ** -126))).astype(F32)
        chain = [(d_scale, np.zeros(x.shape, np.int64), X.astype(np.float64))]
        post = lambda q: ((q * X).astype(F32) * p).astype(F32)  # noqa: E731
    else:  # nvfp4
        amax = block_amax(x, 16, kw.get("group_axis", -1))
        a6 = (amax / F32(6.0)).astype(F32)
        if t.size:
            E = (t[0] * e4m3(np.clip((a6 / t[0]).astype(F32), F32(2.0 ** -6), F32(448.0))))
        else:
            E = e4m3(np.clip(a6, F32(2.0 ** -6), F32(448.0)))
        E = E.astype(F32)
        u = (x / E).astype(F32)
        chain = []
        post = lambda q: (q * E).astype(F32)  # noqa: E731
    v = np.clip(u, -largest, largest).astype(F32)
    q = round_to_format(v, fmt)
    y = post(q)
    inside = np.abs(u) <= largest
    dy64 = dy.astype(np.float64)
    if mode == "ste":
        dx, dE = dy.copy(), q.astype(np.float64) - u.astype(np.float64)
    else:
        dx = np.where(inside, dy, F32(0.0)).astype(F32)
        dE = np.where(inside, q.astype(np.float64) - u.astype(np.float64), q.astype(np.float64))
    axis_size = math.sqrt(x.shape[grad_scale_axis]) if grad_scale_axis is not None else 1
    terms = {}
    for out, index, dEdp in chain:
        g = (tensor_grad_scale if out is d_ts and tensor_grad_scale is not None
             else grad_scale) / axis_size
        contrib = (dy64 * dE * dEdp).reshape(-1)
        out += np.bincount(index.reshape(-1), weights=contrib, minlength=out.size) * g
        terms[id(out)] = np.bincount(index.reshape(-1), weights=np.abs(contrib),
                                     minlength=out.size) * g
    return y, dx, d_scale, d_ts, terms.get(id(d_scale)), terms.get(id(d_ts))


# ---- the cases ----------------------------------------------------------------------------------

X_ROWS = 6


def _scales_for(rng, x, fmt, idx, count, spread=1.3):
    """Per-parameter scales that put the largest |x| of each parameter's elements about `spread`
    times past the format's largest value (so LSQ clips some), varied per parameter."""
    largest = FORMATS[fmt][2]
    amax = np.zeros(count)
    np.maximum.at(amax, idx.reshape(-1), np.abs(x).reshape(-1))
    return (amax / (spread * largest) * rng.uniform(0.8, 1.2, count)).astype(F32)


def make_case(name, fmt):
    """(x, case): case holds scaling, scale, tensor_scale (arrays; empty when unused), the op's
    keyword arguments and an upstream gradient dy; the same values for a name on every run."""
    rng = np.random.default_rng(zlib.crc32(f"{name}-{fmt}".encode()))
    x = (rng.standard_normal((X_ROWS, 64)) * 3).astype(F32)
    x, case = _make_case(rng, x, name, fmt)
    case["dy"] = rng.standard_normal(x.shape).astype(F32)
    return x, case


def _make_case(rng, x, name, fmt):
    none = np.zeros(0, F32)
    if name.startswith("scale-"):
        kw = {"per-tensor": {"channel_axis": None},
              "per-channel": {"channel_axis": 0},
              "per-group": {"channel_axis": 0, "group_size": 16, "group_axis": 1},
              "per-ragged-group": {"channel_axis": 1, "group_size": 4, "group_axis": 0},
              }[name[len("scale-"):]]
        idx = parameter_index(x.shape, kw.get("channel_axis"), kw.get("group_size"),
                              kw.get("group_axis", -1))
        s = _scales_for(rng, x, fmt, idx, int(idx.max()) + 1)
        return x, {"scaling": "scale", "scale": s, "tensor_scale": none, "kwargs": kw}
    if name.startswith("fp8_scale"):
        kw = {"channel_axis": 0, "group_size": 16, "group_axis": 1}
        idx = parameter_index(x.shape, 0, 16, 1)
        with_t = name.endswith("-t")
        t = np.array([0.0625 * 1.37], F32) if with_t else none
        b = _scales_for(rng, x, "E2M1", idx, int(idx.max()) + 1)
        if with_t:
            b = (b / t[0]).astype(F32)
        # One block scale below E4M3's smallest normal (clamped: no gradient) over small values.
        x[1, 16:32] *= F32(1e-3)
        b[1 * 4 + 1] = F32(2.0 ** -8)
        return x, {"scaling": "fp8_scale", "scale": b, "tensor_scale": t, "kwargs": kw}
    if name.startswith("mx"):
        p = F32(1.0) if name == "mx-p1" else F32(0.37)
        x[2, :32] *= F32(2.0 ** -20)  # a block of another binade
        return x, {"scaling": "mx", "scale": np.array([p], F32), "tensor_scale": none,
                   "kwargs": {"group_size": 32, "group_axis": -1}}
    assert name.startswith("nvfp4")
    t = np.array([0.003], F32) if name.endswith("-t") else none
    return x, {"scaling": "nvfp4", "scale": none, "tensor_scale": t,
               "kwargs": {"group_size": 16, "group_axis": -1}}


SCALINGS = {"scale-per-tensor": FLOATS, "scale-per-channel": FLOATS, "scale-per-group": FLOATS,
            "scale-per-ragged-group": ["E4M3", "E2M1"], "fp8_scale": ["E2M1"],
            "fp8_scale-t": ["E2M1"], "mx-p1": FLOATS + ["INT8"], "mx-p": FLOATS + ["INT8"],
            "nvfp4": ["E2M1"], "nvfp4-t": ["E2M1"]}
# The MX kernels apply a pre-scale other than 1 since WeightsMXInferableQuantizer takes one
# (tensor_scale); before, the op's forward ignores it, so those cases wait for the kernels.
MX_PRESCALE = "tensor_scale" in inspect.signature(qi.WeightsMXInferableQuantizer).parameters
needs_mx_prescale = pytest.mark.skipif(not MX_PRESCALE, reason="the MX kernels of this build "
                                       "have no pre-scale (WeightsMXInferableQuantizer takes no "
                                       "tensor_scale)")
CASES = [pytest.param(name, fmt, id=f"{name}-{fmt}",
                      marks=[needs_mx_prescale] if name == "mx-p" else [])
         for name, fmts in SCALINGS.items() for fmt in fmts]


def torch_run(x, dy, case, fmt, mode, dtype=torch.float32, grad_scale=1.0, grad_scale_axis=None,
              **extra):
    """y, dx, d_scale, d_tensor_scale from torch.ops.qi.format_quant and autograd."""
    xt = torch.from_numpy(x).to(dtype).requires_grad_()
    s = torch.from_numpy(case["scale"]).requires_grad_()
    t = torch.from_numpy(case["tensor_scale"]).requires_grad_()
    kw = dict(case["kwargs"])
    axis = kw.pop("channel_axis", None)
    y = torch.ops.qi.format_quant(xt, s, t, fmt, case["scaling"], axis, mode, grad_scale,
                                  grad_scale_axis=grad_scale_axis, **kw, **extra)
    y.backward(torch.from_numpy(dy).to(dtype))
    return y.detach(), xt.grad, s.grad, t.grad


def tf_run(x, dy, case, fmt, mode, grad_scale=1.0, grad_scale_axis=None, **extra):
    tf = pytest.importorskip("tensorflow")
    from quantizers_infrastructure.keras import ops
    xv = tf.Variable(x)
    s = tf.Variable(case["scale"]) if case["scale"].size else None
    t = tf.Variable(case["tensor_scale"]) if case["tensor_scale"].size else None
    with tf.GradientTape() as tape:
        y = ops.format_quant(xv, s, t, fmt, case["scaling"], mode=mode, grad_scale=grad_scale,
                             grad_scale_axis=grad_scale_axis, **case["kwargs"], **extra)
        loss = tf.reduce_sum(y * dy)
    variables = [v for v in (xv, s, t) if v is not None]
    grads = dict(zip([id(v) for v in variables], tape.gradient(loss, variables)))
    out = [y.numpy(), grads[id(xv)].numpy()]
    for v in (s, t):
        out.append(None if v is None else grads[id(v)].numpy())
    return out


def bits(a):
    return np.ascontiguousarray(np.asarray(a, F32)).view(np.int32)


def assert_sums_close(got, want, scale_of_terms, what):
    """Parameter gradients: float64 sums in another order, returned in float32; a bound of 1e-6
    relative to the sum of the terms' magnitudes (the order of a float64 sum moves it by far less,
    the float32 result by 6e-8 of the sum)."""
    got = np.asarray(got, np.float64).reshape(-1)
    assert got.shape == want.shape, what
    bound = 1e-6 * np.maximum(scale_of_terms, 1e-30) + 1e-6 * np.abs(want)
    bad = np.abs(got - want) > bound
    assert not bad.any(), (what, got[bad], want[bad])


# ---- forward and gradients against the reference -------------------------------------------------

@pytest.mark.parametrize("name,fmt", CASES)
@pytest.mark.parametrize("mode", ["ste", "lsq"])
def test_forward_and_gradients_equal_the_reference(name, fmt, mode):
    x, case = make_case(name, fmt)
    dy = case["dy"]
    y, dx, ds, dt = torch_run(x, dy, case, fmt, mode, grad_scale=0.75)
    ry, rdx, rds, rdt, terms_s, terms_t = reference(x, dy, case, fmt, mode, grad_scale=0.75)
    np.testing.assert_array_equal(bits(y), bits(ry))
    np.testing.assert_array_equal(bits(dx), bits(rdx))
    if case["scale"].size:
        assert ds.shape == case["scale"].shape
        if case["scaling"] == "nvfp4":
            assert not ds.any()
        else:
            assert_sums_close(ds, rds, terms_s, "d_scale")
    if case["tensor_scale"].size:
        assert dt.shape == case["tensor_scale"].shape
        if case["scaling"] == "nvfp4":  # a fixed tensor scale: no gradient
            assert not dt.any()
        else:
            assert_sums_close(dt, rdt, terms_t, "d_tensor_scale")
    if mode == "lsq" and case["scaling"] in ("scale", "fp8_scale"):
        assert (rdx == 0).any() and (rdx != 0).any()  # the case clips some elements, not all


@pytest.mark.parametrize("fmt", ["E4M3", "E5M2"])
@pytest.mark.parametrize("name", ["scale-per-tensor", "scale-per-channel", "scale-per-group"])
def test_float8_equals_torchs_cast(name, fmt):
    """FLOAT E4M3/E5M2: torch.clamp(x / s, -max, max).to(float8).float() * s."""
    x, case = make_case(name, fmt)
    kw = case["kwargs"]
    idx = parameter_index(x.shape, kw.get("channel_axis"), kw.get("group_size"),
                          kw.get("group_axis", -1))
    s = torch.from_numpy(case["scale"].reshape(-1)[idx])
    dtype = {"E4M3": torch.float8_e4m3fn, "E5M2": torch.float8_e5m2}[fmt]
    largest = FORMATS[fmt][2]
    want = torch.clamp(torch.from_numpy(x) / s, -largest, largest).to(dtype).float() * s
    y = torch.ops.qi.format_quant(torch.from_numpy(x), torch.from_numpy(case["scale"]),
                                  torch.empty(0), fmt, "scale", kw.get("channel_axis"), "ste", 1.0,
                                  group_size=kw.get("group_size"),
                                  group_axis=kw.get("group_axis", -1))
    assert torch.equal(y.view(torch.int32), want.view(torch.int32))


@pytest.mark.parametrize("name,fmt", [("scale-per-channel", "E4M3"), ("fp8_scale-t", "E2M1"),
                                      ("mx-p1", "E2M3")])
def test_lsq_gradient_scale_divides_by_the_axis_size(name, fmt):
    x, case = make_case(name, fmt)
    dy = case["dy"]
    _, _, ds, dt = torch_run(x, dy, case, fmt, "lsq", grad_scale=0.5, grad_scale_axis=1)
    _, _, rds, rdt, terms_s, terms_t = reference(x, dy, case, fmt, "lsq", grad_scale=0.5,
                                                 grad_scale_axis=1)
    assert_sums_close(ds, rds, terms_s, "d_scale")
    if case["tensor_scale"].size:
        assert_sums_close(dt, rdt, terms_t, "d_tensor_scale")


@pytest.mark.parametrize("mode", ["ste", "lsq"])
def test_tensor_grad_scale_scales_the_tensor_scale_gradient_only(mode):
    """NVFP4 with learned block and tensor scales: tensor_grad_scale replaces grad_scale for
    tensor_scale's gradient (with grad_scale_axis dividing both); the forward, dx and d_scale do
    not change. TensorFlow gives the same bits."""
    x, case = make_case("fp8_scale-t", "E2M1")
    dy = case["dy"]
    plain = torch_run(x, dy, case, "E2M1", mode, grad_scale=0.5, grad_scale_axis=1)
    got = torch_run(x, dy, case, "E2M1", mode, grad_scale=0.5, grad_scale_axis=1,
                    tensor_grad_scale=3e-4)
    *_, rdt, _, terms_t = reference(x, dy, case, "E2M1", mode, grad_scale=0.5, grad_scale_axis=1,
                                    tensor_grad_scale=3e-4)
    for a, b, what in zip(got[:3], plain[:3], ("y", "dx", "d_scale")):
        np.testing.assert_array_equal(bits(a.detach().numpy()), bits(b.detach().numpy()), what)
    assert_sums_close(got[3], rdt, terms_t, "d_tensor_scale")
    assert rdt.any() and not np.allclose(got[3].numpy(), plain[3].numpy())
    tf_got = tf_run(x, dy, case, "E2M1", mode, grad_scale=0.5, grad_scale_axis=1,
                    tensor_grad_scale=3e-4)
    for g, w, what in zip(tf_got, got, ("y", "dx", "d_scale", "d_tensor_scale")):
        np.testing.assert_array_equal(bits(g), bits(w.detach().numpy()), err_msg=what)


# ---- TensorFlow ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,fmt", CASES)
@pytest.mark.parametrize("mode", ["ste", "lsq"])
def test_tensorflow_gives_the_same_bits_and_gradients(name, fmt, mode):
    x, case = make_case(name, fmt)
    dy = case["dy"]
    got = tf_run(x, dy, case, fmt, mode, grad_scale=0.3, grad_scale_axis=0)
    want = torch_run(x, dy, case, fmt, mode, grad_scale=0.3, grad_scale_axis=0)
    for g, w, what in zip(got, want, ("y", "dx", "d_scale", "d_tensor_scale")):
        if g is None:
            assert w.numel() == 0, what
            continue
        np.testing.assert_array_equal(bits(g), bits(w.numpy()), err_msg=what)


# ---- dtypes, layouts, compilers ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name,fmt", [("scale-per-channel", "E4M3"), ("fp8_scale-t", "E2M1"),
                                      ("mx-p1", "E5M2"), ("nvfp4-t", "E2M1")])
@pytest.mark.parametrize("mode", ["ste", "lsq"])
def test_other_dtypes_compute_in_float32(dtype, name, fmt, mode):
    """The op quantizes x converted to float32 and returns the result rounded to x's dtype;
    dx comes back in x's dtype, the parameter gradients are those of the float32 input."""
    x, case = make_case(name, fmt)
    x = torch.from_numpy(x).to(dtype).float().numpy()  # values the dtype holds
    dy = torch.from_numpy(case["dy"]).to(dtype).float().numpy()
    y, dx, ds, dt = torch_run(x, dy, case, fmt, mode, dtype=dtype)
    y32, dx32, ds32, dt32 = torch_run(x, dy, case, fmt, mode)
    assert y.dtype == dtype and dx.dtype == dtype
    assert torch.equal(y, y32.to(dtype))
    assert torch.equal(dx, dx32.to(dtype))
    assert torch.equal(ds, ds32) and torch.equal(dt, dt32)


def test_strided_and_channels_last_inputs_give_the_same_bits():
    x, case = make_case("scale-per-channel", "E4M3")
    x4 = torch.from_numpy(x).reshape(6, 4, 4, 4)
    s = torch.from_numpy(case["scale"])
    none = torch.empty(0)
    want = torch.ops.qi.format_quant(x4, s, none, "E4M3", "scale", 0, "lsq", 1.0)
    for v in (x4.to(memory_format=torch.channels_last), x4.transpose(2, 3).contiguous()
              .transpose(2, 3)):
        got = torch.ops.qi.format_quant(v, s, none, "E4M3", "scale", 0, "lsq", 1.0)
        assert torch.equal(got, want)


def test_compiles_with_fullgraph_and_gives_the_eager_bits():
    x, case = make_case("fp8_scale-t", "E2M1")
    dy = torch.from_numpy(case["dy"])

    def step(xt, s, t):
        return torch.ops.qi.format_quant(xt, s, t, "E2M1", "fp8_scale", 0, "lsq", 0.5,
                                         group_size=16, group_axis=1)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (step, compiled):
        xt = torch.from_numpy(x).requires_grad_()
        s = torch.from_numpy(case["scale"]).requires_grad_()
        t = torch.from_numpy(case["tensor_scale"]).requires_grad_()
        y = fn(xt, s, t)
        y.backward(dy)
        results.append((y.detach(), xt.grad, s.grad, t.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name,fmt", [("scale-per-group", "E4M3"), ("mx-p1", "INT8"),
                                      ("nvfp4-t", "E2M1")])
def test_opcheck(name, fmt):
    x, case = make_case(name, fmt)
    kw = dict(case["kwargs"])
    axis = kw.pop("channel_axis", None)
    args = (torch.from_numpy(x).requires_grad_(), torch.from_numpy(case["scale"]).requires_grad_(),
            torch.from_numpy(case["tensor_scale"]).requires_grad_(), fmt, case["scaling"], axis,
            "lsq", 0.5)
    torch.library.opcheck(torch.ops.qi.format_quant.default, args, kw)


def test_frozen_parameters_take_no_gradient_and_ste_passes_dy():
    x, case = make_case("scale-per-channel", "E3M2")
    xt = torch.from_numpy(x).requires_grad_()
    s = torch.from_numpy(case["scale"])
    dy = torch.from_numpy(case["dy"])
    torch.ops.qi.format_quant(xt, s, torch.empty(0), "E3M2", "scale", 0, "ste", 1.0).backward(dy)
    assert torch.equal(xt.grad, dy) and s.grad is None


# ---- bad inputs: the core's rules, with their messages -------------------------------------------

X = np.random.default_rng(3).standard_normal((4, 32)).astype(F32)
NONE = np.zeros(0, F32)

# (what, arguments after x: scale, tensor_scale, format, scaling, keyword arguments; message)
BAD = [
    ("wrong scale count", [1.0, 2.0, 3.0], NONE, "E4M3", "scale", {"channel_axis": 0},
     r"scale holds 3 values but the tensor has 4 channels"),
    ("bad scaling name", [1.0], NONE, "E4M3", "block", {},
     r"scaling must be one of scale, fp8_scale, mx, nvfp4, got \"block\""),
    ("non-positive scale", [0.0], NONE, "E4M3", "scale", {},
     r"scale must be > 0, got 0 at index 0"),
    ("tensor_scale given for scale", [1.0], [2.0], "E4M3", "scale", {},
     r"tensor_scale must be empty for scaling \"scale\", got size 1"),
    ("unknown format", [1.0], NONE, "E4M4", "scale", {},
     r"format must be one of E4M3, E5M2, E3M2, E2M3, E2M1, got \"E4M4\""),
    ("NVFP4 with another element format", [1.0] * 8, NONE, "E4M3", "fp8_scale",
     {"channel_axis": 0, "group_size": 16, "group_axis": 1},
     r"scaling \"fp8_scale\" is NVFP4's and takes format \"E2M1\", got \"E4M3\""),
    ("NVFP4 blocks of another size", NONE, NONE, "E2M1", "nvfp4", {"group_size": 32},
     r"NVFP4 blocks hold 16 elements, got group_size 32"),
    ("MX pre-scale count", [1.0, 2.0], NONE, "E4M3", "mx", {"group_size": 32},
     r"scale \(the MX pre-scale\) must hold one value, got 2"),
    ("MX with a channel axis", [1.0], NONE, "E4M3", "mx", {"channel_axis": 0, "group_size": 32},
     r"scaling \"mx\" computes its scales per block from the data and takes no channel_axis, "
     r"got 0"),
    ("scale given for nvfp4", [1.0], NONE, "E2M1", "nvfp4", {},
     r"scale must be empty for scaling \"nvfp4\" \(its block scales follow the data\), "
     r"got size 1"),
    ("NaN block scale", [float("nan")] + [1.0] * 7, NONE, "E2M1", "fp8_scale",
     {"channel_axis": 0, "group_size": 16, "group_axis": 1},
     r"scale must be finite, got nan at index 0"),
    ("non-positive tensor scale", [1.0] * 8, [-1.0], "E2M1", "fp8_scale",
     {"channel_axis": 0, "group_size": 16, "group_axis": 1},
     r"tensor_scale must be > 0, got -1 at index 0"),
    ("tensor_grad_scale without a learned tensor scale", [1.0], NONE, "E4M3", "scale",
     {"tensor_grad_scale": 0.5},
     r"tensor_grad_scale applies to scaling \"fp8_scale\" \(a learned tensor scale\) only, "
     r"got scaling \"scale\""),
    ("non-finite tensor_grad_scale", [1.0] * 8, [2.0], "E2M1", "fp8_scale",
     {"channel_axis": 0, "group_size": 16, "group_axis": 1, "tensor_grad_scale": float("inf")},
     r"tensor_grad_scale must be finite, got inf"),
]


def _torch_bad(scale, tensor_scale, fmt, scaling, kw, mode="ste"):
    kw = dict(kw)
    axis = kw.pop("channel_axis", None)
    return torch.ops.qi.format_quant(torch.from_numpy(X), torch.tensor(scale, dtype=torch.float32),
                                     torch.tensor(tensor_scale, dtype=torch.float32), fmt, scaling,
                                     axis, mode, 1.0, **kw)


@pytest.mark.parametrize("what,scale,tensor_scale,fmt,scaling,kw,message", BAD,
                         ids=[b[0] for b in BAD])
def test_torch_op_refuses(what, scale, tensor_scale, fmt, scaling, kw, message):
    with pytest.raises(ValueError, match=r"^qi::format_quant: .*" + message):
        _torch_bad(scale, tensor_scale, fmt, scaling, kw)
    dy = torch.ones(X.shape)
    with pytest.raises(ValueError, match=r"^qi::_format_quant_backward: .*" + message):
        kw2 = dict(kw)
        axis = kw2.pop("channel_axis", None)
        torch.ops.qi._format_quant_backward(
            dy, torch.from_numpy(X), torch.tensor(scale, dtype=torch.float32),
            torch.tensor(tensor_scale, dtype=torch.float32), fmt, scaling, axis, "ste", 1.0, None,
            kw2.get("group_size"), kw2.get("group_axis", -1), True, True,
            kw2.get("tensor_grad_scale"))


@pytest.mark.parametrize("what,scale,tensor_scale,fmt,scaling,kw,message", BAD,
                         ids=[b[0] for b in BAD])
def test_tf_op_refuses(what, scale, tensor_scale, fmt, scaling, kw, message):
    pytest.importorskip("tensorflow")
    from quantizers_infrastructure.keras import ops
    with pytest.raises(ValueError, match=r"^QiFormatQuant: .*" + message):
        ops.format_quant(X, np.asarray(scale, F32), np.asarray(tensor_scale, F32), fmt, scaling,
                         **kw)


def test_bad_mode_is_refused_by_both_frameworks():
    with pytest.raises(ValueError, match=r'^qi::format_quant: mode must be "ste" or "lsq", '
                                         r'got "sgd"'):
        _torch_bad([1.0], NONE, "E4M3", "scale", {}, mode="sgd")
    pytest.importorskip("tensorflow")
    from quantizers_infrastructure.keras import ops
    with pytest.raises(ValueError, match=r"^format_quant: mode must be \"ste\" or \"lsq\""):
        ops.format_quant(X, [1.0], None, "E4M3", "scale", mode="sgd")


def test_non_float32_tf_inputs_are_refused():
    tf = pytest.importorskip("tensorflow")
    from quantizers_infrastructure.keras import ops
    with pytest.raises(ValueError, match=r"^format_quant: x must be float32, got float64"):
        ops.format_quant(tf.constant(X, tf.float64), [1.0], None, "E4M3", "scale")
