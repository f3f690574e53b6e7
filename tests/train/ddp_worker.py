"""Run by test_ddp.py under ``python -m torch.distributed.run --nproc_per_node 2``.

Trains the tiny preset on real CT slices with DDP (gloo on CPU) and saves every rank's final
weights to OUT/rank<R>.safetensors so the test can compare them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from braunet.train.datasets import prepare  # noqa: E402
from braunet.train.slices import load_volume_pair  # noqa: E402
from braunet.train.trainer import TrainConfig, train  # noqa: E402
from tests.train._shared import data_root, tiny_card, tiny_model  # noqa: E402


def main(out: Path) -> None:
    ct = data_root() / "totalseg_ct"
    card = tiny_card(9, "ct", name="ddp-test")
    slices = load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01sm_label_synapse8.nii.gz", num_classes=9,
                              slices=range(4, 28, 3))
    data = prepare(slices, card.preprocessing, 128, 9)
    rank = int(__import__("os").environ["RANK"])
    model = tiny_model(card, seed=100 + rank)  # different initial weights: DDP must broadcast rank 0's
    config = TrainConfig(epochs=2, batch_size=2, augment="ct", val_every=1, lr=2e-3, warmup_steps=2)
    result = train(model, card, data, data.subset([0, 4]), out, config, device="cpu")
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, str(out / f"rank{dist.get_rank()}.safetensors"))
    with open(out / f"rank{dist.get_rank()}.txt", "w") as handle:
        handle.write(f"{result.world_size} {result.steps} {len(data)}\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
