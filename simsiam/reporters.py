"""How the training loop tells the world what it does, without knowing who listens: the `Reporter`
protocol, the `TrainResult` it ends with, and the two reporters every run has (a JSONL file and a
progress bar, or progress lines off a terminal). Adapters (MLflow, Ray) subclass `Reporter` in their own packages."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from simsiam import metrics as M
from simsiam.config import Config
from simsiam.models import SimSiam


@dataclass
class TrainResult:
    model: SimSiam
    step: int
    epoch: int
    total_steps: int
    start_step: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)
    knn_last: float | None = None
    knn_best: float | None = None
    label_free: dict[str, float] = field(default_factory=dict)  # at the last epoch end (simsiam.label_free)
    collapsed: bool = False
    wall_s: float = 0.0
    checkpoint: Path | None = None
    targets: Any = None  # the run's simsiam.targets object (its snapshot or memory), for inspection
    train_source: Any = None  # what it trained from, for inspection (a ShardStream records its shard reads)

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


class Reporter:
    """Callback protocol; subclass and override what you need. Metrics are plain floats.

    `plan` (on_start) holds rank, world_size, total_steps, steps_per_epoch, start_step (> 0 after a
    resume), train_images, device and init_lr. A reporter that raises stops the training (the
    loop does not guard its reporters), which is how tests crash a run at a chosen step."""

    def on_start(self, cfg: Config, plan: dict[str, Any]) -> None: ...
    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, path: Path | None, step: int) -> None: ...
    def on_views(self, views: torch.Tensor, originals: list[torch.Tensor] | None = None) -> None:
        """At the start, on rank 0: n images x views x C x H x W in [0, 1], as the network sees them,
        and the n source images they came from (each C x H x W in [0, 1], at its own size)."""
    def on_end(self, result: TrainResult) -> None: ...


class JsonlReporter(Reporter):
    """One JSON line per logged step and per epoch in `path`. A new run starts the file afresh; a
    resumed one keeps the lines up to its checkpoint's step and drops those written after it (lost
    with the interrupted run, and about to be written again)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.step = 0

    def on_start(self, cfg: Config, plan: dict[str, Any]) -> None:
        self.step = plan["start_step"]
        if not self.path.exists():
            return
        if not self.step:
            self.path.unlink()
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    keep.append(line)
            except json.JSONDecodeError:  # a line cut short by the interruption
                continue
        self.path.write_text("".join(line + "\n" for line in keep))

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.step = step
        self._write({"step": step, **metrics})

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._write({"epoch": epoch, "step": self.step, **metrics})


class ProgressReporter(Reporter):
    """Training progress on stderr: a tqdm bar on a terminal; elsewhere (a log file, CI, a Prefect
    worker) a plain line every `every_s` seconds and at the end, because a bar redrawn with carriage
    returns reads as nothing in a log."""

    def __init__(self, enabled: bool = True, every_s: float = 30.0, tty: bool | None = None,
                 clock=time.monotonic) -> None:
        self.enabled, self.every_s, self.clock = enabled, every_s, clock
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bar = self.lines = None

    def on_start(self, cfg: Config, plan: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if "augment_on" in plan:  # where the time goes: say which data path and precision this run took
            print(f"{plan['device']}: views made on {plan['augment_on']} ({plan.get('augment_why', '')}), "
                  f"amp={plan.get('amp')}, channels_last={plan.get('channels_last')}", file=sys.stderr)
        if not self.tty:
            self.lines = StepLines(f"pretrain {cfg.name}", plan["total_steps"], plan["start_step"],
                                   cfg.train.batch_size, self.every_s, self.clock)
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=plan["total_steps"], initial=plan["start_step"], desc=f"pretrain {cfg.name}",
                        unit="step", file=sys.stderr, mininterval=1.0)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.lines is not None:
            self.lines(step, metrics)
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(loss=f"{metrics[M.LOSS]:.2f}", z_ratio=f"{metrics[M.Z_STD_RATIO]:.2f}",
                                 refresh=False)
            self.bar.refresh() if step == self.bar.total else self.bar.update(0)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if (self.bar is not None or self.lines is not None) and M.KNN_MONITOR in metrics:
            line = f"epoch {epoch}: {M.KNN_MONITOR}={metrics[M.KNN_MONITOR]:.2f}"
            self.bar.write(line, file=sys.stderr) if self.bar is not None else print(line, file=sys.stderr, flush=True)

    def on_end(self, result: TrainResult) -> None:
        if self.bar is not None:
            self.bar.close()


class StepLines:
    """`desc: step 120/750 (16%), 85 img/s, loss -0.812, z_ratio 0.74, ETA 7m20s` on stderr, at most
    one per `every_s` seconds, and always at the last step."""

    def __init__(self, desc: str, total: int, start: int, batch: int, every_s: float, clock=time.monotonic) -> None:
        self.desc, self.total, self.start, self.batch = desc, total, start, batch
        self.every_s, self.clock = every_s, clock
        self.t0 = self.last = clock()

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        now = self.clock()
        if now - self.last < self.every_s and step < self.total:
            return
        self.last = now
        rate = (step - self.start) / max(now - self.t0, 1e-9)  # steps/s since this process started
        eta = f"ETA {_duration((self.total - step) / rate)}" if rate > 0 else "ETA ?"
        print(f"{self.desc}: step {step}/{self.total} ({100 * step / self.total:.0f}%), {rate * self.batch:.0f} img/s, "
              f"loss {metrics[M.LOSS]:.2f}, z_ratio {metrics[M.Z_STD_RATIO]:.2f}, {eta}",
              file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
