"""The static part of `bash scripts/stack.sh check` (issue #28), fast enough for CI: the script, its
compose override, the images it builds and the scheduled deployment it runs agree with each other
and with docker/compose.yaml, prefect.yaml and infra/. The real run needs root and Docker: it is
`bash scripts/stack.sh check`, not part of the suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
STACK_SH = ROOT / "scripts" / "stack.sh"
STACK_CHECK = ROOT / "scripts" / "stack_check.py"
COMPOSE = ROOT / "docker" / "compose.yaml"
OVERRIDE = ROOT / "docker" / "compose.stack.yaml"
POSTGRES = ROOT / "docker" / "Dockerfile.postgres"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
APP_IMAGE = f"simsiam-pipeline:{VERSION}"
STACK_DOCKER_CONFIG = os.path.join(os.environ.get("SIMSIAM_STACK_HOME", "/var/lib/simsiam-stack"), "docker-config")


class _ComposeLoader(yaml.SafeLoader):
    """safe_load plus Compose's merge tags `!reset` and `!override` (kept as ("!reset", value))."""


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(_tag, lambda loader, node, tag=_tag: (tag, _construct(loader, node)))


def _construct(loader, node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return None if node.value in ("", "null", "~") else loader.construct_scalar(node)


def _override() -> dict:
    return yaml.load(OVERRIDE.read_text(), Loader=_ComposeLoader)  # noqa: S506 (a SafeLoader subclass)


def _value(v):
    return v[1] if isinstance(v, tuple) else v


def test_stack_script_is_valid_bash_with_the_documented_commands():
    assert subprocess.run(["bash", "-n", str(STACK_SH)], capture_output=True).returncode == 0
    text = STACK_SH.read_text()
    for cmd in ("up", "check", "down", "purge"):
        assert re.search(rf"^  {cmd}\) ", text, re.M), f"stack.sh has no `{cmd}` command"
    readme = (ROOT / "README.md").read_text()
    assert all(f"bash scripts/stack.sh {cmd}" in readme for cmd in ("up", "check", "down"))
    compile(STACK_CHECK.read_text(), str(STACK_CHECK), "exec")


def test_stack_script_runs_docker_the_way_this_machine_needs():
    text = STACK_SH.read_text()
    for flag in ("--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=overlay2"):
        assert flag in text, f"dockerd without {flag}"
    assert "debootstrap --variant=minbase" in text and "docker import" in text
    assert text.count("docker build --network=host") >= 2
    assert "nice -n" in text and "umount" in text and "netns/default" in text
    # CA certificates are copied at build time, never kept in the repository
    assert not list(ROOT.glob("docker/*.crt")) and not list(ROOT.glob("docker/*.pem"))


def test_stack_secrets_stay_out_of_git():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "docker/.env" in ignored
    for line in OVERRIDE.read_text().splitlines():
        assert not re.search(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY)\w*:\s*\S", line) or "${" in line, line


def test_override_only_changes_services_of_compose_yaml():
    base = yaml.safe_load(COMPOSE.read_text())["services"]
    over = _override()["services"]
    assert set(over) == set(base), "the override must cover every service (host network for all)"
    for name, svc in over.items():
        assert svc["network_mode"] == "host" and svc["init"] is True, name
        hosts = {h.split(":")[0] for h in svc["extra_hosts"]}
        assert hosts == {"postgres", "s3", "mlflow", "prefect-server", "ray-head"}, name
        if "ports" in base[name] and "profiles" not in svc:
            assert svc.get("ports") == ("!reset", []), f"{name}: published ports are meaningless on the host network"


def test_stack_images_are_built_here_and_are_the_ray_image():
    over = _override()["services"]
    for name, svc in over.items():
        assert svc.get("pull_policy") == "never", f"{name}: no registry here"
        assert svc["image"] in (APP_IMAGE, "simsiam-postgres:15-bookworm"), name
    assert over["prefect-worker"]["image"] == APP_IMAGE
    # the trainer image is the one the Ray clusters run (AWS head, KubeRay head)
    for path in ("infra/ray/aws-gpu.yaml", "infra/k8s/raycluster.yaml", "infra/k8s/rayjob-pretrain.yaml"):
        refs = re.findall(r"[\w./-]*simsiam-pipeline:[\w.]+", (ROOT / path).read_text())
        assert any(r.rsplit("/", 1)[-1] == APP_IMAGE for r in refs), f"{path} does not run {APP_IMAGE}"
    assert "FROM ${BASE_IMAGE}" in POSTGRES.read_text()


def test_servers_bind_loopback_on_the_host_network():
    over = _override()["services"]
    assert "127.0.0.1" in over["mlflow"]["command"]
    assert over["prefect-server"]["command"][-3:] == ["127.0.0.1", "--port", "4200"]
    assert "-ip.bind=127.0.0.1" in over["s3"]["command"]
    worker_env = over["prefect-worker"]["environment"]
    assert worker_env["RAY_ADDRESS"] == ("!reset", None), "flow runs start their own Ray on the host network"


def test_stack_deployment_in_prefect_yaml():
    from simsiam.config import load_config

    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    dep = {d["name"]: d for d in doc["deployments"]}["stack-pipeline"]
    assert dep["entrypoint"] == "flows/pipeline.py:pipeline" and dep["work_pool"]["name"] == "local"
    assert dep["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}]
    (schedule,) = dep["schedules"]
    assert 60 <= schedule["interval"] <= 600 and schedule["active"] is False, "short, deployed paused"
    params = dep["parameters"]
    assert params["workers"] >= 1, "Ray Train: checkpoints in S3, so a killed worker's run resumes"
    cfg = load_config(params["preset"], params["overrides"])
    assert cfg.train.checkpoint_every_steps, "checkpoint often enough to kill the worker mid-run"
    assert "stack-pipeline" in STACK_SH.read_text() and "stack-pipeline" in STACK_CHECK.read_text()


def test_docker_compose_config_with_the_override():
    docker = shutil.which("docker")
    env = dict(os.environ)
    if Path(STACK_DOCKER_CONFIG, "cli-plugins", "docker-compose").exists():
        env["DOCKER_CONFIG"] = STACK_DOCKER_CONFIG  # the plugin stack.sh installed
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True, env=env).returncode != 0:
        pytest.skip("no `docker compose` plugin here (scripts/stack.sh installs one into its own DOCKER_CONFIG)")
    res = subprocess.run([docker, "compose", "-f", str(COMPOSE), "-f", str(OVERRIDE), "--env-file",
                          str(ROOT / "docker" / ".env.example"), "config", "-q"], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0, res.stderr
