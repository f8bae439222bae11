"""Paper Fig. 2 on real data: with stop-grad SimSiam keeps a healthy output spread while its loss
falls; without stop-grad the outputs collapse to a constant and the loss goes to -1.

Both runs use Table 4b's BN layout (`model.bn=hidden`: no BN on the projector output). With the
default output BN(affine=False), z has unit per-channel batch variance by construction, so a
constant output needs the pre-BN variance to fall below BN's eps; on CPU that takes far longer
than a test (measured: 640 steps without stop-grad, z_std*sqrt(d) still 0.92 at base lr 0.06,
0.78 after 350 steps at 0.5). Without output BN the collapse shows within ~100 steps."""

import pytest

from conftest import tiny_config
from simsiam.engine import train
from simsiam.reporters import Reporter

pytestmark = pytest.mark.slow

COLLAPSE_SETTINGS = ("model.width=8", "model.dim=128", "model.pred_dim=32", "data.train_subset=2048",
                     "train.batch_size=128", "train.epochs=8", "optim.base_lr=1.0", "model.bn=hidden")


class Trace(Reporter):
    def __init__(self):
        self.loss, self.ratio = [], []

    def on_step(self, step, m):
        self.loss.append(m["train/loss"])
        self.ratio.append(m["train/z_std_ratio"])


def _run(fmnist_train, stop_grad: bool):
    trace = Trace()
    result = train(tiny_config(*COLLAPSE_SETTINGS, f"loss.stop_grad={str(stop_grad).lower()}"), [trace],
                   train_source=fmnist_train)
    tail = lambda xs: sum(xs[-10:]) / 10  # noqa: E731
    return result, tail(trace.loss), tail(trace.ratio), sum(trace.loss[:10]) / 10


def test_stop_grad_keeps_spread_and_removing_it_collapses(fmnist_train):
    healthy, loss_end, ratio_end, loss_start = _run(fmnist_train, stop_grad=True)
    assert ratio_end >= 0.3, f"z_std*sqrt(d)={ratio_end:.3f}: SimSiam with stop-grad should not collapse"
    assert loss_end < loss_start - 0.2, f"loss {loss_start:.3f} -> {loss_end:.3f} should fall"
    assert not healthy.collapsed

    collapsed, loss_end, ratio_end, _ = _run(fmnist_train, stop_grad=False)
    assert ratio_end < 0.05, f"z_std*sqrt(d)={ratio_end:.3f}: without stop-grad the outputs should collapse"
    assert loss_end < -0.95, f"loss {loss_end:.3f} should approach -1 when collapsed"
    assert collapsed.collapsed
