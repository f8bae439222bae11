"""Static checks of the deployment files (docker/, infra/, prefect.yaml): they parse, follow the
schemas that can be checked offline, agree with pyproject.toml's pins and with the CLI they run.
Nothing here needs a Docker engine, a cluster or the network."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
RAY_AWS = INFRA / "ray" / "aws-gpu.yaml"
WORK_POOL = K8S / "prefect-work-pool.json"
PREFECT_YAML = ROOT / "prefect.yaml"

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
PINS = dict(re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)$", d).groups()
            for d in PROJECT["dependencies"] if "==" in d)
CPU_IMAGE, CUDA_IMAGE = "simsiam-pipeline", "simsiam-pipeline-cuda"
GPU = "nvidia.com/gpu"
SECRET_NAME = "simsiam-s3"
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)


class _ComposeTags(yaml.SafeLoader):
    """Compose override files use the merge tags `!reset` and `!override`: read them as plain values."""


for _tag in ("!reset", "!override"):
    _ComposeTags.add_constructor(_tag, lambda loader, node: (
        loader.construct_mapping(node) if isinstance(node, yaml.MappingNode)
        else loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else None))


def _load(path: Path) -> list:
    text = path.read_text()
    if path.suffix == ".json":
        return [json.loads(text)]
    return [d for d in yaml.load_all(text, Loader=_ComposeTags) if d is not None]  # noqa: S506 (SafeLoader)


def _config_files() -> list[Path]:
    files = [p for d in (DOCKER, INFRA) for p in sorted(d.rglob("*"))
             if p.is_file() and p.suffix in (".yaml", ".yml", ".json")]
    return files + ([PREFECT_YAML] if PREFECT_YAML.exists() else [])


def _walk(obj, path=()):
    """Yield (path, scalar) for every scalar in a parsed document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, path + (str(k),))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, path + (str(i),))
    else:
        yield path, obj


def _image_parts(ref: str) -> tuple[str, str]:
    """'registry/ns/name:tag' -> ('name', 'tag')."""
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    return name.rsplit("/", 1)[-1], tag


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


# ---------------------------------------------------------------- every file parses

def test_expected_files_exist():
    for p in (DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda", COMPOSE, ENV_EXAMPLE, ROOT / ".dockerignore",
              RAY_AWS, WORK_POOL, INFRA / "README.md"):
        assert p.is_file(), f"{p.relative_to(ROOT)} is missing"
    assert list(K8S.glob("*.yaml")), "no Kubernetes manifests in infra/k8s"


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_config_file_parses(path):
    docs = _load(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"


# ---------------------------------------------------------------- Dockerfiles

def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue  # comments and parser directives, also inside a continued instruction
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "cuda": DOCKER / "Dockerfile.cuda"}


def _arg_defaults(path: Path) -> dict[str, str]:
    """ARG NAME=default values: a build without --build-arg (the production build) uses these."""
    return dict(a.split("=", 1) for w, a in _instructions(path) if w == "ARG" and "=" in a)


def _resolved(path: Path, text: str) -> str:
    """${NAME} / $NAME of an ARG replaced by its default."""
    args = _arg_defaults(path)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def _base_images(path: Path) -> list[str]:
    """External images a Dockerfile builds on: FROM lines and COPY --from=<image>, not stage names."""
    stages, images = set(), []
    for word, args in _instructions(path):
        if word == "FROM":
            parts = [a for a in _resolved(path, args).split() if not a.startswith("--")]
            if parts[0] not in stages:
                images.append(parts[0])
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
        elif word == "COPY":
            m = re.search(r"--from=(\S+)", args)
            if m and m.group(1) not in stages and not m.group(1).isdigit():
                images.append(m.group(1))
    return images


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfile_base_images_are_pinned(kind):
    images = _base_images(DOCKERFILES[kind])
    assert images
    for ref in images:
        assert "$" not in ref, f"{ref}: an ARG in FROM needs a pinned default"
        name, tag = _image_parts(ref)
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{ref}: pin a versioned tag"


def _pip_pins(path: Path) -> dict[str, list[str]]:
    pins: dict[str, list[str]] = {}
    for word, args in _instructions(path):
        if word == "RUN":
            for name, ver in re.findall(r"\b(torch|torchvision)==([\w.+]+)", args):
                pins.setdefault(name, []).append(ver)
    return pins


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfile_torch_pins_match_pyproject(kind):
    pins = _pip_pins(DOCKERFILES[kind])
    for name in ("torch", "torchvision"):
        assert pins.get(name), f"{kind} Dockerfile does not pin {name}"
        assert set(pins[name]) == {PINS[name]}, f"{kind} Dockerfile: {name} {pins[name]} != pyproject {PINS[name]}"


def _index_urls(path: Path) -> list[str]:
    text = "\n".join(a for w, a in _instructions(path) if w == "RUN")
    return [u.strip('"') for u in re.findall(r"--(?:extra-)?index-url[= ](\S+)", _resolved(path, text))]


def test_cpu_dockerfile_uses_cpu_torch():
    assert _index_urls(DOCKERFILES["cpu"]) == ["https://download.pytorch.org/whl/cpu"]
    assert not any("nvidia/cuda" in i for i in _base_images(DOCKERFILES["cpu"]))


def test_cuda_dockerfile_matches_torch_cuda():
    cuda = [i for i in _base_images(DOCKERFILES["cuda"]) if i.startswith("nvidia/cuda:")]
    assert len(cuda) == 1, "the CUDA image must build on one nvidia/cuda base"
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?runtime-ubuntu\d+\.\d+", cuda[0])
    assert m, f"{cuda[0]}: want a pinned nvidia/cuda X.Y.Z runtime Ubuntu tag"
    major, minor = m.groups()
    assert _index_urls(DOCKERFILES["cuda"]) == [f"https://download.pytorch.org/whl/cu{major}{minor}"]
    spec = find_spec("torch")  # torch/version.py names the CUDA the installed wheel was built for
    version_py = Path(spec.submodule_search_locations[0]) / "version.py" if spec else None
    if version_py and version_py.is_file():
        built = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([\d.]+)['\"]", version_py.read_text(), re.M)
        if built:
            assert built.group(1) == f"{major}.{minor}", f"installed torch is built for CUDA {built.group(1)}"


def test_dockerfiles_share_the_python_version():
    from packaging.specifiers import SpecifierSet

    versions = set()
    for path in DOCKERFILES.values():
        pythons = [i for i in _base_images(path) if i.startswith("python:")]
        assert len(pythons) == 1, f"{path.name}: take CPython from one official python image"
        versions.add(re.match(r"python:(\d+\.\d+\.\d+)-", pythons[0]).group(1))
    assert len(versions) == 1, f"CPU and CUDA images run different Pythons {versions}: Ray needs one"
    assert versions.pop() in SpecifierSet(PROJECT["requires-python"])


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfile_user_and_entrypoint(kind):
    ins = _instructions(DOCKERFILES[kind])
    users = [a for w, a in ins if w == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    entry = [a for w, a in ins if w == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["simsiam"], "ENTRYPOINT must be the exec form [\"simsiam\"]"
    assert PROJECT["scripts"].get("simsiam"), "pyproject no longer defines the `simsiam` script"


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfile_installs_dependencies_before_source(kind):
    ins = _instructions(DOCKERFILES[kind])

    def first(pred, what):
        idx = [i for i, (w, a) in enumerate(ins) if pred(w, a)]
        assert idx, f"{kind} Dockerfile: no {what}"
        return idx[0]

    torch = first(lambda w, a: w == "RUN" and "torch==" in a, "torch install")
    manifest = first(lambda w, a: w == "COPY" and a.split()[0] == "pyproject.toml", "COPY pyproject.toml")
    deps = first(lambda w, a: w == "RUN" and "pip install -r" in a, "dependency install")
    source = first(lambda w, a: w == "COPY" and a.split()[:2] == [".", "."], "COPY . .")
    package = first(lambda w, a: w == "RUN" and "--no-deps" in a, "package install")
    assert torch < manifest < deps < source < package


def test_dockerignore_allows_only_the_package():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", ".dockerignore should ignore everything, then allow-list"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"pyproject.toml", "README.md", "simsiam", "configs"} <= allowed
    assert not allowed & {"docker", "docker/.env", ".env", ".venv", ".git", "runs", ".simsiam"}


# ---------------------------------------------------------------- compose

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            out[key.strip()] = value.strip()
    return out


VAR_REF = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_]\w*)([^}]*)\}|([A-Za-z_]\w*))")


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, $VAR and $$."""
    def sub(m):
        name = m.group(1) or m.group(3)
        mod = m.group(2) or ""
        if name in env and (env[name] or not mod.startswith(":")):
            return env[name]
        if mod[:2] in (":-",) or mod[:1] == "-":
            return mod[2:] if mod.startswith(":-") else mod[1:]
        raise AssertionError(f"${{{name}}} has no value in .env.example")
    return VAR_REF.sub(sub, text).replace("$$", "$")


def _one_shots(compose) -> set[str]:
    return {n for n, s in compose["services"].items() if str(s.get("restart", "no")) == "no"}


def test_compose_services_have_image_and_healthcheck(compose):
    one_shots = _one_shots(compose)
    for name, svc in compose["services"].items():
        assert svc.get("image") or svc.get("build"), f"service {name} has neither image nor build"
        if name in one_shots:
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test and test != ["NONE"], f"long-running service {name} has no healthcheck"


def test_compose_depends_on_is_consistent(compose):
    services = compose["services"]
    one_shots = _one_shots(compose)
    waited_on = set()
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        deps = {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) else deps
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            cond = spec.get("condition", "service_started")
            assert cond in ("service_started", "service_healthy", "service_completed_successfully")
            if cond == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy; it has no healthcheck"
            if cond == "service_completed_successfully":
                assert dep in one_shots, f"{name} waits for {dep} to complete, but {dep} restarts"
                waited_on.add(dep)
    assert one_shots <= waited_on, f"one-shot jobs nobody waits for: {one_shots - waited_on}"


def test_compose_variables_are_in_env_example():
    used = {m.group(1) or m.group(3) for m in VAR_REF.finditer(COMPOSE.read_text())}
    documented = set(_env_example())
    assert used - documented == set(), f"used in compose.yaml, missing from .env.example: {used - documented}"
    assert documented - used == set(), f"in .env.example, unused by compose.yaml: {documented - used}"


def _assert_no_literal_secret(path: tuple, value) -> None:
    if not isinstance(value, str):
        return
    where = "/".join(path)
    if SECRETISH.search(path[-1] if path else ""):
        assert re.fullmatch(r"(\$\{[^}]+\})+", value), f"{where}: secret given literally; use ${{VAR}} from .env"
    for m in re.finditer(r"://([^:/@\s]+):([^@\s]+)@", value):
        assert re.fullmatch(r"\$\{[^}]+\}", m.group(2)), f"{where}: password inside a URL; use ${{VAR}}"
    assert not re.search(r"\bAKIA[0-9A-Z]{16}\b", value), f"{where}: an AWS access key id"


def test_compose_has_no_literal_secret(compose):
    for path, value in _walk(compose):
        _assert_no_literal_secret(path, value)
    for key, value in _env_example().items():
        if SECRETISH.search(key):
            assert value.startswith("change-me"), f".env.example {key}: use an obvious placeholder"


def test_compose_app_image_is_this_version(compose):
    app = [s for s in compose["services"].values() if s.get("build")]
    assert app, "compose builds no app image"
    for svc in app:
        assert _image_parts(svc["image"]) == (CPU_IMAGE, VERSION)
        build = svc["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILES["cpu"]


def test_compose_s3_init_job_code_is_valid(compose):
    """The bucket job runs `python -c CODE` with names from simsiam: they must exist."""
    import importlib

    svc = compose["services"]["s3-init"]
    assert svc["entrypoint"] == ["python", "-c"]
    code = svc["command"][0]
    compile(code, "s3-init", "exec")
    for module, names in re.findall(r"^from (\S+) import (.+)$", code, re.M):
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(mod, name), f"s3-init imports {module}.{name}, which does not exist"


def test_compose_matches_the_compose_spec():
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (vendors the Compose spec schema) not installed")
    import jsonschema

    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor")
                        .joinpath("compose-spec.json").read_text())
    doc = yaml.safe_load(_interpolate(COMPOSE.read_text(), _env_example()))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10])


def test_docker_compose_config(monkeypatch):
    docker = shutil.which("docker")
    stack_config = Path(os.environ.get("SIMSIAM_STACK_HOME", "/var/lib/simsiam-stack"), "docker-config")
    if (stack_config / "cli-plugins" / "docker-compose").exists():
        monkeypatch.setenv("DOCKER_CONFIG", str(stack_config))  # the plugin scripts/stack.sh installed
    if not docker or _run(docker, "compose", "version").returncode != 0:
        pytest.skip("no `docker compose` plugin here (a Docker client without compose cannot run it); "
                    "test_compose_matches_the_compose_spec validates the file against the Compose schema")
    res = _run(docker, "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q")
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------- Ray cluster launcher (AWS)

@pytest.fixture(scope="module")
def ray_cluster() -> dict:
    return yaml.safe_load(RAY_AWS.read_text())


def test_ray_cluster_config_validates_with_ray(ray_cluster):
    """The same offline steps `ray up` starts with: fill in the AWS defaults, validate against
    Ray's ray-schema.json and its node-type rules."""
    util = pytest.importorskip("ray.autoscaler._private.util")
    prepared = util.prepare_config(copy.deepcopy(ray_cluster))
    util.validate_config(prepared)
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands", "initialization_commands"):
        assert prepared[key] == ray_cluster[key], f"{key}: Ray would add its defaults (pip installs)"


def test_ray_cluster_shape(ray_cluster):
    types = ray_cluster["available_node_types"]
    head = types[ray_cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head should run drivers only"
    assert not re.match(r"[gp]\d", head["node_config"]["InstanceType"]), "the head needs no GPU"
    gpu = [t for n, t in types.items() if n != ray_cluster["head_node_type"]
           and re.match(r"[gp]\d", t["node_config"]["InstanceType"])]
    assert gpu and all(t["max_workers"] > t.get("min_workers", 0) for t in gpu), "no autoscaling GPU worker type"
    for name, t in types.items():
        assert t["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), \
            f"{name}: S3 access must come from an instance profile"
    setup = sum(len(ray_cluster[k]) for k in ("setup_commands", "head_setup_commands",
                                                "worker_setup_commands", "initialization_commands"))
    assert setup <= 2, "keep node setup in the image, not in setup_commands"
    docker = ray_cluster["docker"]
    assert _image_parts(docker["image"]) == (CUDA_IMAGE, VERSION), "GPU workers need the CUDA image"
    assert _image_parts(docker.get("head_image", docker["image"])) in {(CPU_IMAGE, VERSION), (CUDA_IMAGE, VERSION)}
    assert '--entrypoint=""' in docker["run_options"], "Ray runs `bash` in the container: reset ENTRYPOINT"
    assert any("SIMSIAM_S3_ENDPOINT=" in o for o in docker["run_options"])
    text = RAY_AWS.read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "AWS_ACCESS_KEY_ID" not in text


# ---------------------------------------------------------------- Kubernetes

def _k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(K8S.glob("*.y*ml")) for d in _load(p)]


def _cluster_specs() -> list[tuple[str, dict]]:
    out = []
    for _, d in _k8s_docs():
        if d["kind"] == "RayCluster":
            out.append((d["metadata"]["name"], d["spec"]))
        elif d["kind"] == "RayJob" and "rayClusterSpec" in d["spec"]:
            out.append((f"rayjob/{d['metadata']['name']}", d["spec"]["rayClusterSpec"]))
    return out


def _pod_templates(spec: dict) -> list[tuple[str, dict]]:
    return [("head", spec["headGroupSpec"]["template"])] + \
        [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]]


def _gpus(container: dict) -> int:
    res = container.get("resources", {})
    return int(res.get("limits", {}).get(GPU, 0))


def test_k8s_manifests_required_fields():
    docs = _k8s_docs()
    kinds = {d["kind"] for _, d in docs}
    assert {"RayCluster", "RayJob", "ConfigMap"} <= kinds
    clusters = {d["metadata"]["name"] for _, d in docs if d["kind"] == "RayCluster"}
    for path, d in docs:
        where = f"{path.name}:{d.get('kind')}"
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), where
        if d["kind"] in ("RayCluster", "RayJob"):
            assert d["apiVersion"] == "ray.io/v1", where
        if d["kind"] == "RayJob":
            spec = d["spec"]
            assert spec.get("entrypoint"), f"{where}: no entrypoint"
            assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec), \
                f"{where}: give exactly one of rayClusterSpec / clusterSelector"
            if "clusterSelector" in spec:
                assert spec["clusterSelector"].get("ray.io/cluster") in clusters, \
                    f"{where}: clusterSelector names no RayCluster in infra/k8s"
    for name, spec in _cluster_specs():
        assert spec["rayVersion"] == PINS["ray"], f"{name}: rayVersion != pyproject's ray pin"
        assert "rayStartParams" in spec["headGroupSpec"]
        assert spec["workerGroupSpecs"], f"{name}: no worker group"
        for group in spec["workerGroupSpecs"]:
            assert group.get("groupName") and "rayStartParams" in group, name
            assert group.get("minReplicas", 0) <= group.get("replicas", 0) <= group["maxReplicas"], name
        for group, tpl in _pod_templates(spec):
            containers = tpl["spec"]["containers"]
            assert containers and all(c.get("name") and c.get("image") for c in containers), f"{name}/{group}"


def test_k8s_gpu_workers_and_images():
    for name, spec in _cluster_specs():
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert _image_parts(head["image"]) in {(CPU_IMAGE, VERSION), (CUDA_IMAGE, VERSION)}, name
        gpu_groups = 0
        for group, tpl in _pod_templates(spec)[1:]:
            ray = tpl["spec"]["containers"][0]
            if _gpus(ray):
                gpu_groups += 1
                assert ray["resources"]["requests"].get(GPU) == ray["resources"]["limits"][GPU], f"{name}/{group}"
                assert _image_parts(ray["image"]) == (CUDA_IMAGE, VERSION), \
                    f"{name}/{group}: GPU pods need the CUDA image"
        assert gpu_groups, f"{name}: no worker group requests {GPU}"


def _entrypoints() -> list[tuple[str, list[str], dict]]:
    """(RayJob name, argv, the Ray cluster spec it runs on)."""
    clusters = dict(_cluster_specs())
    out = []
    for _, d in _k8s_docs():
        if d["kind"] == "RayJob":
            spec = d["spec"]
            cluster = spec.get("rayClusterSpec") or clusters[spec["clusterSelector"]["ray.io/cluster"]]
            out.append((d["metadata"]["name"], shlex.split(spec["entrypoint"]), cluster))
    return out


def _opt(argv: list[str], flag: str, default=None):
    return argv[argv.index(flag) + 1] if flag in argv else default


def test_rayjobs_fit_their_clusters():
    for name, argv, cluster in _entrypoints():
        gpus = float(_opt(argv, "--gpus-per-worker", 0))
        assert gpus > 0, f"{name}: a GPU RayJob should ask for --gpus-per-worker"
        pods = [(g, g["template"]["spec"]["containers"][0]) for g in cluster["workerGroupSpecs"]]
        fitting = [(g, c) for g, c in pods if _gpus(c) >= gpus]
        assert fitting, f"{name}: no worker pod has {gpus} GPU(s)"
        workers = int(_opt(argv, "--workers", _opt(argv, "--workers-per-trial", 1)))
        assert workers <= sum(g["maxReplicas"] for g, _ in fitting), f"{name}: more Ray workers than GPU pods"
        cpus = float(_opt(argv, "--cpus-per-worker", 1))
        assert all(cpus <= float(c["resources"]["limits"]["cpu"]) for _, c in fitting), f"{name}: CPUs"


@pytest.fixture(scope="module")
def cli_help():
    """`simsiam [SUB] --help`, run the way the image's ENTRYPOINT runs it (the console script)."""
    script = Path(sys.executable).parent / "simsiam"
    base = [str(script)] if script.exists() else [sys.executable, "-c", "from simsiam.cli import main; main()"]
    cache: dict[str, str] = {}

    def get(sub: str = "") -> str:
        if sub not in cache:
            res = _run(*base, *([sub] if sub else []), "--help")
            assert res.returncode == 0, f"simsiam {sub} --help failed: {res.stderr[-2000:]}"
            cache[sub] = res.stdout
        return cache[sub]
    return get


def test_entrypoint_command_exists(cli_help):
    out = cli_help()
    assert "pretrain" in out and "sweep" in out


def test_rayjob_entrypoints_are_real_cli_calls(cli_help):
    from simsiam.config import load_config

    assert _entrypoints()
    for name, argv, _ in _entrypoints():
        assert argv[0] == "simsiam", f"{name}: entrypoint should run the simsiam CLI"
        sub = argv[1]
        assert re.search(rf"^\W*{sub}\b", cli_help(), re.M), f"{name}: `simsiam {sub}` does not exist"
        known = set(re.findall(r"--[a-z0-9][a-z0-9-]*", cli_help(sub)))
        unknown = {a for a in argv if a.startswith("--") and a not in known}
        assert not unknown, f"{name}: simsiam {sub} has no option(s) {unknown}"
        sets = [argv[i + 1] for i, a in enumerate(argv) if a in ("--set", "-s")]
        load_config(_opt(argv, "--preset", "cpu-demo"), sets)  # raises on an unknown key or bad value


def test_k8s_secrets_only_by_reference():
    docs = _k8s_docs()
    assert not [d for _, d in docs if d["kind"] == "Secret"], "no Secret manifests: create simsiam-s3 by hand"
    configmaps = {d["metadata"]["name"] for _, d in docs if d["kind"] == "ConfigMap"}
    for _, d in docs:
        if d["kind"] == "ConfigMap":
            assert not [k for k in d["data"] if SECRETISH.search(k)], "credentials do not belong in a ConfigMap"
    templates = [tpl for _, spec in _cluster_specs() for _, tpl in _pod_templates(spec)]
    pool = json.loads(WORK_POOL.read_text())["job_configuration"]["job_manifest"]["spec"]["template"]
    for tpl in templates + [pool]:
        for c in tpl["spec"]["containers"]:
            refs = c.get("envFrom", [])
            assert {"secretRef": {"name": SECRET_NAME, "optional": True}} in refs, c["name"]
            for ref in refs:
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in configmaps, ref
            for e in c.get("env", []) if isinstance(c.get("env"), list) else []:
                assert not (SECRETISH.search(e["name"]) and "value" in e), f"{e['name']} given literally"


def test_k8s_builtin_objects_match_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (offline K8s schemas) not installed")
    version = kv.latest_version()
    for path, d in _k8s_docs():
        if not d["apiVersion"].startswith("ray.io/"):
            kv.validate(d, version, strict=True)
    # RayCluster/RayJob are CRDs (no offline schema); their pod templates are core PodTemplateSpecs
    for name, spec in _cluster_specs():
        for group, tpl in _pod_templates(spec):
            pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"{name}-{group}"}, "template": tpl}
            kv.validate(pod, version, strict=True)


# ---------------------------------------------------------------- Prefect kubernetes work pool

PLACEHOLDER = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def _render(obj, values: dict):
    """Prefect's templating for the cases the template uses: a lone placeholder takes the value's type."""
    if isinstance(obj, dict):
        return {k: _render(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_render(v, values) for v in obj]
    if isinstance(obj, str):
        whole = PLACEHOLDER.fullmatch(obj.strip())
        if whole:
            return values.get(whole.group(1))
        return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), "")), obj)
    return obj


def _drop_nulls(obj):
    if isinstance(obj, dict):
        return {k: _drop_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_nulls(v) for v in obj]
    return obj


def test_prefect_work_pool_template():
    import jsonschema

    tpl = json.loads(WORK_POOL.read_text())
    assert set(tpl) == {"job_configuration", "variables"}
    variables = tpl["variables"]
    jsonschema.Draft7Validator.check_schema(variables)
    defaults = {k: v["default"] for k, v in variables["properties"].items() if "default" in v}
    jsonschema.Draft7Validator(variables).validate(defaults)
    used = set(PLACEHOLDER.findall(json.dumps(tpl["job_configuration"])))
    unknown = used - set(variables["properties"])
    assert not unknown, f"placeholders without a variable: {unknown}"
    manifest = tpl["job_configuration"]["job_manifest"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    # the image's ENTRYPOINT is `simsiam`; the worker passes `prefect flow-run execute` as args
    assert container["command"] == ["/usr/bin/env"] and container["args"] == "{{ command }}"
    assert container["image"] == "{{ image }}"
    assert _image_parts(defaults["image"]) == (CUDA_IMAGE, VERSION)
    assert container["resources"]["limits"][GPU] == "{{ gpu_limit }}"
    assert defaults["env"]["RAY_ADDRESS"].startswith("ray://")
    clusters = {d["metadata"]["name"] for _, d in _k8s_docs() if d["kind"] == "RayCluster"}
    assert defaults["env"]["RAY_ADDRESS"].split("//")[1].split("-head-svc")[0] in clusters
    for path, value in _walk(tpl):
        _assert_no_literal_secret(path, value)


def test_prefect_work_pool_renders_a_valid_job():
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (offline K8s schemas) not installed")
    tpl = json.loads(WORK_POOL.read_text())
    values = {k: v.get("default") for k, v in tpl["variables"]["properties"].items()}
    values.update(name="nightly-pipeline", command=["prefect", "flow-run", "execute"], gpu_limit=1,
                  env=[{"name": k, "value": v} for k, v in values["env"].items()])
    job = _drop_nulls(_render(tpl["job_configuration"]["job_manifest"], values))
    # not strict: prefect-kubernetes requires completions/parallelism in the pod spec (as in its own
    # default template); the API server ignores those two keys
    kv.validate(job, kv.latest_version(), strict=False)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][GPU] == 1


# ---------------------------------------------------------------- prefect.yaml (when present)

def test_prefect_yaml_images_are_this_version():
    if not PREFECT_YAML.exists():
        pytest.skip("no prefect.yaml yet")
    doc = yaml.safe_load(PREFECT_YAML.read_text())
    images = [v for p, v in _walk(doc) if p and p[-1] == "image" and isinstance(v, str) and "simsiam-pipeline" in v]
    for ref in images:
        name, tag = _image_parts(ref)
        assert name in (CPU_IMAGE, CUDA_IMAGE) and tag == VERSION, f"prefect.yaml image {ref}"
