"""Ray Train / Tune on a real local Ray cluster (2 CPUs), with checkpoints on the real SeaweedFS
and metrics on a real MLflow server."""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local tests: no token file in ~/.ray

import pytest
import torch
from mlflow import MlflowClient

from conftest import FP32, tiny_args, tiny_config
from simsiam.services import start_mlflow, start_s3, stop_mlflow, stop_s3
from simsiam.storage import S3Settings, open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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


def _dist(s3, ml, **kw):
    from simsiam.ray import DistSettings

    storage = S3Settings(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key)
    return DistSettings(storage=storage, tracking_uri=ml.tracking_uri, experiment="ray-tests",
                        cpus_per_worker=0.99, **kw)


def test_two_worker_ddp_checkpoints_to_s3(stack, tmp_path):
    from simsiam.ray import load_result_checkpoint, pretrain_distributed

    _, s3, ml = stack
    dist = _dist(s3, ml, num_workers=2, max_failures=0)
    # base lr 0.5: the loss falls by ~0.26 over these 24 steps (0.05 at the preset's 0.06; measured in-process, fp32)
    cfg = tiny_config("train.epochs=3", "data.train_subset=512", "train.batch_size=64", "tracking.system_metrics=false",
                      "optim.base_lr=0.5", f"faults.weights_digest_dir={tmp_path}")
    res = pretrain_distributed(cfg, dist, name="ddp-test")
    assert res.error is None and res.metrics["step"] == 24  # 512 / 64 global batch x 3 epochs
    digests = {p.read_text() for p in tmp_path.glob("rank*.sha256")}
    assert len(list(tmp_path.glob("rank*.sha256"))) == 2 and len(digests) == 1  # DDP kept the ranks identical
    history = MlflowClient(ml.tracking_uri).get_metric_history(res.run_id, "train/loss")
    losses = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert len(losses) == 24 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.05, losses
    keys = [o["Key"] for o in open_store(dist.storage).list_keys("ray/ddp-test/")]
    assert any(k.endswith("checkpoint.pt") for k in keys), keys
    ckpt = load_result_checkpoint(res, dist)
    assert ckpt["step"] == 24 and ckpt["config"] == cfg.to_dict()


def test_worker_failure_resumes_from_s3_checkpoint(stack):
    from simsiam.ray import pretrain_distributed

    _, s3, ml = stack
    dist = _dist(s3, ml, num_workers=2, max_failures=2)
    cfg = tiny_config("train.epochs=3", "data.train_subset=256", "train.batch_size=32", "faults.fail_at_step=10",
                      "tracking.system_metrics=false")
    res = pretrain_distributed(cfg, dist, name="fault-test")
    assert res.error is None and res.metrics["step"] == 24  # exactly the planned steps
    client = MlflowClient(ml.tracking_uri)
    run = client.get_run(res.run_id)
    assert run.data.tags.get("simsiam.resumed_from_step") == "8"  # restarted from the epoch-1 checkpoint
    steps = [m.step for m in client.get_metric_history(res.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 25))  # one continuous history, no gap, no duplicates


def _cli_json(stdout: str) -> dict:
    return json.loads(stdout[stdout.rindex("\n{") + 1:] if not stdout.startswith("{") else stdout)  # Ray prints first


def test_cli_sweep_asha_collapse_stopper_and_best_trial_registered(stack):
    import ray

    state, s3, ml = stack
    # 32 steps per epoch. Without stop-grad at base lr 1.0 (bn=hidden, as in the Fig. 2 test) the
    # outputs collapse within the first epoch, so the collapse stopper acts at its first report.
    # ASHA never cuts the first trial to reach a rung, and cuts a later one only below the rung's
    # median, so trials run one at a time in grid order: (1.0, on) comes first and trains (kNN 42.2
    # after one epoch, random init 35.4; measured, fp32), and (1e-4, on) comes later, barely moves
    # (34.4) and must be cut at the first rung.
    args = tiny_args("model.width=8", "model.dim=128", "model.pred_dim=32", "data.train_subset=4096",
                     "train.epochs=4", "model.bn=hidden", "eval.knn_train_samples=500", "eval.knn_test_samples=500",
                     "eval.knn_k=20", "tracking.system_metrics=false", "tracking.experiment=ray-tests",
                     "eval.probe_epochs=5")
    env = {**os.environ, "SIMSIAM_STATE": str(state), "MLFLOW_TRACKING_URI": ml.tracking_uri,
           "RAY_ADDRESS": ray.get_runtime_context().gcs_address}  # this module's Ray, not a second one
    r = subprocess.run([sys.executable, "-m", "simsiam.cli", "sweep", "--lr", "1.0,0.0001", "--batch", "128",
                        "--grid", "loss.stop_grad=true,false", "--max-concurrent", "1", "--cpus-per-worker", "0.99",
                        "--track", *args], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = _cli_json(r.stdout)
    rows = {(t["optim.base_lr"], t["loss.stop_grad"]): t for t in out["trials"]}
    assert len(rows) == 4 and all(t["error"] is None for t in out["trials"])
    collapsed = rows[(1.0, False)]
    assert collapsed["collapsed"] and collapsed["stopped_by"] == "collapse" and collapsed["stopped_at_epoch"] < 4
    good, bad = rows[(1.0, True)], rows[(0.0001, True)]
    assert good["stopped_by"] == "completed" and good["stopped_at_epoch"] == 4 and not good["collapsed"]
    assert bad["stopped_by"] == "asha" and bad["stopped_at_epoch"] == 1, out["trials"]
    assert good["best_knn"] > bad["best_knn"] and out["best"]["trial"] == good["trial"]
    assert bad["lr"] == pytest.approx(0.0001 * 128 / 256)
    client = MlflowClient(ml.tracking_uri)
    parent = client.get_run(out["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{out['parent_run_id']}'")
    assert len(children) == 4 and all(c.info.status != "RUNNING" for c in children)
    assert sum(c.data.tags.get("simsiam.collapsed") == "true" for c in children) >= 1
    assert "sweep_results.md" in {a.path for a in client.list_artifacts(out["parent_run_id"])}
    assert "figures/sweep_heatmap.png" in {a.path for a in client.list_artifacts(out["parent_run_id"], "figures")}
    # --track registers the best trial: its child run holds the probe and is the version's source.
    best_run = next(c for c in children if c.data.tags["mlflow.runName"] == f"trial-{good['trial']}")
    version = client.get_model_version(out["registry"]["name"], out["registry"]["version"])
    assert version.run_id == best_run.info.run_id and out["registry"]["decision"] == "champion"
    assert client.get_run(best_run.info.run_id).data.metrics["probe/top1"] == pytest.approx(out["probe/top1"])
    # Ray pickles the run config (storage filesystem included) into the bucket: no key may be in it.
    store = open_store(S3Settings(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key))
    objects = [o for o in store.list_keys(f"ray/{out['sweep']}") if o["Size"] < 20_000_000]
    assert any(o["Key"].endswith("tuner.pkl") for o in objects)
    assert not [o["Key"] for o in objects if s3.secret_key.encode() in store.get_bytes(o["Key"])]
    assert s3.secret_key not in r.stdout + r.stderr


def test_cli_pretrain_on_ray_workers(stack, tmp_path):
    import ray

    state, s3, _ = stack
    env = {**os.environ, "SIMSIAM_STATE": str(state), "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    r = subprocess.run([sys.executable, "-m", "simsiam.cli", "pretrain", "--workers", "1", "--cpus-per-worker", "0.5",
                        "--out", str(tmp_path / "cli-ray"), *FP32, "--set", "model.width=4", "--set", "model.dim=32",
                        "--set", "model.pred_dim=8", "--set", "train.batch_size=32", "--set", "data.train_subset=64",
                        "--set", "train.epochs=1", "--set", "eval.knn_every_epochs=0", "--set", "train.device=cpu"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = _cli_json(r.stdout)
    assert out["steps"] == 2 and out["checkpoint"].startswith("s3://data/ray/cli-ray/")
    assert s3.secret_key not in r.stdout + r.stderr


def test_cli_reproduce_collapse_suite_reports_verdicts_and_tracks_a_parent_with_4_children(stack, tmp_path):
    import ray

    state, s3, ml = stack
    # reproduce-cpu, shortened: without stop-grad or without a predictor (bn=hidden, base lr 1.0) the
    # outputs collapse within these 64 steps; with both, z_std * sqrt(d) stays near 1.
    args = ["--preset", "reproduce-cpu", "--set", "train.epochs=4", "--set", "eval.knn_test_samples=500",
            "--set", "tracking.experiment=ray-tests", "--set", "data.download=false"]
    env = {**os.environ, "SIMSIAM_STATE": str(state), "MLFLOW_TRACKING_URI": ml.tracking_uri,
           "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    r = subprocess.run([sys.executable, "-m", "simsiam.cli", "reproduce", "--suite", "collapse", "--seeds", "1",
                        "--cpus-per-worker", "0.99", "--out", str(tmp_path / "rep"), "--track", *args],
                       capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    out = _cli_json(r.stdout)
    rows = {row["claim"]: row for row in out["rows"]}
    assert len(rows) == 4 and all(row["verdict"] != "no result" for row in rows.values()), out["rows"]
    assert rows["With stop-gradient and a predictor, SimSiam does not collapse"]["verdict"] == "holds"
    assert rows["Without stop-gradient the output collapses"]["verdict"] == "holds"
    assert rows["Without the predictor the output collapses"]["verdict"] == "holds"
    fixed = rows["A predictor fixed at its random init does far worse than a trained one"]
    assert fixed["verdict"] == "inconclusive at this budget" and "one seed" in fixed["why"]  # never more than shown
    report = json.loads(Path(out["report_json"]).read_text())
    assert report["rows"] == out["rows"] and Path(out["report_md"]).read_text().count("| Fig. 2 |") == 2
    for row in out["rows"]:
        assert {"claim", "table", "paper", "ours_mean", "ours_spread", "seeds", "collapsed", "verdict"} <= set(row)
        assert all({"z_std_ratio", "knn_top1"} <= set(t) for t in row["trials"]) and row["trials"]
    client = MlflowClient(ml.tracking_uri)
    parent_id = out["mlflow_parent_run"].rsplit("/", 1)[-1]
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["reproduce.trial"] for c in children} == {"baseline", "no_stop_grad", "no_predictor",
                                                                  "fixed_random_predictor"}
    assert all(c.data.tags["reproduce.table"] and c.data.tags["reproduce.claim"] for c in children)
    arts = {a.path for a in client.list_artifacts(parent_id)} | {
        a.path for a in client.list_artifacts(parent_id, "figures")}
    assert {"reproduce.md", "reproduce.json", "figures/reproduce_fig2.png"} <= arts
    assert (tmp_path / "rep" / "figures" / "reproduce_fig2.png").read_bytes()[:4] == b"\x89PNG"
