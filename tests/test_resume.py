"""The resume story of the pipeline's pretraining (simsiam/steps/resume.py), without services."""

import json
import subprocess

import pytest

from simsiam.config import load_config
from simsiam.errors import SimSiamError
from simsiam.steps.resume import begin, finish, for_config, in_dir, record_attempt, run_key

CFG = load_config("cpu-demo", ["data.source=fashion-mnist-train@0123456789abcdef"])


def test_key_is_preset_config_hash_and_workers():
    assert run_key(CFG) == f"cpu-demo-{CFG.config_hash()[:10]}"
    assert run_key(CFG, 2).endswith("-ray2")
    other_data = load_config("cpu-demo", ["data.source=fashion-mnist-train@fedcba9876543210"])
    assert run_key(other_data) != run_key(CFG)  # new data, new run


def test_fresh_then_resume_then_next_after_finish(tmp_path):
    first = for_config(tmp_path, CFG)
    assert not first.resume and first.previous is None and first.out.name == run_key(CFG)
    record_attempt(first.out, pid=999_999_999, mlflow_run_id="abc")  # a dead process
    (first.out / "checkpoint.pt").write_bytes(b"x")
    again = for_config(tmp_path, CFG)
    assert again.out == first.out and again.resume and again.previous["mlflow_run_id"] == "abc"
    finish(first.out, {"steps": 10, "nested": {"dropped": True}})
    assert json.loads((first.out / "finished.json").read_text())["steps"] == 10
    nxt = for_config(tmp_path, CFG)
    assert nxt.out.name == f"{run_key(CFG)}-r2" and not nxt.resume and nxt.previous is None


def test_killed_before_its_first_checkpoint_starts_over_but_reports_the_dead_attempt(tmp_path):
    out = for_config(tmp_path, CFG).out
    record_attempt(out, mlflow_run_id="abc", pid=999_999_999)  # died before writing checkpoint.pt
    att = for_config(tmp_path, CFG)
    assert not att.resume and att.previous["mlflow_run_id"] == "abc"


def test_a_run_whose_process_lives_is_refused(tmp_path):
    out = for_config(tmp_path, CFG).out
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        record_attempt(out)
        rec = json.loads((out / "attempt.json").read_text())
        (out / "attempt.json").write_text(json.dumps({**rec, "pid": sleeper.pid}))
        with pytest.raises(SimSiamError, match=f"in progress in process {sleeper.pid}"):
            for_config(tmp_path, CFG)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert for_config(tmp_path, CFG).out == out  # once it is gone, the run is picked up


def test_subset_check_uses_the_smallest_sweep_batch_and_local_paths_are_tracking_uris():
    from simsiam.data import check_local_data
    from simsiam.errors import ConfigError
    from simsiam.services.endpoints import check_tracking_uri

    cfg = load_config("cpu-demo", ["data.download=false"])  # batch 128
    assert check_local_data(cfg, 100, batch_size=32) is None  # a sweep over --batch 32,64 fits 100 images
    with pytest.raises(ConfigError, match="--subset 100 leaves 100 training samples, fewer than train.batch_size=128"):
        check_local_data(cfg, 100)
    with pytest.raises(ConfigError, match="--subset 20 leaves 20 training samples, fewer than train.batch_size=32"):
        check_local_data(cfg, 20, batch_size=32)  # the sweep's smallest batch is the one checked
    assert check_tracking_uri("./mlruns") == "./mlruns" and check_tracking_uri("/srv/mlruns") == "/srv/mlruns"
    for bad in ("htp:/bad uri", "ftp://host/x"):
        with pytest.raises(ConfigError, match="is not an MLflow tracking URI"):
            check_tracking_uri(bad)


def test_a_new_attempt_records_itself_and_writes_its_config_but_a_resumed_one_keeps_it(tmp_path):
    att = for_config(tmp_path, CFG)
    assert begin(att, CFG, tracking_uri=None, flow_runs=("fr-1",)) is None  # not tracked: no MLflow run
    rec = json.loads((att.out / "attempt.json").read_text())
    assert rec["prefect_flow_runs"] == ["fr-1"] and rec["mlflow_run_id"] is None
    assert (att.out / "config.yaml").read_text() == CFG.to_yaml()
    (att.out / "config.yaml").write_text("the run's own")
    (att.out / "checkpoint.pt").write_bytes(b"x")
    record_attempt(att.out, pid=999_999_999, prefect_flow_runs=[])  # the process died (no flow run to mark)
    again = for_config(tmp_path, CFG)
    assert again.resume and begin(again, CFG, None) is None
    assert (again.out / "config.yaml").read_text() == "the run's own"  # a resume keeps the config it started with


def test_an_out_dir_resumes_in_process_only_on_request_and_on_ray_whenever_an_attempt_was_there(tmp_path):
    out = tmp_path / "run"
    assert not in_dir(out, resume=False, ray=False).resume and not in_dir(out, resume=False, ray=True).resume
    record_attempt(out, pid=999_999_999)
    assert in_dir(out, resume=False, ray=True).resume and not in_dir(out, resume=False, ray=False).resume
    assert in_dir(out, resume=True, ray=False).resume
    with pytest.raises(SimSiamError, match="--resume is for in-process runs"):
        in_dir(out, resume=True, ray=True)
