# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""qi's CUDA kernels against a device-to-device copy (the memory-bandwidth limit), PyTorch's own
fake-quant kernels and torch.compile of the same composed ops, in one run on one GPU, as ratios
(absolute times drift between machines):

  forward   y = Q(x): 2^26 elements per tensor, a 4096x4096 weight per channel (axis 0), a
            64x256x56x56 activation per channel (axis 1); target: at least 90% of copy bandwidth
            (copy time / qi time >= 0.9).
  lsq       LSQ forward + backward (dx and the per-channel threshold gradient): at most 2.5x a
            copy (the traffic of reading x, writing y, reading x and dy, writing dx) and at least
            3x faster than torch._fake_quantize_learnable_per_channel_affine.
  qat       one training step (forward, backward, SGD) of a ResNet-18 (batch 64, 224x224): float,
            qi (prepare_qat with the w4a8_lsq preset) and torch.ao's QAT (prepare_qat with the
            default x86 QAT qconfig).

Usage: python bench/bench_cuda.py [--json out.json] [--repeats N] [--no-compile] [--no-qat]
Prints a table; --json writes every time and ratio, the targets and whether each was met."""

import argparse
import json
import statistics
import sys
import time
import traceback

import torch

import quantizers_infrastructure as qi
import quantizers_infrastructure.pytorch as qp


def cuda_time(fn, repeats, warmup=3):
    """Median milliseconds of fn() on the current stream (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


# ---- the cases ---------------------------------------------------------------------------------

FORWARD_CASES = [
    ("per-tensor 2^26", (1 << 26,), None),
    ("weight 4096x4096 per channel (axis 0)", (4096, 4096), 0),
    ("activation 64x256x56x56 per channel (axis 1)", (64, 256, 56, 56), 1),
]


def _thresholds(count):
    return [1.0 + 0.5 * (i % 7) for i in range(count)]


def _composed_forward(x, scale, zp, qmin, qmax):
    return (torch.clamp(torch.round(x / scale) + zp, qmin, qmax) - zp) * scale


def _composed_lsq(x, scale, qmin, qmax):
    u = x / scale
    r = u + (torch.round(u) - u).detach()  # ste_round
    return torch.clamp(r, qmin, qmax) * scale  # hard clip: LSQ's gradients


def bench_forward(results, repeats, compile_ops):
    for name, shape, axis in FORWARD_CASES:
        x = torch.randn(shape, device="cuda") * 2
        y = torch.empty_like(x)
        count = 1 if axis is None else shape[axis]
        q = qi.WeightsSymmetricInferableQuantizer(8, threshold=_thresholds(count),
                                                  per_channel=axis is not None, channel_axis=axis)
        plan = qp.plan_tensor(q).cuda()
        bshape = [1] * len(shape)
        if axis is not None:
            bshape[axis] = count
        scale = torch.tensor([t / 128 for t in _thresholds(count)], device="cuda")
        zp = torch.zeros(count, dtype=torch.int32, device="cuda")
        row = {"case": name, "elements": x.numel()}
        row["copy_ms"] = cuda_time(lambda: y.copy_(x), repeats)
        row["qi_ms"] = cuda_time(
            lambda: torch.ops.qi.quantize.out(x, plan, axis, None, out=y), repeats)
        if axis is None:
            row["torch_ms"] = cuda_time(lambda: torch.fake_quantize_per_tensor_affine(
                x, float(scale[0]), 0, -128, 127), repeats)
        else:
            row["torch_ms"] = cuda_time(lambda: torch.fake_quantize_per_channel_affine(
                x, scale, zp, axis, -128, 127), repeats)
        if compile_ops:
            f = torch.compile(_composed_forward)
            s, z = scale.reshape(bshape), zp.float().reshape(bshape)
            row["compile_ms"] = cuda_time(lambda: f(x, s, z, -128.0, 127.0), repeats)
        # qi's output must be the CPU's on a sample (the kernels' bits, not only their speed).
        sample = x.reshape(-1)[: 1 << 16] if axis is None else x[:, :64] if axis == 0 else x[:2]
        expected = q(sample.cpu())
        row["matches_cpu"] = bool(torch.equal(q(sample).cpu(), expected))
        row["copy_fraction"] = row["copy_ms"] / row["qi_ms"]
        row["target"] = "copy_fraction >= 0.9"
        row["met"] = row["copy_fraction"] >= 0.9 and row["matches_cpu"]
        results["forward"].append(row)


def bench_lsq(results, repeats, compile_ops):
    for name, shape, axis in FORWARD_CASES:
        x = (torch.randn(shape, device="cuda") * 2).requires_grad_(True)
        dy = torch.randn(shape, device="cuda")
        y = torch.empty_like(x)
        count = 1 if axis is None else shape[axis]
        thresholds = torch.tensor(_thresholds(count), device="cuda", requires_grad=True)
        scale = (thresholds.detach() / 128).clone().requires_grad_(True)
        zp = torch.zeros(count, device="cuda", requires_grad=True)
        bshape = [1] * len(shape)
        if axis is not None:
            bshape[axis] = count
        row = {"case": name, "elements": x.numel()}
        row["copy_ms"] = cuda_time(lambda: y.copy_(x.detach()), repeats)

        # torch.autograd.grad: the gradients are returned, not accumulated into .grad (which
        # would add a read and a write of x's size to every variant).
        def qi_step():
            out = torch.ops.qi.symmetric_quant(x, thresholds, 8, True, axis, "lsq", 1.0)
            torch.autograd.grad(out, (x, thresholds), dy)

        def torch_step():
            if axis is None:
                out = torch._fake_quantize_learnable_per_tensor_affine(x, scale, zp, -128, 127, 1.0)
            else:
                out = torch._fake_quantize_learnable_per_channel_affine(x, scale, zp, axis, -128,
                                                                        127, 1.0)
            torch.autograd.grad(out, (x, scale, zp), dy)

        row["qi_ms"] = cuda_time(qi_step, repeats)
        row["torch_ms"] = cuda_time(torch_step, repeats)
        if compile_ops:
            f = torch.compile(_composed_lsq)
            s = scale.detach().reshape(bshape).clone().requires_grad_(True)

            def compiled_step():
                torch.autograd.grad(f(x, s, -128.0, 127.0), (x, s), dy)
            row["compile_ms"] = cuda_time(compiled_step, repeats)
        row["copy_multiple"] = row["qi_ms"] / row["copy_ms"]
        row["speedup_vs_torch"] = row["torch_ms"] / row["qi_ms"]
        row["target"] = "copy_multiple <= 2.5 and speedup_vs_torch >= 3"
        row["met"] = row["copy_multiple"] <= 2.5 and row["speedup_vs_torch"] >= 3
        results["lsq"].append(row)


# ---- QAT step of a ResNet-18 ---------------------------------------------------------------------

class BasicBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.relu2 = torch.nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + (x if self.down is None else self.down(x)))


class ResNet18(torch.nn.Module):
    """torchvision's resnet18 architecture (the GPU image need not have torchvision)."""

    def __init__(self, classes=1000):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                                        torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
                                        torch.nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = torch.nn.Sequential(*layers)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def bench_qat(results, repeats, batch):
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 224, 224)
    target = torch.randint(0, 1000, (batch,))
    xc, tc = x.cuda(), target.cuda()

    def timed(name, make):
        row = {"model": name, "batch": batch}
        try:
            model = make().cuda().train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)

            def step():
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(xc), tc).backward()
                opt.step()
            row["step_ms"] = cuda_time(step, max(3, repeats // 2), warmup=3)
        except Exception as e:  # a peer's API missing on this torch: reported, not fatal
            row["error"] = f"{type(e).__name__}: {e}"
            row["traceback"] = traceback.format_exc(limit=4)
        results["qat"].append(row)

    timed("float", ResNet18)
    timed("qi w4a8_lsq", lambda: qp.prepare_qat(ResNet18(), "w4a8_lsq",
                                                calibration_data=[x[:8]], progress=False))

    def torch_ao():
        from torch.ao.quantization import get_default_qat_qconfig, prepare_qat
        model = ResNet18().train()
        model.qconfig = get_default_qat_qconfig("x86")
        return prepare_qat(model, inplace=False)
    timed("torch.ao QAT (x86 qconfig)", torch_ao)
    base = results["qat"][0].get("step_ms")
    for row in results["qat"]:
        if base and row.get("step_ms"):
            row["vs_float"] = row["step_ms"] / base


def print_table(results):
    print(f"device: {results['device']}; torch {results['torch']}")
    print("\nforward (copy fraction = copy time / qi time; target >= 0.90)")
    print(f"{'case':48} {'copy ms':>8} {'qi ms':>8} {'torch ms':>9} {'compile':>8} {'fraction':>9}"
          f" {'cpu bits':>9}")
    for r in results["forward"]:
        print(f"{r['case']:48} {r['copy_ms']:8.3f} {r['qi_ms']:8.3f} {r['torch_ms']:9.3f} "
              f"{r.get('compile_ms', float('nan')):8.3f} {r['copy_fraction']:9.2f} "
              f"{str(r['matches_cpu']):>9}")
    print("\nLSQ forward+backward (target: <= 2.5x copy, >= 3x faster than torch's learnable op)")
    print(f"{'case':48} {'copy ms':>8} {'qi ms':>8} {'torch ms':>9} {'compile':>8} {'x copy':>7}"
          f" {'speedup':>8}")
    for r in results["lsq"]:
        print(f"{r['case']:48} {r['copy_ms']:8.3f} {r['qi_ms']:8.3f} {r['torch_ms']:9.3f} "
              f"{r.get('compile_ms', float('nan')):8.3f} {r['copy_multiple']:7.2f} "
              f"{r['speedup_vs_torch']:8.2f}")
    if results["qat"]:
        print("\nQAT training step, ResNet-18")
        for r in results["qat"]:
            if "error" in r:
                print(f"{r['model']:32} error: {r['error']}")
            else:
                print(f"{r['model']:32} {r['step_ms']:8.2f} ms  "
                      f"({r.get('vs_float', 1.0):.2f}x float)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true", help="leave out torch.compile")
    ap.add_argument("--no-qat", action="store_true", help="leave out the ResNet-18 step")
    ap.add_argument("--qat-batch", type=int, default=64)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device", file=sys.stderr)
        return 2
    if qp.cuda_library_path() is None:
        print("bench_cuda: libqi_torch_cuda.so is not loaded (scripts/qi cuda-build)",
              file=sys.stderr)
        return 2
    t0 = time.time()
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cuda": torch.version.cuda, "forward": [], "lsq": [], "qat": []}
    bench_forward(results, args.repeats, not args.no_compile)
    bench_lsq(results, args.repeats, not args.no_compile)
    if not args.no_qat:
        bench_qat(results, args.repeats, args.qat_batch)
    results["seconds"] = time.time() - t0
    results["all_targets_met"] = all(r["met"] for r in results["forward"] + results["lsq"])
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
