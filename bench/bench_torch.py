# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Side-by-side CPU benchmark of the calls users make: qi's quantizers against a clone and a
copy of the same tensor (the memory-bandwidth limit), PyTorch's own fake-quant ops and
mct-quantizers, in one run, at 1 thread and at torch's default thread count.

    .venv/bin/python bench/bench_torch.py [--repeats 10] [--max-log2 26] [--thp] [--json F]

What each row measures (the table says which):
  * alloc: `q(x)` (the quantizer object, what wrappers and holders call), output allocated by the
    call, against `x.clone()` (same allocation, plain copy);
  * out: `torch.ops.qi.fake_quant.out` into a preallocated tensor against `y.copy_(x)`;
  * wrapper / holder: a wrapped Linear's forward against the float Linear's, an activation
    holder's forward against `x.clone()`;
  * fwd+bwd: an STE or LSQ op's forward and backward (autograd, output and gradients allocated)
    against a clone (one allocating pass) and against `copy_` (preallocated), once as
    `q(x).backward(dy)` with dy held by the caller (autograd copies STE's dx into x.grad) and
    once as `torch.autograd.grad(q(x), (x, t), dy)` (nothing accumulated, as inside a network,
    where STE's dx is the upstream gradient itself); the formats' rows
    (FLOAT E4M3, MXFP4, NVFP4) call a trainable quantizer object, `q(w, training=True)`, and its
    backward, as a QAT step does, FLOAT E4M3 also against PyTorch's eager STE idiom
    (`(q - u).detach() + u` around a float8 cast, its scale learned by autograd);
  * per call: 1,000 elements, time per call, against a clone of the same tensor.
Each figure is the median of --repeats runs, qi's and its baseline's runs interleaved so that
drift on a shared machine hits both. The environment is the default one: no
THP_MEM_ALLOC_ENABLE (fresh outputs pay first-touch page faults, as in users' programs); --thp
turns PyTorch's transparent-huge-page allocation on for comparison."""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # mct-quantizers imports TensorFlow
if "--thp" in sys.argv:  # must be set before torch is imported
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
import platform
import statistics
import subprocess
import time

import numpy as np
import torch

import quantizers_infrastructure as qi
import quantizers_infrastructure.pytorch  # noqa: F401  (loads torch.ops.qi)


def paired_medians(fn_a, fn_b, repeats):
    """Median seconds of fn_a and of fn_b, their runs interleaved (after one warm-up each)."""
    fn_a()
    fn_b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn_a()
        t1 = time.perf_counter()
        fn_b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return statistics.median(ta), statistics.median(tb)


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


def forward_rows(threads, repeats, max_log2):
    """Every inferable quantizer: allocating q(x) against clone, .out against copy_, and the
    torch and mct-quantizers twins (mct at 2^24 and on the weight shapes only: it is slow)."""
    rows = []
    shapes = [(f"2^{k} per-tensor", (1 << k,), None) for k in range(10, max_log2 + 1, 4)]
    if max_log2 >= 24 and (max_log2 - 10) % 4:
        shapes.append((f"2^{max_log2} per-tensor", (1 << max_log2,), None))
    # Per channel from 1k to 2^26 elements too (mct-quantizers only up to 2^24: it is slow).
    shapes += [("32x32 axis 0", (32, 32), 0),
               ("256x256 axis 0", (256, 256), 0),
               ("512x512x3x3 axis 0", (512, 512, 3, 3), 0),
               ("4096x4096 axis 0", (4096, 4096), 0),
               ("64x256x28x28 axis 1", (64, 256, 28, 28), 1)]
    if max_log2 >= 26:
        shapes.append(("8192x8192 axis 0", (8192, 8192), 0))
    for label, shape, axis in shapes:
        x = torch.empty(shape).uniform_(-1.5, 1.5)
        y = torch.empty_like(x)
        numel = x.numel()
        reps = repeats if numel <= (1 << 24) else max(3, repeats // 2)
        for name, qcls, mcls, kw in make_cases(None if axis is None else shape[axis]):
            if axis is not None:
                kw = dict(kw, channel_axis=axis)
                mkw = dict(kw, input_rank=len(shape)) if "LUT" in name else dict(kw)
            else:
                mkw = dict(kw)
            q = qcls(**kw)
            text = q.to_json()
            t_alloc, t_clone = paired_medians(lambda: q(x), lambda: x.clone(), reps)
            t_out, t_copy = paired_medians(
                lambda: torch.ops.qi.fake_quant.out(x, text, out=y), lambda: y.copy_(x), reps)
            twin = torch_twin(name, q, x, axis)
            t_torch = median_seconds(twin, reps) if twin else None
            t_mct = None
            if numel == (1 << 24) or (axis is not None and numel <= (1 << 24)):
                try:
                    m = mcls(**mkw)
                    with torch.no_grad():
                        t_mct = median_seconds(lambda: m(x), max(3, reps // 3))
                except Exception as e:  # noqa: BLE001 - report, do not hide
                    print(f"  mct-quantizers {name}: {e}", file=sys.stderr)
            rows.append(dict(kind="alloc", case=label, quantizer=name, threads=threads,
                             qi_s=t_alloc, base_s=t_clone, base="clone", torch_s=t_torch,
                             mct_s=t_mct))
            rows.append(dict(kind="out", case=label, quantizer=name, threads=threads,
                             qi_s=t_out, base_s=t_copy, base="copy_", torch_s=None, mct_s=None))
    return rows


def layer_rows(threads, repeats):
    """A wrapped Linear's forward under no_grad (weight quantized per channel; cached, and
    re-quantized at every call) against the float Linear's, and an activation holder against a
    clone."""
    rows = []
    for n_in, n_out, batch in [(1024, 1024, 8), (4096, 4096, 8)]:
        layer = torch.nn.Linear(n_in, n_out)
        wq = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0] * n_out,
                                                  per_channel=True, channel_axis=0)
        wrapped = qi.PytorchQuantizationWrapper(layer, {"weight": wq})
        x = torch.randn(batch, n_in)
        for cached in (True, False):
            # Default: under no_grad the wrapper reuses the quantized weight while the weight is
            # unchanged; without the cache it re-quantizes at every call (as in training).
            wrapped.cache_quantized_weights = cached
            with torch.no_grad():
                t_w, t_f = paired_medians(lambda: wrapped(x), lambda: layer(x), repeats)
            how = "weight cached (default, no_grad)" if cached else "re-quantized every call"
            rows.append(dict(kind="wrapper", case=f"Linear {n_in}x{n_out}, batch {batch}, {how}",
                             quantizer="PytorchQuantizationWrapper", threads=threads, qi_s=t_w,
                             base_s=t_f, base="float layer", torch_s=None, mct_s=None))
    holder = qi.PytorchActivationQuantizationHolder(
        qi.ActivationUniformInferableQuantizer(num_bits=8, min_range=[-1.0], max_range=[1.0]))
    for label, shape in [("8x64x56x56", (8, 64, 56, 56)), ("64x256x28x28", (64, 256, 28, 28))]:
        x = torch.empty(shape).uniform_(-1.5, 1.5)
        with torch.no_grad():
            t_h, t_c = paired_medians(lambda: holder(x), lambda: x.clone(), repeats)
        rows.append(dict(kind="holder", case=label, quantizer="ActivationQuantizationHolder",
                         threads=threads, qi_s=t_h, base_s=t_c, base="clone", torch_s=None,
                         mct_s=None))
    return rows


def backward_rows(threads, repeats):
    """STE/LSQ forward+backward (the op under autograd, as the trainable quantizers call it)
    against a clone and a copy_, and against torch's learnable fake quant, two ways:
      * `.backward(held dy)`: `q(x).backward(dy)` with dy held by the caller, so autograd cannot
        steal STE's pass-through dx and copies it into a fresh x.grad (PyTorch's allocation);
      * `autograd.grad(dy)`: `torch.autograd.grad(q(x), (x, t), dy)`, q's own forward and
        backward with nothing accumulated: dx is handed on as inside a network, where STE's dx
        is the upstream gradient itself and x.grad (a weight's) steals a fresh one."""
    rows = []
    for label, shape, axis in [("2^24 per-tensor", (1 << 24,), None),
                               ("512x512x3x3 axis 0", (512, 512, 3, 3), 0),
                               ("64x256x28x28 axis 1", (64, 256, 28, 28), 1)]:
        x = torch.empty(shape).uniform_(-1.5, 1.5).requires_grad_()
        g = torch.ones(shape)
        y = torch.empty(shape)
        xd = x.detach()
        t_copy = median_seconds(lambda: y.copy_(xd), repeats)
        c = 1 if axis is None else shape[axis]
        thr = torch.full((c,), 1.0, requires_grad=True)
        scale = torch.full((c,), 1.0 / 128, requires_grad=True)
        zp = torch.zeros(c)

        def torch_out():
            if axis is None:
                return torch._fake_quantize_learnable_per_tensor_affine(x, scale, zp, -128, 127,
                                                                        1.0)
            return torch._fake_quantize_learnable_per_channel_affine(x, scale, zp, axis, -128,
                                                                     127, 1.0)

        for mode in ("ste", "lsq"):
            def qi_out():
                return torch.ops.qi.symmetric_quant(x, thr, 8, True, axis, mode, 0.01)

            def held(out_fn, param):
                def run():
                    x.grad = None
                    param.grad = None
                    out_fn().backward(g)
                return run

            def grad(out_fn, param):
                return lambda: torch.autograd.grad(out_fn(), (x, param), g)

            for how, wrap in ((".backward(held dy)", held), ("autograd.grad(dy)", grad)):
                t_qi, t_clone = paired_medians(wrap(qi_out, thr), lambda: xd.clone(), repeats)
                rows.append(dict(kind="fwd+bwd", case=label,
                                 quantizer=f"{mode.upper()} sym {how}", threads=threads,
                                 qi_s=t_qi, base_s=t_clone, base="clone", copy_s=t_copy,
                                 torch_s=median_seconds(wrap(torch_out, scale), repeats),
                                 mct_s=None))
    return rows


def format_backward_rows(threads, repeats):
    """The trainable formats as a QAT step calls them: q(w, training=True) of the public class,
    then backward into the weight and the learned scales."""
    from quantizers_infrastructure import pytorch as qp
    QM = qi.QuantizationMethod
    rows = []
    w = torch.empty(512, 512, 3, 3).uniform_(-0.5, 0.5)
    w2 = torch.empty(1024, 4096).uniform_(-0.5, 0.5)  # a Linear weight, blocks along its input
    amax = w.abs().amax(dim=(1, 2, 3))
    s0 = (amax / 448).tolist()
    t0 = float(w2.abs().max()) / (6 * 448)
    cases = [
        ("512x512x3x3 axis 0", w, "STEFloatWeightQATQuantizer", "STE FLOAT E4M3 per-ch",
         QM.FLOAT, 8, {"scale": s0, "ebits": 4}),
        ("512x512x3x3 axis 0", w, "LSQFloatWeightQATQuantizer", "LSQ FLOAT E4M3 per-ch",
         QM.FLOAT, 8, {"scale": s0, "ebits": 4}),
        ("1024x4096 blocks 32", w2, "LSQFloatWeightQATQuantizer", "LSQ MXFP4 pre-scale",
         QM.MX, 4, {"block_axis": 1, "ebits": 2}),
        ("1024x4096 blocks 16", w2, "STEFloatWeightQATQuantizer", "STE NVFP4",
         QM.NVFP4, 4, {"block_axis": 1, "ebits": 2, "tensor_scale": t0}),
        ("1024x4096 blocks 16", w2, "LSQFloatWeightQATQuantizer", "LSQ NVFP4 block scales",
         QM.NVFP4, 4, {"block_axis": 1, "ebits": 2, "tensor_scale": t0}),
    ]
    for label, weight, cls, what, method, n_bits, params in cases:
        cfg = qi.TrainableQuantizerWeightsConfig(method, n_bits, params, True, 0, True)
        q = qp.TRAINABLE_QUANTIZER_CLASSES[cls](cfg)
        holder = torch.nn.Module()
        p = torch.nn.Parameter(weight.clone())
        holder.register_parameter("weight", p)
        q.initialize_quantization(p.shape, "weight", holder)
        learned = [v["var"] for v in q.quantizer_parameters.values() if v["var"].requires_grad]
        g = torch.ones_like(weight)
        y = torch.empty_like(weight)
        t_copy = median_seconds(lambda: y.copy_(weight), repeats)

        def run_qi():
            for v in [p] + learned:
                v.grad = None
            q(p, True).backward(g)

        torch_s = None
        if method == QM.FLOAT:
            lsq = cls.startswith("LSQ")  # STE weights keep their scales
            s = torch.tensor(s0).reshape(-1, 1, 1, 1).requires_grad_(lsq)

            def run_torch():
                p.grad = None
                s.grad = None
                u = p / s
                if lsq:  # hard clip: no gradient outside the range
                    u = torch.clamp(u, -448, 448)
                qv = torch.clamp(u, -448, 448).to(torch.float8_e4m3fn).float()
                ((qv - u).detach() + u).mul(s).backward(g)

            torch_s = median_seconds(run_torch, repeats)
        t_qi, t_clone = paired_medians(run_qi, lambda: weight.clone(), repeats)
        rows.append(dict(kind="fwd+bwd", case=label, quantizer=what, threads=threads, qi_s=t_qi,
                         base_s=t_clone, base="clone", copy_s=t_copy, torch_s=torch_s,
                         mct_s=None))
    return rows


def per_call_rows(threads, repeats):
    """1,000 elements: time per call of q(x) and of the op, against a clone (target: clone + 2 us)."""
    x = torch.empty(1000).uniform_(-1.5, 1.5)
    q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False)
    text = q.to_json()
    calls = 2000

    def loop(fn):
        def run():
            for _ in range(calls):
                fn()
        return run

    rows = []
    # A call through torch.ops (Python's OpOverloadPacket, then the dispatcher) costs PyTorch
    # itself a few microseconds more than a method call: the op's row is also measured against
    # torch.ops.aten.clone, the same path for a clone (base "aten.clone").
    for label, fn, base, base_fn in [
            ("quantizer object q(x)", lambda: q(x), "clone", x.clone),
            ("torch.ops.qi.fake_quant", lambda: torch.ops.qi.fake_quant(x, text), "clone",
             x.clone),
            ("torch.ops.qi.fake_quant", lambda: torch.ops.qi.fake_quant(x, text),
             "aten.clone", lambda: torch.ops.aten.clone(x))]:
        t_qi, t_base = paired_medians(loop(fn), loop(base_fn), repeats)
        t_torch = median_seconds(loop(lambda: torch.fake_quantize_per_tensor_affine(
            x, 1.0 / 128, 0, -128, 127)), repeats)
        rows.append(dict(kind="per call", case="1k per call", quantizer=label, threads=threads,
                         qi_s=t_qi / calls, base_s=t_base / calls, base=base,
                         torch_s=t_torch / calls, mct_s=None))
    return rows


def qat_step_rows(build_dir):
    """The qi-demo CNN's QAT step (C++ front end) against its float step, from qi_bench_qat."""
    exe = os.path.join(build_dir, "bench", "qi_bench_qat")
    if not os.path.exists(exe):
        print(f"  (skipping the QAT step: {exe} is not built)", file=sys.stderr)
        return []
    out = subprocess.run([exe, "--json"], check=True, capture_output=True, text=True).stdout
    rows = json.loads(out)
    for r in rows:  # its baseline is the float step
        r.update(kind="qat", base_s=r.pop("copy_s"), base="float step")
    return rows


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()],
                    help="thread counts (default: 1 and torch's default)")
    ap.add_argument("--max-log2", type=int, default=26,
                    help="largest per-tensor size, as a power of two (default 26)")
    ap.add_argument("--only", nargs="+", choices=["forward", "layers", "backward", "per-call",
                                                  "qat"],
                    help="run only these sections")
    ap.add_argument("--json", default="bench-results.json")
    ap.add_argument("--build-dir", default=os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "build"))
    args = ap.parse_args()
    want = set(args.only or ["forward", "layers", "backward", "per-call", "qat"])

    rows = []
    for t in dict.fromkeys(args.threads):
        torch.set_num_threads(t)
        print(f"[bench] {t} thread(s)...", file=sys.stderr)
        if "forward" in want:
            rows += forward_rows(t, args.repeats, args.max_log2)
        if "layers" in want:
            rows += layer_rows(t, args.repeats)
        if "backward" in want:
            rows += backward_rows(t, args.repeats)
            rows += format_backward_rows(t, args.repeats)
        if "per-call" in want:
            rows += per_call_rows(t, args.repeats)
    if "qat" in want:
        rows += qat_step_rows(args.build_dir)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"torch {torch.__version__}; qi SIMD {qi._core.simd_target_name()}; "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}")
    print("qi/base: qi's time over its baseline's (named in 'base'); fwd+bwd rows also give "
          "qi/copy_ (preallocated copy); per-call rows give qi - base in us; torch/qi and mct/qi: "
          "how many times faster qi is")
    print(f"{'kind':8} {'case':26} {'quantizer':28} {'thr':>3} {'qi ms':>9} {'base':>11} "
          f"{'qi/base':>8} {'extra':>9} {'torch/qi':>9} {'mct/qi':>8}")
    for r in rows:
        qi_s = r["qi_s"]
        base = r.get("base_s")
        if r.get("kind") == "per call":
            extra = f"+{(qi_s - base) * 1e6:.2f}us"
        elif r.get("copy_s"):
            extra = f"{qi_s / r['copy_s']:.2f}xcp"
        else:
            extra = ""
        print(f"{r.get('kind', 'qat'):8} {r['case']:26} {r['quantizer']:28} "
              f"{r.get('threads', '-'):>3} {qi_s * 1e3:9.4f} {r.get('base', 'float step'):>11} "
              f"{fmt(qi_s / base if base else None):>8} {extra:>9} "
              f"{fmt(r['torch_s'] / qi_s if r.get('torch_s') else None):>9} "
              f"{fmt(r['mct_s'] / qi_s if r.get('mct_s') else None):>8}")
    with open(args.json, "w") as f:
        json.dump(dict(torch=torch.__version__, simd=qi._core.simd_target_name(),
                       thp=os.environ.get("THP_MEM_ALLOC_ENABLE"), rows=rows), f, indent=1)
    print(f"[bench] wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
