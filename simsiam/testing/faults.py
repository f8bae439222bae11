"""Fault tools for tests and chaos drills. Nothing in the product calls them: a fault enters from
outside, through the extension points every user has.

- a `Reporter` passed in: every training path takes the caller's reporters and runs them first,
  on every rank of a Ray run and in every sweep trial (`CrashAtStep`, `WeightsDigest`, `Pace`);
- a store or tracking client wrapped in the run context (`FlakyStore`, `FlakyClient`);
- a monkeypatch in a process the test starts (`crash_training_at`, for a CLI subprocess);
- a service cut off for a set time behind a TCP proxy (`simsiam.testing.outage.OutageProxy`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from simsiam.reporters import Reporter, TrainResult


class CrashAtStep(Reporter):
    """Raises at optimizer step `step` on the last rank of a run that did not resume: a worker
    crash mid-training, before the step is logged or checkpointed. Ray restarts the worker group
    from its latest checkpoint; `simsiam pretrain --resume` continues an in-process run."""

    def __init__(self, step: int) -> None:
        self.step, self.armed = step, False

    def on_start(self, cfg, plan: dict[str, Any]) -> None:
        self.armed = plan["start_step"] == 0 and plan["rank"] == plan["world_size"] - 1

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.armed and step == self.step:
            raise RuntimeError(f"injected failure at step {step} (simsiam.testing.faults.CrashAtStep)")


class Pace(Reporter):
    """Every optimizer step takes at least `seconds`: a tiny test run lasts long enough for a fault to
    land mid-run (an outage between two checkpoints, say)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        import time

        time.sleep(self.seconds)


def crash_training_at(step: int) -> None:
    """Every training this process starts crashes at `step` (for a CLI run in a subprocess:
    `python -c "...; crash_training_at(6); from simsiam.cli import main; main()" pretrain ...`)."""
    import simsiam.engine as engine

    real = engine.train

    def train(cfg, reporters=(), *args, **kwargs):
        return real(cfg, [CrashAtStep(step), *reporters], *args, **kwargs)

    engine.train = train


def digest(tensors) -> str:
    return hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in tensors)).hexdigest()


class WeightsDigest(Reporter):
    """At the end of training each rank writes, under `out` (or `out/<by>-<value>` to keep the
    runs of a sweep apart, e.g. by="train.seed"): `rank<N>.sha256` of its parameters (data-parallel
    ranks must agree), `rank<N>.memory.sha256` for loss.target=moving_average, and, for a rank that
    streamed its data, `rank<N>.reads.json`: the node it ran on and the shards it fetched."""

    def __init__(self, out: str | Path, by: str | None = None) -> None:
        self.out, self.by, self.rank, self.dir = str(out), by, 0, Path(out)

    def on_start(self, cfg, plan: dict[str, Any]) -> None:
        self.rank, self.dir = plan["rank"], Path(self.out)
        if self.by:
            value = cfg.to_dict()
            for part in self.by.split("."):
                value = value[part]
            self.dir = self.dir / f"{self.by}-{value}"
        self.dir.mkdir(parents=True, exist_ok=True)

    def on_end(self, result: TrainResult) -> None:
        # Parameters only: BN running stats are per rank (DDP re-broadcasts them before each forward).
        (self.dir / f"rank{self.rank}.sha256").write_text(digest(result.model.parameters()))
        memory = getattr(result.targets, "memory", None)
        if memory is not None:
            (self.dir / f"rank{self.rank}.memory.sha256").write_text(digest([memory]))
        reads = getattr(result.train_source, "reads", None)
        if reads is not None:
            (self.dir / f"rank{self.rank}.reads.json").write_text(json.dumps({"node": _node(), "reads": reads}))


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


class FlakyStore:
    """An ObjectStore whose `put_bytes` number `fail_on` (1-based) raises ConnectionError once, like
    a dropped connection: with fail_on=2 a one-shard staging stores its shard, then fails before its
    manifest (a partial staging that a retry must finish without uploading the shard again)."""

    def __init__(self, store, fail_on: int) -> None:
        self._store, self._fail_on, self._calls = store, fail_on, 0

    def put_bytes(self, *args, **kwargs):
        self._calls += 1
        if self._calls == self._fail_on:
            raise ConnectionError(f"injected: put #{self._calls} dropped (simsiam.testing.faults.FlakyStore)")
        return self._store.put_bytes(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


class AfterPut:
    """An ObjectStore that calls `after(key)` once each `put_bytes` has stored its object (a test
    kills the S3 server there, mid-staging)."""

    def __init__(self, store, after) -> None:
        self._store, self._after = store, after

    def put_bytes(self, key: str, *args, **kwargs):
        out = self._store.put_bytes(key, *args, **kwargs)
        self._after(key)
        return out

    def __getattr__(self, name: str):
        return getattr(self._store, name)


class FlakyClient:
    """An MlflowClient whose first call of `method` raises ConnectionError: with
    `set_model_version_tag`, a registration fails after its version exists and before its gate."""

    def __init__(self, client, method: str) -> None:
        self._client, self._method, self.failed = client, method, False

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if name != self._method or self.failed:
            return attr

        def once(*args, **kwargs):
            self.failed = True
            raise ConnectionError(f"injected: {name} dropped (simsiam.testing.faults.FlakyClient)")

        return once
