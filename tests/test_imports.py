"""Importing any of our modules starts nothing and changes nothing: no server, no child process,
no environment variable, no state dir. Services start only when an entry point asks for them."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import importlib, json, os, pkgutil, psutil
# The libraries first: some write their own variables on import (ray: RAY_CLIENT_MODE); ours must not.
for lib in ("torch", "torchvision", "boto3", "pyarrow.fs", "mlflow", "prefect", "ray", "ray.train", "ray.tune",
            "ray.train.torch", "typer", "matplotlib.pyplot"):
    importlib.import_module(lib)
before = dict(os.environ)
names = []
for pkg in ("simsiam", "flows"):
    mod = importlib.import_module(pkg)
    names.append(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        importlib.import_module(info.name)
        names.append(info.name)
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
children = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
print(json.dumps({"modules": names, "env_changed": changed, "children": children}))
"""


def test_importing_every_module_starts_no_process_and_writes_no_environment(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "prefect"),
           "PYTHONPATH": str(ROOT)}
    (tmp_path / "cwd").mkdir()
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=tmp_path / "cwd",
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"simsiam.cli", "simsiam.services.s3", "simsiam.ray.worker", "flows.pipeline"} <= set(out["modules"])
    assert out["env_changed"] == [] and out["children"] == []
    assert list((tmp_path / "cwd").iterdir()) == []  # no ./.simsiam state dir, no mlruns


def test_the_storage_getters_start_no_server_and_name_the_entry_point(tmp_path, monkeypatch):
    """Before an entry point opened the services (`simsiam.steps.open_services`), looking up the
    store is a one-line error naming the state dir and `simsiam up`, and nothing was started."""
    import psutil
    import pytest

    from simsiam.config import Config
    from simsiam.errors import StorageError
    from simsiam.storage import settings_from_env, store_for

    for var in ("SIMSIAM_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    state = tmp_path / "state"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    for lookup in (lambda: settings_from_env(state_path=state), lambda: store_for(Config(), state)):
        with pytest.raises(StorageError, match=rf"embedded SeaweedFS of {state} is not running; start it with "
                                               r"`simsiam up`"):
            lookup()
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before
    assert not (state / "s3").exists() and not (state / "services").exists()


def test_the_cli_starts_without_torch_or_the_services_libraries():
    """`simsiam --help`, `simsiam config` and bad-input errors answer at once: the CLI module imports
    no torch, boto3, mlflow, prefect or ray (the steps import them when they run)."""
    probe = ("import sys, simsiam.cli; print(sorted(m for m in ('torch', 'boto3', 'mlflow', 'prefect', 'ray') "
             "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
