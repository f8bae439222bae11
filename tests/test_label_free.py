"""The label-free metrics (simsiam.label_free) against values worked by hand, and their fixed sample."""

import math

import pytest
import torch

from conftest import tiny_config
from simsiam import metrics as M
from simsiam.data import TensorSource
from simsiam.label_free import LabelFreeSample, alignment, rankme, uniformity
from simsiam.models import build_model


def test_rankme_of_a_matrix_worked_by_hand():
    # singular values of [[3, 0], [0, 4], [0, 0]] are 4 and 3: p = (4/7, 3/7), entropy
    # -(4/7 ln 4/7 + 3/7 ln 3/7) = 0.3198 + 0.3631 = 0.6829, exp = 1.9797
    z = torch.tensor([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]])
    assert rankme(z) == pytest.approx(1.9797, abs=1e-4)


def test_rankme_is_one_for_a_collapsed_matrix_and_the_dimension_for_an_isotropic_one():
    assert rankme(torch.ones(64, 16)) == pytest.approx(1.0, abs=1e-4)  # every row the same point
    assert rankme(torch.eye(16) * 5) == pytest.approx(16.0, rel=1e-5)  # 16 equal singular values


def test_alignment_is_zero_for_equal_views_and_four_for_opposite_ones():
    a = torch.randn(32, 8)
    assert alignment(a, 3 * a) == pytest.approx(0.0, abs=1e-12)  # the same direction
    assert alignment(a, -a) == pytest.approx(4.0)  # ||u - (-u)||^2 = 4 on the unit sphere


def test_uniformity_is_zero_for_one_point_and_minus_eight_for_two_opposite_points():
    assert uniformity(torch.ones(10, 4)) == pytest.approx(0.0, abs=1e-12)  # log mean exp(0)
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)  # log exp(-2 * 4)
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # 4 sides d^2=2, 2 diagonals d^2=4
    assert uniformity(square) == pytest.approx(math.log((4 * math.exp(-4) + 2 * math.exp(-8)) / 6))


def _source(n=96):
    g = torch.Generator().manual_seed(3)
    return TensorSource("imgs", torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g),
                        torch.full((n,), -1), [])


def test_the_sample_is_the_same_images_whatever_the_run_seed_and_measures_every_metric():
    src = _source()
    one = tiny_config("eval.label_free_samples=40", "eval.label_free_pairs=8", "train.seed=1")
    two = tiny_config("eval.label_free_samples=40", "eval.label_free_pairs=8", "train.seed=7")
    a, b = LabelFreeSample(one, src), LabelFreeSample(two, src)
    assert torch.equal(a.indices, b.indices) and len(a.indices) == 40 and len(a.pairs) == 8
    backbone = build_model(one.model).backbone
    first, spectrum = a(backbone)
    again, _ = b(backbone)
    assert set(first) == set(M.LABEL_FREE) and first == again  # seeded views: the same numbers twice
    assert first[M.RANKME] == pytest.approx(rankme(spectrum=spectrum))
    tags = a.tags()
    assert tags["label_free.set"] == ("40 images (seed 0) of local imgs (96 images), 8 view pairs, 28 px, grey views, "
                                      "32-d features")
    assert tags["label_free.images"] == "40"
