import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_config
from simsiam.checkpoint import load_checkpoint, load_weights, model_from_checkpoint, save_checkpoint
from simsiam.engine import train
from simsiam.errors import ConfigError, DataError, DiskFullError
from simsiam.models import build_model
from simsiam.reporters import JsonlReporter, Reporter
from simsiam.runtime import seed_everything


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


@pytest.mark.parametrize("augment_on", ["device", "workers"])
def test_resume_continues_identically(fmnist_train, tmp_path, augment_on):
    cfg = tiny_config("train.epochs=3", "train.checkpoint_every_steps=5", f"data.augment_on={augment_on}")
    straight = train(cfg, out_dir=tmp_path / "a", train_source=fmnist_train)
    # Interrupt mid-epoch (step 7 of 12, epoch 2 of 3), then resume.
    part = train(cfg, out_dir=tmp_path / "b", stop_after_steps=7, train_source=fmnist_train)
    assert part.step == 7 and not part.finished
    torch.manual_seed(12345)  # a different global RNG state must not matter: it is restored
    resumed = train(cfg, out_dir=tmp_path / "b", resume=True, train_source=fmnist_train)
    assert resumed.step == straight.step == 12 and resumed.start_step == 7  # the interruption checkpointed
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    # ... and an interruption changes something, so the equality above is not vacuous.
    assert not torch.equal(part.model.state_dict()["backbone.conv1.weight"], a["backbone.conv1.weight"])


def test_jsonl_reporter_drops_lines_past_resumed_step_and_restarts_a_new_run(tmp_path, tiny_cfg):
    path = tmp_path / "metrics.jsonl"
    rep = JsonlReporter(path)
    rep.on_start(tiny_cfg, {"start_step": 0})
    for s in range(1, 6):
        rep.on_step(s, {"train/loss": -s / 10})
    rep.on_epoch(1, {"knn/top1": 50.0})
    with path.open("a") as fh:
        fh.write('{"step": 6, "train/lo')  # cut short by the interruption
    JsonlReporter(path).on_start(tiny_cfg, {"start_step": 3})
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [1, 2, 3]
    JsonlReporter(path).on_start(tiny_cfg, {"start_step": 0})
    assert not path.exists()


def test_resume_errors(fmnist_train, tmp_path):
    with pytest.raises(DataError, match="no checkpoint"):
        train(tiny_config(), out_dir=tmp_path, resume=True, train_source=fmnist_train)
    train(tiny_config(), out_dir=tmp_path, stop_after_steps=2, train_source=fmnist_train)
    with pytest.raises(ConfigError, match="config differs"):
        train(tiny_config("optim.base_lr=0.5"), out_dir=tmp_path, resume=True, train_source=fmnist_train)
    # A checkpoint saved while fault injection was config resumes: it is the same config.
    ckpt = load_checkpoint(tmp_path)
    ckpt["config"]["faults"] = {"fail_at_step": None, "weights_digest_dir": None}
    save_checkpoint(tmp_path / "checkpoint.pt", ckpt)
    assert train(tiny_config(), out_dir=tmp_path, resume=True, train_source=fmnist_train).start_step == 2


def test_checkpoint_on_a_full_disk_names_the_file_and_keeps_the_previous(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {}, "step": 1})
    (tmp_path / "checkpoint.pt.tmp").symlink_to("/dev/full")  # every write there fails with ENOSPC
    with pytest.raises(DiskFullError, match=f"no space left on the device of {path}: it needs 0.0 MiB; the previous"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "config": {}, "step": 2})
    assert load_checkpoint(path)["step"] == 1 and not (tmp_path / "checkpoint.pt.tmp").exists()


def test_resume_with_no_step_left_keeps_the_collapse_verdict(fmnist_train, tmp_path):
    done = train(tiny_config(), out_dir=tmp_path, train_source=fmnist_train)
    again = train(tiny_config(), out_dir=tmp_path, resume=True, train_source=fmnist_train)
    assert again.start_step == done.step == again.step
    assert again.last_metrics["train/z_std_ratio"] == done.last_metrics["train/z_std_ratio"]
    assert again.collapsed == done.collapsed


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran-code",))


def test_checkpoint_that_would_run_code_is_refused_and_legacy_numpy_rng_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {}, "config": {}, "evil": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="cannot be read"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "ran-code").exists()
    legacy = {"model": {"w": torch.ones(2)}, "config": {}, "rng": {"numpy": np.random.get_state()}}
    torch.save(legacy, tmp_path / "legacy.pt")  # RNG state as numpy arrays, as before
    assert (load_checkpoint(tmp_path / "legacy.pt")["rng"]["numpy"][1] == legacy["rng"]["numpy"][1]).all()


class Spy(nn.Module):
    """Wraps the model as DDP would: records what each step feeds it and under which autocast."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x1, x2):
        bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        self.calls.append({"rows": x1.shape[0], "channels": x1.shape[1], "bf16": bf16})
        return self.model(x1, x2)


def _channels_last(model):
    # A conv with several input channels: with one, both memory formats have the same strides.
    return model.backbone.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)


def _train_spied(fmnist_train, *overrides):
    cfg = tiny_config("train.epochs=1", *overrides)
    seed_everything(cfg.train.seed)  # train() seeds the same way before building its model
    init = build_model(cfg.model).state_dict()
    spy = {}
    result = train(cfg, train_source=fmnist_train, wrap_model=lambda m: spy.setdefault("net", Spy(m)))
    assert result.step == 4 and torch.isfinite(torch.tensor(result.last_metrics["train/loss"]))
    return result, spy["net"].calls, init


def test_default_step_feeds_two_views_of_the_batch_in_fp32(fmnist_train):
    result, calls, _ = _train_spied(fmnist_train, "train.amp=none", "train.channels_last=false")
    assert [c["rows"] for c in calls] == [16] * 4 and not any(c["bf16"] for c in calls)
    assert not _channels_last(result.model)
    assert -1 <= result.last_metrics["train/loss"] <= 1  # negative cosine


def test_asymmetric_2x_doubles_the_pairs_per_step(fmnist_train):
    _, calls, _ = _train_spied(fmnist_train, "loss.symmetry=asymmetric_2x")
    assert [c["rows"] for c in calls] == [32] * 4  # two independent pairs of each of the 16 images


def test_cross_entropy_similarity_is_not_a_cosine(fmnist_train):
    result, _, _ = _train_spied(fmnist_train, "loss.similarity=cross_entropy")
    # -softmax(z) . log softmax(p) >= entropy of softmax(z) > 0, near log(32) = 3.47 at init; a cosine is <= 1.
    assert result.last_metrics["train/loss"] > 1.5


def test_predictor_none_trains_without_a_predictor(fmnist_train):
    result, _, _ = _train_spied(fmnist_train, "model.predictor=none")
    assert isinstance(result.model.predictor, nn.Identity) and not list(result.model.predictor.parameters())


def test_fixed_random_predictor_stays_at_its_init(fmnist_train):
    result, _, init = _train_spied(fmnist_train, "model.predictor=fixed_random", "optim.fix_pred_lr=false")
    after = result.model.state_dict()
    assert all(torch.equal(after[k], init[k]) for k in after if k.startswith("predictor.") and "running" not in k
               and "num_batches" not in k)
    assert not torch.equal(after["projector.0.weight"], init["projector.0.weight"])  # the rest trains


def test_bn_all_adds_a_trained_bn_on_the_predictor_output(fmnist_train):
    result, _, _ = _train_spied(fmnist_train, "model.bn=all")
    out_bn = result.model.predictor[-1]
    assert isinstance(out_bn, nn.BatchNorm1d) and out_bn.num_batches_tracked.item() == 2 * 4  # two views x 4 steps


def test_bf16_and_channels_last_reach_the_forward(fmnist_train):
    result, calls, _ = _train_spied(fmnist_train, "train.amp=bf16", "train.channels_last=true")
    assert all(c["bf16"] for c in calls) and _channels_last(result.model)


def test_auto_precision_is_fp32_contiguous_when_torch_kernels_are_capped_at_avx2():
    # The AVX2 stand-in of docs/benchmarks.md: torch reads ATEN_CPU_CAPABILITY at start-up, so a child process.
    code = ("import torch; from simsiam.runtime import resolve_precision as r; "
            "print(torch.backends.cpu.get_cpu_capability(), r('auto', 'auto', torch.device('cpu')))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["AVX2", "('none',", "False)"]


def test_in_channels_3_repeats_grey_images_into_an_rgb_stem(fmnist_train):
    result, calls, _ = _train_spied(fmnist_train, "model.in_channels=3")
    assert result.model.backbone.conv1.in_channels == 3 and all(c["channels"] == 3 for c in calls)


def test_knn_monitor_and_model_from_checkpoint(fmnist_train, fmnist_test, tmp_path):
    cfg = tiny_config("eval.knn_every_epochs=1", "eval.knn_at_start=true", "eval.knn_train_samples=200",
                      "eval.knn_test_samples=100", "eval.knn_k=20")
    rec = Recorder()
    result = train(cfg, [rec], out_dir=tmp_path, train_source=fmnist_train, test_source=fmnist_test)
    knn = [(e, m["knn/top1"]) for e, m in rec.epochs]
    assert [e for e, _ in knn] == [0, 1, 2] and all(10 <= v <= 100 for _, v in knn)
    assert result.knn_last == knn[-1][1] and result.knn_best == max(v for e, v in knn if e > 0)
    model, cfg2 = model_from_checkpoint(load_checkpoint(tmp_path / "checkpoint.pt"), tmp_path)
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
    train(tiny_config("train.epochs=1"), out_dir=tmp_path, train_source=fmnist_train)
    other = build_model(tiny_config("model.dim=64").model)
    with pytest.raises(DataError, match="does not fit the configured model"):
        load_weights(other, load_checkpoint(tmp_path)["model"], tmp_path)
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


def test_large_seed_works(fmnist_train):
    assert train(tiny_config("train.seed=20240101", "train.max_steps=1"), train_source=fmnist_train).step == 1
