# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Runs Model Compression Toolkit flows on small models in one process and saves what each flow
produced, for tests/mct/test_flows.py to compare between backends.

    python tests/mct/flows.py {torch|keras} {mctq|qi} OUT_DIR [--load-other]

Backend "mctq" runs MCT on the real mct-quantizers; "qi" first selects qi's compatibility tree
(quantizers_infrastructure.mct.install_as_mct_quantizers()), so that MCT's `import mct_quantizers`
gets qi. Every flow writes OUT_DIR/<flow>.npz (the outputs of the model the flow made, on fixed
inputs) or OUT_DIR/<flow>.err (the exception, with its traceback); exported files go to
OUT_DIR/files (shared by both backends' runs). With --load-other, the process only loads and runs
the files the other backend exported (OUT_DIR/<flow>.cross.npz or .err).

Runs in .venv-mct (scripts/qi mct), which holds model-compression-toolkit 2.6.1."""

import os
import sys
import traceback

import numpy as np

FRAMEWORK, BACKEND, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
FILES = os.path.join(os.path.dirname(os.path.abspath(OUT)), "files")
os.makedirs(FILES, exist_ok=True)
os.makedirs(OUT, exist_ok=True)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if BACKEND == "qi":
    import quantizers_infrastructure.mct as qi_mct
    qi_mct.install_as_mct_quantizers()
elif BACKEND != "mctq":
    raise SystemExit(f"backend must be mctq or qi, got {BACKEND!r}")

import mct_quantizers  # noqa: E402
import model_compression_toolkit as mct  # noqa: E402

# The comparison means something only if each side runs what it says.
_IS_QI = mct_quantizers.__name__ == "quantizers_infrastructure.mct"
if _IS_QI != (BACKEND == "qi") or (BACKEND == "mctq"
                                   and "quantizers_infrastructure" in sys.modules):
    raise SystemExit(f"backend {BACKEND}: mct_quantizers is {mct_quantizers.__name__} "
                     f"({getattr(mct_quantizers, '__file__', '?')})")

RNG = np.random.default_rng(0)
CALIB = [RNG.normal(size=(4, 3, 16, 16)).astype(np.float32) for _ in range(2)]
EVAL = RNG.normal(size=(8, 3, 16, 16)).astype(np.float32) * 1.5


def save(flow, **outputs):
    np.savez(os.path.join(OUT, flow + ".npz"), **{k: np.asarray(v) for k, v in outputs.items()})


def run(flow, fn):
    """Runs one flow; a failure is recorded and the next flow runs."""
    print(f"[flows {FRAMEWORK}/{BACKEND}] {flow}", flush=True)
    for ext in (".npz", ".err"):
        if os.path.exists(os.path.join(OUT, flow + ext)):
            os.remove(os.path.join(OUT, flow + ext))
    try:
        fn(flow)
    except BaseException:  # noqa: BLE001  (recorded, compared by the test)
        with open(os.path.join(OUT, flow + ".err"), "w") as f:
            f.write(traceback.format_exc())
        print(traceback.format_exc(), flush=True)


def tpc(version):
    """IMX500 v1.0 (no metadata), v4.0 (add_metadata=True, so the facades call add_metadata)
    or "uniform": IMX500 v1.0 with uniform activation quantization (MCT 2.6.1's own TFLite and
    QNNPACK TPCs fail to build)."""
    if version == "uniform":
        from model_compression_toolkit.target_platform_capabilities.tpc_models.imx500_tpc.v1_0 \
            import tpc as imx500
        base, _, default = imx500.get_op_quantization_configs()
        method = mct.target_platform_capabilities.QuantizationMethod.UNIFORM

        def uniform(config):
            return config.clone_and_edit(activation_quantization_method=method)

        return imx500.generate_tpc(default_config=uniform(default), base_config=uniform(base),
                                   mixed_precision_cfg_list=[uniform(base)], name="uniform")
    return mct.get_target_platform_capabilities(tpc_version=version)


def run_exports(ptq_models, export, load, table):
    """Runs one flow per (name, serialization, quantization format, file extension, TPC) row:
    export(model, path, serialization, quantization) of the PTQ model made with that TPC, then
    load(path, ext) on EVAL."""
    for name, serialization, quantization, ext, version in table:
        def flow(name, serialization=serialization, quantization=quantization, ext=ext,
                 version=version):
            model = ptq_models.get(version)
            if model is None:
                raise RuntimeError(f"no PTQ model (tpc {version}) to export")
            path = os.path.join(FILES, f"{name}.{BACKEND}.{ext}")
            export(model, path, serialization, quantization)
            save(name, y=load(path, ext))
        run(name, flow)


# ---- PyTorch ------------------------------------------------------------------------------------
def torch_flows():
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3)
            self.fc = nn.Linear(8 * 14 * 14, 10)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv1(x)))
            y = torch.relu(self.conv2(x))
            y = y + 0.5 * x[:, :, 1:-1, 1:-1]
            return self.fc(torch.flatten(y, 1))

    def float_model():
        torch.manual_seed(0)
        m = Net()
        with torch.no_grad():  # non-trivial batch-norm statistics
            m.bn.running_mean.uniform_(-0.2, 0.2)
            m.bn.running_var.uniform_(0.5, 1.5)
        return m.eval()

    def repr_gen():
        for batch in CALIB:
            yield [torch.from_numpy(batch)]

    def outputs(model):
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(EVAL)).numpy()

    ptq_models = {}

    def ptq(version):
        def flow(name):
            q, _ = mct.ptq.pytorch_post_training_quantization(
                float_model(), repr_gen, target_platform_capabilities=tpc(version))
            ptq_models[version] = q
            meta = mct_quantizers.pytorch.metadata.get_metadata(q)
            save(name, y=outputs(q), has_metadata=np.array(bool(meta)))
        return flow

    run("torch_ptq", ptq("1.0"))
    run("torch_ptq_metadata", ptq("4.0"))
    run("torch_ptq_uniform", ptq("uniform"))

    def qat(name):
        qat_model, _ = mct.qat.pytorch_quantization_aware_training_init_experimental(
            float_model(), repr_gen, target_platform_capabilities=tpc("1.0"))
        y_init = outputs(qat_model)
        # One deterministic SGD step through the trainable quantizers.
        qat_model.train()
        opt = torch.optim.SGD(qat_model.parameters(), lr=1e-3)
        loss = qat_model(torch.from_numpy(CALIB[0])).square().mean()
        loss.backward()
        opt.step()
        y_trained = outputs(qat_model)
        final = mct.qat.pytorch_quantization_aware_training_finalize_experimental(qat_model)
        save(name, y_init=y_init, y_trained=y_trained, y_final=outputs(final))

    run("torch_qat", qat)

    def gptq(name):
        torch.manual_seed(0)
        cfg = mct.gptq.get_pytorch_gptq_config(n_epochs=2, use_hessian_based_weights=False,
                                              use_hessian_sample_attention=False)
        q, _ = mct.gptq.pytorch_gradient_post_training_quantization(
            float_model(), repr_gen, gptq_config=cfg, target_platform_capabilities=tpc("1.0"))
        save(name, y=outputs(q))

    run("torch_gptq", gptq)

    fmt = mct.exporter.QuantizationFormat
    ser = mct.exporter.PytorchExportSerializationFormat

    def export_torch(model, path, serialization, quantization):
        mct.exporter.pytorch_export_model(model, path, repr_gen, serialization_format=serialization,
                                          quantization_format=quantization)

    run_exports(ptq_models, export_torch, torch_load, [
        ("torch_onnx_mctq", ser.ONNX, fmt.MCTQ, "onnx", "4.0"),
        ("torch_onnx_fakequant", ser.ONNX, fmt.FAKELY_QUANT, "onnx", "4.0"),
        ("torch_torchscript", ser.TORCHSCRIPT, fmt.FAKELY_QUANT, "pt", "4.0"),
        ("torch_onnx_mctq_uniform", ser.ONNX, fmt.MCTQ, "onnx", "uniform"),
        ("torch_onnx_fakequant_uniform", ser.ONNX, fmt.FAKELY_QUANT, "onnx", "uniform")])


def torch_load(path, ext):
    """Runs an exported PyTorch-flow file on EVAL: TorchScript, or ONNX in ONNX Runtime with the
    backend's custom-op session options."""
    import onnxruntime as ort
    import torch
    if ext == "pt":
        if BACKEND == "mctq":
            # A TorchScript file exported on qi calls qi's ops: the loading process needs qi's
            # op library (only the C++ library, not the Python package).
            torch.ops.load_library(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__)))), "python", "quantizers_infrastructure",
                "libqi_torch.so"))
        m = torch.jit.load(path)
        with torch.no_grad():
            return m(torch.from_numpy(EVAL)).numpy()
    options = mct_quantizers.get_ort_session_options()
    sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: EVAL})[0]


# ---- Keras --------------------------------------------------------------------------------------
def keras_flows():
    import tensorflow as tf
    keras = tf.keras

    calib = [b.transpose(0, 2, 3, 1).copy() for b in CALIB]
    x_eval = EVAL.transpose(0, 2, 3, 1).copy()

    def float_model():
        keras.utils.set_random_seed(0)
        inp = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(8, 3, padding="same")(inp)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        y = keras.layers.Add()([x, y])
        y = keras.layers.DepthwiseConv2D(3)(y)
        y = keras.layers.Flatten()(y)
        out = keras.layers.Dense(10)(y)
        m = keras.Model(inp, out)
        bn = m.layers[2]
        rng = np.random.default_rng(1)
        bn.set_weights([w if i < 2 else (rng.uniform(-0.2, 0.2, w.shape) if i == 2 else
                                         rng.uniform(0.5, 1.5, w.shape)).astype(np.float32)
                        for i, w in enumerate(bn.get_weights())])
        return m

    def repr_gen():
        for batch in calib:
            yield [batch]

    ptq_models = {}

    def ptq(version):
        def flow(name):
            q, _ = mct.ptq.keras_post_training_quantization(
                float_model(), repr_gen, target_platform_capabilities=tpc(version))
            ptq_models[version] = q
            meta = mct_quantizers.keras.metadata.get_metadata(q)
            save(name, y=q(x_eval).numpy(), has_metadata=np.array(bool(meta)))
        return flow

    run("keras_ptq", ptq("1.0"))
    run("keras_ptq_metadata", ptq("4.0"))
    run("keras_ptq_uniform", ptq("uniform"))

    fmt = mct.exporter.QuantizationFormat
    ser = mct.exporter.KerasExportSerializationFormat

    def export_keras(model, path, serialization, quantization):
        mct.exporter.keras_export_model(model, path, serialization_format=serialization,
                                        quantization_format=quantization)

    run_exports(ptq_models, export_keras, keras_load, [
        ("keras_keras_mctq", ser.KERAS, fmt.MCTQ, "keras", "4.0"),
        ("keras_keras_fakequant", ser.KERAS, fmt.FAKELY_QUANT, "keras", "4.0"),
        ("keras_tflite_fakequant", ser.TFLITE, fmt.FAKELY_QUANT, "tflite", "4.0"),
        ("keras_tflite_int8", ser.TFLITE, fmt.INT8, "tflite", "4.0"),
        ("keras_keras_fakequant_uniform", ser.KERAS, fmt.FAKELY_QUANT, "keras", "uniform"),
        ("keras_tflite_int8_uniform", ser.TFLITE, fmt.INT8, "tflite", "uniform")])


def keras_load(path, ext):
    """Runs an exported Keras-flow file on EVAL (NHWC): .keras through MCT's
    keras_load_quantized_model, .tflite in TensorFlow Lite's interpreter."""
    import tensorflow as tf
    x_eval = EVAL.transpose(0, 2, 3, 1).copy()
    if ext == "keras":
        m = mct.keras_load_quantized_model(path)
        return m(x_eval).numpy()
    interp = tf.lite.Interpreter(model_path=path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], x_eval.shape)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x_eval)
    interp.invoke()
    return interp.get_tensor(out["index"])


def cross_load(run_file):
    """Loads the files the other backend exported (qi reads mct-quantizers' files and the other
    way round): OUT_DIR/<flow>.cross.npz."""
    other = "qi" if BACKEND == "mctq" else "mctq"
    for fname in sorted(os.listdir(FILES)):
        parts = fname.split(".")
        if len(parts) != 3 or parts[1] != other or not parts[0].startswith(FRAMEWORK):
            continue
        flow, ext = parts[0], parts[2]
        print(f"[flows {FRAMEWORK}/{BACKEND}] load {fname}", flush=True)
        target = os.path.join(OUT, f"{flow}.cross")
        for e in (".npz", ".err"):
            if os.path.exists(target + e):
                os.remove(target + e)
        try:
            np.savez(target + ".npz", y=np.asarray(run_file(os.path.join(FILES, fname), ext)))
        except BaseException:  # noqa: BLE001
            with open(target + ".err", "w") as f:
                f.write(traceback.format_exc())


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[4] == "--load-other":
        cross_load({"torch": torch_load, "keras": keras_load}[FRAMEWORK])
    else:
        {"torch": torch_flows, "keras": keras_flows}[FRAMEWORK]()
