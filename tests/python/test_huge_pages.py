# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Outputs of 32 MiB or more that qi's torch ops allocate are advised onto transparent huge pages
before the kernel writes them (one page fault per 2 MiB instead of per 4 KiB); QI_HUGE_PAGES=0
turns the advice off. The advice shows as the `hg` flag of the output's mapping in
/proc/self/smaps; the values are the same bits either way."""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import quantizers_infrastructure as qi  # noqa: E402
import quantizers_infrastructure.pytorch  # noqa: E402,F401

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or
    not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"),
    reason="transparent huge pages are a Linux feature, not built into this kernel")

_LARGE = 1 << 24  # 64 MiB of float32
_SMALL = 1 << 20  # 4 MiB: below the advice's threshold

_PROBE = r"""
import sys, torch
import quantizers_infrastructure as qi, quantizers_infrastructure.pytorch
sys.path.insert(0, {here!r})
from test_huge_pages import advised, quantizer, inputs
x = inputs({n})
y = quantizer()(x)
print(int(advised(y)), int(torch.ops.qi.fake_quant(x, quantizer().to_json()).eq(y).all()))
torch.save(y, {out!r})
"""


def quantizer():
    return qi.WeightsSymmetricInferableQuantizer(num_bits=8, threshold=[1.0], per_channel=False)


def inputs(n):
    g = torch.Generator().manual_seed(5)
    return torch.empty(n).uniform_(-1.5, 1.5, generator=g)


def advised(t) -> bool:
    """Whether the mapping that holds the middle of t's data carries MADV_HUGEPAGE (`hg`)."""
    address = t.data_ptr() + t.numel() * t.element_size() // 2
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("VmFlags:"):
                return "hg" in line.split()[1:]
    raise AssertionError(f"no mapping holds address {address:#x}")


def _probe(tmp_path, n, env):
    out = tmp_path / "y.pt"
    code = _PROBE.format(here=os.path.dirname(os.path.abspath(__file__)), n=n, out=str(out))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True)
    flag, same = (int(v) for v in r.stdout.split())
    return bool(flag), bool(same), torch.load(out)


@pytest.mark.skipif(os.environ.get("QI_HUGE_PAGES") == "0", reason="QI_HUGE_PAGES=0")
@pytest.mark.parametrize("call", ["quantizer", "fake_quant", "quantize"])
def test_large_outputs_are_advised(call):
    q, x = quantizer(), inputs(_LARGE)
    if call == "quantizer":
        y = q(x)
    elif call == "fake_quant":
        y = torch.ops.qi.fake_quant(x, q.to_json())
    else:
        y = torch.ops.qi.quantize(x, quantizers_infrastructure.pytorch.plan_tensor(q),
                                  q.kernel_channel_axis, q.kernel_input_rank)
    assert advised(y)


def test_small_outputs_are_not_advised(tmp_path):
    # They come from the heap, whose mapping the advice must leave alone. Checked in a fresh
    # process: in a long one (the whole test suite) the heap's pages may carry the advice
    # already (PyTorch's THP_MEM_ALLOC_ENABLE, or a large output a raised mmap threshold put on
    # the heap), and a small output may land on them.
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env.pop("QI_HUGE_PAGES", None)
    flag, same, y = _probe(tmp_path, _SMALL, env)
    assert not flag and same
    assert torch.equal(y.view(torch.int32), quantizer()(inputs(_SMALL)).view(torch.int32))


def test_turned_off_by_the_environment_with_the_same_bits(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env.pop("QI_HUGE_PAGES", None)
    flag_on, same_on, y_on = _probe(tmp_path, _LARGE, env)
    env["QI_HUGE_PAGES"] = "0"
    flag_off, same_off, y_off = _probe(tmp_path, _LARGE, env)
    assert flag_on and not flag_off
    assert same_on and same_off
    assert torch.equal(y_on.view(torch.int32), y_off.view(torch.int32))
    assert torch.equal(y_on.view(torch.int32), quantizer()(inputs(_LARGE)).view(torch.int32))
