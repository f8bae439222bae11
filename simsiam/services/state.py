"""The state dir of the embedded services, and the files they keep in it.

  <state>/s3/credentials.json   access key + secret, generated once, mode 0600
  <state>/s3/identities.json    SeaweedFS identity config (mode 0600): with no identity, S3 accepts any key
  <state>/<service>/service.json  pid, address and ports of the running server (reused while it answers)
  <state>/s3/data/              the object data;  <state>/logs/  every server's log
  <state>/.lock                 held while a process starts or stops a service (`state_lock`)

The state dir is 0700 and the servers run with umask 077: other local users read nothing in it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simsiam.errors import ServiceError


def state_dir(path: str | Path | None = None) -> Path:
    state = Path(path or os.environ.get("SIMSIAM_STATE") or ".simsiam").resolve()
    if state.exists() and not state.is_dir():
        raise ServiceError(f"state dir {state} is a file, not a directory")
    return state


def write_private(path: Path, text: str) -> None:
    """Mode 0600 from the start, and atomic: a concurrent reader sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def record_path(state: Path, service: str) -> Path:
    return state / service / "service.json"


def read_record(state: Path, service: str) -> dict:
    """What the last start of `service` wrote, or {} when it never started here."""
    path = record_path(state, service)
    return json.loads(path.read_text()) if path.exists() else {}


def write_record(state: Path, service: str, info: dict) -> None:
    write_private(record_path(state, service), json.dumps(info))


_depth = threading.local()  # state dir -> how deep this thread already holds its lock


def private_dir(path: Path) -> Path:
    """The dir, created 0700; one that exists and is ours is tightened to 0700 too."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_uid == os.getuid():
        os.chmod(path, 0o700)
    return path


@contextmanager
def state_lock(state: Path) -> Iterator[None]:
    """Serialise starting and stopping the services of one state dir across processes (flock on
    <state>/.lock), so two concurrent `up` start one server each, not two. Re-entrant within a
    thread: starting MLflow starts S3."""
    held = _depth.__dict__.setdefault("held", {})
    if held.get(state):
        held[state] += 1
        try:
            yield
        finally:
            held[state] -= 1
        return
    fd = os.open(private_dir(state) / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held[state] = 1
        try:
            yield
        finally:
            held.pop(state, None)
    finally:
        os.close(fd)  # releases the lock
