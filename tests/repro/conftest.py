"""Fixtures for the reproduction-kit tests: a TransUNet folder built from the shared real CT, toy-scale overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Every recipe at toy scale: the test-sized preset at 64 px, 2 epochs, batches of 2.
TOY = {"model.preset": "tiny", "model.overrides.img_size": 64, "epochs": 2, "batch_size": 2}


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """Toy-sized models run fastest on one thread: with two, the spin-waits of intra-op threads
    cost more than the work, and on a shared 2-core machine a step went from 0.06 s to 0.5-7 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ct_pair(shared_data: Path) -> tuple[Path, Path]:
    """The shared real CT (122 x 101 x 30 voxels of 3 mm) and its Synapse-8 labels."""
    folder = shared_data / "totalseg_ct"
    return folder / "case01sm_ct.nii.gz", folder / "case01sm_label_synapse8.nii.gz"


@pytest.fixture(scope="session")
def transunet_root(tmp_path_factory: pytest.TempPathFactory, ct_pair: tuple[Path, Path]) -> Path:
    """A TransUNet folder written at test time: 6 organ-bearing training slices and the whole test volume."""
    from braunet.repro.transunet import write_transunet_case

    root = tmp_path_factory.mktemp("synapse") / "Synapse"
    write_transunet_case(*ct_pair, root, "case01sm", split="train", slices=[6, 10, 14, 18, 22, 26])
    write_transunet_case(*ct_pair, root, "case01sm", split="test")
    return root
