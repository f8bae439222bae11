"""What the training steps hand to evaluation, registration and the reports: one type, whichever
way the encoder was trained (in this process, on Ray Train workers, or as a sweep's best trial)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainedRun:
    """A trained encoder. `checkpoint` is a local path or `s3://<bucket>/<key>/checkpoint.pt`;
    `metrics` are the last training and kNN-monitor values under their MLflow names
    (`train/loss`, `train/z_std_ratio`, `knn/best_top1`, ...); `where` says how it ran
    (`ray_run` and `workers`, or `sweep` and `trial`)."""

    checkpoint: str
    collapsed: bool
    run_id: str | None = None
    run_url: str | None = None
    steps: int | None = None
    epochs: int | None = None
    resumed_from_step: int | None = None
    wall_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    where: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON summary the CLI prints and `finished.json` keeps."""
        return {"run_id": self.run_id, "run_url": self.run_url, "checkpoint": self.checkpoint,
                "collapsed": self.collapsed, "steps": self.steps, "epochs": self.epochs,
                "resumed_from_step": self.resumed_from_step, "wall_s": self.wall_s, **self.metrics, **self.where}
