import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from simsiam.config import load_config
from simsiam.data import DEBIAN_FASHION_MNIST, load_fashion_mnist
from simsiam.library_env import apply_library_defaults

apply_library_defaults()  # the test session is an entry point, as the CLI is
os.environ.setdefault("SIMSIAM_CACHE", str(Path(__file__).parent / ".cache-unused"))
# Each xdist worker's local Ray keeps its session files apart (the workers inherit the controller's env).
os.environ["SIMSIAM_RAY_TMP"] = f"/tmp/ray-simsiam-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
# Prefect reads its settings at import: keep tests' database/results out of ~/.prefect, no telemetry.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="simsiam-test-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Ray Train's controller polls its workers every 2 s by default; the suite's ~20 short fits each wait on
# several polls (start, reports, end): 0.5 s saved ~3 s per fit here (measured on 2 cores, 1 worker).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_cifar_batches(root: Path, n_per_batch: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n_per_batch).tolist()}
        with (d / name).open("wb") as fh:
            pickle.dump(batch, fh)
    with (d / "batches.meta").open("wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in "abcdefghij"]}, fh)
    return d


@pytest.fixture(scope="session")
def fmnist_train():
    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST missing: apt-get install dataset-fashion-mnist (the README test command does)")
    return load_fashion_mnist("train", download=False)


@pytest.fixture(scope="session")
def fmnist_test():
    return load_fashion_mnist("test", download=False)


@pytest.fixture(scope="session")
def fmnist_small_root(tmp_path_factory, fmnist_train, fmnist_test):
    """The first 2,000 train and 500 test images of the real Fashion-MNIST, as IDX files: a
    `data.root` for full-split evaluations that must finish in seconds."""
    root = tmp_path_factory.mktemp("fmnist-small")
    for prefix, src, n in (("train", fmnist_train, 2000), ("t10k", fmnist_test, 500)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", src.images[:n, 0].numpy())
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", src.labels[:n].numpy().astype(np.uint8))
    return root


# The one tiny config of the suite: a width-4 net in fp32 on CPU, 64 images in batches of 16, no
# kNN monitor, label-free metrics on 256 images: a step in milliseconds. fp32 because bf16 autocast
# (the cpu-demo preset's `auto` on AVX-512-BF16 CPUs) is emulated elsewhere, measured 5x slower per
# step on an AVX2-only EPYC; tests check logic, not mixed-precision speed. Tests that need more add
# their own overrides on top.
TINY = ["model.width=4", "model.head_conv=null", "model.dim=32", "model.pred_dim=8", "train.device=cpu",
        "train.amp=none", "train.channels_last=false", "data.download=false", "eval.knn_every_epochs=0",
        "train.batch_size=16", "train.epochs=2", "data.train_subset=64", "eval.label_free_samples=256",
        "eval.label_free_pairs=64"]
# On top of TINY, the sizes of a whole pipeline run: 512 staged images in batches of 64, one epoch.
PIPELINE = ["train.batch_size=64", "train.epochs=1", "data.train_subset=null", "eval.probe_epochs=5",
            "tracking.system_metrics=false"]


def tiny_config(*overrides: str):
    """TINY (+ overrides) as a Config."""
    return load_config("cpu-demo", TINY + list(overrides))


def tiny_sets(*overrides: str) -> list[str]:
    """TINY (+ overrides) as CLI arguments: --set k=v ..."""
    return [arg for kv in TINY + list(overrides) for arg in ("--set", kv)]


def tiny_args(*overrides: str) -> list[str]:
    """`tiny_config` as CLI arguments (--preset cpu-demo --set ...)."""
    return ["--preset", "cpu-demo", *tiny_sets(*overrides)]


@pytest.fixture
def tiny_cfg():
    return tiny_config()


# Two xdist workers share 2 cores: each (and every process it starts: CLI runs, benchmarks) computes
# on one thread. Two OpenMP pools of 2 threads each on 2 cores spin against each other; in-process
# torch tests then ran 3-5x slower than alone (a 256-step width-8 run: 83 s alone, 420 s beside the Ray group).
# An xdist worker inherits the controller's environment, where this module set 2 first: a worker
# overrides it, or every Ray worker and CLI run it starts computes on 2 threads (measured: a 2-node DDP
# test's Ray workers took 130 CPU-s with 2 OpenMP threads each, 48 CPU-s with 1).
TORCH_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
else:
    os.environ.setdefault("OMP_NUM_THREADS", str(TORCH_THREADS))


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`simsiam up --with-prefect-server`, then one tiny `simsiam run`: a champion, its run and the
    flow runs with their report artifact, as a user has them after the demo."""
    state = tmp_path_factory.mktemp("demo") / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SIMSIAM_S3"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    cli = [sys.executable, "-m", "simsiam.cli"]
    try:
        up = subprocess.run([*cli, "up", "--with-prefect-server", "--state", str(state)], capture_output=True,
                            text=True, env=env, timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        args = [*cli, "run", "--subset", "512", "--state", str(state), *tiny_sets(*PIPELINE)]
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout[r.stdout.index("{\n"):])
        yield {**out["where_to_look"], **json.loads(up.stdout)["prefect"],
               "auth": (state / "prefect-auth").read_text().strip(), "metrics": out["metrics"], "state": state,
               "env": env, "staged": out["staged"]}
    finally:
        subprocess.run([*cli, "down", "--state", str(state)], capture_output=True, timeout=120)


# With pytest-xdist (`-n 2 --dist loadgroup --no-loadscope-reorder`, scripts/test.sh) each worker
# starts with two groups and takes the next when one ends. So: the two longest groups first (one per
# worker), then two short ones (queued behind them), then the rest longest first, by the durations
# that `.ci/run` prints. Modules not listed follow in file order.
LONGEST_FIRST = ["ray", "test_run_cli", "test_layout", "test_losses", "demo_run", "test_stream_s3", "test_tracking",
                 "test_flows", "test_bench", "test_services", "test_cli", "test_deployments", "test_storage"]


def _group(item) -> str:
    """A module's tests run on one worker, so its module fixtures (servers, trained runs) are made
    once; the modules that use the session's `demo_run` share one group for the same reason. Tests
    marked `xdist_group("ray")` share one worker, so one Ray runs at a time: with two on a machine,
    Ray Train's PlacementGroupCleaner fails ("Found multiple active Ray instances"), stopped trials
    keep their CPUs reserved, and the next trial waits for its worker group to time out (seen)."""
    mark = item.get_closest_marker("xdist_group")
    if mark:
        return mark.args[0] if mark.args else mark.kwargs["name"]
    return "demo_run" if "demo_run" in item.fixturenames else item.module.__name__


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    groups = {item: _group(item) for item in items}
    for item, group in groups.items():
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: rank.get(groups[item], len(rank)))  # stable: file order within a rank


def pytest_collection_finish(session):
    """xdist marks a grouped test by a `@group` suffix on its node id; pytest 9 dropped the attribute
    xdist 3.8 sets, which silently spread the groups over both workers (two Rays at once)."""
    if getattr(session.config.option, "loadgroup", False) and any("@" not in i.nodeid for i in session.items):
        raise pytest.UsageError(f"pytest-xdist's --dist loadgroup did not group the tests under pytest "
                                f"{pytest.__version__}: pin the pytest that pyproject.toml names")
