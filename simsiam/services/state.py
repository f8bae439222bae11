"""The state dir of the embedded services, and the files they keep in it.

  <state>/s3/credentials.json   access key + secret, generated once, mode 0600
  <state>/s3/identities.json    SeaweedFS identity config (mode 0600): with no identity, S3 accepts any key
  <state>/<service>/service.json  pid, address and ports of the running server (reused while it answers)
  <state>/s3/data/              the object data;  <state>/logs/  every server's log
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def state_dir(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("SIMSIAM_STATE") or ".simsiam").resolve()


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
