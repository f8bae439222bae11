"""Ray adapter: the core engine loop inside Ray Train V2 workers (DDP, S3 checkpoints, restarts)
and Ray Tune sweeps with ASHA and a collapse stopper.

  cluster.py   where and how: RayWorkers, connecting to Ray, checkpoint storage, run/scaling configs
  worker.py    what every Ray Train worker runs: the engine, resumed from Ray's checkpoint
  pretrain.py  one data-parallel pretraining run (TorchTrainer)
  sweep.py     a grid of trials, each its own TorchTrainer (the Train V2 pattern)

The same code runs on a laptop (`ray.init()` starts a local cluster) and on a cluster
(`RAY_ADDRESS=ray://head:10001` or `auto`): only resources and the storage endpoint change.
"""

from simsiam.ray.cluster import RayWorkers, init_ray
from simsiam.ray.pretrain import load_result_checkpoint, pretrain_distributed
from simsiam.ray.sweep import CollapseStopper, run_sweep

__all__ = ["CollapseStopper", "RayWorkers", "init_ray", "load_result_checkpoint",
           "pretrain_distributed", "run_sweep"]
