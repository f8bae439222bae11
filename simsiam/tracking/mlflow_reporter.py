"""MlflowReporter: one MLflow run for one training (params, per-step metrics, system metrics,
config, dataset input, figures, collapse verdict).

Metrics are buffered and sent with `log_batch` every `flush_every` steps. If the tracking server
goes away mid-run, training goes on: the buffer is kept and re-sent at the next flush, so the
run's history has no gap once the server is back. If it is still unreachable at the end, the
unsent metrics are written to `<out>/metrics-unsent.jsonl` and a warning says so.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from simsiam import metrics as M
from simsiam.config import Config
from simsiam.redact import redact
from simsiam.reporters import Reporter, TrainResult
from simsiam.tracking.figures import History, log_training_figures, log_views_figure
from simsiam.tracking.registry import registered_name
from simsiam.tracking.runs import check_server, ensure_experiment, git_commit, tracking_uri_scope


def dataset_info(cfg: Config, source) -> dict:
    """What a run trained on, for its tags and MLflow dataset input: a staged version, or local files."""
    ref = getattr(source, "ref", None)
    if ref is not None:
        return {"name": ref.name, "version": ref.version, "uri": ref.uri, "manifest_uri": ref.manifest_uri}
    return {"name": cfg.data.dataset, "source": "local files", "samples": len(source)}


class MetricBuffer:
    """Metric values waiting for `log_batch`; kept across failed sends, spilled to a JSONL file if
    they are never sent."""

    def __init__(self, client: MlflowClient, unsent_path: Path | None) -> None:
        self.client, self.unsent_path = client, unsent_path
        self.pending: list[Metric] = []
        self.failed_flushes = 0

    def add(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def flush(self, run_id: str, step: int) -> bool:
        while self.pending:
            chunk = self.pending[:1000]
            try:
                self.client.log_batch(run_id, metrics=chunk)
            except Exception as exc:  # noqa: BLE001 - any transport error: keep the buffer, retry later
                if self.failed_flushes == 0:
                    print(f"warning: MLflow log failed at step {step} ({type(exc).__name__}); "
                          "buffering metrics and retrying", file=sys.stderr)
                self.failed_flushes += 1
                return False
            del self.pending[:len(chunk)]
        return True

    def spill(self) -> None:
        if not self.pending or self.unsent_path is None:
            return
        self.unsent_path.parent.mkdir(parents=True, exist_ok=True)
        with self.unsent_path.open("a") as fh:
            for m in self.pending:
                fh.write(json.dumps({"step": m.step, m.key: m.value}) + "\n")
        print(f"warning: MLflow server unreachable; {len(self.pending)} metric values written to "
              f"{self.unsent_path} instead", file=sys.stderr)


class MlflowReporter(Reporter):
    """Logs one MLflow run for one training; call `finish()` after any post-training logging.
    With `run_id` it attaches to a run created by the driver (Ray), maybe after a worker restart:
    steps already in the run's history are not logged again."""

    def __init__(self, tracking_uri: str, experiment: str = "simsiam", run_name: str | None = None,
                 dataset: dict | None = None, flush_every: int = 50, system_metrics: bool = True,
                 unsent_path: Path | None = None, run_id: str | None = None,
                 parent_run_id: str | None = None, system_metrics_every_s: float = 2.0) -> None:
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.dataset, self.flush_every, self.system_metrics = dataset, flush_every, system_metrics
        self.system_metrics_every_s = system_metrics_every_s  # a run shorter than this logs no sample
        self.run_id, self.parent_run_id = run_id, parent_run_id
        self.client = MlflowClient(tracking_uri)
        self.buffer = MetricBuffer(self.client, unsent_path)
        self._scope = ExitStack()  # MLflow's process-wide tracking URI, from on_start to finish
        self.history: History = {}
        self.step = 0
        self.skip_through = 0  # steps already in the run's history (a restarted worker re-runs them)

    @property
    def failed_flushes(self) -> int:
        return self.buffer.failed_flushes

    def on_start(self, cfg: Config, plan: dict[str, Any]) -> None:
        check_server(self.tracking_uri)
        self._scope.enter_context(tracking_uri_scope(self.tracking_uri))
        exp = mlflow.set_experiment(experiment_id=ensure_experiment(self.tracking_uri, self.experiment))
        if self.system_metrics:
            mlflow.set_system_metrics_sampling_interval(self.system_metrics_every_s)
        if self.run_id is not None:
            history = self.client.get_metric_history(self.run_id, M.LOSS)
            self.skip_through = max((m.step for m in history), default=0)
            run = mlflow.start_run(run_id=self.run_id, log_system_metrics=self.system_metrics)
        else:
            run = mlflow.start_run(experiment_id=exp.experiment_id, run_name=self.run_name or cfg.name,
                                   parent_run_id=self.parent_run_id, log_system_metrics=self.system_metrics)
        self.run_id, self.cfg = run.info.run_id, cfg
        self._log_run_info(cfg, plan)

    def _log_run_info(self, cfg: Config, plan: dict[str, Any]) -> None:
        params = {k: redact(v) for k, v in cfg.flat().items()}
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

    def on_views(self, views, originals=None) -> None:
        self._safe(lambda: log_views_figure(views, originals))

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.step = step
        self._record(step, metrics)
        if len(self.buffer.pending) >= self.flush_every * len(metrics):
            self.flush()

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        extra = M.pick(metrics, (M.KNN_MONITOR, M.KNN_MONITOR_BEST, *M.LABEL_FREE))
        extra[M.EPOCH] = float(epoch)
        self._record(self.step, extra)

    def on_checkpoint(self, path: Path | None, step: int) -> None:
        # A checkpoint is the point a restarted worker resumes from: make the history durable up to it.
        self.flush()

    def on_end(self, result: TrainResult) -> None:
        self._record(result.step, {M.STEPS: float(result.step)})
        self.flush()
        self._safe(lambda: log_training_figures(self.history, self.cfg))
        if result.collapsed:
            ratio = result.last_metrics.get(M.Z_STD_RATIO, float("nan"))
            note = (f"COLLAPSED: z_std*sqrt(d) = {ratio:.2f} at the last step (healthy is ~1, collapsed ~0). "
                    "The encoder maps all images to nearly one point; it will not be promoted.")
            self._safe(lambda: self.client.set_tag(self.run_id, "simsiam.collapsed", "true"))
            self._safe(lambda: self.client.set_tag(self.run_id, "mlflow.note.content", note))

    def log_final(self, step: int, metrics: dict[str, float]) -> None:
        """The evaluation after training (kNN and probe on the full test split), sent at once."""
        self._record(step, metrics)
        self.flush()

    def finish(self, status: str = "FINISHED", end_run: bool = True) -> None:
        """Send what is left (or spill it), then close the run; `end_run=False` only stops the
        system-metrics thread and leaves the status to the driver that created the run."""
        self.flush()
        self.buffer.spill()
        try:
            mlflow.end_run(status=status) if end_run else mlflow.end_run()
        except MlflowException as exc:
            print(f"warning: could not close the MLflow run: {str(exc).splitlines()[0]}", file=sys.stderr)
        finally:
            self._scope.close()

    def flush(self) -> bool:
        return self.buffer.flush(self.run_id, self.step)

    def _record(self, step: int, metrics: dict[str, float]) -> None:
        if step and step <= self.skip_through:
            return
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self.buffer.add(step, finite)
        for k, v in finite.items():
            self.history.setdefault(k, []).append((step, v))

    def _safe(self, fn) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - tracking must not fail a finished training
            print(f"warning: MLflow logging failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                  file=sys.stderr)
