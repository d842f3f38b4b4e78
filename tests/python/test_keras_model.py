# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Whole-model quantization of Keras models in one call (quantizers_infrastructure.keras:
quantize, prepare_qat, convert): batch-norm folding, wrapping, activation holders, calibration
through the core, presets, overrides and skip lists, fit, .keras save/load, QAT, MobileNetV2."""

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure import keras as qk  # noqa: E402
from quantizers_infrastructure.common import calibration as cal  # noqa: E402
from quantizers_infrastructure.common.report import sqnr_db  # noqa: E402
from quantizers_infrastructure.keras.model import HOLDER_SUFFIX  # noqa: E402

L = tf.keras.layers


def data(shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).normal(0, scale, shape).astype(np.float32)


def randomize_bn(model, seed=0):
    """Batch norms with non-trivial statistics and affine parameters."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape).astype(np.float32),
                               rng.normal(0, 0.2, b.shape).astype(np.float32),
                               rng.normal(0, 0.2, m.shape).astype(np.float32),
                               rng.uniform(0.5, 2.0, v.shape).astype(np.float32)])


def residual_model(seed=0):
    """Conv+BN+ReLU, a depthwise block with a residual Add, a Concatenate, a transposed conv and
    a Dense head."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.BatchNormalization(name="dw_bn")(y)
    y = L.ReLU(name="dw_relu")(y)
    y = L.Conv2D(8, 1, name="pw")(y)
    y = L.BatchNormalization(name="pw_bn")(y)
    x = L.Add(name="res_add")([x, y])
    z = L.Conv2DTranspose(4, 3, strides=2, padding="same", name="up")(x)
    z = L.BatchNormalization(name="up_bn")(z)
    z = L.Activation("relu", name="up_act")(z)
    z = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="down")(z)
    x = L.Concatenate(name="cat")([x, z])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, name="fc")(x)
    model = tf.keras.Model(inp, out, name="residual")
    randomize_bn(model, seed)
    return model


def batches(n=4, seed=1, shape=(4, 16, 16, 3)):
    return [data(shape, seed + i) for i in range(n)]


def test_fold_batch_norm_exact_to_float_tolerance():
    model = residual_model()
    x = data((4, 16, 16, 3), 7)
    ref = model(x, training=False).numpy()
    cfg = qi.ModelQuantizationConfig("w8a8", weights=None, activations=None)
    folded = qk.quantize(model, cfg, None, report=False)
    names = [l.name for l in folded.layers]
    assert not any(isinstance(l, L.BatchNormalization) for l in folded.layers), names
    assert not any(isinstance(l, (qi.KerasQuantizationWrapper,
                                  qi.KerasActivationQuantizationHolder)) for l in folded.layers)
    np.testing.assert_allclose(folded(x, training=False).numpy(), ref, rtol=1e-5, atol=1e-5)
    # Each kind of foldable layer: Conv2D without bias, DepthwiseConv2D, Conv2DTranspose.
    assert folded.get_layer("stem").use_bias and folded.get_layer("up").use_bias
    # The float model is left as it was.
    assert isinstance(model.get_layer("stem_bn"), L.BatchNormalization)
    np.testing.assert_array_equal(model(x, training=False).numpy(), ref)


def test_fold_dense_and_what_cannot_fold():
    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input((6,))
    a = L.Dense(4, name="d1")(inp)
    a = L.BatchNormalization(name="bn1")(a)            # folds
    b = L.Dense(4, activation="relu", name="d2")(a)
    b = L.BatchNormalization(name="bn2")(b)            # after a ReLU inside d2: stays
    model = tf.keras.Model(inp, b)
    randomize_bn(model, 3)
    cfg = {"preset": "w8a8", "weights": None, "activations": None}
    folded = qk.quantize(model, cfg, report=False)
    kinds = [type(l).__name__ for l in folded.layers]
    assert kinds.count("BatchNormalization") == 1 and folded.get_layer("bn2")
    x = data((5, 6), 4)
    np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    # fold_batch_norm=false keeps every batch norm.
    kept = qk.quantize(model, dict(cfg, fold_batch_norm=False), report=False)
    assert [type(l).__name__ for l in kept.layers].count("BatchNormalization") == 2


def test_w8a8_wraps_layers_and_places_holders():
    model = residual_model()
    qmodel = qk.quantize(model, "w8a8", batches(), progress=False)
    wrapped = {l.layer.name: l for l in qmodel.layers if isinstance(l, qi.KerasQuantizationWrapper)}
    assert set(wrapped) == {"stem", "dw", "pw", "up", "down", "fc"}
    assert list(wrapped["dw"].weights_quantizers) == ["depthwise_kernel"]
    holders = {l.name[:-len(HOLDER_SUFFIX)]: l for l in qmodel.layers
               if isinstance(l, qi.KerasActivationQuantizationHolder)}
    # Layer outputs after their activation layers, and the Add / Concatenate outputs.
    assert set(holders) == {"stem", "dw", "pw", "up", "down", "fc", "res_add", "cat"}
    assert holders["stem"].input is qmodel.get_layer("stem_relu").output
    assert holders["up"].input is qmodel.get_layer("up_act").output
    assert holders["res_add"].input is qmodel.get_layer("res_add").output
    # Per-channel weights along each layer's output channel axis.
    assert wrapped["stem"].weights_quantizers["kernel"].kernel_channel_axis == 3
    assert wrapped["dw"].weights_quantizers["depthwise_kernel"].kernel_channel_axis == 2
    assert wrapped["up"].weights_quantizers["kernel"].kernel_channel_axis == 2
    assert wrapped["fc"].weights_quantizers["kernel"].kernel_channel_axis == 1
    # After the ReLU6 the stem's calibrated range starts at 0 and ends within 6.
    stem_q = holders["stem"].activation_holder_quantizer.get_config()
    assert stem_q["min_range"] == [0.0] and 0 < stem_q["max_range"][0] <= 6.0
    report = qmodel.qi_report
    assert report.num_wrapped == 6 and report.num_activation_quantizers == 8
    assert report.calibration_batches == 4 and "folded 4 batch norms" in " ".join(report.notes)
    assert report.model_output_sqnr_db > 20, str(report)
    assert all(r.weight_sqnr_db > 30 for r in report.layers if r.weights), str(report)
    x = data((4, 16, 16, 3), 9)
    ref = model(x, training=False).numpy()
    assert sqnr_db(ref, qmodel(x, training=False).numpy()) > 20
    json.dumps(report.to_dict())
    assert "res_add" in str(report)


def assert_params(config, expected):
    """A quantizer's config holds the calibrated parameters (lists in configs)."""
    for key, value in expected.items():
        np.testing.assert_allclose(np.ravel(config[key]), np.ravel(value), rtol=1e-6)


def test_calibrated_parameters_are_the_cores():
    """Weights from the core's calibrate_weights on the folded kernel; activations from the
    core's histogram of the float (folded) values at the site."""
    model = residual_model()
    data_ = batches(3)
    qmodel = qk.quantize(model, "w8a8", data_, progress=False, report=False)
    folded = qk.quantize(model, {"preset": "w8a8", "weights": None, "activations": None},
                         report=False)
    spec = qi.ModelQuantizationConfig("w8a8").weights
    kernel = folded.get_layer("pw").kernel.numpy()
    expect = cal.weight_params(spec, kernel, 3)
    assert "threshold" in expect and len(expect["threshold"]) == 8
    assert_params(qmodel.get_layer("quant_pw").weights_quantizers["kernel"].get_config(), expect)
    # The Add site: histogram of the folded model's res_add output over the same batches.
    probe = tf.keras.Model(folded.inputs, folded.get_layer("res_add").output)
    h = cal.Histogram(qi.ModelQuantizationConfig("w8a8").num_bins)
    for b in data_:
        h.update(probe(b).numpy())
    expect = cal.activation_params(qi.ModelQuantizationConfig("w8a8").activations, h)
    assert "min_range" in expect
    assert_params(qmodel.get_layer("res_add" + HOLDER_SUFFIX).activation_holder_quantizer
                  .get_config(), expect)


@pytest.mark.parametrize("method,calibration", [("SYMMETRIC", "minmax"), ("UNIFORM", "mse"),
                                                ("POWER_OF_TWO", "kl"),
                                                ("SYMMETRIC", "percentile")])
def test_calibration_methods_match_the_pytorch_path(method, calibration):
    """The same Dense layer and data through the Keras and the PyTorch paths: the same weight
    and activation parameters (Keras kernels are the transposed torch weights)."""
    torch = pytest.importorskip("torch")
    import quantizers_infrastructure.pytorch as qp
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.3, (6, 4)).astype(np.float32)
    bvec = rng.normal(0, 0.1, 4).astype(np.float32)
    inp = tf.keras.Input((6,))
    kmodel = tf.keras.Model(inp, L.Dense(4, name="fc")(inp))
    kmodel.get_layer("fc").set_weights([w, bvec])
    tmodel = torch.nn.Sequential(torch.nn.Linear(6, 4))
    with torch.no_grad():
        tmodel[0].weight.copy_(torch.from_numpy(w.T.copy()))
        tmodel[0].bias.copy_(torch.from_numpy(bvec))
    spec = {"method": method, "calibration": calibration}
    if method == "POWER_OF_TWO":
        spec["calibration"] = "mse"  # weights: KL is for activations' histograms
    cfg = qi.ModelQuantizationConfig("w8a8", weights=spec,
                                     activations={"method": method, "calibration": calibration})
    xs = [rng.normal(0, 1, (8, 6)).astype(np.float32) for _ in range(3)]
    kq = qk.quantize(kmodel, cfg, xs, progress=False, report=False)
    tq = qp.quantize(tmodel, cfg, [torch.from_numpy(x) for x in xs], progress=False,
                     report=False)
    kw = kq.get_layer("quant_fc").weights_quantizers["kernel"].get_config()
    ka = kq.get_layer("fc" + HOLDER_SUFFIX).activation_holder_quantizer.get_config()
    tmods = qp.model.quantized_modules(tq)
    tw = next(m for m in tmods.values() if hasattr(m, "weights_quantizers")
              ).weights_quantizers["weight"].get_config()
    ta = next(m for m in tmods.values() if hasattr(m, "activation_holder_quantizer")
              ).activation_holder_quantizer.get_config()
    params = ("threshold", "min_range", "max_range", "signed", "num_bits", "per_channel")
    assert any(k in kw for k in params[:3]) and any(k in ka for k in params[:3])
    for key in params:
        assert (key in kw) == (key in tw) and (key in ka) == (key in ta), (kw, tw, ka, ta)
        if key in kw:
            np.testing.assert_allclose(kw[key], tw[key], rtol=1e-6)
        if key in ka:
            np.testing.assert_allclose(ka[key], ta[key], rtol=1e-6)
    assert kw["channel_axis"] == 1 and tw["channel_axis"] == 0
    x = xs[0]
    np.testing.assert_allclose(kq(x).numpy(), tq(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


def test_conv_bn_relu_matches_the_pytorch_path():
    """Conv2D + BatchNormalization + ReLU in Keras and Conv2d + BatchNorm2d + ReLU in PyTorch with
    the same parameters: the same folded weights' parameters, the same activation range and the
    same outputs (NHWC against NCHW) to float rounding."""
    torch = pytest.importorskip("torch")
    import quantizers_infrastructure.pytorch as qp
    rng = np.random.default_rng(12)
    w = rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32)          # torch (out, in, kh, kw)
    gamma, beta = rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.2, 6)
    mean, var = rng.normal(0, 0.2, 6), rng.uniform(0.5, 2.0, 6)
    inp = tf.keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(inp)
    x = L.BatchNormalization(epsilon=1e-5, name="bn")(x)
    kmodel = tf.keras.Model(inp, L.ReLU(name="relu")(x))
    kmodel.get_layer("conv").set_weights([w.transpose(2, 3, 1, 0)])
    kmodel.get_layer("bn").set_weights([a.astype(np.float32) for a in (gamma, beta, mean, var)])
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1, bias=False),
                                 torch.nn.BatchNorm2d(6), torch.nn.ReLU()).eval()
    with torch.no_grad():
        tmodel[0].weight.copy_(torch.from_numpy(w))
        for name, a in (("weight", gamma), ("bias", beta), ("running_mean", mean),
                        ("running_var", var)):
            getattr(tmodel[1], name).copy_(torch.from_numpy(a.astype(np.float32)))
    xs = [rng.normal(0, 1, (4, 8, 8, 3)).astype(np.float32) for _ in range(3)]
    kq = qk.quantize(kmodel, "w8a8", xs, progress=False, report=False)
    tq = qp.quantize(tmodel, "w8a8", [torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
                                      for x in xs], progress=False, report=False)
    tmods = qp.model.quantized_modules(tq)
    tw = next(m for m in tmods.values() if hasattr(m, "weights_quantizers")
              ).weights_quantizers["weight"].get_config()
    ta = next(m for m in tmods.values() if hasattr(m, "activation_holder_quantizer")
              ).activation_holder_quantizer.get_config()
    kw = kq.get_layer("quant_conv").weights_quantizers["kernel"].get_config()
    ka = kq.get_layer("conv" + HOLDER_SUFFIX).activation_holder_quantizer.get_config()
    np.testing.assert_allclose(kw["threshold"], tw["threshold"], rtol=1e-5)
    np.testing.assert_allclose([ka["min_range"], ka["max_range"]],
                               [ta["min_range"], ta["max_range"]], rtol=1e-4)
    x = xs[0]
    kout = kq(x).numpy()
    tout = tq(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy()
    step = (ka["max_range"][0] - ka["min_range"][0]) / 255
    # Convolutions sum in another order: a value on a rounding boundary may take the
    # neighbouring level, nothing more.
    diff = np.abs(kout - tout.transpose(0, 2, 3, 1))
    assert diff.max() <= step * 1.01 and np.mean(diff > 1e-6) < 0.01


def test_presets_overrides_and_skip():
    model = residual_model()
    weight_only = qk.quantize(model, "w8_weight_only", None, progress=False)
    assert not any(isinstance(l, qi.KerasActivationQuantizationHolder)
                   for l in weight_only.layers)
    assert weight_only.qi_report.num_wrapped == 6
    cfg = qi.ModelQuantizationConfig(
        "w8a8", activation_ops=["add"],
        overrides=[{"type": "DepthwiseConv2D", "weights": {"n_bits": 4}},
                   {"name": "fc", "activations": None},
                   {"name": "up", "weights": {"method": "UNIFORM"}}],
        skip=["stem", {"type": "Conv2DTranspose", "name": "nothing*"}])
    q = qk.quantize(model, cfg.to_json(), batches(2), progress=False)
    names = {l.name for l in q.layers}
    assert "quant_stem" not in names and "stem" in names
    assert q.get_layer("quant_dw").weights_quantizers["depthwise_kernel"].get_config()[
        "num_bits"] == 4
    assert "min_range" in q.get_layer("quant_up").weights_quantizers["kernel"].get_config()
    assert "fc" + HOLDER_SUFFIX not in names and "cat" + HOLDER_SUFFIX not in names
    assert "res_add" + HOLDER_SUFFIX in names
    assert any("skipped 'stem'" in n for n in q.qi_report.notes)


def test_errors():
    model = residual_model()
    with pytest.raises(ValueError, match="unknown preset \"w9a9\""):
        qk.quantize(model, "w9a9", batches(1))
    with pytest.raises(ValueError, match="quantize: the config quantizes activations; pass "
                                         "calibration_data"):
        qk.quantize(model, "w8a8")
    with pytest.raises(ValueError, match="prepare_qat: calibration_data gave no batches"):
        qk.prepare_qat(model, "w4a8_lsq", [])
    with pytest.raises(ValueError, match="quantize: model must be a tf.keras.Model, got list"):
        qk.quantize([1], "w8a8", batches(1))

    class Sub(tf.keras.Model):
        def call(self, x):
            return x * 2
    with pytest.raises(ValueError, match="quantize: model 'sub' \\(Sub\\) has no layer graph: "
                                         "pass a functional model or a Sequential model"):
        qk.quantize(Sub(name="sub"), "w8_weight_only")


def test_sequential_fit_save_load(tmp_path):
    tf.keras.utils.set_random_seed(2)
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)), L.Conv2D(4, 3, name="c1"), L.BatchNormalization(name="bn"),
        L.ReLU(name="r"), L.Flatten(name="flat"), L.Dense(3, name="fc")])
    randomize_bn(model)
    xs = [data((4, 8, 8, 1), i) for i in range(3)]
    # (x, y) tuples are read as Keras's fit reads them: the inputs are x.
    labels = [np.eye(3, dtype=np.float32)[np.arange(4) % 3] for _ in xs]
    q = qk.quantize(model, "w8a8", list(zip(xs, labels)), progress=False)
    assert q.qi_report.num_wrapped == 2
    path = str(tmp_path / "q.keras")
    y = q(xs[0], training=False).numpy()
    q.save(path)
    loaded = qi.keras_load_quantized_model(path)
    np.testing.assert_array_equal(loaded(xs[0], training=False).numpy(), y)
    q.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    before = q.get_layer("quant_fc").layer.kernel.numpy().copy()
    q.fit(xs[0], labels[0], epochs=1, batch_size=4, verbose=0)
    assert not np.array_equal(q.get_layer("quant_fc").layer.kernel.numpy(), before)


def test_embedding_conv1d_dot_and_nested_model():
    """Embedding rows and Conv1D kernels quantized, a Conv1D batch norm folded, a Dot layer as a
    "matmul" site; a model inside the model is copied float, with a note."""
    tf.keras.utils.set_random_seed(6)
    inner = tf.keras.Sequential([tf.keras.Input((4,)), L.Dense(4, name="inner_fc")],
                                name="inner")
    tokens = tf.keras.Input((10,), dtype="int32")
    e = L.Embedding(20, 6, name="emb")(tokens)
    c = L.Conv1D(4, 3, padding="same", name="c1d")(e)
    c = L.BatchNormalization(name="c1d_bn")(c)
    d = L.Dot(axes=2, name="dot")([c, c])                 # (batch, 10, 10)
    g = L.GlobalAveragePooling1D(name="gap")(d)
    out = inner(L.Dense(4, name="fc")(g))
    model = tf.keras.Model(tokens, out)
    randomize_bn(model, 6)
    xs = [np.random.default_rng(i).integers(0, 20, (4, 10)).astype(np.int32) for i in range(2)]
    q = qk.quantize(model, "w8a8", xs, progress=False)
    assert q.get_layer("quant_emb").weights_quantizers["embeddings"].kernel_channel_axis == 0
    assert q.get_layer("quant_c1d").weights_quantizers["kernel"].kernel_channel_axis == 2
    names = {l.name for l in q.layers}
    assert "dot" + HOLDER_SUFFIX in names and "c1d_bn" not in names
    assert any("'inner' (Sequential)" in n for n in q.qi_report.notes)
    ref = model(xs[0]).numpy()
    assert sqnr_db(ref, q(xs[0]).numpy()) > 20
    # The nested model is a copy: the float model's is untouched by changes to it.
    q.get_layer("inner").get_layer("inner_fc").kernel.assign_add(tf.ones((4, 4)))
    np.testing.assert_array_equal(model(xs[0]).numpy(), ref)


def test_shared_layer_gets_a_holder_per_call(tmp_path):
    tf.keras.utils.set_random_seed(8)
    a, b = tf.keras.Input((5,), name="a"), tf.keras.Input((5,), name="b")
    shared = L.Dense(3, activation="relu", name="shared")
    out = L.Concatenate(name="cat")([shared(a), shared(b)])
    model = tf.keras.Model([a, b], out)
    xs = [[data((4, 5), i), data((4, 5), i + 10, 3.0)] for i in range(2)]
    q = qk.quantize(model, "w8a8", xs, progress=False)
    holders = {l.name for l in q.layers if isinstance(l, qi.KerasActivationQuantizationHolder)}
    assert holders == {"shared" + HOLDER_SUFFIX, "shared_1" + HOLDER_SUFFIX, "cat" + HOLDER_SUFFIX}
    # One wrapper (one kernel) for both calls; each call's range from its own inputs.
    assert sum(isinstance(l, qi.KerasQuantizationWrapper) for l in q.layers) == 1
    hi = [q.get_layer(n + HOLDER_SUFFIX).activation_holder_quantizer.get_config()["max_range"][0]
          for n in ("shared", "shared_1")]
    assert hi[1] > 2 * hi[0]
    assert q.qi_report.num_wrapped == 1 and q.qi_report.model_output_sqnr_db > 20
    path = str(tmp_path / "shared.keras")
    q.save(path)
    np.testing.assert_array_equal(qi.keras_load_quantized_model(path)(xs[0]).numpy(),
                                  q(xs[0]).numpy())


def test_progress_bar(capsys):
    model = residual_model()
    qk.quantize(model, "w8a8", batches(2), progress=False, report=False)
    assert "qi calibration" not in capsys.readouterr().err
    qk.quantize(model, "w8a8", batches(2), progress=True, report=False)
    assert "qi calibration" in capsys.readouterr().err


def test_qat_prepare_fit_convert(tmp_path):
    model = residual_model(4)
    data_ = batches(2, seed=11)
    qat = qk.prepare_qat(model, "w4a8_lsq", data_, progress=False)
    w = qat.get_layer("quant_pw").weights_quantizers["kernel"]
    assert "LSQ" in type(w).__name__, type(w).__name__
    holder = qat.get_layer("res_add" + HOLDER_SUFFIX)
    assert "LSQ" in type(holder.activation_holder_quantizer).__name__
    y = np.random.default_rng(0).normal(0, 1, (4, 5)).astype(np.float32)
    qat.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="mse")
    before = [v.numpy().copy() for v in qat.trainable_variables]
    qat.fit(np.concatenate(data_), np.concatenate([y, y]), epochs=1, batch_size=4, verbose=0)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, qat.trainable_variables))
    qv = [v for v in qat.trainable_variables if "threshold" in v.name or "scale" in v.name]
    assert qv, [v.name for v in qat.trainable_variables]
    # The QAT model saves and loads (trainable quantizers and their trained variables).
    x = data((4, 16, 16, 3), 21)
    path = str(tmp_path / "qat_trainable.keras")
    qat.save(path)
    np.testing.assert_array_equal(qi.keras_load_quantized_model(path)(x, training=False).numpy(),
                                  qat(x, training=False).numpy())
    final = qk.convert(qat)
    assert not any("LSQ" in type(q).__name__ for l in final.layers
                   for q in (list(getattr(l, "weights_quantizers", {}).values()) +
                             [getattr(l, "activation_holder_quantizer", None)]))
    np.testing.assert_array_equal(final(x, training=False).numpy(),
                                  qat(x, training=False).numpy())
    path = str(tmp_path / "qat.keras")
    final.save(path)
    np.testing.assert_array_equal(qi.keras_load_quantized_model(path)(x).numpy(),
                                  final(x).numpy())


def test_mobilenet_v2_in_one_call(tmp_path):
    tf.keras.utils.set_random_seed(0)
    # Logits (no softmax): a softmax over 1000 random logits is nearly flat and would hide the
    # quantization error.
    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3),
                                              classifier_activation=None)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-1, 1, (4, 96, 96, 3)).astype(np.float32) for _ in range(2)]
    # Batch-norm statistics of the data (as a trained model would have), not the defaults: with
    # momentum 0 one training-mode pass sets them to the batch's.
    bns = [l for l in model.layers if isinstance(l, L.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    model(np.concatenate(xs), training=True)
    q = qk.quantize(model, "w8a8", xs, progress=False)
    report = q.qi_report
    assert report.num_wrapped == 53 and f"folded {len(bns)} batch norms" in " ".join(
        report.notes)
    assert not any(isinstance(l, L.BatchNormalization) for l in q.layers)
    x = rng.uniform(-1, 1, (4, 96, 96, 3)).astype(np.float32)
    ref, out = model(x, training=False).numpy(), q(x, training=False).numpy()
    cos = float(np.sum(ref * out) / np.linalg.norm(ref) / np.linalg.norm(out))
    print(f"\nMobileNetV2 96x96: {report.num_wrapped} layers wrapped, "
          f"{report.num_activation_quantizers} activation quantizers, calibration "
          f"{report.calibration_seconds:.2f} s for {report.calibration_batches} batches, output "
          f"SQNR {sqnr_db(ref, out):.1f} dB, cosine {cos:.4f}")
    assert cos > 0.9
