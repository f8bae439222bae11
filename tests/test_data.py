import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_cifar_batches, write_idx
from simsiam.augment import MultiView, eval_transform, train_transform
from simsiam.config import DataConfig
from simsiam.data import EpochSampler, ViewsDataset, load_cifar10, load_fashion_mnist, load_source, read_idx
from simsiam.errors import DataError


def _write_fmnist(root, n=5, gz=True):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    ext = ""
    write_idx(root / f"t10k-images-idx3-ubyte{'.gz' if gz else ext}", imgs, gz)
    write_idx(root / f"t10k-labels-idx1-ubyte{'.gz' if gz else ext}", labels, gz)
    return imgs, labels


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    imgs, labels = _write_fmnist(tmp_path, gz=gz)
    src = load_fashion_mnist("test", str(tmp_path), download=False)
    assert src.images.shape == (5, 1, 28, 28) and src.images.dtype == torch.uint8
    assert np.array_equal(src.images[:, 0].numpy(), imgs) and src.labels.tolist() == labels.tolist()


def test_truncated_and_bad_magic_idx_name_the_file(tmp_path):
    _write_fmnist(tmp_path, gz=False)
    f = tmp_path / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is truncated"):
        load_fashion_mnist("test", str(tmp_path), download=False)
    f.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is not an IDX file"):
        read_idx(f)
    g = tmp_path / "broken.gz"
    g.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="broken.gz"):
        read_idx(g)


def test_missing_files_name_paths_and_how_to_get_them(tmp_path):
    with pytest.raises(DataError) as exc:
        load_fashion_mnist("train", str(tmp_path / "nowhere"), download=False)
    msg = str(exc.value)
    assert str(tmp_path / "nowhere") in msg and "apt-get install dataset-fashion-mnist" in msg


def test_offline_download_fails_cleanly(tmp_path, monkeypatch):
    # No local files and no reachable network: the fetch fails and the error lists where we looked.
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("simsiam.data.DEBIAN_FASHION_MNIST", tmp_path / "absent")
    import simsiam.data as data

    def offline(*a, **k):
        raise OSError("network unreachable")
    monkeypatch.setattr("torchvision.datasets.FashionMNIST", offline)
    with pytest.raises(DataError, match="absent"):
        data.load_fashion_mnist("test", None, download=True)


def test_cifar10_python_batches(tmp_path):
    write_cifar_batches(tmp_path, n_per_batch=6)
    train = load_cifar10("train", str(tmp_path), download=False)
    test = load_cifar10("test", str(tmp_path), download=False)
    assert train.images.shape == (30, 3, 32, 32) and len(test) == 6
    assert train.classes == list("abcdefghij")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch"):
        load_cifar10("test", str(tmp_path), download=False)


def test_imagefolder(tmp_path):
    for cls in ("cat", "dog"):
        d = tmp_path / "train" / cls
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((40, 50, 3), 40 * i, dtype=np.uint8)).save(d / f"{i}.png")
    src = load_source(DataConfig(dataset="imagefolder", root=str(tmp_path)), "train")
    img, label = src[4]
    assert src.classes == ["cat", "dog"] and len(src) == 6 and label == 1
    assert img.shape == (3, 40, 50) and img.dtype == torch.uint8
    with pytest.raises(DataError, match="not found"):
        load_source(DataConfig(dataset="imagefolder", root=str(tmp_path)), "test")


def test_real_fashion_mnist(fmnist_train, fmnist_test):
    assert fmnist_train.images.shape == (60000, 1, 28, 28) and len(fmnist_test) == 10000
    assert torch.bincount(fmnist_train.labels).tolist() == [6000] * 10
    assert fmnist_train.classes[9] == "Ankle boot"


@pytest.mark.parametrize("recipe,channels,size", [("grey", 1, 28), ("grey", 3, 28), ("cifar", 3, 32),
                                                  ("imagenet", 3, 64)])
def test_recipes_give_normalised_views(fmnist_train, recipe, channels, size):
    torch.manual_seed(0)
    images = fmnist_train.images[:256]
    tf = MultiView(train_transform(recipe, "fashion-mnist", size, channels), 2)
    v1, v2 = tf(images[0])
    assert v1.shape == (channels, size, size) and v1.dtype == torch.float32
    assert not torch.equal(v1, v2)
    ev = eval_transform(recipe, "fashion-mnist", size, channels)
    assert torch.equal(ev(images[0]), ev(images[0]))
    # Normalised by Fashion-MNIST's statistics (mean 0.286, std 0.353 in [0, 1]): unit spread over
    # real images, where unnormalised ones would have 0.353 (measured: 0.96-1.00 eval, 0.97 views).
    evals = torch.stack([ev(im) for im in images])
    views = torch.stack([tf(im)[0] for im in images])
    assert abs(evals.std().item() - 1) < 0.1 and abs(views.std().item() - 1) < 0.1
    assert abs(evals.mean().item()) < 0.25  # centred (0.18 after the imagenet recipe's centre crop)
    if size == 28:  # no resize: exactly (x / 255 - mean) / std
        assert torch.allclose(evals[:, :1], (images.float() / 255 - 0.2860) / 0.3530, atol=1e-5)


def test_views_are_a_function_of_seed_epoch_index(fmnist_train):
    tf = MultiView(train_transform("grey", "fashion-mnist", 28, 1), 2)
    ds = ViewsDataset(fmnist_train, tf, torch.arange(10), seed=3)
    a = ds[4][0][0]
    ds[7]
    torch.rand(5)  # global RNG use in between changes nothing
    assert torch.equal(ds[4][0][0], a)
    ds.set_epoch(1)
    assert not torch.equal(ds[4][0][0], a)


def test_epoch_sampler_resume_offset():
    full = list(EpochSampler(20, seed=1, epoch=2))
    assert sorted(full) == list(range(20)) and full != list(EpochSampler(20, seed=1, epoch=3))
    assert list(EpochSampler(20, seed=1, epoch=2, start=8)) == full[8:]


def test_epoch_sampler_ranks_take_disjoint_equal_shares_of_one_permutation():
    full = list(EpochSampler(21, seed=1, epoch=0))
    ranks = [list(EpochSampler(21, seed=1, epoch=0, rank=r, world=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 10 and not set(ranks[0]) & set(ranks[1])
    assert ranks[0] + ranks[1] != full[:20] and sorted(ranks[0] + ranks[1]) == sorted(full[:20])
