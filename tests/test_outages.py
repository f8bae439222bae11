"""Outages on a real local Ray (2 CPUs) with the real SeaweedFS and MLflow server, each behind a TCP
proxy that cuts it off for a set time (`simsiam.testing.outage.OutageProxy`). The 60-second versions
of these faults are `python bench/outages.py` (docs/benchmarks.md, "Riding through outages")."""

import json
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local tests: no token file in ~/.ray

import pytest
from mlflow import MlflowClient

from conftest import tiny_config
from simsiam.errors import SimSiamError
from simsiam.services import start_mlflow, start_s3, stop_mlflow, stop_s3
from simsiam.storage import S3Settings, open_store
from simsiam.testing.faults import CrashAtStep, Pace
from simsiam.testing.outage import OutageProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("ray")]
STEPS_PER_EPOCH = 4  # TINY: 64 images in batches of 16


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    import ray

    from simsiam.ray import init_ray

    state = tmp_path_factory.mktemp("outages")
    s3, ml = start_s3(state), start_mlflow(state)
    direct = S3Settings(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key)
    init_ray(num_cpus=2, storage=direct)
    s3_proxy, ml_proxy = OutageProxy(s3.endpoint_url), OutageProxy(ml.tracking_uri)
    yield {"state": state, "s3": s3_proxy, "mlflow": ml_proxy, "direct": direct, "ml_direct": ml.tracking_uri}
    ray.shutdown()
    s3_proxy.close()
    ml_proxy.close()
    stop_mlflow(state)
    stop_s3(state)


def _dist(stack, budget_s: float = 120, **kw):
    from simsiam.ray import RayWorkers

    d = stack["direct"]
    storage = S3Settings(endpoint_url=stack["s3"].url, access_key=d.access_key, secret_key=d.secret_key,
                         outage_budget_s=budget_s)
    return RayWorkers(storage=storage, tracking_uri=stack["mlflow"].url, experiment="outages",
                      state_path=str(stack["state"]), **kw)


def _saved_step(stack, name: str) -> int:
    """The step of the latest checkpoint Ray Train's controller recorded for run `name` (read past the proxy)."""
    store = open_store(stack["direct"])
    key = f"ray/{name}/checkpoint_manager_snapshot.json"
    if store.head(key) is None:
        return 0
    latest = json.loads(store.get_bytes(key)).get("latest_checkpoint_result") or {}
    return int(latest.get("metrics", {}).get("step", 0))


def _wait(probe, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if value := probe():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s")


def _in_thread(call):
    out = {}

    def target():
        try:
            out["res"] = call()
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def test_a_ray_run_rides_through_an_s3_outage_then_an_mlflow_outage_to_its_exact_steps_in_one_mlflow_run(stack):
    from simsiam.ray import pretrain_distributed

    cfg = tiny_config("train.epochs=5", "train.checkpoint_every_steps=2", "tracking.system_metrics=false",
                      "tracking.flush_every_steps=2")
    total = 5 * STEPS_PER_EPOCH
    thread, out = _in_thread(lambda: pretrain_distributed(cfg, _dist(stack), name="s3-then-mlflow",
                                                          reporters=[Pace(1.5)]))
    first = _wait(lambda: _saved_step(stack, "s3-then-mlflow"), 180)
    stack["s3"].cut(15)  # checkpoints at the next steps wait for it
    time.sleep(16)
    assert thread.is_alive() and first < total
    stack["mlflow"].cut(12)
    time.sleep(13)
    assert thread.is_alive(), "the run ended during the outages"
    thread.join(600)
    assert "error" not in out, out.get("error")
    res = out["res"]
    assert res.steps == total
    client = MlflowClient(stack["ml_direct"])
    assert client.get_run(res.run_id).info.status == "FINISHED"
    history = sorted(m.step for m in client.get_metric_history(res.run_id, "train/loss"))
    assert history == list(range(1, total + 1))  # one continuous history: no gap, no duplicate
    assert _saved_step(stack, "s3-then-mlflow") == total  # the last checkpoint reached the store after the cut


def test_an_s3_outage_past_the_budget_stops_the_ray_run_in_one_line_and_the_same_call_resumes_it(stack):
    from simsiam.ray import pretrain_distributed

    cfg = tiny_config("train.epochs=3", "train.checkpoint_every_steps=2", "tracking.system_metrics=false",
                      "storage.outage_budget_s=5")
    total = 3 * STEPS_PER_EPOCH
    run = lambda: pretrain_distributed(cfg, _dist(stack, budget_s=5, max_failures=0), name="past-budget",  # noqa: E731
                                       reporters=[Pace(1.0)])
    thread, out = _in_thread(run)
    saved = _wait(lambda: _saved_step(stack, "past-budget"), 180)
    stack["s3"].cut(600)
    thread.join(300)
    stack["s3"].restore()
    message = str(out["error"])
    assert isinstance(out["error"], SimSiamError) and "\n" not in message, message
    assert f"the S3 endpoint {stack['s3'].url} was unreachable for 5 s" in message, message
    assert "re-run the same command to resume" in message
    res = pretrain_distributed(cfg, _dist(stack, budget_s=5, max_failures=0), name="past-budget")
    assert res.steps == total and res.resumed_from_step >= saved


def test_a_sweep_trial_that_fails_restarts_from_its_own_checkpoint_in_the_same_child_run(stack):
    from simsiam.ray import run_sweep

    cfg = tiny_config("train.epochs=2", "tracking.system_metrics=false")
    crash_at = STEPS_PER_EPOCH + 2  # after the trial's first (epoch-end) checkpoint
    res = run_sweep(cfg, {"train.seed": [0]}, _dist(stack, workers=1, max_failures=1), early_stop=False,
                    reporters=[CrashAtStep(crash_at)])
    (row,) = res.rows
    assert row["error"] is None and row["stopped_by"] == "completed", row
    client = MlflowClient(stack["ml_direct"])
    children = client.search_runs([client.get_run(res.parent_run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert [c.info.run_id for c in children] == [row["run_id"]]  # restarted in the same child run
    child = children[0]
    assert child.data.tags["simsiam.resumed_from_step"] == str(STEPS_PER_EPOCH)
    history = sorted(m.step for m in client.get_metric_history(child.info.run_id, "train/loss"))
    assert history == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    # Tune's trial actors got no keys through their runtime_env: Ray's session logs hold none
    logs = Path(os.environ["SIMSIAM_RAY_TMP"]) / "session_latest" / "logs"
    leaked = [p.name for p in logs.rglob("*") if p.is_file() and stack["direct"].secret_key in p.read_text(
        errors="replace")]
    assert logs.is_dir() and leaked == [], leaked
