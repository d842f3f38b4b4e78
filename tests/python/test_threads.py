# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""One thread setting for the process: the numpy, torch and TensorFlow paths share one core
library, so qi.set_num_threads reaches all of them. Each case runs in a fresh interpreter (the
setting is process-wide)."""

import subprocess
import sys

import pytest

pytest.importorskip("torch")


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


def test_default_is_one_thread_per_core_without_torch():
    out = _run("import os, sys; import quantizers_infrastructure as qi; "
               "print('torch' in sys.modules, qi.get_num_threads() == (os.cpu_count() or 1))")
    assert out == "False True"


@pytest.mark.parametrize("torch_first", [True, False])
def test_default_follows_torch_once_torch_is_imported(torch_first):
    # Importing torch, before or after qi, loads qi's PyTorch front end, which hands qi's
    # threading to ATen.
    order = ("import torch; import quantizers_infrastructure as qi" if torch_first else
             "import quantizers_infrastructure as qi; import torch")
    out = _run(f"{order}; torch.set_num_threads(1); "
               "print('quantizers_infrastructure.pytorch' in __import__('sys').modules, "
               "qi.get_num_threads())")
    assert out == "True 1"


def test_set_num_threads_reaches_every_front_end():
    out = _run("import numpy as np, torch; import quantizers_infrastructure as qi; "
               "import quantizers_infrastructure.pytorch; qi.set_num_threads(1); "
               "q = qi.WeightsSymmetricInferableQuantizer(8, [1.0], False); "
               "x = np.random.default_rng(0).standard_normal(1 << 18).astype(np.float32); "
               "same = np.array_equal(q(x), q(torch.from_numpy(x)).numpy()); "
               "print(qi.get_num_threads(), torch.get_num_threads() >= 1, same)")
    assert out == "1 True True"


def test_set_num_threads_rejects_zero():
    import quantizers_infrastructure as qi
    with pytest.raises(ValueError, match="set_num_threads: num_threads must be >= 1, got 0"):
        qi.set_num_threads(0)
