"""Server processes on loopback: free ports, health probes, spawn-and-wait, and stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, TypeVar

from simsiam.errors import ServiceError
from simsiam.services.state import private_dir

T = TypeVar("T")


def venv_binary(name: str) -> str:
    """`name` next to this Python (the venv's bin/), else whatever PATH finds."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR as the server itself uses: connections in TIME_WAIT after a crash do not block it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class PortTakenError(ServiceError):
    """The free port a server was given was taken by another process before the server bound it."""


def on_free_port(start: Callable[[int], T], port: int, attempts: int = 3) -> T:
    """`start(port)`, again on a fresh free port when another process took the port in between."""
    for attempt in range(attempts):
        try:
            return start(port)
        except PortTakenError:
            if attempt == attempts - 1:
                raise
            port = free_ports(1)[0]
    raise AssertionError("unreachable")


def reuse_port(previous: int | None) -> int:
    """The port of an earlier start when it is free again (clients keep their address), else a new one."""
    return previous if previous and port_free(previous) else free_ports(1)[0]


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def http_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a server answers HTTP at all (any status: 403 to anonymous S3 is normal)."""
    try:
        urllib.request.urlopen(url, timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie child still "exists"; reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def private_log(state: Path, name: str) -> Path:
    """<state>/logs/<name>, created 0600 in a 0700 dir."""
    path = private_dir(state / "logs") / name
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    return path


def spawn_server(name: str, cmd: list[str], state: Path, log_name: str, ready: Callable[[], bool], where: str,
                 timeout: float, env: dict | None = None, poll: float = 0.3) -> subprocess.Popen:
    """Start a server in its own session (Ctrl-C in the user's shell does not kill it; `simsiam down`
    does), logging to state/logs/<log_name>, and wait until `ready()`; a clear error if it exits or
    does not answer in time."""
    log_path = private_log(state, log_name)
    start = log_path.stat().st_size
    with log_path.open("ab") as log:  # umask 077: the server's database and data files are 0600
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, cwd=state, umask=0o077)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            with log_path.open("rb") as log:
                log.seek(start)
                said = log.read().decode(errors="replace").lower()
            error = PortTakenError if "already in use" in said else ServiceError  # uvicorn, gunicorn, prefect
            raise error(f"{name} exited with code {proc.returncode} at start; see {log_path}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGTERM)
            raise ServiceError(f"{name} did not answer at {where} within {timeout:.0f}s; see {state / 'logs'}")
        time.sleep(poll)
    return proc


def terminate(pid: int | None, timeout: float, first: int = signal.SIGTERM) -> bool:
    """Signal the server's process group (servers run in their own session), SIGKILL after `timeout`;
    True if it was running."""
    if not pid_alive(pid):
        return False
    try:
        os.killpg(pid, first)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True
