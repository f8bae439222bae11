import json
import subprocess
import sys

import pytest

SIMSIAM = [sys.executable, "-m", "simsiam.cli"]
TINY = ["--set", "model.width=4", "--set", "model.dim=32", "--set", "model.pred_dim=8", "--set", "train.batch_size=16",
        "--set", "data.train_subset=64", "--set", "train.epochs=2", "--set", "train.device=cpu",
        "--set", "eval.knn_every_epochs=0"]


def run(*args, check=True):
    proc = subprocess.run([*SIMSIAM, *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_pretrain_resume_and_probe(tmp_path):
    out = tmp_path / "run"
    r = run("pretrain", "--preset", "cpu-demo", "--out", str(out), "--no-progress", *TINY,
            "--set", "train.max_steps=3")
    summary = json.loads(r.stdout)
    assert summary["steps"] == 3
    assert (out / "config.yaml").is_file() and (out / "checkpoint.pt").is_file()
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines if "epoch" not in ln] == [1, 2, 3]
    # --resume with a longer budget continues from step 3 (the saved config is the source of truth).
    r = run("pretrain", "--out", str(out), "--resume", "--no-progress", "--set", "train.max_steps=5", check=False)
    assert r.returncode == 2 and "config differs" in r.stderr  # max_steps is part of the plan
    r = run("pretrain", "--out", str(out), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    r = run("probe", "--checkpoint", str(out / "checkpoint.pt"), "--set", "eval.probe_epochs=1",
            "--set", "eval.knn_k=10")
    probe = json.loads(r.stdout)
    assert 10 <= probe["probe/top1"] <= 100 and 10 <= probe["knn/top1"] <= 100
    assert probe["test_images"] == 10000 and probe["step"] == 3


@pytest.mark.parametrize("args,needle", [
    (["config", "--set", "model.backbone=vgg"], "model.backbone='vgg' is not allowed"),
    (["pretrain", "--out", "{tmp}/x", "--preset", "nope"], "unknown preset 'nope'"),
    (["probe", "--checkpoint", "{tmp}/missing.pt"], "checkpoint not found"),
    (["pretrain", "--out", "{tmp}/y", "--resume"], "cannot resume"),
    (["pretrain", "--out", "{tmp}/z", "--set", "data.root={tmp}/empty", *TINY], "not found in"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, args, needle):
    r = run(*[a.replace("{tmp}", str(tmp_path)) for a in args], check=False)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_checkpoint_file(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run("probe", "--checkpoint", str(bad), check=False)
    assert r.returncode == 2 and "cannot be read" in r.stderr and "Traceback" not in r.stderr


def test_help_and_presets():
    assert "pretrain" in run("--help").stdout
    assert "cpu-demo" in run("presets").stdout.split()
    assert "base_lr" in run("config", "--preset", "cifar10-paper").stdout
