"""prefect.yaml against a real local `prefect server` with a process worker (`simsiam up --with-prefect-server`):
`prefect deploy --all` creates the deployments and schedules, and the worker runs one to completion."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from simsiam.services import start_prefect, stop_prefect, stop_s3

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def _post(url: str, body: dict) -> list:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_prefect_yaml_deploys_and_worker_runs_stage_data(tmp_path):
    state = tmp_path / "state"
    try:
        info = start_prefect(state)
        assert info["running"] and info["worker_pid"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_API_URL=info["api_url"], PREFECT_HOME=str(state / "prefect"),
                   PREFECT_SERVER_ANALYTICS_ENABLED="false")
        prefect = str(Path(sys.executable).parent / "prefect")
        r = subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

        deps = {d["name"]: d for d in _post(info["api_url"] + "/deployments/filter", {})}
        assert set(deps) >= {"nightly-pipeline", "weekly-sweep", "stage-data", "reproduce-paper"}
        crons = {n: [s["schedule"].get("cron") for s in d["schedules"]] for n, d in deps.items()}
        assert crons["nightly-pipeline"] == ["0 2 * * *"] and crons["weekly-sweep"] == ["0 3 * * 0"]
        assert crons["stage-data"] == [] and crons["reproduce-paper"] == []  # on demand
        assert deps["reproduce-paper"]["entrypoint"] == "flows/reproduce.py:reproduce"
        assert deps["nightly-pipeline"]["work_pool_name"] == "local"
        assert deps["weekly-sweep"]["parameters"]["mode"] == "sweep"
        pull = deps["stage-data"]["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]
        assert Path(pull["directory"]) == ROOT  # recorded from where `prefect deploy` ran

        # The worker (started by start_prefect with SIMSIAM_STATE) picks the run up and stages to the
        # state dir's embedded S3.
        r = subprocess.run([prefect, "deployment", "run", "stage-data/stage-data", "--param", "subset=256",
                            "--watch", "--watch-timeout", "400"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=450)
        assert r.returncode == 0 and "Completed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
        runs = _post(info["api_url"] + "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
        assert any(fr["name"].startswith("stage-cpu-demo-") for fr in runs)
        arts = _post(info["api_url"] + "/artifacts/filter", {"artifacts": {"key": {"any_": ["simsiam-staged-data"]}}})
        assert arts and "s3://data/datasets/fashion-mnist-train/" in arts[0]["data"]
    finally:
        stop_prefect(state)
        stop_s3(state)
