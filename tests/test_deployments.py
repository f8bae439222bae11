"""prefect.yaml against a real local `prefect server` with a process worker (`simsiam up --with-prefect-server`):
`prefect deploy --all` creates the deployments and schedules, and the worker runs one to completion."""

import base64
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from simsiam.services import prefect_env, start_prefect, stop_prefect, stop_s3

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def _post(url: str, body: dict, auth: str) -> list:
    """A POST as Prefect's client makes it: the auth string, and a CSRF token fetched with it."""
    headers = {"Content-Type": "application/json",
               "Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    api = url[:url.index("/api/") + 4]
    token_req = urllib.request.Request(f"{api}/csrf-token?client=tests", headers=headers)
    with urllib.request.urlopen(token_req, timeout=30) as resp:
        headers.update({"Prefect-Csrf-Token": json.loads(resp.read())["token"], "Prefect-Csrf-Client": "tests"})
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _status(req: urllib.request.Request) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_prefect_server_needs_its_auth_string_and_refuses_foreign_origins(tmp_path):
    state = tmp_path / "state"
    try:
        info = start_prefect(state, worker=False)
        api, auth = info["api_url"], (state / "prefect-auth").read_text().strip()
        assert oct((state / "prefect-auth").stat().st_mode & 0o777) == "0o600" and auth.startswith("simsiam:")
        # anonymous reads and writes, with our Host or a foreign one, are refused
        for host in (None, "evil.example"):
            headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
            req = urllib.request.Request(api + "/flows/filter", data=b"{}", method="POST", headers=headers)
            assert _status(req)[0] in (401, 403)
        assert _status(urllib.request.Request(api + "/csrf-token?client=x"))[0] == 401
        # a foreign page's preflight gets no allow-origin; the UI's own origin does
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        code, headers = _status(urllib.request.Request(api + "/deployments/", method="OPTIONS",
                                                       headers={"Origin": "http://evil.example", **pre}))
        assert "access-control-allow-origin" not in {k.lower() for k in headers}, (code, headers)
        code, headers = _status(urllib.request.Request(api + "/deployments/", method="OPTIONS",
                                                       headers={"Origin": info["ui_url"], **pre}))
        allowed = {k.lower(): v for k, v in headers.items()}["access-control-allow-origin"]
        assert code == 200 and allowed == info["ui_url"]
        # the UI is told the API's real port and that it must log in
        with urllib.request.urlopen(info["ui_url"] + "/ui-settings", timeout=30) as resp:
            ui = json.loads(resp.read())
        assert ui["api_url"] == api and ui["auth"] == "BASIC" and ui["csrf_enabled"] is True
        # with the auth string (and a CSRF token, as Prefect's client does) the API answers
        assert _post(api + "/flows/filter", {}, auth) == []  # a fresh server: no flows yet
    finally:
        stop_prefect(state)


def test_prefect_yaml_deploys_and_worker_runs_stage_data(tmp_path):
    state = tmp_path / "state"
    try:
        info = start_prefect(state)
        assert info["running"] and info["worker_pid"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(prefect_env(state))  # the API URL and its auth string
        auth = env["PREFECT_API_AUTH_STRING"]
        prefect = str(Path(sys.executable).parent / "prefect")
        r = subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

        deps = {d["name"]: d for d in _post(info["api_url"] + "/deployments/filter", {}, auth)}
        assert set(deps) >= {"nightly-pipeline", "nightly-images", "weekly-sweep", "stage-data", "reproduce-paper"}
        crons = {n: [s["schedule"].get("cron") for s in d["schedules"]] for n, d in deps.items()}
        assert crons["nightly-pipeline"] == ["0 2 * * *"] and crons["weekly-sweep"] == ["0 3 * * 0"]
        assert crons["stage-data"] == [] and crons["reproduce-paper"] == []  # on demand
        # a growing prefix of your own images, every night; deployed paused until it names your prefix
        assert crons["nightly-images"] == ["30 2 * * *"] and not deps["nightly-images"]["schedules"][0]["active"]
        assert "data.root=s3://photos/incoming/" in deps["nightly-images"]["parameters"]["overrides"]
        assert deps["reproduce-paper"]["entrypoint"] == "flows/reproduce_flow.py:reproduce"
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
        done = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
        runs = _post(info["api_url"] + "/flow_runs/filter", done, auth)
        assert any(fr["name"].startswith("stage-cpu-demo-") for fr in runs)
        staged = {"artifacts": {"key": {"any_": ["simsiam-staged-data"]}}}
        arts = _post(info["api_url"] + "/artifacts/filter", staged, auth)
        assert arts and "s3://data/datasets/fashion-mnist-train/" in arts[0]["data"]
    finally:
        stop_prefect(state)
        stop_s3(state)
