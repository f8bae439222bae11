"""Ray Train / Tune on a real local Ray cluster (2 CPUs), with checkpoints on the real SeaweedFS
and metrics on a real MLflow server; the Prefect flows that run on Ray (pipeline in sweep mode,
reproduce) against a Prefect test server."""

import json
import logging
import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local tests: no token file in ~/.ray

import pytest
from mlflow import MlflowClient

from conftest import PIPELINE, TINY
from simsiam.services import start_mlflow, start_s3, stop_mlflow, stop_s3
from simsiam.storage import S3Settings, open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    import ray

    from simsiam.ray import init_ray

    state = tmp_path_factory.mktemp("raystate")
    s3 = start_s3(state)
    ml = start_mlflow(state)
    init_ray(num_cpus=2, storage=S3Settings(endpoint_url=s3.endpoint_url, access_key=s3.access_key,
                                            secret_key=s3.secret_key))
    yield state, s3, ml
    ray.shutdown()
    stop_mlflow(state)
    stop_s3(state)


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def test_pipeline_sweep_asha_cuts_a_slow_trial_stops_a_collapsed_one_in_one_reused_process_and_registers_the_best(
        stack, harness):
    """The pipeline flow in sweep mode (what `simsiam run --mode sweep` runs): stage, a Ray Tune grid,
    evaluate and register the best trial, the trial table as a Prefect artifact."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import pipeline

    state, s3, ml = stack
    # 32 steps per epoch. Without stop-grad at base lr 1.0 (bn=hidden, as in the Fig. 2 test) the
    # outputs collapse within the first epoch, so the collapse stopper acts at its first report.
    # ASHA never cuts the first trial to reach a rung, and cuts a later one only below the rung's
    # median, so trials run one at a time in grid order: (1.0, on) comes first and trains (kNN 42.2
    # after one epoch of a 4-epoch run, random init 35.4; measured, fp32), and (1e-4, on) comes later,
    # barely moves (34.4) and must be cut at the first rung. Two epochs are enough for all of it.
    overrides = [*TINY, *PIPELINE, "model.width=8", "model.dim=128", "model.pred_dim=32", "train.epochs=2",
                 "model.bn=hidden", "eval.knn_train_samples=500", "eval.knn_test_samples=500", "eval.knn_k=20",
                 "tracking.experiment=flow-sweep"]
    out = pipeline(overrides=overrides, subset=4096, mode="sweep", sweep_lr=[1.0, 0.0001], sweep_batch=[128],
                   sweep_grid={"loss.stop_grad": [True, False]}, sweep_max_concurrent=1, mlflow_uri=ml.tracking_uri,
                   state=str(state))
    rows = {(t["optim.base_lr"], t["loss.stop_grad"]): t for t in out["sweep_trials"]}
    assert len(rows) == 4 and all(t["error"] is None for t in out["sweep_trials"])
    collapsed = rows[(1.0, False)]
    assert collapsed["collapsed"] and collapsed["stopped_by"] == "collapse" and collapsed["stopped_at_epoch"] < 2
    good, bad = rows[(1.0, True)], rows[(0.0001, True)]
    assert good["stopped_by"] == "completed" and good["stopped_at_epoch"] == 2 and not good["collapsed"]
    assert bad["stopped_by"] == "asha" and bad["stopped_at_epoch"] == 1, out["sweep_trials"]
    assert good["knn/best_top1"] > bad["knn/best_top1"] and bad["lr"] == pytest.approx(0.0001 * 128 / 256)
    # Tune hands each next trial to the same process (reuse_actors), after an ASHA cut or a collapse stop too
    assert len({t["pid"] for t in out["sweep_trials"]}) == 1 and collapsed["pid"] is not None

    client = MlflowClient(ml.tracking_uri)
    run = client.get_run(out["run_id"])  # the registered run: the best healthy trial's child run
    assert run.data.tags["mlflow.runName"] == f"trial-{good['trial']}" and "probe/top1" in run.data.metrics
    parent_id = run.data.tags["mlflow.parentRunId"]
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 4 and all(c.info.status != "RUNNING" for c in children)
    assert sum(c.data.tags.get("simsiam.collapsed") == "true" for c in children) == 1
    assert client.get_run(parent_id).data.metrics["sweep/best_knn_top1"] == pytest.approx(good["knn/best_top1"])
    assert good["run_id"] == out["run_id"]  # each row names its trial's child run
    assert "sweep_results.md" in {a.path for a in client.list_artifacts(parent_id)}
    assert "figures/sweep_heatmap.png" in {a.path for a in client.list_artifacts(parent_id, "figures")}
    assert out["registered"]["decision"] == "champion"  # its own registered name: the first version
    assert client.get_model_version_by_alias(out["registered"]["name"], "champion").run_id == out["run_id"]
    with get_client(sync_client=True) as pc:
        table = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["simsiam-sweep-trials"])))
        logs = pc.read_logs()
    data = table[0].data if len(table) == 1 else None
    assert table[0].type == "table" and len(json.loads(data) if isinstance(data, str) else data) == 4
    assert logs and not [log.message for log in logs if s3.secret_key in log.message]  # the flow's logs
    # Ray pickles the run config (storage filesystem included) into the bucket: no key may be in it.
    sweep_name = client.get_run(parent_id).data.tags["mlflow.runName"]
    store = open_store(S3Settings(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key))
    objects = [o for o in store.list_keys(f"ray/{sweep_name}") if o["Size"] < 20_000_000]
    assert any(o["Key"].endswith("tuner.pkl") for o in objects)
    assert not [o["Key"] for o in objects if s3.secret_key.encode() in store.get_bytes(o["Key"])]


def test_reproduce_flow_reaches_the_collapse_verdicts_tracks_4_children_and_publishes_the_table(
        stack, harness, tmp_path):
    """The `reproduce` flow (the same step `simsiam reproduce` calls) on a local Ray: reproduce-cpu,
    shortened. Without stop-grad or without a predictor (bn=hidden, base lr 1.0) the outputs collapse
    within these 64 steps; with both, z_std * sqrt(d) stays near 1."""
    from pathlib import Path

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.reproduce_flow import reproduce

    state, s3, ml = stack
    printed = PrefectLines()
    logging.getLogger("prefect").addHandler(printed)
    try:
        out = reproduce(suite="collapse", seeds=1, out=str(tmp_path / "rep"), cpus_per_worker=0.99,
                        overrides=["train.epochs=4", "data.train_subset=2048", "model.head_conv=null",
                                   "data.crop_min_scale=0.2", "train.amp=none", "train.channels_last=false",
                                   "eval.knn_train_samples=512",
                                   "eval.knn_test_samples=500", "eval.probe_train_samples=2000",
                                   "eval.probe_epochs=5", "tracking.experiment=flow-reproduce", "data.download=false"],
                        mlflow_uri=ml.tracking_uri, state=str(state))
    finally:
        logging.getLogger("prefect").removeHandler(printed)
    # Tune's live table (printed into the flow's log) names each trial, not a truncated dict of its spec
    # (Tune shortens any value over 20 characters: "...m_predictor-seed0")
    assert "trial_name" in printed.text and "no_predictor-seed0" in printed.text and "overrides" not in printed.text
    rows = {row["claim"]: row for row in out.rows}
    assert len(rows) == 5 and all(row["verdict"] != "no result" for row in rows.values()), out.rows
    assert rows["With stop-gradient and a predictor, SimSiam does not collapse"]["verdict"] == "holds"
    assert rows["Without stop-gradient the output collapses"]["verdict"] == "holds"
    assert rows["Without the predictor the output collapses"]["verdict"] == "holds"
    fixed = rows["A predictor fixed at its random init does far worse than a trained one"]
    assert fixed["verdict"] == "inconclusive at this budget" and "1 paired seed" in fixed["why"]  # no more than shown
    loss = rows["With a predictor fixed at its random init the loss does not converge: it stays high"]
    assert loss["metric"] == "loss" and -1 <= loss["ours_mean"] <= 1 and -1 <= loss["vs_mean"] <= 1  # a cosine loss
    report = json.loads(Path(out.report_json).read_text())
    assert report["rows"] == out.rows and Path(out.report_md).read_text().count("| Fig. 2 |") == 2
    for row in out.rows:
        assert {"claim", "table", "paper", "ours_mean", "ours_spread", "seeds", "collapsed", "verdict"} <= set(row)
        assert all({"train/z_std_ratio", "knn/final_top1", "probe/top1", "train/loss"} <= set(t) for t in row["trials"])
        assert row["trials"]
    base = rows["With stop-gradient and a predictor, SimSiam does not collapse"]["trials"][0]
    assert base["probe/top1"] > 50 and base["knn/final_top1"] > 40  # the final eval on the full 10k test split

    client = MlflowClient(ml.tracking_uri)
    assert out.mlflow_parent_run.startswith(ml.tracking_uri)
    parent_id = out.mlflow_parent_run.split("/runs/")[1].split("?")[0].split("/")[0]
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert all("probe/top1" in c.data.metrics and "knn/final_top1" in c.data.metrics for c in children)
    assert {c.data.tags["reproduce.trial"] for c in children} == {"baseline", "no_stop_grad", "no_predictor",
                                                                  "fixed_random_predictor"}
    assert all(c.data.tags["reproduce.table"] and c.data.tags["reproduce.claim"] for c in children)
    arts = {a.path for a in client.list_artifacts(parent_id)} | {
        a.path for a in client.list_artifacts(parent_id, "figures")}
    assert {"reproduce.md", "reproduce.json", "figures/reproduce_fig2.png"} <= arts
    assert (tmp_path / "rep" / "figures" / "reproduce_fig2.png").read_bytes()[:4] == b"\x89PNG"

    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["simsiam-reproduce"])))
    assert len(arts) == 1 and arts[0].type == "markdown"
    assert "Without stop-gradient the output collapses" in arts[0].data and "| Table 1b |" in arts[0].data
    assert arts[0].data == (tmp_path / "rep" / "reproduce.md").read_text()


def test_a_ray_worker_trains_on_an_unlabelled_folder_with_the_knn_monitor_on_the_eval_data(stack, harness, tmp_path,
                                                                                             fmnist_test):
    """`simsiam run --data DIR --eval fashion-mnist --workers 1`: the Ray worker streams the staged
    collection (no labels), its kNN monitor reads the staged evaluation data, and the run is judged."""
    from PIL import Image

    from flows.pipeline import pipeline

    state, _, ml = stack
    photos = tmp_path / "photos"
    (photos / "a").mkdir(parents=True)
    for i in range(256):
        Image.fromarray(fmnist_test.images[i, 0].numpy()).save(photos / ("a" if i % 2 else "") / f"{i:03d}.png")
    own = [*TINY, *PIPELINE, "data.dataset=images", f"data.root={photos}", "eval.dataset=fashion-mnist",
           "eval.knn_every_epochs=1", "eval.knn_train_samples=256", "eval.knn_test_samples=128",
           "tracking.experiment=ray-own-images"]
    out = pipeline(overrides=own, subset=512, workers=1, mlflow_uri=ml.tracking_uri, state=str(state))
    assert out["staged"]["train"].startswith("s3://data/datasets/photos/")
    assert set(out["staged"]) == {"train", "eval-train", "eval-test"}
    assert out["registered"]["decision"] == "champion"
    history = MlflowClient(ml.tracking_uri).get_metric_history(out["run_id"], "knn/top1")
    assert [m.step for m in history] == [0, 4]  # at the random init, and after the one epoch of 4 steps
    assert out["metrics"]["knn/top1"] == pytest.approx(history[-1].value)
    assert out["eval_set"].startswith("probe trained on fashion-mnist-train@")


def test_a_sweep_without_labels_ranks_its_trials_by_the_label_free_judge_and_registers_the_best_on_it(
        stack, harness, tmp_path, fmnist_test):
    """`simsiam run --data DIR --mode sweep` with no labelled data: ASHA and the best trial go by the
    label-free judge (`eval.label_free_judge`, the default metric without labels), and the gate crowns
    the best trial on it."""
    from PIL import Image

    from flows.pipeline import pipeline

    state, _, ml = stack
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(256):
        Image.fromarray(fmnist_test.images[i, 0].numpy()).save(photos / f"{i:03d}.png")
    own = [*TINY, *PIPELINE, "data.dataset=images", f"data.root={photos}", "train.epochs=2",
           "tracking.experiment=ray-sweep-label-free"]
    client = MlflowClient(ml.tracking_uri)
    if client.search_registered_models("name='simsiam-images-resnet18_cifar'"):  # a probe-judged champion of
        client.delete_registered_model("simsiam-images-resnet18_cifar")  # an earlier test: not comparable
    out = pipeline(overrides=own, mode="sweep", sweep_lr=[0.5, 0.0001], sweep_batch=[64], sweep_max_concurrent=1,
                   mlflow_uri=ml.tracking_uri, state=str(state))
    rows = out["sweep_trials"]
    assert len(rows) == 2 and all(r["error"] is None and r["knn/best_top1"] is None for r in rows), rows
    assert all(r["objective"] >= r["label_free/std_ratio"] for r in rows)  # the best over its epochs
    best = max((r for r in rows if not r["collapsed"]), key=lambda r: r["objective"])
    assert out["run_id"] == best["run_id"] and out["registered"]["decision"] == "champion"
    parent = client.get_run(client.get_run(best["run_id"]).data.tags["mlflow.parentRunId"]).data
    assert parent.tags["simsiam.sweep_metric"] == "label_free/std_ratio"
    assert parent.metrics["sweep/best_label_free_std_ratio"] == pytest.approx(best["objective"])
    version = client.get_model_version(out["registered"]["name"], out["registered"]["version"])
    assert version.tags["gate.criterion"] == "label_free/std_ratio"


def test_a_one_cpu_ray_worker_trains_on_one_thread_whatever_the_drivers_omp_setting(stack):
    """Two one-CPU trials on two cores, each on the driver's OMP_NUM_THREADS=2, oversubscribe the
    cores; the loop sets torch's threads to the CPUs that Ray assigned to its process."""
    import ray

    @ray.remote(num_cpus=1, runtime_env={"env_vars": {"OMP_NUM_THREADS": "2"}})
    def threads() -> tuple[int, int]:
        import torch

        from simsiam.ray.worker import _use_assigned_cpus

        torch.set_num_threads(2)  # what OMP_NUM_THREADS=2 gives a process that imported torch first
        before = torch.get_num_threads()
        _use_assigned_cpus()
        return before, torch.get_num_threads()

    assert ray.get(threads.remote()) == (2, 1)


class PrefectLines(logging.Handler):
    """What the flow logs through Prefect's loggers (its prints included: log_prints=True)."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += record.getMessage() + "\n"
