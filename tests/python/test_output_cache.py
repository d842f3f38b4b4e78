# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""CPU outputs of 32 MiB or more that qi's torch ops allocate (q(x), fake_quant, quantize, the
trainable ops' outputs and LSQ's dx) come from a bounded cache of freed ones: the next output of
the same size reuses a freed block, already mapped, and the kernel rewrites all of it. At most
QI_OUTPUT_CACHE_MB (default 256) of freed blocks stay held; 0 turns the cache off."""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import quantizers_infrastructure as qi  # noqa: E402
import quantizers_infrastructure.pytorch  # noqa: E402,F401

_LARGE = 1 << 24  # 64 MiB of float32
_CACHE_OFF = os.environ.get("QI_OUTPUT_CACHE_MB") == "0"


def quantizer():
    return qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False)


def inputs(n, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.empty(n).uniform_(-1.5, 1.5, generator=g)


def reference(x, q):
    out = torch.full_like(x, float("nan"))
    torch.ops.qi.fake_quant.out(x, q.to_json(), out=out)
    return out


def same_bits(a, b):
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.skipif(_CACHE_OFF, reason="QI_OUTPUT_CACHE_MB=0")
def test_a_freed_output_is_reused_and_rewritten_whole():
    q = quantizer()
    x1, x2 = inputs(_LARGE, seed=1), inputs(_LARGE, seed=2) * 0.25
    y1 = q(x1)
    address = y1.data_ptr()
    del y1
    y2 = q(x2)
    assert y2.data_ptr() == address  # the freed block, not a fresh mapping
    assert same_bits(y2, reference(x2, q))  # nothing of x1's output is left in it


@pytest.mark.skipif(_CACHE_OFF, reason="QI_OUTPUT_CACHE_MB=0")
def test_memory_format_and_training_outputs():
    q = quantizer()
    x = inputs(_LARGE).reshape(16, 64, 128, 128).to(memory_format=torch.channels_last)
    for _ in range(2):  # a fresh block, then a reused one
        y = q(x)
        assert y.is_contiguous(memory_format=torch.channels_last) and y.stride() == x.stride()
        assert same_bits(y, reference(x, q))
        del y
    # LSQ's output and dx come from the cache too; the gradients keep their bits.
    thr = torch.tensor([1.0], requires_grad=True)
    xg = inputs(_LARGE).requires_grad_()
    g = inputs(_LARGE, seed=7)
    results = []
    for _ in range(2):
        out = torch.ops.qi.symmetric_quant(xg, thr, 8, True, None, "lsq", 0.01)
        dx, dthr = torch.autograd.grad(out, [xg, thr], g)
        results.append((out.detach().clone(), dx.clone(), dthr.clone()))
        del out, dx, dthr
    (o1, d1, t1), (o2, d2, t2) = results
    assert same_bits(o1, o2) and same_bits(d1, d2) and torch.equal(t1, t2)
    grid = torch.round(xg.detach() * 128)  # the 8-bit signed grid of threshold 1 (exact)
    inside = (grid >= -128) & (grid <= 127)
    assert torch.equal(d1, torch.where(inside, g, torch.zeros_like(g)))


_PROBE = r"""
import os, torch
import quantizers_infrastructure as qi, quantizers_infrastructure.pytorch
torch.set_num_threads(1)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
q = qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False)
xs = [torch.empty(1 << 24).uniform_(-1, 1) for _ in range(3)]
q(torch.empty(1000))  # first-call allocations out of the way
base = rss()
ys = [q(x) for x in xs]  # three 64 MiB outputs alive at once
del ys
print((rss() - base) / 2**20)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
@pytest.mark.parametrize("limit_mb,held_mb", [(None, 192), ("64", 64), ("0", 0)])
def test_the_cache_holds_at_most_its_limit(limit_mb, held_mb):
    # Resident memory after three 64 MiB outputs die: the blocks the cache kept (all three
    # under the default 256 MiB, one under 64, none when off).
    env = dict(os.environ)
    env.pop("QI_OUTPUT_CACHE_MB", None)
    if limit_mb is not None:
        env["QI_OUTPUT_CACHE_MB"] = limit_mb
    r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                       check=True)
    retained = float(r.stdout.split()[-1])
    assert abs(retained - held_mb) < 24, (limit_mb, retained)
