"""The embedded services under concurrent and faulty use, on the real servers: two `simsiam up` at
once on one state dir, a dead S3 under a live MLflow, file modes, and `down` leaving nothing."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

SIMSIAM = [sys.executable, "-m", "simsiam.cli"]

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*SIMSIAM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out)


def _processes_of(state: Path) -> list[str]:
    """Command lines of live processes that name the state dir (servers, their workers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        if str(state) in cmd and status != "Z" and int(pid) != os.getpid():
            found.append(cmd)
    return found


@pytest.fixture(scope="module")
def upped(tmp_path_factory):
    state = tmp_path_factory.mktemp("svc") / "state"
    first, second = _cli("up", "--state", str(state)), _cli("up", "--state", str(state))
    try:
        yield state, _finish(first), _finish(second)
    finally:
        subprocess.run([*SIMSIAM, "down", "--state", str(state)], capture_output=True, timeout=120)


def test_two_concurrent_ups_start_one_server_each(upped):
    state, a, b = upped
    assert a["s3"]["running"] and a["mlflow"]["running"]
    assert (a["s3"]["pid"], a["mlflow"]["pid"]) == (b["s3"]["pid"], b["mlflow"]["pid"])
    procs = _processes_of(state)
    assert sum("weed" in c and " mini " in c for c in procs) == 1, procs
    assert sum("mlflow server" in c for c in procs) == 1, procs
    # the database was migrated once: a third `up` (and MLflow itself) still work
    assert _finish(_cli("up", "--state", str(state)))["mlflow"]["pid"] == a["mlflow"]["pid"]


def test_state_dir_is_0700_and_server_files_are_private(upped):
    state = upped[0]
    assert stat.S_IMODE(state.stat().st_mode) == 0o700  # other users cannot even list it
    assert stat.S_IMODE((state / "s3" / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "mlflow.db").stat().st_mode) == 0o600
    # SeaweedFS chmods its volume-info files (*.vif, no object data) to 0644 itself; the 0700 dirs cover them
    leaky = [str(p) for p in state.rglob("*") if p.is_file() and p.suffix != ".vif"
             and stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert not leaky, leaky


def test_up_restarts_a_dead_s3_while_mlflow_lives(upped):
    state, a, _ = upped
    os.kill(a["s3"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _finish(_cli("status", "--state", str(state)))["s3"]["running"] and time.monotonic() < deadline:
        time.sleep(0.2)
    again = _finish(_cli("up", "--state", str(state)))
    assert again["s3"]["running"] and again["s3"]["pid"] != a["s3"]["pid"]
    assert again["mlflow"]["running"]


def test_down_stops_every_process_it_started(upped):
    state = upped[0]
    down = _finish(_cli("down", "--state", str(state)))
    assert down["s3"]["stopped"] and down["mlflow"]["stopped"]
    deadline = time.monotonic() + 10
    while _processes_of(state) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_of(state) == []


@pytest.mark.parametrize("kind", ["mlflow", "prefect"])
def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(kind, tmp_path, monkeypatch):
    """The free port chosen for a server is taken by another process before the server binds it:
    the start is retried on a fresh port instead of failing."""
    import socket

    from simsiam.services import (
        mlflow_server,
        prefect_server,
        start_mlflow,
        start_prefect,
        stop_mlflow,
        stop_prefect,
        stop_s3,
    )
    from simsiam.services.process import http_ok

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    taken = held.getsockname()[1]
    monkeypatch.setattr(mlflow_server if kind == "mlflow" else prefect_server, "reuse_port", lambda previous: taken)
    state = tmp_path / "state"
    try:
        if kind == "mlflow":
            url = start_mlflow(state).tracking_uri + "/health"
        else:
            url = start_prefect(state, worker=False)["api_url"] + "/health"
        assert f":{taken}/" not in url and http_ok(url)
        log = (state / "logs" / ("mlflow.out" if kind == "mlflow" else "prefect-server.out")).read_text().lower()
        assert "already in use" in log  # the first attempt really lost the port
    finally:
        held.close()
        stop_prefect(state), stop_mlflow(state), stop_s3(state)
