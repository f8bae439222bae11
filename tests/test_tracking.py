"""MLflow tracking against a real `mlflow server` (sqlite backend, artifacts on the real SeaweedFS)."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from conftest import tiny_config, tiny_sets
from simsiam.engine import train
from simsiam.evaluation import evaluate_backbone
from simsiam.metrics import MEANING as METRIC_MEANING
from simsiam.reporters import Reporter
from simsiam.services import start_mlflow, stop_mlflow, stop_s3
from simsiam.services.process import free_ports, http_answers
from simsiam.tracking import (
    MlflowReporter,
    TrackingError,
    check_server,
    list_models,
    load_registered,
    log_metrics_to_run,
    log_models_to_run,
    promote,
    register_and_gate,
)
from simsiam.tracking.logged_models import logged_models
from simsiam.tracking.runs import tracking_uri_scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("mlstate")
    svc = start_mlflow(state)
    yield svc
    stop_mlflow(state)
    stop_s3(state)


@pytest.fixture(scope="module")
def small(fmnist_train, fmnist_test):
    return fmnist_train.subset(range(2000)), fmnist_test.subset(range(500))


def _tracked_run(server, small, *overrides, experiment="tests", flush_every=4, evaluate=True):
    train_src, test_src = small
    cfg = tiny_config("train.epochs=2", "data.train_subset=128", "eval.knn_every_epochs=1",
                      "eval.knn_train_samples=500", "eval.knn_test_samples=200", "eval.knn_k=20",
                      "eval.probe_epochs=5", *overrides)
    rep = MlflowReporter(server.tracking_uri, experiment, dataset={"name": "fm-small", "version": "abc123",
                                                                   "manifest_uri": "s3://data/datasets/fm-small/abc123/manifest.json"},
                         flush_every=flush_every, system_metrics_every_s=0.5)  # the run takes ~2 s
    result = train(cfg, [rep], train_source=train_src, test_source=test_src)
    rep.finish()
    metrics = None
    if evaluate:
        metrics = evaluate_backbone(result.model.backbone, cfg, train_src, test_src)
        log_metrics_to_run(server.tracking_uri, rep.run_id, metrics)
    rep.model_uris = log_models_to_run(server.tracking_uri, rep.run_id, result.model, cfg)
    return cfg, rep, result, metrics


@pytest.fixture(scope="module")
def run_a(server, small):
    return _tracked_run(server, small)


def test_run_is_logged_and_read_back(server, run_a):
    cfg, rep, result, metrics = run_a
    client = MlflowClient(server.tracking_uri)
    run = client.get_run(rep.run_id)
    assert run.data.params["optim.base_lr"] == str(cfg.optim.base_lr) and run.data.params["model.width"] == "4"
    assert run.data.tags["simsiam.config_hash"] == cfg.config_hash() and run.data.tags["simsiam.collapsed"] == "false"
    assert run.data.tags["dataset.version"] == "abc123"
    assert run.data.params["plan.augment_on"] == "device" and run.data.params["plan.amp"] == "none"
    assert [i.dataset.digest for i in run.inputs.dataset_inputs] == ["abc123"]
    history = client.get_metric_history(rep.run_id, "train/loss")
    assert [m.step for m in history] == list(range(1, result.step + 1))
    assert [m.step for m in client.get_metric_history(rep.run_id, "knn/top1")] == [0, 8, 16]  # init + 2 epochs
    assert run.data.metrics["knn/final_top1"] == pytest.approx(metrics["knn/final_top1"])
    assert run.data.metrics["probe/top1"] == pytest.approx(metrics["probe/top1"])
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)
    arts = {a.path for d in (None, "figures") for a in client.list_artifacts(rep.run_id, d)}
    assert {"config.yaml", "figures/z_std.png", "figures/loss.png", "figures/knn.png", "figures/views.png"} <= arts
    # The reporter set MLflow's process-wide URI for its run only: nothing is left for the next run.
    assert mlflow.get_tracking_uri() != server.tracking_uri
    assert os.environ.get("MLFLOW_TRACKING_URI") != server.tracking_uri
    with tracking_uri_scope(server.tracking_uri):
        assert "optim:" in mlflow.artifacts.load_text(f"runs:/{rep.run_id}/config.yaml")
    assert set(rep.model_uris) == {"backbone", "encoder"}
    assert logged_models(server.tracking_uri, rep.run_id) == rep.model_uris
    assert run.info.status == "FINISHED"  # logging models into the finished run kept its status
    # Logging again (a retried registration) reuses the models instead of adding copies.
    assert log_models_to_run(server.tracking_uri, rep.run_id, result.model, cfg) == rep.model_uris


def test_loaded_model_gives_same_features(server, run_a, fmnist_test):
    _, rep, result, _ = run_a
    loaded = load_registered(rep.model_uris["encoder"], server.tracking_uri).eval()
    result.model.eval()
    x = (fmnist_test.images[:8].float() / 255 - 0.286) / 0.353
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.model.projector(result.model.backbone(x)), atol=1e-6)


def _refuse_unpickling(monkeypatch):
    import pickle

    import cloudpickle

    def refuse(*_a, **_k):
        raise AssertionError("unpickling while loading a model")

    for mod, attr in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (cloudpickle, "load"),
                      (cloudpickle, "loads"), (torch, "load")]:
        monkeypatch.setattr(mod, attr, refuse)


def test_logged_model_is_pickle_free_serves_raw_images_and_refuses_other_input_in_one_line(server, run_a, fmnist_test,
                                                                                          tmp_path, monkeypatch):
    _, rep, result, _ = run_a
    uri = rep.model_uris["backbone"]
    with tracking_uri_scope(server.tracking_uri):  # models:/ URIs resolve on the global URI only (MLflow 3.17)
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    files = {p.name for p in local.rglob("*") if p.is_file() and "code" not in p.relative_to(tmp_path).parts[:1]}
    assert {"backbone-weights.npz", "backbone.onnx", "served_model.py"} <= files
    code = [p.name for p in local.rglob("*") if p.is_file() and "code" in p.relative_to(local).parts]
    assert code == ["image_input.py"], code  # only what inference needs travels with the model
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".pth", ".bin"))], files

    raw = fmnist_test.images[:8].float().div(255)  # what consumers send: [0, 1], no constants needed
    with torch.no_grad():
        want = result.model.eval().backbone((raw - 0.286) / 0.353).numpy()
    with monkeypatch.context() as m:
        _refuse_unpickling(m)
        with tracking_uri_scope(server.tracking_uri):
            pyfunc = mlflow.pyfunc.load_model(uri)
        ours = load_registered(uri, server.tracking_uri)
    assert np.allclose(pyfunc.predict(raw.numpy()), want, atol=1e-5)
    pixels = fmnist_test.images[:8].numpy()  # uint8 0-255, as read from the files
    for bad, says in [(pixels, "got dtype uint8 (0-255 pixels? divide by 255)"),
                      (pixels.astype(np.float32), "must be in [0, 1]; got 0 to 255 (0-255 pixels? divide by 255)"),
                      (raw.numpy()[:, 0], "N x 1 x 28 x 28; got shape (8, 28, 28)"),
                      (raw.numpy()[:, :, 2:, 2:], "N x 1 x 28 x 28; got shape (8, 1, 26, 26)")]:
        with pytest.raises(mlflow.exceptions.MlflowException) as err:
            pyfunc.predict(bad)
        assert says in err.value.message and "\n" not in err.value.message and "[[" not in err.value.message
    with torch.no_grad():
        assert np.allclose(ours((raw - 0.286) / 0.353).numpy(), want, atol=1e-5)

    port, log = free_ports(1)[0], open(tmp_path / "serve.log", "w")
    # serve execs `uvicorn` from PATH: the venv's bin dir, as with an activated venv
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    serve = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                              "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not http_answers(f"http://127.0.0.1:{port}/ping", timeout=1) and time.time() < deadline:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            time.sleep(1)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                     data=json.dumps({"inputs": raw.numpy().tolist()}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            served = np.asarray(json.loads(r.read())["predictions"], dtype=np.float32)
        assert served.shape == want.shape and np.allclose(served, want, atol=1e-4)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                     data=json.dumps({"inputs": pixels.tolist()}).encode(),
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=60)
        assert refused.value.code == 400 and "divide by 255" in json.loads(refused.value.read())["message"]
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(30)


FRESH_LOAD = """
import json, sys, time
import numpy as np
import mlflow
start = time.perf_counter()
model = mlflow.pyfunc.load_model(sys.argv[1])
features = model.predict(np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32))
heavy = ("torch", "torchvision", "ray", "prefect", "simsiam", "simsiam.cli")
print(json.dumps({"shape": features.shape, "seconds": time.perf_counter() - start,
                  "imported": [m for m in heavy if m in sys.modules]}))
"""


def test_the_registered_model_loads_in_a_fresh_process_with_none_of_torch_ray_prefect_or_our_package(
        server, run_a, tmp_path):
    """Loading needs the ONNX graph, onnxruntime and the input check only (the load time is
    `python bench/model_load.py`'s)."""
    uri = run_a[1].model_uris["backbone"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.tracking_uri}
    r = subprocess.run([sys.executable, "-c", FRESH_LOAD, uri], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["imported"] == [] and out["shape"][0] == 4, out


def _onnx_as_the_card_shows(server, name: str, version: str, fmnist_test, logged: str) -> None:
    """The card's onnxruntime lines on real images: the graph's features are torch's within 1e-4."""
    import onnxruntime as ort

    images = fmnist_test.images[:16].float().div(255)
    with tracking_uri_scope(server.tracking_uri):
        path = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/artifacts/backbone.onnx")
    features = ort.InferenceSession(path).run(None, {"images": images.numpy()})[0]
    with torch.no_grad():
        torch_features = load_registered(logged, server.tracking_uri)((images - 0.286) / 0.353).numpy()
    assert features.shape == torch_features.shape and np.abs(features - torch_features).max() <= 1e-4


def test_gate_champion_challenger_collapsed_and_ui(server, small, run_a, fmnist_test):
    client = MlflowClient(server.tracking_uri)
    name = "simsiam-gate-test"
    _, rep_b, _, _ = _tracked_run(server, small, "train.seed=1", evaluate=False)
    # The gate reads the probe numbers it is given: fixed ones make the decisions certain.
    best, worse, best_p, worse_p = run_a[1], rep_b, 71.5, 64.25
    g1 = register_and_gate(client, best.run_id, best.model_uris["backbone"], name, best_p, False, floor=10)
    assert g1["decision"] == "champion" and not g1["noop"] and "no previous champion" in g1["reasons"]
    # The version's description is a model card built from its run.
    card, run = client.get_model_version(name, g1["version"]).description, client.get_run(best.run_id)
    assert card.startswith("**Gate: champion.** probe/top1 71.50 >= floor 10.00")
    for key in ("probe/top1", "knn/final_top1", "train/z_std_ratio"):  # under their keys, 2 decimals
        assert f"| `{key}` | {METRIC_MEANING[key]} | {run.data.metrics[key]:.2f} |" in card
    assert "`fm-small` version `abc123`, manifest `s3://data/datasets/fm-small/abc123/manifest.json`" in card
    assert run.data.tags["simsiam.config_hash"] in card and f"runs/{best.run_id}?workflowType=machine_learning)" in card
    assert "float32 in [0, 1], N x 1 x 28 x 28" in card and "are refused with a one-line error" in card
    assert f'mlflow.pyfunc.load_model("models:/{name}/{g1["version"]}")' in card
    assert f'mlflow.set_tracking_uri("{server.tracking_uri}")' in card and "ort.InferenceSession(path)" in card
    parity = float(client.get_model_version(name, g1["version"]).tags["onnx.max_abs_diff"])
    assert 0 <= parity <= 1e-4 and f"max abs diff {parity:.3g}" in card
    _onnx_as_the_card_shows(server, name, g1["version"], fmnist_test, best.model_uris["backbone"])
    assert f"mlflow models serve -m models:/{name}@champion" in card
    g2 = register_and_gate(client, worse.run_id, worse.model_uris["backbone"], name, worse_p, False, floor=10)
    assert g2["decision"] == "challenger" and "does not beat champion v1 (71.50)" in g2["reasons"]
    again = register_and_gate(client, worse.run_id, worse.model_uris["backbone"], name, worse_p, False, floor=10)
    assert again["noop"] and again["version"] == g2["version"]
    assert client.get_model_version_by_alias(name, "champion").version == g1["version"]
    assert client.get_model_version_by_alias(name, "challenger").version == g2["version"]
    floor = register_and_gate(client, worse.run_id, worse.model_uris["backbone"], "simsiam-gate-floor", 9.5, False,
                              floor=10)
    assert floor["decision"] == "challenger" and "probe/top1 9.50 < floor 10.00" in floor["reasons"]

    # A tie is not an improvement, at full precision (a 4-decimal tag once let 78.42000127 "beat" 78.4200).
    tie = 78.42000126838684
    t1 = register_and_gate(client, best.run_id, best.model_uris["backbone"], "simsiam-gate-tie", tie, False)
    t2 = register_and_gate(client, worse.run_id, worse.model_uris["backbone"], "simsiam-gate-tie", tie, False)
    assert t1["decision"] == "champion" and t2["decision"] == "challenger" and "does not beat" in t2["reasons"]

    # Probes measured on different eval sets are not compared: a far better number on a 2,000-image
    # test set does not dethrone a champion measured on the full 10,000 (the case #27 found).
    full = {"eval.set": "probe trained on fm@v1 (60000 images, 5 epochs), tested on fm@v1 (10000 images)",
            "eval.seed": "0", "eval.test_images": "10000", "eval.train_images": "60000"}
    small_set = {**full, "eval.set": full["eval.set"].replace("10000", "2000"), "eval.test_images": "2000"}
    s1 = register_and_gate(client, best.run_id, best.model_uris["backbone"], "simsiam-gate-sets", 60.0, False,
                           eval_set=full)
    s2 = register_and_gate(client, worse.run_id, worse.model_uris["backbone"], "simsiam-gate-sets", 90.0, False,
                           eval_set=small_set)
    assert s1["decision"] == "champion" and s2["decision"] == "challenger"
    assert s2["reasons"] == (f"probe/top1 90.00 not compared with champion v{s1['version']} (60.00): measured on "
                             f"{small_set['eval.set']}, the champion on {full['eval.set']}")
    assert client.get_model_version("simsiam-gate-sets", s2["version"]).tags["eval.test_images"] == "2000"

    # A collapsed run (stop-grad off, paper Fig. 2 settings of the slow test) is never promoted,
    # even with a probe number far above the champion's.
    _, rep_c, res_c, _ = _tracked_run(server, small, "loss.stop_grad=false", "model.bn=hidden", "optim.base_lr=1.0",
                                      "model.width=8", "model.dim=128", "model.pred_dim=32", "data.train_subset=1024",
                                      "train.batch_size=128", "train.epochs=8", evaluate=False)
    assert res_c.collapsed and client.get_run(rep_c.run_id).data.tags["simsiam.collapsed"] == "true"
    g3 = register_and_gate(client, rep_c.run_id, rep_c.model_uris["backbone"], name, 99.0, res_c.collapsed, floor=10)
    assert g3["decision"] == "challenger" and "collapsed" in g3["reasons"]
    assert client.get_model_version_by_alias(name, "champion").version == g1["version"]

    # The champion alias loads and gives the in-memory backbone's features.
    champ = load_registered(f"models:/{name}@champion", server.tracking_uri).eval()
    x = (fmnist_test.images[:8].float() / 255 - 0.286) / 0.353
    ref_model = best.model_uris["backbone"]
    with torch.no_grad():
        assert torch.allclose(champ(x), load_registered(ref_model, server.tracking_uri).eval()(x))
    rows = [r for r in list_models(client) if r["name"] == name]
    assert {r["version"] for r in rows} == {g1["version"], g2["version"], g3["version"]}
    manual = promote(client, name, g2["version"], who="tester")
    assert manual["decision"] == "champion (manual)"
    assert client.get_model_version_by_alias(name, "champion").version == g2["version"]
    with pytest.raises(TrackingError, match="no version '99'"):
        promote(client, name, "99")
    with pytest.raises(TrackingError, match="cannot load"):
        load_registered(f"models:/{name}@nonexistent", server.tracking_uri)

    # The UI and the REST API serve the run.
    with urllib.request.urlopen(server.tracking_uri + "/", timeout=10) as r:
        assert r.status == 200 and b"<html" in r.read(2000).lower()
    with urllib.request.urlopen(f"{server.tracking_uri}/api/2.0/mlflow/runs/get?run_id={best.run_id}", timeout=10) as r:
        assert r.status == 200 and json.loads(r.read())["run"]["info"]["run_id"] == best.run_id


def test_no_secret_in_params_tags_artifacts_or_logs(server, run_a, tmp_path):
    from simsiam.services import s3_credentials

    _, secret = s3_credentials(server.state)
    client = MlflowClient(server.tracking_uri)
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        blob = json.dumps({**run.data.params, **run.data.tags})
        assert secret not in blob
        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / run.info.run_id),
                                                    tracking_uri=server.tracking_uri)
        for root, _, files in os.walk(local):
            for f in files:
                data = open(os.path.join(root, f), "rb").read()
                assert secret.encode() not in data, f
    for log in (server.state / "logs").rglob("*"):
        if log.is_file():
            assert secret not in log.read_text(errors="replace"), log


def test_unreachable_server_fails_before_training(tmp_path):
    with pytest.raises(TrackingError, match="unreachable"):
        check_server("http://127.0.0.1:9")
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    r = subprocess.run([sys.executable, "-m", "simsiam.cli", "pretrain", "--track", "--out", str(tmp_path / "run"),
                        "--no-progress", *tiny_sets()], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "unreachable" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


class _ServerOutage(Reporter):
    """Stops the tracking server at one step and brings it back at a later one."""

    def __init__(self, state, down_at, up_at):
        self.state, self.down_at, self.up_at = state, down_at, up_at

    def on_step(self, step, metrics):
        if step == self.down_at:
            stop_mlflow(self.state)
        if step == self.up_at:
            start_mlflow(self.state)


def test_server_lost_mid_run_leaves_no_gap(server, small):
    train_src, _ = small
    cfg = tiny_config("train.epochs=3", "data.train_subset=128")  # 24 steps
    rep = MlflowReporter(server.tracking_uri, "outage", flush_every=2, system_metrics=False)
    result = train(cfg, [_ServerOutage(server.state, 5, 15), rep], train_source=train_src)
    assert rep.failed_flushes >= 1  # the outage was real
    rep.finish()
    history = MlflowClient(server.tracking_uri).get_metric_history(rep.run_id, "train/loss")
    assert [m.step for m in history] == list(range(1, result.step + 1))


def test_server_gone_at_the_end_spills_metrics_to_the_unsent_file(server, small, tmp_path, capsys):
    train_src, _ = small
    cfg = tiny_config("train.epochs=1", "data.train_subset=128")  # 8 steps; flushes every 2 and at the epoch end
    unsent = tmp_path / "metrics-unsent.jsonl"
    rep = MlflowReporter(server.tracking_uri, "outage", flush_every=2, system_metrics=False, unsent_path=unsent)
    try:
        train(cfg, [_ServerOutage(server.state, down_at=5, up_at=None), rep], train_source=train_src)
        rep.finish()
    finally:
        start_mlflow(server.state)
    lines = [json.loads(ln) for ln in unsent.read_text().splitlines()]
    assert sorted(ln["step"] for ln in lines if "train/loss" in ln) == [5, 6, 7, 8]
    err = capsys.readouterr().err
    assert f"metric values written to {unsent} instead" in err
    sent = MlflowClient(server.tracking_uri).get_metric_history(rep.run_id, "train/loss")
    assert [m.step for m in sent] == [1, 2, 3, 4]  # together, the two hold every step once


def test_cli_track_register_and_models_ls(server, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.tracking_uri, "SIMSIAM_STATE": str(server.state)}
    cli = [sys.executable, "-m", "simsiam.cli"]
    r = subprocess.run([*cli, "pretrain", "--track", "--out", str(tmp_path / "cli-run"), "--no-progress",
                        *tiny_sets("train.epochs=1", "eval.probe_epochs=2", "tracking.experiment=cli")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["registry"]["name"] == "simsiam-fashion-mnist-resnet18_cifar"
    assert out["registry"]["decision"] in ("champion", "challenger") and out["run_url"].startswith("http://")
    # the listing in a process that then says which heavy modules it imported: none of torch's
    listing = ("import sys; from simsiam.cli import main; sys.argv = ['simsiam', 'models', 'ls']\n"
               "try:\n    main()\nexcept SystemExit:\n    pass\n"
               "print('imported:', sorted(m for m in ('torch', 'torchvision', 'ray', 'prefect') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True, env=env, timeout=120)
    header, row = r.stdout.splitlines()[:2]
    assert header.split() == ["name", "version", "aliases", "judged", "by", "value", "created", "decision", "eval",
                              "set"], r.stdout
    assert row.startswith("simsiam-fashion-mnist-resnet18_cifar") and "probe/top1" in row and "eval.set" not in row
    assert "probe trained on " in row and "tested on " in row, row  # the images the probe measured on
    assert r.stdout.splitlines()[-1] == "imported: []", r.stdout
    r = subprocess.run([*cli, "models", "promote", "no-such-model", "1"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2 and "no version '1'" in r.stderr and "Traceback" not in r.stderr
