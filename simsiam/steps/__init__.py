"""The pipeline's steps, one implementation each, shared by the CLI and the Prefect flows (whose tasks
are these functions). Each takes the entry point's `RunContext` and returns its own result type
(`simsiam.results`); adapters are imported inside the functions, so the CLI starts fast. A trained
model travels between steps as a checkpoint location: a local path or an `s3://` URI."""

from simsiam.steps.context import RunContext
from simsiam.steps.datasets import on_staged_data, stage, with_staged
from simsiam.steps.embed import embed
from simsiam.steps.evaluate import evaluate, log_models, read_checkpoint, register
from simsiam.steps.reproduce import reproduce
from simsiam.steps.resume import resume_config
from simsiam.steps.train import pretrain, sweep

__all__ = ["RunContext", "embed", "evaluate", "log_models", "on_staged_data", "pretrain", "read_checkpoint",
           "register", "reproduce", "resume_config", "stage", "sweep", "with_staged"]
