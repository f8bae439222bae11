"""A real multi-node Ray cluster (`ray.cluster_utils.Cluster`: a head with no CPU for work, and two
1-CPU worker nodes, each with its own cache dir, so nothing relies on a shared filesystem), with the
real SeaweedFS for data and checkpoints and a real MLflow server."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local tests: no token file in ~/.ray

import pytest
from mlflow import MlflowClient

from conftest import tiny_config, tiny_sets
from simsiam.errors import ConfigError, StorageError
from simsiam.services import start_mlflow, start_s3, stop_mlflow, stop_s3
from simsiam.storage import S3Settings, open_store, stage_dataset
from simsiam.testing.faults import WeightsDigest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("ray")]
SHARDS, SHARD_SIZE = 8, 256


class ThreeNodeCluster:
    def __init__(self, tmp, state, s3, ml):
        from ray.cluster_utils import Cluster

        self.tmp, self.state, self.s3, self.ml = tmp, state, s3, ml
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        self.nodes = [self.add_node() for _ in range(2)]

    def add_node(self):
        cache = self.tmp / f"cache-{len(getattr(self, 'nodes', [])) + int(time.time() * 1000) % 10**6}"
        node = self.cluster.add_node(num_cpus=1, env_vars={"SIMSIAM_CACHE": str(cache)})
        self.cluster.wait_for_nodes()
        return node

    def dist(self, **kw):
        from simsiam.ray import RayWorkers

        storage = S3Settings(endpoint_url=self.s3.endpoint_url, access_key=self.s3.access_key,
                             secret_key=self.s3.secret_key)
        return RayWorkers(storage=storage, tracking_uri=self.ml.tracking_uri, experiment="multinode",
                          cpus_per_worker=1, placement_strategy="SPREAD", state_path=str(self.state), **kw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, fmnist_train):
    import ray

    from simsiam.ray.cluster import export_credentials

    if ray.is_initialized():  # an in-process flow earlier in the session started a local Ray: not this one
        ray.shutdown()
    tmp = tmp_path_factory.mktemp("multinode")
    state = tmp / "state"
    s3, ml = start_s3(state), start_mlflow(state)
    settings = S3Settings(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key)
    stage_dataset(fmnist_train.subset(range(SHARDS * SHARD_SIZE)), open_store(settings), "fm-2k",
                  shard_size=SHARD_SIZE, progress=False)
    export_credentials(settings)  # before the nodes start: their workers inherit the keys, as from an IAM role
    c = ThreeNodeCluster(tmp, state, s3, ml)
    ray.init(address=c.cluster.address)
    yield c
    ray.shutdown()
    c.cluster.shutdown()
    stop_mlflow(state)
    stop_s3(state)


def _cfg(tmp_path, *extra):
    return tiny_config("data.source=fm-2k@latest", "data.stream=true", "data.train_subset=null",
                       "data.shuffle_buffer=256", "train.batch_size=64", "tracking.system_metrics=false", *extra)


def test_two_ddp_workers_on_two_nodes_survive_a_lost_node_stay_identical_read_disjoint_shards_and_track(
        cluster, tmp_path, monkeypatch):
    """One 2-node DDP run that loses a node mid-run (a reclaimed spot instance): Ray restarts the
    worker group from the S3 checkpoint and the run finishes exactly the planned steps, with one
    continuous MLflow history, identical ranks and disjoint shard reads on the two nodes."""
    from simsiam.ray import load_result_checkpoint, pretrain_distributed

    # base lr 0.5: the loss falls clearly over these 96 steps (the preset's 1.6 is tuned for width 16)
    cfg = _cfg(tmp_path, "train.epochs=3", "optim.base_lr=0.5", "tracking.flush_every_steps=4")
    digests = WeightsDigest(tmp_path / "node-loss-test")  # each rank's weights and shard reads
    total = 3 * (SHARDS * SHARD_SIZE // 64)
    out = {}
    run = threading.Thread(target=lambda: out.update(res=pretrain_distributed(
        cfg, cluster.dist(workers=2, max_failures=3), name="node-loss-test", reporters=[digests])))
    run.start()
    saved = _wait(lambda: _registered_step(cluster, "node-loss-test"), 300)  # Ray holds an S3 checkpoint
    assert run.is_alive() and saved < total
    lost = cluster.nodes.pop()
    cluster.cluster.remove_node(lost, allow_graceful=False)
    cluster.nodes.append(cluster.add_node())
    run.join(600)
    res = out["res"]
    assert res.steps == total and res.where == {"ray_run": "node-loss-test", "workers": 2}
    client = MlflowClient(cluster.ml.tracking_uri)
    assert int(client.get_run(res.run_id).data.tags["simsiam.resumed_from_step"]) >= saved  # not from scratch
    history = sorted(client.get_metric_history(res.run_id, "train/loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, total + 1))  # no gap, no duplicate
    losses = [m.value for m in history]
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.05, losses
    _assert_identical_ranks_on_two_nodes_read_disjoint_halves(cluster, tmp_path / "node-loss-test", last_epoch=2)
    keys = [o["Key"] for o in open_store(cluster.dist().storage).list_keys("ray/node-loss-test/")]
    assert any(k.endswith("checkpoint.pt") for k in keys), keys
    ckpt = load_result_checkpoint(res.checkpoint, cluster.dist())
    assert ckpt["step"] == total and ckpt["config"] == cfg.to_dict()


def _assert_identical_ranks_on_two_nodes_read_disjoint_halves(cluster, digests_dir, last_epoch: int):
    """The finishing attempt's ranks: the same weights (DDP), on different nodes (SPREAD), and in
    its last epoch (read whole, after the restart) disjoint halves that together are the version."""
    digests = {p.read_text() for p in digests_dir.glob("rank*.sha256")}
    assert len(list(digests_dir.glob("rank*.sha256"))) == 2 and len(digests) == 1
    ranks = [json.loads((digests_dir / f"rank{r}.reads.json").read_text()) for r in (0, 1)]
    assert ranks[0]["node"] != ranks[1]["node"]
    total = sum(open_store(cluster.dist().storage).head(f"{p}")["size"] for p in _shard_keys(cluster))
    keys = [[k for k, _, p in r["reads"] if p == f"train/{last_epoch}"] for r in ranks]
    assert len(keys[0]) == len(keys[1]) == SHARDS // 2 and not set(keys[0]) & set(keys[1])
    assert sorted(keys[0] + keys[1]) == sorted(_shard_keys(cluster))  # together: the version, once
    assert sum(b for r in ranks for _, b, p in r["reads"] if p == f"train/{last_epoch}") == total


def _shard_keys(cluster):
    store = open_store(cluster.dist().storage)
    return [o["Key"] for o in store.list_keys("datasets/fm-2k/") if o["Key"].endswith(".parquet")]


def _registered_step(cluster, name: str) -> int:
    """The step of the latest checkpoint that Ray Train's controller has recorded in storage for run
    `name` (its checkpoint manager snapshot): what a restarted run resumes from. 0 before the first."""
    store = open_store(cluster.dist().storage)
    key = f"ray/{name}/checkpoint_manager_snapshot.json"
    if store.head(key) is None:
        return 0
    latest = json.loads(store.get_bytes(key)).get("latest_checkpoint_result") or {}
    return int(latest.get("metrics", {}).get("step", 0))


def _run_id(client, name):
    exp = client.get_experiment_by_name("multinode")
    runs = client.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'") if exp else []
    return runs[0].info.run_id if runs else None


def _wait(probe, timeout):
    end = time.time() + timeout
    while time.time() < end:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s")


def _cli(cluster, *args: str) -> list[str]:
    command, *rest = args  # TINY first: the test's own --set values come later and win
    return [sys.executable, "-m", "simsiam.cli", command,
            *tiny_sets("train.batch_size=64", "tracking.system_metrics=false", "tracking.flush_every_steps=4",
                       "data.stream=true", "data.train_subset=null"), *rest]


def _env(cluster) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {**env, "RAY_ADDRESS": cluster.cluster.address, "SIMSIAM_STATE": str(cluster.state),
            "MLFLOW_TRACKING_URI": cluster.ml.tracking_uri, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def test_a_killed_driver_rerun_with_the_same_out_resumes_from_the_s3_checkpoint(cluster, tmp_path):
    args = _cli(cluster, "pretrain", "--workers", "2", "--out", str(tmp_path / "driver-loss"), "--track",
                "--no-register", "--set", "data.source=fm-2k@latest", "--set", "train.epochs=3",
                "--set", "tracking.experiment=multinode")
    first = subprocess.Popen(args, env=_env(cluster), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    client = MlflowClient(cluster.ml.tracking_uri)
    total = 3 * (SHARDS * SHARD_SIZE // 64)
    try:
        run_id = _wait(lambda: _run_id(client, "driver-loss"), 180)
        saved = _wait(lambda: _registered_step(cluster, "driver-loss"), 300)  # Ray holds an S3 checkpoint
        assert first.poll() is None and saved < total
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its process group, as a lost Prefect worker pod
        first.wait()
    import ray

    _wait(lambda: ray.available_resources().get("CPU", 0) >= 2, 120)  # Ray reaps the dead driver's workers
    again = subprocess.run(args, env=_env(cluster), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout[again.stdout.index("{\n"):])
    assert out["steps"] == total and out["run_id"] == run_id  # the same run, continued
    assert out["checkpoint"].startswith("s3://data/ray/driver-loss/")  # Ray's checkpoint in the bucket
    assert cluster.s3.secret_key not in again.stdout + again.stderr
    assert int(client.get_run(run_id).data.tags["simsiam.resumed_from_step"]) >= saved  # not from scratch
    assert out["resumed_from_step"] >= saved  # what the pipeline's log line reports
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == list(range(1, total + 1))


def test_a_sweeps_trials_run_on_different_nodes(cluster, tmp_path):
    from simsiam.ray import run_sweep

    cfg = _cfg(tmp_path, "train.epochs=1", "eval.knn_train_samples=256", "eval.knn_test_samples=256")
    res = run_sweep(cfg, {"train.seed": [0, 1]}, cluster.dist(workers=1), max_concurrent=2, early_stop=False,
                    reporters=[WeightsDigest(tmp_path, by="train.seed")])  # each trial's reads: <dir>/train.seed-<s>
    assert [r["error"] for r in res.rows] == [None, None], res.rows
    reads = sorted(tmp_path.glob("*/rank0.reads.json"))
    assert sorted(p.parent.name for p in reads) == sorted(f"train.seed-{r['train.seed']}" for r in res.rows)
    assert len({json.loads(p.read_text())["node"] for p in reads}) == 2  # one trial per node, at the same time
    # each trial trained in its own Tune process, so its checkpoints are in the sweep's trial directory
    store = open_store(cluster.dist().storage)
    for row in res.rows:
        assert row["checkpoint"].startswith(f"data/ray/{res.name}/"), row
        assert store.head(row["checkpoint"].removeprefix("data/") + "/checkpoint.pt") is not None


def test_a_data_parallel_sweep_trial_trains_on_two_nodes_and_hands_on_its_checkpoint(cluster, tmp_path):
    """A trial of two workers fits its own TorchTrainer (DDP): identical ranks on the two nodes, and
    the checkpoint that its TorchTrainer stored is the trial's row's."""
    from simsiam.ray import run_sweep

    cfg = _cfg(tmp_path, "train.epochs=1", "eval.knn_train_samples=256", "eval.knn_test_samples=256")
    res = run_sweep(cfg, {"train.seed": [0]}, cluster.dist(workers=2), early_stop=False,
                    reporters=[WeightsDigest(tmp_path / "trial")])
    (row,) = res.rows
    assert row["error"] is None and row["stopped_by"] == "completed", row
    _assert_identical_ranks_on_two_nodes_read_disjoint_halves(cluster, tmp_path / "trial", last_epoch=0)
    assert row["checkpoint"].startswith(f"data/ray/{res.name}-{row['trial']}/"), row
    assert open_store(cluster.dist().storage).head(row["checkpoint"].removeprefix("data/") + "/checkpoint.pt")
    assert res.checkpoints == f"s3://data/ray/{res.name}-<trial>"


def test_a_pipeline_flow_run_drives_the_cluster_at_ray_address(cluster, tmp_path):
    r = subprocess.run(_cli(cluster, "run", "--workers", "2", "--subset", "512", "--state", str(cluster.state),
                            "--set", "storage.shard_size=128", "--set", "train.epochs=1", "--set",
                            "eval.probe_epochs=2", "--set", "tracking.experiment=multinode-flow"),
                       env=_env(cluster), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout[r.stdout.index("{\n"):])
    where = out["where_to_look"]
    assert where["alias"] in ("champion", "challenger") and out["metrics"]["probe/top1"] > 0
    run_id = out["run_id"]
    client = MlflowClient(cluster.ml.tracking_uri)
    assert "streamed: 4 shards dealt over 2 workers" in client.get_run(run_id).data.params["plan.augment_why"]
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 512 // 64 + 1))
    port = cluster.cluster.address.split(":")[-1]
    assert "Connecting to existing Ray cluster at address: " in r.stderr and f":{port}" in r.stderr  # not a local Ray


def test_a_standalone_sweep_beside_another_ray_trains_on_staged_data_without_state_api_errors(
        cluster, tmp_path, fmnist_small_root):
    """`simsiam sweep` with no RAY_ADDRESS starts a local Ray while this module's cluster runs: Ray
    Train's State API lookups find their own Ray (no "Found multiple active Ray instances"), and the
    trials read the splits staged to S3 first, not the machine's local files."""
    env = {k: v for k, v in _env(cluster).items() if k != "RAY_ADDRESS"}
    args = [sys.executable, "-m", "simsiam.cli", "sweep", "--state", str(cluster.state), "--lr", "0.05,0.1",
            "--batch", "32", *tiny_sets("data.train_subset=256", f"data.root={fmnist_small_root}", "train.epochs=1",
                                        "eval.knn_train_samples=256", "eval.knn_test_samples=128")]
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "multiple active Ray instances" not in r.stderr and "Failed to query" not in r.stderr, r.stderr[-3000:]
    out = json.loads(r.stdout[r.stdout.index("{\n"):])
    assert [t["error"] for t in out["trials"]] == [None, None] and out["checkpoints"].startswith("s3://data/ray/")
    name, _, version = out["data"].partition("@")
    store = open_store(cluster.dist().storage)
    assert version and any(o["Key"].endswith("manifest.json") for o in store.list_keys(f"datasets/{name}/"))


def test_more_workers_than_the_cluster_can_place_fail_fast(cluster, tmp_path):
    from simsiam.ray import pretrain_distributed

    t0 = time.time()
    with pytest.raises(ConfigError, match=r"3 Ray workers of 1 CPU each can never be placed: the cluster's 3 nodes "
                                          r"have 2 CPU in all and room for 2"):
        pretrain_distributed(_cfg(tmp_path), cluster.dist(workers=3))
    assert time.time() - t0 < 30


def test_a_storage_endpoint_the_nodes_cannot_reach_is_named_before_training(cluster, tmp_path):
    from simsiam.ray import pretrain_distributed

    dist = cluster.dist(workers=2)
    dist.storage = S3Settings(endpoint_url="http://127.0.0.1:9", access_key="k", secret_key="s")
    with pytest.raises(StorageError, match=r"storage endpoint http://127.0.0.1:9 cannot be reached from 3 of the 3"):
        pretrain_distributed(_cfg(tmp_path), dist)


def _sweep_children(client, experiment: str) -> tuple[str | None, list]:
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], "tags.`simsiam.sweep` = 'true'") if exp else []
    if not parents:
        return None, []
    parent = parents[0].info.run_id
    return parent, client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")


def _trial_steps(client, child) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(child.info.run_id, "train/loss"))


def test_a_killed_sweep_driver_rerun_with_the_same_command_keeps_finished_trials_and_continues_the_rest(
        cluster, tmp_path):
    args = _cli(cluster, "sweep", "--lr", "0.03,0.06", "--batch", "64", "--max-concurrent", "1", "--track",
                "--no-register", "--set", "data.source=fm-2k@latest", "--set", "train.epochs=2",
                "--set", "tracking.experiment=multinode-sweep")
    first = subprocess.Popen(args, env=_env(cluster), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    client, steps = MlflowClient(cluster.ml.tracking_uri), 2 * (SHARDS * SHARD_SIZE // 64)

    def one_trial_done():
        parent, children = _sweep_children(client, "multinode-sweep")
        done = [c for c in children if _trial_steps(client, c)[-1:] == [steps]]
        return (parent, done[0].info.run_id) if done else None

    try:
        parent, done = _wait(one_trial_done, 300)
        assert first.poll() is None
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver dies with one trial finished, the other not
        first.wait()
    import ray

    _wait(lambda: ray.available_resources().get("CPU", 0) >= 2, 120)  # Ray reaps the dead driver's trials
    again = subprocess.run(args, env=_env(cluster), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout[again.stdout.index("{\n"):])
    assert out["resumed"] is True and out["parent_run_id"] == parent  # one MLflow tree
    assert [t["error"] for t in out["trials"]] == [None, None], out["trials"]
    _, children = _sweep_children(client, "multinode-sweep")
    assert sorted(c.data.tags["mlflow.runName"] for c in children) == sorted(t["name"] for t in out["trials"])
    kept = next(c for c in children if c.info.run_id == done)
    assert _trial_steps(client, kept) == list(range(1, steps + 1))  # the finished trial was not trained again
    assert client.get_run(parent).data.tags["simsiam.sweep_resumed"] == "true"
    assert client.get_run(parent).info.status == "FINISHED"
