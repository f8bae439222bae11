"""Streaming, sharded reads (`simsiam.streaming`) over in-memory shards: who reads what, the
shuffle buffer, and the training loop on a stream. The same reader against the real SeaweedFS is in
test_stream_s3.py."""

import random
from dataclasses import replace
from functools import partial

import pytest
import torch

from conftest import tiny_config
from simsiam.augment import MultiView, train_transform
from simsiam.data import ViewsDataset
from simsiam.engine import train
from simsiam.errors import ConfigError
from simsiam.storage.shards import decode_image, encode_png
from simsiam.streaming import Shard, ShardStream, StreamViews, shuffle_buffer


def memory_stream(source, n: int, shard_size: int) -> ShardStream:
    """The first n images of `source` as PNG rows in shards of `shard_size` (the last one smaller)."""
    rows = [(i, int(source.labels[i]), encode_png(source.image(i))) for i in range(n)]
    table = {f"shard-{k:03d}": rows[s:s + shard_size] for k, s in enumerate(range(0, n, shard_size))}
    shards = [Shard(key, len(r), sum(len(b) for _, _, b in r)) for key, r in table.items()]
    return ShardStream(source.name, source.classes, 1, shards, lambda s: list(table[s.key]),
                       partial(decode_image, channels=1))


@pytest.fixture(scope="module")
def stream(fmnist_train):
    return memory_stream(fmnist_train, 640, 64)  # 10 shards


def test_each_epoch_deals_every_shard_to_exactly_one_rank(stream):
    for world in (1, 2, 3, 4):
        for epoch in range(3):
            dealt = [s.key for r in range(world)
                     for s in replace(stream, rank=r, world=world).rank_shards(0, epoch)]
            assert sorted(dealt) == sorted(s.key for s in stream.shards)  # all, none twice
    assert stream.rank_shards(0, 0) != stream.rank_shards(0, 1)  # reshuffled per epoch


def test_fewest_samples_per_rank_is_its_share_of_the_smallest_shards(fmnist_train):
    s = memory_stream(fmnist_train, 650, 100)  # 6 x 100 + 50
    assert replace(s, world=4).samples_per_rank() == 50  # one shard each, the 50 one at worst
    assert replace(s, world=3).samples_per_rank() == 150  # two shards: 50 + 100
    with pytest.raises(ConfigError, match="7 shards, fewer than the 8 workers.*storage.shard_size"):
        replace(s, world=8).samples_per_rank()


def test_shuffle_buffer_is_a_permutation_holding_at_most_its_size():
    held = []

    def rows():
        for i in range(1000):
            held.append(i)
            yield (i, 0, b"")

    out = []
    for row in shuffle_buffer(rows(), 50, random.Random(0)):
        out.append(row[0])
        assert len(held) - len(out) <= 50  # rows taken in but not yet given out
    assert sorted(out) == list(range(1000)) and out != list(range(1000))
    assert max(abs(pos - i) for pos, i in enumerate(out) if i < 900) > 10  # it mixes beyond neighbours


def test_ranks_stream_disjoint_samples_with_the_in_memory_paths_views(stream, fmnist_train):
    transform = MultiView(train_transform("grey", "fashion-mnist", 28, 1, 0.2), 2)
    seen = []
    for rank in range(2):
        ranked = replace(stream, rank=rank, world=2, reads=[])
        views = StreamViews(ranked, transform, seed=3, buffer=100)
        views.set_epoch(1)
        items = list(views)
        seen.append([i for _, i in items])
        assert {k for k, _, _ in ranked.reads} == {s.key for s in ranked.rank_shards(3, 1)}  # only its own shards
        # a sample's views are those the in-memory path makes for it
        first_views, first_index = items[0]
        ref = ViewsDataset(fmnist_train, transform, seed=3)
        ref.set_epoch(1)
        assert all(torch.equal(a, b) for a, b in zip(first_views, ref[first_index][0]))
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(640))


def test_training_on_a_stream_resumes_bit_identically(stream, tmp_path):
    cfg = tiny_config("data.train_subset=null", "train.epochs=3", "train.checkpoint_every_steps=5",
                      "data.shuffle_buffer=100", "train.batch_size=64")
    straight = train(cfg, out_dir=tmp_path / "a", train_source=replace(stream, reads=[]))
    # Interrupt mid-epoch (step 13 of 30, epoch 2 of 3), then resume from the step-10 checkpoint.
    part = train(cfg, out_dir=tmp_path / "b", stop_after_steps=13, train_source=replace(stream, reads=[]))
    resumed = train(cfg, out_dir=tmp_path / "b", resume=True, train_source=replace(stream, reads=[]))
    assert straight.total_steps == 30 and resumed.start_step == 13 and resumed.step == 30  # 640 / 64 x 3
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert not torch.equal(part.model.state_dict()["backbone.conv1.weight"], a["backbone.conv1.weight"])


def test_streaming_errors_name_their_keys(stream, fmnist_train):
    with pytest.raises(ConfigError, match="data.train_subset does not apply to a streamed version"):
        train(tiny_config(), train_source=stream)
    from simsiam.storage.sources import open_sources

    with pytest.raises(ConfigError, match="data.stream=true streams a staged version: set data.source"):
        open_sources(tiny_config("data.stream=on"), need_test=False)  # YAML's on is true
