"""One rank of a 2-process gloo run of `engine.train` with the moving-average memory (test_targets).

argv: rank world port digest_dir. Writes rank<N>.sha256 / rank<N>.memory.sha256 and rank<N>.seen
(how many memory rows this rank's own batches touched)."""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_config  # noqa: E402
from simsiam.data import load_fashion_mnist  # noqa: E402
from simsiam.engine import train  # noqa: E402
from simsiam.testing.faults import WeightsDigest  # noqa: E402


def main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = tiny_config("train.epochs=1", "train.batch_size=16", "loss.target=moving_average",
                      "model.predictor=none")
    train(cfg, [WeightsDigest(out)], train_source=load_fashion_mnist("train", download=False), rank=rank,
          world_size=world, wrap_model=lambda m: DistributedDataParallel(m))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
