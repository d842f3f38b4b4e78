# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""OCP Microscaling (QuantizationMethod.MX): MXFP8 (E4M3, E5M2), MXFP6 (E3M2, E2M3) and MXFP4
(E2M1) bit-exact with torchao 0.11's reference (`to_mx` with the FLOOR scale mode, then
`to_dtype` back to float32); MXINT8, which torchao 0.11 lacks, against a reference written here
from the format's definition. Blocks along every axis, special values, bad arguments."""

import numpy as np
import pytest

import quantizers_infrastructure as qi

torch = pytest.importorskip("torch")

FLOATS = ["E4M3", "E5M2", "E3M2", "E2M3", "E2M1"]


def torchao_mx(x, fmt, block, axis):
    """to_mx(FLOOR) then to_dtype(float32) along `axis` (torchao blocks the last axis)."""
    mx = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor")
    c = pytest.importorskip("torchao.prototype.mx_formats.constants")
    elem = {"E4M3": torch.float8_e4m3fn, "E5M2": torch.float8_e5m2, "E3M2": c.DTYPE_FP6_E3M2,
            "E2M3": c.DTYPE_FP6_E2M3, "E2M1": c.DTYPE_FP4}[fmt]
    xt = torch.movedim(x, axis, -1).contiguous()
    scale, data = mx.to_mx(xt, elem, block, mx.ScaleCalculationMode.FLOOR)
    y = mx.to_dtype(data, scale, elem, block, torch.float32, False, False)
    return torch.movedim(y.reshape(xt.shape), -1, axis)


def mxint8_reference(x, block, axis):
    """MXINT8 from the OCP MX v1.0 definition: shared scale X = 2^(floor(log2(amax)) - 0) as an
    E8M0 exponent in [-127, 127] (NaN for a NaN block or one whose exponent overflows), elements
    round_half_even(v * 64) / 64 clamped to +-127/64; as qi's MX formats, the quantization
    divides by max(X, 2^-126) and the dequantization multiplies by X."""
    xt = torch.movedim(x, axis, -1).contiguous()
    b = xt.reshape(-1, block)
    amax = b.abs().amax(1)
    mant, exp = torch.frexp(torch.where(amax == 0, torch.tensor(2.0 ** -126), amax))
    e = torch.clamp(exp - 1, min=-127)  # floor(log2(amax)) for finite amax > 0
    e = torch.where(torch.isinf(amax), torch.tensor(128), e)
    two = torch.tensor(2.0, dtype=torch.float32)
    x_dequant = torch.pow(two, e.float())
    x_quant = torch.clamp(x_dequant, min=2.0 ** -126)
    v = b / x_quant[:, None]
    q = torch.clamp(torch.round(v * 64), -127, 127) / 64
    y = q * x_dequant[:, None]
    bad = torch.isnan(amax) | (e > 127)
    y = torch.where(bad[:, None], torch.tensor(float("nan")), y)
    return torch.movedim(y.reshape(xt.shape), -1, axis)


def blocks(n_blocks, block, seed):
    """Blocks with magnitudes from 2^-140 to 2^127 (one scale each), zero blocks, blocks of one
    huge value, exact element ties, float32 subnormals."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_blocks, block), dtype=np.float32)
    for i in range(n_blocks):
        e = rng.uniform(-140, 127)
        kind = i % 6
        if kind == 0:
            out[i] = (rng.standard_normal(block) * 2.0 ** e)
        elif kind == 1:  # values on a coarse grid: ties of every element format
            out[i] = rng.integers(-64, 64, block) / 16 * 2.0 ** np.floor(e / 4)
        elif kind == 2:
            out[i] = 0.0
            out[i, rng.integers(block)] = -0.0 if i % 12 == 2 else 3.4e38
        elif kind == 3:
            out[i] = rng.standard_normal(block) * 1e-40
        else:
            out[i] = rng.uniform(-1, 1, block) * 2.0 ** rng.integers(-20, 20)
    return out


def bits_equal(got, want, suite=None, parity_stats=None):
    got = np.asarray(got, dtype=np.float32)
    want = np.asarray(want, dtype=np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN positions differ"
    ok = np.isnan(want) | (got.view(np.int32) == want.view(np.int32))
    if not ok.all():
        i = np.flatnonzero(~ok.reshape(-1))[:5]
        raise AssertionError(f"{(~ok).sum()} mismatches: got {got.reshape(-1)[i]} want "
                             f"{want.reshape(-1)[i]}")
    if parity_stats is not None:
        parity_stats.add(suite, got.size, 0)


@pytest.mark.parametrize("fmt", FLOATS)
@pytest.mark.parametrize("block", [32, 16, 64])
def test_bit_exact_with_torchao(fmt, block, parity_stats):
    x = blocks(600, block, block).reshape(-1, 4 * block)
    q = qi.WeightsMXInferableQuantizer(fmt, block_size=block)
    bits_equal(q(x), torchao_mx(torch.from_numpy(x), fmt, block, -1),
               f"MX {fmt} vs torchao to_mx(FLOOR)", parity_stats)


@pytest.mark.parametrize("fmt", FLOATS)
def test_every_axis_and_layout(fmt, parity_stats):
    x = blocks(96, 32, 3).reshape(4, 8, 96)  # blocks along the last axis
    x3 = np.ascontiguousarray(np.moveaxis(blocks(96, 32, 4).reshape(8, 12, 32), 2, 0))  # axis 0
    q_last = qi.ActivationMXInferableQuantizer(fmt)
    q_first = qi.WeightsMXInferableQuantizer(fmt, block_axis=0, input_rank=3)
    bits_equal(q_last(x), torchao_mx(torch.from_numpy(x), fmt, 32, -1),
               f"MX {fmt} vs torchao to_mx(FLOOR)", parity_stats)
    bits_equal(q_first(x3), torchao_mx(torch.from_numpy(x3), fmt, 32, 0),
               f"MX {fmt} vs torchao to_mx(FLOOR)", parity_stats)
    # A strided view and torch tensors give the same bits.
    bits_equal(q_first(np.moveaxis(blocks(96, 32, 4).reshape(8, 12, 32), 2, 0)), q_first(x3))
    bits_equal(q_last(torch.from_numpy(x)).numpy(), q_last(x))


@pytest.mark.parametrize("block", [32, 8])
def test_mxint8_from_the_definition(block, parity_stats):
    x = blocks(500, block, 7).reshape(-1, 5 * block)
    x[3, 7] = np.inf  # a block holding inf: the shared exponent overflows E8M0 (NaN)
    x[9, 2] = np.nan
    q = qi.WeightsMXInferableQuantizer("INT8", block_size=block)
    bits_equal(q(x), mxint8_reference(torch.from_numpy(x), block, -1), "MXINT8 vs definition",
               parity_stats)
    xt = np.ascontiguousarray(x.T)
    qt = qi.WeightsMXInferableQuantizer("INT8", block_size=block, block_axis=0)
    bits_equal(qt(xt), q(x).T)


def test_special_values():
    q = qi.ActivationMXInferableQuantizer("E4M3", block_size=4)
    x = np.array([1.0, np.nan, 2.0, 3.0,   # a NaN makes the whole block NaN (E8M0 NaN scale)
                  np.inf, 1.0, -1.0, 0.5,  # inf: the scale is 2^120; inf stays inf, the rest 0
                  0.0, -0.0, 0.0, 0.0,     # zeros keep their sign
                  448.0, 480.0, -500.0, 1.0], dtype=np.float32)
    y = q(x)
    assert np.isnan(y[:4]).all()
    assert y[4] == np.inf and (y[5:8] == 0).all() and np.signbit(y[6])
    assert (y[8:12] == 0).all() and np.signbit(y[9]) and not np.signbit(y[8])
    # amax 500: X = 2^(8 - 8) = 1; 448 stays, 480 and -500 saturate to +-448, 1 stays.
    assert y[12:].tolist() == [448.0, 448.0, -448.0, 1.0]


def test_plan_json_and_ragged_sizes():
    q = qi.WeightsMXInferableQuantizer("E2M1", 32, 1, input_rank=2)
    assert q.get_config() == {"format": "E2M1", "block_size": 32, "block_axis": 1,
                              "input_rank": 2, "tensor_scale": None, "qi_version": qi.__version__}
    assert qi.quantizer_from_json(q.to_json()).get_config() == q.get_config()
    assert q.plan["kind"] == "mx" and q.num_bits == 4
    with pytest.raises(ValueError, match=r"the size along block_axis 1 \(40\) must be a multiple "
                                         r"of block_size 32"):
        q(np.zeros((2, 40), dtype=np.float32))
    with pytest.raises(ValueError, match=r"tensor rank must equal input_rank 2"):
        q(np.zeros((2, 2, 32), dtype=np.float32))


def mx_reference(x, fmt, block, axis):
    return (mxint8_reference(x, block, axis) if fmt == "INT8" else
            torchao_mx(x, fmt, block, axis))


@pytest.mark.parametrize("fmt", FLOATS + ["INT8"])
@pytest.mark.parametrize("p", [0.37, 6.0, 1.3e-30, 3.1e20])
def test_pre_scale_is_mx_of_x_over_p_times_p(fmt, p, parity_stats):
    # y = MX(x / p) * p in float32: the reference (torchao's to_mx, the MXINT8 definition)
    # applied to x / p, its result multiplied by p. Tiny p push x / p to inf, huge p into
    # subnormals.
    x = blocks(300, 32, 11).reshape(-1, 128)
    q = qi.WeightsMXInferableQuantizer(fmt, tensor_scale=p)
    pt = torch.tensor(p, dtype=torch.float32)
    want = mx_reference(torch.from_numpy(x) / pt, fmt, 32, -1) * pt
    bits_equal(q(x), want, f"MX {fmt} with a pre-scale vs torchao to_mx(x / p) * p",
               parity_stats)
    # Along axis 0, through the activation class, and on torch tensors (the packed plan).
    a = qi.ActivationMXInferableQuantizer(fmt, block_size=32, block_axis=0, tensor_scale=p)
    bits_equal(a(np.ascontiguousarray(x.T)), q(x).T)
    bits_equal(q(torch.from_numpy(x)).numpy(), q(x))
    if p == 6.0:  # differs from MX without the pre-scale; TensorFlow gives the same bits
        assert not np.array_equal(q(x), qi.WeightsMXInferableQuantizer(fmt)(x))
        tf = pytest.importorskip("tensorflow")  # (TF flushes subnormals: normal data)
        n = np.random.default_rng(0).standard_normal((8, 128)).astype(np.float32)
        bits_equal(q(tf.constant(n)).numpy(), q(n))


def test_pre_scale_plan_json_and_onnx():
    q = qi.ActivationMXInferableQuantizer("E2M1", block_size=16, tensor_scale=0.1)
    assert q.get_config() == {"format": "E2M1", "block_size": 16, "block_axis": -1,
                              "tensor_scale": 0.1, "qi_version": qi.__version__}
    assert q.plan["tensor_scale"] == np.float32(0.1)
    assert qi.quantizer_from_json(q.to_json()).get_config() == q.get_config()
    assert q.tensor_scale == 0.1
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    import io
    from quantizers_infrastructure.pytorch import onnx as qonnx
    op, inputs, attrs = qonnx.custom_op_spec(q)
    assert op == "ActivationMXQuantizer" + qonnx.PRESCALED_SUFFIX and inputs == []
    assert attrs["tensor_scale"] == float(np.float32(0.1))
    model = qi.PytorchActivationQuantizationHolder(q)
    x = torch.from_numpy(blocks(40, 16, 5).reshape(-1, 64))
    f = io.BytesIO()
    torch.onnx.export(model.eval(), (x,), f, opset_version=16, input_names=["input"],
                      output_names=["output"], dynamo=False)
    nodes = [n for n in onnx.load_from_string(f.getvalue()).graph.node
             if n.domain == qonnx.DOMAIN]
    assert [n.op_type for n in nodes] == [op]
    sess = ort.InferenceSession(f.getvalue(), qonnx.get_ort_session_options(),
                                providers=["CPUExecutionProvider"])
    bits_equal(sess.run(None, {"input": x.numpy()})[0], q(x.numpy()))


@pytest.mark.parametrize("bad,message", [
    (0.0, "tensor_scale must be > 0, got 0"),
    (-2.0, "tensor_scale must be > 0, got -2"),
    (float("inf"), "tensor_scale must be finite, got inf"),
    (1e-45, "tensor_scale must be a normal float32"),
    (1e39, "tensor_scale must be a normal float32"),
])
def test_bad_pre_scale(bad, message):
    for cls in (qi.WeightsMXInferableQuantizer, qi.ActivationMXInferableQuantizer):
        with pytest.raises(ValueError, match=f"{cls.__name__}: {message}"):
            cls("E4M3", tensor_scale=bad)


@pytest.mark.parametrize("kwargs,message", [
    (dict(format="E4M4"), 'format must be one of E4M3, E5M2, E3M2, E2M3, E2M1, INT8, got "E4M4"'),
    (dict(format="E4M3", block_size=0), r"block_size must be in \[1, 2147483647\], got 0"),
    (dict(format="E4M3", block_size=-32), r"block_size must be in \[1, 2147483647\], got -32"),
    (dict(format="E4M3", block_axis=3, input_rank=2),
     r"block_axis must be in \[-2, 2\) for input_rank 2, got 3"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        qi.WeightsMXInferableQuantizer(**kwargs)
