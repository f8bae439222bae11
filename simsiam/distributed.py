"""Ray adapter: the core engine loop inside Ray Train V2 workers (DDP, S3 checkpoints, restarts)
and Ray Tune lr x batch sweeps with ASHA and a collapse stopper.

The same code runs on a laptop (`ray.init()` starts a local cluster) and on a cluster
(`RAY_ADDRESS=ray://head:10001` or `auto`): only resources and the storage endpoint change.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# On a small busy node a sweep's workers can wait for a free CPU longer than Ray's 60 s default.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")

import ray  # noqa: E402
import ray.train  # noqa: E402
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

from simsiam.config import Config, override_config, validate_config  # noqa: E402
from simsiam.engine import CHECKPOINT_NAME, Reporter, train  # noqa: E402
from simsiam.storage.client import S3Settings  # noqa: E402

COLLAPSE_RATIO = 0.1


@dataclass
class DistSettings:
    """Where and how to run. `storage` holds Ray's checkpoints (s3://<bucket>/<prefix>/<name>)."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    storage: S3Settings | None = None
    storage_prefix: str = "ray"
    local_storage: str | None = None  # a path instead of S3 (tests, single node)
    max_failures: int = 2
    num_to_keep: int = 2
    state_path: str | None = None  # embedded services' state dir, for workers on this node
    data_endpoint: str | None = None
    tracking_uri: str | None = None
    experiment: str = "simsiam"
    extra: dict[str, Any] = field(default_factory=dict)


def export_credentials(settings: S3Settings | None) -> None:
    """Explicit S3 keys (the embedded SeaweedFS) go to this process's AWS environment, never into
    the pyarrow filesystem object: Ray pickles RunConfig, filesystem included, into the bucket
    (Tune's tuner.pkl). From the environment the AWS chain finds them here and in the Ray
    workers of a local Ray started afterwards; cluster nodes use their own chain (IAM roles)."""
    if settings is not None and settings.access_key:
        os.environ["AWS_ACCESS_KEY_ID"] = settings.access_key
        os.environ["AWS_SECRET_ACCESS_KEY"] = settings.secret_key or ""


def init_ray(num_cpus: int | None = None, storage: S3Settings | None = None) -> None:
    """Connect to $RAY_ADDRESS if set, else start a local Ray (its dashboard serves the State API
    that Ray Train polls; it binds 127.0.0.1). `storage` credentials are exported first, so the
    local workers inherit them."""
    export_credentials(storage)
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, _temp_dir=os.environ.get("SIMSIAM_RAY_TMP", "/tmp/ray-simsiam"),
                 log_to_driver=True)


def storage_filesystem(settings: S3Settings):
    """pyarrow S3 filesystem for Ray's RunConfig (pyarrow ignores AWS_ENDPOINT_URL_S3)."""
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"region": settings.region}
    if settings.endpoint_url:
        scheme, _, host = settings.endpoint_url.partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme)
    export_credentials(settings)  # keys from the environment, not pickled with the filesystem
    return pafs.S3FileSystem(**kwargs)


class RayReportReporter(Reporter):
    """On every checkpoint (each epoch end, and every `train.checkpoint_every_steps`), all ranks call
    `ray.train.report`; rank 0 attaches the checkpoint directory, which Ray uploads to storage."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics.update(metrics)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.metrics.update(metrics)
        self.metrics["epoch"] = float(epoch)

    def on_checkpoint(self, path: Path | None, step: int) -> None:
        report = {**self.metrics, "step": step}
        if path is not None:
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copy(path, Path(tmp) / CHECKPOINT_NAME)
                ray.train.report(report, checkpoint=Checkpoint.from_directory(tmp))
        else:
            ray.train.report(report)


def _open_sources(config: dict):
    from simsiam.data import load_source

    cfg = validate_config(config["cfg"])
    if not cfg.data.source:
        return load_source(cfg.data, "train"), None
    from simsiam.storage import StagedSource, open_store
    from simsiam.storage.client import settings_from_env

    store = open_store(settings_from_env(config.get("data_endpoint"), cfg.storage.bucket, cfg.storage.region,
                                         config.get("state_path")))
    test = StagedSource(store, cfg.data.test_source) if cfg.data.test_source else None
    return StagedSource(store, cfg.data.source), test


def _worker_loop(config: dict) -> None:
    """Runs in every Ray Train worker: the core engine with DDP, resuming from Ray's checkpoint."""
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = validate_config(config["cfg"])
    device = ray.train.torch.get_device()
    cfg = override_config(cfg, [f"train.device={device.type}" + (f":{device.index}" if device.index is not None else "")])
    local = Path(tempfile.mkdtemp(prefix=f"simsiam-rank{rank}-"))
    resume = False
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            shutil.copy(Path(d) / CHECKPOINT_NAME, local / CHECKPOINT_NAME)
        resume = True
    train_src, test_src = _open_sources(config)
    reporters: list[Reporter] = [RayReportReporter()]
    tracker = None
    if rank == 0 and config.get("tracking_uri"):
        from simsiam.tracking import MlflowReporter

        tracker = MlflowReporter(config["tracking_uri"], config.get("experiment", "simsiam"),
                                 run_id=config.get("run_id"), parent_run_id=config.get("parent_run_id"),
                                 run_name=config.get("run_name"), system_metrics=cfg.tracking.system_metrics,
                                 flush_every=cfg.tracking.flush_every_steps, log_models=False)
        reporters.insert(0, tracker)  # log before reporting: a stopped trial may not return from report
    wrap = (lambda m: ray.train.torch.prepare_model(m)) if world > 1 else None
    try:
        result = train(cfg, reporters, out_dir=local, resume=resume, train_source=train_src, test_source=test_src,
                       rank=rank, world_size=world, wrap_model=wrap)
        if config.get("weights_digest_dir"):  # debugging/tests: prove the ranks hold identical weights
            import hashlib

            # Parameters only: BN running stats are per-rank (DDP re-broadcasts them before each forward).
            digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes()
                                             for p in result.model.parameters())).hexdigest()
            (Path(config["weights_digest_dir"]) / f"rank{rank}.sha256").write_text(digest)
    finally:
        if tracker is not None:
            tracker.finish(end_run=False)
        shutil.rmtree(local, ignore_errors=True)


def storage_kwargs(dist: DistSettings) -> dict[str, Any]:
    """RunConfig storage arguments: `bucket/prefix` on S3 (no s3:// in this form), or a local path."""
    if dist.storage is not None:
        return {"storage_path": f"{dist.storage.bucket}/{dist.storage_prefix}",
                "storage_filesystem": storage_filesystem(dist.storage)}
    return {"storage_path": dist.local_storage} if dist.local_storage else {}


def _run_config(name: str, dist: DistSettings, callbacks: list | None = None) -> RunConfig:
    return RunConfig(name=name, checkpoint_config=CheckpointConfig(num_to_keep=dist.num_to_keep),
                     failure_config=FailureConfig(max_failures=dist.max_failures), callbacks=callbacks,
                     **storage_kwargs(dist))


def _scaling(dist: DistSettings) -> ScalingConfig:
    res = {"CPU": dist.cpus_per_worker}
    if dist.use_gpu:
        res["GPU"] = dist.gpus_per_worker
    return ScalingConfig(num_workers=dist.num_workers, use_gpu=dist.use_gpu, resources_per_worker=res)


def _loop_config(cfg: Config, dist: DistSettings, **extra: Any) -> dict:
    # Only non-secret values: Ray may persist this. Workers get S3 credentials from the AWS chain,
    # or from the embedded server's state dir on this node.
    return {"cfg": cfg.to_dict(), "state_path": dist.state_path, "data_endpoint": dist.data_endpoint,
            "tracking_uri": dist.tracking_uri, "experiment": dist.experiment, **dist.extra, **extra}


@dataclass
class DistResult:
    name: str
    metrics: dict[str, Any]
    checkpoint_path: str | None
    run_id: str | None
    error: str | None = None


def pretrain_distributed(cfg: Config, dist: DistSettings, name: str | None = None) -> DistResult:
    """Data-parallel pretraining on Ray Train. Re-using `name` with the same storage resumes that run."""
    init_ray(storage=dist.storage)
    name = name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_id = None
    if dist.tracking_uri:
        from simsiam.tracking import create_run

        run_id = create_run(dist.tracking_uri, dist.experiment, name)
    trainer = TorchTrainer(_worker_loop, train_loop_config=_loop_config(cfg, dist, run_id=run_id, run_name=name),
                           scaling_config=_scaling(dist), run_config=_run_config(name, dist))
    try:
        result = trainer.fit()  # Ray 2.60 raises when training fails for good (after max_failures restarts)
    except Exception as exc:  # noqa: BLE001 - reported as DistResult.error; the caller decides
        if run_id:
            from simsiam.tracking import end_run

            end_run(dist.tracking_uri, run_id, "FAILED")
        return DistResult(name, {}, None, run_id, f"{type(exc).__name__}: {str(exc)[:500]}")
    if run_id:
        from simsiam.tracking import end_run

        end_run(dist.tracking_uri, run_id, "FAILED" if result.error else "FINISHED")
    return DistResult(name, dict(result.metrics or {}), result.checkpoint.path if result.checkpoint else None,
                      run_id, repr(result.error) if result.error else None)


def load_result_checkpoint(result: DistResult, dist: DistSettings) -> dict:
    """The final checkpoint of a distributed run, read from its storage."""
    import torch

    ckpt = Checkpoint(result.checkpoint_path, filesystem=storage_filesystem(dist.storage) if dist.storage else None)
    with ckpt.as_directory() as d:
        return torch.load(Path(d) / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
