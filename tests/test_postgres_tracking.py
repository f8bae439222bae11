"""The MLflow server on a real PostgreSQL backend (Debian's postgresql, started on loopback as the
`postgres` user): a short tracked training registers a version, and a manual promotion moves
the champion alias. The database password never shows in MLflow's params, our status or logs."""

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import tiny_sets
from simsiam.services import mlflow_status, start_mlflow, stop_mlflow, stop_s3

pytestmark = pytest.mark.integration


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    bindir = _pg_bin()
    if bindir is None:
        pytest.fail("PostgreSQL is missing: apt-get install postgresql (scripts/test.sh does)")
    # Directly under /tmp: pytest's tmp dirs are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="simsiam-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    password = secrets.token_urlsafe(16)
    (root / "pw").write_text(password)
    as_pg: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        shutil.chown(root / "pw", "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def pg(*cmd: str) -> None:
        subprocess.run(as_pg + list(cmd), check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "simsiam", "--auth-local=trust", "--auth-host=scram-sha-256",
       f"--pwfile={root / 'pw'}")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "pg.log"), "-o",
       f"-p {port} -k {sock} -c listen_addresses=127.0.0.1", "start")
    try:
        pg(str(bindir / "createdb"), "-h", str(sock), "-p", str(port), "-U", "simsiam", "mlflow")
        yield {"uri": f"postgresql+psycopg://simsiam:{password}@127.0.0.1:{port}/mlflow", "password": password,
               "port": port}
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_mlflow_on_postgres_tracks_registers_and_promotes(postgres, tmp_path):
    import psycopg

    state = tmp_path / "state"
    svc = start_mlflow(state, backend_store_uri=postgres["uri"])
    try:
        status = mlflow_status(state)
        assert status["running"] and status["backend_store_uri"].startswith("postgresql+psycopg://simsiam:***@")
        env = {**os.environ, "MLFLOW_TRACKING_URI": svc.tracking_uri, "SIMSIAM_STATE": str(state)}
        cli = [sys.executable, "-m", "simsiam.cli"]
        r = subprocess.run([*cli, "pretrain", "--track", "--out", str(tmp_path / "run"), "--no-progress",
                            *tiny_sets("train.epochs=1", "eval.probe_epochs=2", "tracking.experiment=pg")],
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        first = json.loads(r.stdout)
        name = first["registry"]["name"]
        assert first["registry"]["decision"] == "champion"  # a fresh registry: the first version is champion

        # A second version (a different seed: a new run), then promote it by hand.
        r = subprocess.run([*cli, "pretrain", "--track", "--out", str(tmp_path / "run2"), "--no-progress",
                            "--preset", str(tmp_path / "run" / "config.yaml"), "--set", "train.seed=1"],
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        second = json.loads(r.stdout)["registry"]
        r = subprocess.run([*cli, "models", "promote", name, second["version"]], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]

        # The registry and the runs live in Postgres, not in a sqlite file.
        with psycopg.connect(host="127.0.0.1", port=postgres["port"], user="simsiam", password=postgres["password"],
                             dbname="mlflow") as conn:
            runs = conn.execute("select count(*) from runs").fetchone()[0]
            aliases = dict(conn.execute("select alias, version from registered_model_aliases where name = %s",
                                        (name,)).fetchall())
        assert runs == 2 and aliases["champion"] == int(second["version"])
        assert not (state / "mlflow.db").exists()

        leaked = [p for p in (state / "logs").rglob("*")
                  if p.is_file() and postgres["password"] in p.read_text(errors="ignore")]
        assert not leaked
        params = [v for run in _runs(svc.tracking_uri) for v in run.data.params.values()]
        assert not any(postgres["password"] in v for v in params)
    finally:
        stop_mlflow(state)
        stop_s3(state)


def _runs(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("pg")
    return client.search_runs([exp.experiment_id])
