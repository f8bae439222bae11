"""The pipeline's steps, shared by the CLI and the Prefect flows: stage, pretrain, evaluate, register.

Each step takes a Config and returns a JSON-friendly dict, so flows can pass results between
tasks, cache them and publish them as artifacts. Adapters (boto3, MLflow, Ray) are imported
inside the functions: `simsiam config` and the core stay light.

A trained model travels between steps as a checkpoint location: a local path (in-process
training) or `s3://<bucket>/<key>/checkpoint.pt` (Ray Train runs and sweep trials).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

from simsiam.config import Config, override_config, validate_config
from simsiam.errors import SimSiamError


# --------------------------------------------------------------------------- data


def open_store(cfg: Config, state: str | Path | None = None):
    from simsiam.storage import open_store as _open
    from simsiam.storage.client import settings_from_env

    return _open(settings_from_env(cfg.storage.endpoint_url, cfg.storage.bucket, cfg.storage.region, state))


def local_source(cfg: Config, split: str, subset: int | None = None):
    """The local files of `cfg.data` (dataset/root), optionally the first `subset` samples."""
    from simsiam.data import load_source

    data = cfg.data.model_copy(update={"source": None, "test_source": None})
    source = load_source(data, split)
    if subset is not None:
        if not hasattr(source, "subset"):
            raise SimSiamError("a subset works for in-memory datasets (fashion-mnist, cifar10), not imagefolder")
        source = source.subset(range(min(subset, len(source))))
    return source


def dataset_version(cfg: Config, split: str, subset: int | None = None) -> str:
    """The content-hash version staging would give this source (cheap: no upload)."""
    from simsiam.storage.staging import source_fingerprint

    return source_fingerprint(local_source(cfg, split, subset), cfg.storage.shard_size)


def stage(cfg: Config, split: str = "train", name: str | None = None, subset: int | None = None,
          state: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Stage one split of `cfg.data` to S3 (idempotent: a staged version uploads nothing)."""
    from simsiam.storage import stage_dataset

    source = local_source(cfg, split, subset)
    store = open_store(cfg, state)
    before = store.puts
    root = cfg.data.root
    ref, manifest = stage_dataset(source, store, name or f"{cfg.data.dataset}-{split}", split, cfg.storage.shard_size,
                                  source_desc=f"{cfg.data.dataset}:{split}" + (f":{root}" if root else ""),
                                  progress=progress)
    return {"uri": ref.uri, "manifest": ref.manifest_uri, "name": ref.name, "version": ref.version,
            "spec": f"{ref.name}@{ref.version}", "split": split, "samples": manifest["num_samples"],
            "shards": len(manifest["shards"]), "bytes": manifest["total_bytes"],
            "uploaded_objects": store.puts - before}


def is_staged(cfg: Config, staged: dict, state: str | Path | None = None) -> bool:
    """Does the store still hold this staged version's manifest? (A cached staging result may
    outlive the data, e.g. after the state dir was wiped.)"""
    store = open_store(cfg, state)
    key = staged["manifest"].removeprefix(f"s3://{store.bucket}/")
    return store.head(key) is not None


def sources(cfg: Config, need_test: bool, state: str | Path | None = None):
    """Train/test ImageSources: staged versions in S3 when data.source is set, else local files."""
    from simsiam.data import load_source

    if cfg.data.source is None:
        return load_source(cfg.data, "train"), (load_source(cfg.data, "test") if need_test else None)
    from simsiam.storage import StagedSource

    store = open_store(cfg, state)
    train_src = StagedSource(store, cfg.data.source)
    test_src = None
    if need_test:
        test_src = StagedSource(store, cfg.data.test_source) if cfg.data.test_source else load_source(cfg.data, "test")
    return train_src, test_src


def dataset_info(cfg: Config, source) -> dict:
    ref = getattr(source, "ref", None)
    if ref is not None:
        return {"name": ref.name, "version": ref.version, "uri": ref.uri, "manifest_uri": ref.manifest_uri}
    return {"name": cfg.data.dataset, "source": "local files", "samples": len(source)}


# --------------------------------------------------------------------------- services


def tracking_uri(uri: str | None = None, state: str | Path | None = None) -> str:
    """The given URI, $MLFLOW_TRACKING_URI, or the embedded MLflow server (started if needed)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    from simsiam.services import start_mlflow

    return start_mlflow(state).tracking_uri


# --------------------------------------------------------------------------- training


def pretrain(cfg: Config, out: str | Path, tracking_uri: str | None = None, run_name: str | None = None,
             state: str | Path | None = None, progress: bool = False, workers: int = 0,
             gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, max_failures: int = 2) -> dict[str, Any]:
    """Pretrain in this process (workers=0) or on Ray Train workers. With a tracking URI the run
    is logged to MLflow (models are logged at registration, for both paths alike)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.to_yaml())
    if workers > 0:
        return _pretrain_ray(cfg, out, tracking_uri, state, workers, gpus_per_worker, cpus_per_worker, max_failures)
    from simsiam.engine import JsonlReporter, ProgressReporter, train

    reporters = [JsonlReporter(out / "metrics.jsonl"), ProgressReporter(progress)]
    train_src, test_src = sources(cfg, need_test=cfg.eval.knn_every_epochs > 0, state=state)
    tracker = None
    if tracking_uri:
        from simsiam.tracking import MlflowReporter, check_server

        check_server(tracking_uri)
        tracker = MlflowReporter(tracking_uri, cfg.tracking.experiment, run_name=run_name or out.name,
                                 dataset=dataset_info(cfg, train_src), flush_every=cfg.tracking.flush_every_steps,
                                 system_metrics=cfg.tracking.system_metrics, unsent_path=out / "metrics-unsent.jsonl",
                                 log_models=False)
        reporters.append(tracker)
    try:
        result = train(cfg, reporters, out_dir=out, train_source=train_src, test_source=test_src)
    except BaseException:
        if tracker is not None and tracker.run_id:
            tracker.finish("FAILED")
        raise
    if tracker is not None:
        tracker.finish()
    return {"run_id": tracker.run_id if tracker else None, "checkpoint": str((out / "checkpoint.pt").resolve()),
            "steps": result.step, "epochs": result.epoch, "wall_s": round(result.wall_s, 1),
            "collapsed": result.collapsed, "knn/top1": result.knn_last, "knn/best_top1": result.knn_best,
            **{k: v for k, v in result.last_metrics.items()}}


def dist_settings(cfg: Config, workers: int, gpus: float, cpus: float, max_failures: int, tracking_uri: str | None,
                  state: str | Path | None):
    from simsiam.distributed import DistSettings
    from simsiam.services import state_dir
    from simsiam.storage.client import settings_from_env

    storage = settings_from_env(cfg.storage.endpoint_url, cfg.storage.bucket, cfg.storage.region, state)
    if tracking_uri:
        from simsiam.tracking import check_server

        check_server(tracking_uri)
    return DistSettings(num_workers=workers, use_gpu=gpus > 0, gpus_per_worker=gpus or 1.0, cpus_per_worker=cpus,
                        storage=storage, max_failures=max_failures, tracking_uri=tracking_uri,
                        experiment=cfg.tracking.experiment, state_path=str(state_dir(state)),
                        data_endpoint=cfg.storage.endpoint_url)


def _pretrain_ray(cfg, out: Path, tracking_uri, state, workers, gpus, cpus, max_failures) -> dict:
    from simsiam.distributed import pretrain_distributed

    dist = dist_settings(cfg, workers, gpus, cpus, max_failures, tracking_uri, state)
    res = pretrain_distributed(cfg, dist, name=out.name)
    if res.error:
        raise SimSiamError(f"distributed training failed after {max_failures} restarts: {res.error[:300]}")
    ratio = res.metrics.get("train/z_std_ratio")
    from simsiam.distributed import COLLAPSE_RATIO

    return {"run_id": res.run_id, "checkpoint": f"s3://{res.checkpoint_path}/checkpoint.pt", "ray_run": res.name,
            "workers": workers, "collapsed": ratio is not None and ratio < COLLAPSE_RATIO, **res.metrics}


def latest_checkpoint(cfg: Config, prefix: str, state: str | Path | None = None) -> str | None:
    """The newest `checkpoint.pt` under an S3 prefix (e.g. a sweep trial's Ray Train run)."""
    store = open_store(cfg, state)
    found = [o for o in store.list_keys(prefix) if o["Key"].endswith("/checkpoint.pt")]
    if not found:
        return None
    return f"s3://{store.bucket}/{max(found, key=lambda o: o['LastModified'])['Key']}"


def load_checkpoint_any(location: str, cfg: Config | None = None, state: str | Path | None = None) -> dict:
    """A checkpoint dict from a local path/run dir or an s3:// URI."""
    if not location.startswith("s3://"):
        from simsiam.engine import load_checkpoint

        return load_checkpoint(location)
    import torch

    bucket, _, key = location[len("s3://"):].partition("/")
    base = cfg or Config()
    store = open_store(override_config(base, [f"storage.bucket={bucket}"]), state)
    return torch.load(io.BytesIO(store.get_bytes(key)), map_location="cpu", weights_only=False)


def model_from_checkpoint(location: str, state: str | Path | None = None, cfg: Config | None = None):
    """(SimSiam model, its config) from a checkpoint location."""
    from simsiam.engine import load_weights
    from simsiam.models import build_model

    ckpt = load_checkpoint_any(location, cfg, state)
    ckpt_cfg = validate_config(ckpt["config"])
    model = build_model(ckpt_cfg.model)
    load_weights(model, ckpt["model"], location)
    return model.eval(), ckpt_cfg


# --------------------------------------------------------------------------- evaluation and registry


def evaluate(cfg: Config, checkpoint: str | None = None, model_uri: str | None = None,
             tracking_uri: str | None = None, run_id: str | None = None,
             state: str | Path | None = None) -> dict[str, Any]:
    """kNN + linear probe of a frozen backbone on the full splits of `cfg.data`: from a checkpoint,
    or a registered/logged MLflow model (`models:/name@champion`). With `run_id`, the metrics are
    logged to that run (`knn/final_top1`, `probe/top1`)."""
    from simsiam.engine import resolve_device, seed_everything
    from simsiam.evaluation import evaluate_backbone

    if (checkpoint is None) == (model_uri is None):
        raise SimSiamError("evaluate needs exactly one of a checkpoint or a model URI")
    seed_everything(cfg.train.seed)
    if checkpoint is not None:
        model, _ = model_from_checkpoint(checkpoint, state, cfg)
        backbone = model.backbone
    else:
        from simsiam.tracking import load_registered

        if tracking_uri:
            import mlflow

            mlflow.set_tracking_uri(tracking_uri)
        backbone = load_registered(model_uri)
    device = resolve_device(cfg.train.device)
    train_src, test_src = sources(cfg, need_test=True, state=state)
    t0 = time.perf_counter()
    metrics = evaluate_backbone(backbone.to(device), cfg, train_src, test_src, device)
    if run_id and tracking_uri:
        from simsiam.tracking import log_metrics_to_run

        log_metrics_to_run(tracking_uri, run_id, {("knn/final_top1" if k == "knn/top1" else k): v
                                                  for k, v in metrics.items()})
    return {**metrics, "train_images": len(train_src), "test_images": len(test_src),
            "eval_s": round(time.perf_counter() - t0, 1), "checkpoint": checkpoint, "model_uri": model_uri}


def register(cfg: Config, run_id: str, checkpoint: str, probe_top1: float, collapsed: bool, tracking_uri: str,
             state: str | Path | None = None) -> dict[str, Any]:
    """Log the trained backbone/encoder to the run, register the backbone and run the champion gate."""
    from mlflow import MlflowClient

    from simsiam.tracking import log_models_to_run, model_version_url, register_and_gate, registered_name

    model, trained_cfg = model_from_checkpoint(checkpoint, state, cfg)  # a sweep trial may differ from cfg
    uris = log_models_to_run(tracking_uri, run_id, model, trained_cfg)
    name = registered_name(trained_cfg)
    gate = register_and_gate(MlflowClient(tracking_uri), run_id, uris["backbone"], name, probe_top1, collapsed,
                             cfg.tracking.promote_floor)
    return {**gate, "model_uri": uris["backbone"], "alias_uri": f"models:/{name}@{gate['decision']}",
            "url": model_version_url(tracking_uri, name, gate["version"])}


def with_staged(cfg: Config, train: dict | None, test: dict | None) -> Config:
    """The config pointed at staged versions (data.source / data.test_source)."""
    sets = []
    if train:
        sets.append(f"data.source={train['spec']}")
    if test:
        sets.append(f"data.test_source={test['spec']}")
    return override_config(cfg, sets) if sets else cfg
