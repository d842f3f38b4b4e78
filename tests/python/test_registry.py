# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Driven by the core's registries, so that a quantizer added to the registry is covered with no
test edit: every inferable class is built from the registry's example config, runs the same on
numpy, torch and TensorFlow tensors, round-trips its JSON, has the signature and docs the
registry gives, and exports to ONNX (its custom node runs in ONNX Runtime with the same output);
every trainable class exists in both Python front ends with the registry's marks."""

import inspect
import io
import json

import numpy as np
import pytest

import quantizers_infrastructure as qi
from quantizers_infrastructure import _core

INFERABLE = _core.inferable_quantizers()
TRAINABLE = _core.trainable_quantizers()


def _example(entry, channels):
    cls = qi.INFERABLE_QUANTIZER_CLASSES[entry["class_name"]]
    return cls.from_config(json.loads(_core.example_config(entry["class_name"], channels)))


def _channels(entry):
    return (1, 4) if entry["target"] == "Weights" else (1,)


def _inputs(shape, seed=0, quantizer=None):
    """Random values of `shape`; for a block-scaled quantizer (MX, NVFP4) the last axis (the
    examples' block axis) holds two blocks."""
    if quantizer is not None and quantizer.plan["kind"] in ("mx", "nvfp4"):
        shape = tuple(shape[:-1]) + (2 * quantizer.plan["group_size"],)
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 1.5).astype(np.float32)


CASES = [(e, c) for e in INFERABLE for c in _channels(e)]
IDS = [f"{e['class_name']}-{c}ch" for e, c in CASES]


@pytest.mark.parametrize("entry,channels", CASES, ids=IDS)
def test_inferable_class_follows_its_registry_row(entry, channels, parity_stats):
    q = _example(entry, channels)
    assert type(q).__name__ == entry["class_name"]
    assert q.quantization_target.value == entry["target"]
    assert q.quantization_method == [qi.QuantizationMethod[entry["method"]]]
    assert q.onnx_op == entry["onnx_op"] and q.param_family == entry["family"]
    params = [p["key"] for p in entry["params"]]
    assert params == entry["config_keys"]
    assert set(inspect.signature(type(q)).parameters) == set(params)
    assert entry["doc"] in type(q).__doc__
    assert set(q.get_config()) == set(params) | {"qi_version"}
    q2 = qi.quantizer_from_json(q.to_json())
    assert q2.get_config() == q.get_config()
    x = _inputs((channels, 6, 5), 0, q)
    y = q(x)
    np.testing.assert_array_equal(q2(x), y)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(q(torch.from_numpy(x)).numpy(), y)
    tf = pytest.importorskip("tensorflow")
    np.testing.assert_array_equal(q(tf.constant(x)).numpy(), y)
    parity_stats.add("registry examples: numpy vs torch vs TF", 2 * y.size, 0)


@pytest.mark.parametrize("entry,channels", CASES, ids=IDS)
def test_inferable_class_exports_its_onnx_custom_node(entry, channels, parity_stats):
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from quantizers_infrastructure.pytorch import onnx as qonnx
    q = _example(entry, channels)
    if entry["target"] == "Weights":
        w = torch.from_numpy(_inputs((channels, 3, 2, 2), 1, q))
        model = qi.PytorchQuantizationWrapper(torch.add, {1: q}, weight_values={1: w})
        x = torch.zeros(w.shape)
    else:
        model = qi.PytorchActivationQuantizationHolder(q)
        x = torch.from_numpy(_inputs((4, 50), 2, q))
    f = io.BytesIO()
    with qonnx.custom_ops():
        torch.onnx.export(model.eval(), (x,), f, opset_version=16, input_names=["input"],
                          output_names=["output"], dynamo=False)
    nodes = [n for n in onnx.load_from_string(f.getvalue()).graph.node
             if n.domain == qonnx.DOMAIN]
    assert [n.op_type for n in nodes] == [entry["onnx_op"]]
    sess = ort.InferenceSession(f.getvalue(), qonnx.get_ort_session_options(),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_array_equal(got, want)
    parity_stats.add("registry examples: ONNX Runtime vs torch", got.size, 0)


@pytest.mark.parametrize("entry", TRAINABLE, ids=[e["class_name"] for e in TRAINABLE])
def test_trainable_class_exists_in_both_front_ends(entry):
    for module in ("quantizers_infrastructure.pytorch", "quantizers_infrastructure.keras"):
        front = pytest.importorskip(module)
        cls = front.TRAINABLE_QUANTIZER_CLASSES[entry["class_name"]]
        assert cls.__name__ == entry["class_name"] and entry["doc"] in cls.__doc__
        assert cls.quantization_target.value == entry["target"]
        assert cls.identifier.value == entry["training_method"]
        assert [m.name for m in cls.quantization_method] == entry["methods"]
        for m in entry["methods"]:
            assert front.get_trainable_quantizer_class(
                cls.quantization_target, qi.QuantizationMethod[m], cls.identifier) is cls
    assert len(TRAINABLE) == 14
