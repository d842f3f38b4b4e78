# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Keras' MobileNetV2 quantized in one call, its per-layer report, and a .keras save and load.

    PYTHONPATH=python .venv/bin/python examples/quantize_keras_mobilenet_v2.py [--size 224]
        [--batches 8] [--batch-size 4] [--preset w8a8] [--no-progress]

The weights are random (nothing is downloaded) and the batch normalizations take their statistics
from 8 random images first (Keras' defaults, mean 0 and variance 1, are no trained model's); the
calibration batches are random images, so the figures are those of the pipeline, not of ImageNet
accuracy. The output compared is the logits (classifier_activation=None): a softmax over 1000
random logits is nearly flat and hides any error."""

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

import quantizers_infrastructure as qi
import quantizers_infrastructure.keras as qk
from quantizers_infrastructure.common.report import sqnr_db


def settle_batch_norms(model: tf.keras.Model, x: np.ndarray) -> None:
    """Batch-norm moving statistics set to those of x (momentum 0 for one training pass)."""
    bns = [l for l in model.layers if isinstance(l, tf.keras.layers.BatchNormalization)]
    momenta = [l.momentum for l in bns]
    for layer in bns:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, m in zip(bns, momenta):
        layer.momentum = m


def timed(fn, repeat: int = 3) -> float:
    fn()  # the first call traces / allocates
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="w8a8", choices=qi.common.model_config.PRESETS)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.applications.MobileNetV2(weights=None, classifier_activation=None,
                                              input_shape=(args.size, args.size, 3))
    rng = np.random.default_rng(1)

    def images(n):
        return rng.uniform(-1, 1, (n, args.size, args.size, 3)).astype(np.float32)
    settle_batch_norms(model, images(8))
    calibration = [images(args.batch_size) for _ in range(args.batches)]

    start = time.perf_counter()
    qmodel = qk.quantize(model, args.preset, calibration, progress=not args.no_progress)
    total = time.perf_counter() - start
    report = qmodel.qi_report
    print(report)
    print(f"\nMobileNetV2 ({args.size}x{args.size}): {report.num_wrapped} layers wrapped, "
          f"{report.num_activation_quantizers} activation quantizers; quantize() took "
          f"{total:.2f} s ({report.calibration_seconds:.2f} s calibration over "
          f"{report.calibration_batches} batches)")

    x = images(2)
    ref = model(x, training=False).numpy()
    out = qmodel(x, training=False).numpy()
    cos = float(np.sum(ref * out) / (np.linalg.norm(ref) * np.linalg.norm(out)))
    t_f = timed(lambda: model(x, training=False))
    t_q = timed(lambda: qmodel(x, training=False))
    print(f"quantized vs float: output SQNR {sqnr_db(ref, out):.1f} dB, cosine {cos:.5f}; eager "
          f"forward {t_q * 1e3:.1f} ms quantized vs {t_f * 1e3:.1f} ms float (batch 2)")

    path = os.path.join(tempfile.mkdtemp(), f"mobilenet_v2_{args.preset}.keras")
    qmodel.save(path)
    loaded = qi.keras_load_quantized_model(path)
    same = np.array_equal(loaded(x, training=False).numpy(), out)
    print(f"saved {path} ({os.path.getsize(path) / 1e6:.1f} MB); loaded outputs identical: {same}")


if __name__ == "__main__":
    main()
