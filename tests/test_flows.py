"""The Prefect pipeline against real services: SeaweedFS, an `mlflow server`, a Prefect test server
(prefect_test_harness) and, for `simsiam run`, Prefect's ephemeral API in a subprocess."""

import json
import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from flows.report import run_report
from simsiam import faults
from simsiam.config import load_config
from simsiam.services import start_mlflow, start_s3, stop_mlflow, stop_prefect, stop_s3

pytestmark = pytest.mark.integration

# 512 staged images, width-4 net, 1 epoch: the whole pipeline in ~15 s after start-up.
TINY = ["model.width=4", "model.dim=32", "model.pred_dim=8", "train.batch_size=64", "train.epochs=1",
        "eval.knn_every_epochs=0", "train.device=cpu", "tracking.system_metrics=false", "data.train_subset=null",
        "eval.probe_epochs=5", "data.download=false", "train.amp=none", "train.channels_last=false"]
# Without stop-grad and without output BN (paper Fig. 2 / Table 4b), z collapses within ~100 steps.
COLLAPSING = ["loss.stop_grad=false", "model.bn=hidden", "optim.base_lr=1.0", "train.batch_size=32", "train.epochs=6"]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    state = tmp_path_factory.mktemp("flowstate")
    s3 = start_s3(state)
    ml = start_mlflow(state)
    yield state, s3, ml
    stop_prefect(state)
    stop_mlflow(state)
    stop_s3(state)


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def _task_runs(name: str):
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[name])))


def test_pipeline_flow_retries_partial_io_then_registers_champion_once(services, harness, monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import REPORT_KEY, pipeline

    state, s3, ml = services
    # Staging fails after its first shard is stored, registration after the model version exists
    # (models logged, version created, no gate yet): each like a dropped connection, once.
    faults.reset()
    monkeypatch.setenv("SIMSIAM_INJECT_IO_FAULT", "stage,register")
    out = pipeline(overrides=TINY, subset=512, mlflow_uri=ml.tracking_uri, state=str(state))
    assert [tr.run_count for tr in _task_runs("stage-train")] == [2]
    assert [tr.run_count for tr in _task_runs("register")] == [2]
    # The retried staging resumed: the shard stored before the fault was not uploaded again
    # (train: its manifest only; test: shard + manifest).
    assert out["uploaded_objects"] == 1 + 2

    client = MlflowClient(ml.tracking_uri)
    name, run_id = out["registered"]["name"], out["run_id"]
    # The retried registration reused the first attempt's models and version instead of adding copies.
    versions = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    assert len(versions) == 1 and versions[0].tags["gate.decision"] == "champion"
    exp_id = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([exp_id], filter_string=f"source_run_id = '{run_id}'")
    assert sorted(m.name for m in models) == ["backbone", "encoder"]
    assert out["registered"]["decision"] == "champion" and not out["registered"]["noop"]
    assert client.get_model_version_by_alias(name, "champion").run_id == run_id
    run = client.get_run(run_id)
    assert run.data.metrics["probe/top1"] == pytest.approx(out["metrics"]["probe/top1"])
    assert run.data.tags["dataset.version"] == out["staged"]["train"].rsplit("/", 1)[1]

    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[REPORT_KEY])))
    assert len(arts) == 1
    report = arts[0].data
    assert out["run_url"] in report and "champion" in report and "healthy" in report
    assert s3.secret_key not in report and s3.access_key not in report

    # The evaluate flow on the registered champion gives the numbers the pipeline measured on its checkpoint.
    from flows.evaluate import evaluate

    staged = [f"data.source={out['staged']['train']}", f"data.test_source={out['staged']['test']}"]
    ev = evaluate(overrides=TINY + staged, model_uri=f"models:/{name}@champion", mlflow_uri=ml.tracking_uri,
                  state=str(state))
    assert ev["test_images"] == 512 and ev["model_uri"].endswith("@champion")
    assert ev["knn/top1"] == pytest.approx(out["metrics"]["knn/top1"], abs=0.5)
    assert ev["probe/top1"] == pytest.approx(out["metrics"]["probe/top1"], abs=0.5)
    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["simsiam-evaluation"])))
    # the pipeline's own evaluation shares the key; the API does not order the two by time
    assert any(f"models:/{name}@champion" in a.data for a in arts)


def test_simsiam_run_twice_reuses_staged_data_and_keeps_worse_run_challenger(tmp_path):
    """`simsiam run` on a fresh state dir brings up S3 and MLflow itself, as on a new machine."""
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SIMSIAM_S3"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

    def run(*sets: str) -> dict:
        args = [sys.executable, "-m", "simsiam.cli", "run", "--subset", "512", "--state", str(state)]
        for s in TINY + list(sets):
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


def test_killed_simsiam_run_resumes_at_its_checkpoint_and_marks_the_dead_runs(tmp_path):
    """kill -9 of `simsiam run` mid-training, then the same command: training continues from the
    checkpoint in the same run dir and MLflow run (no repeated steps); the dead flow runs are Crashed."""
    import signal
    import time

    from simsiam.checkpoint import load_checkpoint

    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SIMSIAM_S3"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    cli = [sys.executable, "-m", "simsiam.cli"]
    args = [*cli, "run", "--subset", "512", "--state", str(state)]
    for s in [*TINY, "train.batch_size=32", "train.epochs=4", "train.checkpoint_every_steps=4"]:  # 64 steps
        args += ["--set", s]
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
        assert run.info.run_id == again["where_to_look"]["run"].rsplit("/", 1)[-1]
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
    assert not (tmp_path / "s").exists()


def test_run_report_marks_collapse_and_redacts_credentials():
    cfg = load_config("cpu-demo", ["storage.endpoint_url=http://user:hunter2@127.0.0.1:9000"])
    staged = {"train": {"uri": "s3://data/datasets/x/1", "samples": 10, "shards": 1, "uploaded_objects": 0}}
    gate = {"name": "m", "version": "3", "decision": "challenger", "reasons": "collapsed", "url": "http://ml/#/models/m/versions/3",
            "alias_uri": "models:/m@challenger"}
    md = run_report(cfg, staged, {"run_id": "r1", "collapsed": True, "train/z_std_ratio": 0.01}, {"probe/top1": 11.0},
                    gate, "http://ml/#/experiments/1/runs/r1")
    assert "COLLAPSED" in md and "challenger" in md and "(http://ml/#/experiments/1/runs/r1)" in md
    assert "hunter2" not in md and "user:***@" in md
    healthy = run_report(cfg, staged, {"run_id": "r1", "collapsed": False}, None, None, None)
    assert "healthy" in healthy and "COLLAPSED" not in healthy


@pytest.mark.slow
def test_pipeline_sweep_mode_registers_best_trial(services, harness):
    import os as _os

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import pipeline

    _os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    state, s3, ml = services
    out = pipeline(overrides=TINY + ["tracking.experiment=flow-sweep", "model.backbone=resnet18"], subset=512,
                   mode="sweep", sweep_lr=[0.06, 0.5], sweep_batch=[64], mlflow_uri=ml.tracking_uri, state=str(state))
    client = MlflowClient(ml.tracking_uri)
    run = client.get_run(out["run_id"])
    assert run.data.tags["mlflow.runName"].startswith("trial-") and "mlflow.parentRunId" in run.data.tags
    assert out["registered"]["decision"] == "champion"  # its own registered name (resnet18): first version
    mv = client.get_model_version_by_alias(out["registered"]["name"], "champion")
    assert mv.run_id == out["run_id"] and "probe/top1" in run.data.metrics
    with get_client(sync_client=True) as pc:
        table = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["simsiam-sweep-trials"])))
    assert len(table) == 1 and table[0].type == "table"


@pytest.mark.parametrize("exc,transient", [
    (ConnectionError("dropped"), True), (OSError("reset"), True),
    ("storage", True), ("tracking", True), ("mlflow", True),
    ("config", False), ("data", False), (ValueError("bad"), False), (KeyError("k"), False),
])
def test_retries_are_for_io_failures_not_bad_input(exc, transient):
    from mlflow.exceptions import MlflowException
    from prefect.states import Failed

    from flows.tasks import _transient
    from simsiam.errors import ConfigError, DataError, StorageError
    from simsiam.tracking import TrackingError

    exc = {"storage": StorageError("S3 down"), "tracking": TrackingError("server down"),
           "mlflow": MlflowException("503"), "config": ConfigError("unknown key"),
           "data": DataError("corrupt checkpoint")}.get(exc, exc) if isinstance(exc, str) else exc
    assert _transient(None, None, Failed(data=exc)) is transient


def test_reproduce_flow_publishes_the_claim_table_as_a_markdown_artifact(services, harness, tmp_path):
    import os as _os

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.reproduce import reproduce

    _os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    state, s3, ml = services
    tiny = ["model.width=4", "data.train_subset=256", "train.epochs=1", "eval.knn_train_samples=256",
            "eval.knn_test_samples=256", "eval.knn_k=20", "tracking.experiment=flow-reproduce", "data.download=false"]
    out = reproduce(suite="collapse", seeds=1, overrides=tiny, out=str(tmp_path / "rep"), cpus_per_worker=0.99,
                    mlflow_uri=ml.tracking_uri, state=str(state))
    assert len(out["rows"]) == 4 and out["mlflow_parent_run"].startswith(ml.tracking_uri)
    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["simsiam-reproduce"])))
    assert len(arts) == 1 and arts[0].type == "markdown"
    assert "Without stop-gradient the output collapses" in arts[0].data and "| Table 1b |" in arts[0].data
    assert arts[0].data == (tmp_path / "rep" / "reproduce.md").read_text()
