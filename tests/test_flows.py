"""The Prefect flows in this process against real services: SeaweedFS, an `mlflow server`, a Prefect
test server (prefect_test_harness). The flows that run on Ray (sweep, reproduce) are in
test_distributed.py, `simsiam run` as a subprocess in test_run_cli.py."""


import json
import os
from unittest import mock

import pytest
from mlflow import MlflowClient

from conftest import PIPELINE, TINY, tiny_sets
from simsiam.config import load_config
from simsiam.results import Registration, Staged, TrainedRun
from simsiam.run_report import run_report
from simsiam.services import start_mlflow, start_s3, stop_mlflow, stop_prefect, stop_s3
from simsiam.steps import RunContext
from simsiam.testing.faults import FlakyClient, FlakyStore

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


def test_pipeline_flow_retries_partial_io_then_registers_champion_once(services, harness):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import REPORT_KEY, pipeline

    state, s3, ml = services
    ctx = RunContext.open(load_config("cpu-demo", FLOW), state, tracking_uri=ml.tracking_uri)
    # Staging fails after its first shard is stored (before its manifest: put #2), registration after the
    # model version exists (models logged, version created, no gate yet): each like a dropped connection, once.
    out = pipeline(context=ctx.with_handles(store=FlakyStore(ctx.store, fail_on=2),
                                            mlflow=FlakyClient(ctx.mlflow, "set_model_version_tag")), subset=512)
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
    assert out["where_to_look"]["run"] in report and "champion" in report and "healthy" in report
    assert s3.secret_key not in report and s3.access_key not in report

    # The evaluate flow on the registered champion gives the numbers the pipeline measured on its checkpoint.
    from flows.evaluate_flow import evaluate

    staged = [f"data.source={out['staged']['train']}", f"data.test_source={out['staged']['test']}"]
    ev = evaluate(overrides=FLOW + staged, model_uri=f"models:/{name}@champion", mlflow_uri=ml.tracking_uri,
                  state=str(state))
    assert ev.test_images == 512 and ev.model_uri.endswith("@champion")
    assert ev.metrics["knn/final_top1"] == pytest.approx(out["metrics"]["knn/final_top1"], abs=0.5)
    assert ev.metrics["probe/top1"] == pytest.approx(out["metrics"]["probe/top1"], abs=0.5)
    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["simsiam-evaluation"])))
    assert any(f"models:/{name}@champion" in a.data for a in arts)


@pytest.fixture(scope="module")
def counted_run(services, harness):
    """One `simsiam run`, in this process, with every config resolution, service opening and
    checkpoint read counted on the way (the services of the module are reused, not started)."""
    from typer.testing import CliRunner

    import flows.common
    import simsiam.checkpoint
    import simsiam.cli
    import simsiam.config
    import simsiam.services.endpoints
    import simsiam.steps.resume
    import simsiam.storage.client
    from simsiam.steps import RunContext as Ctx

    state, s3, ml = services
    counts, patches = {}, [(simsiam.config, "load_config"), (simsiam.cli, "load_config"),
                           (flows.common, "load_config"), (simsiam.steps.resume, "load_config"),
                           (simsiam.services.endpoints, "tracking_server"),
                           (simsiam.services.endpoints, "object_store"), (simsiam.checkpoint, "load_checkpoint"),
                           (simsiam.checkpoint, "checkpoint_from_bytes")]
    with pytest.MonkeyPatch.context() as mp, mock.patch.dict(os.environ):
        for module, name in patches:
            mp.setattr(module, name, _counted(counts, name, getattr(module, name)))
        mp.setattr(Ctx, "open", classmethod(_counted(counts, "RunContext.open", Ctx.open.__func__)))
        mp.setattr(simsiam.storage.client.ObjectStore, "__init__",
                   _counted(counts, "ObjectStore", simsiam.storage.client.ObjectStore.__init__))
        args = ["run", "--subset", "512", "--state", str(state), "--tracking-uri", ml.tracking_uri,
                *tiny_sets(*PIPELINE, "tracking.experiment=counted", "eval.knn_every_epochs=1",
                           "eval.knn_train_samples=256", "eval.knn_test_samples=128")]
        r = CliRunner().invoke(simsiam.cli.app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output[-3000:]
    return json.loads(r.stdout[r.stdout.index("{\n"):]), counts


def _counted(counts: dict, name: str, fn):
    def wrapper(*args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        return fn(*args, **kwargs)

    return wrapper


def test_one_simsiam_run_resolves_its_config_once_opens_each_service_once_and_reads_its_checkpoint_once(counted_run):
    out, counts = counted_run
    assert out["where_to_look"]["alias"] in ("champion", "challenger")
    resolutions = counts.get("load_config", 0)
    assert resolutions == 1, counts  # the CLI's; the flow and its tasks get the context
    assert counts["RunContext.open"] == 1 and counts["tracking_server"] == 1 and counts["object_store"] == 1, counts
    assert counts["ObjectStore"] == 1, counts  # one store handle for staging, training, evaluation
    assert counts.get("load_checkpoint", 0) + counts.get("checkpoint_from_bytes", 0) == 1, counts  # evaluate's


def test_the_run_json_the_mlflow_run_and_the_report_give_each_metric_key_the_same_value(counted_run, services):
    """One name per metric: `knn/top1` is the monitor during training, `knn/final_top1` the kNN on the
    full test split after it; the JSON keeps full precision, the report rounds to 2 decimals."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import REPORT_KEY

    out, _ = counted_run
    metrics = out["metrics"]
    assert set(metrics) == {"train/loss", "train/z_std_ratio", "knn/top1", "knn/best_top1", "knn/final_top1",
                            "probe/top1", "probe/train_top1", "label_free/rankme", "label_free/alignment",
                            "label_free/uniformity", "label_free/std_ratio"}
    client = MlflowClient(services[2].tracking_uri)
    logged = client.get_run(out["run_id"]).data.metrics
    assert {k: logged[k] for k in metrics} == metrics  # the run's last value of each key, to the last digit
    monitor = [m.value for m in client.get_metric_history(out["run_id"], "knn/top1")]
    assert monitor[-1] == metrics["knn/top1"] and len(monitor) == 2  # at init and after the epoch: the monitor only
    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[REPORT_KEY])))
    (report,) = [a.data for a in arts if out["run_id"] in a.data]
    shown = {cells[1].strip("` "): cells[3].strip() for cells in (line.split("|") for line in report.splitlines())
             if len(cells) == 5 and cells[1].strip().startswith("`")}
    assert shown == {k: f"{v:.2f}" for k, v in metrics.items()}


def test_run_report_marks_collapse_and_redacts_credentials():
    cfg = load_config("cpu-demo", ["storage.endpoint_url=http://user:hunter2@127.0.0.1:9000"])
    staged = {"train": Staged("s3://data/datasets/x/1", "m", "x", "1", "train", 10, 1, 100, 0, True)}
    gate = Registration("m", "3", "challenger", "collapsed", url="http://ml/#/models/m/versions/3",
                        alias_uri="models:/m@challenger")
    collapsed = TrainedRun("s3://data/ray/r/checkpoint.pt", True, run_id="r1", steps=96, epochs=3,
                           run_url="http://ml/#/experiments/1/runs/r1", metrics={"train/z_std_ratio": 0.01234})
    md = run_report(cfg, staged, collapsed, None, gate)
    assert "COLLAPSED" in md and "challenger" in md and "(http://ml/#/experiments/1/runs/r1)" in md
    assert "96 steps, 3 epochs" in md and "| `train/z_std_ratio` | collapse ratio" in md and "| 0.01 |" in md
    assert "hunter2" not in md and "user:***@" in md
    healthy = run_report(cfg, staged, TrainedRun("/tmp/checkpoint.pt", False, run_id="r1"), None, None)
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


def test_own_images_without_labels_are_gated_label_free_and_a_probe_judged_version_is_not_compared_with_them(
        services, harness, tmp_path, fmnist_test):
    """`simsiam run --data <folder>` without labelled evaluation data: no kNN monitor; the label-free
    metrics judge the encoder and the gate promotes it on the label-free judge; a second run is
    compared with that champion on it; a version judged by a probe (--eval fashion-mnist) is not
    compared with it."""
    from PIL import Image

    from flows.pipeline import pipeline

    state, _, ml = services
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(256):
        Image.fromarray(fmnist_test.images[i, 0].numpy()).save(photos / f"{i:03d}.png")
    own = [*FLOW, "data.dataset=images", f"data.root={photos}", "eval.knn_every_epochs=1",
           "eval.knn_train_samples=256", "eval.knn_test_samples=128", "tracking.experiment=own-images"]
    ctx = RunContext.open(load_config("cpu-demo", own), state, tracking_uri=ml.tracking_uri)
    out = pipeline(context=ctx)
    gate = out["registered"]
    assert gate["name"] == "simsiam-images-resnet18_cifar" and gate["decision"] == "champion"
    judge = out["metrics"]["label_free/std_ratio"]  # eval.label_free_judge's default
    assert gate["reasons"] == f"label_free/std_ratio {judge:.2f}, not collapsed, no previous champion"
    assert set(out["metrics"]) == {"train/loss", "train/z_std_ratio", "label_free/rankme", "label_free/alignment",
                                   "label_free/uniformity", "label_free/std_ratio"} and out["eval_set"] is None
    assert out["label_free_set"].startswith(f"256 images (seed 0) of {out['staged']['train'].split('/')[-2]}@")
    assert "64 view pairs, 28 px, grey views, " in out["label_free_set"]
    client = MlflowClient(ml.tracking_uri)
    assert "knn/top1" not in client.get_run(out["run_id"]).data.metrics  # monitor off
    v1 = client.get_model_version(gate["name"], gate["version"])
    assert v1.tags["gate.criterion"] == "label_free/std_ratio" and v1.tags["label_free.set"] == out["label_free_set"]
    assert "| `label_free/std_ratio` | collapse ratio of the backbone features" in v1.description  # the card
    assert f"label-free metrics on {out['label_free_set']}" in v1.description
    assert "figures/spectrum.png" in {a.path for a in client.list_artifacts(out["run_id"], "figures")}

    second = pipeline(context=ctx.with_config(load_config("cpu-demo", [*own, "train.seed=1"])))
    again = second["metrics"]["label_free/std_ratio"]
    assert second["registered"]["decision"] == ("champion" if again > judge else "challenger")
    assert f"champion v{gate['version']} ({judge:.2f})" in second["registered"]["reasons"]  # the same images

    for i in range(256, 320):  # the collection grows: a new version, another sample, the champion measured again
        Image.fromarray(fmnist_test.images[i, 0].numpy()).save(photos / f"{i:03d}.png")
    grown = pipeline(context=ctx)
    crown = client.get_model_version_by_alias(gate["name"], "champion").version
    assert f"champion v{crown}, re-measured on this sample (" in grown["registered"]["reasons"]
    assert grown["label_free_set"] != out["label_free_set"]

    judged = pipeline(context=RunContext.open(load_config("cpu-demo", [*own, "eval.dataset=fashion-mnist"]), state,
                                              tracking_uri=ml.tracking_uri), subset=512)
    assert judged["registered"]["decision"] == "challenger"
    assert "gated on label_free/std_ratio" in judged["registered"]["reasons"]  # probe vs label-free: not compared
    assert {"knn/top1", "knn/final_top1", "probe/top1"} <= set(judged["metrics"])
    assert judged["eval_set"].startswith("probe trained on fashion-mnist-train@")
    assert set(judged["staged"]) == {"train", "eval-train", "eval-test"}

    # the champion's features of the collection join back to the user's files by origin
    import io

    import pyarrow.parquet as pq

    from simsiam.steps import embed

    emb = embed(ctx, f"models:/{gate['name']}@champion", "photos@latest")
    part = next(o["Key"] for o in ctx.store.list_keys(emb.uri.removeprefix("s3://data/")) if "part-" in o["Key"])
    table = pq.read_table(io.BytesIO(ctx.store.get_bytes(part)))
    assert emb.num_rows == 320 and table.column("origin").to_pylist() == [f"{i:03d}.png" for i in range(320)]
