"""Embeddings as a product: `simsiam embed` and the `embed` flow write a staged dataset's features
under the champion to S3 as versioned Parquet with the manifest last, once per model version x
data version; `simsiam data ls` lists them. On the services and run of `demo_run` (conftest)."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLI = [sys.executable, "-m", "simsiam.cli"]


def _cli(demo_run, *args):
    return subprocess.run([*CLI, *args, "--state", str(demo_run["state"])], capture_output=True, text=True,
                          env=demo_run["env"], timeout=600)


def _store(demo_run):
    from simsiam.config import Config
    from simsiam.storage import store_for

    return store_for(Config(), demo_run["state"])


def test_embed_writes_the_champions_features_once_with_the_manifest_last(demo_run):
    from simsiam.storage.embeddings import read_embeddings

    test_name = demo_run["staged"]["test"].rstrip("/").split("/")[-2]
    model = f"models:/{demo_run['registered_model']}@champion"
    r = _cli(demo_run, "embed", "--model", model, "--data", f"{test_name}@latest", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    version = demo_run["version"]
    assert out["model_uri"] == f"models:/{demo_run['registered_model']}/{version}" and not out["reused"]
    assert out["uri"].startswith(f"s3://data/embeddings/{demo_run['registered_model']}/v{version}/{test_name}/")

    store = _store(demo_run)
    prefix = out["uri"].removeprefix("s3://data/") + "/"
    keys = [o["Key"] for o in store.list_keys(prefix)]
    manifest = json.loads(store.get_bytes(prefix + "manifest.json"))
    part_times = [o["LastModified"] for o in store.list_keys(prefix) if o["Key"].endswith(".parquet")]
    assert max(part_times) <= store.head(prefix + "manifest.json")["last_modified"]  # manifest last
    assert sorted(keys) == sorted([p["key"] for p in manifest["parts"]] + [prefix + "manifest.json"])
    table = read_embeddings(store, manifest)
    assert table.column_names == ["index", "label", "embedding"] and table.num_rows == manifest["num_rows"]

    # the rows are the champion's features of the staged images, in order, with their labels: the
    # same numbers the served model gives for the raw images
    import mlflow

    from simsiam.storage import StagedSource
    from simsiam.tracking.runs import tracking_uri_scope

    src = StagedSource(store, f"{test_name}@{out['data']['version']}")
    with tracking_uri_scope(demo_run["mlflow_ui"]):
        want = mlflow.pyfunc.load_model(out["model_uri"]).predict(src.images[:4].float().div(255).numpy())
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)[:4])
    assert np.allclose(got, want, atol=1e-4) and table.column("label").to_pylist() == src.labels.tolist()
    assert table.column("index").to_pylist() == list(range(len(src)))

    before = {o["Key"]: (o["ETag"], o["LastModified"]) for o in store.list_keys(prefix)}
    again = _cli(demo_run, "embed", "--model", model, "--data", f"{test_name}@latest", "--no-progress")
    assert again.returncode == 0 and json.loads(again.stdout)["reused"] is True
    assert {o["Key"]: (o["ETag"], o["LastModified"]) for o in store.list_keys(prefix)} == before  # nothing uploaded

    listed = _cli(demo_run, "data", "ls")
    assert f"{demo_run['registered_model']}/{version}" in listed.stdout and f"{test_name}@" in listed.stdout


def test_embeddings_without_their_manifest_are_not_listed_and_are_rewritten(demo_run):
    test_name = demo_run["staged"]["test"].rstrip("/").split("/")[-2]
    model = f"models:/{demo_run['registered_model']}/{demo_run['version']}"
    out = json.loads(_cli(demo_run, "embed", "--model", model, "--data", f"{test_name}@latest", "--no-progress").stdout)
    store, prefix = _store(demo_run), out["uri"].removeprefix("s3://data/") + "/"
    store.client.delete_object(Bucket=store.bucket, Key=prefix + "manifest.json")  # the writer died after its parts
    assert f"{test_name}@" not in _cli(demo_run, "data", "ls").stdout.split("embeddings", 1)[1]
    redo = json.loads(_cli(demo_run, "embed", "--model", model, "--data", f"{test_name}@latest",
                           "--no-progress").stdout)
    assert redo["reused"] is False and store.head(prefix + "manifest.json") is not None


def test_embed_of_an_unknown_model_or_dataset_is_one_line(demo_run):
    bad_model = _cli(demo_run, "embed", "--model", "models:/no-such-model@champion", "--data", "x@latest")
    bad_data = _cli(demo_run, "embed", "--model", f"models:/{demo_run['registered_model']}@champion",
                    "--data", "no-such-data@latest")
    test_name = demo_run["staged"]["test"].rstrip("/").split("/")[-2]
    bad_version = _cli(demo_run, "embed", "--model", f"models:/{demo_run['registered_model']}@champion",
                       "--data", f"{test_name}@0000deadbeef0000")
    for r, word in ((bad_model, "no-such-model"), (bad_data, "no-such-data"), (bad_version, "0000deadbeef0000")):
        assert r.returncode == 2 and word in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
        assert len(r.stderr.strip().splitlines()) == 1


def test_embed_flow_links_the_embeddings_from_its_artifact(demo_run):
    from simsiam.services import prefect_env

    env = {**demo_run["env"], **prefect_env(demo_run["state"])}  # the demo's Prefect server and its auth string
    test_name = demo_run["staged"]["test"].rstrip("/").split("/")[-2]
    flow = ("import json; from flows.embed_flow import embed; "
            f"print(json.dumps(embed(model_uri='models:/{demo_run['registered_model']}@champion', "
            f"data='{test_name}@latest', state='{demo_run['state']}').to_dict()))")
    r = subprocess.run([sys.executable, "-c", flow], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    read = ("import asyncio, json\nfrom prefect.client.orchestration import get_client\n"
            "from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey\n"
            "async def main():\n    async with get_client() as c:\n"
            "        keys = ArtifactFilter(key=ArtifactFilterKey(any_=['simsiam-embeddings']))\n"
            "        print(json.dumps([a.data for a in await c.read_artifacts(artifact_filter=keys)]))\n"
            "asyncio.run(main())")
    arts = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, timeout=120, env=env)
    assert arts.returncode == 0, arts.stderr[-2000:]
    assert any(out["uri"] in a for a in json.loads(arts.stdout.strip().splitlines()[-1]))
