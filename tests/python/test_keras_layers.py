# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Keras layers: KerasQuantizationWrapper (dispatcher and positional forms),
KerasActivationQuantizationHolder, JSON configs, .keras save/load with identical outputs, and
trainable quantizers that train inside model.fit and convert bit-exactly."""

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure import keras as qk  # noqa: E402
from quantizers_infrastructure.common.trainable_configs import (  # noqa: E402
    TrainableQuantizerActivationConfig, TrainableQuantizerWeightsConfig)

M = qi.QuantizationMethod


def data(shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).normal(0, scale, shape).astype(np.float32)


def assert_json_configs(model):
    for layer in model.layers:
        text = json.dumps(layer.get_config(), allow_nan=False)  # plain JSON, nothing else
        assert json.loads(text) == json.loads(json.dumps(layer.get_config()))


def assert_save_load_identical(model, x, path):
    y = model(x, training=False).numpy()
    model.save(path)
    loaded = qi.keras_load_quantized_model(path)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), y)
    # Plain Keras loads it too (the classes are registered custom objects).
    plain = tf.keras.models.load_model(path)
    np.testing.assert_array_equal(plain(x, training=False).numpy(), y)
    return loaded


def inferable_model():
    inp = tf.keras.Input((8, 8, 3))
    wq = qi.WeightsPOTInferableQuantizer(num_bits=4, threshold=[0.5, 1.0, 0.25, 0.5],
                                         per_channel=True, channel_axis=3, profile="tf")
    aq = qi.ActivationSymmetricInferableQuantizer(num_bits=8, threshold=[4.0], signed=True)
    conv = qi.KerasQuantizationWrapper(
        tf.keras.layers.Conv2D(4, 3, activation="relu"),
        qi.KerasNodeQuantizationDispatcher(
            {"kernel": wq, "bias": qi.WeightsSymmetricInferableQuantizer(
                num_bits=8, threshold=[1.0], per_channel=False)}, [aq]))
    h = conv(inp)
    h = qi.KerasActivationQuantizationHolder(
        qi.ActivationUniformInferableQuantizer(num_bits=6, min_range=[-0.5], max_range=[3.0]))(h)
    const = data((1, 6, 6, 4), 3)
    mul = qi.KerasQuantizationWrapper(
        tf.keras.layers.Multiply(),
        {1: qi.WeightsSymmetricInferableQuantizer(num_bits=3, threshold=[2.0], per_channel=False)},
        weight_values={1: const}, is_inputs_as_list=True)
    h = mul(h)
    out = qi.KerasQuantizationWrapper(tf.keras.layers.Dense(5), qi.WeightsUniformInferableQuantizer(
        num_bits=8, min_range=[-0.3] * 5, max_range=[0.4] * 5, per_channel=True,
        channel_axis=-1))(tf.keras.layers.Flatten()(h))
    return tf.keras.Model(inp, out), conv, mul, const


def test_wrapper_quantizes_weights_and_outputs():
    model, conv, mul, const = inferable_model()
    x = data((2, 8, 8, 3), 1)
    d = conv.dispatcher
    k = d.weight_quantizers["kernel"](conv.layer.kernel.numpy())
    b = d.weight_quantizers["bias"](conv.layer.bias.numpy())
    ref = tf.nn.relu(tf.nn.conv2d(x, k, 1, "VALID") + b)
    ref = d.activation_quantizers[0](ref.numpy())
    sub = tf.keras.Model(model.input, conv.output)
    np.testing.assert_array_equal(sub(x).numpy(), ref)
    # Positional: Multiply()([h, q(const)]).
    h = tf.keras.Model(model.input, mul.input)(x).numpy()
    qc = mul.weights_quantizers[1](const)
    np.testing.assert_array_equal(tf.keras.Model(model.input, mul.output)(x).numpy(), h * qc)
    # MCT Quantizers' layout: the step counter, then the positional weight.
    assert [v.name.split("/")[-1] for v in mul.weights] == ["optimizer_step:0",
                                                           "positional_weight_1:0"]


def test_configs_are_json_and_save_load_identical(tmp_path):
    model, _, _, _ = inferable_model()
    assert_json_configs(model)
    x = data((3, 8, 8, 3), 2)
    loaded = assert_save_load_identical(model, x, str(tmp_path / "m.keras"))
    # Quantizers come back as the same classes with the same configs.
    for a, b in zip(model.layers, loaded.layers):
        assert a.get_config() == b.get_config()
    # The dispatcher form is kept in the config under "dispatcher".
    cfg = model.layers[1].get_config()
    assert cfg["dispatcher"]["class_name"] == "KerasNodeQuantizationDispatcher"
    # The weight quantizer JSON of a saved model loads on the PyTorch side as it is.
    torch = pytest.importorskip("torch")
    import quantizers_infrastructure.pytorch  # noqa: F401
    kq = cfg["dispatcher"]["config"]["weight_quantizer"]["kernel"]
    w = model.layers[1].layer.kernel.numpy()
    np.testing.assert_array_equal(
        torch.ops.qi.fake_quant(torch.from_numpy(w.copy()), json.dumps(kq)).numpy(),
        qi.quantizer_from_json(json.dumps(kq))(tf.constant(w)).numpy())


def test_dispatcher_config_round_trip():
    d = qi.KerasNodeQuantizationDispatcher(
        qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=2, signed=True,
                                              per_channel=True),
        [qi.ActivationPOTInferableQuantizer(num_bits=8, threshold=[2.0], signed=False)])
    cfg = d.get_config()
    # The one dispatcher schema (C++, PyTorch and Keras write and read it).
    assert set(cfg) == {"activation_quantizers", "weight_quantizer", "qi_version"}
    d2 = qi.KerasNodeQuantizationDispatcher.from_config(json.loads(json.dumps(cfg)))
    assert d2.get_config() == cfg
    assert list(d2.weight_quantizers) == ["kernel"]
    with pytest.raises(ValueError, match="unknown quantizer class"):
        qi.KerasNodeQuantizationDispatcher.from_config(
            {"weight_quantizer": {"kernel": {"class_name": "Nope", "config": {}}},
             "activation_quantizers": []})
    with pytest.raises(ValueError, match='missing key "activation_quantizers"'):
        qi.KerasNodeQuantizationDispatcher.from_config({"weight_quantizer": {}})
    with pytest.raises(ValueError, match="threshold"):
        qi.KerasNodeQuantizationDispatcher.from_config({"weight_quantizer": {"kernel": {
            "class_name": "WeightsPOTInferableQuantizer",
            "config": {"num_bits": 8, "threshold": [3.0], "per_channel": False}}},
            "activation_quantizers": []})


def test_wrapper_errors():
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False)
    a = qi.ActivationSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], signed=True)
    w = qi.KerasQuantizationWrapper(tf.keras.layers.Dense(3), {"depthwise_kernel": q})
    with pytest.raises(ValueError, match="no weight attribute \"depthwise_kernel\""):
        w(tf.zeros([1, 4]))
    w = qi.KerasQuantizationWrapper(tf.keras.layers.Dense(3),
                                    qi.KerasNodeQuantizationDispatcher(q, [a, a]))
    with pytest.raises(ValueError, match="1 outputs but the dispatcher holds 2"):
        w(tf.zeros([1, 4]))
    with pytest.raises(ValueError, match="keys should be all strings"):
        qi.KerasQuantizationWrapper(tf.keras.layers.Dense(3), {0: q})
    with pytest.raises(ValueError, match="Mismatch between"):
        qi.KerasQuantizationWrapper(tf.keras.layers.Multiply(), {1: q},
                                    weight_values={0: np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="should be either an ndarray or a tf.Tensor"):
        qi.KerasQuantizationWrapper(tf.keras.layers.Multiply(), {1: q}, weight_values={1: [1.0]})
    with pytest.raises(ValueError, match=r"quantizer 'kernel' must be a BaseInferableQuantizer "
                                         r"\(or an object with initialize_quantization and "
                                         r"__call__\), got object"):
        qi.KerasQuantizationWrapper(tf.keras.layers.Dense(3), {"kernel": object()})
    # A per-channel quantizer whose count does not fit the kernel: refused when the wrapper is
    # built, naming the wrapper and the weight, with the core's message.
    pc = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0, 2.0], per_channel=True,
                                               channel_axis=-1)
    with pytest.raises(ValueError, match=r"KerasQuantizationWrapper \"qw\": the quantizer of "
                       r"weight \"kernel\" does not fit the layer's weight of shape \[4, 3\]: "
                       r"WeightsSymmetricInferableQuantizer: the quantizer holds 2 per-channel "
                       r"values but the tensor has 3 channels along channel_axis -1"):
        tf.keras.Sequential([tf.keras.Input((4,)),
                             qi.KerasQuantizationWrapper(tf.keras.layers.Dense(3), pc, name="qw")])


# ---- trainable quantizers ---------------------------------------------------------------------

def weights_cfg(method, kernel_shape, per_channel=True, bits=4, seed=0):
    w_max = np.full(kernel_shape[-1], 0.5) if per_channel else np.array([0.5])
    if method == M.UNIFORM:
        params = {"range_min": -w_max, "range_max": w_max * 0.8}
    else:
        params = {"threshold": w_max.reshape((1,) * (len(kernel_shape) - 1) + (-1,))
                  if per_channel else w_max}
    return TrainableQuantizerWeightsConfig(method, bits, params, True, -1, per_channel)


def act_cfg(method, bits=8):
    params = {"range_min": -1.0, "range_max": 4.0} if method == M.UNIFORM else \
        {"threshold": 4.0, "is_signed": False}
    return TrainableQuantizerActivationConfig(method, bits, params, True)


def trainable_model():
    inp = tf.keras.Input((8, 8, 2))
    conv = qi.KerasQuantizationWrapper(
        tf.keras.layers.Conv2D(4, 3, activation="relu"),
        qi.KerasNodeQuantizationDispatcher(
            qk.LSQWeightQATQuantizer(weights_cfg(M.SYMMETRIC, (3, 3, 2, 4))),
            [qk.STESymmetricActivationTrainableQuantizer(act_cfg(M.POWER_OF_TWO))]))
    h = conv(inp)
    h = qi.KerasActivationQuantizationHolder(
        qk.LSQUniformActivationTrainableQuantizer(act_cfg(M.UNIFORM)))(h)
    h = tf.keras.layers.Flatten()(h)
    h = qi.KerasQuantizationWrapper(
        tf.keras.layers.Dense(16, activation="relu"),
        qk.LSQUniformWeightQATQuantizer(weights_cfg(M.UNIFORM, (144, 16))))(h)
    h = qi.KerasActivationQuantizationHolder(
        qk.LSQSymmetricActivationTrainableQuantizer(act_cfg(M.SYMMETRIC)))(h)
    out = qi.KerasQuantizationWrapper(
        tf.keras.layers.Dense(3),
        {"kernel": qk.STEWeightQATQuantizer(weights_cfg(M.POWER_OF_TWO, (16, 3))),
         "bias": qk.STEUniformWeightQATQuantizer(weights_cfg(M.UNIFORM, (3,), False))})(h)
    return tf.keras.Model(inp, out)


def test_trainable_lookup():
    get = qk.get_trainable_quantizer_class
    T, TM = qi.QuantizationTarget, qi.TrainingMethod
    assert get(T.Weights, M.POWER_OF_TWO, TM.LSQ) is qk.LSQWeightQATQuantizer
    assert get(T.Weights, M.UNIFORM, TM.STE) is qk.STEUniformWeightQATQuantizer
    assert get(T.Activation, M.SYMMETRIC, TM.LSQ) is qk.LSQSymmetricActivationTrainableQuantizer
    assert get(T.Activation, M.UNIFORM, TM.STE) is qk.STEUniformActivationTrainableQuantizer
    with pytest.raises(ValueError, match="found 0 trainable quantizers for target Weights, method "
                                         "LUT_POT_QUANTIZER and training method STE"):
        get(T.Weights, M.LUT_POT_QUANTIZER, TM.STE)
    with pytest.raises(ValueError, match="Quantization method mismatch"):
        qk.LSQWeightQATQuantizer(weights_cfg(M.UNIFORM, (3, 3)))


def test_trainable_fit_convert_save_load(tmp_path):
    tf.keras.utils.set_random_seed(1)
    model = trainable_model()
    assert_json_configs(model)
    names = sorted(v.name.split("/")[-1] for v in model.trainable_weights)
    assert "kernelptq_threshold_tensor:0" in names and "out_min:0" in names
    thresholds = {v.name: v.numpy().copy() for v in model.trainable_weights
                  if "ptq_threshold" in v.name or v.name.endswith(("min:0", "max:0"))}
    # LSQ conv and act thresholds, act range (2), dense range (2), and the STE activation
    # threshold, which learns through delta (one policy for every front end).
    assert len(thresholds) == 7
    x = data((64, 8, 8, 2), 5)
    y = np.random.default_rng(6).integers(0, 3, 64)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    changed = [n for n, v in thresholds.items()
               if not np.array_equal(v, [w for w in model.weights if w.name == n][0].numpy())]
    assert changed, "no quantization parameter moved in model.fit"
    # Eval output == the converted (inferable) model's output, bit for bit.
    y_eval = model(x, training=False).numpy()
    inferable = qk.convert_to_inferable_quantizers(model)
    assert not any(getattr(layer, "has_trainable_quantizers", False) for layer in
                   inferable.layers)
    np.testing.assert_array_equal(inferable(x).numpy(), y_eval)
    assert_json_configs(inferable)
    # Both the trainable and the converted model save and load as .keras with identical outputs.
    assert_save_load_identical(model, x, str(tmp_path / "trainable.keras"))
    assert_save_load_identical(inferable, x, str(tmp_path / "inferable.keras"))


def test_lsq_threshold_gets_gradient_in_tf_function():
    cfg = weights_cfg(M.SYMMETRIC, (5, 4))
    q = qk.LSQWeightQATQuantizer(cfg)
    wrapper = qi.KerasQuantizationWrapper(tf.keras.layers.Dense(4), q)
    wrapper.build((None, 5))
    t = q.get_quantizer_variable("ptq_threshold_tensor")
    assert t.name.endswith("kernelptq_threshold_tensor:0")
    assert q.get_trainable_variables(qi.VariableGroup.QPARAMS) == [t]

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(wrapper(x, training=True) ** 2)
        return tape.gradient(loss, [t, wrapper.layer.kernel])

    gt, gk = step(tf.constant(data((3, 5), 9)))
    assert gt.shape == (4,) and np.any(gt.numpy() != 0) and np.any(gk.numpy() != 0)
    # Frozen parameters are created non-trainable.
    frozen = qk.LSQWeightQATQuantizer(cfg, freeze_quant_params=True)
    w2 = qi.KerasQuantizationWrapper(tf.keras.layers.Dense(4), frozen)
    w2.build((None, 5))
    assert frozen.get_trainable_variables(qi.VariableGroup.QPARAMS) == []


# ---- the drifts of the old Keras copy, each fixed by the core's one definition -------------------

def test_keras_eval_uses_the_power_of_two_threshold_after_lsq_training():
    cfg = weights_cfg(M.POWER_OF_TWO, (5, 4))
    q = qk.LSQWeightQATQuantizer(cfg)
    wrapper = qi.KerasQuantizationWrapper(tf.keras.layers.Dense(4), q)
    wrapper.build((None, 5))
    t = q.get_quantizer_variable("ptq_threshold_tensor")
    t.assign([0.3, 0.7, 0.45, 0.9])  # LSQ moved the thresholds off the powers of two
    w = wrapper.layer.kernel
    train = q(w, training=True).numpy()
    ev = q(w, training=False).numpy()
    conv = q.convert2inferable()
    assert conv.threshold == [0.5, 1.0, 0.5, 1.0]
    np.testing.assert_array_equal(conv(w).numpy(), ev)  # eval == conversion
    assert not np.array_equal(train, ev)  # training learns the raw threshold
    # The wrapper passes training through (the old copy ignored it).
    x = tf.constant(data((2, 5), 3))
    # (TensorFlow's own matmul as the reference: numpy's sums in another order.)
    np.testing.assert_array_equal(wrapper(x, training=False).numpy(),
                                  (tf.matmul(x, ev) + wrapper.layer.bias).numpy())


def test_keras_lsq_gradient_scale_uses_the_channel_count():
    # One threshold given for 4 channels: g = 1 / sqrt(max_int * 4), as PyTorch (the old Keras
    # copy used the number of thresholds given, 1).
    torch = pytest.importorskip("torch")
    from quantizers_infrastructure import pytorch as qp
    cfg = TrainableQuantizerWeightsConfig(M.SYMMETRIC, 4, {"threshold": 0.5}, True, 1, True)
    w = data((5, 4), 4, 0.3)
    kq = qk.LSQWeightQATQuantizer(cfg)
    layer = tf.keras.layers.Layer()
    layer.kernel = tf.Variable(w)
    kq.initialize_quantization(w.shape, "kernel", layer)
    t = kq.get_quantizer_variable("ptq_threshold_tensor")
    assert t.shape == (4,)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(kq(layer.kernel, training=True) * 1.5)
    gk = tape.gradient(loss, t).numpy()
    tq = qp.LSQWeightQATQuantizer(cfg)
    module = torch.nn.Module()
    module.register_parameter("kernel", torch.nn.Parameter(torch.from_numpy(w.copy())))
    tq.initialize_quantization(w.shape, "kernel", module)
    (tq(module.kernel, True) * 1.5).sum().backward()
    np.testing.assert_array_equal(gk, tq.get_quantizer_variable("ptq_threshold_tensor").grad)


def test_keras_conversion_clamps_at_the_minimum_threshold():
    q = qk.STESymmetricActivationTrainableQuantizer(act_cfg(M.SYMMETRIC))
    holder = qi.KerasActivationQuantizationHolder(q)
    holder.build(None)
    q.get_quantizer_variable("ptq_threshold_tensor").assign([1e-7])
    conv = q.convert2inferable()
    assert conv.threshold == [2.0 ** -16]
    x = tf.constant(data((3, 4), 8, 1e-4))
    np.testing.assert_array_equal(conv(x).numpy(), q(x, training=False).numpy())


def test_keras_soft_rounding_trains_converts_and_saves(tmp_path):
    for method in (M.SYMMETRIC, M.UNIFORM):
        cfg = weights_cfg(method, (3, 3, 2, 4), bits=4)
        cls = qk.get_trainable_quantizer_class(qi.QuantizationTarget.Weights, method,
                                               qi.TrainingMethod.SoftRounding)
        assert cls.__name__ == ("SymmetricSoftRoundingGPTQ" if method == M.SYMMETRIC
                                else "UniformSoftRoundingGPTQ")
        inp = tf.keras.Input((6, 6, 2))
        wrapper = qi.KerasQuantizationWrapper(tf.keras.layers.Conv2D(4, 3), cls(cfg))
        model = tf.keras.Model(inp, wrapper(inp))
        q = wrapper.weights_quantizers["kernel"]
        alpha = q.get_quantizer_variable("auxvar_tensor")
        assert alpha.shape == (3, 3, 2, 4) and q.get_trainable_variables(
            qi.VariableGroup.WEIGHTS) == [alpha]
        x = data((8, 6, 6, 2), 11)
        model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="mse")
        before = alpha.numpy().copy()
        model.fit(x, np.zeros((8, 4, 4, 4), np.float32), epochs=2, verbose=0)
        assert not np.array_equal(before, alpha.numpy())
        y_eval = model(x, training=False).numpy()
        assert_save_load_identical(model, x, str(tmp_path / f"soft_{method.name}.keras"))
        # Conversion replaces the kernel by its hard-rounded values: same outputs.
        hard = q(wrapper.layer.kernel, training=False).numpy()
        conv = q.convert2inferable()
        np.testing.assert_array_equal(conv(tf.constant(hard)).numpy(), hard)
        converted = qk.convert_to_inferable_quantizers(model)
        np.testing.assert_array_equal(converted(x).numpy(), y_eval)
        np.testing.assert_array_equal(converted.layers[1].layer.kernel.numpy(), hard)


def test_fashion_mnist_example_smoke():
    import os
    import subprocess
    import sys
    if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
        pytest.skip("Fashion-MNIST is not installed (dataset-fashion-mnist)")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    script = os.path.join(root, "examples", "keras_qat_fashion_mnist.py")
    r = subprocess.run([sys.executable, script, "--smoke"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "4-bit LSQ weights after QAT" in r.stdout
    assert "converted == trainable (eval): True; .keras reload identical: True" in r.stdout


# ---- damaged model files -----------------------------------------------------------------------

def _saved_dense_model(tmp_path):
    import zipfile
    inp = tf.keras.Input((8,))
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0] * 4, per_channel=True,
                                              channel_axis=1)
    w = qk.KerasQuantizationWrapper(tf.keras.layers.Dense(4, name="fc"), {"kernel": q},
                                     name="qfc")
    path = tmp_path / "m.keras"
    tf.keras.Model(inp, w(inp)).save(path)
    return path, json.loads(zipfile.ZipFile(path).read("config.json"))


def _rewrite(path, config, out):
    import zipfile
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, json.dumps(config).encode() if item.filename == "config.json"
                          else data)
    return out


def _wrapper_record(config):
    return next(layer["config"] for layer in config["config"]["layers"]
                if layer["class_name"] == "KerasQuantizationWrapper")


DAMAGES = [
    ("emptied record", lambda r: r.__setitem__("weights_quantizer", {}), True,
     r"KerasQuantizationWrapper \"qfc\": the quantizer records \(weights_quantizer\) do not match "
     r"the checksum written with them: the file is damaged or was edited"),
    ("dropped record", lambda r: r.pop("weights_quantizer"), True,
     r"KerasQuantizationWrapper \"qfc\": the quantizer records \(none left\) do not match"),
    ("axis out of range", lambda r: r["weights_quantizer"]["kernel"]["config"].__setitem__(
        "channel_axis", 65), False,
     r"KerasQuantizationWrapper \"qfc\": the quantizer of weight \"kernel\" does not fit the "
     r"layer's weight of shape \[8, 4\]: .*channel_axis"),
    ("channel count", lambda r: r["weights_quantizer"]["kernel"]["config"].__setitem__(
        "threshold", [1.0] * 3), False,
     r"KerasQuantizationWrapper \"qfc\": the quantizer of weight \"kernel\" does not fit the "
     r"layer's weight of shape \[8, 4\]: WeightsSymmetricInferableQuantizer: the quantizer holds "
     r"3 per-channel values but the tensor has 4 channels along channel_axis 1"),
    ("wrong type", lambda r: r["weights_quantizer"]["kernel"]["config"].__setitem__(
        "num_bits", "8"), False,
     r"WeightsSymmetricInferableQuantizer: \"num_bits\" must be an integer, got string \"8\""),
]


@pytest.mark.parametrize("what,damage,keep_digest,message", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_damaged_keras_file_is_refused_naming_the_record(tmp_path, what, damage, keep_digest,
                                                         message):
    path, config = _saved_dense_model(tmp_path)
    record = _wrapper_record(config)
    assert len(record["qi_records_sha256"]) == 64
    damage(record)
    if not keep_digest:  # what the checksum would catch first: show the rule behind it
        record.pop("qi_records_sha256")
    bad = _rewrite(path, config, tmp_path / "bad.keras")
    with pytest.raises(ValueError, match=message):
        qk.keras_load_quantized_model(str(bad))


def test_keras_file_without_a_records_checksum_loads(tmp_path):
    """Files of other writers (mct-quantizers) carry no checksum: they load, checked by the rules."""
    path, config = _saved_dense_model(tmp_path)
    _wrapper_record(config).pop("qi_records_sha256")
    good = _rewrite(path, config, tmp_path / "plain.keras")
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    a = qk.keras_load_quantized_model(str(path))(x).numpy()
    b = qk.keras_load_quantized_model(str(good))(x).numpy()
    assert np.array_equal(a, b)
