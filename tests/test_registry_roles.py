"""The gate gives each registered version one role, against a real `mlflow server` (sqlite backend,
artifacts on the real SeaweedFS): the promoted version is `@champion` only, a version that is not
promoted is `@challenger` only, and retried registrations keep that."""

import mlflow
import pytest
from mlflow import MlflowClient

from simsiam.services import start_mlflow, stop_mlflow, stop_s3
from simsiam.tracking import list_models, promote, register_and_gate
from simsiam.tracking.runs import tracking_uri_scope

pytestmark = pytest.mark.integration


class _Identity(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("mlroles")
    svc = start_mlflow(state)
    yield svc
    stop_mlflow(state)
    stop_s3(state)


@pytest.fixture(scope="module")
def runs(server):
    """Four runs, each with a logged model: (run_id, model_uri)."""
    out = []
    with tracking_uri_scope(server.tracking_uri):
        mlflow.set_experiment("registry-roles")
        for i in range(4):
            with mlflow.start_run(run_name=f"roles-{i}") as run:
                info = mlflow.pyfunc.log_model(name="backbone", python_model=_Identity(), pip_requirements=["mlflow"])
            out.append((run.info.run_id, info.model_uri))
    return out


def _roles(client: MlflowClient, name: str) -> dict[str, set[str]]:
    """version -> the aliases it holds, for every version of `name`."""
    roles: dict[str, set[str]] = {mv.version: set() for mv in client.search_model_versions(f"name='{name}'")}
    for alias, version in client.get_registered_model(name).aliases.items():
        roles[str(version)].add(alias)
    return roles


def test_champion_and_challenger_are_one_role_each(server, runs):
    client, name = MlflowClient(server.tracking_uri), "simsiam-roles"
    (r1, m1), (r2, m2), (r3, m3) = runs[:3]
    g1 = register_and_gate(client, r1, m1, name, 70.0, False, floor=10)
    assert g1["decision"] == "champion"
    assert _roles(client, name) == {g1["version"]: {"champion"}}  # a fresh v1: crowned, not also challenger

    g2 = register_and_gate(client, r2, m2, name, 60.0, False, floor=10)  # worse: stays challenger
    assert g2["decision"] == "challenger"
    assert _roles(client, name) == {g1["version"]: {"champion"}, g2["version"]: {"challenger"}}

    g3 = register_and_gate(client, r3, m3, name, 80.0, False, floor=10)  # better: the crown moves to it
    assert g3["decision"] == "champion"
    assert _roles(client, name) == {g1["version"]: set(), g2["version"]: {"challenger"}, g3["version"]: {"champion"}}
    assert client.get_model_version_by_alias(name, "champion").version == g3["version"]

    again = register_and_gate(client, r3, m3, name, 80.0, False, floor=10)  # a retried registration
    assert again["noop"] and again["version"] == g3["version"] and again["decision"] == "champion"
    assert _roles(client, name) == {g1["version"]: set(), g2["version"]: {"challenger"}, g3["version"]: {"champion"}}
    listed = [r for r in list_models(client) if r["name"] == name]  # `simsiam models ls`
    assert {r["version"]: r["aliases"] for r in listed} == {g1["version"]: [], g2["version"]: ["challenger"],
                                                            g3["version"]: ["champion"]}
    assert {(r["criterion"], float(r["value"])) for r in listed} == {("probe/top1", p) for p in (70.0, 60.0, 80.0)}


def _died_after_registering(client: MlflowClient, run_id: str, model_uri: str, name: str, probe: float,
                            alias: str | None) -> str:
    """What an attempt leaves when it dies after registering (and aliasing) its version, before its
    decision is recorded: the version with its registration tags, no `gate.decision`."""
    with tracking_uri_scope(client.tracking_uri):
        mv = mlflow.register_model(model_uri, name, tags={"probe/top1": repr(probe), "collapsed": "false",
                                                          "run_id": run_id})
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return mv.version


def test_a_retry_that_promotes_drops_the_challenger_alias_an_earlier_attempt_set(server, runs):
    client, name = MlflowClient(server.tracking_uri), "simsiam-roles-retry"
    (r1, m1), (r2, m2) = runs[:2]
    v1 = _died_after_registering(client, r1, m1, name, 70.0, "challenger")
    g1 = register_and_gate(client, r1, m1, name, 70.0, False, floor=10)  # the retry: no champion yet, so crowned
    assert g1["version"] == v1 and g1["decision"] == "champion" and not g1["noop"]
    assert _roles(client, name) == {v1: {"champion"}}
    assert client.get_model_version(name, v1).tags["gate.decision"] == "champion"

    # An attempt that died after crowning its version: the retry does not compare the version with
    # itself (a tie, which would make it challenger too); it stays champion, and only that.
    v2 = _died_after_registering(client, r2, m2, name, 90.0, "champion")
    g2 = register_and_gate(client, r2, m2, name, 90.0, False, floor=10)
    assert g2["version"] == v2 and g2["decision"] == "champion"
    assert _roles(client, name) == {v1: set(), v2: {"champion"}}


def test_a_retry_of_a_version_that_is_not_promoted_makes_it_challenger_only(server, runs):
    client, name = MlflowClient(server.tracking_uri), "simsiam-roles-collapsed"
    (r1, m1), (r4, m4) = runs[0], runs[3]
    g1 = register_and_gate(client, r1, m1, name, 70.0, False, floor=10)
    v2 = _died_after_registering(client, r4, m4, name, 99.0, "challenger")
    g2 = register_and_gate(client, r4, m4, name, 99.0, True, floor=10)  # collapsed: never promoted
    assert g2["version"] == v2 and g2["decision"] == "challenger" and "collapsed" in g2["reasons"]
    assert _roles(client, name) == {g1["version"]: {"champion"}, v2: {"challenger"}}


def test_a_manual_promotion_of_the_challenger_leaves_it_champion_only(server, runs):
    client, name = MlflowClient(server.tracking_uri), "simsiam-roles-manual"
    (r1, m1), (r2, m2) = runs[:2]
    g1 = register_and_gate(client, r1, m1, name, 70.0, False, floor=10)
    g2 = register_and_gate(client, r2, m2, name, 60.0, False, floor=10)
    assert _roles(client, name) == {g1["version"]: {"champion"}, g2["version"]: {"challenger"}}
    assert promote(client, name, g2["version"], who="tester")["decision"] == "champion (manual)"
    assert _roles(client, name) == {g1["version"]: set(), g2["version"]: {"champion"}}


def test_a_label_free_champion_is_compared_on_the_current_judge_and_remeasured_on_another_sample(server, runs):
    """Without labels: a champion judged by one label-free key is compared on the judge of the next run
    when it has that value on the same sample; measured on other images, it is compared on its values
    re-measured on the new version's sample."""
    client, name = MlflowClient(server.tracking_uri), "simsiam-roles-label-free"
    (r1, m1), (r2, m2), (r3, m3) = runs[:3]
    sample_a, sample_b = {"label_free.set": "sample A"}, {"label_free.set": "sample B (grown)"}
    g1 = register_and_gate(client, r1, m1, name, None, False, label_free={"label_free/std_ratio": 0.5,
                           "label_free/rankme": 80.0}, label_free_set=sample_a, judge="label_free/std_ratio")
    assert g1["decision"] == "champion"
    assert client.get_model_version(name, g1["version"]).tags["gate.criterion"] == "label_free/std_ratio"
    g2 = register_and_gate(client, r2, m2, name, None, False, label_free={"label_free/std_ratio": 0.4,
                           "label_free/rankme": 90.0}, label_free_set=sample_a, judge="label_free/rankme")
    assert (g2["decision"], g2["reasons"]) == (
        "champion", f"label_free/rankme 90.00, not collapsed, beats champion v{g1['version']} (80.00)")
    again = {"version": g2["version"], "metrics": {"label_free/rankme": 95.0}, "label_free.set": "sample B (grown)"}
    g3 = register_and_gate(client, r3, m3, name, None, False, label_free={"label_free/rankme": 91.0},
                           label_free_set=sample_b, judge="label_free/rankme", remeasured=again)
    assert (g3["decision"], g3["reasons"]) == (
        "challenger", f"label_free/rankme 91.00 does not beat champion v{g2['version']}, re-measured on this sample "
                      "(95.00)")
