"""A user's own images, unlabelled, against the real SeaweedFS: a nested folder and an S3 prefix
written with plain boto3, staged with origins kept and bad files counted; a grown collection
uploads only what is new; an interrupted staging resumes; the same pixels as files train exactly
as the labelled dataset does."""

import json
import os
import subprocess
import sys

import boto3
import numpy as np
import pytest
import torch
from botocore.config import Config as BotoConfig
from PIL import Image

from conftest import tiny_config
from simsiam.engine import train
from simsiam.services import start_s3, stop_s3
from simsiam.steps import RunContext
from simsiam.steps.datasets import stage_images
from simsiam.storage import StagedSource
from simsiam.testing.faults import FlakyStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    state = tmp_path_factory.mktemp("own-images")
    svc = start_s3(state)
    yield state, svc
    stop_s3(state)


def _ctx(state, *sets: str) -> RunContext:
    return RunContext.open(tiny_config("data.dataset=images", *sets), state, tracking=False)


def _write(folder, images: torch.Tensor, names) -> None:
    for img, name in zip(images, names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(folder / name)


def test_a_nested_folder_is_staged_with_its_origins_and_its_bad_files_counted_and_named(s3, tmp_path, fmnist_test):
    state, _ = s3
    photos = tmp_path / "My Photos"
    names = [f"{'a/b/' if i % 2 else ''}{i:03d}.png" for i in range(40)]
    _write(photos, fmnist_test.images[:40], names)
    (photos / "notes.txt").write_text("not an image")
    (photos / "a" / "cut.jpg").write_bytes((photos / "000.png").read_bytes()[:60])
    out = stage_images(_ctx(state), str(photos))
    assert out.name == "my-photos" and out.samples == 40 and out.skipped == 2 and not out.labelled
    assert any(s.startswith("notes.txt: not an image") for s in out.skipped_first)
    assert any(s.startswith("a/cut.jpg: an image that cannot be decoded") for s in out.skipped_first)
    src = StagedSource(_ctx(state).store, out.spec, cache=tmp_path / "cache")
    order = sorted(names)
    assert src.origins() == order and src.labels.tolist() == [-1] * 40  # no labels, joined back by origin
    for i in (0, 17, 39):
        assert torch.equal(src.image(i), fmnist_test.images[int(order[i].rsplit("/", 1)[-1][:3])])  # same pixels


def test_an_s3_prefix_in_another_bucket_written_with_plain_boto3_is_staged(s3, tmp_path, fmnist_test):
    state, svc = s3
    client = boto3.client("s3", endpoint_url=svc.endpoint_url, aws_access_key_id=svc.access_key,
                          aws_secret_access_key=svc.secret_key, region_name="us-east-1",
                          config=BotoConfig(request_checksum_calculation="when_required",
                                            response_checksum_validation="when_required"))
    client.create_bucket(Bucket="team-photos")
    for i in range(12):
        buf = (tmp_path / "x.png")
        Image.fromarray(fmnist_test.images[i, 0].numpy()).save(buf)
        client.put_object(Bucket="team-photos", Key=f"cam/2026/{i:02d}.png", Body=buf.read_bytes())
    client.put_object(Bucket="team-photos", Key="cam/2026/", Body=b"")  # a folder marker
    client.put_object(Bucket="team-photos", Key="other/skip.png", Body=buf.read_bytes())  # outside the prefix
    out = stage_images(_ctx(state), "s3://team-photos/cam/")
    assert out.name == "team-photos-cam" and out.samples == 12 and out.skipped == 0
    src = StagedSource(_ctx(state).store, out.spec, cache=tmp_path / "cache")
    assert src.origins() == [f"cam/2026/{i:02d}.png" for i in range(12)]  # object keys
    assert torch.equal(src.image(5), fmnist_test.images[5])


def test_a_grown_collection_uploads_only_what_is_new_and_an_unchanged_one_nothing(s3, tmp_path, fmnist_test):
    state, _ = s3
    photos = tmp_path / "grow"
    _write(photos, fmnist_test.images[:1000], [f"{i:04d}.png" for i in range(1000)])
    ctx = _ctx(state, "storage.shard_size=100")
    first = stage_images(ctx, str(photos), "grow")
    assert first.shards == 10 and first.uploaded_bytes > first.bytes  # shards + their file lists + manifest
    # 1% new images, spread through the key order (not only appended)
    _write(photos, fmnist_test.images[1000:1010], [f"{i * 100 + 50:04d}b.png" for i in range(10)])
    grown = stage_images(ctx, str(photos), "grow")
    assert grown.samples == 1010 and grown.reused_shards == 10 and grown.shards == 11
    assert grown.uploaded_bytes < 0.03 * grown.bytes, (grown.uploaded_bytes, grown.bytes)  # about 1%, not 100%
    again = stage_images(ctx, str(photos), "grow")
    assert again.cached and again.uploaded_objects == 0 and again.version == grown.version
    Image.fromarray(fmnist_test.images[2000, 0].numpy()).save(photos / "0005.png")  # a file changed
    os.utime(photos / "0005.png", ns=(1, 1))
    changed = stage_images(ctx, str(photos), "grow")
    assert changed.reused_shards == 10 and changed.samples == 1010  # its old shard rebuilt, with the new bytes


def test_an_interrupted_staging_resumes_without_uploading_its_shards_again(s3, tmp_path, fmnist_test):
    state, _ = s3
    photos = tmp_path / "cut"
    _write(photos, fmnist_test.images[:300], [f"{i:03d}.png" for i in range(300)])
    ctx = _ctx(state, "storage.shard_size=100")
    flaky = ctx.with_handles(store=FlakyStore(ctx.store, fail_on=5))  # shards 1-2 and their lists, then fails
    with pytest.raises(ConnectionError):
        stage_images(flaky, str(photos), "cut")
    assert not any(o["Key"].endswith("manifest.json") for o in ctx.store.list_keys("datasets/cut/"))
    resumed = stage_images(ctx, str(photos), "cut")
    assert resumed.samples == 300 and resumed.shards == 3
    assert resumed.uploaded_objects == 1 + 1 + 1  # the third shard, its file list, the manifest


def test_the_same_pixels_as_files_train_to_the_same_weights_as_the_labelled_dataset(s3, tmp_path, fmnist_train):
    """Labels play no part in training: Fashion-MNIST's first 256 training images, as PNG files of an
    unlabelled folder, train exactly as the labelled dataset does (same preset, seed, normalisation)."""
    state, _ = s3
    photos = tmp_path / "fm"
    _write(photos, fmnist_train.images[:256], [f"{i:05d}.png" for i in range(256)])
    staged = stage_images(_ctx(state), str(photos), "fm-files")
    sets = ["data.train_subset=null", "train.batch_size=32", "train.epochs=1"]
    labelled = train(tiny_config(*sets), train_source=fmnist_train.subset(range(256)))
    files = train(tiny_config(*sets, "data.dataset=images", "data.normalize=fashion-mnist"),
                  train_source=StagedSource(_ctx(state).store, staged.spec, cache=tmp_path / "cache"))
    assert labelled.last_metrics == files.last_metrics and labelled.step == files.step == 8
    for a, b in zip(labelled.model.parameters(), files.model.parameters()):
        assert torch.equal(a, b)


def test_stage_cli_takes_a_folder_and_a_folder_without_images_is_one_line_exit_2(s3, tmp_path, fmnist_test):
    state, _ = s3
    cli = [sys.executable, "-m", "simsiam.cli", "stage", "--state", str(state), "--no-progress"]
    photos = tmp_path / "cli"
    _write(photos, fmnist_test.images[:5], [f"{i}.png" for i in range(5)])
    (photos / "readme.md").write_text("hi")
    r = subprocess.run([*cli, str(photos)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["samples"] == 5 and out["skipped"] == 1 and out["name"] == "cli"
    summary = [line for line in r.stderr.splitlines() if line.startswith("staged ")]
    assert summary == [f"staged cli@{out['version']}: 5 images in 1 shard(s); uploaded 4 objects "
                       f"({out['uploaded_bytes'] / 2**20:.2f} MiB); 1 file(s) skipped, not images: "
                       "readme.md: not an image (no format Pillow decodes)"]
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "a.txt").write_text("a")
    for target, needle in ((empty, "no usable image among 1 files"), (tmp_path / "missing", "not found")):
        r = subprocess.run([*cli, str(target)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr[-1000:]
        assert len(r.stderr.strip().splitlines()) == 1
    assert np.asarray(Image.open(photos / "0.png")).shape == (28, 28)
