"""`simsiam run`, the main job, as a user runs it: a subprocess on a state dir of its own, with the
services it brings up (SeaweedFS, an `mlflow server`, Prefect's ephemeral API or a `simsiam up`
Prefect server). No Ray: these run beside the Ray tests (tests/conftest.py groups)."""

import json
import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from conftest import PIPELINE, TINY

pytestmark = pytest.mark.integration

FLOW = [*TINY, *PIPELINE]
# Without stop-grad and without output BN (paper Fig. 2 / Table 4b), z collapses within ~100 steps.
COLLAPSING = ["loss.stop_grad=false", "model.bn=hidden", "optim.base_lr=1.0", "train.batch_size=32", "train.epochs=6"]


def test_simsiam_run_twice_reuses_staged_data_and_keeps_worse_run_challenger(tmp_path):
    """`simsiam run` on a fresh state dir brings up S3 and MLflow itself, as on a new machine."""
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SIMSIAM_S3"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

    def run(*sets: str) -> dict:
        args = [sys.executable, "-m", "simsiam.cli", "run", "--subset", "512", "--state", str(state)]
        for s in FLOW + list(sets):
            args += ["--set", s]
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        secret = json.loads((state / "s3" / "credentials.json").read_text())["secret_key"]
        assert secret not in r.stdout + r.stderr
        return json.loads(r.stdout[r.stdout.index("{\n"):])

    try:
        first = run()
        where = first["where_to_look"]
        assert where["alias"] == "champion" and where["model_uri"].endswith("@champion")
        assert first["uploaded_objects"] > 0 and where["prefect_artifact"] == "simsiam-pipeline-report"
        assert (state / "prefect").is_dir()  # the ephemeral API kept its database in the state dir

        second = run(*COLLAPSING)
        assert second["uploaded_objects"] == 0  # staging was a cache hit
        assert second["collapsed"] and second["where_to_look"]["alias"] == "challenger"
        client = MlflowClient(where["mlflow_ui"])
        assert client.get_model_version_by_alias(where["registered_model"], "champion").version == where["version"]
    finally:
        subprocess.run([sys.executable, "-m", "simsiam.cli", "down", "--state", str(state)], capture_output=True,
                       timeout=120)


def _api(url: str, auth: str) -> dict:
    import base64
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _sixty_four_step_run(tmp_path):
    """(state dir, environment, CLI, `simsiam run` arguments) of a 64-step run checkpointed every 4 steps."""
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SIMSIAM_S3"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    cli = [sys.executable, "-m", "simsiam.cli"]
    args = [*cli, "run", "--subset", "512", "--state", str(state)]
    for s in [*FLOW, "train.batch_size=32", "train.epochs=4", "train.checkpoint_every_steps=4"]:
        args += ["--set", s]
    return state, env, cli, args


def test_killed_simsiam_run_resumes_at_its_checkpoint_and_marks_the_dead_runs(tmp_path):
    """kill -9 of `simsiam run` mid-training, then the same command: training continues from the
    checkpoint in the same run dir and MLflow run (no repeated steps); the dead flow runs are Crashed."""
    import signal
    import time

    from simsiam.checkpoint import load_checkpoint

    state, env, cli, args = _sixty_four_step_run(tmp_path)
    try:
        up = subprocess.run([*cli, "up", "--with-prefect-server", "--state", str(state)], capture_output=True,
                            text=True, env=env, timeout=300)
        assert up.returncode == 0, up.stderr
        api = json.loads(up.stdout)["prefect"]["api_url"]
        first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        deadline = time.monotonic() + 400
        ckpts = []
        while not ckpts or load_checkpoint(ckpts[0])["step"] < 8:
            assert first.poll() is None and time.monotonic() < deadline, "no checkpoint at step 8"
            time.sleep(0.5)
            ckpts = list((state / "runs").glob("*/checkpoint.pt"))
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        out = ckpts[0].parent
        killed_at = load_checkpoint(out)["step"]
        dead = json.loads((out / "attempt.json").read_text())
        assert 8 <= killed_at < 64 and not (out / "finished.json").exists()

        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        again = json.loads(r.stdout[r.stdout.index("{\n"):])
        assert again["resumed_from_step"] == killed_at and (out / "finished.json").exists()
        assert load_checkpoint(out)["step"] == 64 and len(list((state / "runs").iterdir())) == 1

        client = MlflowClient(again["where_to_look"]["mlflow_ui"])
        run = client.get_run(dead["mlflow_run_id"])  # the same MLflow run, continued
        assert run.info.run_id == again["run_id"] and again["run_id"] in again["where_to_look"]["run"]
        assert run.info.status == "FINISHED" and "simsiam.interrupted" in run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == sorted(set(steps)) and max(steps) == 64  # no step logged twice
        for flow_run_id in dead["prefect_flow_runs"]:
            state_ = _api(f"{api}/flow_runs/{flow_run_id}", (state / "prefect-auth").read_text().strip())["state"]
            assert state_["type"] == "CRASHED" and "resumes" in state_["message"]
    finally:
        subprocess.run([*cli, "down", "--state", str(state)], capture_output=True, timeout=120)


def test_bad_preset_fails_before_services_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "simsiam.cli", "run", "--preset", "no-such-preset",
                        "--state", str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no-such-preset" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_a_prefect_server_restart_mid_run_does_not_lose_the_run(tmp_path):
    """The embedded Prefect server is stopped mid-training and `simsiam up` starts it again 5 s later:
    the run's Prefect client waits (its retries back off), training goes on, and the flow run ends
    COMPLETED on the restarted server, with its report, which says the server restarted."""
    import time

    from simsiam.checkpoint import load_checkpoint
    from simsiam.services import stop_prefect

    state, env, cli, args = _sixty_four_step_run(tmp_path)
    up_args = [*cli, "up", "--with-prefect-server", "--state", str(state)]
    try:
        up = subprocess.run(up_args, capture_output=True, text=True, env=env, timeout=300)
        assert up.returncode == 0, up.stderr
        api = json.loads(up.stdout)["prefect"]["api_url"]
        run = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 400
        while not (ckpts := list((state / "runs").glob("*/checkpoint.pt"))) or load_checkpoint(ckpts[0])["step"] < 8:
            assert run.poll() is None and time.monotonic() < deadline, "no checkpoint at step 8"
            time.sleep(0.5)
        assert stop_prefect(state)
        time.sleep(5)
        again = subprocess.run(up_args, capture_output=True, text=True, env=env, timeout=300)
        assert again.returncode == 0 and json.loads(again.stdout)["prefect"]["api_url"] == api, again.stderr
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]
        out = json.loads(stdout[stdout.index("{\n"):])
        assert load_checkpoint(ckpts[0])["step"] == 64 and (ckpts[0].parent / "finished.json").exists()
        auth = (state / "prefect-auth").read_text().strip()
        attempt = json.loads((ckpts[0].parent / "attempt.json").read_text())
        states = [_api(f"{api}/flow_runs/{i}", auth)["state"]["type"] for i in attempt["prefect_flow_runs"]]
        assert states and set(states) == {"COMPLETED"}, states
        assert out["where_to_look"]["prefect_report"].startswith(api.removesuffix("/api"))
        report = _api(f"{api}/artifacts/{out['where_to_look']['prefect_report'].rsplit('/', 1)[1]}", auth)["data"]
        assert "**Note:** The Prefect server restarted during this run" in report and "the run went on" in report
    finally:
        subprocess.run([*cli, "down", "--state", str(state)], capture_output=True, timeout=120)
