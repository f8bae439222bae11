"""Streaming, sharded reads of a staged version, for data larger than `data.memory_budget_mb`.

Each epoch the version's shards are shuffled by (seed, epoch) and dealt round-robin to the
data-parallel ranks, so one epoch reads every shard once across all ranks and no shard twice. A
rank reads its shards one at a time through a shuffle buffer of `data.shuffle_buffer` encoded
samples, so its memory is one shard plus the buffer, whatever the version's size. Views are seeded
by (seed, epoch, sample index) as on the in-memory paths.

The sample order is a pure function of (seed, epoch, rank, world size, DataLoader workers): a
resume with the same world size is exact (it reads and skips the epoch's finished batches); one
with another world size deals the shards differently from the next epoch on.

The core never talks to S3: the storage adapter passes `fetch` (a shard's rows) and `decode`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from simsiam.data import ImageSource, seeded_views
from simsiam.errors import ConfigError


@dataclass(frozen=True)
class Shard:
    key: str
    count: int  # samples
    size: int  # bytes


Row = tuple[int, int, bytes]  # (sample index in the version, label, encoded image)


@dataclass
class ShardStream:
    """A staged version read shard by shard. `fetch(shard)` returns its rows, `decode(bytes)` an image.
    `reads` records (key, bytes, purpose) of every shard this process fetched: "train/<epoch>" for the
    epochs' reads, "sample" for the kNN bank and the views preview."""

    name: str
    classes: list[str]
    channels: int
    shards: list[Shard]
    fetch: Callable[[Shard], list[Row]]
    decode: Callable[[bytes], torch.Tensor]
    rank: int = 0
    world: int = 1
    ref: Any = None  # where the version lives (the storage adapter's DatasetRef), for run metadata
    reads: list[tuple[str, int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.shards)

    def rows(self, shard: Shard, purpose: str = "train") -> list[Row]:
        self.reads.append((shard.key, shard.size, purpose))
        return self.fetch(shard)

    def rank_shards(self, seed: int, epoch: int) -> list[Shard]:
        """This rank's shards in `epoch`: every world-th of one (seed, epoch) permutation."""
        g = torch.Generator().manual_seed(seed * 7919 + epoch + 104_729)
        perm = torch.randperm(len(self.shards), generator=g).tolist()
        return [self.shards[i] for i in perm[self.rank::self.world]]

    def samples_per_rank(self) -> int:
        """The fewest samples a rank can be dealt in any epoch: its share of the smallest shards."""
        if len(self.shards) < self.world:
            raise ConfigError(f"staged version {self.name} has {len(self.shards)} shards, fewer than the "
                              f"{self.world} workers that each read whole shards; stage it again with a "
                              "smaller storage.shard_size")
        counts = sorted(s.count for s in self.shards)
        return sum(counts[:len(self.shards) // self.world])

    def sample_source(self, n: int, seed: int) -> ImageSource:
        """About n decoded samples from whole shards in a seeded order (the kNN bank, the views preview)."""
        rows: list[Row] = []
        order = torch.randperm(len(self.shards), generator=torch.Generator().manual_seed(seed)).tolist()
        for i in order:
            rows += self.rows(self.shards[i], "sample")
            if len(rows) >= n:
                break
        rows = random.Random(seed).sample(rows, min(n, len(rows)))
        return DecodedRows(self.name, self.classes, [r[2] for r in rows], torch.tensor([r[1] for r in rows]),
                           self.decode)


class DecodedRows(ImageSource):
    def __init__(self, name: str, classes: list[str], blobs: list[bytes], labels: torch.Tensor,
                 decode: Callable[[bytes], torch.Tensor]) -> None:
        self.name, self.classes, self.blobs, self.labels, self.decode = name, classes, blobs, labels, decode

    def image(self, index: int) -> torch.Tensor:
        return self.decode(self.blobs[index])


def shuffle_buffer(rows: Iterable[Row], size: int, rng: random.Random) -> Iterator[Row]:
    """A streaming shuffle: each arriving row replaces a random one of `size` held rows, which is yielded."""
    pool: list[Row] = []
    for row in rows:
        if len(pool) < size:
            pool.append(row)
            continue
        j = rng.randrange(size)
        yield pool[j]
        pool[j] = row
    rng.shuffle(pool)
    yield from pool


class StreamViews(IterableDataset):
    """One epoch of this rank's (views, sample index) pairs; DataLoader workers split the rank's shards."""

    def __init__(self, stream: ShardStream, transform: Callable, seed: int, buffer: int) -> None:
        self.stream, self.transform, self.seed, self.buffer = stream, transform, seed, buffer
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.stream)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], int]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        shards = self.stream.rank_shards(self.seed, self.epoch)[worker::n_workers]
        rng = random.Random(((self.seed * 1_000_003 + self.epoch) * 1009 + self.stream.rank) * 101 + worker)
        rows = (row for shard in shards for row in self.stream.rows(shard, f"train/{self.epoch}"))
        for index, _, data in shuffle_buffer(rows, self.buffer, rng):
            yield seeded_views(self.transform, self.stream.decode(data), self.seed, self.epoch, index), index
