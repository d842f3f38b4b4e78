# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""QAT side by side: qi, torchao and Brevitas on the same ResNet-style CNN, data and budget.

    scripts/qi bench peers [args]                  # makes .venv-bench (Brevitas), then runs this
    .venv-bench/bin/python bench/bench_qat_peers.py [--float-epochs 2] [--qat-epochs 1] ...
    .venv/bin/python bench/bench_qat_peers.py --quick --libs qi     # seconds, qi only

What it does, in one process and one thread count (--threads, default 1):
  1. trains the float model (a ResNet-8-style CNN: a 3x3 stem and three basic blocks of width
     w, 2w, 4w, batch norms, global average pooling, a linear classifier) on Fashion-MNIST for
     --float-epochs: SGD with momentum, cosine learning rate;
  2. for each config (W4A8, W4A4, W2A2) and each library, starts from that float model and trains
     --qat-epochs more with the library's QAT flow, the same optimizer, learning-rate schedule,
     batch size, batch order and seed; the float baseline continues the float model for the
     same --qat-epochs with the same schedule, so it has trained as many epochs in total;
  3. prints test accuracy and the median time of a training step (forward, loss, backward,
     optimizer step; after the first few steps) for each (library, config) and the float
     baseline, with each step time over the float step's. A run whose training step raises
     (or whose loss stops being finite) is reported as failed at that step; the others go on.

The libraries, each through its documented flow, with per-channel symmetric weights and
per-tensor activations on the outputs that qi's prepare_qat quantizes (each conv's output after
its batch norm and ReLU, each residual sum after its ReLU, the downsampling convs'; not the
network input, not the logits):
  * qi: quantizers_infrastructure.pytorch.prepare_qat with the "w4a8_lsq" preset (LSQ weights
    and activations, started by MSE calibration on --calib-batches training batches, batch norms
    folded into the convolutions first), the bit widths changed in the config; convert() before
    the test. "qi-ste" is the same with STE activation quantizers ("training": "STE");
    "qi-bn" is qi with prepare_qat(..., batch_norm="train"): the batch norms train with batch
    statistics (the weights quantized folded with their running statistics) and are folded at
    convert().
  * torchao 0.11: FakeQuantizeConfig / FakeQuantizer, the QAT API of that release. Its
    quantize_(model, IntXQuantizationAwareTrainingConfig(...)) swaps nn.Linear and nn.Embedding
    only, and its activation fake quantizer supports per-token asymmetric scales only; so the
    linear layer goes through quantize_, the convolutions' weights through the same
    FakeQuantizer (per channel on the weight viewed as [out, in*kh*kw]) and the activations
    through FakeQuantizer on the tensor viewed as one token (one asymmetric scale per tensor).
    Scales are dynamic (min/max of each batch; range learning is not implemented in 0.11);
    batch norms stay unfolded.
  * Brevitas 0.11: the model built from brevitas.nn layers (QuantConv2d / QuantLinear with
    Int8WeightPerChannelFloat at the weight bit width, QuantReLU with Uint8ActPerTensorFloat and
    QuantIdentity with Int8ActPerTensorFloat at the activation bit width), the float weights
    loaded, activation scales initialized with brevitas.graph.calibrate.calibration_mode on the
    same calibration batches as qi, then learned; batch norms stay unfolded.

Data: the official Fashion-MNIST split (60,000 training and 10,000 test images) from Debian's
dataset-fashion-mnist package, which scripts/qi setup installs. Brevitas is installed only in
.venv-bench (requirements-bench.txt); a library that is not importable is an error unless --libs
leaves it out."""

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
from pytorch_fashion_mnist import DATA, load_split  # noqa: E402  (the examples' loader)

CONFIGS = {"w4a8": (4, 8), "w4a4": (4, 4), "w2a2": (2, 2)}
LIBS = ("qi", "torchao", "brevitas", "qi-ste", "qi-bn")
WARMUP_STEPS = 5  # steps left out of the step-time median (allocations, lazy initialization)


# ---- the model: one definition, each library's layers -------------------------------------------

class FloatLayers:
    """Plain PyTorch layers; a quantization site is an identity."""

    def conv(self, cin, cout, k, stride):
        return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)

    def linear(self, cin, cout):
        return nn.Linear(cin, cout)

    def relu(self):  # an activation followed by a quantization site
        return nn.ReLU()

    def signed_site(self):  # a quantization site on a signed tensor (a block's branch output)
        return nn.Identity()


class Block(nn.Module):
    """A ResNet basic block: conv-bn-relu, conv-bn, plus the (downsampled) input, relu."""

    def __init__(self, layers, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = layers.conv(cin, cout, 3, stride), nn.BatchNorm2d(
            cout), layers.relu()
        self.conv2, self.bn2, self.q2 = layers.conv(cout, cout, 3, 1), nn.BatchNorm2d(
            cout), layers.signed_site()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(layers.conv(cin, cout, 1, stride), nn.BatchNorm2d(cout),
                                      layers.signed_site())
        self.relu2 = layers.relu()

    def forward(self, x):
        y = self.q2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.relu2(y + (x if self.down is None else self.down(x)))


class Net(nn.Module):
    """ResNet-8-style CNN for 1x28x28 inputs: stem, three blocks (w, 2w, 4w), pool, linear."""

    def __init__(self, layers, width):
        super().__init__()
        self.conv, self.bn, self.relu = layers.conv(1, width, 3, 1), nn.BatchNorm2d(
            width), layers.relu()
        self.layer1 = Block(layers, width, width, 1)
        self.layer2 = Block(layers, width, 2 * width, 2)
        self.layer3 = Block(layers, 2 * width, 4 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = layers.linear(4 * width, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.relu(self.bn(self.conv(x))))))
        return self.fc(torch.flatten(self.pool(x), 1))


def from_float(layers, float_model, width):
    """The Net built from `layers`, holding float_model's weights and batch-norm statistics.
    Only quantizer parameters may be missing from the float state."""
    model = Net(layers, width)
    result = model.load_state_dict(float_model.state_dict(), strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"unexpected float keys: {result.unexpected_keys}")
    float_keys = set(float_model.state_dict())
    unloaded = [k for k in model.state_dict() if k not in float_keys and
                k.rsplit(".", 1)[-1] in ("weight", "bias", "running_mean", "running_var")
                and "quant" not in k]
    if unloaded:
        raise RuntimeError(f"float weights not loaded: {unloaded}")
    return model


# ---- the libraries' QAT models ------------------------------------------------------------------

QI_WEIGHTS = {}  # --qi-weights: changes to the preset's weights spec for qi's rows


def prepare_qi(float_model, w_bits, a_bits, calib, width, act_training="LSQ",
               batch_norm="fold"):
    import quantizers_infrastructure as qi
    import quantizers_infrastructure.pytorch as qp
    cfg = qi.ModelQuantizationConfig("w4a8_lsq", weights=dict(QI_WEIGHTS, n_bits=w_bits),
                                     activations={"n_bits": a_bits, "training": act_training},
                                     overrides=[{"name": "fc", "activations": None}])
    return qp.prepare_qat(float_model, cfg, calib, progress=False, batch_norm=batch_norm)


def prepare_qi_ste(float_model, w_bits, a_bits, calib, width):
    """qi with the preset's LSQ weights and STE activation quantizers."""
    return prepare_qi(float_model, w_bits, a_bits, calib, width, act_training="STE")


def finish_qi(model):
    import quantizers_infrastructure.pytorch as qp
    return qp.convert(model)


_TORCH_INT = {2: "int2", 4: "int4", 8: "int8"}


def prepare_torchao(float_model, w_bits, a_bits, calib, width):
    from torchao.quantization import quantize_
    from torchao.quantization.qat import FakeQuantizeConfig, IntXQuantizationAwareTrainingConfig
    # The module FakeQuantizedLinear applies; 0.11 exports it from this submodule only.
    from torchao.quantization.qat.fake_quantizer import FakeQuantizer

    def dtype(bits):
        return getattr(torch, _TORCH_INT[bits])

    weight_cfg = FakeQuantizeConfig(dtype(w_bits), "per_channel", is_symmetric=True)
    act_cfg = FakeQuantizeConfig(dtype(a_bits), "per_token", is_symmetric=False)

    class ActivationFakeQuant(nn.Module):
        """torchao's FakeQuantizer on the whole tensor as one token: one asymmetric scale and
        zero point per tensor, from the batch's min and max."""

        def __init__(self):
            super().__init__()
            self.fq = FakeQuantizer(act_cfg)

        def forward(self, x):
            return self.fq(x.reshape(1, -1)).reshape(x.shape)

    class FakeQuantizedConv2d(nn.Conv2d):
        """Conv2d whose weight goes through torchao's FakeQuantizer, per output channel."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.weight_fake_quantizer = FakeQuantizer(weight_cfg)

        def forward(self, x):
            w = self.weight_fake_quantizer(self.weight.flatten(1)).reshape(self.weight.shape)
            return self._conv_forward(x, w, self.bias)

    class Layers(FloatLayers):
        def conv(self, cin, cout, k, stride):
            return FakeQuantizedConv2d(cin, cout, k, stride, k // 2, bias=False)

        def relu(self):
            return nn.Sequential(nn.ReLU(), ActivationFakeQuant())

        def signed_site(self):
            return ActivationFakeQuant()

    model = from_float(Layers(), float_model, width)
    # The linear classifier: torchao's own QAT transform (weights only, as in the other flows).
    # FakeQuantizedLinear reads the config's group_size, which 0.11 refuses for "per_channel";
    # one group of in_features per row is the same per-channel quantization.
    linear_cfg = FakeQuantizeConfig(dtype(w_bits), group_size=model.fc.in_features,
                                    is_symmetric=True)
    quantize_(model, IntXQuantizationAwareTrainingConfig(activation_config=None,
                                                         weight_config=linear_cfg))
    return model.train()


def prepare_brevitas(float_model, w_bits, a_bits, calib, width):
    import brevitas.nn as qnn
    from brevitas.graph.calibrate import calibration_mode
    from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerChannelFloat,
                                Uint8ActPerTensorFloat)

    class Layers(FloatLayers):
        def conv(self, cin, cout, k, stride):
            return qnn.QuantConv2d(cin, cout, k, stride, k // 2, bias=False,
                                   weight_quant=Int8WeightPerChannelFloat,
                                   weight_bit_width=w_bits)

        def linear(self, cin, cout):
            return qnn.QuantLinear(cin, cout, bias=True, weight_quant=Int8WeightPerChannelFloat,
                                   weight_bit_width=w_bits)

        def relu(self):
            return qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=a_bits)

        def signed_site(self):
            return qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=a_bits)

    model = from_float(Layers(), float_model, width)
    # Activation scales from the same calibration batches as qi's (Brevitas's calibration mode:
    # statistics collected with quantization off, then the learned scales start from them).
    model.eval()
    with torch.no_grad(), calibration_mode(model):
        for x in calib:
            model(x)
    return model.train()


def prepare_qi_bn(float_model, w_bits, a_bits, calib, width):
    """qi with the batch norms trained and folded at convert."""
    return prepare_qi(float_model, w_bits, a_bits, calib, width, batch_norm="train")


PREPARE = {"qi": prepare_qi, "qi-ste": prepare_qi_ste, "qi-bn": prepare_qi_bn,
           "torchao": prepare_torchao, "brevitas": prepare_brevitas}
FINISH = {"qi": finish_qi, "qi-ste": finish_qi, "qi-bn": finish_qi}


def library_version(lib):
    if lib.startswith("qi"):
        import quantizers_infrastructure as qi
        return qi.__version__
    return __import__(lib).__version__


# ---- training and test --------------------------------------------------------------------------

class Data:
    """Fashion-MNIST, official split, normalized (the examples' loader)."""

    def __init__(self, quick):
        self.x_train, self.y_train = load_split("train")
        self.x_test, self.y_test = load_split("t10k")
        if quick:  # a fixed, class-mixed subset of the test set
            self.x_test, self.y_test = self.x_test[:2000], self.y_test[:2000]

    def batches(self, batch, seed, first_epoch=0):
        """Training batches, forever: epoch e in the order of torch.randperm seeded by
        (seed, e); every run gets the same sequence."""
        epoch = first_epoch
        while True:
            g = torch.Generator().manual_seed(seed * 1000 + epoch)
            order = torch.randperm(len(self.x_train), generator=g)
            for i in range(0, len(order) - batch + 1, batch):
                j = order[i:i + batch]
                yield self.x_train[j], self.y_train[j]
            epoch += 1


def sgd_step(model, opt, x, y):
    """One training step, the one timed: forward, loss, backward, optimizer step."""
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


class TrainingFailed(RuntimeError):
    def __init__(self, step, error):
        super().__init__(f"step {step}: {type(error).__name__}: {str(error).splitlines()[0]}")


def train(model, data, steps, lr, batch, seed, first_epoch):
    """SGD (momentum 0.9, no weight decay) with a cosine learning rate from lr to 0 over
    `steps`; returns the seconds of each step. An error in a step raises TrainingFailed naming
    the step."""
    torch.manual_seed(seed)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                          momentum=0.9)
    model.train()
    times = []
    it = data.batches(batch, seed, first_epoch)
    for step in range(steps):
        x, y = next(it)
        for g in opt.param_groups:
            g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / steps))
        t0 = time.perf_counter()
        try:
            loss = sgd_step(model, opt, x, y)
        except Exception as e:  # noqa: BLE001  (the library's error ends this run only)
            raise TrainingFailed(step, e) from e
        times.append(time.perf_counter() - t0)
        if not math.isfinite(loss.item()):
            raise TrainingFailed(step, FloatingPointError(f"loss became {loss.item()}"))
    return times


@torch.no_grad()
def accuracy(model, data):
    model.eval()
    correct = 0
    for i in range(0, len(data.x_test), 1000):
        correct += int((model(data.x_test[i:i + 1000]).argmax(1) ==
                        data.y_test[i:i + 1000]).sum())
    return correct / len(data.x_test)


def median_step(times):
    return statistics.median(times[WARMUP_STEPS:] if len(times) > 2 * WARMUP_STEPS else times)


# ---- step times, interleaved (--timing) ---------------------------------------------------------

def interleaved_step_times(args, data, float_model, calib, log):
    """Per config: the float model and every library's QAT model take turns, --rounds rounds of
    --round-steps training steps each, the order rotating every round, so that a change in the
    machine's load hits them alike. Returns {config: {name: median ms per step}}; a warm-up
    round is left out."""
    out = {}
    for cfg in args.configs:
        w_bits, a_bits = CONFIGS[cfg]
        models = {"float": copy.deepcopy(float_model)}
        for lib in args.libs:
            models[lib] = PREPARE[lib](float_model, w_bits, a_bits, calib, args.width)
        opts = {k: torch.optim.SGD([p for p in m.parameters() if p.requires_grad],
                                   lr=args.qat_lr, momentum=0.9) for k, m in models.items()}
        times = {k: [] for k in models}
        batches = data.batches(args.batch, args.seed)
        names = list(models)
        log(f"{cfg}: {args.rounds} rounds of {args.round_steps} steps of {', '.join(names)}")
        for r in range(args.rounds + 1):
            for k in names[r % len(names):] + names[:r % len(names)]:
                models[k].train()
                for _ in range(args.round_steps):
                    x, y = next(batches)
                    t0 = time.perf_counter()
                    sgd_step(models[k], opts[k], x, y)
                    if r > 0:
                        times[k].append(time.perf_counter() - t0)
        out[cfg] = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return out


def print_timing(timing, names):
    print("| config | " + " | ".join(f"{n} ms / step (x float)" for n in names) + " |")
    print("| --- |" + " --- |" * len(names))
    for cfg, ms in timing.items():
        print(f"| {cfg} | " + " | ".join(
            f"{ms[n]:.1f} ({ms[n] / ms['float']:.2f})" for n in names) + " |")


# ---- main ---------------------------------------------------------------------------------------

def goal_lines(rows, configs):
    """Per config: qi against the best peer accuracy and the fastest peer step."""
    out = []
    for cfg in configs:
        by_lib = {r["library"]: r for r in rows if r["config"] == cfg}
        q = by_lib.pop("qi", None)
        by_lib = {k: r for k, r in by_lib.items() if not k.startswith("qi") and not r["failed"]}
        if q is None or not by_lib:
            continue
        if q["failed"]:
            out.append(f"{cfg}: qi's run failed ({q['failed']}): missed")
            continue
        best = max(by_lib.values(), key=lambda r: r["accuracy"])
        fastest = min(by_lib.values(), key=lambda r: r["step_ms"])
        acc_ok = q["accuracy"] >= best["accuracy"]
        step_ok = q["step_ms"] < fastest["step_ms"]
        out.append(f"{cfg}: accuracy qi {100 * q['accuracy']:.2f}% vs best peer "
                   f"{100 * best['accuracy']:.2f}% ({best['library']}): "
                   f"{'met' if acc_ok else 'missed'}; step qi {q['step_ms']:.1f} ms vs fastest "
                   f"peer {fastest['step_ms']:.1f} ms ({fastest['library']}): "
                   f"{'met' if step_ok else 'missed'}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--libs", nargs="+", choices=LIBS, default=list(LIBS))
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--float-epochs", type=int, default=2, help="float training (default 2)")
    ap.add_argument("--qat-epochs", type=int, default=1,
                    help="QAT, and the float baseline's extra training (default 1)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--float-lr", type=float, default=0.05)
    ap.add_argument("--qat-lr", type=float, default=0.01)
    ap.add_argument("--width", type=int, default=8, help="channels of the first stage (default 8)")
    ap.add_argument("--calib-batches", type=int, default=8,
                    help="training batches that calibrate qi's and Brevitas's quantizers")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="batch 32, 120 float steps and 30 QAT steps per run, 2,000 test images: "
                         "a smoke run, its figures mean nothing")
    ap.add_argument("--timing", action="store_true",
                    help="no training and no accuracy: only step times, the float model and "
                         "each library's QAT model taking turns (--rounds x --round-steps)")
    ap.add_argument("--rounds", type=int, default=6, help="--timing rounds (default 6)")
    ap.add_argument("--round-steps", type=int, default=8,
                    help="--timing steps per model and round (default 8)")
    ap.add_argument("--qi-weights", type=json.loads, default={}, metavar="JSON",
                    help='changes to the weights spec of the qi rows, e.g. '
                         '\'{"calibration": "minmax"}\' or \'{"training": "STE"}\'')
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    QI_WEIGHTS.update(args.qi_weights)
    if QI_WEIGHTS:  # a bad change stops the run now, not after the float training
        import quantizers_infrastructure as qi
        try:
            qi.ModelQuantizationConfig("w4a8_lsq", weights=QI_WEIGHTS)
        except ValueError as e:
            sys.exit(f"--qi-weights: {e}")
    for lib in args.libs:
        try:
            library_version(lib)
        except ImportError as e:
            sys.exit(f"{lib} is not importable here ({e}); run 'scripts/qi bench peers', which "
                     f"makes .venv-bench with requirements-bench.txt, or leave it out of --libs")
    if not os.path.isdir(DATA):
        sys.exit(f"{DATA} is missing: install Debian's dataset-fashion-mnist (scripts/qi setup)")

    # Brevitas 0.11's layers warn at every step on torch 2.7 (named tensors, a plain-method
    # __torch_function__); the warnings say nothing about this run.
    warnings.filterwarnings("ignore", message="Named tensors and all their associated APIs")
    warnings.filterwarnings("ignore", message="Defining your `__torch_function__` as a plain")
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    if args.quick:
        args.batch = 32
    data = Data(args.quick)
    steps_per_epoch = len(data.x_train) // args.batch
    float_steps = 120 if args.quick else args.float_epochs * steps_per_epoch
    qat_steps = 30 if args.quick else args.qat_epochs * steps_per_epoch
    qat_first_epoch = args.float_epochs

    def log(*a):
        print(f"[peers {time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)

    versions = ", ".join(f"{lib} {library_version(lib)}" for lib in args.libs)
    if args.timing:
        torch.manual_seed(args.seed)
        float_model = Net(FloatLayers(), args.width).eval()  # untrained: timing only
        calib_batches = data.batches(args.batch, args.seed + 1)
        calib = [next(calib_batches)[0] for _ in range(args.calib_batches)]
        timing = interleaved_step_times(args, data, float_model, calib, log)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
              f"torch {torch.__version__} at {args.threads} thread(s); {versions}; load average "
              f"(1 min) {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
        print(f"step times, interleaved: batch {args.batch}, width {args.width}, {args.rounds} "
              f"rounds x {args.round_steps} steps per model after a warm-up round; median")
        print_timing(timing, ["float"] + list(args.libs))
        print(f"total run time: {time.perf_counter() - t_start:.0f} s")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(args=vars(args), torch=torch.__version__, versions=versions,
                               timing=timing), f, indent=1)
        return

    torch.manual_seed(args.seed)
    float_model = Net(FloatLayers(), args.width)
    log(f"float: {float_steps} steps")
    train(float_model, data, float_steps, args.float_lr, args.batch, args.seed, 0)
    float_model.eval()
    start_acc = accuracy(float_model, data)
    calib_batches = data.batches(args.batch, args.seed + 1)
    calib = [next(calib_batches)[0] for _ in range(args.calib_batches)]

    rows = []
    baseline = copy.deepcopy(float_model)
    log(f"float baseline: {qat_steps} more steps")
    times = train(baseline, data, qat_steps, args.qat_lr, args.batch, args.seed, qat_first_epoch)
    float_ms = 1e3 * median_step(times)
    rows.append(dict(library="float", config="-", accuracy=accuracy(baseline, data),
                     step_ms=float_ms, prepare_s=0.0, train_s=sum(times), failed=None))
    log(f"float baseline: {100 * rows[-1]['accuracy']:.2f}%, {float_ms:.1f} ms/step")
    for cfg in args.configs:
        w_bits, a_bits = CONFIGS[cfg]
        for lib in args.libs:
            log(f"{lib} {cfg}: prepare, {qat_steps} QAT steps, test")
            t0 = time.perf_counter()
            model = PREPARE[lib](float_model, w_bits, a_bits, calib, args.width)
            prepare_s = time.perf_counter() - t0
            try:
                times = train(model, data, qat_steps, args.qat_lr, args.batch, args.seed,
                              qat_first_epoch)
            except TrainingFailed as e:
                rows.append(dict(library=lib, config=cfg, accuracy=None, step_ms=None,
                                 prepare_s=prepare_s, train_s=None, failed=str(e)))
                log(f"{lib} {cfg}: FAILED at {e}")
                continue
            model = FINISH.get(lib, lambda m: m)(model)
            rows.append(dict(library=lib, config=cfg, accuracy=accuracy(model, data),
                             step_ms=1e3 * median_step(times), prepare_s=prepare_s,
                             train_s=sum(times), failed=None))
            log(f"{lib} {cfg}: {100 * rows[-1]['accuracy']:.2f}%, "
                f"{rows[-1]['step_ms']:.1f} ms/step")
    total_s = time.perf_counter() - t_start
    load_end = os.getloadavg()[0]

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"torch {torch.__version__} at {args.threads} thread(s); {versions}; load average "
          f"(1 min) {load_start:.1f} at the start, {load_end:.1f} at the end")
    print(f"budget: float {float_steps} steps, then {qat_steps} steps of QAT or of float "
          f"(baseline); batch {args.batch}, SGD momentum 0.9, cosine LR from {args.float_lr} / "
          f"{args.qat_lr}; width {args.width}; seed {args.seed}; test images {len(data.x_test)}"
          f"{' (--quick: figures mean nothing)' if args.quick else ''}")
    print(f"float model after its first {float_steps} steps: {100 * start_acc:.2f}%")
    print(f"| library | config | test accuracy % | ms / step | step / float step | "
          f"prepare s | training s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["failed"]:
            print(f"| {r['library']} | {r['config']} | failed at {r['failed']} | - | - | "
                  f"{r['prepare_s']:.2f} | - |")
            continue
        print(f"| {r['library']} | {r['config']} | {100 * r['accuracy']:.2f} | "
              f"{r['step_ms']:.1f} | {r['step_ms'] / float_ms:.2f} | {r['prepare_s']:.2f} | "
              f"{r['train_s']:.0f} |")
    for line in goal_lines(rows, args.configs):
        print(line)
    print(f"total run time: {total_s:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), torch=torch.__version__, versions=versions,
                           load_average=[load_start, load_end],
                           float_start_accuracy=start_acc, total_s=total_s, rows=rows), f,
                      indent=1)


if __name__ == "__main__":
    main()
