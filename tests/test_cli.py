import json
import os
import subprocess
import sys
import time

import pytest

from conftest import tiny_sets
from simsiam.errors import SimSiamError

SIMSIAM = [sys.executable, "-m", "simsiam.cli"]
TINY = tiny_sets()


def run(*args, check=True, env=None):
    proc = subprocess.run([*SIMSIAM, *args], capture_output=True, text=True, timeout=600,
                          env=None if env is None else {**os.environ, **env})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


# `simsiam ...` in a process whose every training crashes at one step (simsiam.testing.faults)
CRASHING = [sys.executable, "-c", "import sys; from simsiam.testing.faults import crash_training_at; "
            "crash_training_at(int(sys.argv.pop(1))); from simsiam.cli import main; main()"]


def test_pretrain_crash_resume_mid_run_and_probe(tmp_path, fmnist_small_root):
    out = tmp_path / "run"
    # 4 steps per epoch, 8 in all; the run crashes at step 6, after the epoch-1 checkpoint at step 4.
    r = subprocess.run([*CRASHING, "6", "pretrain", "--preset", "cpu-demo", "--out", str(out), "--no-progress",
                        *TINY], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "injected failure at step 6" in r.stderr
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 5  # crashed before logging 6
    # --resume keeps the run's own config: an override that changes the plan is refused.
    r = run("pretrain", "--out", str(out), "--resume", "--no-progress", "--set", "train.max_steps=5", check=False)
    assert r.returncode == 2 and "config differs" in r.stderr
    summary = json.loads(run("pretrain", "--out", str(out), "--resume", "--no-progress").stdout)
    assert summary["resumed_from_step"] == 4 and summary["steps"] == 8
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines if "epoch" not in ln] == list(range(1, 9))  # 5, 6 once, from the resume
    assert [ln["epoch"] for ln in lines if "epoch" in ln] == [1, 2]

    small = ["--set", f"data.root={fmnist_small_root}", "--set", "eval.probe_epochs=1", "--set", "eval.knn_k=10"]
    trained = json.loads(run("probe", "--checkpoint", str(out / "checkpoint.pt"), *small).stdout)
    assert 10 <= trained["metrics"]["probe/top1"] <= 100 and 10 <= trained["metrics"]["knn/final_top1"] <= 100
    assert trained["test_images"] == 500 and trained["step"] == 8 and not trained["random_init"]
    baseline = json.loads(run("probe", "--checkpoint", str(out), "--random-init", *small).stdout)
    assert baseline["random_init"] and baseline["step"] == 0  # untrained, not the checkpoint's 8 steps
    assert baseline["metrics"]["knn/final_top1"] != trained["metrics"]["knn/final_top1"]  # other weights


def test_diverging_run_exits_1_without_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    r = run("pretrain", "--out", str(out), "--no-progress", *TINY, "--set", "optim.base_lr=1e30", check=False)
    assert r.returncode == 1 and "training diverged: loss is nan" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (out / "checkpoint.pt").exists() and not list(out.glob("*.tmp"))


@pytest.mark.integration
def test_up_status_down(tmp_path):
    state = str(tmp_path / "state")
    try:
        up = json.loads(run("up", "--state", state).stdout)
        assert up["s3"]["running"] and up["mlflow"]["running"] and not up["prefect"]["running"]
        status = json.loads(run("status", "--state", state).stdout)
        assert status["mlflow"]["tracking_uri"] == up["mlflow"]["tracking_uri"]
        assert status["s3"]["endpoint_url"].startswith("http://127.0.0.1:")
    finally:
        down = json.loads(run("down", "--state", state).stdout)
    assert down == {"prefect": {"stopped": False}, "mlflow": {"stopped": True}, "s3": {"stopped": True}}
    after = json.loads(run("status", "--state", state).stdout)
    assert not after["s3"]["running"] and not after["mlflow"]["running"]


def test_data_and_eval_options_become_config_overrides(tmp_path):
    from simsiam.cli import data_sets

    assert data_sets(str(tmp_path / "p"), "fashion-mnist") == ["data.dataset=images", f"data.root={tmp_path / 'p'}",
                                                               "eval.dataset=fashion-mnist"]
    assert data_sets("s3://b/photos/", "imagefolder:/data/l") == ["data.dataset=images", "data.root=s3://b/photos/",
                                                                  "eval.dataset=imagefolder", "eval.root=/data/l"]
    assert data_sets(None, None) == []


def test_sweep_grid_parsing():
    from simsiam.cli import parse_grid, parse_values

    assert parse_values("0.03,0.06", "--lr") == [0.03, 0.06] and parse_values("128", "--batch", int) == [128]
    assert parse_grid(["loss.stop_grad=true,false", "model.dim=256,512"]) == {
        "loss.stop_grad": [True, False], "model.dim": [256, 512]}
    with pytest.raises(SimSiamError, match="key=v1,v2"):
        parse_grid(["loss.stop_grad"])
    with pytest.raises(SimSiamError, match="--batch takes a comma list"):
        parse_values("128,big", "--batch", int)


@pytest.mark.parametrize("args,needle", [
    (["--grid", "loss.stop_grad"], "--grid takes key=v1,v2"),
    (["--grid", "loss.stop_gradient=true,false"], "unknown key 'loss.stop_gradient'"),
    (["--grid", "model.bn=some"], "model.bn='some' is not allowed"),
    (["--lr", "0.1,x"], "optim.base_lr: Input should be a valid number"),
])
def test_sweep_rejects_a_bad_grid_before_any_trial(tmp_path, args, needle):
    r = run("sweep", "--state", str(tmp_path / "s"), *args, check=False)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()  # failed before S3 or Ray started


def test_run_in_sweep_mode_rejects_a_bad_grid_before_any_service(tmp_path):
    r = run("run", "--mode", "sweep", "--state", str(tmp_path / "s"), "--grid", "loss.stop_gradient=true,false",
            check=False)
    assert r.returncode == 2 and "unknown key 'loss.stop_gradient'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()  # failed before S3, MLflow, Prefect or Ray started


@pytest.mark.parametrize("args,needle", [
    (["config", "--set", "model.backbone=vgg"], "model.backbone='vgg' is not allowed"),
    (["pretrain", "--out", "{tmp}/x", "--preset", "nope"], "unknown preset 'nope'"),
    (["probe", "--checkpoint", "{tmp}/missing.pt"], "checkpoint not found"),
    (["pretrain", "--out", "{tmp}/y", "--resume"], "cannot resume"),
    (["pretrain", "--out", "{tmp}/z", "--set", "data.root={tmp}/empty", *TINY], "not found in"),
    (["reproduce", "--suite", "tables", "--state", "{tmp}/s"], "unknown suite 'tables'; allowed: collapse, ablations"),
    (["reproduce", "--seeds", "0", "--state", "{tmp}/s"], "--seeds must be at least 1"),
    (["config", "--set", "loss.snapshot_every_steps=0"], "loss.snapshot_every_steps: Input should be greater"),
    (["config", "--set", "loss.ma_momentum=1"], "loss.ma_momentum: Input should be less than 1"),
    (["config", "--set", "loss.ma_momentum=-0.1"], "loss.ma_momentum: Input should be greater than or equal to 0"),
    (["pretrain", "--out", "{tmp}/m", *TINY, "--set", "loss.target=moving_average", "--set", "data.train_subset=50000",
      "--set", "data.memory_budget_mb=1"], "keeps 50000 x 32 floats (6 MiB), over data.memory_budget_mb=1"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, args, needle):
    # Commands without --state would start their services in $SIMSIAM_STATE: the same dir, so the
    # last check holds for every row.
    r = run(*[a.replace("{tmp}", str(tmp_path)) for a in args], check=False,
            env={"SIMSIAM_STATE": str(tmp_path / "s")})
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()  # failed before any service started in the state dir


def test_an_unreachable_ray_address_is_one_line_before_any_service_starts(tmp_path):
    t0 = time.time()
    r = subprocess.run([*SIMSIAM, "pretrain", "--workers", "2", "--out", str(tmp_path / "x"), "--state",
                        str(tmp_path / "s"), *TINY], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "RAY_ADDRESS": "127.0.0.1:9"})
    assert r.returncode == 2 and time.time() - t0 < 60  # ray.init itself retries for minutes
    assert "cannot reach the Ray cluster at RAY_ADDRESS=127.0.0.1:9" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args,needle", [
    (["stage", "fashion-mnist", "--name", "a/b", "--state", "{tmp}/s"], "dataset name 'a/b' is not allowed"),
    (["stage", "fashion-mnist", "--name", "../../escape", "--state", "{tmp}/s"], "dataset name '../../escape' is not"),
    (["run", "--subset", "10", "--state", "{tmp}/s"], "--subset 10 leaves 10 training samples, fewer than train.batch"),
    (["pretrain", "--out", "{tmp}/t", "--track", "--tracking-uri", "htp:/bad uri", "--state", "{tmp}/s", *TINY],
     "--tracking-uri 'htp:/bad uri' is not an MLflow tracking URI"),
    (["status", "--state", "{tmp}/a-file"], "a-file is a file, not a directory"),
    (["stage", "imagefolder", "--root", "{tmp}", "--state", "{tmp}/s"], "without class folders train with `simsiam"),
    (["run", "--data", "{tmp}/no-photos", "--state", "{tmp}/s", *TINY], "no-photos not found"),
    (["run", "--data", "{tmp}", "--eval", "mnist", "--state", "{tmp}/s", *TINY], "eval.dataset='mnist' is not allowed"),
    (["run", "--data", "{tmp}", "--eval", "cifar10:{tmp}/none", "--state", "{tmp}/s", *TINY],
     "CIFAR-10 test batches (test_batch) not found"),
    (["run", "--data", "{tmp}", "--mode", "sweep", "--metric", "knn/top1", "--state", "{tmp}/s", *TINY],
     "--metric knn/top1 needs labelled evaluation data"),
    (["sweep", "--metric", "probe/top1", "--batch", "16", "--state", "{tmp}/s", *TINY],
     "--metric 'probe/top1' cannot rank a sweep"),
])
def test_bad_names_uris_and_sizes_exit_2_with_one_line(tmp_path, args, needle):
    (tmp_path / "a-file").write_text("")
    test_user_errors_exit_2_with_one_line(tmp_path, args, needle)


@pytest.mark.parametrize("args,option", [
    (["run", "--subset", "0"], "--subset"), (["stage", "fashion-mnist", "--subset", "-1"], "--subset"),
    (["run", "--workers", "-1"], "--workers"), (["pretrain", "--out", "{tmp}/w", "--workers", "-2"], "--workers"),
    (["sweep", "--samples", "0"], "--samples"), (["reproduce", "--max-concurrent", "0"], "--max-concurrent"),
])
def test_out_of_range_numbers_are_usage_errors(tmp_path, args, option):
    r = run(*[a.replace("{tmp}", str(tmp_path)) for a in args], "--state", str(tmp_path / "s"), check=False)
    assert r.returncode == 2 and f"Invalid value for '{option}'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()


def test_full_disk_mid_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    # 700 KiB: the first checkpoint (~450 KiB) fits, the second cannot be written beside it
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        r = run("pretrain", "--out", str(disk / "run"), "--no-progress", *TINY, check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert f"no space left on the device of {disk / 'run' / 'checkpoint.pt'}: it needs 0.4 MiB" in r.stderr
        assert "the previous checkpoint is kept" in r.stderr
        from simsiam.checkpoint import load_checkpoint

        assert load_checkpoint(disk / "run")["step"] == 4  # epoch 1 of 2 (64 images, batch 16)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_bad_checkpoint_file(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run("probe", "--checkpoint", str(bad), check=False)
    assert r.returncode == 2 and "cannot be read" in r.stderr and "Traceback" not in r.stderr


def test_help_and_presets():
    assert "pretrain" in run("--help").stdout
    assert "cpu-demo" in run("presets").stdout.split()
    assert "base_lr" in run("config", "--preset", "cifar10-paper").stdout


def test_piped_help_is_120_columns_wide_and_keeps_each_option_help_on_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "LINES")}
    out = subprocess.run([*SIMSIAM, "run", "--help"], capture_output=True, text=True, timeout=60, env=env).stdout
    assert max(len(line) for line in out.splitlines()) == 120  # rich's own default off a terminal is 80
    assert "override a config key, e.g. optim.base_lr=0.05 (repeatable)" in out  # one line, not three slivers
    narrow = subprocess.run([*SIMSIAM, "run", "--help"], capture_output=True, text=True, timeout=60,
                            env={**env, "COLUMNS": "90"}).stdout
    assert max(len(line) for line in narrow.splitlines()) == 90  # the user's COLUMNS wins


def test_presets_lists_every_preset_with_its_one_line_summary():
    from simsiam.config import list_presets

    lines = run("presets").stdout.splitlines()
    assert [line.split()[0] for line in lines] == list_presets()
    summaries = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    assert summaries["cpu-demo"].startswith("The default: a demo encoder on 2 CPU cores")
    assert all(len(text) > 40 for text in summaries.values()), summaries
