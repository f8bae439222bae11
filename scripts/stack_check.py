"""What `bash scripts/stack.sh check` verifies on the running compose stack, from the host (the stack
listens on 127.0.0.1): the scheduled `stack-pipeline` deployment fires on its own and completes (staged
data in the stack's S3, a tracked MLflow run, a registered champion); a worker killed mid-run resumes
from its S3 checkpoint on the next run; `compose down` + `up` keeps runs, registry and data; a
container without credentials is refused by S3 (403), Prefect and MLflow (401).

Run by stack.sh with DOCKER_HOST/DOCKER_CONFIG set; secrets come from docker/.env and are never printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ["docker", "compose", "-f", "docker/compose.yaml", "-f", "docker/compose.stack.yaml"]
DEPLOYMENT = "pipeline/stack-pipeline"
MODEL = "simsiam-fashion-mnist-resnet18_cifar"
WORKER = "simsiam-prefect-worker-1"
VERIFIED: list[str] = []


def ok(what: str) -> None:
    VERIFIED.append(what)
    print(f"  OK  {what}", flush=True)


def read_env() -> dict[str, str]:
    pairs = (ln.split("=", 1) for ln in (ROOT / "docker" / ".env").read_text().splitlines()
             if "=" in ln and not ln.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def client_env(env: dict[str, str]) -> None:
    """This process talks to the stack like the containers do, through its published 127.0.0.1 ports."""
    os.environ.update({
        "PREFECT_API_URL": "http://127.0.0.1:4200/api", "PREFECT_API_AUTH_STRING": env["PREFECT_AUTH_STRING"],
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MLFLOW_TRACKING_USERNAME": env["MLFLOW_ADMIN_USER"],
        "MLFLOW_TRACKING_PASSWORD": env["MLFLOW_ADMIN_PASSWORD"], "AWS_ACCESS_KEY_ID": env["S3_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": env["S3_SECRET_ACCESS_KEY"], "AWS_DEFAULT_REGION": "us-east-1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})


def sh(*args: str, timeout: int = 600) -> str:
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if res.returncode:
        raise SystemExit(f"stack check: `{' '.join(args[:4])} ...` failed: {res.stderr.strip()[-500:]}")
    return res.stdout


# ---------------------------------------------------------------- Prefect

def prefect():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def deployment():
    with prefect() as c:
        return c.read_deployment_by_name(DEPLOYMENT)


def set_schedule(active: bool) -> None:
    dep = deployment()
    with prefect() as c:
        for s in dep.schedules:
            c.update_deployment_schedule(dep.id, s.id, active=active)


def wait_run(pred, what: str, timeout: float):
    """The first flow run of the deployment that `pred` accepts, polled until `timeout` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        hit = next((r for r in flow_runs() if pred(r)), None)
        if hit:
            return hit
        time.sleep(5)
    raise SystemExit(f"stack check: timed out after {timeout:.0f} s waiting for {what}")


def wait_final(run_id, timeout: float):
    def done(r):
        return r.id == run_id and r.state and r.state.is_final()

    run = wait_run(done, f"flow run {run_id} to finish", timeout)
    if not run.state.is_completed():
        raise SystemExit(f"stack check: flow run {run.name} ended {run.state.name}: {run.state.message}")
    return run


def run_logs(run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with prefect() as c:
        logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200)
    return "\n".join(entry.message for entry in logs)


def start_run():
    with prefect() as c:
        return c.create_flow_run_from_deployment(deployment().id)


# ---------------------------------------------------------------- S3 and MLflow

def s3():
    import boto3

    return boto3.client("s3", endpoint_url="http://127.0.0.1:8333")


def keys(prefix: str, bucket: str = "data") -> list[dict]:
    pages = s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o for page in pages for o in page.get("Contents", [])]


def manifests() -> list[str]:
    return sorted(o["Key"] for o in keys("datasets/") if o["Key"].endswith("manifest.json"))


def mlflow_state() -> dict:
    from mlflow import MlflowClient

    c = MlflowClient()
    exp = c.get_experiment_by_name("simsiam")
    runs = c.search_runs([exp.experiment_id], max_results=100) if exp else []
    champion = c.get_model_version_by_alias(MODEL, "champion")
    return {"runs": sorted(r.info.run_id for r in runs), "finished": sum(r.info.status == "FINISHED" for r in runs),
            "champion": champion.version, "champion_run": champion.run_id,
            "interrupted": [r.info.run_id for r in runs if "simsiam.interrupted" in r.data.tags]}


def stack_state() -> dict:
    return {**mlflow_state(), "manifests": manifests(), "flow_runs": sorted(str(r.id) for r in flow_runs())}


# ---------------------------------------------------------------- the checks

def flow_runs() -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with prefect() as c:
        return c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment().id])))


def pause_schedule() -> None:
    """Pause the schedule and drop the runs it queued, so nothing else starts during the checks."""
    set_schedule(False)
    with prefect() as c:
        for r in flow_runs():
            if r.auto_scheduled and r.state and r.state.is_scheduled():
                c.delete_flow_run(r.id)


def check_schedule_fires(timeout: float) -> dict:
    """Resume the deployment's schedule (deployed paused), wait for a run it made, then pause it again."""
    seen, t0 = {r.id for r in flow_runs()}, time.monotonic()
    set_schedule(True)
    try:
        fired = wait_run(lambda r: r.id not in seen and r.auto_scheduled and r.state and not r.state.is_scheduled(),
                         "the schedule to fire", timeout)
    finally:
        pause_schedule()
    ok(f"schedule of {DEPLOYMENT} (prefect.yaml, every {deployment().schedules[0].schedule.interval}) fired on "
       f"its own: flow run {fired.name} picked up {time.monotonic() - t0:.0f} s after the schedule was resumed")
    run = wait_final(fired.id, timeout)
    ok(f"the stack's worker ran it to Completed in {run.total_run_time.total_seconds():.0f} s")
    return {"flow_run": str(run.id)}


def check_pipeline_results() -> dict:
    found = manifests()
    if len(found) < 2:
        raise SystemExit(f"stack check: expected staged train and test splits in s3://data/datasets, got {found}")
    ok(f"staged data in the stack's S3: {', '.join('s3://data/' + k for k in found)}")
    state = mlflow_state()
    if not state["finished"]:
        raise SystemExit("stack check: no FINISHED MLflow run in experiment simsiam")
    ok(f"MLflow (Postgres backend): {state['finished']} finished run(s) in experiment simsiam")
    ok(f"registry: {MODEL} version {state['champion']} has the alias champion (run {state['champion_run']})")
    return state


def wait_checkpoints(since: datetime, count: int, timeout: float) -> list[str]:
    """`count` Ray checkpoints (checkpoint.pt uploaded) newer than `since` in s3://data/ray/: the run
    then has one that Ray registered, not only one being uploaded."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        new = sorted(o["Key"] for o in keys("ray/")
                     if o["Key"].endswith("/checkpoint.pt") and o["LastModified"] > since)
        if len(new) >= count:
            return new
        time.sleep(2)
    raise SystemExit(f"stack check: not {count} new Ray checkpoints in s3://data/ray/ after {timeout:.0f} s")


def check_kill_resume(timeout: float) -> dict:
    """Kill the worker container while a run trains; the next run of the same deployment resumes."""
    since = datetime.now(timezone.utc)
    first = start_run()
    ckpts = wait_checkpoints(since, 2, timeout)
    sh("docker", "kill", WORKER)
    ok(f"docker kill {WORKER} while flow run {first.name} trained ({len(ckpts)} checkpoints in S3, the last "
       f"s3://data/{ckpts[-1]})")
    sh(*COMPOSE, "up", "-d", "--wait", "prefect-worker", timeout=300)
    second = start_run()
    run = wait_final(second.id, timeout)
    found = re.search(r"train \(pretrain\): MLflow run ([0-9a-f]{32})", run_logs(run.id))
    if not found:
        raise SystemExit(f"stack check: flow run {run.name} logged no training line")
    from mlflow import MlflowClient

    tags = MlflowClient().get_run(found.group(1)).data.tags
    step = int(tags.get("simsiam.resumed_from_step", 0))
    if not (step > 0 and "simsiam.interrupted" in tags):
        raise SystemExit(f"stack check: flow run {run.name} (MLflow run {found.group(1)}) did not resume: "
                         f"tags {sorted(t for t in tags if t.startswith('simsiam.'))}")
    ray_run = ckpts[-1].split("/")[1]
    ok(f"next run {run.name} completed, resumed from step {step} of Ray run {ray_run} (its S3 checkpoint), in "
       f"the killed attempt's MLflow run {found.group(1)} (tag simsiam.interrupted)")
    return {"killed": str(first.id), "resumed": str(run.id), "resumed_from_step": step, "ray_run": ray_run}


def check_down_up() -> dict:
    before = stack_state()
    sh(*COMPOSE, "down", timeout=300)
    sh(*COMPOSE, "up", "-d", "--wait", timeout=600)
    after = stack_state()
    for what in ("runs", "champion", "manifests", "flow_runs"):
        if before[what] != after[what]:
            raise SystemExit(f"stack check: {what} changed over compose down/up: {before[what]} -> {after[what]}")
    ok(f"compose down + up kept {len(after['runs'])} MLflow runs, champion v{after['champion']}, "
       f"{len(after['manifests'])} staged manifests, {len(after['flow_runs'])} Prefect flow runs (volumes)")
    return after


NO_KEYS = r'''
import json, urllib.request, urllib.error, boto3, botocore
from botocore.config import Config
out = {}
def status(url, data=None):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST" if data else "GET"),
                                      timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
for name, cfg, kw in (("s3_anonymous", Config(signature_version=botocore.UNSIGNED), {}),
                      ("s3_wrong_key", Config(), {"aws_access_key_id": "nobody", "aws_secret_access_key": "x"})):
    try:
        boto3.client("s3", endpoint_url="http://127.0.0.1:8333", region_name="us-east-1", config=cfg, **kw
                     ).list_objects_v2(Bucket="data")
        out[name] = 200
    except botocore.exceptions.ClientError as e:
        out[name] = e.response["ResponseMetadata"]["HTTPStatusCode"]
out["mlflow"] = status("http://127.0.0.1:5000/api/2.0/mlflow/experiments/search?max_results=1")
out["prefect"] = status("http://127.0.0.1:4200/api/deployments/name/pipeline/stack-pipeline")
print(json.dumps(out))
'''


def check_no_credentials(image: str) -> dict:
    """A fresh container from the app image, on the host network, with none of the stack's keys."""
    out = json.loads(sh("docker", "run", "--rm", "--network", "host", "--entrypoint", "python", image,
                        "-c", NO_KEYS).strip().splitlines()[-1])
    want = {"s3_anonymous": 403, "s3_wrong_key": 403, "mlflow": 401, "prefect": 401}
    if out != want:
        raise SystemExit(f"stack check: a container without credentials got {out}, want {want}")
    ok("a container without credentials: S3 403 (anonymous and a wrong key), MLflow 401 (experiments), "
       "Prefect 401 (the deployment)")
    return out


def main() -> None:
    image, timeout = sys.argv[1], float(os.environ.get("SIMSIAM_STACK_RUN_TIMEOUT", "1500"))
    client_env(read_env())
    report, t0 = {}, time.monotonic()
    only = [c for c in os.environ.get("SIMSIAM_STACK_CHECKS", "").split(",") if c]  # to rerun some checks
    for name, step in (("schedule", lambda: check_schedule_fires(timeout)), ("pipeline", check_pipeline_results),
                       ("kill_resume", lambda: check_kill_resume(timeout)), ("down_up", check_down_up),
                       ("no_credentials", lambda: check_no_credentials(image))):
        if only and name not in only:
            continue
        t = time.monotonic()
        report[name] = {"result": step(), "seconds": round(time.monotonic() - t)}
    print(json.dumps({"verified": VERIFIED, "seconds": {k: v["seconds"] for k, v in report.items()},
                      "total_seconds": round(time.monotonic() - t0)}, indent=1, default=str))


if __name__ == "__main__":
    main()
