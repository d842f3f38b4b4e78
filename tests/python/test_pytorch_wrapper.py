# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""PyTorch front end: PytorchNodeQuantizationDispatcher, PytorchQuantizationWrapper (modules and
functional ops with positional weights), the activation holders, the seed's examples, and the
ways a wrapped model travels (torch.save/torch.load, torch.jit.trace, torch.fx.symbolic_trace)."""

import copy
import io

import pytest

torch = pytest.importorskip("torch")

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure import pytorch as qp  # noqa: E402

F = torch.nn.functional


def bits_equal(a, b):
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.int32),
                                              b.contiguous().view(torch.int32))


def roundtrip(model):
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def act_q():
    return qi.ActivationSymmetricInferableQuantizer(num_bits=8, threshold=[4.0], signed=True)


# ---- the seed's examples, for PyTorch ------------------------------------------------------------

def test_seed_example_conv2d():
    torch.manual_seed(0)
    w_quantizer = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=2, signed=True,
                                                        per_channel=True)
    dispatcher = qi.PytorchNodeQuantizationDispatcher(w_quantizer)
    layer = torch.nn.Conv2d(3, 8, 3)
    wrapper = qi.PytorchQuantizationWrapper(layer, dispatcher)
    x = torch.randn(2, 3, 10, 10)
    float_w = wrapper.weight.detach().clone()
    y = wrapper(x)
    assert bits_equal(y, F.conv2d(x, w_quantizer(float_w), layer.bias))
    assert dispatcher.is_weights_quantization and not dispatcher.is_activation_quantization
    assert dispatcher.weight_quantizers == {"weight": w_quantizer}


def test_seed_alias_modules_and_lazy_names():
    assert qi.pytorch_inferable_quantizers.WeightsPOTInferableQuantizer is \
        qi.WeightsPOTInferableQuantizer
    assert qi.PytorchQuantizationWrapper is qp.PytorchQuantizationWrapper
    assert qi.PytorchActivationQuantizationHolder is qp.PytorchActivationQuantizationHolder
    with pytest.raises(AttributeError):
        qi.NoSuchName  # noqa: B018


def test_dispatcher_config_roundtrip_and_errors():
    wq = qi.WeightsPOTInferableQuantizer(num_bits=4, threshold=[1.0, 2.0], per_channel=True,
                                         channel_axis=0)
    d = qi.PytorchNodeQuantizationDispatcher({"weight": wq}, [act_q()])
    cfg = d.get_config()
    assert set(cfg) == {"activation_quantizers", "weight_quantizer", "qi_version"}
    d2 = qi.PytorchNodeQuantizationDispatcher.from_config(cfg)
    assert d2.weight_quantizers["weight"].get_config() == wq.get_config()
    assert d2.activation_quantizers[0].get_config() == act_q().get_config()
    with pytest.raises(ValueError, match="must be a BaseInferableQuantizer"):
        qi.PytorchNodeQuantizationDispatcher({"weight": 3})
    with pytest.raises(ValueError, match="unknown key"):
        qi.PytorchNodeQuantizationDispatcher.from_config({"dispatcher": 1})


# ---- modules ---------------------------------------------------------------------------------------

def per_channel_q(c, axis, n=4):
    return qi.WeightsSymmetricInferableQuantizer(num_bits=n, threshold=[0.3 + 0.05 * i
                                                                      for i in range(c)],
                                                 per_channel=True, channel_axis=axis)


@pytest.mark.parametrize("kind", ["conv2d", "linear", "convtranspose2d", "embedding"])
def test_wrapper_on_modules(kind):
    torch.manual_seed(1)
    if kind == "conv2d":
        layer, x = torch.nn.Conv2d(3, 6, 3, padding=1), torch.randn(2, 3, 7, 7)
        wq = per_channel_q(6, 0)
        ref = lambda w: F.conv2d(x, w, layer.bias, padding=1)  # noqa: E731
    elif kind == "linear":
        layer, x = torch.nn.Linear(10, 5), torch.randn(4, 10)
        wq = per_channel_q(5, 0)
        ref = lambda w: F.linear(x, w, layer.bias)  # noqa: E731
    elif kind == "convtranspose2d":
        layer, x = torch.nn.ConvTranspose2d(3, 5, 3), torch.randn(2, 3, 6, 6)
        wq = per_channel_q(5, 1)  # weight [in, out, kh, kw]: output channels on axis 1
        ref = lambda w: F.conv_transpose2d(x, w, layer.bias)  # noqa: E731
    else:
        layer, x = torch.nn.Embedding(20, 6), torch.randint(0, 20, (3, 7))
        wq = per_channel_q(20, 0)
        ref = lambda w: F.embedding(x, w)  # noqa: E731
    float_w = layer.weight.detach().clone()
    aq = act_q()
    wrapper = qi.PytorchQuantizationWrapper(layer, qi.PytorchNodeQuantizationDispatcher(wq, [aq]))
    # The float weight stays the layer's parameter, under its own name in the state dict.
    assert "weight" in dict(layer.named_parameters())
    assert wrapper.weight is layer.weight
    assert {"weight", "_extra_state"} <= set(wrapper.state_dict())
    y = wrapper(x)
    expected = aq(ref(wq(float_w)))
    assert bits_equal(y, expected)
    assert bits_equal(wrapper.get_quantized_weights()["weight"], wq(float_w))
    # gradients reach the float weight (straight through)
    y.sum().backward()
    assert wrapper.weight.grad is not None and wrapper.weight.grad.abs().sum() > 0
    # save / load / deepcopy: identical outputs
    with torch.no_grad():
        assert bits_equal(roundtrip(wrapper)(x), expected)
        assert bits_equal(copy.deepcopy(wrapper)(x), expected)


def test_wrapper_bias_and_weight_quantizers():
    torch.manual_seed(2)
    layer = torch.nn.Linear(6, 3)
    wq, bq = per_channel_q(3, 0), qi.WeightsUniformInferableQuantizer(
        num_bits=8, min_range=[-0.5], max_range=[0.4], per_channel=False)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    wrapper = qi.PytorchQuantizationWrapper(layer, {"weight": wq, "bias": bq})
    x = torch.randn(5, 6)
    assert bits_equal(wrapper(x), F.linear(x, wq(w0), bq(b0)))
    assert wrapper.num_weights_quantizers == 2 and not wrapper.is_activation_quantization


def test_wrapper_errors():
    wq = per_channel_q(3, 0)
    with pytest.raises(ValueError, match='no parameter "kernel"'):
        qi.PytorchQuantizationWrapper(torch.nn.Linear(2, 3), {"kernel": wq})
    with pytest.raises(ValueError, match="expected Weights"):
        qi.PytorchQuantizationWrapper(torch.nn.Linear(2, 3), {"weight": act_q()})
    with pytest.raises(ValueError, match="keys should be all strings"):
        qi.PytorchQuantizationWrapper(torch.nn.Linear(2, 3), {0: wq})
    with pytest.raises(ValueError, match="Mismatch between"):
        qi.PytorchQuantizationWrapper(torch.add, {0: wq}, weight_values={1: torch.ones(3)})
    with pytest.raises(ValueError, match="should be a torch.Tensor"):
        qi.PytorchQuantizationWrapper(torch.add, {0: wq}, weight_values={0: [1.0]})
    with pytest.raises(ValueError, match="activation quantizers for one layer output"):
        qi.PytorchQuantizationWrapper(torch.nn.Linear(2, 3), activation_quantizers=[
            act_q(), act_q()])(torch.ones(1, 2))
    # A quantizer's own check surfaces as ValueError with the core's message.
    bad = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0, 2.0],
                                                per_channel=True, channel_axis=0)
    with pytest.raises(ValueError, match="channel"):
        qi.PytorchQuantizationWrapper(torch.nn.Linear(2, 3), bad)(torch.ones(1, 2))


# ---- functional ops with positional weights ----------------------------------------------------------

def test_functional_add_with_constant():
    q = qi.WeightsPOTInferableQuantizer(num_bits=4, threshold=[2.0], per_channel=False)
    const = torch.linspace(-3, 3, 12).reshape(3, 4)
    wrapper = qi.PytorchQuantizationWrapper(torch.add, {1: q}, weight_values={1: const},
                                            activation_quantizers=[act_q()])
    x = torch.randn(3, 4)
    assert bits_equal(wrapper(x), act_q()(torch.add(x, q(const))))
    # the constant goes first: torch.sub(const, x)
    sub = qi.PytorchQuantizationWrapper(torch.sub, {0: q}, weight_values={0: const})
    assert bits_equal(sub(x), torch.sub(q(const), x))
    # op_call_kwargs: torch.add(x, q(c), alpha=2)
    add2 = qi.PytorchQuantizationWrapper(torch.add, {1: q}, weight_values={1: const},
                                         op_call_kwargs={"alpha": 2})
    assert bits_equal(add2(x), torch.add(x, q(const), alpha=2))
    with torch.no_grad():
        assert bits_equal(roundtrip(wrapper)(x), wrapper(x))


def test_functional_cat_inputs_as_list():
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=3, threshold=[1.5], per_channel=False)
    c1, c2 = torch.randn(2, 3), torch.randn(2, 5)
    wrapper = qi.PytorchQuantizationWrapper(torch.cat, {0: q, 2: q}, weight_values={0: c1, 2: c2},
                                            op_call_kwargs={"dim": 1}, is_inputs_as_list=True)
    x = torch.randn(2, 4)
    expected = torch.cat([q(c1), x, q(c2)], dim=1)
    assert bits_equal(wrapper(x), expected)
    assert bits_equal(wrapper([x]), expected)
    assert set(wrapper.get_quantized_weights()) == {0, 2}
    gm = torch.fx.symbolic_trace(wrapper)
    assert bits_equal(gm(x), expected)
    with torch.no_grad():
        assert bits_equal(roundtrip(wrapper)(x), expected)


# ---- holders --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("holder_cls", [qi.PytorchActivationQuantizationHolder,
                                        qi.PytorchPreservingActivationQuantizationHolder,
                                        qi.PytorchFLNActivationQuantizationHolder])
def test_holders(holder_cls):
    q = qi.ActivationUniformInferableQuantizer(num_bits=4, min_range=[-1.0], max_range=[2.0])
    x = torch.randn(3, 5, 4) * 2
    holder = holder_cls(q)
    assert bits_equal(holder(x), q(x))
    gm = torch.fx.symbolic_trace(holder)
    assert "qi.quantize" in gm.code and bits_equal(gm(x), q(x))
    assert bits_equal(roundtrip(holder)(x), q(x))
    if holder_cls is not qi.PytorchActivationQuantizationHolder:
        bypass = holder_cls(q, quantization_bypass=True)
        assert bypass(x) is x
        gm = torch.fx.symbolic_trace(bypass)
        assert torch.equal(gm(x), x) and torch.equal(roundtrip(gm)(x), x)
        assert roundtrip(bypass).quantization_bypass
    with pytest.raises(ValueError, match="expected an Activation quantizer"):
        holder_cls(per_channel_q(3, 0))


# ---- a whole model: fx, jit, save/load -------------------------------------------------------------------

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = qi.PytorchQuantizationWrapper(
            torch.nn.Conv2d(1, 4, 3), qi.PytorchNodeQuantizationDispatcher(per_channel_q(4, 0)))
        self.act = qi.PytorchActivationQuantizationHolder(
            qi.ActivationPOTInferableQuantizer(num_bits=8, threshold=[8.0], signed=False))
        self.pool = qi.PytorchPreservingActivationQuantizationHolder(
            qi.ActivationPOTInferableQuantizer(num_bits=8, threshold=[8.0], signed=False),
            quantization_bypass=True)
        self.fc = qi.PytorchQuantizationWrapper(
            torch.nn.Linear(4 * 3 * 3, 5), qi.PytorchNodeQuantizationDispatcher(
                qi.WeightsLUTSymmetricInferableQuantizer(
                    num_bits=3, lut_values=[-100, -40, -5, 0, 7, 50, 110], threshold=[0.5],
                    per_channel=False), [act_q()]))
        self.add = qi.PytorchQuantizationWrapper(torch.add, {1: per_channel_q(1, 0, 8)},
                                                 weight_values={1: torch.randn(5)})

    def forward(self, x):
        x = self.act(torch.relu(self.conv(x)))
        x = self.pool(F.max_pool2d(x, 2))
        return self.add(self.fc(torch.flatten(x, 1)))


def test_model_fx_jit_save_load(tmp_path):
    model = Net().eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        y = model(x)
        gm = torch.fx.symbolic_trace(model)
        assert bits_equal(gm(x), y)
        assert bits_equal(roundtrip(gm)(x), y)
        assert bits_equal(roundtrip(model)(x), y)
        traced = torch.jit.trace(model, x)
        path = tmp_path / "net.pt"
        traced.save(str(path))
        assert bits_equal(torch.jit.load(str(path))(x), y)
    # the state dict reloads into a fresh model
    fresh = Net()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert bits_equal(fresh.eval()(x), y)


# ---- the quantized-weight cache ----------------------------------------------------------------

class _CountingQuantize:
    """Counts the wrapper's quantize calls (the weight and activation quantizers')."""

    def __init__(self, monkeypatch):
        import quantizers_infrastructure.pytorch.wrapper as wrapper_module
        self.calls = 0
        real = wrapper_module.quantize_tensor

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(wrapper_module, "quantize_tensor", counted)


def _cached_linear():
    torch.manual_seed(3)
    layer = torch.nn.Linear(16, 8)
    wq = qi.WeightsSymmetricInferableQuantizer(num_bits=4, threshold=[0.5] * 8, per_channel=True,
                                               channel_axis=0)
    return qi.PytorchQuantizationWrapper(layer, {"weight": wq}), wq


def test_weight_cache_reuses_until_the_weight_changes(monkeypatch):
    wrapper, wq = _cached_linear()
    count = _CountingQuantize(monkeypatch)
    x = torch.randn(4, 16)
    with torch.no_grad():
        y1 = wrapper(x)
        y2 = wrapper(x)
        assert count.calls == 1 and bits_equal(y1, y2)
        wrapper.layer.weight.mul_(1.5)  # an in-place write, as an optimizer step
        y3 = wrapper(x)
        assert count.calls == 2
        assert bits_equal(y3, F.linear(x, wq(wrapper.layer.weight), wrapper.layer.bias))
        state = {k: v * 0.5 for k, v in wrapper.state_dict().items() if k.endswith("weight")}
        wrapper.load_state_dict(state, strict=False)
        y4 = wrapper(x)
        assert count.calls == 3
        assert bits_equal(y4, F.linear(x, wq(wrapper.layer.weight), wrapper.layer.bias))
        wrapper.layer.weight = torch.nn.Parameter(wrapper.layer.weight.detach() + 0.25)
        wrapper(x)
        assert count.calls == 4
        wrapper.cache_quantized_weights = False
        wrapper(x)
        wrapper(x)
        assert count.calls == 6


def test_weight_cache_is_not_used_when_the_weight_trains_or_is_traced(monkeypatch):
    wrapper, wq = _cached_linear()
    count = _CountingQuantize(monkeypatch)
    x = torch.randn(4, 16)
    for _ in range(2):  # grad enabled and a trainable weight: a fresh graph each call
        wrapper(x).sum().backward()
    assert count.calls == 2 and wrapper.layer.weight.grad is not None
    with torch.no_grad():
        wrapper(x)  # fills the cache
        traced = torch.jit.trace(wrapper, x, check_trace=False)
    assert "qi::" in str(traced.inlined_graph)  # the trace records the quantize op
    wrapper.layer.weight.requires_grad_(False)  # frozen weights: cached with grad enabled too
    calls = count.calls
    wrapper(x)  # the value cached under no_grad still holds
    assert count.calls == calls
    with torch.no_grad():
        wrapper.layer.weight.add_(0.5)
    xg = x.clone().requires_grad_()
    wrapper(xg).sum().backward()
    wrapper(xg).sum().backward()
    assert count.calls == calls + 1 and xg.grad is not None


def test_weight_cache_stays_out_of_copies(monkeypatch):
    wrapper, wq = _cached_linear()
    x = torch.randn(4, 16)
    with torch.no_grad():
        y = wrapper(x)
        clone = copy.deepcopy(wrapper)
        loaded = roundtrip(wrapper)
        for other in (clone, loaded):
            assert "_qi_weight_cache" not in other.__dict__
            other.layer.weight.add_(0.125)
            assert bits_equal(other(x), F.linear(x, wq(other.layer.weight), other.layer.bias))
        assert bits_equal(wrapper(x), y)
