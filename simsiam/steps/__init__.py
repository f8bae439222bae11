"""The pipeline's steps, each with exactly one implementation, shared by the CLI and the Prefect
flows (whose tasks are these functions): stage, pretrain (in this process or on Ray Train), sweep
(Ray Tune), evaluate, register, embed, reproduce.

Each step takes the entry point's `RunContext` first and returns its own result type
(`simsiam.results`). Adapters (boto3, MLflow, Ray) are imported inside the functions: `simsiam
config` and the core stay light. A trained model travels between steps as a checkpoint location:
a local path (in-process training) or `s3://<bucket>/<key>/checkpoint.pt` (Ray runs, sweep trials).
"""

from simsiam.steps.context import RunContext
from simsiam.steps.datasets import check_local_data, local_source, on_staged_data, stage, stage_name, with_staged
from simsiam.steps.embed import embed
from simsiam.steps.evaluate import evaluate, log_models, read_checkpoint, register
from simsiam.steps.reproduce import reproduce
from simsiam.steps.resume import resume_config
from simsiam.steps.train import pretrain, sweep, sweep_space

__all__ = ["RunContext", "check_local_data", "embed", "evaluate", "local_source", "log_models", "on_staged_data",
           "pretrain", "read_checkpoint", "register", "reproduce", "resume_config", "stage", "stage_name", "sweep",
           "sweep_space", "with_staged"]
