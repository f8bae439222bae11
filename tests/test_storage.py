"""Object storage against a real SeaweedFS server that these tests start (no mocks)."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch

from conftest import tiny_config, tiny_sets
from simsiam.engine import train
from simsiam.errors import DataError, StorageError
from simsiam.services import s3_status, start_s3, stop_s3
from simsiam.storage import S3Settings, StagedSource, list_datasets, open_store, resolve_dataset, stage_dataset
from simsiam.testing.faults import AfterPut

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    svc = start_s3(state)
    yield svc
    stop_s3(state)


def _store(svc, **kw):
    return open_store(S3Settings(endpoint_url=svc.endpoint_url, access_key=svc.access_key,
                                 secret_key=svc.secret_key, **kw))


@pytest.fixture(scope="module")
def staged(s3, fmnist_test):
    store = _store(s3)
    ref, manifest = stage_dataset(fmnist_test, store, "fmnist-test", "test", shard_size=2500, progress=False)
    return store, ref, manifest


def test_round_trip_is_identical(staged, fmnist_test, tmp_path):
    store, ref, manifest = staged
    assert manifest["num_samples"] == 10000 and len(manifest["shards"]) == 4
    assert manifest["classes"] == fmnist_test.classes and manifest["image_shape"] == [1, 28, 28]
    assert all(s["count"] == 2500 and len(s["sha256"]) == 64 for s in manifest["shards"])
    src = StagedSource(store, ref.uri, cache=tmp_path)
    assert torch.equal(src.images, fmnist_test.images) and torch.equal(src.labels, fmnist_test.labels)
    assert src.name == "fashion-mnist" and src.classes == fmnist_test.classes


def test_fixed_size_versions_are_decoded_once_into_npy_keyed_by_version(staged, fmnist_test, tmp_path):
    store, ref, _ = staged
    StagedSource(store, ref.uri, cache=tmp_path)
    images_npy = tmp_path / "decoded" / f"fmnist-test-{ref.version}.images.npy"
    assert images_npy.exists() and not list((tmp_path / "decoded").glob("*.tmp*"))
    for shard in tmp_path.glob("*.parquet"):  # a second reader needs neither shards nor decoding
        shard.unlink()
    again = StagedSource(store, ref.uri, cache=tmp_path)
    assert torch.equal(again.images, fmnist_test.images) and torch.equal(again.labels, fmnist_test.labels)
    assert not list(tmp_path.glob("*.parquet"))  # nothing was downloaded
    images_npy.write_bytes(images_npy.read_bytes()[:1000])  # torn: decoded again from the shards
    assert torch.equal(StagedSource(store, ref.uri, cache=tmp_path).images, fmnist_test.images)
    assert len(list(tmp_path.glob("*.parquet"))) == 4


def test_restaging_uploads_nothing(staged, fmnist_test):
    store, ref, _ = staged
    before = {o["Key"]: (o["ETag"], o["LastModified"]) for o in store.list_keys(ref.prefix)}
    puts = store.puts
    ref2, _ = stage_dataset(fmnist_test, store, "fmnist-test", "test", shard_size=2500, progress=False)
    assert ref2 == ref and store.puts == puts
    assert {o["Key"]: (o["ETag"], o["LastModified"]) for o in store.list_keys(ref.prefix)} == before


def test_latest_and_listing(staged, fmnist_test):
    store, ref, _ = staged
    assert resolve_dataset(store, "fmnist-test@latest")[0] == ref
    assert resolve_dataset(store, f"fmnist-test@{ref.version}")[0] == ref
    rows = [r for r in list_datasets(store) if r["name"] == "fmnist-test"]
    assert rows[0]["version"] == ref.version and rows[0]["samples"] == 10000


def test_version_without_manifest_is_invisible(staged):
    store, _, _ = staged
    store.put_bytes("datasets/ghost/0123456789abcdef/shard-00000.parquet", b"half staged")
    assert all(r["name"] != "ghost" for r in list_datasets(store))
    with pytest.raises(DataError, match="no staged dataset named 'ghost'"):
        resolve_dataset(store, "ghost@latest")
    with pytest.raises(DataError, match="has no manifest"):
        resolve_dataset(store, "s3://data/datasets/ghost/0123456789abcdef")


def test_cache_serves_shards_and_corruption_is_named(s3, fmnist_test, tmp_path):
    store = _store(s3)
    sub = fmnist_test.subset(range(600))
    ref, manifest = stage_dataset(sub, store, "fmnist-corrupt", "test", shard_size=200, progress=False)
    warm = StagedSource(store, ref.uri, cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.parquet"))) == 3
    victim = manifest["shards"][1]["key"]
    store.put_bytes(victim, b"PAR1 definitely not the staged bytes PAR1")
    # The warm cache holds verified bytes: still readable.
    assert torch.equal(StagedSource(store, ref.uri, cache=tmp_path / "cache").images, warm.images)
    with pytest.raises(DataError, match=victim):
        StagedSource(store, ref.uri, cache=tmp_path / "cold")


def test_engine_trains_from_staged_source(staged, tmp_path):
    store, ref, _ = staged
    src = StagedSource(store, ref.uri, cache=tmp_path)
    result = train(tiny_config("train.max_steps=2"), train_source=src)
    assert result.step == 2 and torch.isfinite(torch.tensor(result.last_metrics["train/loss"]))


def test_cli_stage_ls_and_pretrain_from_s3(s3, tmp_path):
    env = {**os.environ, "SIMSIAM_STATE": str(s3.state), "SIMSIAM_CACHE": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "simsiam.cli"]
    r = subprocess.run([*cli, "stage", "fashion-mnist", "--split", "train", "--subset", "256", "--name", "fm-mini",
                        "--no-progress", "--set", "storage.shard_size=100"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["samples"] == 256 and out["shards"] == 3 and out["uploaded_objects"] == 4
    r = subprocess.run([*cli, "data", "ls"], capture_output=True, text=True, env=env, timeout=120)
    assert "fm-mini" in r.stdout and out["version"] in r.stdout
    # --state (not $SIMSIAM_STATE) from another directory: nothing may start in ./.simsiam there
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.pop("SIMSIAM_STATE")
    r = subprocess.run([*cli, "pretrain", "--out", str(tmp_path / "run"), "--no-progress", "--state", str(s3.state),
                        *tiny_sets("data.source=fm-mini@latest", "train.batch_size=32", "data.train_subset=null",
                                  "train.epochs=1")],
                       capture_output=True, text=True, env=env, timeout=300, cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 8  # 256 staged images / batch 32
    assert list(elsewhere.iterdir()) == []
    for text in (r.stdout, r.stderr):
        assert s3.secret_key not in text


def test_security_anonymous_refused_and_secret_never_shown(staged, s3):
    store, ref, manifest = staged
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{s3.endpoint_url}/data/{manifest['shards'][0]['key']}", timeout=5)
    assert exc.value.code == 403
    bad = S3Settings(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key + "x",
                     max_attempts=1)
    with pytest.raises(StorageError) as err:
        open_store(bad)
    msg = str(err.value)
    assert "access denied" in msg and s3.secret_key not in msg and "check the S3 credentials" in msg
    assert s3.secret_key not in repr(bad)
    creds = s3.state / "s3" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE((s3.state / "s3" / "identities.json").stat().st_mode) == 0o600
    for log in (s3.state / "logs").rglob("*"):
        if log.is_file():
            assert s3.secret_key not in log.read_text(errors="replace"), log


def test_endpoint_down_is_a_bounded_storage_error():
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot reach S3 endpoint http://127.0.0.1:9 .*after 2 attempts"):
        open_store(S3Settings(endpoint_url="http://127.0.0.1:9", access_key="k", secret_key="s", max_attempts=2,
                              connect_timeout=0.5))
    assert time.monotonic() - t0 < 20


def test_services_reuse_and_status(s3):
    again = start_s3(s3.state)
    assert again.pid == s3.pid and again.endpoint_url == s3.endpoint_url
    assert s3_status(s3.state)["running"] is True


def test_crash_mid_staging_then_resume(fmnist_test, tmp_path):
    state = tmp_path / "state"
    svc = start_s3(state)
    try:
        store = open_store(S3Settings(endpoint_url=svc.endpoint_url, access_key=svc.access_key,
                                      secret_key=svc.secret_key, max_attempts=2, connect_timeout=0.5, read_timeout=5,
                                      outage_budget_s=0))  # a crash, not an outage to wait out
        sub = fmnist_test.subset(range(1000))

        def kill_after_second(key):
            if key.endswith("shard-00001.parquet"):
                os.kill(svc.pid, signal.SIGKILL)

        with pytest.raises(StorageError, match="cannot reach S3 endpoint"):
            stage_dataset(sub, AfterPut(store, kill_after_second), "fm-crash", "test", shard_size=200, progress=False)
        svc2 = start_s3(state)
        assert svc2.endpoint_url == svc.endpoint_url and svc2.pid != svc.pid
        store = open_store(S3Settings(endpoint_url=svc2.endpoint_url, access_key=svc2.access_key,
                                      secret_key=svc2.secret_key))
        assert all(r["name"] != "fm-crash" for r in list_datasets(store))  # no manifest before completion
        ref, manifest = stage_dataset(sub, store, "fm-crash", "test", shard_size=200, progress=False)
        assert len(manifest["shards"]) == 5
        assert store.puts <= 5  # 3 remaining shards + manifest (+1 if a shard was lost with the crash)
        back = StagedSource(store, ref.uri, cache=tmp_path / "cache")
        assert torch.equal(back.images, sub.images) and torch.equal(back.labels, sub.labels)
    finally:
        stop_s3(state)


def test_staging_and_reads_ride_through_an_s3_outage_and_past_the_budget_fail_in_one_line(s3, fmnist_test, tmp_path):
    from simsiam.testing.outage import OutageProxy

    proxy = OutageProxy(s3.endpoint_url)
    try:
        store = open_store(S3Settings(endpoint_url=proxy.url, access_key=s3.access_key, secret_key=s3.secret_key,
                                      outage_budget_s=60))
        sub = fmnist_test.subset(range(600))
        cut_once = lambda key: key.endswith("shard-00000.parquet") and not proxy.cuts and proxy.cut(6)  # noqa: E731
        t0 = time.monotonic()
        ref, manifest = stage_dataset(sub, AfterPut(store, cut_once), "fm-outage", "test", shard_size=200,
                                      progress=False)
        assert len(proxy.cuts) == 1 and time.monotonic() - t0 >= 6 and len(manifest["shards"]) == 3
        proxy.cut(5)  # a reader starting inside an outage waits for the store
        back = StagedSource(store, ref.uri, cache=tmp_path / "cache")
        assert torch.equal(back.images, sub.images) and torch.equal(back.labels, sub.labels)
        store.settings.outage_budget_s = 2
        proxy.cut(60)
        t0 = time.monotonic()
        with pytest.raises(StorageError) as err:
            store.get_bytes(manifest["shards"][0]["key"])
        assert time.monotonic() - t0 < 15
        assert str(err.value).startswith(f"cannot reach S3 endpoint {proxy.url} (get s3://data/") and \
            "for 2 s (storage.outage_budget_s)" in str(err.value) and "\n" not in str(err.value)
    finally:
        proxy.close()
