import json

import pytest
import torch

from conftest import tiny_config
from simsiam.engine import JsonlReporter, Reporter, load_checkpoint, model_from_checkpoint, train
from simsiam.errors import ConfigError, DataError


class Recorder(Reporter):
    def __init__(self):
        self.steps, self.epochs, self.ckpts, self.ended = [], [], [], None

    def on_step(self, step, metrics):
        self.steps.append((step, metrics))

    def on_epoch(self, epoch, metrics):
        self.epochs.append((epoch, metrics))

    def on_checkpoint(self, path, step):
        self.ckpts.append(step)

    def on_end(self, result):
        self.ended = result


def test_reporter_protocol_and_metrics(fmnist_train, tmp_path):
    rec = Recorder()
    result = train(tiny_config(), [rec], out_dir=tmp_path, train_source=fmnist_train)
    assert result.step == result.total_steps == 8 and result.finished
    assert [s for s, _ in rec.steps] == list(range(1, 9))
    m = rec.steps[-1][1]
    assert set(m) == {"train/loss", "train/z_std", "train/z_std_ratio", "train/lr"}
    assert m["train/z_std_ratio"] == pytest.approx(m["train/z_std"] * 32 ** 0.5)
    assert [e for e, _ in rec.epochs] == [1, 2] and rec.ckpts == [4, 8] and rec.ended is result
    assert load_checkpoint(tmp_path)["step"] == 8


def test_resume_continues_identically(fmnist_train, tmp_path):
    cfg = tiny_config("train.epochs=3", "train.checkpoint_every_steps=5")
    straight = train(cfg, out_dir=tmp_path / "a", train_source=fmnist_train)
    # Interrupt mid-epoch (step 7 of 12, epoch 2 of 3), then resume.
    part = train(cfg, out_dir=tmp_path / "b", stop_after_steps=7, train_source=fmnist_train)
    assert part.step == 7 and not part.finished
    torch.manual_seed(12345)  # a different global RNG state must not matter: it is restored
    resumed = train(cfg, out_dir=tmp_path / "b", resume=True, train_source=fmnist_train)
    assert resumed.step == straight.step == 12
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    # ... and an interruption changes something, so the equality above is not vacuous.
    assert not torch.equal(part.model.state_dict()["backbone.conv1.weight"], a["backbone.conv1.weight"])


def test_jsonl_reporter_drops_lines_past_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rep = JsonlReporter(path)
    for s in range(1, 6):
        rep.on_step(s, {"train/loss": -s / 10})
    rep.on_epoch(1, {"knn/top1": 50.0})
    with path.open("a") as fh:
        fh.write('{"step": 6, "train/lo')  # cut short by the interruption
    JsonlReporter(path, resume_step=3)
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [1, 2, 3]


def test_resume_errors(fmnist_train, tmp_path):
    with pytest.raises(DataError, match="no checkpoint"):
        train(tiny_config(), out_dir=tmp_path, resume=True, train_source=fmnist_train)
    train(tiny_config(), out_dir=tmp_path, stop_after_steps=2, train_source=fmnist_train)
    with pytest.raises(ConfigError, match="config differs"):
        train(tiny_config("optim.base_lr=0.5"), out_dir=tmp_path, resume=True, train_source=fmnist_train)


@pytest.mark.parametrize("overrides", [
    ("loss.symmetry=asymmetric_2x",), ("loss.similarity=cross_entropy",), ("model.predictor=none",),
    ("model.predictor=fixed_random", "optim.fix_pred_lr=false"), ("model.bn=all",),
    ("train.amp=bf16", "train.channels_last=true"), ("model.in_channels=3",),
])
def test_ablation_switches_train(fmnist_train, overrides):
    result = train(tiny_config("train.epochs=1", *overrides), train_source=fmnist_train)
    assert result.step == 4 and torch.isfinite(torch.tensor(result.last_metrics["train/loss"]))


def test_knn_monitor_and_model_from_checkpoint(fmnist_train, fmnist_test, tmp_path):
    cfg = tiny_config("eval.knn_every_epochs=1", "eval.knn_at_start=true", "eval.knn_train_samples=200",
                      "eval.knn_test_samples=100", "eval.knn_k=20")
    rec = Recorder()
    result = train(cfg, [rec], out_dir=tmp_path, train_source=fmnist_train, test_source=fmnist_test)
    knn = [(e, m["knn/top1"]) for e, m in rec.epochs]
    assert [e for e, _ in knn] == [0, 1, 2] and all(10 <= v <= 100 for _, v in knn)
    assert result.knn_last == knn[-1][1] and result.knn_best == max(v for e, v in knn if e > 0)
    model, cfg2, _ = model_from_checkpoint(tmp_path / "checkpoint.pt")
    assert cfg2 == cfg
    x = fmnist_train.images[:4].float() / 255
    model.eval(), result.model.eval()
    assert torch.allclose(model.backbone(x), result.model.backbone(x))


def test_fp16_on_cpu_and_bad_device_are_config_errors(fmnist_train):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(tiny_config("train.amp=fp16"), train_source=fmnist_train)
    with pytest.raises(ConfigError, match="train.device"):
        train(tiny_config("train.device=tpu"), train_source=fmnist_train)


def test_checkpoint_of_other_architecture_is_a_data_error(fmnist_train, tmp_path):
    from simsiam.engine import load_weights
    from simsiam.models import build_model

    train(tiny_config("train.epochs=1"), out_dir=tmp_path, train_source=fmnist_train)
    other = build_model(tiny_config("model.dim=64").model)
    with pytest.raises(DataError, match="does not fit the configured model"):
        load_weights(other, load_checkpoint(tmp_path)["model"], tmp_path)
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


def test_large_seed_works(fmnist_train):
    assert train(tiny_config("train.seed=20240101", "train.max_steps=1"), train_source=fmnist_train).step == 1
