"""Fault injection, for tests and chaos drills. Nothing here acts unless asked for; production runs
pass through these functions without effect.

- `faults.fail_at_step` (config): the last rank raises once at that optimizer step, in a run that
  did not resume: a worker crash mid-training. Ray restarts the worker group from the latest
  checkpoint; `simsiam pretrain --resume` continues an in-process run.
- `faults.weights_digest_dir` (config): at the end of training each rank writes `rank<N>.sha256`
  of its parameters there; data-parallel ranks must hold identical weights. A rank that streamed
  its data also writes `rank<N>.reads.json`, the shards it fetched (which must be disjoint).
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
from pathlib import Path
from typing import TYPE_CHECKING

from simsiam.config import FaultsConfig

if TYPE_CHECKING:
    import torch

IO_POINTS = ("stage", "evaluate", "register")
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


def crash_at_step(faults: FaultsConfig, step: int, resumed: bool, last_rank: bool) -> None:
    if step == faults.fail_at_step and not resumed and last_rank:
        raise RuntimeError(f"injected failure at step {step} (faults.fail_at_step, testing only)")


def _digest(tensors) -> str:
    return hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in tensors)).hexdigest()


def write_weights_digest(faults: FaultsConfig, model: "torch.nn.Module", rank: int, targets=None) -> None:
    """rank<N>.sha256 of the parameters and, for loss.target=moving_average, rank<N>.memory.sha256."""
    if not faults.weights_digest_dir:
        return
    out = Path(faults.weights_digest_dir)
    # Parameters only: BN running stats are per rank (DDP re-broadcasts them before each forward).
    (out / f"rank{rank}.sha256").write_text(_digest(model.parameters()))
    memory = getattr(targets, "memory", None)
    if memory is not None:
        (out / f"rank{rank}.memory.sha256").write_text(_digest([memory]))


def write_reads(faults: FaultsConfig, rank: int, source, node: str = "") -> None:
    """rank<N>.reads.json: {"node", "reads": [[key, bytes, purpose], ...]} of a rank that streamed its shards."""
    reads = getattr(source, "reads", None)
    if faults.weights_digest_dir and reads is not None:
        (Path(faults.weights_digest_dir) / f"rank{rank}.reads.json").write_text(json.dumps({"node": node,
                                                                                             "reads": reads}))
