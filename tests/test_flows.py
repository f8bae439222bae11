"""The Prefect flows in this process against real services: SeaweedFS, an `mlflow server`, a Prefect
test server (prefect_test_harness). The flows that run on Ray (sweep, reproduce) are in
test_distributed.py, `simsiam run` as a subprocess in test_run_cli.py."""


import pytest
from mlflow import MlflowClient

from conftest import PIPELINE, TINY
from flows.run_report import run_report
from simsiam import faults
from simsiam.config import load_config
from simsiam.services import start_mlflow, start_s3, stop_mlflow, stop_prefect, stop_s3
from simsiam.steps import TrainedRun

pytestmark = pytest.mark.integration

# 512 staged images, width-4 net, 1 epoch: the whole pipeline in ~15 s after start-up.
FLOW = [*TINY, *PIPELINE]


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
    out = pipeline(overrides=FLOW, subset=512, mlflow_uri=ml.tracking_uri, state=str(state))
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
    from flows.evaluate_flow import evaluate

    staged = [f"data.source={out['staged']['train']}", f"data.test_source={out['staged']['test']}"]
    ev = evaluate(overrides=FLOW + staged, model_uri=f"models:/{name}@champion", mlflow_uri=ml.tracking_uri,
                  state=str(state))
    assert ev["test_images"] == 512 and ev["model_uri"].endswith("@champion")
    assert ev["knn/top1"] == pytest.approx(out["metrics"]["knn/top1"], abs=0.5)
    assert ev["probe/top1"] == pytest.approx(out["metrics"]["probe/top1"], abs=0.5)
    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["simsiam-evaluation"])))
    # the pipeline's own evaluation shares the key; the API does not order the two by time
    assert any(f"models:/{name}@champion" in a.data for a in arts)


def test_run_report_marks_collapse_and_redacts_credentials():
    cfg = load_config("cpu-demo", ["storage.endpoint_url=http://user:hunter2@127.0.0.1:9000"])
    staged = {"train": {"uri": "s3://data/datasets/x/1", "samples": 10, "shards": 1, "uploaded_objects": 0}}
    gate = {"name": "m", "version": "3", "decision": "challenger", "reasons": "collapsed", "url": "http://ml/#/models/m/versions/3",
            "alias_uri": "models:/m@challenger"}
    collapsed = TrainedRun("s3://data/ray/r/checkpoint.pt", True, run_id="r1", steps=96, epochs=3,
                           metrics={"train/z_std_ratio": 0.01})
    md = run_report(cfg, staged, collapsed, {"probe/top1": 11.0}, gate, "http://ml/#/experiments/1/runs/r1")
    assert "COLLAPSED" in md and "challenger" in md and "(http://ml/#/experiments/1/runs/r1)" in md
    assert "| steps | 96 |" in md and "| epochs | 3 |" in md and "| z_std x sqrt(d) | 0.01 |" in md
    assert "hunter2" not in md and "user:***@" in md
    healthy = run_report(cfg, staged, TrainedRun("/tmp/checkpoint.pt", False, run_id="r1"), None, None, None)
    assert "healthy" in healthy and "COLLAPSED" not in healthy


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
