# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""NodeQuantizationDispatcher: contents, counts and type checks."""

import pytest

import quantizers_infrastructure as qi


def w_quantizer():
    return qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=2, signed=True,
                                                 per_channel=True, channel_axis=-1)


def a_quantizer():
    return qi.ActivationPOTInferableQuantizer(num_bits=8, threshold=[4.0], signed=False)


def test_empty():
    d = qi.NodeQuantizationDispatcher()
    assert d.weight_quantizers == {} and d.activation_quantizers == []
    assert not d.is_weights_quantization and not d.is_activation_quantization
    assert d.num_weight_quantizers == 0 and d.num_act_quantizers == 0


def test_set_and_add():
    w, a = w_quantizer(), a_quantizer()
    d = qi.NodeQuantizationDispatcher({"kernel": w}, [a])
    assert d.weight_quantizers == {"kernel": w} and d.activation_quantizers == [a]
    assert d.is_weights_quantization and d.is_activation_quantization
    b = w_quantizer()
    d.add_weight_quantizer("bias", b)
    d.add_weight_quantizer("kernel", b)  # replaces
    assert d.weight_quantizers == {"kernel": b, "bias": b} and d.num_weight_quantizers == 2
    d.set_activation_quantizers([a, a])
    assert d.num_act_quantizers == 2
    d.set_weight_quantizers({})
    assert not d.is_weights_quantization
    # The dispatcher holds its own containers.
    ws = {"kernel": w}
    d.set_weight_quantizers(ws)
    ws["other"] = w
    assert list(d.weight_quantizers) == ["kernel"]


def test_single_quantizer_needs_a_framework_dispatcher():
    with pytest.raises(ValueError, match="a single weights quantizer needs a framework"):
        qi.NodeQuantizationDispatcher(w_quantizer())

    class Framework(qi.NodeQuantizationDispatcher):
        default_weight_attribute = "kernel"

    w = w_quantizer()
    assert Framework(w).weight_quantizers == {"kernel": w}


@pytest.mark.parametrize("call,message", [
    (lambda d: d.set_weight_quantizers([w_quantizer()]),
     "NodeQuantizationDispatcher: weight_quantizers must be a dict of attribute name -> "
     "quantizer, got list"),
    (lambda d: d.set_weight_quantizers({"kernel": 3}),
     "NodeQuantizationDispatcher: weight quantizer of 'kernel' must be a BaseInferableQuantizer, "
     "got int"),
    (lambda d: d.set_weight_quantizers({1: w_quantizer()}),
     "NodeQuantizationDispatcher: weight attribute names must be non-empty strings, got 1"),
    (lambda d: d.add_weight_quantizer("", w_quantizer()),
     "NodeQuantizationDispatcher: weight attribute names must be non-empty strings, got ''"),
    (lambda d: d.add_weight_quantizer("kernel", None),
     "NodeQuantizationDispatcher: weight quantizer of 'kernel' must be a BaseInferableQuantizer, "
     "got NoneType"),
    (lambda d: d.set_activation_quantizers(a_quantizer()),
     "NodeQuantizationDispatcher: activation_quantizers must be a list of quantizers, got "
     "ActivationPOTInferableQuantizer"),
    (lambda d: d.set_activation_quantizers([a_quantizer(), "x"]),
     "NodeQuantizationDispatcher: activation quantizer 1 must be a BaseInferableQuantizer, got "
     "str"),
])
def test_type_errors(call, message):
    d = qi.NodeQuantizationDispatcher()
    with pytest.raises(ValueError) as e:
        call(d)
    assert str(e.value) == message
    assert d.num_weight_quantizers == 0 and d.num_act_quantizers == 0  # unchanged
