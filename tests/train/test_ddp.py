"""Two-process CPU DDP (gloo) through torchrun's launcher: both ranks end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from braunet.model import load_checkpoint
from tests.train._shared import REPO, data_root


def test_two_process_gloo_training_keeps_ranks_identical(tmp_path):
    if not (data_root() / "totalseg_ct").is_dir():
        pytest.skip("shared data not found")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # 8 slices over 2 ranks with batch 2: 2 steps per epoch on each rank, 2 epochs
    assert (tmp_path / "rank0.txt").read_text().split() == ["2", "4", "8"]
    model, card = load_checkpoint(tmp_path)  # rank 0 wrote the best checkpoint, with its card
    assert card.training["world_size"] == 2 and card.training["steps"] == 4
    saved = model.state_dict()
    assert all(torch.equal(saved[k], rank0[k]) for k in saved)  # what rank 0 wrote is what both ranks hold
