"""MLflow adapter: an engine Reporter that logs a run (params, per-step metrics, system metrics,
config, figures, models) and a registry gate that promotes an encoder only when it is better.

Metrics are buffered and sent with `log_batch` every `flush_every` steps. If the tracking server
goes away mid-run, training goes on: the buffer is kept and re-sent at the next flush, so the
run's history has no gap once the server is back. If it is still unreachable at the end, the
unsent metrics are written to `<out>/metrics-unsent.jsonl` and a warning says so.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# Fail fast on an unreachable server instead of mlflow's default of minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
# We print the run URL in our own JSON summary; keep stdout machine-readable.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from simsiam.config import Config  # noqa: E402
from simsiam.engine import Reporter, TrainResult  # noqa: E402
from simsiam.errors import SimSiamError  # noqa: E402
from simsiam.redact import redact as _redact  # noqa: E402

CHAMPION, CHALLENGER = "champion", "challenger"


class TrackingError(SimSiamError):
    """The tracking server is unreachable, or a model/alias does not exist."""


def check_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError unless an HTTP tracking server answers /health (file/sqlite URIs pass)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status == 200:
                return
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(f"MLflow tracking server {_redact(tracking_uri)} is unreachable ({exc}); "
                            "start it with `simsiam up` or set MLFLOW_TRACKING_URI") from None
    raise TrackingError(f"MLflow tracking server {_redact(tracking_uri)} is not healthy")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def registered_name(cfg: Config) -> str:
    return f"simsiam-{cfg.data.dataset}-{cfg.model.backbone}"


class MlflowReporter(Reporter):
    """Logs one MLflow run for one training; call `finish()` after any post-training logging."""

    def __init__(self, tracking_uri: str, experiment: str = "simsiam", run_name: str | None = None,
                 dataset: dict | None = None, flush_every: int = 50, system_metrics: bool = True,
                 unsent_path: Path | None = None, run_id: str | None = None, parent_run_id: str | None = None,
                 log_models: bool = True) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.dataset = dataset
        self.flush_every = flush_every
        self.system_metrics = system_metrics
        self.unsent_path = unsent_path
        self.client = MlflowClient(tracking_uri)
        self.buffer: list[Metric] = []
        self.failed_flushes = 0
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.step = 0
        self.run_id: str | None = run_id
        self.parent_run_id = parent_run_id
        self.log_models = log_models
        self.skip_through = 0  # steps already in the run's history (a restarted worker re-runs them)
        self.dim = 1
        self.model_uris: dict[str, str] = {}

    # ------------------------------------------------------------------ reporter protocol

    def on_start(self, cfg: Config, plan: dict[str, Any]) -> None:
        check_server(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        exp = mlflow.set_experiment(self.experiment)
        if self.system_metrics:
            mlflow.set_system_metrics_sampling_interval(2)
        if self.run_id is not None:  # attach to a run created by the driver (Ray), maybe after a restart
            history = self.client.get_metric_history(self.run_id, "train/loss")
            self.skip_through = max((m.step for m in history), default=0)
            run = mlflow.start_run(run_id=self.run_id, log_system_metrics=self.system_metrics)
        else:
            run = mlflow.start_run(experiment_id=exp.experiment_id, run_name=self.run_name or cfg.name,
                                   parent_run_id=self.parent_run_id, log_system_metrics=self.system_metrics)
        self.run_id = run.info.run_id
        self.cfg, self.dim = cfg, cfg.model.dim
        params = {k: _redact(v) for k, v in cfg.flat().items()}
        params.update({f"plan.{k}": v for k, v in plan.items() if k != "start_step"})
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        tags = {"simsiam.config_hash": cfg.config_hash(), "simsiam.collapsed": "false",
                "simsiam.registered_name": registered_name(cfg)}
        if (commit := git_commit()):
            tags["mlflow.source.git.commit"] = commit
        if plan.get("start_step"):
            tags["simsiam.resumed_from_step"] = str(plan["start_step"])
        if self.dataset:
            tags.update({f"dataset.{k}": str(v) for k, v in self.dataset.items()})
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.log_text(self.run_id, cfg.to_yaml(), "config.yaml")
        if self.dataset and self.dataset.get("manifest_uri"):
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset

            ds = MetaDataset(source=resolve_dataset_source(self.dataset["manifest_uri"]),
                             name=self.dataset.get("name"), digest=self.dataset.get("version"))
            mlflow.log_input(ds, context="training")

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.step = step
        self._record(step, metrics)
        if len(self.buffer) >= self.flush_every * len(metrics):
            self.flush()

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        extra = {k: v for k, v in metrics.items() if k.startswith("knn/")}
        extra["train/epoch"] = float(epoch)
        self._record(self.step, extra)

    def on_checkpoint(self, path: Path | None, step: int) -> None:
        # A checkpoint is the point a restarted worker resumes from: make the history durable up to it.
        self.flush()

    def on_end(self, result: TrainResult) -> None:
        self._record(result.step, {"train/steps": float(result.step)})
        self.flush()
        self._safe(self._log_figures)
        if result.collapsed:
            ratio = result.last_metrics.get("train/z_std_ratio", float("nan"))
            note = (f"COLLAPSED: z_std*sqrt(d) = {ratio:.3f} at the last step (healthy is ~1, collapsed ~0). "
                    "The encoder maps all images to nearly one point; it will not be promoted.")
            self._safe(lambda: self.client.set_tag(self.run_id, "simsiam.collapsed", "true"))
            self._safe(lambda: self.client.set_tag(self.run_id, "mlflow.note.content", note))
        if self.log_models:
            self._safe(lambda: self._log_models(result))

    # ------------------------------------------------------------------ after training

    def log_eval(self, metrics: dict[str, float]) -> None:
        """Final evaluation on the full splits; its kNN is `knn/final_top1`, apart from the monitor curve."""
        self._record(self.step, {("knn/final_top1" if k == "knn/top1" else k): v for k, v in metrics.items()})
        self.flush()

    def finish(self, status: str = "FINISHED", end_run: bool = True) -> None:
        self.flush()
        if self.buffer and self.unsent_path is not None:
            self.unsent_path.parent.mkdir(parents=True, exist_ok=True)
            with self.unsent_path.open("a") as fh:
                for m in self.buffer:
                    fh.write(json.dumps({"step": m.step, m.key: m.value}) + "\n")
            print(f"warning: MLflow server unreachable; {len(self.buffer)} metric values written to "
                  f"{self.unsent_path} instead", file=sys.stderr)
        try:
            if end_run:
                mlflow.end_run(status=status)
            else:  # stop the system-metrics thread; the driver sets the final status
                mlflow.end_run()
        except MlflowException as exc:
            print(f"warning: could not close the MLflow run: {str(exc).splitlines()[0]}", file=sys.stderr)

    # ------------------------------------------------------------------ internals

    def _record(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        if step and step <= self.skip_through:
            return
        for k, v in metrics.items():
            if v is None or not math.isfinite(float(v)):
                continue
            self.buffer.append(Metric(k, float(v), now, step))
            self.history.setdefault(k, []).append((step, float(v)))

    def flush(self) -> bool:
        while self.buffer:
            chunk = self.buffer[:1000]
            try:
                self.client.log_batch(self.run_id, metrics=chunk)
            except Exception as exc:  # noqa: BLE001 - any transport error: keep the buffer, retry later
                if self.failed_flushes == 0:
                    print(f"warning: MLflow log failed at step {self.step} ({type(exc).__name__}); "
                          "buffering metrics and retrying", file=sys.stderr)
                self.failed_flushes += 1
                return False
            del self.buffer[:len(chunk)]
        return True

    def _safe(self, fn) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - tracking must not fail a finished training
            print(f"warning: MLflow logging failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                  file=sys.stderr)

    def _log_figures(self) -> None:
        h = self.history
        if "train/z_std" in h:
            _log_line_figure("figures/z_std.png", *zip(*h["train/z_std"]), "step", "z std", "Collapse diagnostic",
                             [(1 / math.sqrt(self.dim), "g", f"1/sqrt(d), d={self.dim}: healthy"), (0, "r", "0: collapsed")],
                             label="std of z/||z|| (per-channel mean)")
        if "train/loss" in h:
            _log_line_figure("figures/loss.png", *zip(*h["train/loss"]), "step", "loss", "SimSiam loss",
                             [(-1, "r", "-1: minimum (collapse if reached fast)")])
        if "knn/top1" in h:
            knn = [v for _, v in h["knn/top1"]]
            epochs = [e for _, e in h.get("train/epoch", [])]
            xs = epochs[-len(knn):] if len(epochs) >= len(knn) else list(range(len(knn)))
            _log_line_figure("figures/knn.png", xs, knn, "epoch", "kNN top-1 (%)", f"kNN monitor (k={self.cfg.eval.knn_k}, t={self.cfg.eval.knn_t})", [],
                             marker="o")

    def _log_models(self, result: TrainResult) -> None:
        self.model_uris.update(log_models(result.model, self.cfg))


def log_models(model: torch.nn.Module, cfg: Config) -> dict[str, str]:
    """Log `backbone` and `encoder` (backbone + projector) to the active run; returns their model URIs.
    Pickle format with a batch-2 example at the real input size (pt2 would freeze the shapes)."""
    from mlflow.models import infer_signature

    model = copy.deepcopy(model).float().cpu().eval()
    model = model.to(memory_format=torch.contiguous_format)
    example = torch.randn(2, cfg.model.in_channels, cfg.data.image_size, cfg.data.image_size)
    reqs = [f"torch=={torch.__version__.split('+')[0]}", "torchvision==0.29.1", "numpy"]
    code = [str(Path(__file__).resolve().parent)]
    uris = {}
    for name, net in (("backbone", model.backbone), ("encoder", torch.nn.Sequential(model.backbone, model.projector))):
        with torch.no_grad():
            out = net(example).numpy()
        info = mlflow.pytorch.log_model(net, name=name, serialization_format="pickle",
                                        signature=infer_signature(example.numpy(), out),
                                        input_example=example.numpy().astype(np.float32),
                                        pip_requirements=reqs, code_paths=code)
        uris[name] = info.model_uri
    return uris


def log_models_to_run(tracking_uri: str, run_id: str, model: torch.nn.Module, cfg: Config) -> dict[str, str]:
    """`log_models` into an existing (possibly finished) run, e.g. a Ray-trained run or a sweep trial."""
    check_server(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    info = client.get_run(run_id).info
    status = info.status
    mlflow.set_experiment(experiment_id=info.experiment_id)  # start_run(run_id) insists they match
    try:
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            return log_models(model, cfg)
    finally:
        # leaving start_run marks the run FINISHED (FAILED on an error); keep what it was, so a
        # retried attempt does not leave a successful run FAILED
        if status != "RUNNING":
            client.set_terminated(run_id, status)


def log_metrics_to_run(tracking_uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    MlflowClient(tracking_uri).log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()
                                                          if v is not None and math.isfinite(float(v))])


def run_url(tracking_uri: str, run_id: str) -> str:
    run = MlflowClient(tracking_uri).get_run(run_id)
    return f"{tracking_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


def model_version_url(tracking_uri: str, name: str, version: str) -> str:
    return f"{tracking_uri.rstrip('/')}/#/models/{name}/versions/{version}"


def create_run(tracking_uri: str, experiment: str, run_name: str, parent_run_id: str | None = None,
               tags: dict[str, str] | None = None) -> str:
    """A run created up front, so distributed workers (and their restarts) log into one history."""
    check_server(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    return client.create_run(exp_id, run_name=run_name, tags=all_tags).info.run_id


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    MlflowClient(tracking_uri).set_terminated(run_id, status)


def _log_line_figure(path: str, xs, ys, xlabel: str, ylabel: str, title: str, hlines: list[tuple[float, str, str]],
                     label: str | None = None, marker: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, ys, label=label, marker=marker)
    for y, color, text in hlines:
        ax.axhline(y, color=color, ls="--", label=text)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title)
    if label or hlines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    mlflow.log_figure(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------- registry gate


def _champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register_and_gate(client: MlflowClient, run_id: str, model_uri: str, name: str, probe_top1: float,
                      collapsed: bool, floor: float = 0.0) -> dict:
    """Register the run's backbone; alias `challenger`; `champion` only if not collapsed, probe >= floor
    and better than the current champion. Idempotent per run."""
    try:
        existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except MlflowException:
        existing = []
    if existing and existing[0].tags.get("gate.decision"):
        v = existing[0]
        return {"name": name, "version": v.version, "decision": v.tags.get("gate.decision"), "noop": True,
                "reasons": v.tags.get("gate.reasons", "")}
    champ = _champion(client, name)
    champ_probe = float(champ.tags.get("probe/top1", "nan")) if champ else None
    reasons, promote = [], True
    if collapsed:
        promote = False
        reasons.append("collapsed (z_std*sqrt(d) below threshold)")
    if probe_top1 < floor:
        promote = False
        reasons.append(f"probe/top1 {probe_top1:.2f} < floor {floor:.2f}")
    if champ is not None and not probe_top1 > champ_probe:
        promote = False
        reasons.append(f"probe/top1 {probe_top1:.2f} does not beat champion v{champ.version} ({champ_probe:.2f})")
    if promote:
        reasons.append(f"probe/top1 {probe_top1:.2f} >= floor {floor:.2f}, not collapsed, "
                       + (f"beats champion v{champ.version} ({champ_probe:.2f})" if champ else "no previous champion"))
    decision = CHAMPION if promote else CHALLENGER
    # A version registered by an attempt that died before its gate tags is gated now, not registered twice.
    mv = existing[0] if existing else mlflow.register_model(
        model_uri, name, tags={"probe/top1": repr(float(probe_top1)), "collapsed": str(collapsed).lower(),
                               "run_id": run_id})
    client.set_model_version_tag(name, mv.version, "gate.decision", decision)
    client.set_model_version_tag(name, mv.version, "gate.reasons", "; ".join(reasons))
    client.update_model_version(name, mv.version, description=f"gate: {decision}: " + "; ".join(reasons))
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    return {"name": name, "version": mv.version, "decision": decision, "noop": False, "reasons": "; ".join(reasons)}


def promote(client: MlflowClient, name: str, version: str, who: str | None = None) -> dict:
    """Manual override: make `version` the champion, recorded on the version."""
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        raise TrackingError(f"registered model {name!r} has no version {version!r} (see `simsiam models ls`)") from None
    who = who or os.environ.get("USER", "unknown")
    reason = f"manual promotion by {who} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
    client.set_model_version_tag(name, mv.version, "gate.decision", "champion (manual)")
    client.set_model_version_tag(name, mv.version, "gate.reasons", reason)
    client.set_registered_model_alias(name, CHAMPION, mv.version)
    return {"name": name, "version": mv.version, "decision": "champion (manual)", "reasons": reason}


def list_models(client: MlflowClient) -> list[dict]:
    rows = []
    for rm in client.search_registered_models():
        aliases = {}
        for alias, version in (rm.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for mv in client.search_model_versions(f"name='{rm.name}'"):
            rows.append({"name": rm.name, "version": mv.version, "aliases": sorted(aliases.get(str(mv.version), [])),
                         "probe/top1": mv.tags.get("probe/top1"), "decision": mv.tags.get("gate.decision"),
                         "run_id": mv.run_id})
    rows.sort(key=lambda r: (r["name"], -int(r["version"])))
    return rows


def load_registered(uri: str):
    """`models:/<name>@<alias>` (or /<version>) as a torch module; a clear error when absent."""
    try:
        return mlflow.pytorch.load_model(uri, map_location="cpu")
    except MlflowException as exc:
        raise TrackingError(f"cannot load {uri}: {str(exc).splitlines()[0][:200]}") from None
