"""Sec. 5 of the paper as `loss.target`: k-step alternation (snapshot) and the moving-average memory."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from simsiam.engine import train
from simsiam.errors import ConfigError
from simsiam.models import build_model
from simsiam.targets import MovingAverageTargets, SnapshotTargets, build_targets


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_snapshot_refreshes_at_exactly_every_k_steps():
    model = build_model(tiny_config().model)
    snap = SnapshotTargets(model, every=3)
    history = []
    for step in range(8):
        snap.before_step(model, step)
        history.append(_weights(model.encoder))
        expected = history[step - step % 3]  # the weights of steps 0, 3, 6
        held = snap.encoder.state_dict()
        assert all(torch.equal(held[k], expected[k]) for k in held), step
        if step % 3:  # between refreshes the copy is not today's weights
            assert not torch.equal(held["0.conv1.weight"], history[step]["0.conv1.weight"])
        with torch.no_grad():  # an "optimizer step"
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
    assert snap.taken_at == 6 and not any(p.requires_grad for p in snap.encoder.parameters())


def test_snapshot_every_step_is_plain_simsiam(fmnist_train):
    plain = train(tiny_config(), train_source=fmnist_train)
    k1 = train(tiny_config("loss.target=snapshot", "loss.snapshot_every_steps=1"), train_source=fmnist_train)
    k4 = train(tiny_config("loss.target=snapshot", "loss.snapshot_every_steps=4"), train_source=fmnist_train)
    a, b, c = plain.model.state_dict(), k1.model.state_dict(), k4.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert not torch.equal(a["projector.0.weight"], c["projector.0.weight"])  # k > 1 is a different method


def test_moving_average_memory_update_matches_the_formula():
    m = 0.8
    targets = MovingAverageTargets(n=5, dim=3, momentum=m, symmetric=True, device=torch.device("cpu"))
    z1, z2 = torch.randn(2, 3), torch.randn(2, 3)
    pos = torch.tensor([4, 1])
    t1, t2 = targets(z1, z2, None, None, pos)
    first = (1 - m) * (z1 + z2) / 2  # memory starts at zero
    assert torch.allclose(t1, first) and torch.equal(t1, t2)
    y1, y2 = torch.randn(2, 3), torch.randn(2, 3)
    t1, _ = targets(y1, y2, None, None, pos)
    assert torch.allclose(t1, m * first + (1 - m) * (y1 + y2) / 2)
    assert torch.equal(targets.memory[[0, 2, 3]], torch.zeros(3, 3))  # rows not in the batch are untouched
    asym = MovingAverageTargets(n=5, dim=3, momentum=m, symmetric=False, device=torch.device("cpu"))
    t1, _ = asym(z1, z2, None, None, pos)
    assert torch.allclose(t1, (1 - m) * z2)  # asymmetric: the other view's z only
    assert not t1.requires_grad


@pytest.mark.parametrize("target", [["loss.target=snapshot", "loss.snapshot_every_steps=3"],
                                    ["loss.target=moving_average", "model.predictor=none"]],
                         ids=["snapshot", "moving_average"])
def test_resume_with_a_snapshot_or_memory_is_bit_identical(fmnist_train, tmp_path, target):
    cfg = tiny_config("train.epochs=3", "train.checkpoint_every_steps=5", *target)
    straight = train(cfg, out_dir=tmp_path / "a", train_source=fmnist_train)
    train(cfg, out_dir=tmp_path / "b", stop_after_steps=7, train_source=fmnist_train)  # 7: mid-snapshot, mid-epoch
    torch.manual_seed(999)
    resumed = train(cfg, out_dir=tmp_path / "b", resume=True, train_source=fmnist_train)
    assert resumed.start_step == 7 and resumed.step == straight.step == 12
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    sa, sb = straight.targets.state_dict(), resumed.targets.state_dict()
    if "memory" in sa:
        assert torch.equal(sa["memory"], sb["memory"]) and sa["memory"].abs().sum() > 0
    else:
        assert sa["taken_at"] == sb["taken_at"] == 9
        assert all(torch.equal(sa["encoder"][k], sb["encoder"][k]) for k in sa["encoder"])


def test_moving_average_without_memory_for_the_dataset_names_the_budget():
    cfg = tiny_config("loss.target=moving_average", "data.memory_budget_mb=1")
    with pytest.raises(ConfigError, match=r"keeps 60000 x 32 floats \(7 MiB\), over data.memory_budget_mb=1"):
        build_targets(cfg, build_model(cfg.model), 60000, torch.device("cpu"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_moving_average_memory_is_identical_on_two_ddp_ranks(tmp_path):
    worker, port = Path(__file__).with_name("ddp_targets_worker.py"), _free_port()
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), "2", str(port), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    memories = {(tmp_path / f"rank{r}.memory.sha256").read_text() for r in range(2)}
    weights = {(tmp_path / f"rank{r}.sha256").read_text() for r in range(2)}
    assert len(memories) == 1 and len(weights) == 1, outs  # each rank applied both ranks' updates
