"""A local Prefect server with a process worker, for scheduled deployments (`simsiam up
--with-prefect-server`); without it, flows run against Prefect's ephemeral API on the same
database under the state dir, so the UI shows those runs later too."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from pathlib import Path

from simsiam.errors import ServiceError
from simsiam.services.process import (
    http_ok,
    on_free_port,
    pid_alive,
    private_log,
    reuse_port,
    spawn_server,
    terminate,
    venv_binary,
)
from simsiam.services.state import read_record, state_dir, state_lock, write_private, write_record

CLIENT_AUTH = "PREFECT_API_AUTH_STRING"


def prefect_auth_string(state: Path) -> str:
    """`simsiam:<secret>`: the state dir's Prefect API password (server and clients), made on first use."""
    path = state / "prefect-auth"
    if not path.exists():
        write_private(path, "simsiam:" + secrets.token_urlsafe(24))
    return path.read_text().strip()


def _locked_down(auth: str, origins: str) -> dict[str, str]:
    """Server settings (an ephemeral API's too): every request needs the auth string, writes need a
    CSRF token, and only `origins` may make cross-origin calls. Prefect has no trusted-host setting:
    the auth string is what stops a DNS-rebinding page."""
    return {"PREFECT_SERVER_API_AUTH_STRING": auth, "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
            "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": origins}


def prefect_env(state_path: str | Path | None = None) -> dict[str, str]:
    """Prefect settings for local use: its database and results under the state dir, no telemetry,
    the auth string for the servers started from here and for their clients, and the API of a
    running `simsiam up --with-prefect-server`, if any."""
    state = state_dir(state_path)
    auth = prefect_auth_string(state)
    env = {"PREFECT_HOME": str(state / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           # the ephemeral API migrates a fresh database first, which can outlast Prefect's own 20 s wait
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
           **_locked_down(auth, "http://127.0.0.1"), CLIENT_AUTH: auth}  # the ephemeral API has no UI
    info = prefect_status(state)
    if info["running"]:
        env["PREFECT_API_URL"] = info["api_url"]
    return env


def use_local_prefect(state_path: str | Path | None = None) -> None:
    """Point this process's Prefect at the state dir (before `prefect` is imported: it reads its
    settings from the environment once). Values already set win, and our auth string is never
    sent to an API the user chose."""
    state = state_dir(state_path)
    env = prefect_env(state)
    if os.environ.get("PREFECT_API_URL") not in (None, env.get("PREFECT_API_URL")):
        env.pop(CLIENT_AUTH)
    for key, value in env.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("SIMSIAM_STATE", str(state))


def prefect_status(state_path: str | Path | None = None) -> dict:
    info = read_record(state_dir(state_path), "prefect")
    up = bool(info) and pid_alive(info.get("pid")) and http_ok(info["api_url"] + "/health")
    return {"service": "prefect", "running": up, "api_url": info.get("api_url"), "ui_url": info.get("ui_url"),
            "pid": info.get("pid"), "worker_pid": info.get("worker_pid") if pid_alive(info.get("worker_pid")) else None,
            "pool": info.get("pool"), "ui_login_file": str(state_dir(state_path) / "prefect-auth")}


def embedded_server_pid(state_path: str | Path | None, api_url: str | None) -> int | None:
    """The process of the state dir's Prefect server when it is the one at `api_url`, else None: a run
    compares it at its start and its end to tell whether the server restarted meanwhile."""
    info = read_record(state_dir(state_path), "prefect")
    return info.get("pid") if api_url and info.get("api_url") == api_url.rstrip("/") else None


def _start_server(state: Path, info: dict, env: dict, pool: str, timeout: float) -> dict:
    if pid_alive(info.get("worker_pid")):  # a worker left polling a dead server: replace it, not orphan it
        terminate(info["worker_pid"], 20.0, first=signal.SIGINT)
    base_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}

    def start(port: int):
        api, ui = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
        # the UI asks /ui-settings where the API is: without this it says port 4200
        env = {**base_env, **_locked_down(base_env[CLIENT_AUTH], f"{ui},http://localhost:{port}"),
               "PREFECT_SERVER_UI_API_URL": api, "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false"}
        cmd = [venv_binary("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        proc = spawn_server("prefect server", cmd, state, "prefect-server.out", lambda: http_ok(api + "/health"), api,
                            timeout, env=env, poll=0.5)
        return {"pid": proc.pid, "port": port, "api_url": api, "ui_url": ui, "pool": pool}

    info = on_free_port(start, reuse_port(info.get("port")))
    write_record(state, "prefect", info)
    return info


def _ensure_pool(pool: str, env: dict) -> None:
    made = subprocess.run([venv_binary("prefect"), "work-pool", "create", pool, "--type", "process"], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if made.returncode != 0 and "already exists" not in made.stdout + made.stderr:
        raise ServiceError(f"could not create Prefect work pool {pool!r}: {(made.stdout + made.stderr).strip()[-300:]}")


def start_prefect(state_path: str | Path | None = None, pool: str = "local", worker: bool = True,
                  timeout: float = 120.0) -> dict:
    """Start (or reuse) `prefect server` on 127.0.0.1 and a process worker polling `pool`
    (created if missing), so deployments from prefect.yaml run on their schedules."""
    state = state_dir(state_path)
    with state_lock(state):
        return _start_prefect(state, pool, worker, timeout)


def _start_prefect(state: Path, pool: str, worker: bool, timeout: float) -> dict:
    env = {**os.environ, **prefect_env(state)}
    info = read_record(state, "prefect")
    if not prefect_status(state)["running"]:
        info = _start_server(state, info, env, pool, timeout)
    env.update(PREFECT_API_URL=info["api_url"], SIMSIAM_STATE=str(state))  # flow runs use this state dir
    _ensure_pool(pool, env)  # before the worker does, so `prefect deploy` right after this finds it
    if worker and not pid_alive(info.get("worker_pid")):
        # cwd: the project root, so deployments' relative entrypoints and pull steps resolve
        with private_log(state, "prefect-worker.out").open("ab") as log:
            proc = subprocess.Popen([venv_binary("prefect"), "worker", "start", "--pool", pool, "--type", "process"],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True, umask=0o077)
        write_record(state, "prefect", {**info, "worker_pid": proc.pid, "pool": pool})
    return prefect_status(state)


def stop_prefect(state_path: str | Path | None = None, timeout: float = 20.0) -> bool:
    state = state_dir(state_path)
    with state_lock(state):
        info = read_record(state, "prefect")
        # The worker ignores SIGTERM; SIGINT stops it cleanly.
        stopped = terminate(info.get("worker_pid"), timeout, first=signal.SIGINT)
        return terminate(info.get("pid"), timeout) or stopped
