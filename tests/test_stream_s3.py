"""Streaming reads of staged ImageFolder versions from the real SeaweedFS: what `data.stream=auto`
picks, checked shards, and a rank's memory at two dataset sizes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config
from simsiam.data import FolderSource
from simsiam.errors import DataError
from simsiam.services import start_s3, stop_s3
from simsiam.storage import S3Settings, StagedSource, open_store, stage_dataset
from simsiam.storage.sources import open_sources
from simsiam.streaming import ShardStream

pytestmark = pytest.mark.integration
WORKER = Path(__file__).parent / "stream_rss_worker.py"


def write_jpeg_folder(root: Path, n: int, classes: int = 10, side: int = 48) -> Path:
    """n noisy 48 px RGB JPEGs (~2.2 kB each) in `classes` folders."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (classes, side, side, 3), dtype=np.uint8) // 2
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = base[i % classes] + rng.integers(0, 64, (side, side, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"c{i % classes}" / f"{i:06d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two staged ImageFolder versions, 2.5k and 20k JPEGs, in shards of 500."""
    tmp = tmp_path_factory.mktemp("stream")
    state = tmp / "state"
    svc = start_s3(state)
    store = open_store(S3Settings(endpoint_url=svc.endpoint_url, access_key=svc.access_key,
                                  secret_key=svc.secret_key))
    manifests = {}
    for name, n in (("jpeg-2k", 2_500), ("jpeg-20k", 20_000)):
        source = FolderSource(write_jpeg_folder(tmp / name, n))
        manifests[name] = stage_dataset(source, store, name, shard_size=500, progress=False)[1]
    yield state, store, manifests
    stop_s3(state)


def test_auto_streams_only_a_version_over_the_memory_budget(folders):
    state, _, manifests = folders
    assert manifests["jpeg-2k"]["total_bytes"] > 2**20 * 5  # ~5.5 MB of JPEGs
    held, _ = open_sources(tiny_config("data.source=jpeg-2k@latest"), need_test=False, state=state)
    streamed, _ = open_sources(tiny_config("data.source=jpeg-2k@latest", "data.memory_budget_mb=5"),
                               need_test=False, state=state)
    forced, _ = open_sources(tiny_config("data.source=jpeg-2k@latest", "data.stream=true"), need_test=False,
                             state=state)
    assert isinstance(held, StagedSource) and isinstance(streamed, ShardStream) and isinstance(forced, ShardStream)
    assert len(streamed) == 2_500 and len(streamed.shards) == 5 and streamed.reads == []  # nothing read up front


def test_a_streamed_shard_that_does_not_match_its_manifest_is_named(folders, tmp_path):
    state, store, _ = folders
    source = FolderSource(write_jpeg_folder(tmp_path / "small", 40))
    ref, manifest = stage_dataset(source, store, "jpeg-tampered", shard_size=20, progress=False)
    key = manifest["shards"][1]["key"]
    store.put_bytes(key, b"not the staged bytes")
    stream, _ = open_sources(tiny_config("data.source=jpeg-tampered@latest", "data.stream=true"),
                             need_test=False, state=state)
    assert len(stream.rows(stream.shards[0])) == 20
    with pytest.raises(DataError, match=f"shard s3://{store.bucket}/{key} does not match its manifest"):
        stream.rows(stream.shards[1])


def _rank_epoch(state: Path, name: str, stream: bool) -> dict:
    # Held whole, memory is taken at load, so two steps show it; streamed, a whole epoch is read.
    out = subprocess.run([sys.executable, str(WORKER), str(state), f"{name}@latest", str(stream).lower(),
                          "0" if stream else "2"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_streaming_ranks_peak_memory_does_not_grow_with_the_dataset(folders):
    state, _, manifests = folders
    small, large = (_rank_epoch(state, n, True) for n in ("jpeg-2k", "jpeg-20k"))
    held_small, held_large = (_rank_epoch(state, n, False) for n in ("jpeg-2k", "jpeg-20k"))
    print(json.dumps({"streamed": [small, large], "held": [held_small, held_large]}))
    # rank 0 of 2 over a whole epoch: its share of the smallest shards, in 64-image batches
    assert small["steps"] == 1_000 // 64 and large["steps"] == 10_000 // 64
    # it fetched about half of the version (20 of 40 shards), each once
    assert large["shards_read"] == 20 and 0.4 < large["bytes_read"] / manifests["jpeg-20k"]["total_bytes"] < 0.6
    assert large["sample_reads"] == 1  # the label-free sample (256 images): one whole shard, once
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    held_growth = held_large["peak_rss_mb"] - held_small["peak_rss_mb"]
    assert growth < 12, (small, large)  # 8x the data: measured +2.0 MB for 35k more JPEGs
    assert held_growth > 25, (held_small, held_large)  # the control: ~2.5 kB per JPEG held (+87 MB for 35k)
