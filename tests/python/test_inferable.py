# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The Python surface of the inferable quantizers: registry-generated classes, seed examples,
error messages (equal to the C++ core's), serialization, enums and lookup."""

import inspect
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

import quantizers_infrastructure as qi
from quantizers_infrastructure import _core

CLASS_NAMES = [
    "WeightsSymmetricInferableQuantizer", "WeightsPOTInferableQuantizer",
    "WeightsUniformInferableQuantizer", "WeightsLUTSymmetricInferableQuantizer",
    "WeightsLUTPOTInferableQuantizer", "ActivationSymmetricInferableQuantizer",
    "ActivationPOTInferableQuantizer", "ActivationUniformInferableQuantizer",
    "ActivationLutPOTInferableQuantizer", "WeightsFloatInferableQuantizer",
    "ActivationFloatInferableQuantizer", "WeightsMXInferableQuantizer",
    "ActivationMXInferableQuantizer", "WeightsNVFP4InferableQuantizer",
    "ActivationNVFP4InferableQuantizer",
]

# One valid set of arguments per class (MCT Quantizers' keyword names).
VALID_ARGS = {
    "WeightsSymmetricInferableQuantizer": dict(num_bits=8, threshold=[2.0, 0.5, 3.0],
                                               per_channel=True, channel_axis=-1),
    "WeightsPOTInferableQuantizer": dict(num_bits=4, threshold=[1.0, 0.25], per_channel=True,
                                         channel_axis=0),
    "WeightsUniformInferableQuantizer": dict(num_bits=8, min_range=[-0.7], max_range=[1.3],
                                             per_channel=False),
    "WeightsLUTSymmetricInferableQuantizer": dict(num_bits=3, lut_values=[-100, -20, 0, 7, 90],
                                                  threshold=[1.5], per_channel=False),
    "WeightsLUTPOTInferableQuantizer": dict(num_bits=3, lut_values=[-128, -1, 0, 64, 127],
                                            threshold=[2.0, 4.0], per_channel=True,
                                            channel_axis=1, input_rank=2),
    "ActivationSymmetricInferableQuantizer": dict(num_bits=8, threshold=[6.0], signed=False),
    "ActivationPOTInferableQuantizer": dict(num_bits=8, threshold=[8.0], signed=True),
    "ActivationUniformInferableQuantizer": dict(num_bits=8, min_range=[-1.2], max_range=[5.3]),
    "ActivationLutPOTInferableQuantizer": dict(num_bits=2, lut_values=[0, 30, 200, 255],
                                               threshold=[4.0], signed=False),
    "WeightsFloatInferableQuantizer": dict(format="E4M3", scale=[0.5, 2.0, 0.125],
                                           per_channel=True, channel_axis=-1),
    "ActivationFloatInferableQuantizer": dict(format="E2M1", scale=[0.75]),
    "WeightsMXInferableQuantizer": dict(format="E2M1", block_size=2, block_axis=0),
    "ActivationMXInferableQuantizer": dict(format="INT8", block_size=3, block_axis=-1),
    "WeightsNVFP4InferableQuantizer": dict(tensor_scale=0.125, block_axis=0),
    "ActivationNVFP4InferableQuantizer": dict(tensor_scale=None, block_axis=1),
}

# Inputs that fit the per-channel quantizers of VALID_ARGS (default (3, 2, 3)).
INPUT_SHAPES = {
    "WeightsPOTInferableQuantizer": (2, 5, 3),
    "WeightsLUTPOTInferableQuantizer": (4, 2),
    "WeightsMXInferableQuantizer": (4, 2, 3),
    "WeightsNVFP4InferableQuantizer": (16, 3),
    "ActivationNVFP4InferableQuantizer": (2, 32, 2),
}

REGISTRY_TABLE = [
    ("Weights", "POWER_OF_TWO", "WeightsPOTInferableQuantizer"),
    ("Weights", "SYMMETRIC", "WeightsSymmetricInferableQuantizer"),
    ("Weights", "UNIFORM", "WeightsUniformInferableQuantizer"),
    ("Weights", "LUT_POT_QUANTIZER", "WeightsLUTPOTInferableQuantizer"),
    ("Weights", "LUT_SYM_QUANTIZER", "WeightsLUTSymmetricInferableQuantizer"),
    ("Activation", "POWER_OF_TWO", "ActivationPOTInferableQuantizer"),
    ("Activation", "SYMMETRIC", "ActivationSymmetricInferableQuantizer"),
    ("Activation", "UNIFORM", "ActivationUniformInferableQuantizer"),
    ("Activation", "LUT_POT_QUANTIZER", "ActivationLutPOTInferableQuantizer"),
    ("Weights", "FLOAT", "WeightsFloatInferableQuantizer"),
    ("Activation", "FLOAT", "ActivationFloatInferableQuantizer"),
    ("Weights", "MX", "WeightsMXInferableQuantizer"),
    ("Activation", "MX", "ActivationMXInferableQuantizer"),
    ("Weights", "NVFP4", "WeightsNVFP4InferableQuantizer"),
    ("Activation", "NVFP4", "ActivationNVFP4InferableQuantizer"),
]


def test_import_does_not_pull_frameworks():
    code = ("import sys, quantizers_infrastructure as qi; "
            "import quantizers_infrastructure.keras_inferable_quantizers, "
            "quantizers_infrastructure.pytorch_inferable_quantizers; "
            "bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_registered_class_is_exposed():
    names = [entry["class_name"] for entry in _core.inferable_quantizers()]
    assert names == CLASS_NAMES
    for name in CLASS_NAMES:
        cls = getattr(qi, name)
        assert cls.__name__ == name
        assert issubclass(cls, qi.BaseInferableQuantizer)
        assert cls.identifier is qi.QuantizerID.INFERABLE
        assert getattr(qi.keras_inferable_quantizers, name) is cls
        assert getattr(qi.pytorch_inferable_quantizers, name) is cls
    assert qi.keras_inferable_quantizers.BaseInferableQuantizer is qi.BaseInferableQuantizer


@pytest.mark.parametrize("target,method,name", REGISTRY_TABLE)
def test_lookup_table(target, method, name):
    cls = qi.get_inferable_quantizer_class(qi.QuantizationTarget(target),
                                           qi.QuantizationMethod[method])
    assert cls is getattr(qi, name)
    assert cls.quantization_target == qi.QuantizationTarget(target)
    assert cls.quantization_method == [qi.QuantizationMethod[method]]
    assert qi.get_inferable_quantizer_class(qi.QuantizationTarget(target),
                                            qi.QuantizationMethod[method],
                                            qi.BaseInferableQuantizer) is cls


def test_lookup_errors():
    with pytest.raises(ValueError) as e:
        qi.get_inferable_quantizer_class(qi.QuantizationTarget.Activation,
                                         qi.QuantizationMethod.LUT_SYM_QUANTIZER)
    assert str(e.value) == ("get_inferable_quantizer_class: no inferable quantizer for target "
                            "Activation and method LUT_SYM_QUANTIZER")
    with pytest.raises(ValueError, match="quant_method must be a QuantizationMethod"):
        qi.get_inferable_quantizer_class(qi.QuantizationTarget.Weights, "SYMMETRIC")
    with pytest.raises(ValueError, match="found 0 quantizers deriving from dict"):
        qi.get_inferable_quantizer_class(qi.QuantizationTarget.Weights,
                                         qi.QuantizationMethod.SYMMETRIC, dict)


def test_enums_match_mct_and_core():
    # MCT's values, then qi's extensions from 100 on.
    assert {m.name: m.value for m in qi.QuantizationMethod} == {
        "POWER_OF_TWO": 0, "LUT_POT_QUANTIZER": 1, "SYMMETRIC": 2, "UNIFORM": 3,
        "LUT_SYM_QUANTIZER": 4, "FLOAT": 100, "MX": 101, "NVFP4": 102}
    for m in qi.QuantizationMethod:
        assert _core.quantization_method_name(m.value) == m.name
        assert _core.quantization_method_value(m.name) == m.value
    assert [t.value for t in qi.QuantizationTarget] == ["Activation", "Weights"]
    for t in qi.QuantizationTarget:
        assert _core.quantization_target_name(t.value) == t.value
    for t in qi.TrainingMethod:
        assert _core.training_method_name(t.value) == t.name
    with pytest.raises(ValueError, match=r"QuantizationMethod: unknown MCT value 7"):
        _core.quantization_method_name(7)


def test_signatures_use_reference_keywords():
    sig = inspect.signature(qi.WeightsSymmetricInferableQuantizer)
    # MCT's positional arguments, then qi's keyword-only ones.
    assert list(sig.parameters) == ["num_bits", "threshold", "per_channel", "channel_axis",
                                    "input_rank", "signed", "profile", "group_size",
                                    "group_axis"]
    for key in ("profile", "group_size", "group_axis"):
        assert sig.parameters[key].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(qi.ActivationLutPOTInferableQuantizer).parameters) == [
        "num_bits", "lut_values", "threshold", "signed", "lut_values_bitwidth", "eps"]
    assert list(inspect.signature(qi.WeightsUniformInferableQuantizer).parameters) == [
        "num_bits", "min_range", "max_range", "per_channel", "channel_axis", "input_rank",
        "profile", "group_size", "group_axis"]
    # MCT's positional order works.
    q = qi.WeightsSymmetricInferableQuantizer(8, [2.0], True, 0)
    assert (q.num_bits, q.threshold, q.per_channel, q.channel_axis) == (8, [2.0], True, 0)
    with pytest.raises(TypeError):
        qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[2.0])  # per_channel missing
    with pytest.raises(TypeError):
        qi.ActivationSymmetricInferableQuantizer(num_bits=8, threshold=[2.0], signed=True,
                                                 min_range=[0.0])


def test_seed_example():
    # The seed passes per_channel=True without channel_axis: one threshold covers every channel.
    seed = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=2, signed=True,
                                                 per_channel=True)
    x6 = np.linspace(-3, 3, 6 * 7, dtype=np.float32).reshape(6, 7)
    per_tensor = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=2, per_channel=False)
    np.testing.assert_array_equal(seed(x6), per_tensor(x6))
    # Several thresholds need their axis.
    with pytest.raises(ValueError) as e:
        qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[2, 4], signed=True,
                                              per_channel=True)
    assert str(e.value) == ("WeightsSymmetricInferableQuantizer: channel_axis is required for "
                            "per-channel quantization with 2 values, got none")
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=2, signed=True,
                                              per_channel=True, channel_axis=-1)
    assert q.threshold == [2.0]
    assert q.num_channels == 1
    x = np.array([[-3.0], [-1.0], [0.0], [0.0078125], [0.01], [1.99], [5.0]], np.float32)
    np.testing.assert_array_equal(
        q(x), np.array([[-2.0], [-1.0], [0.0], [0.0], [0.015625], [1.984375], [1.984375]],
                       np.float32))
    # Per-tensor with a scalar threshold.
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=2, signed=True,
                                              per_channel=False)
    assert q.get_config()["threshold"] == [2.0]


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_config_round_trip(name):
    cls = getattr(qi, name)
    q = cls(**VALID_ARGS[name])
    config = q.get_config()
    assert config["qi_version"] == qi.__version__
    for key, value in VALID_ARGS[name].items():
        assert config[key] == value, key
    q2 = cls.from_config(config)
    assert type(q2) is cls and q2.get_config() == config
    q3 = qi.quantizer_from_json(q.to_json())
    assert type(q3) is cls and q3.get_config() == config
    q4 = pickle.loads(pickle.dumps(q))
    assert type(q4) is cls and q4.get_config() == config
    # Every config key is also a read-only property.
    for key in cls._config_keys:
        assert getattr(q, key) == config[key]
    assert repr(q).startswith(f"{name}({cls._config_keys[0]}=")
    # Same outputs after the round trip.
    x = np.random.default_rng(0).normal(0, 2, size=INPUT_SHAPES.get(name, (3, 2, 3)))
    x = x.astype(np.float32)
    np.testing.assert_array_equal(q(x).view(np.int32), q2(x).view(np.int32))


def test_scalar_and_array_arguments():
    a = qi.WeightsUniformInferableQuantizer(num_bits=8, min_range=-1, max_range=np.float32(2.0),
                                            per_channel=False)
    assert a.min_range == [-1.0] and a.max_range == [2.0]
    b = qi.WeightsSymmetricInferableQuantizer(num_bits=np.int64(4),
                                              threshold=np.array([1.0, 2.0]), per_channel=True,
                                              channel_axis=np.int32(0))
    assert b.threshold == [1.0, 2.0] and b.num_bits == 4 and b.channel_axis == 0
    c = qi.ActivationPOTInferableQuantizer(num_bits=8, threshold=(4.0,), signed=np.bool_(True))
    assert c.threshold == [4.0] and c.signed is True


def core_message(name, config):
    """The message the C++ core gives for `config` (built without the Python layer)."""
    with pytest.raises(ValueError) as e:
        _core.make_quantizer(name, json.dumps(config))
    return str(e.value)


BAD_ARGS = [
    ("WeightsPOTInferableQuantizer", dict(num_bits=8, threshold=[3.0], per_channel=False),
     "WeightsPOTInferableQuantizer: threshold must be a power of two for POWER_OF_TWO "
     "quantization, got 3 at index 0"),
    ("WeightsSymmetricInferableQuantizer", dict(num_bits=8, threshold=[-1.0], per_channel=False),
     "WeightsSymmetricInferableQuantizer: threshold must be > 0, got -1 at index 0"),
    ("WeightsSymmetricInferableQuantizer",
     dict(num_bits=8, threshold=[1.0, 2.0], per_channel=False),
     "WeightsSymmetricInferableQuantizer: threshold must hold exactly one value for per-tensor "
     "quantization, got 2 values"),
    ("WeightsSymmetricInferableQuantizer", dict(num_bits=1, threshold=[1.0], per_channel=False),
     "WeightsSymmetricInferableQuantizer: num_bits must be in [2, 16], got 1"),
    ("WeightsUniformInferableQuantizer",
     dict(num_bits=8, min_range=[1.0], max_range=[0.5], per_channel=False),
     "WeightsUniformInferableQuantizer: min_range must be < max_range, got min_range=1 and "
     "max_range=0.5 at index 0"),
    ("ActivationSymmetricInferableQuantizer", dict(num_bits=8, threshold=[1.0, 2.0], signed=True),
     "ActivationSymmetricInferableQuantizer: threshold must hold exactly one value: activation "
     "quantization is per-tensor only, got 2 values"),
    ("WeightsLUTSymmetricInferableQuantizer",
     dict(num_bits=2, lut_values=[-3, -1, 0, 1, 2], threshold=[1.0], per_channel=False),
     "WeightsLUTSymmetricInferableQuantizer: lut_values must hold at most 2^num_bits = 4 "
     "distinct values, got 5"),
    ("ActivationLutPOTInferableQuantizer",
     dict(num_bits=4, lut_values=[-1, 0], threshold=[1.0], signed=False),
     "ActivationLutPOTInferableQuantizer: lut_values must be >= 0 for unsigned quantization, got "
     "-1 at index 0"),
    ("WeightsSymmetricInferableQuantizer", dict(num_bits=8, threshold="a", per_channel=False),
     'WeightsSymmetricInferableQuantizer: "threshold" must be a list of numbers, got string "a"'),
    ("WeightsSymmetricInferableQuantizer", dict(num_bits=8, threshold=[1.0], per_channel=1),
     'WeightsSymmetricInferableQuantizer: "per_channel" must be a boolean, got number 1'),
    ("WeightsSymmetricInferableQuantizer",
     dict(num_bits=8, threshold=[1.0], per_channel=True, channel_axis=3, input_rank=2),
     "WeightsSymmetricInferableQuantizer: channel_axis must be in [-2, 2) for input_rank 2, "
     "got 3"),
    ("ActivationUniformInferableQuantizer",
     dict(num_bits=8, min_range=[0.0], max_range=[1.0], profile="keras"),
     'ActivationUniformInferableQuantizer: profile: NumericProfile: unknown name "keras"; '
     "expected one of torch, tf"),
]


@pytest.mark.parametrize("name,args,message", BAD_ARGS)
def test_errors_carry_the_core_message(name, args, message):
    with pytest.raises(ValueError) as e:
        getattr(qi, name)(**args)
    assert str(e.value) == message
    config = dict(args)
    assert str(e.value) == core_message(name, config)


def test_non_finite_arguments():
    # JSON cannot carry NaN/Inf, so the Python layer rejects them with the core's wording.
    with pytest.raises(ValueError) as e:
        qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0, float("inf")],
                                              per_channel=True, channel_axis=0)
    assert str(e.value) == ("WeightsSymmetricInferableQuantizer: threshold must be finite, got "
                            "inf at index 1")
    with pytest.raises(ValueError, match="min_range must be finite, got nan at index 0"):
        qi.ActivationUniformInferableQuantizer(num_bits=8, min_range=float("nan"), max_range=1.0)
    with pytest.raises(TypeError, match="threshold must be a number"):
        qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[object()], per_channel=False)


def test_from_config_errors():
    cls = qi.WeightsSymmetricInferableQuantizer
    config = cls(num_bits=8, threshold=[1.0], per_channel=False).get_config()
    with pytest.raises(ValueError) as e:
        cls.from_config(dict(config, bogus=1))
    assert str(e.value) == 'WeightsSymmetricInferableQuantizer: unknown key "bogus"'
    del config["num_bits"]
    with pytest.raises(ValueError, match='missing key "num_bits"'):
        cls.from_config(config)
    with pytest.raises(ValueError, match="config must be a dict"):
        cls.from_config("{}")
    with pytest.raises(ValueError, match="malformed JSON"):
        qi.quantizer_from_json("{\"class_name\": ")


def test_properties():
    q = qi.WeightsUniformInferableQuantizer(num_bits=8, min_range=[-0.7, 0.2],
                                            max_range=[1.3, 1.0], per_channel=True,
                                            channel_axis=0)
    assert q.num_channels == 2
    assert q.adjusted_min_range.dtype == np.float32 and q.adjusted_min_range[1] == 0.0
    assert q.adjusted_max_range[1] == np.float32(1.0)
    assert q.scale.shape == (2,) and q.zero_point.shape == (2,)
    assert q.plan["kind"] == "affine_torch" and q.plan["qmax"] == 255.0
    with pytest.raises(ValueError):
        q.scale[0] = 1.0  # read-only
    s = qi.ActivationSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], signed=True)
    assert s.adjusted_min_range is None
    assert s.scale[0] == np.float32(1.0 / 128)
    t = qi.ActivationSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], signed=True,
                                                 profile="tf")
    assert t.plan["kind"] == "affine_tf" and t.zero_point is None
    lut = qi.WeightsLUTSymmetricInferableQuantizer(**VALID_ARGS[
        "WeightsLUTSymmetricInferableQuantizer"])
    assert lut.plan["kind"] == "lut" and lut.scale is None
    assert q.initialize_quantization((2, 3), "kernel", None) == {}


def test_threads_and_simd():
    n = qi.get_num_threads()
    try:
        qi.set_num_threads(1)
        assert qi.get_num_threads() == 1
    finally:
        qi.set_num_threads(n)
    assert qi.simd_target_name() in qi.supported_simd_targets()
    assert isinstance(qi.__version__, str) and qi.__version__ == _core.kVersion


def test_mark_quantizer_and_base():
    @qi.mark_quantizer(qi.QuantizationTarget.Weights, [qi.QuantizationMethod.SYMMETRIC], "mine")
    class Mine(qi.BaseInferableQuantizer):
        pass

    assert Mine.quantization_target is qi.QuantizationTarget.Weights
    assert Mine.identifier == "mine"
    with pytest.raises(NotImplementedError):
        Mine()(np.zeros(1, np.float32))
    # A user's subclass does not disturb the registry lookup.
    assert qi.get_inferable_quantizer_class(
        qi.QuantizationTarget.Weights,
        qi.QuantizationMethod.SYMMETRIC) is qi.WeightsSymmetricInferableQuantizer


def test_input_type_extension_point(tmp_path, monkeypatch):
    from quantizers_infrastructure.common import base_inferable_quantizer as base

    monkeypatch.setattr(base, "_INPUT_HANDLERS", dict(base._INPUT_HANDLERS))
    monkeypatch.setattr(base, "_LAZY_FRONTENDS", dict(base._LAZY_FRONTENDS))
    q = qi.ActivationPOTInferableQuantizer(num_bits=4, threshold=[1.0], signed=True)

    class Boxed:
        def __init__(self, array):
            self.array = array

    class SubBoxed(Boxed):
        pass

    with pytest.raises(TypeError, match="cannot quantize an input of type"):
        q(Boxed(np.zeros(2, np.float32)))
    qi.register_input_type(Boxed, lambda quantizer, x: Boxed(quantizer(x.array)))
    out = q(SubBoxed(np.array([0.3, -2.0], np.float32)))
    assert isinstance(out, Boxed)
    np.testing.assert_array_equal(out.array, np.array([0.25, -1.0], np.float32))

    # A front end imported on first use, keyed by the input type's top-level package.
    (tmp_path / "qi_fake_frontend.py").write_text(
        "import quantizers_infrastructure as qi\n"
        "import qi_fake_fw\n"
        "qi.register_input_type(qi_fake_fw.Tensor, lambda q, x: 'handled')\n")
    (tmp_path / "qi_fake_fw.py").write_text("class Tensor:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import qi_fake_fw

    qi.register_lazy_frontend("qi_fake_fw", "qi_fake_frontend")
    assert "qi_fake_frontend" not in sys.modules
    assert q(qi_fake_fw.Tensor()) == "handled"
    assert "qi_fake_frontend" in sys.modules
    monkeypatch.delitem(sys.modules, "qi_fake_frontend")
    monkeypatch.delitem(sys.modules, "qi_fake_fw")


def test_from_mct_style_configs():
    # Configs written by MCT Quantizers' Keras quantizers (no profile, no qi_version) load.
    q = qi.WeightsSymmetricInferableQuantizer.from_config(
        {"num_bits": 8, "threshold": [2.0], "per_channel": True, "channel_axis": 3,
         "input_rank": 4})
    assert q.profile == "torch" and q.signed is True and q.channel_axis == 3
    a = qi.ActivationLutPOTInferableQuantizer.from_config(
        {"num_bits": 3, "lut_values": [0, 30, 200], "threshold": [4.0], "signed": False,
         "lut_values_bitwidth": 8, "eps": 1e-8})
    assert a.lut_values == [0.0, 30.0, 200.0]


def test_tensor_arguments():
    torch = pytest.importorskip("torch")
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=torch.tensor([1.0, 0.5]),
                                              per_channel=True, channel_axis=0)
    assert q.threshold == [1.0, 0.5]


def test_one_per_channel_value_with_input_rank_needs_no_axis():
    # The seed's per_channel=True with one value, plus input_rank: once an empty channel_axis was
    # read here (undefined behaviour, found by fuzzing); now the value covers every channel.
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 2, 2)
    for q in (qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[2.0], per_channel=True,
                                                    input_rank=4),
              qi.WeightsUniformInferableQuantizer(num_bits=8, min_range=[-1.0], max_range=[2.0],
                                                  per_channel=True, input_rank=4),
              qi.WeightsLUTSymmetricInferableQuantizer(num_bits=2, lut_values=[-8, 0, 7],
                                                       threshold=[2.0], per_channel=True,
                                                       input_rank=4)):
        assert q.channel_axis is None and q.num_channels == 1
        per_tensor = type(q).from_config(dict(q.get_config(), per_channel=False))
        np.testing.assert_array_equal(q(x), per_tensor(x))
        with pytest.raises(ValueError, match="tensor rank must equal input_rank 4, got rank 1"):
            q(x.reshape(-1))
