"""Process set-up: the allocator keeps a step's freed memory, so training steps stop page-faulting it in again."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

# Measured in a fresh interpreter, as a training job runs: minor faults are counted per process, and threads left
# by earlier tests in the pytest process (thread pools, process-group helpers) fault pages of their own.
STEP_FAULTS = """
import resource, sys
import torch
sys.path.insert(0, "tests")
from conftest import tiny_config
from stages.model.transformer import Transformer, cross_entropy, seed_generator
from stages.training.optimizer import AdamW
from stages.training.runtime import keep_freed_memory

assert keep_freed_memory()
torch.set_num_threads(1)
cfg = tiny_config(vocab_size=2048, d_model=64, n_head=2, d_ff=256, max_seq_len=128)  # the default grid's s
model = Transformer(cfg)
model.init_weights(seed_generator(0))
optimizer = AdamW([{"params": list(model.parameters())}], lr=1e-3)
batch = torch.randint(0, cfg.vocab_size, (4, 129), generator=torch.Generator().manual_seed(0))


def step():
    loss = cross_entropy(model(batch[:, :-1]).logits, batch[:, 1:])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc mallopt")
def test_training_steps_reuse_their_freed_memory():
    repo = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", STEP_FAULTS], capture_output=True, text=True, cwd=repo, check=True)
    faults = float(res.stdout.strip())
    assert faults < 100, faults  # glibc's defaults: ~1,400 minor faults per step of this shape
