"""Fault injection, for tests and chaos drills. Nothing here acts unless asked for; production runs
pass through these functions without effect.

They are not part of a run's config (nor its hash, nor its MLflow params): they come from the
environment of the process that starts the training, which hands them to its Ray workers.

- `$SIMSIAM_FAIL_AT_STEP=N`: the last rank raises once at that optimizer step, in a run that did
  not resume: a worker crash mid-training. Ray restarts the worker group from the latest
  checkpoint; `simsiam pretrain --resume` continues an in-process run.
- `$SIMSIAM_WEIGHTS_DIGEST_DIR=DIR`: at the end of training each rank writes `rank<N>.sha256` of its
  parameters under DIR (in `DIR/<run name>/` for a Ray run); data-parallel ranks must hold identical
  weights. A rank that streamed its data also writes `rank<N>.reads.json`, the shards it fetched
  (which must be disjoint).
- `$SIMSIAM_INJECT_IO_FAULT=point[,point...]`: the first time a named point is reached in a process
  it raises `ConnectionError`, like a dropped connection, so retries run against real services:
  - `stage`: after the first shard is stored, before the manifest (a partial staging);
  - `evaluate`: before the evaluation starts;
  - `register`: after the model version is created, before its gate tags and aliases.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from simsiam.errors import ConfigError

if TYPE_CHECKING:
    import torch

IO_POINTS = ("stage", "evaluate", "register")
FAIL_AT_STEP_ENV, DIGEST_DIR_ENV = "SIMSIAM_FAIL_AT_STEP", "SIMSIAM_WEIGHTS_DIGEST_DIR"


@dataclass(frozen=True)
class FaultSettings:
    fail_at_step: int | None = None
    weights_digest_dir: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def under(self, run_name: str | None) -> "FaultSettings":
        """The digest files of one run in their own directory (a sweep's trials share DIR)."""
        if not self.weights_digest_dir or not run_name:
            return self
        out = Path(self.weights_digest_dir) / run_name
        out.mkdir(parents=True, exist_ok=True)
        return FaultSettings(self.fail_at_step, str(out))


def from_env() -> FaultSettings:
    """The fault settings of this process: $SIMSIAM_FAIL_AT_STEP and $SIMSIAM_WEIGHTS_DIGEST_DIR."""
    step = os.environ.get(FAIL_AT_STEP_ENV) or None
    if step is not None and not (step.isdigit() and int(step) >= 1):
        raise ConfigError(f"${FAIL_AT_STEP_ENV} must be a step number >= 1, got {step!r}")
    return FaultSettings(int(step) if step else None, os.environ.get(DIGEST_DIR_ENV) or None)
_fired: set[str] = set()


def io_fault(point: str) -> None:
    """Raise ConnectionError the first time `point` is reached, if $SIMSIAM_INJECT_IO_FAULT names it."""
    wanted = {p.strip() for p in os.environ.get("SIMSIAM_INJECT_IO_FAULT", "").split(",") if p.strip()}
    if point in wanted and point not in _fired:
        _fired.add(point)
        raise ConnectionError(f"injected I/O fault at {point!r} (SIMSIAM_INJECT_IO_FAULT)")


def reset() -> None:
    """Arm every I/O fault point again (tests that inject faults more than once per process)."""
    _fired.clear()


def crash_at_step(faults: FaultSettings, step: int, resumed: bool, last_rank: bool) -> None:
    if step == faults.fail_at_step and not resumed and last_rank:
        raise RuntimeError(f"injected failure at step {step} (${FAIL_AT_STEP_ENV}, testing only)")


def _digest(tensors) -> str:
    return hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in tensors)).hexdigest()


def write_weights_digest(faults: FaultSettings, model: "torch.nn.Module", rank: int, targets=None) -> None:
    """rank<N>.sha256 of the parameters and, for loss.target=moving_average, rank<N>.memory.sha256."""
    if not faults.weights_digest_dir:
        return
    out = Path(faults.weights_digest_dir)
    # Parameters only: BN running stats are per rank (DDP re-broadcasts them before each forward).
    (out / f"rank{rank}.sha256").write_text(_digest(model.parameters()))
    memory = getattr(targets, "memory", None)
    if memory is not None:
        (out / f"rank{rank}.memory.sha256").write_text(_digest([memory]))


def write_reads(faults: FaultSettings, rank: int, source, node: str = "") -> None:
    """rank<N>.reads.json: {"node", "reads": [[key, bytes, purpose], ...]} of a rank that streamed its shards."""
    reads = getattr(source, "reads", None)
    if faults.weights_digest_dir and reads is not None:
        (Path(faults.weights_digest_dir) / f"rank{rank}.reads.json").write_text(json.dumps({"node": node,
                                                                                             "reads": reads}))
