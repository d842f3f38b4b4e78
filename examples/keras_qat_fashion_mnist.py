# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""QAT on Fashion-MNIST with Keras and qi: a small CNN trained in float, then every Conv2D/Dense
wrapped with 4-bit LSQ weights quantizers (per channel) and 8-bit LSQ activation quantizers,
fine-tuned with model.fit, converted to inferable quantizers, saved as .keras and reloaded.
Prints float and QAT accuracy side by side.

    .venv/bin/python examples/keras_qat_fashion_mnist.py            # a few minutes on 2 cores
    .venv/bin/python examples/keras_qat_fashion_mnist.py --smoke    # seconds (tiny subset)
"""

import argparse
import gzip
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import tensorflow as tf  # noqa: E402

import quantizers_infrastructure as qi  # noqa: E402
from quantizers_infrastructure import keras as qk  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def load(split):
    with gzip.open(os.path.join(DATA, f"{split}-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(os.path.join(DATA, f"{split}-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return (x.astype(np.float32) / 255.0), y.astype(np.int64)


def float_model():
    return tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)),
        tf.keras.layers.Conv2D(16, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(10),
    ])


def quantize(model, x_calib, w_bits=4, a_bits=8):
    """A copy of `model` with each Conv2D/Dense wrapped: LSQ weights (thresholds = max |w| per
    output channel) and an LSQ activation quantizer on its output (threshold from calibration)."""
    probe = tf.keras.Model(model.inputs, [layer.output for layer in model.layers])
    acts = probe(x_calib[:512], training=False)
    new = [tf.keras.Input((28, 28, 1))]
    for layer, act in zip(model.layers, acts):
        clone = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)):
            kernel = layer.kernel.numpy()
            t = np.maximum(np.abs(kernel).reshape(-1, kernel.shape[-1]).max(0), 1e-3)
            wcfg = qi.TrainableQuantizerWeightsConfig(
                qi.QuantizationMethod.SYMMETRIC, w_bits,
                {"threshold": t.reshape((1,) * (kernel.ndim - 1) + (-1,))}, True, -1, True)
            a = act.numpy()
            signed = bool((a < 0).any())
            acfg = qi.TrainableQuantizerActivationConfig(
                qi.QuantizationMethod.SYMMETRIC, a_bits,
                {"threshold": float(np.quantile(np.abs(a), 0.9999)) or 1.0, "is_signed": signed})
            dispatcher = qi.KerasNodeQuantizationDispatcher(
                qk.LSQWeightQATQuantizer(wcfg),
                [qk.LSQSymmetricActivationTrainableQuantizer(acfg)])
            wrapped = qi.KerasQuantizationWrapper(clone, dispatcher)
            new.append(wrapped)
        else:
            new.append(clone)
    qmodel = tf.keras.Sequential(new)
    for layer, q in zip(model.layers, qmodel.layers):
        target = q.layer if isinstance(q, qi.KerasQuantizationWrapper) else q
        target.set_weights(layer.get_weights())
    return qmodel


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=1000, verbose=0)
    return float((logits.argmax(1) == y).mean())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny subset, one short epoch each")
    p.add_argument("--float-epochs", type=int, default=3)
    p.add_argument("--qat-epochs", type=int, default=2)
    args = p.parse_args()
    tf.keras.utils.set_random_seed(0)
    x_train, y_train = load("train")
    x_test, y_test = load("t10k")
    if args.smoke:
        x_train, y_train, x_test, y_test = x_train[:2048], y_train[:2048], x_test[:1000], \
            y_test[:1000]
        args.float_epochs = args.qat_epochs = 1
    verbose = 1 if sys.stdout.isatty() else 2
    t0 = time.time()

    model = float_model()
    model.compile(tf.keras.optimizers.Adam(1e-3),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    print(f"[float] training {args.float_epochs} epoch(s) on {len(x_train)} images")
    model.fit(x_train, y_train, batch_size=128, epochs=args.float_epochs, verbose=verbose)
    acc_float = accuracy(model, x_test, y_test)

    qmodel = quantize(model, x_train)
    acc_ptq = accuracy(qmodel, x_test, y_test)
    qmodel.compile(tf.keras.optimizers.Adam(2e-4),
                   tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    print(f"[qat] 4-bit LSQ weights, 8-bit LSQ activations: {args.qat_epochs} epoch(s)")
    qmodel.fit(x_train, y_train, batch_size=128, epochs=args.qat_epochs, verbose=verbose)
    acc_qat = accuracy(qmodel, x_test, y_test)

    inferable = qk.convert_to_inferable_quantizers(qmodel)
    same = np.array_equal(inferable.predict(x_test[:500], verbose=0),
                          qmodel.predict(x_test[:500], verbose=0))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "qat4.keras")
        inferable.save(path)
        reloaded = qi.keras_load_quantized_model(path)
        reload_same = np.array_equal(reloaded.predict(x_test[:500], verbose=0),
                                     inferable.predict(x_test[:500], verbose=0))

    print()
    print(f"{'model':<34}{'test accuracy':>14}")
    print(f"{'float':<34}{acc_float:>14.4f}")
    print(f"{'4-bit weights before QAT (LSQ init)':<34}{acc_ptq:>14.4f}")
    print(f"{'4-bit LSQ weights after QAT':<34}{acc_qat:>14.4f}")
    print(f"converted == trainable (eval): {same}; .keras reload identical: {reload_same}; "
          f"wall time {time.time() - t0:.1f} s")
    return 0 if same and reload_same else 1


if __name__ == "__main__":
    sys.exit(main())
