"""Batched device augmentation (simsiam.batch_augment) against torchvision v2, on CPU."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from conftest import tiny_config
from simsiam.augment import MultiView, Recipe, train_transform
from simsiam.batch_augment import (
    S_FLIP,
    S_GREY,
    S_ORDER,
    BatchAugment,
    color_jitter,
    crop_boxes,
    gaussian_blur,
    resized_crops,
    uniforms,
)
from simsiam.batches import DeviceViews, augment_path, preview
from simsiam.config import load_config
from simsiam.data import ViewsDataset
from simsiam.engine import train
from simsiam.errors import ConfigError
from simsiam.reporters import Reporter

N = 10_000


def _draws(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(area fraction, aspect) of N crop boxes: ours, then torchvision's RandomResizedCrop.get_params."""
    boxes = crop_boxes(uniforms(0, 0, torch.arange(N), 0), size, size, (0.2, 1.0))
    ours = torch.stack([boxes[:, 2] * boxes[:, 3] / size**2, boxes[:, 3] / boxes[:, 2]])
    torch.manual_seed(0)
    img = torch.zeros(1, size, size)
    tv = torch.tensor([RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(N)]).double()
    return ours, torch.stack([tv[:, 2] * tv[:, 3] / size**2, tv[:, 3] / tv[:, 2]])


@pytest.mark.parametrize("size", [28, 224])
def test_crop_area_and_aspect_match_torchvision_ks(size):
    ours, tv = _draws(size)
    for name, a, b in (("area", ours[0], tv[0]), ("aspect", ours[1], tv[1])):
        assert ks_2samp(a.numpy(), b.numpy()).pvalue > 0.01, name
    assert 0.2 - 1 / size <= ours[0].min() and ours[0].max() <= 1
    assert 0.75 - 0.1 <= ours[1].min() and ours[1].max() <= 4 / 3 + 0.1


def test_crop_boxes_lie_inside_the_image_and_resize_is_torchvision_bilinear():
    u = uniforms(1, 2, torch.arange(N), 0)
    top, left, h, w = crop_boxes(u, 28, 28, (0.2, 1.0)).unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 28).all()
    img = torch.rand(4, 1, 28, 28)
    boxes = crop_boxes(u[:4], 28, 28, (0.2, 1.0))
    out = resized_crops(img, boxes, 28)
    for i, (t, lf, hh, ww) in enumerate(boxes.long().tolist()):  # crops <= 28 px: upsampling, no antialias
        ref = TF.resized_crop(img[i], t, lf, hh, ww, [28, 28], antialias=False)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_flip_grey_and_jitter_rates_and_order():
    u = uniforms(3, 0, torch.arange(N), 1)
    assert abs((u[:, S_FLIP] < 0.5).double().mean() - 0.5) < 0.02
    assert abs((u[:, S_GREY] < 0.2).double().mean() - 0.2) < 0.02
    first = u[:, S_ORDER:S_ORDER + 4].argsort(1)[:, 0]  # which of the 4 jitter ops runs first: uniform
    assert torch.bincount(first, minlength=4).div(N).sub(0.25).abs().max() < 0.02


@pytest.mark.parametrize("op,strength,tv_op", [
    (0, 0.4, TF.adjust_brightness), (1, 0.4, TF.adjust_contrast), (2, 0.4, TF.adjust_saturation),
    (3, 0.1, TF.adjust_hue)])
def test_each_jitter_op_is_torchvisions_with_a_factor_in_its_range(op, strength, tv_op):
    recipe = Recipe(jitter=tuple(strength if i == op else 0.0 for i in range(4)), jitter_p=1.0)
    x = torch.rand(64, 3, 8, 8)
    u = uniforms(0, 0, torch.arange(64), 0)
    out = color_jitter(x.clone(), u, recipe)
    a = u[:, 24 + op]
    factors = (a - 0.5) * 2 * strength if op == 3 else 1 - strength + a * 2 * strength
    lo, hi = (-strength, strength) if op == 3 else (1 - strength, 1 + strength)
    assert lo <= factors.min() < lo + 0.1 * strength and hi - 0.1 * strength < factors.max() <= hi
    for i in range(64):
        torch.testing.assert_close(out[i], tv_op(x[i], float(factors[i])), atol=2e-5, rtol=0)


def test_blur_is_torchvisions_gaussian_blur_with_the_sampled_sigma():
    recipe = Recipe(jitter=(0, 0, 0, 0), blur_p=1.0, blur_kernel=7)
    x = torch.rand(8, 3, 16, 16)
    u = uniforms(0, 0, torch.arange(8), 0)
    out = gaussian_blur(x.clone(), u, recipe)
    sigma = 0.1 + u[:, 34] * 1.9
    for i in range(8):
        ref = TF.gaussian_blur(x[i], [7, 7], [float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_views_match_torchvision_pipeline_statistics_on_fashion_mnist(fmnist_train):
    n = 2000
    aug = BatchAugment("grey", "fashion-mnist", 28, 1)
    ours = aug(fmnist_train.images[:n], uniforms(0, 0, torch.arange(n), 0))
    tf = MultiView(train_transform("grey", "fashion-mnist", 28, 1), 1)
    tv = torch.stack([v[0] for v, _ in (ViewsDataset(fmnist_train, tf)[i] for i in range(n))])
    assert ours.shape == tv.shape
    assert abs(ours.mean() - tv.mean()) < 0.03 and abs(ours.std() - tv.std()) < 0.03
    # Another epoch draws other views of the same image.
    assert not torch.equal(ours[0], aug(fmnist_train.images[:1], uniforms(0, 1, torch.arange(1), 0))[0])


def test_a_samples_views_depend_on_seed_epoch_index_only(fmnist_train):
    cfg = tiny_config()
    aug = BatchAugment("grey", "fashion-mnist", 28, 1)
    views = DeviceViews(fmnist_train, torch.arange(100), aug, 2, cfg.train.seed, torch.device("cpu"))
    a = views.views(torch.tensor([5, 9, 42]), epoch=3)
    b = views.views(torch.tensor([42, 7, 5]), epoch=3)
    assert torch.equal(a[0][0], b[0][2]) and torch.equal(a[1][2], b[1][0])
    assert not torch.equal(a[0][0], a[1][0])  # the two views differ
    assert not torch.equal(a[0][0], views.views(torch.tensor([5]), epoch=4)[0][0])  # so do epochs
    shown = preview(views, n=4)
    assert shown.shape == (4, 2, 1, 28, 28) and 0 <= shown.min() and shown.max() <= 1


def test_auto_takes_the_device_path_for_in_memory_data_and_training_runs(fmnist_train):
    cfg = tiny_config()
    assert augment_path(cfg.data, fmnist_train)[0] == "device"
    seen = {}

    class Plan(Reporter):
        def on_start(self, cfg, plan):
            seen.update(plan)

        def on_views(self, views, originals=None):
            seen["views"] = views.shape

    result = train(cfg, [Plan()], train_source=fmnist_train)
    assert result.finished and math.isfinite(result.last_metrics["train/loss"])
    assert seen["augment_on"] == "device" and seen["views"] == (8, 2, 1, 28, 28)


def test_device_path_errors_name_the_key_for_streamed_or_too_large_data(fmnist_train, tmp_path):
    from PIL import Image

    from simsiam.data import load_imagefolder

    (tmp_path / "train" / "a").mkdir(parents=True)
    for i, size in enumerate([(10, 12), (16, 16)]):
        Image.new("RGB", size).save(tmp_path / "train" / "a" / f"{i}.png")
    folder = load_imagefolder("train", str(tmp_path))
    forced = load_config("cpu-demo", ["data.augment_on=device"]).data
    with pytest.raises(ConfigError, match="data.augment_on=workers"):
        augment_path(forced, folder)
    assert augment_path(forced.model_copy(update={"augment_on": "auto"}), folder)[0] == "workers"
    small = forced.model_copy(update={"memory_budget_mb": 10})  # Fashion-MNIST train is 45 MiB
    with pytest.raises(ConfigError, match=r"over data.memory_budget_mb=10"):
        augment_path(small, fmnist_train)
    where, why = augment_path(small.model_copy(update={"augment_on": "auto"}), fmnist_train)
    assert where == "workers" and "data.memory_budget_mb=10" in why


def test_crops_larger_than_the_output_are_downsampled_with_antialias():
    img = torch.rand(6, 3, 64, 64)
    boxes = crop_boxes(uniforms(0, 0, torch.arange(6), 0), 64, 64, (0.5, 1.0))
    out = resized_crops(img, boxes, 16)
    for i, (t, lf, hh, ww) in enumerate(boxes.long().tolist()):
        ref = TF.resized_crop(img[i], t, lf, hh, ww, [16, 16], antialias=True)
        aliased = TF.resized_crop(img[i], t, lf, hh, ww, [16, 16], antialias=False)
        assert (out[i] - ref).abs().mean() < 0.5 * (aliased - ref).abs().mean()
