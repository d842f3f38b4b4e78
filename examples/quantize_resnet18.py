# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""torchvision's ResNet-18 quantized in one call, its per-layer report, ONNX export and a run in
ONNX Runtime.

    PYTHONPATH=python .venv/bin/python examples/quantize_resnet18.py [--model mobilenet_v2]
        [--size 224] [--batches 8] [--batch-size 4] [--preset w8a8] [--onnx out.onnx]

The weights are random (nothing is downloaded) unless --weights names a torchvision weights enum
already in the local cache (e.g. IMAGENET1K_V1); the calibration batches are random images, so
the figures are those of the pipeline, not of ImageNet accuracy. With random weights the batch
norms first take their statistics from two random batches (torchvision's initialization leaves
MobileNetV2's logits near 1e-10, where nothing can be compared)."""

import argparse
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
import torchvision

import quantizers_infrastructure as qi
import quantizers_infrastructure.pytorch as qp


def settle_batch_norms(model: torch.nn.Module, batches) -> None:
    """Batch-norm running statistics from `batches` (cumulative averages); eval mode after."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18", help="a torchvision.models constructor")
    ap.add_argument("--weights", default=None, help="torchvision weights name (cached only)")
    ap.add_argument("--preset", default="w8a8", choices=qi.common.model_config.PRESETS)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--onnx", default=None, help="where to write the ONNX file (default: temp)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=args.weights).eval()
    g = torch.Generator().manual_seed(1)
    if args.weights is None:
        settle_batch_norms(model, [torch.randn(8, 3, args.size, args.size, generator=g)
                                   for _ in range(2)])
    calibration = [torch.randn(args.batch_size, 3, args.size, args.size, generator=g)
                   for _ in range(args.batches)]

    start = time.perf_counter()
    qmodel = qp.quantize(model, args.preset, calibration, progress=not args.no_progress)
    total = time.perf_counter() - start
    report = qmodel.qi_report
    print(report)
    print(f"\n{args.model}: {report.num_wrapped} layers wrapped, "
          f"{report.num_activation_quantizers} activation quantizers; quantize() took "
          f"{total:.2f} s ({report.calibration_seconds:.2f} s calibration over "
          f"{report.calibration_batches} batches)")

    x = torch.randn(2, 3, args.size, args.size, generator=g)
    with torch.no_grad():
        ref = model(x)
        t0 = time.perf_counter()
        out = qmodel(x)
        t_q = time.perf_counter() - t0
        t0 = time.perf_counter()
        model(x)
        t_f = time.perf_counter() - t0
    cos = torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0)
    top1 = float((ref.argmax(1) == out.argmax(1)).float().mean())
    print(f"quantized vs float: output SQNR {qi.common.report.sqnr_db(ref.numpy(), out.numpy()):.1f} dB, "
          f"cosine {float(cos):.5f}, top-1 agreement {top1:.2f}; forward {t_q * 1e3:.1f} ms "
          f"quantized vs {t_f * 1e3:.1f} ms float (batch 2)")

    path = args.onnx or os.path.join(tempfile.mkdtemp(), f"{args.model}_{args.preset}.onnx")
    torch.onnx.export(qmodel.eval(), (x,), path, opset_version=16, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "batch"},
                                                             "output": {0: "batch"}},
                      dynamo=False)
    sess = ort.InferenceSession(path, qp.onnx.get_ort_session_options(),
                                providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    y = sess.run(None, {"input": x.numpy()})[0]
    t_ort = time.perf_counter() - t0
    diff = float(np.abs(y - out.numpy()).max())
    print(f"ONNX: {path} ({os.path.getsize(path) / 1e6:.1f} MB); ONNX Runtime vs qi max |diff| "
          f"{diff:.2e}, output SQNR vs float {qi.common.report.sqnr_db(ref.numpy(), y):.1f} dB, "
          f"{t_ort * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
