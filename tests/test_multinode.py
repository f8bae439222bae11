"""A real multi-node Ray cluster (`ray.cluster_utils.Cluster`: a head with no CPU for work, and two
1-CPU worker nodes, each with its own cache dir, so nothing relies on a shared filesystem), with the
real SeaweedFS for data and checkpoints and a real MLflow server."""

import json
import os
import threading
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local tests: no token file in ~/.ray

import pytest
from mlflow import MlflowClient

from conftest import tiny_config
from simsiam.errors import ConfigError, StorageError
from simsiam.services import start_mlflow, start_s3, stop_mlflow, stop_s3
from simsiam.storage import S3Settings, open_store, stage_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SHARDS, SHARD_SIZE = 8, 256


class TestCluster:
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
        from simsiam.ray import DistSettings

        storage = S3Settings(endpoint_url=self.s3.endpoint_url, access_key=self.s3.access_key,
                             secret_key=self.s3.secret_key)
        return DistSettings(storage=storage, tracking_uri=self.ml.tracking_uri, experiment="multinode",
                            cpus_per_worker=1, placement_strategy="SPREAD", state_path=str(self.state), **kw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, fmnist_train):
    import ray

    from simsiam.ray.cluster import export_credentials

    tmp = tmp_path_factory.mktemp("multinode")
    state = tmp / "state"
    s3, ml = start_s3(state), start_mlflow(state)
    settings = S3Settings(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key)
    stage_dataset(fmnist_train.subset(range(SHARDS * SHARD_SIZE)), open_store(settings), "fm-2k",
                  shard_size=SHARD_SIZE, progress=False)
    export_credentials(settings)  # before the nodes start: their workers inherit the keys, as from an IAM role
    c = TestCluster(tmp, state, s3, ml)
    ray.init(address=c.cluster.address)
    yield c
    ray.shutdown()
    c.cluster.shutdown()
    stop_mlflow(state)
    stop_s3(state)


def _cfg(tmp_path, *extra):
    return tiny_config("data.source=fm-2k@latest", "data.stream=true", "data.train_subset=null",
                       "data.shuffle_buffer=256", "train.batch_size=64", "tracking.system_metrics=false",
                       f"faults.weights_digest_dir={tmp_path}", *extra)


def test_two_workers_on_two_nodes_read_disjoint_shards_checkpoint_to_s3_and_track(cluster, tmp_path):
    from simsiam.ray import pretrain_distributed

    res = pretrain_distributed(_cfg(tmp_path, "train.epochs=2"), cluster.dist(num_workers=2, max_failures=0),
                               name="spread-test")
    steps = 2 * (SHARDS * SHARD_SIZE // 64)
    assert res.error is None and res.metrics["step"] == steps
    ranks = [json.loads((tmp_path / f"rank{r}.reads.json").read_text()) for r in (0, 1)]
    assert ranks[0]["node"] != ranks[1]["node"]  # SPREAD: one worker per node
    total = sum(open_store(cluster.dist().storage).head(f"{p}")["size"] for p in _shard_keys(cluster))
    for epoch in (0, 1):
        keys = [[k for k, _, p in r["reads"] if p == f"train/{epoch}"] for r in ranks]
        assert len(keys[0]) == len(keys[1]) == SHARDS // 2 and not set(keys[0]) & set(keys[1])  # disjoint halves
        assert sorted(keys[0] + keys[1]) == sorted(_shard_keys(cluster))  # together: the version, once
        nbytes = [sum(b for _, b, p in r["reads"] if p == f"train/{epoch}") for r in ranks]
        assert sum(nbytes) == total
    keys = [o["Key"] for o in open_store(cluster.dist().storage).list_keys("ray/spread-test/")]
    assert any(k.endswith("checkpoint.pt") for k in keys), keys
    history = MlflowClient(cluster.ml.tracking_uri).get_metric_history(res.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, steps + 1))


def _shard_keys(cluster):
    store = open_store(cluster.dist().storage)
    return [o["Key"] for o in store.list_keys("datasets/fm-2k/") if o["Key"].endswith(".parquet")]


def test_losing_a_node_mid_run_resumes_from_s3_and_finishes_exactly_the_planned_steps(cluster, tmp_path):
    from simsiam.ray import pretrain_distributed

    cfg = _cfg(tmp_path, "train.epochs=16", "tracking.flush_every_steps=4")
    total = 16 * (SHARDS * SHARD_SIZE // 64)
    out = {}
    run = threading.Thread(target=lambda: out.update(res=pretrain_distributed(
        cfg, cluster.dist(num_workers=2, max_failures=3), name="node-loss-test")))
    run.start()
    client = MlflowClient(cluster.ml.tracking_uri)
    run_id = _wait(lambda: _run_id(client, "node-loss-test"), 120)
    _wait(lambda: max([m.step for m in client.get_metric_history(run_id, "train/loss")] or [0]) >= 72, 300)
    assert run.is_alive()
    lost = cluster.nodes.pop()
    cluster.cluster.remove_node(lost, allow_graceful=False)  # the node is gone, as a reclaimed spot instance
    cluster.nodes.append(cluster.add_node())
    run.join(600)
    res = out["res"]
    assert res.error is None and res.metrics["step"] == total
    tags = client.get_run(res.run_id).data.tags
    assert int(tags["simsiam.resumed_from_step"]) >= 64  # from an S3 checkpoint after the first epochs
    assert sorted(m.step for m in client.get_metric_history(res.run_id, "train/loss")) == list(range(1, total + 1))


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


def test_more_workers_than_the_cluster_can_place_fail_fast(cluster, tmp_path):
    from simsiam.ray import pretrain_distributed

    t0 = time.time()
    with pytest.raises(ConfigError, match=r"3 Ray workers of 1 CPU each can never be placed: the cluster's 3 nodes "
                                          r"have 2 CPU in all and room for 2"):
        pretrain_distributed(_cfg(tmp_path), cluster.dist(num_workers=3))
    assert time.time() - t0 < 30


def test_a_storage_endpoint_the_nodes_cannot_reach_is_named_before_training(cluster, tmp_path):
    from simsiam.ray import pretrain_distributed

    dist = cluster.dist(num_workers=2)
    dist.storage = S3Settings(endpoint_url="http://127.0.0.1:9", access_key="k", secret_key="s")
    with pytest.raises(StorageError, match=r"storage endpoint http://127.0.0.1:9 cannot be reached from 3 of the 3"):
        pretrain_distributed(_cfg(tmp_path), dist)
