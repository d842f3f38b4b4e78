# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Side-by-side CPU benchmark: qi's quantizers against a plain copy (the memory-bandwidth
limit), PyTorch's own fake-quant kernels and mct-quantizers, in one run, at 1 and 2 threads.

    .venv/bin/python bench/bench_torch.py [--repeats 10] [--json bench-results.json]

Every figure is the median of --repeats timed runs after a warm-up; the table prints ratios
(qi/copy: 1.0 is copy speed; torch/qi and mct/qi: how many times faster qi is)."""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # mct-quantizers imports TensorFlow
# Large tensors: let PyTorch's CPU allocator use transparent huge pages (its own switch), so that
# first-touch page faults of fresh 64 MB outputs (2 us per 4 KB page here) do not drown what is
# measured. It applies to every allocation in the run, torch's baselines included. --no-thp
# measures without it.
if "--no-thp" in sys.argv:
    sys.argv.remove("--no-thp")
else:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
import platform
import statistics
import subprocess
import time

import numpy as np
import torch

import quantizers_infrastructure as qi
import quantizers_infrastructure.pytorch  # noqa: F401  (loads torch.ops.qi)


def median_seconds(fn, repeats):
    fn()  # warm-up: allocations, caches, lazy init
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---- the quantizers, their torch-op and mct-quantizers twins -------------------------------------

def make_cases(channels):
    """(name, qi quantizer, torch twin or None, mct twin or None) for per-tensor (channels None)
    or per-channel (channels = count, axis set later)."""
    from mct_quantizers.pytorch import quantizers as mq

    pc = channels is not None
    t = [1.0] * (channels or 1)
    lo = [-1.0] * (channels or 1)
    hi = [1.0] * (channels or 1)
    lut = [float(v) for v in np.linspace(-128, 127, 16).round()]
    out = []

    def weights(name, qcls, mcls, kw):
        out.append((name, qcls, mcls, kw))

    weights("WeightsSymmetric", qi.WeightsSymmetricInferableQuantizer,
            mq.WeightsSymmetricInferableQuantizer, dict(num_bits=8, threshold=t, per_channel=pc))
    weights("WeightsPOT", qi.WeightsPOTInferableQuantizer, mq.WeightsPOTInferableQuantizer,
            dict(num_bits=8, threshold=t, per_channel=pc))
    weights("WeightsUniform", qi.WeightsUniformInferableQuantizer,
            mq.WeightsUniformInferableQuantizer,
            dict(num_bits=8, min_range=lo, max_range=hi, per_channel=pc))
    weights("WeightsLUTSymmetric16", qi.WeightsLUTSymmetricInferableQuantizer,
            mq.WeightsLUTSymmetricInferableQuantizer,
            dict(num_bits=4, lut_values=lut, threshold=t, per_channel=pc))
    weights("WeightsLUTPOT16", qi.WeightsLUTPOTInferableQuantizer,
            mq.WeightsLUTPOTInferableQuantizer,
            dict(num_bits=4, lut_values=lut, threshold=t, per_channel=pc))
    if not pc:
        out.append(("ActivationSymmetric", qi.ActivationSymmetricInferableQuantizer,
                    mq.ActivationSymmetricInferableQuantizer,
                    dict(num_bits=8, threshold=[1.0], signed=True)))
        out.append(("ActivationPOT", qi.ActivationPOTInferableQuantizer,
                    mq.ActivationPOTInferableQuantizer,
                    dict(num_bits=8, threshold=[1.0], signed=True)))
        out.append(("ActivationUniform", qi.ActivationUniformInferableQuantizer,
                    mq.ActivationUniformInferableQuantizer,
                    dict(num_bits=8, min_range=[-1.0], max_range=[1.0])))
        out.append(("ActivationLutPOT16", qi.ActivationLutPOTInferableQuantizer,
                    mq.ActivationLutPOTInferableQuantizer,
                    dict(num_bits=4, lut_values=lut, threshold=[1.0], signed=True)))
    return out


def torch_twin(name, q, x, axis):
    """torch.fake_quantize_* with the quantizer's own scale/zero point, or None (LUT)."""
    plan = q.plan
    if plan.get("kind") != "affine_torch":
        return None
    scale = torch.tensor(np.asarray(plan["scale"], np.float32))
    zp = torch.tensor(np.asarray(plan["zero_point"], np.float32)).round().to(torch.int32)
    qmin, qmax = int(plan["qmin"]), int(plan["qmax"])
    if axis is None:
        s, z = float(scale[0]), int(zp[0])
        return lambda: torch.fake_quantize_per_tensor_affine(x, s, z, qmin, qmax)
    return lambda: torch.fake_quantize_per_channel_affine(x, scale, zp, axis, qmin, qmax)


def forward_rows(threads, repeats):
    rows = []
    shapes = [("2^24 per-tensor", (1 << 24,), None),
              ("512x512x3x3 axis 0", (512, 512, 3, 3), 0),
              ("64x256x28x28 axis 1", (64, 256, 28, 28), 1)]
    for label, shape, axis in shapes:
        x = torch.empty(shape).uniform_(-1.5, 1.5)
        y = torch.empty_like(x)
        copy = median_seconds(lambda: y.copy_(x), repeats)
        for name, qcls, mcls, kw in make_cases(None if axis is None else shape[axis]):
            if axis is not None:
                kw = dict(kw, channel_axis=axis)
                mkw = dict(kw, input_rank=len(shape)) if "LUT" in name else dict(kw)
            else:
                mkw = dict(kw)
            q = qcls(**kw)
            text = q.to_json()
            # Into a preallocated tensor, like the copy baseline (q(x) also allocates its output).
            t_qi = median_seconds(lambda: torch.ops.qi.fake_quant.out(x, text, out=y), repeats)
            twin = torch_twin(name, q, x, axis)
            t_torch = median_seconds(twin, repeats) if twin else None
            try:
                m = mcls(**mkw)
                with torch.no_grad():
                    t_mct = median_seconds(lambda: m(x), max(3, repeats // 3))
            except Exception as e:  # noqa: BLE001 - report, do not hide
                print(f"  mct-quantizers {name}: {e}", file=sys.stderr)
                t_mct = None
            rows.append(dict(case=label, quantizer=name, threads=threads, qi_s=t_qi, copy_s=copy,
                             torch_s=t_torch, mct_s=t_mct,
                             qi_alloc_s=median_seconds(lambda: q(x), repeats)))
    return rows


def backward_rows(threads, repeats):
    """STE/LSQ forward+backward against torch's learnable fake quant."""
    rows = []
    for label, shape, axis in [("2^24 per-tensor", (1 << 24,), None),
                               ("512x512x3x3 axis 0", (512, 512, 3, 3), 0)]:
        x = torch.empty(shape).uniform_(-1.5, 1.5).requires_grad_()
        g = torch.ones(shape)
        y = torch.empty(shape)
        copy = median_seconds(lambda: y.copy_(x.detach()), repeats)
        c = 1 if axis is None else shape[axis]
        thr = torch.full((c,), 1.0, requires_grad=True)
        scale = torch.full((c,), 1.0 / 128, requires_grad=True)
        zp = torch.zeros(c)
        for mode in ("ste", "lsq"):
            def run_qi():
                x.grad = None
                thr.grad = None
                out = torch.ops.qi.symmetric_quant(x, thr, 8, True, axis, mode, 0.01)
                out.backward(g)

            def run_torch():
                x.grad = None
                scale.grad = None
                if axis is None:
                    out = torch._fake_quantize_learnable_per_tensor_affine(
                        x, scale, zp, -128, 127, 1.0)
                else:
                    out = torch._fake_quantize_learnable_per_channel_affine(
                        x, scale, zp, axis, -128, 127, 1.0)
                out.backward(g)

            rows.append(dict(case=label, quantizer=f"{mode.upper()} fwd+bwd", threads=threads,
                             qi_s=median_seconds(run_qi, repeats), copy_s=copy,
                             torch_s=median_seconds(run_torch, repeats), mct_s=None))
    return rows


def per_call_rows(threads, repeats):
    x = torch.empty(1000).uniform_(-1.5, 1.5)
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False)
    text = q.to_json()
    calls = 2000

    def loop_qi():
        for _ in range(calls):
            torch.ops.qi.fake_quant(x, text)

    def loop_qi_object():
        for _ in range(calls):
            q(x)

    def loop_torch():
        for _ in range(calls):
            torch.fake_quantize_per_tensor_affine(x, 1.0 / 128, 0, -128, 127)

    y = torch.empty_like(x)

    def loop_copy():
        for _ in range(calls):
            y.copy_(x)

    copy = median_seconds(loop_copy, repeats) / calls
    torch_t = median_seconds(loop_torch, repeats) / calls
    return [dict(case="1k per call", quantizer="torch.ops.qi.fake_quant", threads=threads,
                 qi_s=median_seconds(loop_qi, repeats) / calls, copy_s=copy, torch_s=torch_t,
                 mct_s=None),
            dict(case="1k per call", quantizer="quantizer object q(x)", threads=threads,
                 qi_s=median_seconds(loop_qi_object, repeats) / calls, copy_s=copy,
                 torch_s=torch_t, mct_s=None)]


def qat_step_rows(build_dir):
    """The qi-demo CNN's QAT step (C++ front end) against its float step, from qi_bench_qat."""
    exe = os.path.join(build_dir, "bench", "qi_bench_qat")
    if not os.path.exists(exe):
        print(f"  (skipping the QAT step: {exe} is not built)", file=sys.stderr)
        return []
    out = subprocess.run([exe, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def fmt(v):
    return "-" if v is None else f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", default="bench-results.json")
    ap.add_argument("--build-dir", default=os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "build"))
    args = ap.parse_args()

    rows = []
    for t in args.threads:
        torch.set_num_threads(t)
        print(f"[bench] {t} thread(s)...", file=sys.stderr)
        rows += forward_rows(t, args.repeats)
        rows += backward_rows(t, args.repeats)
        rows += per_call_rows(t, args.repeats)
    rows += qat_step_rows(args.build_dir)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"torch {torch.__version__}; qi SIMD {qi._core.simd_target_name()}; "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '0')}")
    print("qi/base: qi's time over the baseline's (copy into a preallocated tensor; for the QAT "
          "step, the float step); torch/qi and mct/qi: how many times faster qi is")
    print(f"{'case':31} {'quantizer':26} {'thr':>3} {'qi ms':>9} {'qi/base':>8} "
          f"{'torch/qi':>9} {'mct/qi':>8}")
    for r in rows:
        qi_s = r["qi_s"]
        print(f"{r['case']:31} {r['quantizer']:26} {r['threads']:>3} {qi_s * 1e3:9.3f} "
              f"{fmt(qi_s / r['copy_s'] if r.get('copy_s') else None):>8} "
              f"{fmt(r['torch_s'] / qi_s if r.get('torch_s') else None):>9} "
              f"{fmt(r['mct_s'] / qi_s if r.get('mct_s') else None):>8}")
    with open(args.json, "w") as f:
        json.dump(dict(torch=torch.__version__, simd=qi._core.simd_target_name(), rows=rows), f,
                  indent=1)
    print(f"[bench] wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
