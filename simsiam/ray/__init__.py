"""Ray adapter: the core engine loop inside Ray Train V2 workers (DDP, S3 checkpoints, restarts)
and Ray Tune sweeps with ASHA and a collapse stopper.

  cluster.py   where and how: DistSettings, connecting to Ray, checkpoint storage, run/scaling configs
  worker.py    what every Ray Train worker runs: the engine, resumed from Ray's checkpoint
  pretrain.py  one data-parallel pretraining run (TorchTrainer)
  sweep.py     a grid of trials, each its own TorchTrainer (the Train V2 pattern)

The same code runs on a laptop (`ray.init()` starts a local cluster) and on a cluster
(`RAY_ADDRESS=ray://head:10001` or `auto`): only resources and the storage endpoint change.
"""

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# On a small busy node a sweep's workers can wait for a free CPU longer than Ray's 60 s default.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")

from simsiam.ray.cluster import DistSettings, init_ray  # noqa: E402
from simsiam.ray.pretrain import DistResult, load_result_checkpoint, pretrain_distributed  # noqa: E402
from simsiam.ray.sweep import CollapseStopper, SweepResult, format_table, run_sweep  # noqa: E402

__all__ = ["CollapseStopper", "DistResult", "DistSettings", "SweepResult", "format_table", "init_ray",
           "load_result_checkpoint", "pretrain_distributed", "run_sweep"]
