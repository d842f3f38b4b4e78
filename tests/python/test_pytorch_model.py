# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Whole-model quantization in one call (quantizers_infrastructure.pytorch.quantize / prepare_qat
/ convert): configs, calibration against numpy references, batch-norm folding, activation sites,
the torch.fx fallback, QAT, and torchvision's ResNet-18 and MobileNetV2."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import quantizers_infrastructure as qi
import quantizers_infrastructure.pytorch as qp
from quantizers_infrastructure.common import calibration as cal

torch.manual_seed(0)


def batches(shape, n=3, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) * scale for _ in range(n)]


def sqnr(ref, q):
    ref, q = ref.double(), q.double()
    return 10 * math.log10(float((ref * ref).sum()) / max(float(((ref - q) ** 2).sum()), 1e-300))


def holders(model):
    return {n: m for n, m in model.named_modules()
            if isinstance(m, qi.PytorchActivationQuantizationHolder)}


def wrappers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, qi.PytorchQuantizationWrapper)}


# ---- configs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", qi.common.model_config.PRESETS)
def test_presets_round_trip_through_json(preset):
    cfg = qi.ModelQuantizationConfig(preset)
    assert qi.ModelQuantizationConfig.from_json(cfg.to_json()) == cfg
    assert qi.ModelQuantizationConfig.of(preset) == cfg
    assert qi.ModelQuantizationConfig.of(json.loads(cfg.to_json())) == cfg
    assert cfg.weights["n_bits"] in (4, 8)


def test_preset_contents():
    w8a8 = qi.ModelQuantizationConfig("w8a8").to_dict()
    assert w8a8["weights"]["per_channel"] and w8a8["weights"]["method"] == "SYMMETRIC"
    assert w8a8["activations"]["method"] == "UNIFORM" and w8a8["activations"]["training"] is None
    lsq = qi.ModelQuantizationConfig("w4a8_lsq").to_dict()
    assert lsq["weights"]["n_bits"] == 4 and lsq["weights"]["training"] == "LSQ"
    assert lsq["activations"]["training"] == "LSQ"
    assert qi.ModelQuantizationConfig("w8_weight_only").activations is None


@pytest.mark.parametrize("args,kwargs,message", [
    (("w9a9",), {}, 'unknown preset "w9a9"; known presets: w8a8, w4a8_lsq, w8_weight_only'),
    (("w8a8",), {"wieghts": {}}, 'model config: unknown key "wieghts"'),
    (("w8a8",), {"weights": {"nbits": 4}}, 'model config: weights: unknown key "nbits"'),
    (("w8a8",), {"weights": {"n_bits": 1}}, '"n_bits" must be in [2, 16], got 1'),
    (("w8a8",), {"activations": {"per_channel": True}}, "activation quantizers are per tensor"),
    (("w8a8",), {"weights": {"calibration": "entropy"}}, 'unknown calibration method "entropy"'),
    (("w8a8",), {"activations": {"calibration": "kl"}},
     "kl gives a symmetric threshold; use it with SYMMETRIC or POWER_OF_TWO, not UNIFORM"),
    (("w8a8",), {"weights": {"training": "DQA"}}, '"training" must be null, "STE" or "LSQ", got "DQA"'),
    (("w8a8",), {"overrides": [{"weights": {"n_bits": 4}}]},
     'overrides[0]: give "name" (a pattern) and/or "type"'),
    (("w8a8",), {"overrides": [{"name": "x", "weight": {}}]}, 'overrides[0]: unknown key "weight"'),
    (("w8a8",), {"skip": [3]}, "skip[0]: expected a name pattern or an object, got number 3"),
    (("w8a8",), {"activation_ops": ["mul"]},
     'activation_ops[0] must be one of add, cat, matmul, got "mul"'),
    (("w8a8",), {"num_bins": 4}, '"num_bins" must be in [16, 1048576], got 4'),
])
def test_config_errors_name_key_and_value(args, kwargs, message):
    with pytest.raises(ValueError) as e:
        qi.ModelQuantizationConfig(*args, **kwargs)
    assert message in str(e.value)


def test_config_argument_type_error():
    with pytest.raises(ValueError, match="model config: expected a ModelQuantizationConfig, a "
                                         "preset name, JSON text or a dict, got int"):
        qp.quantize(nn.Linear(2, 2), 8, None)
    with pytest.raises(ValueError, match="quantize: model must be a torch.nn.Module, got str"):
        qp.quantize("model", "w8_weight_only")


def test_resolve_overrides_by_name_type_and_glob():
    cfg = qi.ModelQuantizationConfig(
        "w8a8", overrides=[{"type": "Linear", "weights": {"n_bits": 4}},
                           {"name": "head.*", "activations": None},
                           {"name": "head.fc", "weights": {"method": "UNIFORM"}}],
        skip=["stem", {"type": "Embedding"}])
    r = cfg.resolve("head.fc", "Linear")
    assert r["weights"]["n_bits"] == 4 and r["weights"]["method"] == "UNIFORM"
    assert r["activations"] is None and not r["skipped"]
    assert cfg.resolve("stem", "Conv2d")["skipped"]
    assert cfg.resolve("emb", "Embedding")["skipped"]
    assert cfg.resolve("body.conv", "Conv2d")["weights"]["n_bits"] == 8


# ---- calibration against numpy references ----------------------------------------------------

def _rng_weights(shape, seed=1):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w.reshape(shape[0], -1)[:, 0] *= 8  # an outlier per channel
    return w


def test_minmax_against_numpy_per_tensor_and_per_channel():
    w = _rng_weights((6, 3, 3, 3))
    assert cal.threshold_max(w) == [float(np.abs(w).max())]
    np.testing.assert_array_equal(cal.threshold_max(w, 0), np.abs(w).reshape(6, -1).max(1))
    lo, hi = cal.range_min_max(w, 1)
    np.testing.assert_array_equal(lo, w.min(axis=(0, 2, 3)))
    np.testing.assert_array_equal(hi, w.max(axis=(0, 2, 3)))


def _mse_reference(w, make_quantizer, candidates):
    """The first candidate of least squared error, each quantized by a real quantizer."""
    errs = [float(((make_quantizer(c)(w).astype(np.float64) - w) ** 2).sum()) for c in candidates]
    return candidates[int(np.argmin(errs))]


@pytest.mark.parametrize("power_of_two", [False, True])
def test_threshold_mse_against_numpy(power_of_two):
    w = _rng_weights((4, 2, 3, 3))
    got = cal.threshold_mse(w, 0, 4, True, power_of_two, 50)
    for c in range(4):
        wc = np.ascontiguousarray(w[c])
        tmax = float(np.abs(wc).max())
        cands = ([2.0 ** (math.ceil(math.log2(tmax)) - k) for k in range(9)] if power_of_two else
                 [max(tmax * (k + 1) / 50, 2 ** -16) for k in range(50)])
        ref = _mse_reference(wc, lambda t: qi.WeightsSymmetricInferableQuantizer(
            num_bits=4, threshold=[t], per_channel=False), cands)
        assert got[c] == pytest.approx(ref, rel=1e-12)


def test_range_mse_against_numpy():
    w = _rng_weights((3, 40))
    lo, hi = cal.range_mse(w, 0, 4, False, 40)
    for c in range(3):
        wc = np.ascontiguousarray(w[c])
        mn, mx = float(wc.min()), float(wc.max())
        cands = [(mn * (k + 1) / 40, mx * (k + 1) / 40) for k in range(40)]
        ref = _mse_reference(wc, lambda r: qi.WeightsUniformInferableQuantizer(
            num_bits=4, min_range=[r[0]], max_range=[r[1]], per_channel=False), cands)
        assert (lo[c], hi[c]) == pytest.approx(ref, rel=1e-12)


def test_histogram_streams_batches_exactly():
    """Two batches (the second outside the first's range): the bins equal numpy's histogram of
    all the data over the final edges, min/max are exact."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal(5000).astype(np.float32)
    b = (rng.standard_normal(5000) * 6 + 3).astype(np.float32)
    h = cal.Histogram(256)
    h.update(a)
    h.update(b)
    edges = h.lower() + h.width() * np.arange(257)
    ref, _ = np.histogram(np.concatenate([a, b]).astype(np.float64), edges)
    assert np.abs(h.bins() - ref).max() <= 2 and h.bins().sum() == 10000
    lo, hi = h.range_min_max()
    assert lo == [float(min(a.min(), b.min()))] and hi == [float(max(a.max(), b.max()))]


def test_histogram_percentile_against_numpy():
    x = np.random.default_rng(3).standard_normal((64, 100)).astype(np.float32)
    h = cal.Histogram(2048)
    for part in np.split(x, 4):
        h.update(part)
    tol = 2 * h.width()
    assert h.threshold_percentile(99.0)[0] == pytest.approx(np.percentile(np.abs(x), 99.0), abs=tol)
    lo, hi = h.range_percentile(99.5)
    assert lo[0] == pytest.approx(np.percentile(x, 0.5), abs=tol)
    assert hi[0] == pytest.approx(np.percentile(x, 99.5), abs=tol)
    # Per channel: one histogram per column of a (N, C) tensor.
    xc = np.random.default_rng(4).standard_normal((20000, 4)).astype(np.float32) * [1, 2, 3, 4]
    xc = xc.astype(np.float32)
    hc = cal.Histogram(2048, -1)
    hc.update(xc)
    ref = np.percentile(np.abs(xc), 90.0, axis=0)
    got = hc.threshold_percentile(90.0)
    for c in range(4):
        assert got[c] == pytest.approx(ref[c], abs=2 * hc.width(c))


def test_histogram_mse_close_to_the_exact_search():
    x = np.random.default_rng(4).standard_normal(20000).astype(np.float32)
    x[0] = 40
    h = cal.Histogram(2048)
    h.update(x)

    def err(t):
        q = qi.ActivationSymmetricInferableQuantizer(num_bits=4, threshold=[t], signed=True)
        return float(((q(x).astype(np.float64) - x) ** 2).sum())
    exact = cal.threshold_mse(x, None, 4, True, False)[0]
    assert err(h.threshold_mse(4, True, False)[0]) <= 1.02 * err(exact)
    lo, hi = h.range_mse(4)
    assert hi[0] < 40 and lo[0] < 0
    # KL keeps the bulk of a Gaussian and drops the outlier.
    assert 2.0 < h.threshold_kl(8, True)[0] < 40


def _kl_reference(h, num_bits, signed):
    """TensorRT-style entropy calibration in numpy over the histogram of |x| made from h's bins
    (each bin's count at its center)."""
    bins, n = h.bins(), h.num_bins
    tmax = max(abs(h.range_min_max()[0][0]), abs(h.range_min_max()[1][0]))
    w = tmax / n
    centers = np.abs(h.lower() + (np.arange(n) + 0.5) * h.width())
    a = np.zeros(n)
    np.add.at(a, np.minimum((centers / w).astype(np.int64), n - 1), bins)
    levels = 2 ** (num_bits - (1 if signed else 0))
    best, best_i = np.inf, n
    for i in range(min(levels, n), n + 1):
        p = a[:i].copy()
        p[i - 1] += a[i:].sum()
        if p.sum() == 0:
            continue
        q = np.zeros(i)
        for g in range(levels):
            b0, b1 = g * i // levels, (g + 1) * i // levels
            nz = a[b0:b1] > 0
            if nz.any():
                q[b0:b1][nz] = a[b0:b1].sum() / nz.sum()
        pm, qm = p > 0, q > 0
        if (pm & ~qm).any():
            continue
        pn, qn = p / p.sum(), q / q.sum()
        kl = float(np.sum(pn[pm] * np.log(pn[pm] / qn[pm])))
        if kl < best:
            best, best_i = kl, i
    return max(best_i * w, 2 ** -16)


def test_histogram_kl_against_numpy():
    x = np.random.default_rng(6).laplace(size=30000).astype(np.float32)
    h = cal.Histogram(256)
    h.update(x)
    for bits, signed in [(8, True), (6, False)]:
        assert h.threshold_kl(bits, signed)[0] == pytest.approx(_kl_reference(h, bits, signed),
                                                                rel=1e-9)


def test_calibration_errors():
    with pytest.raises(ValueError, match="Histogram: num_bins must be in \\[16, 1048576\\], got 8"):
        cal.Histogram(8)
    with pytest.raises(ValueError, match="Histogram::threshold_max: no data yet"):
        cal.Histogram(16).threshold_max()
    with pytest.raises(ValueError, match="Histogram.update: input must be a float32 array, got "
                                         "dtype float64"):
        cal.Histogram(16).update(np.zeros(3))
    with pytest.raises(ValueError, match="threshold_mse: num_bits must be in \\[2, 16\\], got 1"):
        cal.threshold_mse(np.ones(3, np.float32), None, 1, True, False)


# ---- models ----------------------------------------------------------------------------------------

class Residual(nn.Module):
    """conv-bn-relu, a residual add, a depthwise conv, a concatenation, a transposed conv, a
    matmul and a linear head; two inputs (one by keyword) and a tuple output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.dw_bn = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(16, 4, 2, stride=2)
        self.fc = nn.Linear(4, 5)

    def forward(self, x, gain=1.0):
        y = self.relu(self.bn(self.conv(x)))
        z = self.dw_bn(self.dw(y)) + y
        u = self.up(torch.cat([y, z], dim=1))          # (N, 4, 2H, 2W)
        f = u.mean(dim=(2, 3))                          # (N, 4)
        g = torch.matmul(f.unsqueeze(2), f.unsqueeze(1))  # (N, 4, 4)
        return self.fc(g.mean(dim=1)) * gain, f


def _randomize_bn(model):
    g = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def test_residual_model_w8a8_sites_interface_and_agreement():
    model = _randomize_bn(Residual())
    data = batches((2, 3, 8, 8), n=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = qp.quantize(model, "w8a8", data, progress=False)
    # The float model is left as it was.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(wrappers(q)) == {"conv", "dw", "up", "fc"}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())  # both folded
    names = set(holders(q))
    # conv's output quantizer sits after its ReLU; the add, cat and matmul have theirs.
    assert {"conv" + qp.model.HOLDER_SUFFIX, "add" + qp.model.HOLDER_SUFFIX,
            "cat" + qp.model.HOLDER_SUFFIX, "matmul" + qp.model.HOLDER_SUFFIX} <= names
    assert len(names) == 7  # conv, dw, up, fc, add, cat, matmul
    # Interface: same arguments (keyword too), same output structure.
    x = data[0]
    ref, ref_f = model(x, gain=2.0)
    out, out_f = q(x, gain=2.0)
    assert out.shape == ref.shape and out_f.shape == ref_f.shape
    assert sqnr(ref, out) > 25 and sqnr(ref_f, out_f) > 25
    report = q.qi_report
    assert report.num_wrapped == 4 and report.calibration_batches == 4
    assert all(l.weight_sqnr_db > 30 for l in report.layers if l.weights)
    assert "layer" in str(report) and "W SQNR dB" in str(report)
    json.dumps(report.to_dict())


def test_report_plots_each_layer(tmp_path):
    model = _randomize_bn(Residual())
    q = qp.quantize(model, "w8a8", batches((2, 3, 8, 8), n=2), progress=False)
    report = q.qi_report
    path = tmp_path / "report.png"
    fig = report.plot(str(path), title="Residual w8a8")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert ax.get_title() == "Residual w8a8"
    assert [t.get_text() for t in ax.get_xticklabels()] == [l.name for l in report.layers]
    # Two bar series (weights, outputs), one bar per row each; rows without a weight SQNR (the
    # activation sites) have none: a NaN height.
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 2 * len(report.layers)
    w = [l.weight_sqnr_db for l in report.layers]
    assert [math.isnan(h) for h in heights[:len(w)]] == [v is None for v in w]
    from quantizers_infrastructure.common.report import QuantizationReport
    with pytest.raises(ValueError, match="QuantizationReport.plot: the report has no layers"):
        QuantizationReport().plot()


def test_activation_ops_and_overrides_and_skip_on_a_model():
    model = _randomize_bn(Residual())
    data = batches((2, 3, 8, 8), n=2)
    cfg = qi.ModelQuantizationConfig(
        "w8a8", activation_ops=["add"],
        overrides=[{"type": "Conv2d", "weights": {"n_bits": 4}},
                   {"name": "f*", "activations": None}],
        skip=[{"type": "ConvTranspose2d"}])
    q = qp.quantize(model, cfg, data, progress=False)
    w = wrappers(q)
    assert set(w) == {"conv", "dw", "fc"}
    assert w["conv"].weights_quantizers["weight"].num_bits == 4
    assert w["fc"].weights_quantizers["weight"].num_bits == 8
    assert set(holders(q)) == {"conv" + qp.model.HOLDER_SUFFIX, "dw" + qp.model.HOLDER_SUFFIX,
                               "add" + qp.model.HOLDER_SUFFIX}
    assert any("skipped 'up' (ConvTranspose2d)" in n for n in q.qi_report.notes)


class Mixed(nn.Module):
    """Embedding, Conv1d, Conv3d, ConvTranspose1d and a shared Linear called twice."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.c1 = nn.Conv1d(6, 4, 3, padding=1)
        self.t1 = nn.ConvTranspose1d(4, 4, 2, stride=2)
        self.c3 = nn.Conv3d(1, 2, 2)
        self.fc = nn.Linear(4, 4)

    def forward(self, tokens, volume):
        e = self.emb(tokens).transpose(1, 2)          # (N, 6, L)
        y = self.t1(self.c1(e)).mean(dim=2)            # (N, 4)
        v = self.c3(volume).mean(dim=(1, 2, 3, 4))     # (N,)
        return self.fc(self.fc(y) + v.unsqueeze(1))


def test_embedding_conv1d_conv3d_transpose1d_and_a_shared_layer():
    model = Mixed().eval()
    g = torch.Generator().manual_seed(2)
    data = [(torch.randint(0, 10, (3, 5), generator=g), torch.randn(3, 1, 4, 4, 4, generator=g))
            for _ in range(2)]
    q = qp.quantize(model, "w8a8", data, progress=False)
    w = wrappers(q)
    assert set(w) == {"emb", "c1", "t1", "c3", "fc"}  # fc once, though called twice
    assert len(w["emb"].weights_quantizers["weight"].threshold) == 10  # per embedding row
    assert w["t1"].weights_quantizers["weight"].channel_axis == 1     # transposed: axis 1
    tokens, volume = data[0]
    assert sqnr(model(tokens, volume), q(tokens, volume)) > 25
    # Two calls of fc: two output quantizers, the second named apart.
    assert {"fc" + qp.model.HOLDER_SUFFIX, "fc" + qp.model.HOLDER_SUFFIX + "_"} <= set(holders(q))


@pytest.mark.parametrize("layer,bn,shape", [
    (nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6), (2, 3, 7, 7)),
    (nn.Conv2d(6, 6, 3, groups=6), nn.BatchNorm2d(6), (2, 6, 7, 7)),       # depthwise
    (nn.ConvTranspose2d(3, 5, 3, stride=2), nn.BatchNorm2d(5), (2, 3, 5, 5)),
    (nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4), (2, 3, 9)),
    (nn.Conv3d(2, 3, 2), nn.BatchNorm3d(3), (1, 2, 4, 4, 4)),
    (nn.Linear(5, 7), nn.BatchNorm1d(7), (4, 5)),
])
def test_batch_norm_folding_is_exact_to_float_tolerance(layer, bn, shape):
    model = _randomize_bn(nn.Sequential(layer, bn))
    folded = qp.quantize(model, {}, None, progress=False)  # nothing quantized: folding only
    assert not any(isinstance(m, type(bn)) for m in folded.modules())
    x = torch.randn(*shape)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("calibration", ["minmax", "percentile", "mse"])
@pytest.mark.parametrize("method", ["SYMMETRIC", "POWER_OF_TWO", "UNIFORM"])
def test_activation_calibration_methods_match_the_core_on_observed_data(calibration, method):
    """The holder's parameters are what the core computes on the same activations."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    data = batches((16, 4), n=3)
    spec = {"method": method, "calibration": calibration, "percentile": 99.0}
    q = qp.quantize(model, {"activations": spec, "activation_ops": []}, data, progress=False,
                    report=False)
    holder = q.get_submodule("0" + qp.model.HOLDER_SUFFIX)  # after the ReLU
    with torch.no_grad():
        acts = torch.cat([torch.relu(model[0](b)) for b in data]).numpy()
    h = cal.Histogram(2048)
    for b in data:
        with torch.no_grad():
            h.update(torch.relu(model[0](b)).numpy())
    full = qi.ModelQuantizationConfig(activations=spec).activations
    expected = cal.activation_params(full, h)
    hq = holder.activation_holder_quantizer
    if method == "UNIFORM":
        assert hq.min_range[0] == pytest.approx(expected["min_range"])
        assert hq.max_range[0] == pytest.approx(expected["max_range"])
        if calibration == "minmax":
            assert hq.max_range[0] == pytest.approx(float(acts.max()))
    else:
        assert hq.threshold[0] == pytest.approx(expected["threshold"])
        assert hq.signed is False  # ReLU outputs
        if calibration == "minmax" and method == "SYMMETRIC":
            assert hq.threshold[0] == pytest.approx(float(acts.max()))
        if method == "POWER_OF_TWO":
            assert math.log2(hq.threshold[0]) == int(math.log2(hq.threshold[0]))


@pytest.mark.parametrize("calibration", ["minmax", "percentile", "mse", "kl"])
def test_weight_calibration_methods_per_channel_and_per_tensor(calibration):
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    for per_channel in (True, False):
        spec = {"calibration": calibration, "per_channel": per_channel, "percentile": 99.0}
        q = qp.quantize(model, {"weights": spec}, None, progress=False, report=False)
        wq = q.get_submodule("0").weights_quantizers["weight"]
        w = model[0].weight.detach().numpy()
        full = qi.ModelQuantizationConfig(weights=spec).weights
        expected = cal.weight_params(full, w, 0)["threshold"]
        assert len(wq.threshold) == (4 if per_channel else 1)
        np.testing.assert_allclose(wq.threshold, expected, rtol=1e-6)
        if calibration == "minmax":
            ref = np.abs(w).reshape(4, -1).max(1) if per_channel else [np.abs(w).max()]
            np.testing.assert_allclose(wq.threshold, ref, rtol=1e-6)


def test_calibration_data_forms_and_progress_bar(capsys):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    data = batches((8, 4), n=2)
    a = qp.quantize(model, "w8a8", iter(data), progress=False)               # a one-shot iterator
    b = qp.quantize(model, "w8a8", [(x,) for x in data], progress=False)     # tuples: model(*b)
    c = qp.quantize(model, "w8a8", [(x, 0) for x in data], progress=False,  # (input, label)
                    forward=lambda m, batch: m(batch[0]))
    x = data[0]
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), c(x))
    assert "qi calibration" not in capsys.readouterr().err
    qp.quantize(model, "w8a8", data, progress=True)
    assert "qi calibration" in capsys.readouterr().err
    with pytest.raises(ValueError, match="quantize: the config quantizes activations; pass "
                                         "calibration_data"):
        qp.quantize(model, "w8a8")
    with pytest.raises(ValueError, match="quantize: calibration_data gave no batches"):
        qp.quantize(model, "w8a8", [])


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.inner = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    def forward(self, x):
        y = self.a(x)
        if y.sum() > 0:
            y = y + self.b(x)
        return self.inner(y)


def test_fx_fallback_enters_untraceable_modules_and_says_so():
    model = nn.Sequential(nn.Linear(4, 4), Untraceable(), nn.Linear(4, 4), nn.BatchNorm1d(4))
    _randomize_bn(model)
    data = batches((8, 4), n=2)
    with pytest.warns(UserWarning) as record:
        q = qp.quantize(model, "w8a8", data, progress=False)
    messages = [str(r.message) for r in record]
    # The model traces with '1' kept whole; '1' does not trace and is entered; '1.inner' traces.
    assert len(messages) == 1
    assert ("torch.fx could not trace '1' (Untraceable): TraceError: symbolically traced "
            "variables cannot be used as inputs to control flow. Its children were quantized one "
            "by one; functional ops directly in its forward are not quantized and its batch norms "
            "are not folded") in messages[0]
    assert isinstance(q, torch.fx.GraphModule) and isinstance(q.get_submodule("1"), Untraceable)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in q.modules())  # folded in the graph
    assert set(wrappers(q)) == {"0", "1.a", "1.b", "1.inner.0", "2"}
    # Traversal layers carry their output quantizer; the traced child has a holder.
    assert q.get_submodule("1.a").num_activation_quantizers == 1
    assert isinstance(q.get_submodule("1.inner"), torch.fx.GraphModule)
    assert "0" + qp.model.HOLDER_SUFFIX in holders(q)
    assert any("could not trace '1'" in n for n in q.qi_report.notes)
    x = data[0]
    assert sqnr(model(x), q(x)) > 25


def test_fx_fallback_when_the_model_itself_does_not_trace():
    model = Untraceable()
    with pytest.warns(UserWarning, match="torch.fx could not trace the model \\(Untraceable\\)"):
        q = qp.quantize(model, "w8_weight_only", None, progress=False)
    assert set(wrappers(q)) == {"a", "b", "inner.0"}


class OptionalScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, scale=None):
        y = self.fc(x)
        return y if scale is None else y * scale


def test_optional_none_arguments_are_not_fixed_by_tracing():
    model = OptionalScale()
    data = batches((8, 4), n=2)
    with pytest.warns(UserWarning, match="torch.fx could not trace the model \\(OptionalScale\\): "
                                         "its forward uses the optional argument\\(s\\) 'scale'"):
        q = qp.quantize(model, "w8a8", data, progress=False)
    x = data[0]
    assert sqnr(model(x), q(x)) > 25 and sqnr(model(x, scale=3.0), q(x, scale=3.0)) > 25


def test_prepare_qat_train_convert_matches_the_trainable_eval_forward():
    model = _randomize_bn(Residual())
    data = batches((4, 3, 8, 8), n=2)
    qat = qp.prepare_qat(model, "w4a8_lsq", data, progress=False)
    assert qat.training
    lsq = [q for m in qat.modules() for q in getattr(m, "weights_quantizers", {}).values()]
    assert lsq and all(type(q).__name__ == "LSQWeightQATQuantizer" for q in lsq)
    hq = [m.activation_holder_quantizer for m in holders(qat).values()]
    assert hq and all(type(q).__name__ == "LSQUniformActivationTrainableQuantizer" for q in hq)
    opt = torch.optim.SGD(qat.parameters(), lr=1e-3)
    for x in data * 2:
        out, _ = qat(x)
        loss = out.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    qat.eval()
    x = data[0]
    with torch.no_grad():
        expected = qat(x)
    converted = qp.convert(qat)
    assert not converted.training
    for m in qp.quantized_modules(converted).values():
        qs = list(getattr(m, "weights_quantizers", {}).values()) + (
            [m.activation_holder_quantizer] if hasattr(m, "activation_holder_quantizer") else [])
        assert all(not isinstance(q, qp.BasePytorchTrainableQuantizer) for q in qs)
    with torch.no_grad():
        got = converted(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("weights,activations,wcls,acls", [
    ({"training": "STE", "method": "POWER_OF_TWO"}, {"method": "SYMMETRIC"},
     "STEWeightQATQuantizer", "LSQSymmetricActivationTrainableQuantizer"),
    ({"method": "UNIFORM", "calibration": "minmax"}, {"training": "STE"},
     "LSQUniformWeightQATQuantizer", "STEUniformActivationTrainableQuantizer"),
])
def test_prepare_qat_classes_follow_the_config(weights, activations, wcls, acls):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    data = batches((4, 2, 6, 6), n=2)
    qat = qp.prepare_qat(model, {"preset": "w4a8_lsq", "weights": weights,
                                 "activations": activations}, data, progress=False)
    assert type(qat.get_submodule("0").weights_quantizers["weight"]).__name__ == wcls
    hq = qat.get_submodule("0" + qp.model.HOLDER_SUFFIX).activation_holder_quantizer
    assert type(hq).__name__ == acls
    qat(data[0]).sum().backward()
    qat.eval()
    with torch.no_grad():
        expected = qat(data[1])
    with torch.no_grad():
        torch.testing.assert_close(qp.convert(qat)(data[1]), expected, rtol=0, atol=1e-6)


def _train_a_little(qat, data, steps=2, lr=1e-3):
    opt = torch.optim.SGD(qat.parameters(), lr=lr)
    for x in data * steps:
        out = qat(x)
        out = out[0] if isinstance(out, tuple) else out
        loss = out.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_prepare_qat_batch_norm_train_keeps_them_and_convert_folds_them():
    model = _randomize_bn(Residual())
    data = batches((4, 3, 8, 8), n=2)
    qat = qp.prepare_qat(model, "w4a8_lsq", data, progress=False, batch_norm="train")
    fused = {n: m for n, m in qat.named_modules() if isinstance(m, qp.BatchNormFoldedLayer)}
    assert sorted(fused) == ["conv", "dw"]
    assert not any(n in ("bn", "dw_bn") for n, _ in qat.named_children())
    conv = fused["conv"]
    assert type(conv.layer.weights_quantizers["weight"]).__name__ == "LSQWeightQATQuantizer"
    # The weight quantizer starts from the folded weight: the same thresholds as when the batch
    # norm is folded before training.
    folded = qp.prepare_qat(model, "w4a8_lsq", data, progress=False)
    thresholds = {n: p for n, p in conv.layer.named_parameters() if "threshold" in n}
    assert thresholds
    for n, p in thresholds.items():
        assert torch.equal(p, folded.get_submodule("conv").get_parameter(n)), n
    mean_before = conv.bn.running_mean.clone()
    _train_a_little(qat, data)
    assert not torch.equal(conv.bn.running_mean, mean_before)  # batch statistics in training
    assert conv.layer.layer.weight.grad is not None and conv.bn.weight.grad is not None
    qat.eval()
    x = data[0]
    with torch.no_grad():
        expected = qat(x)
        expected_conv = conv(x)
        qweight = conv.layer.weights_quantizers["weight"](conv.folded_weight(), False).clone()
    converted = qp.convert(qat)
    assert not any(isinstance(m, (qp.BatchNormFoldedLayer, nn.BatchNorm2d))
                   for m in converted.modules())
    cw = converted.get_submodule("conv")
    assert isinstance(cw, qi.PytorchQuantizationWrapper)
    with torch.no_grad():
        # The same quantized weight, bit for bit; the outputs agree to float rounding.
        assert torch.equal(cw.weights_quantizers["weight"](cw.layer.weight), qweight)
        torch.testing.assert_close(cw(x), expected_conv, rtol=1e-5, atol=1e-5)
        got = converted(x)
    # Downstream, a value that float rounding moves across a rounding boundary of an activation
    # quantizer moves one step: the model outputs agree closely, not bit for bit.
    for g, e in zip(got, expected):
        assert sqnr(e, g) > 50


def test_batch_norm_folded_layer_trains_with_batch_statistics():
    model = nn.Sequential(nn.Conv2d(3, 6, 3, bias=True), nn.BatchNorm2d(6), nn.ReLU())
    _randomize_bn(model)
    data = batches((8, 3, 6, 6), n=2)
    qat = qp.prepare_qat(model, {"preset": "w4a8_lsq", "activations": None}, data,
                         progress=False, batch_norm="train")
    fused = qat.get_submodule("0")
    assert isinstance(fused, qp.BatchNormFoldedLayer)
    x = data[1]
    conv, bn = fused.layer.layer, fused.bn
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    wq = fused.layer.weights_quantizers["weight"](conv.weight * s.reshape(-1, 1, 1, 1), True)
    z = torch.nn.functional.conv2d(x, wq) / s.reshape(1, -1, 1, 1) + conv.bias.reshape(1, -1, 1, 1)
    mean, var = z.mean(dim=(0, 2, 3)), z.var(dim=(0, 2, 3), unbiased=False)
    expected = ((z - mean.reshape(1, -1, 1, 1)) / torch.sqrt(var.reshape(1, -1, 1, 1) + bn.eps)
                * bn.weight.reshape(1, -1, 1, 1) + bn.bias.reshape(1, -1, 1, 1)).relu()
    torch.testing.assert_close(qat(x), expected, rtol=1e-5, atol=1e-5)


def test_batch_norm_train_folds_now_what_it_cannot_keep():
    """A transposed convolution's batch norm and one after a layer whose weights the config
    leaves float are folded before training, as with batch_norm="fold"."""
    model = nn.Sequential(nn.ConvTranspose2d(3, 4, 2, stride=2), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    _randomize_bn(model)
    data = batches((2, 3, 4, 4), n=2)
    cfg = {"preset": "w4a8_lsq", "activations": None,
           "overrides": [{"name": "6", "weights": None}]}
    qat = qp.prepare_qat(model, cfg, data, progress=False, batch_norm="train")
    assert [n for n, m in qat.named_modules() if isinstance(m, qp.BatchNormFoldedLayer)] == ["3"]
    assert isinstance(qat.get_submodule("0"), qi.PytorchQuantizationWrapper)
    assert isinstance(qat.get_submodule("6"), nn.Conv2d)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in qat.modules()) == 1
    with torch.no_grad():
        folded_ref = qp.prepare_qat(model, cfg, data, progress=False).eval()(data[0])
        torch.testing.assert_close(qp.convert(qat)(data[0]), folded_ref, rtol=1e-5, atol=1e-5)


def test_prepare_qat_batch_norm_errors():
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="prepare_qat: batch_norm must be one of 'fold', "
                                         "'train', got 'keep'"):
        qp.prepare_qat(model, "w4a8_lsq", batches((2, 2, 3, 3)), batch_norm="keep")
    with pytest.raises(ValueError, match=r"prepare_qat: batch_norm='train' folds the batch norms "
                                         r"at convert, but the config keeps them float "
                                         r"\(fold_batch_norm is false\)"):
        qp.prepare_qat(model, {"preset": "w4a8_lsq", "fold_batch_norm": False},
                       batches((2, 2, 3, 3)), batch_norm="train")


def test_prepare_qat_needs_data_for_activations():
    with pytest.raises(ValueError, match="prepare_qat: the config quantizes activations; pass "
                                         "calibration_data"):
        qp.prepare_qat(nn.Sequential(nn.Linear(2, 2)), "w4a8_lsq")
    qat = qp.prepare_qat(nn.Sequential(nn.Linear(2, 2)), {"preset": "w4a8_lsq",
                                                          "activations": None})
    assert type(qat.get_submodule("0").weights_quantizers["weight"]).__name__ == \
        "LSQWeightQATQuantizer"


def test_quantized_model_saves_and_loads_state_dict():
    model = _randomize_bn(Residual())
    data = batches((2, 3, 8, 8), n=2)
    q = qp.quantize(model, "w8a8", data, progress=False)
    q2 = qp.quantize(model, "w8a8", batches((2, 3, 8, 8), n=2, seed=5, scale=3), progress=False)
    q2.load_state_dict(q.state_dict())
    x = data[1]
    assert torch.equal(q(x)[0], q2(x)[0])


# ---- torchvision ----------------------------------------------------------------------------------

def settle_batch_norms(model, data):
    """Random-weight models: batch-norm statistics from data (cumulative averages), so that
    activations keep their scale through the depth (torchvision's init leaves MobileNetV2's
    logits near 1e-10)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for x in data:
            model(x)
    return model.eval()


# Random-weight networks amplify any perturbation through their depth (0.3% Gaussian noise on the
# float weights alone leaves 29 dB of output SQNR on ResNet-18 and 12.6 dB on MobileNetV2), so
# the model-level bounds are loose and the per-layer ones tight.
@pytest.mark.parametrize("name,expected_layers,min_sqnr,min_cos", [
    ("resnet18", 21, 15.0, 0.98), ("mobilenet_v2", 53, 5.0, 0.85)])
def test_torchvision_models_in_one_call(name, expected_layers, min_sqnr, min_cos, capsys):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    data = batches((2, 3, 64, 64), n=3)
    settle_batch_norms(model, batches((8, 3, 64, 64), n=2, seed=3))
    q = qp.quantize(model, "w8a8", data, progress=False)
    assert len(wrappers(q)) == expected_layers
    assert q.qi_report.num_wrapped == expected_layers
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    x = batches((2, 3, 64, 64), n=1, seed=9)[0]
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert out.shape == ref.shape == (2, 1000)
    cos = torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0)
    with capsys.disabled():
        print(f"\n{name}: {expected_layers} layers wrapped, "
              f"{q.qi_report.num_activation_quantizers} activation quantizers, output SQNR "
              f"{sqnr(ref, out):.1f} dB, cosine {float(cos):.4f}, calibration "
              f"{q.qi_report.calibration_seconds:.2f} s")
    assert sqnr(ref, out) > min_sqnr and float(cos) > min_cos
    layers = q.qi_report.layers
    assert all(l.weight_sqnr_db > 38 for l in layers if l.weights)
    assert layers[0].output_sqnr_db > 38  # the first conv (float input): its weights alone
