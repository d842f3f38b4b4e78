# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""quantizers_infrastructure.mct, MCT Quantizers' module tree over qi, against mct-quantizers
1.6.0 (the reference installed in .venv): names, constants, lookups, the PyTorch reuse and
custom-op switches, metadata, the Keras config round trip and weight order, foreign quantizers
in wrappers and holders, MCT Quantizers' .keras files, and the seed-era keywords. Outputs are
compared bit for bit."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
mctq = pytest.importorskip("mct_quantizers")

import quantizers_infrastructure as qi  # noqa: E402
import quantizers_infrastructure.mct as qm  # noqa: E402
from quantizers_infrastructure import _core  # noqa: E402
from quantizers_infrastructure.mct.keras import quantizers as qk  # noqa: E402
from quantizers_infrastructure.mct.pytorch import quantizers as qt  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from mct_quantizers.keras import quantizers as mk  # noqa: E402
    from mct_quantizers.pytorch import quantizers as mt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RNG = np.random.default_rng(14)


def same_bits(a, b):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return a.shape == b.shape and a.view(np.uint32).tobytes() == b.view(np.uint32).tobytes()


# ---- the tree, its names and constants ----------------------------------------------------------

# Every module of mct-quantizers' tree that MCT 2.6 imports from, plus the rest of its public API.
MODULES = ["", ".common", ".common.base_inferable_quantizer", ".common.constants",
           ".common.get_all_subclasses", ".common.get_quantizers", ".common.quant_info",
           ".common.metadata", ".logger", ".pytorch", ".pytorch.quantizers",
           ".pytorch.quantize_wrapper", ".pytorch.activation_quantization_holder",
           ".pytorch.preserving_activation_quantization_holder",
           ".pytorch.fln_activation_quantization_holder", ".pytorch.load_model",
           ".pytorch.metadata", ".pytorch.onnxruntime_session_options", ".keras",
           ".keras.quantizers", ".keras.quantize_wrapper", ".keras.activation_quantization_holder",
           ".keras.load_model", ".keras.metadata"]
# Helpers mct-quantizers' modules import for themselves (not its API): left out on purpose.
NOT_API = {"Any", "Dict", "List", "Optional", "Union", "Tuple", "Callable", "Enum",
           "abstractmethod",
           "importlib", "sys", "np", "torch", "tf", "keras", "onnx", "ort", "logging", "os",
           "datetime", "inspect", "tf_inspect", "LoadOptions", "get_library_path",
           "mctq_version", "smart_cond", "FOUND_TF", "FOUND_TORCH", "FOUND_ONNX",
           "FOUND_ONNXRUNTIME", "FOUND_ONNXRUNTIME_EXTENSIONS", "Logger", "get_all_subclasses",
           "verify_and_init_metadata", "BaseInferableQuantizer", "mark_quantizer", "QuantizerID",
           "QuantizationTarget", "QuantizationMethod", "ACTIVATION_HOLDER_QUANTIZER",
           "FRAMEWORK_VERSION", "ONNX_VERSION", "MCTQ_VERSION", "PYTHON_VERSION", "STEPS",
           "TRAINING", "LAYER", "WEIGHTS_QUANTIZERS", "WEIGHTS_VALUES", "OP_CALL_ARGS",
           "OP_CALL_KWARGS", "IS_INPUT_AS_LIST", "POSITIONAL_WEIGHT",
           "QUANTIZED_POSITIONAL_WEIGHT", "QUANTIZATION_TARGET", "QUANTIZATION_METHOD",
           "QUANTIZER_ID", "BaseKerasInferableQuantizer", "BasePyTorchInferableQuantizer",
           "KerasActivationQuantizationHolder", "KerasQuantizationWrapper", "MetadataLayer",
           "BaseKerasTrainableQuantizer"}


def public(module):
    return {n for n in dir(module) if not n.startswith("_")}


@pytest.mark.parametrize("suffix", MODULES)
def test_every_public_name_of_the_module_exists(suffix):
    import importlib
    ref = importlib.import_module("mct_quantizers" + suffix)
    ours = importlib.import_module("quantizers_infrastructure.mct" + suffix)
    # Submodules are reached by import; names defined in the reference module itself (or
    # re-exported at the top level and in quantizers/) must be there.
    wanted = {n for n in public(ref) if not isinstance(getattr(ref, n), type(os))}
    if suffix.endswith(("holder", "wrapper", "load_model", "metadata", "options", "subclasses",
                        "get_quantizers", "quant_info", "base_inferable_quantizer", "logger")):
        wanted = {n for n in wanted if getattr(getattr(ref, n), "__module__", None) ==
                  ref.__name__ or n in ("set_log_folder",)}
        wanted -= NOT_API - {n for n in wanted if suffix.endswith(n.lower())}
    missing = sorted(n for n in wanted if not hasattr(ours, n))
    assert not missing, f"quantizers_infrastructure.mct{suffix} lacks {missing}"


def test_constants_have_mct_quantizers_values():
    from mct_quantizers.common import constants as ref
    from quantizers_infrastructure.mct.common import constants as ours
    names = [n for n in public(ref) if n.isupper()]
    assert len(names) >= 50
    for n in names:
        assert getattr(ours, n) == getattr(ref, n), n
    assert qm.constants is ours


def test_get_all_subclasses_matches():
    class A:
        pass

    class B(A):
        pass

    class C(B):
        pass

    class D(A):
        pass

    from mct_quantizers.common.get_all_subclasses import get_all_subclasses as ref
    assert qi.get_all_subclasses(A) == ref(A) == {B, C, D}
    assert qi.get_all_subclasses(C) == set()


@pytest.mark.parametrize("framework", ["pytorch", "keras"])
def test_get_inferable_quantizer_class_finds_the_framework_class(framework):
    from mct_quantizers.common.get_quantizers import get_inferable_quantizer_class as ref_get
    from quantizers_infrastructure.mct.common.get_quantizers import get_inferable_quantizer_class
    ref_base = mt.BasePyTorchInferableQuantizer if framework == "pytorch" else \
        mk.BaseKerasInferableQuantizer
    base = qt.BasePyTorchInferableQuantizer if framework == "pytorch" else \
        qk.BaseKerasInferableQuantizer
    pairs = extensions = 0
    for target in qm.QuantizationTarget:
        for method in qm.QuantizationMethod:
            if method.value >= 100:  # qi's extension methods (FLOAT, ...): not in mct-quantizers
                cls = get_inferable_quantizer_class(target, method, base)
                assert issubclass(cls, base) and cls.quantization_method == [method]
                assert cls.__module__ == f"quantizers_infrastructure.mct.{framework}.quantizers"
                extensions += 1
                continue
            ref_target = mctq.QuantizationTarget(target.value)
            ref_method = mctq.QuantizationMethod(method.value)
            try:
                expected = ref_get(ref_target, ref_method, ref_base).__name__
            except Exception:  # noqa: BLE001  (no such quantizer in mct-quantizers)
                with pytest.raises(ValueError, match="get_inferable_quantizer_class"):
                    get_inferable_quantizer_class(target, method, base)
                continue
            cls = get_inferable_quantizer_class(target, method, base)
            assert cls.__name__ == expected and issubclass(cls, base)
            assert cls.__module__ == f"quantizers_infrastructure.mct.{framework}.quantizers"
            pairs += 1
    assert pairs == 9
    assert extensions == len([e for e in _core.inferable_quantizers() if e["method_value"] >= 100])


def test_get_inferable_quantizer_class_without_a_framework_base_is_qi_class():
    cls = qi.get_inferable_quantizer_class(qi.QuantizationTarget.Weights,
                                           qi.QuantizationMethod.SYMMETRIC,
                                           qi.BaseInferableQuantizer)
    assert cls is qi.WeightsSymmetricInferableQuantizer

    class Unrelated(qi.BaseInferableQuantizer):
        pass

    with pytest.raises(ValueError, match="found 0 quantizers deriving from Unrelated"):
        qi.get_inferable_quantizer_class(qi.QuantizationTarget.Weights,
                                         qi.QuantizationMethod.SYMMETRIC, Unrelated)


# ---- the framework classes against mct-quantizers' ----------------------------------------------

def weights_cases(mod):
    th = [float(v) for v in RNG.uniform(0.3, 2.0, 4)]
    return [
        (mod.WeightsSymmetricInferableQuantizer, dict(num_bits=8, threshold=th, per_channel=True,
                                                      channel_axis=0)),
        (mod.WeightsPOTInferableQuantizer, dict(num_bits=4, threshold=[2.0], per_channel=False)),
        (mod.ActivationPOTInferableQuantizer, dict(num_bits=8, threshold=[4.0], signed=True)),
        (mod.ActivationSymmetricInferableQuantizer, dict(num_bits=6, threshold=[1.7],
                                                         signed=False)),
        (mod.ActivationUniformInferableQuantizer, dict(num_bits=8, min_range=[-0.7],
                                                       max_range=[2.3])),
    ]


def test_pytorch_classes_match_mct_quantizers_bit_for_bit():
    x = torch.from_numpy(RNG.normal(0, 1.5, (4, 3, 5, 5)).astype(np.float32))
    for (cls, kw), (ref_cls, _) in zip(weights_cases(qt), weights_cases(mt)):
        assert issubclass(cls, qt.BasePyTorchInferableQuantizer)
        kw = {k: v for k, v in kw.items()}
        ref_kw = dict(kw)
        if "channel_axis" not in kw and cls.quantization_target == qm.QuantizationTarget.Weights:
            ref_kw["channel_axis"] = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = ref_cls(**ref_kw)(x.clone()).numpy()
        assert same_bits(cls(**kw)(x).numpy(), expected), cls.__name__


def test_keras_classes_take_the_tf_profile_and_match_mct_quantizers():
    x = tf.constant(RNG.normal(0, 1.5, (4, 5, 5, 4)).astype(np.float32))
    for (cls, kw), (ref_cls, _) in zip(weights_cases(qk), weights_cases(mk)):
        if "channel_axis" in kw:
            kw = dict(kw, channel_axis=3, input_rank=4)
        ref_kw = dict(kw)
        if cls.quantization_target == qm.QuantizationTarget.Weights:
            ref_kw.setdefault("channel_axis", None)
        q = cls(**kw)
        if "profile" in q.get_config():
            assert q.get_config()["profile"] == "tf"
        assert same_bits(q(x).numpy(), ref_cls(**ref_kw)(x).numpy()), cls.__name__


@pytest.mark.parametrize("axis", [3, 2, -1])
def test_keras_classes_run_tensorflow_fake_quant_where_it_is_the_same(axis):
    """What TFLite converts: TensorFlow's FakeQuantWithMinMaxVars(PerChannel) ops, with the bits
    of qi's own op and of mct-quantizers; per-channel axes other than the last are transposed
    around it, as mct-quantizers does."""
    x = RNG.normal(0, 1, (3, 3, 4, 5)).astype(np.float32) * 2
    c = x.shape[axis]
    th = [float(v) for v in RNG.uniform(0.5, 3.0, c)]
    kw = dict(num_bits=8, threshold=th, per_channel=True, channel_axis=axis, input_rank=4)
    ours = qk.WeightsSymmetricInferableQuantizer(**kw)
    ref = mk.WeightsSymmetricInferableQuantizer(**kw)
    plain = qi.WeightsSymmetricInferableQuantizer(**kw, profile="tf")
    y = ours(tf.constant(x)).numpy()
    assert same_bits(y, ref(tf.constant(x)).numpy()) and same_bits(y, plain(tf.constant(x)).numpy())
    graph = tf.function(lambda t: ours(t)).get_concrete_function(
        tf.TensorSpec(x.shape, tf.float32)).graph
    ops = {op.type for op in graph.get_operations()}
    assert "FakeQuantWithMinMaxVarsPerChannel" in ops and "QiFakeQuant" not in ops
    act = qk.ActivationPOTInferableQuantizer(num_bits=8, threshold=[2.0], signed=True)
    graph = tf.function(lambda t: act(t)).get_concrete_function(
        tf.TensorSpec(x.shape, tf.float32)).graph
    assert "FakeQuantWithMinMaxVars" in {op.type for op in graph.get_operations()}
    # qi's own classes keep qi's op; LUT quantizers have no TensorFlow op.
    graph = tf.function(lambda t: plain(t)).get_concrete_function(
        tf.TensorSpec(x.shape, tf.float32)).graph
    assert "QiFakeQuant" in {op.type for op in graph.get_operations()}
    lut = qk.WeightsLUTSymmetricInferableQuantizer(num_bits=3, lut_values=[-4, 0, 3],
                                                   threshold=[1.0], per_channel=False)
    assert qi.keras.ops.native_fake_quant(lut, tf.constant(x)) is None


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("name", ["ActivationPOTInferableQuantizer",
                                  "ActivationSymmetricInferableQuantizer"])
def test_symmetric_activation_min_max_range_as_mct_quantizers_keras(name, signed):
    kw = dict(num_bits=7, threshold=[2.0] if "POT" in name else [1.3], signed=signed)
    ours, ref = getattr(qk, name)(**kw), getattr(mk, name)(**kw)
    # The values TensorFlow receives (float32) are the same; qi keeps them as float32 values.
    for a, b in ((ours.min_range, ref.min_range), (ours.max_range, ref.max_range)):
        assert len(a) == 1 and np.float32(a[0]) == np.float32(b[0]) and a[0] == np.float32(a[0])
    assert getattr(qi, name)(**kw).max_range == ours.max_range


@pytest.mark.parametrize("name,lo,hi", [("ActivationUniformInferableQuantizer", [-0.7], [2.3]),
                                         ("WeightsUniformInferableQuantizer", [-1.0, 0.2],
                                          [0.95, 1.7])])
def test_keras_uniform_min_max_range_are_adjusted_as_mct_quantizers_keras(name, lo, hi):
    kw = dict(num_bits=5, min_range=lo, max_range=hi)
    if name.startswith("Weights"):
        kw.update(per_channel=True, channel_axis=1, input_rank=2)
    ours, ref = getattr(qk, name)(**kw), getattr(mk, name)(**kw)
    np.testing.assert_array_equal(np.float32(ours.min_range), np.float32(ref.min_range))
    np.testing.assert_array_equal(np.float32(ours.max_range), np.float32(ref.max_range))
    assert getattr(qi, name)(**kw).min_range == lo  # qi's own: the configured range
    assert type(ours)(**ours.get_config()).get_config() == ours.get_config()


def test_threshold_np_scales_zero_points():
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0, 0.5], per_channel=True,
                                              channel_axis=0)
    ref = mt.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0, 0.5],
                                                per_channel=True, channel_axis=0)
    np.testing.assert_array_equal(q.threshold_np, ref.threshold_np)
    np.testing.assert_array_equal(q.scales, ref.scales.cpu().numpy())
    np.testing.assert_array_equal(q.zero_points, ref.zero_points.cpu().numpy())
    assert q.zero_points.dtype == np.int32
    u = qi.ActivationUniformInferableQuantizer(num_bits=8, min_range=[-1.0], max_range=[1.0])
    assert u.threshold_np is None


# ---- PyTorch: reuse and custom implementation ---------------------------------------------------

def test_reuse_returns_the_first_output_as_mct_quantizers():
    x1 = torch.randn(3, 4)
    x2 = torch.randn(3, 4) * 3
    for q in (qt.WeightsPOTInferableQuantizer(num_bits=8, threshold=[2.0], per_channel=False),
              mt.WeightsPOTInferableQuantizer(num_bits=8, threshold=[2.0], per_channel=False,
                                              channel_axis=None)):
        assert q.reuse is False
        q.reuse = True
        q.enable_reuse_quantizer()
        first = q(x1)
        assert q(x2) is first
        q.disable_reuse_quantizer()
        assert not torch.equal(q(x2), first)
    # In a wrapper too (MCT enables it on the weight quantizers of reused layers).
    q = qt.WeightsPOTInferableQuantizer(num_bits=8, threshold=[2.0], per_channel=False)
    w = qi.PytorchQuantizationWrapper(torch.nn.Linear(4, 2), {"weight": q})
    q.enable_reuse_quantizer()
    y = w(x1)
    with torch.no_grad():
        w.layer.weight.mul_(2)
    assert torch.equal(w(x1), y)  # the stored quantized weight is reused
    q.disable_reuse_quantizer()
    assert not torch.equal(w(x1), y)


def _export(model, path):
    torch.onnx.export(model, torch.randn(2, 4), path, opset_version=15, dynamo=False,
                      input_names=["x"])
    import onnx
    return [n.op_type for n in onnx.load(path).graph.node]


def test_enable_custom_impl_exports_that_quantizer_as_its_custom_op(tmp_path):
    def model(custom):
        q = qt.WeightsPOTInferableQuantizer(num_bits=8, threshold=[2.0], per_channel=False)
        a = qt.ActivationPOTInferableQuantizer(num_bits=8, threshold=[4.0], signed=True)
        if custom:
            q.enable_custom_impl()
            a.enable_custom_impl()
        torch.manual_seed(0)
        return torch.nn.Sequential(qi.PytorchQuantizationWrapper(torch.nn.Linear(4, 3),
                                                                 {"weight": q}),
                                   qi.PytorchActivationQuantizationHolder(a)).eval()

    plain = _export(model(False), str(tmp_path / "plain.onnx"))
    assert "QuantizeLinear" in plain and "WeightsPOTQuantizer" not in plain
    custom = _export(model(True), str(tmp_path / "custom.onnx"))
    assert "WeightsPOTQuantizer" in custom and "ActivationPOTQuantizer" in custom
    assert "QuantizeLinear" not in custom
    # The choice belongs to the quantizer object: equal quantizers elsewhere export as QDQ.
    assert _export(model(False), str(tmp_path / "again.onnx")) == plain
    import onnxruntime as ort
    x = RNG.normal(0, 2, (2, 4)).astype(np.float32)
    outs = [ort.InferenceSession(str(tmp_path / f), qi.pytorch.onnx.get_ort_session_options(),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            for f in ("plain.onnx", "custom.onnx")]
    with torch.no_grad():
        eager = model(False)(torch.from_numpy(x)).numpy()
    assert same_bits(outs[0], eager) and same_bits(outs[1], eager)


def _uniform_activation_node(model_fn, path):
    import onnx
    torch.onnx.export(model_fn(), torch.randn(2, 4), path, opset_version=15, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    node = [n for n in onnx.load(path).graph.node if n.op_type == "ActivationUniformQuantizer"][0]
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("lo,hi", [(-0.7, 2.3), (-1.0, 0.95), (0.3, 2.0)])
def test_activation_uniform_exports_its_configured_range(tmp_path, lo, hi):
    """A deliberate difference: mct-quantizers writes the range it adjusted once, which the
    op's kernel adjusts again (not the identity: the scale is computed in double); qi writes
    the configured range, so ONNX Runtime computes the eager outputs bit for bit."""
    ours = qt.ActivationUniformInferableQuantizer(num_bits=8, min_range=[lo], max_range=[hi])
    ours.enable_custom_impl()
    ref = mt.ActivationUniformInferableQuantizer(num_bits=8, min_range=[lo], max_range=[hi])
    ref.enable_custom_impl()
    a = _uniform_activation_node(lambda: qi.PytorchActivationQuantizationHolder(ours),
                                 str(tmp_path / "qi.onnx"))
    b = _uniform_activation_node(lambda: mctq.PytorchActivationQuantizationHolder(ref),
                                 str(tmp_path / "mctq.onnx"))
    assert (np.float32(a["min_range"]), np.float32(a["max_range"])) == (np.float32(lo),
                                                                          np.float32(hi))
    assert np.float32(b["min_range"]) == ours.adjusted_min_range[0]  # the adjustment is alike
    assert np.float32(b["max_range"]) == ours.adjusted_max_range[0]
    # ONNX Runtime (qi's kernels) computes the eager outputs.
    import onnxruntime as ort
    x = np.linspace(-3, 3, 4001, dtype=np.float32).reshape(-1, 1).repeat(4, 1)
    sess = ort.InferenceSession(str(tmp_path / "qi.onnx"),
                                qi.pytorch.onnx.get_ort_session_options(),
                                providers=["CPUExecutionProvider"])
    assert same_bits(sess.run(None, {"x": x})[0], ours(torch.from_numpy(x)).numpy())


# ---- metadata and loading ----------------------------------------------------------------------

def test_pytorch_metadata_as_mct_quantizers():
    from mct_quantizers.pytorch import metadata as ref
    ours = qm_metadata = __import__("quantizers_infrastructure.mct.pytorch.metadata",
                                    fromlist=["x"])
    m1 = ours.add_metadata(torch.nn.Linear(2, 2), {"author": "qi", "n": 3})
    m2 = ref.add_metadata(torch.nn.Linear(2, 2), {"author": "qi", "n": 3})
    a, b = ours.get_metadata(m1), ref.get_metadata(m2)
    assert a["author"] == b["author"] and a["n"] == 3
    assert a["framework_version"] == b["framework_version"] == torch.__version__
    assert a["python_version"] == b["python_version"]
    assert a["qi_version"] == qi.__version__ and "mctq_version" not in a
    assert qm_metadata.get_metadata(torch.nn.Linear(1, 1)) == {}
    with pytest.raises(ValueError, match="metadata should be a dictionary"):
        ours.add_metadata(torch.nn.Linear(1, 1), ["not", "a", "dict"])
    with pytest.raises(ValueError, match="string keys"):
        ours.add_metadata(torch.nn.Linear(1, 1), {1: "x"})
    with pytest.raises(ValueError, match=r"the values of \['f'\] are not"):
        ours.add_metadata(torch.nn.Linear(1, 1), {"f": object()})


def test_onnx_metadata():
    import onnx
    from quantizers_infrastructure.mct.pytorch.metadata import add_onnx_metadata, get_onnx_metadata
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    add_onnx_metadata(model, {"author": "qi"})
    meta = get_onnx_metadata(model)
    assert meta["author"] == "qi" and meta["onnx_version"] == onnx.__version__
    assert meta["qi_version"] == qi.__version__
    with pytest.raises(ValueError, match="ONNX metadata must be of byte type"):
        add_onnx_metadata(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])),
                          {"n": 3})


def test_keras_metadata_saves_and_loads(tmp_path):
    from quantizers_infrastructure.mct.keras.metadata import add_metadata, get_metadata
    inp = tf.keras.Input((4,))
    q = qk.WeightsPOTInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False)
    model = tf.keras.Model(inp, qi.KerasQuantizationWrapper(tf.keras.layers.Dense(2),
                                                            {"kernel": q})(inp))
    add_metadata(model, {"author": "qi"})
    assert get_metadata(model)["framework_version"] == tf.__version__
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = qi.keras_load_quantized_model(path)
    assert get_metadata(loaded)["author"] == "qi"
    assert get_metadata(loaded)["qi_version"] == qi.__version__


def test_pytorch_load_quantized_model(tmp_path):
    q = qi.WeightsPOTInferableQuantizer(num_bits=8, threshold=[2.0], per_channel=False)
    model = qi.PytorchQuantizationWrapper(torch.nn.Linear(4, 2), {"weight": q})
    path = str(tmp_path / "m.pt")
    torch.save(model, path)
    loaded = qi.pytorch_load_quantized_model(path, weights_only=False)
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(Exception, match="weights_only"):
        qi.pytorch_load_quantized_model(path)  # torch.nn.Linear is not an allowed global


# ---- Keras: config round trip, weight order, MCT Quantizers' files ----------------------------

@pytest.mark.parametrize("name", ["WeightsSymmetricInferableQuantizer",
                                  "WeightsPOTInferableQuantizer",
                                  "ActivationPOTInferableQuantizer",
                                  "WeightsUniformInferableQuantizer",
                                  "WeightsLUTSymmetricInferableQuantizer"])
def test_type_of_quantizer_rebuilds_from_get_config(name):
    kw = {"WeightsSymmetricInferableQuantizer": dict(num_bits=8, threshold=[1.0, 2.0],
                                                     per_channel=True, channel_axis=3,
                                                     input_rank=4),
          "WeightsPOTInferableQuantizer": dict(num_bits=8, threshold=[2.0], per_channel=False),
          "ActivationPOTInferableQuantizer": dict(num_bits=8, threshold=[2.0], signed=True),
          "WeightsUniformInferableQuantizer": dict(num_bits=4, min_range=[-1.0], max_range=[2.0],
                                                   per_channel=False),
          "WeightsLUTSymmetricInferableQuantizer": dict(num_bits=3, lut_values=[-4, 0, 3],
                                                        threshold=[1.0], per_channel=False)}[name]
    q = getattr(qk, name)(**kw)
    again = type(q)(**q.get_config())
    assert again.get_config() == q.get_config()
    with pytest.raises(ValueError):
        type(q)(**dict(q.get_config(), qi_version=17))  # still checked by the core


def test_keras_wrapper_weights_in_mct_quantizers_order():
    for trainable in (True, False):
        names = []
        for wrapper_cls, mod in ((qi.KerasQuantizationWrapper, qk),
                                 (mctq.KerasQuantizationWrapper, mk)):
            dense = tf.keras.layers.Dense(3)
            dense.build((None, 4))
            dense.trainable = trainable
            q = mod.WeightsPOTInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False,
                                                 channel_axis=None) if mod is mk else \
                mod.WeightsPOTInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False)
            w = wrapper_cls(dense, {"kernel": q})
            w(tf.zeros((1, 4)))  # as in a functional model, which calls its layers
            names.append([v.name.split("/")[-1] for v in w.weights])
            assert [x.shape for x in w.get_weights()] == [v.shape for v in w.weights]
        assert names[0] == names[1], names  # MCT's TFLite INT8 exporter reads them by index
        assert "optimizer_step:0" in names[0]


def _keras_model(wrapper_cls, holder_cls, mod):
    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input((6, 6, 3))
    kw = dict(num_bits=8, threshold=[0.5] * 4, per_channel=True, channel_axis=3, input_rank=4)
    x = wrapper_cls(tf.keras.layers.Conv2D(4, 3),
                    {"kernel": mod.WeightsSymmetricInferableQuantizer(**kw)})(inp)
    x = holder_cls(mod.ActivationPOTInferableQuantizer(num_bits=8, threshold=[2.0],
                                                       signed=True))(x)
    return tf.keras.Model(inp, x)


def test_qi_loads_mct_quantizers_keras_file_and_the_other_way(tmp_path):
    x = RNG.normal(0, 1, (2, 6, 6, 3)).astype(np.float32)
    ref = _keras_model(mctq.KerasQuantizationWrapper, mctq.KerasActivationQuantizationHolder, mk)
    ours = _keras_model(qi.KerasQuantizationWrapper, qi.KerasActivationQuantizationHolder, qk)
    ours.set_weights(ref.get_weights())
    expected = ref(x).numpy()
    assert same_bits(ours(x).numpy(), expected)
    ref.save(str(tmp_path / "mctq.keras"))
    ours.save(str(tmp_path / "qi.keras"))
    loaded = qi.keras_load_quantized_model(str(tmp_path / "mctq.keras"))
    assert same_bits(loaded(x).numpy(), expected)
    assert any(isinstance(layer, qi.KerasQuantizationWrapper) for layer in loaded.layers)
    back = mctq.keras_load_quantized_model(str(tmp_path / "qi.keras"))
    assert same_bits(back(x).numpy(), expected)


def test_legacy_qi_keras_file_without_step_counter_loads(tmp_path):
    q = qi.WeightsPOTInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False)
    w = qi.KerasQuantizationWrapper(tf.keras.layers.Dense(2), {"kernel": q})
    w(tf.zeros((1, 3)))

    class Store(dict):
        pass

    w.load_own_variables(Store())  # a file of qi before the step counter: nothing of its own
    assert int(w.optimizer_step.numpy()) == -1
    # ... whose layer held its kernel itself: the layer (which now holds only its bias) loads it.
    kernel, bias = np.full((3, 2), 0.5, np.float32), np.full((2,), 0.25, np.float32)
    w.layer.load_own_variables(Store({"0": kernel, "1": bias}))
    np.testing.assert_array_equal(w.layer.kernel.numpy(), kernel)
    np.testing.assert_array_equal(w.layer.bias.numpy(), bias)
    w.layer.load_own_variables(Store({"0": bias * 2}))  # MCT Quantizers' layout
    np.testing.assert_array_equal(w.layer.bias.numpy(), bias * 2)
    saved = Store()
    w.layer.save_own_variables(saved)
    assert list(saved) == ["0"] and np.array_equal(saved["0"], bias * 2)
    assert len(w.layer.get_weights()) == 2  # the layer's own weight lists are unchanged
    with pytest.raises(ValueError, match="expected 1 variables .or 2, as older qi files hold."):
        w.layer.load_own_variables(Store({"0": bias, "1": bias, "2": bias}))
    with pytest.raises(ValueError):
        w.load_own_variables(Store({"0": np.zeros(1), "1": np.zeros(1), "2": np.zeros(1)}))


# ---- foreign (MCT-style) quantizers in wrappers and holders -------------------------------------

def _foreign_classes(base):
    """A weight and an activation quantizer written as MCT writes its trainable ones."""
    calls = []

    class ForeignWeights(base):
        def initialize_quantization(self, tensor_shape, name, layer):
            calls.append(("init", tuple(tensor_shape), name))
            layer.register_parameter(f"{name}_scale",
                                     torch.nn.Parameter(torch.tensor(0.25), requires_grad=False))
            self.scale = layer.get_parameter(f"{name}_scale")

        def __call__(self, inputs, training):
            calls.append(("call", training))
            return torch.round(inputs / self.scale) * self.scale

        def convert2inferable(self):
            return qt.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[32.0],
                                                         per_channel=False)

    class ForeignActivation(base):
        def initialize_quantization(self, tensor_shape, name, layer):
            calls.append(("init act", tensor_shape, name))

        def __call__(self, inputs, training=True):
            calls.append(("act", training))
            return torch.round(inputs * 4) / 4

    return ForeignWeights, ForeignActivation, calls


def test_foreign_quantizers_are_driven_as_mct_quantizers_does():
    x = torch.randn(5, 4)
    results = []
    for wrapper_cls, holder_cls, base in (
            (qi.PytorchQuantizationWrapper, qi.PytorchActivationQuantizationHolder,
             qi.BaseInferableQuantizer),
            (mctq.PytorchQuantizationWrapper, mctq.PytorchActivationQuantizationHolder,
             mctq.BaseInferableQuantizer)):
        fw, fa, calls = _foreign_classes(base)
        torch.manual_seed(1)
        layer = wrapper_cls(torch.nn.Linear(4, 3), {"weight": fw()})
        holder = holder_cls(fa())
        layer.eval()
        y = holder(layer(x))
        layer.train()
        layer(x)
        layer.convert_to_inferable_quantizers()
        assert type(layer.weights_quantizers["weight"]).__name__ == \
            "WeightsSymmetricInferableQuantizer"
        results.append((y, calls, layer.layer.bias.detach().clone()))
    (y_qi, calls_qi, _), (y_ref, calls_ref, _) = results
    assert same_bits(y_qi.detach().numpy(), y_ref.detach().numpy())
    assert calls_qi == calls_ref, (calls_qi, calls_ref)


def test_objects_with_the_quantizer_protocol_are_accepted_others_are_errors():
    """MCT's GPTQ puts a GradualActivationQuantizerWrapper (no BaseInferableQuantizer, but
    initialize_quantization and __call__) in activation holders."""
    class Gradual:
        def __init__(self):
            self.names = []

        def initialize_quantization(self, shape, name, layer):
            self.names.append(name)

        def __call__(self, x, training=True):
            return x * 0.5

    g = Gradual()
    holder = qi.PytorchActivationQuantizationHolder(g)
    assert g.names == ["activation_holder_quantizer_out"]
    assert torch.equal(holder(torch.ones(2)), torch.full((2,), 0.5))
    kholder = qi.KerasActivationQuantizationHolder(Gradual())
    kholder.build(None)
    assert kholder.activation_holder_quantizer.names == [kholder.name + "/out_"]
    kinds = (r"must be a BaseInferableQuantizer \(or an object with initialize_quantization and "
             r"__call__\), got ")
    with pytest.raises(ValueError, match="PytorchActivationQuantizationHolder: "
                                         "activation_holder_quantizer " + kinds + "int"):
        qi.PytorchActivationQuantizationHolder(3)
    with pytest.raises(ValueError, match="the quantizer of 'weight' " + kinds + "function"):
        qi.PytorchQuantizationWrapper(torch.nn.Linear(2, 2), {"weight": lambda x: x})
    with pytest.raises(ValueError, match="activation quantizer 0 " + kinds + "str"):
        qi.PytorchQuantizationWrapper(torch.nn.Linear(2, 2), {}, activation_quantizers=["q"])
    with pytest.raises(ValueError, match="KerasActivationQuantizationHolder: "
                                         "activation_holder_quantizer " + kinds + "object"):
        qi.KerasActivationQuantizationHolder(object())


def test_wrapper_runs_after_mct_replaces_the_weight_and_clears_the_quantizers():
    """MCT's PyTorch exporters write the quantized weight into the layer as a new Parameter and
    set weights_quantizers = {}; the wrapper then runs the plain layer."""
    x = torch.randn(2, 4)
    outs = []
    for wrapper_cls, mod, extra in ((qi.PytorchQuantizationWrapper, qt, {}),
                                    (mctq.PytorchQuantizationWrapper, mt, {"channel_axis": None})):
        torch.manual_seed(2)
        w = wrapper_cls(torch.nn.Linear(4, 3), {"weight": mod.WeightsPOTInferableQuantizer(
            num_bits=4, threshold=[1.0], per_channel=False, **extra)})
        quantized = w.get_quantized_weights()["weight"]
        delattr(w.layer, "weight")
        setattr(w.layer, "weight", torch.nn.Parameter(quantized.detach()))
        w.weights_quantizers = {}
        outs.append(w(x).detach().numpy())
    assert same_bits(outs[0], outs[1])


# ---- seed-era keywords -------------------------------------------------------------------------

def test_seed_era_lut_keywords():
    new = qi.WeightsLUTSymmetricInferableQuantizer(num_bits=3, lut_values=[-4, 0, 3],
                                                   threshold=[1.0], per_channel=False,
                                                   lut_values_bitwidth=8)
    old = qi.WeightsLUTSymmetricInferableQuantizer(num_bits=3, cluster_centers=[-4, 0, 3],
                                                   threshold=[1.0], per_channel=False,
                                                   multiplier_nbits=8)
    assert old.get_config() == new.get_config()
    with pytest.raises(TypeError, match="cluster_centers is the old name of lut_values"):
        qi.WeightsLUTSymmetricInferableQuantizer(num_bits=3, lut_values=[1], cluster_centers=[1],
                                                 threshold=[1.0], per_channel=False)
    with pytest.raises(TypeError):  # no LUT: the old keyword is not a keyword of this class
        qi.WeightsPOTInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False,
                                        cluster_centers=[1])


def test_get_trainable_quantizer_class_with_the_seed_keyword():
    from quantizers_infrastructure.pytorch.trainable_quantizers import \
        get_trainable_quantizer_class as get
    W, S = qi.QuantizationTarget.Weights, qi.QuantizationMethod.SYMMETRIC
    expected = get(W, S, qi.TrainingMethod.STE)
    assert get(W, S, quantizer_type=qi.TrainingMethod.STE) is expected
    assert get(W, S, quantizer_id=qi.TrainingMethod.STE) is expected
    with pytest.raises(ValueError, match="name different training methods"):
        get(W, S, qi.TrainingMethod.STE, quantizer_type=qi.TrainingMethod.LSQ)
    with pytest.raises(ValueError, match="training_method .or quantizer_type. is missing"):
        get(W, S)


# ---- selecting the tree ------------------------------------------------------------------------

def _python(code):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)


def test_install_as_mct_quantizers_serves_the_tree_and_never_by_accident():
    r = _python(
        "import sys, quantizers_infrastructure.mct as qm\n"
        "assert 'mct_quantizers' not in sys.modules\n"
        "qm.install_as_mct_quantizers()\n"
        "import mct_quantizers\n"
        "from mct_quantizers.common.constants import LAYER\n"
        "from mct_quantizers.pytorch.quantizers import BasePyTorchInferableQuantizer as B\n"
        "import quantizers_infrastructure.mct.pytorch.quantizers as P\n"
        "assert mct_quantizers is qm and B is P.BasePyTorchInferableQuantizer\n"
        "assert LAYER == 'layer'\n"
        "assert sys.modules['mct_quantizers.pytorch.quantizers'] is P\n"
        "from mct_quantizers import PytorchQuantizationWrapper, logger\n"
        "import quantizers_infrastructure as qi\n"
        "assert PytorchQuantizationWrapper is qi.PytorchQuantizationWrapper\n"
        "qm.uninstall_as_mct_quantizers()\n"
        "import mct_quantizers as real\n"
        "assert real is not qm and not qm.is_installed()\n"
        "print('ok')\n")
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
    r = _python("import mct_quantizers, quantizers_infrastructure.mct as qm\n"
                "qm.install_as_mct_quantizers()\n")
    assert r.returncode != 0 and "the real mct_quantizers is already imported" in r.stderr
