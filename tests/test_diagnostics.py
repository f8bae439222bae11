import math

import pytest
import torch

from simsiam.diagnostics import collapse_std, is_collapsed, z_std_ratio


@pytest.mark.parametrize("d", [128, 2048])
def test_gaussian_z_gives_one_over_sqrt_d(d):
    torch.manual_seed(0)
    z = torch.randn(4096, d)
    assert collapse_std(z) == pytest.approx(1 / math.sqrt(d), rel=0.03)
    assert z_std_ratio(z) == pytest.approx(1.0, rel=0.03)
    assert not is_collapsed(z)


def test_constant_z_is_collapsed():
    z = torch.randn(1, 256).repeat(512, 1) + 1e-7 * torch.randn(512, 256)
    assert collapse_std(z) < 1e-4
    assert is_collapsed(z) and is_collapsed(0.01) and not is_collapsed(0.5)
