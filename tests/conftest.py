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

os.environ.setdefault("SIMSIAM_CACHE", str(Path(__file__).parent / ".cache-unused"))
# Prefect reads its settings at import: keep tests' database/results out of ~/.prefect, no telemetry.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="simsiam-test-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


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


# fp32: bf16 autocast (the cpu-demo preset's) is emulated on CPUs without AVX-512 BF16, measured 5x
# slower per step on an AVX2-only EPYC; tests check logic, not mixed-precision speed.
TINY = ["model.width=4", "model.dim=32", "model.pred_dim=8", "model.proj_layers=2", "model.in_channels=1",
        "train.batch_size=16", "train.epochs=2", "train.device=cpu", "data.train_subset=64",
        "eval.knn_every_epochs=0", "data.download=false", "train.amp=none", "train.channels_last=false"]


FP32 = ["--set", "train.amp=none", "--set", "train.channels_last=false"]  # the same, as CLI arguments


def tiny_config(*overrides: str):
    """A config small enough for a step in milliseconds on CPU."""
    return load_config("cpu-demo", TINY + list(overrides))


def tiny_args(*overrides: str) -> list[str]:
    """`tiny_config` as CLI arguments (--preset cpu-demo --set ...)."""
    return ["--preset", "cpu-demo"] + [arg for kv in TINY + list(overrides) for arg in ("--set", kv)]


@pytest.fixture
def tiny_cfg():
    return tiny_config()


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`simsiam up --with-prefect-server`, then one tiny `simsiam run`: a champion, its run and the
    flow runs with their report artifact, as a user has them after the demo."""
    from test_flows import TINY

    state = tmp_path_factory.mktemp("demo") / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SIMSIAM_S3"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    cli = [sys.executable, "-m", "simsiam.cli"]
    try:
        up = subprocess.run([*cli, "up", "--with-prefect-server", "--state", str(state)], capture_output=True,
                            text=True, env=env, timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        args = [*cli, "run", "--subset", "512", "--state", str(state)]
        for s in TINY:
            args += ["--set", s]
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout[r.stdout.index("{\n"):])
        yield {**out["where_to_look"], **json.loads(up.stdout)["prefect"],
               "auth": (state / "prefect-auth").read_text().strip(), "metrics": out["metrics"], "state": state,
               "env": env, "staged": out["staged"]}
    finally:
        subprocess.run([*cli, "down", "--state", str(state)], capture_output=True, timeout=120)


def pytest_sessionfinish(session, exitstatus):
    session.config._simsiam_exitstatus = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave with pytest's own exit status, skipping the interpreter's teardown: once, after all
    tests of a run with the multi-node cluster had passed, that teardown crashed (SIGSEGV, exit
    139) in a background thread of Ray or gRPC, which would fail CI for no test's fault."""
    status = getattr(config, "_simsiam_exitstatus", None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
