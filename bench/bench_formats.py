# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Side-by-side CPU benchmark of the block and low-precision float formats: each format's
forward against a copy of the same tensor (the memory-bandwidth limit) and against the
reference the tests compare it with bit for bit, eager and torch.compile'd, in one run.

    .venv/bin/python bench/bench_formats.py [--shapes 256x4096 2048x4096] [--repeats 5]
        [--threads 1 2] [--formats NAME ...] [--no-compile] [--compile-backend inductor]
        [--json F]

Per format and shape (a float32 [rows, cols] tensor, blocks and groups along the last axis):
  * q(x): the quantizer object, output allocated by the call, against `x.clone()`;
  * .out: `torch.ops.qi.fake_quant.out` into a preallocated tensor, against `y.copy_(x)`;
  * ref: the tests' reference (tests/python): torch's float8 casts for FP8, torchao 0.11's
    custom_fp_utils casts for FP6/FP4, torchao's `to_mx` (FLOOR) + `to_dtype` for the MX float
    formats, the definitions written in the tests for MXINT8 and NVFP4 (torchao 0.11 has
    neither), torch's `fake_quantize_per_channel_affine` on the [rows * groups, group] reshape
    for per-group integers; eager, and `torch.compile(dynamic=False)` after its compilation
    (compile seconds reported apart);
  * exact: whether qi's output equals the reference's bit for bit on the benchmark's data
    (NaN equal to NaN).
Each time is the median of --repeats runs; q(x) and .out are interleaved with their baselines
so that drift on a shared machine hits both. Ratios: qi/clone and out/copy_ (1.0 = a copy's
speed), ref/qi and compiled/qi (how many times faster qi is)."""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))  # the tests' references

import quantizers_infrastructure as qi  # noqa: E402
import quantizers_infrastructure.pytorch  # noqa: E402,F401  (loads torch.ops.qi)
from bench_torch import median_seconds, paired_medians  # noqa: E402

FLOAT_MAX = {"E4M3": 448.0, "E5M2": 57344.0, "E3M2": 28.0, "E2M3": 7.5, "E2M1": 6.0}


def float_case(fmt):
    from test_formats import reference

    def make(x):
        s = float(x.abs().max()) / FLOAT_MAX[fmt]  # per tensor: the largest value maps to max
        return (qi.ActivationFloatInferableQuantizer(fmt, s),
                lambda t: reference(t, fmt, np.float32(s)))
    return make


def mx_case(fmt):
    from test_mx import mxint8_reference, torchao_mx

    def make(x):
        ref = ((lambda t: mxint8_reference(t, 32, -1)) if fmt == "INT8"
               else (lambda t: torchao_mx(t, fmt, 32, -1)))
        return qi.ActivationMXInferableQuantizer(fmt, 32, -1), ref
    return make


def nvfp4_case(x):
    from test_nvfp4 import nvfp4_reference
    t = float(np.float32(float(x.abs().max()) / (448 * 6)))
    return (qi.ActivationNVFP4InferableQuantizer(t, -1),
            lambda v: nvfp4_reference(v, t, -1))


def group_case(bits, group):
    """Symmetric weights, per channel (rows) and group along the last axis; thresholds the
    groups' largest magnitudes."""
    def make(x):
        rows, cols = x.shape
        t = x.reshape(rows, cols // group, group).abs().amax(2).reshape(-1).clamp_min(1e-8)
        q = qi.WeightsSymmetricInferableQuantizer(bits, t.tolist(), True, 0, group_size=group,
                                                  group_axis=1)
        scale = torch.tensor(np.float32(t.double().numpy() / 2 ** (bits - 1)))
        zero = torch.zeros(scale.numel(), dtype=torch.int32)
        lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1

        def ref(v):
            flat = v.reshape(-1, group)
            return torch.fake_quantize_per_channel_affine(flat, scale, zero, 0, lo,
                                                          hi).reshape(v.shape)
        return q, ref
    return make


CASES = {
    "INT4 g32": group_case(4, 32),
    "INT8 g128": group_case(8, 128),
    "FP8 E4M3": float_case("E4M3"),
    "FP8 E5M2": float_case("E5M2"),
    "FP6 E3M2": float_case("E3M2"),
    "FP6 E2M3": float_case("E2M3"),
    "FP4 E2M1": float_case("E2M1"),
    "MXFP8 E4M3": mx_case("E4M3"),
    "MXFP8 E5M2": mx_case("E5M2"),
    "MXFP6 E3M2": mx_case("E3M2"),
    "MXFP6 E2M3": mx_case("E2M3"),
    "MXFP4 E2M1": mx_case("E2M1"),
    "MXINT8": mx_case("INT8"),
    "NVFP4": nvfp4_case,
}


def bits_equal(a, b):
    a, b = a.numpy(), b.numpy()
    nan = np.isnan(a) & np.isnan(b)
    return bool(np.all(nan | (a.view(np.int32) == b.view(np.int32))))


def data(rows, cols, seed=0):
    """Normal values whose magnitude changes per block of 32 (2^-8 to 2^8), as weights and
    activations of different channels do."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g)
    spread = torch.exp2(torch.randint(-8, 9, (rows, cols // 32, 1), generator=g).float())
    return (x.reshape(rows, cols // 32, 32) * spread).reshape(rows, cols).contiguous()


def measure(name, shape, threads, repeats, compile_backend):
    x = data(*shape)
    q, ref = CASES[name](x)
    text = q.to_json()
    y = torch.empty_like(x)
    exact = bits_equal(q(x), ref(x))  # also imports what the reference needs, before compiling
    compiled, compile_s = None, None
    if compile_backend:
        torch._dynamo.reset()
        compiled = torch.compile(ref, dynamic=False, backend=compile_backend)
        t0 = time.perf_counter()
        compiled(x)
        compile_s = time.perf_counter() - t0
        exact_compiled = bits_equal(q(x), compiled(x))
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        t_qi, t_clone = paired_medians(lambda: q(x), lambda: x.clone(), repeats)
        t_out, t_copy = paired_medians(lambda: torch.ops.qi.fake_quant.out(x, text, out=y),
                                       lambda: y.copy_(x), repeats)
        t_ref = median_seconds(lambda: ref(x), repeats)
        t_comp = median_seconds(lambda: compiled(x), repeats) if compiled else None
        rows.append(dict(format=name, shape="x".join(map(str, shape)), threads=t, qi_s=t_qi,
                         clone_s=t_clone, out_s=t_out, copy_s=t_copy, ref_s=t_ref,
                         compiled_s=t_comp, compile_s=compile_s, exact=exact,
                         exact_compiled=exact_compiled if compiled else None))
    return rows


def parse_shape(text):
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is ROWSxCOLS, got {text!r}") from None
    if rows < 1 or cols < 128 or cols % 128:
        raise argparse.ArgumentTypeError(f"ROWS must be >= 1 and COLS a multiple of 128 (the "
                                         f"largest group), got {text!r}")
    return rows, cols


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", type=parse_shape, nargs="+",
                    default=[(256, 4096), (2048, 4096)])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    ap.add_argument("--formats", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--no-compile", action="store_true",
                    help="skip the torch.compile'd reference (compiling takes seconds per case)")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile's backend for the reference (default inductor; the "
                         "smoke test uses eager, which only traces)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    threads = list(dict.fromkeys(args.threads))
    rows = []
    default_threads = torch.get_num_threads()
    try:
        for shape in args.shapes:
            for name in args.formats:
                print(f"[bench] {name} {shape[0]}x{shape[1]}...", file=sys.stderr)
                rows += measure(name, shape, threads, args.repeats,
                                None if args.no_compile else args.compile_backend)
    finally:
        torch.set_num_threads(default_threads)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; torch {torch.__version__}; qi SIMD "
          f"{qi._core.simd_target_name()}")
    print("qi/clone: q(x) over x.clone(); out/copy_: .out over y.copy_(x); ref/qi, "
          "compiled/qi: how many times faster qi's q(x) is than the reference, eager and "
          "torch.compile'd; exact: qi equals the reference bit for bit (eager, compiled)")
    print(f"| format | shape | threads | q(x) ms | qi/clone | out/copy_ | ref/qi | compiled/qi | "
          f"compile s | exact |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def f(v, digits=2):
        return "-" if v is None else f"{v:.{digits}f}"

    for r in rows:
        comp = r["compiled_s"]
        exact = "yes" if r["exact"] else "NO"
        if r["exact_compiled"] is not None:
            exact += ", yes" if r["exact_compiled"] else ", NO"
        print(f"| {r['format']} | {r['shape']} | {r['threads']} | {r['qi_s'] * 1e3:.3f} | "
              f"{f(r['qi_s'] / r['clone_s'])} | {f(r['out_s'] / r['copy_s'])} | "
              f"{f(r['ref_s'] / r['qi_s'], 1)} | {f(comp / r['qi_s'] if comp else None, 1)} | "
              f"{f(r['compile_s'], 1)} | {exact} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(torch=torch.__version__, simd=qi._core.simd_target_name(),
                           load=os.getloadavg(), rows=rows), fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
