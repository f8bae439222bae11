"""The layering docs/layout.md ("Layout") promises, checked on the source: the core imports no
orchestration library, adapters never reach up into the steps, CLI or flows, and every function
fits on a screen."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "simsiam"
CORE = sorted(p for p in PKG.glob("*.py") if p.stem not in ("cli",))  # top-level modules but the CLI
PRODUCT = [p for p in [*PKG.rglob("*.py"), *(ROOT / "flows").glob("*.py")] if "testing" not in p.parts]
ADAPTERS = ("storage", "tracking", "ray", "services")
ORCHESTRATION = ("prefect", "ray", "mlflow", "boto3", "botocore", "pyarrow")
MAX_FUNCTION_LINES = 50


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _top(name: str) -> str:
    return name.split(".")[0]


def test_core_modules_exist_where_the_readme_says():
    assert {p.stem for p in CORE} >= {"config", "models", "losses", "optim", "augment", "data", "engine",
                                      "evaluation", "diagnostics", "checkpoint", "reporters", "runtime", "metrics",
                                      "results", "run_report"}
    assert all((PKG / name / "__init__.py").is_file() for name in ADAPTERS + ("steps",))


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_imports_no_orchestration_or_adapter(path):
    imported = _imports(path)
    assert not {n for n in imported if _top(n) in ORCHESTRATION}, path
    assert not {n for n in imported if n.startswith(tuple(f"simsiam.{a}" for a in ADAPTERS + ("steps", "cli")))}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapters_never_import_steps_cli_or_flows(adapter):
    for path in (PKG / adapter).rglob("*.py"):
        imported = _imports(path)
        assert not {n for n in imported if _top(n) == "flows" or n.startswith(("simsiam.steps", "simsiam.cli"))}, path


def test_steps_import_no_flows_and_prefect_only_to_mark_dead_flow_runs():
    for path in (PKG / "steps").rglob("*.py"):
        allowed = ("prefect",) if path.name == "resume.py" else ()  # the resume story marks dead flow runs Crashed
        assert not {n for n in _imports(path) if _top(n) in ("flows", "prefect") and _top(n) not in allowed}, path


def test_product_code_has_no_fault_hooks():
    """Faults enter from outside (a reporter passed in, a wrapped store or client, a monkeypatch):
    no product module imports the test support or names a fault switch."""
    hooks = {str(p.relative_to(ROOT)) for p in PRODUCT
             if "simsiam.testing" in _imports(p) or any(n.startswith("simsiam.testing") for n in _imports(p))
             or "faults." in p.read_text() or "SIMSIAM_FAIL_AT_STEP" in p.read_text()}
    assert hooks == set()


def test_every_function_fits_on_a_screen():
    long = []
    for path in list(PKG.rglob("*.py")) + list((ROOT / "flows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_no_two_modules_share_a_file_name():
    """A file name says which module it is: `flows/<step>_flow.py` composes `simsiam/steps/<step>.py`."""
    names: dict[str, list[str]] = {}
    for path in [*(ROOT / "simsiam").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]:
        if path.name != "__init__.py":
            names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}
