# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The Fashion-MNIST job through qi's Python API on PyTorch: train a small CNN in float, wrap
every layer with a dispatcher of quantizers, post-training quantization (8-bit), QAT (4-bit
weights, 8-bit activations; STE and LSQ), convert trainable to inferable quantizers, save and
reload the quantized model (bit-identical outputs), print a table and plot the per-layer weight
quantization error to a PNG.

    .venv/bin/python examples/pytorch_fashion_mnist.py            # a few minutes on 2 cores
    .venv/bin/python examples/pytorch_fashion_mnist.py --quick    # < 1 minute, small subsets
"""

import argparse
import gzip
import io
import json
import os
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import quantizers_infrastructure as qi
from quantizers_infrastructure import pytorch as qp

DATA = "/usr/share/datasets/fashion-mnist"
QM, TM = qi.QuantizationMethod, qi.TrainingMethod


def load_split(kind):
    with gzip.open(os.path.join(DATA, f"{kind}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(os.path.join(DATA, f"{kind}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    return (x - 0.2860) / 0.3530, torch.from_numpy(labels.astype(np.int64))


def make_float_model():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


def batches(x, y, batch, shuffle, seed=0):
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)) if shuffle \
        else torch.arange(len(x))
    for i in range(0, len(x), batch):
        j = idx[i:i + batch]
        yield x[j], y[j]


def train(model, x, y, epochs, lr, desc, batch=128):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for epoch in range(epochs):
        bar = tqdm(list(batches(x, y, batch, True, seed=epoch)), desc=f"{desc} epoch {epoch + 1}",
                   leave=False)
        for xb, yb in bar:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in batches(x, y, 1000, False))
    return correct / len(x)


@torch.no_grad()
def calibrate_activations(model, x):
    """max |activation| after each ReLU / output, on calibration data (for thresholds)."""
    maxima = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: maxima.__setitem__(
        k, max(maxima.get(k, 0.0), float(o.abs().max())))) for k, m in enumerate(model)]
    model(x)
    for h in hooks:
        h.remove()
    return maxima


def pot(t):
    return float(2.0 ** np.ceil(np.log2(max(t, 2 ** -16))))


def quantize_model(float_model, calib_x, w_bits, a_bits, training_method=None):
    """Wraps every Conv2d/Linear: per-channel weight quantizer (inferable for PTQ, trainable
    for QAT), and a POT activation quantizer on each ReLU output (unsigned)."""
    import copy
    model = copy.deepcopy(float_model)
    maxima = calibrate_activations(model, calib_x)
    layers = []
    for k, m in enumerate(model):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            t = w.abs().reshape(w.shape[0], -1).max(1).values.clamp_min(1e-8)
            if training_method is None:
                wq = qi.WeightsSymmetricInferableQuantizer(
                    num_bits=w_bits, threshold=t.tolist(), per_channel=True, channel_axis=0)
            else:
                cfg = qi.TrainableQuantizerWeightsConfig(
                    QM.SYMMETRIC, w_bits, {"threshold": t.numpy().reshape(-1, *[1] * (w.dim() - 1))},
                    True, 0, True)
                wq = qp.get_trainable_quantizer_class(qi.QuantizationTarget.Weights, QM.SYMMETRIC,
                                                      training_method)(cfg)
            model[k] = qi.PytorchQuantizationWrapper(m, qi.PytorchNodeQuantizationDispatcher(wq))
            layers.append(k)
        elif isinstance(m, nn.ReLU):
            t = pot(maxima[k])
            if training_method is None:
                aq = qi.ActivationPOTInferableQuantizer(num_bits=a_bits, threshold=[t], signed=False)
            else:
                cfg = qi.TrainableQuantizerActivationConfig(
                    QM.POWER_OF_TWO, a_bits, {"threshold": t, "is_signed": False})
                aq = qp.get_trainable_quantizer_class(qi.QuantizationTarget.Activation,
                                                      QM.POWER_OF_TWO, training_method)(cfg)
            model[k] = nn.Sequential(m, qi.PytorchActivationQuantizationHolder(aq))
    return model, layers


def convert(model):
    for m in model.modules():
        if isinstance(m, (qi.PytorchQuantizationWrapper, qi.PytorchActivationQuantizationHolder)):
            m.convert_to_inferable_quantizers()
    return model


@torch.no_grad()
def layer_errors(float_model, qmodel, layers):
    """Relative L2 error of each quantized weight: ||Q(W) - W|| / ||W||."""
    out = {}
    for k in layers:
        w = float_model[k].weight.detach()
        qw = qmodel[k].get_quantized_weights()["weight"]
        out[f"{k}:{type(float_model[k]).__name__}"] = float((qw - w).norm() / w.norm())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small subsets, one epoch (< 1 min)")
    ap.add_argument("--out", default="pytorch_fashion_mnist", help="output prefix (.png, .json)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.time()

    x_train, y_train = load_split("train")
    x_test, y_test = load_split("t10k")
    # QAT fine-tunes on a subset: its steps cost ~3x a float step (quantizer ops + backward).
    n_train, n_test, epochs, n_qat = (60000, 10000, 2, 15000) if not args.quick else \
        (4000, 2000, 1, 4000)
    qat_epochs = 1
    x_train, y_train = x_train[:n_train], y_train[:n_train]
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    calib = x_train[:512]

    float_model = make_float_model()
    train(float_model, x_train, y_train, epochs, 1e-3, "float")
    results = {"float": accuracy(float_model, x_test, y_test)}

    ptq, layers = quantize_model(float_model, calib, 8, 8)
    results["ptq8"] = accuracy(ptq, x_test, y_test)
    errors = {"ptq8": layer_errors(float_model, ptq, layers)}

    qat_models = {}
    for key, tm, bits in (("qat4_ste", TM.STE, 4), ("qat4_lsq", TM.LSQ, 4),
                          ("qat2_lsq", TM.LSQ, 2)):
        model, layers = quantize_model(float_model, calib, bits, 8, tm)
        train(model, x_train[:n_qat], y_train[:n_qat], qat_epochs,
              1e-4 if tm == TM.STE else 5e-4, key)
        convert(model)
        results[key] = accuracy(model, x_test, y_test)
        errors[key] = layer_errors(float_model, model, layers)
        qat_models[key] = model

    # save and reload the quantized model: identical outputs
    model = qat_models["qat4_lsq"]
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    reloaded = torch.load(buf, weights_only=False)
    with torch.no_grad():
        a, b = model(x_test[:500]), reloaded(x_test[:500])
    results["reload_identical"] = bool(torch.equal(a.view(torch.int32), b.view(torch.int32)))
    results["wall_s"] = round(time.time() - start, 1)

    print(f"\n{'model':<12}{'accuracy':>10}")
    for k in ("float", "ptq8", "qat4_ste", "qat4_lsq", "qat2_lsq"):
        print(f"{k:<12}{results[k]:>10.4f}")
    print(f"reload identical: {results['reload_identical']}, wall time {results['wall_s']} s")
    print("\nper-layer relative weight quantization error ||Q(W) - W|| / ||W||")
    names = list(errors["ptq8"])
    print(f"{'layer':<14}" + "".join(f"{k:>10}" for k in errors))
    for n in names:
        print(f"{n:<14}" + "".join(f"{errors[k][n]:>10.4f}" for k in errors))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(errors)
    for i, (k, e) in enumerate(errors.items()):
        ax.bar(np.arange(len(names)) + i * width, [e[n] for n in names], width, label=k)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    ax.set_xticklabels(names)
    ax.set_ylabel("||Q(W) - W|| / ||W||")
    ax.set_yscale("log")
    ax.set_title("qi on PyTorch: per-layer weight quantization error (Fashion-MNIST CNN)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=120)
    with open(args.out + ".json", "w") as f:
        json.dump({"results": results, "layer_errors": errors}, f, indent=1)
    print(f"\nwrote {args.out}.png and {args.out}.json")


if __name__ == "__main__":
    main()
