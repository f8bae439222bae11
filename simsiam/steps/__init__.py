"""The pipeline's steps, each with exactly one implementation, shared by the CLI and the Prefect
flows: stage, pretrain (in this process or on Ray Train), sweep (Ray Tune), evaluate, register, embed, reproduce.

Each step takes a Config and returns a JSON-friendly dict, so flows can pass results between
tasks, cache them and publish them as artifacts; training returns a `TrainedRun` (one type for
in-process runs, Ray runs and a sweep's best trial). Adapters (boto3, MLflow, Ray) are imported
inside the functions: `simsiam config` and the core stay light.

A trained model travels between steps as a checkpoint location: a local path (in-process
training) or `s3://<bucket>/<key>/checkpoint.pt` (Ray Train runs and sweep trials).
"""

from simsiam.steps.attempts import interrupted_attempt
from simsiam.steps.datasets import (
    check_local_data,
    dataset_version,
    is_staged,
    local_source,
    on_staged_data,
    stage,
    stage_name,
    with_staged,
)
from simsiam.steps.embed import embed
from simsiam.steps.evaluate import evaluate, evaluate_and_register, load_trained, log_models, read_checkpoint, register
from simsiam.steps.locations import Services, open_services, run_dir
from simsiam.steps.reproduce import reproduce
from simsiam.steps.results import TrainedRun
from simsiam.steps.train import RayWorkers, check_cluster, pretrain, resume_config, sweep, sweep_space

__all__ = ["RayWorkers", "Services", "TrainedRun", "check_cluster", "check_local_data", "dataset_version", "embed",
           "evaluate", "evaluate_and_register", "interrupted_attempt", "is_staged", "load_trained", "local_source",
           "log_models", "on_staged_data", "open_services", "pretrain", "read_checkpoint", "register", "reproduce",
           "resume_config", "run_dir", "stage", "stage_name", "sweep", "sweep_space", "with_staged"]
