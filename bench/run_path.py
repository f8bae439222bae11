"""How long the path through the code of one `simsiam run` is, from the command to the registered
version: the functions of the orchestration layers (`simsiam/cli.py`, `flows/`, `simsiam/steps/`)
it calls, and the modules of `simsiam/` and `flows/` outside the ML core that it passes through
(adapters included). Runs a tiny `simsiam run` in this process, on fresh embedded services, with a
profile hook; prints JSON.

    python bench/run_path.py                      # this checkout
    python bench/run_path.py --root /tmp/old      # another checkout (e.g. `git worktree add /tmp/old <commit>`)

The count is of distinct functions, not of calls (a step called 100 times counts once), and leaves out
module imports, lambdas and comprehensions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
# ML core modules (models, losses, the loop, ...) are not part of the path a run takes to its services
CORE = {"augment", "batch_augment", "batches", "checkpoint", "config", "data", "diagnostics", "engine", "evaluation",
        "losses", "models", "optim", "reporters", "runtime", "streaming", "targets", "image_input", "errors", "redact",
        "metrics", "results", "library_env"}
ORCHESTRATION = ("simsiam/cli.py", "flows/", "simsiam/steps/")
TINY = ["model.width=4", "model.head_conv=null", "model.dim=32", "model.pred_dim=8", "train.device=cpu",
        "train.amp=none", "train.channels_last=false", "data.download=false", "eval.knn_every_epochs=0",
        "train.batch_size=64", "train.epochs=1", "eval.probe_epochs=5", "tracking.system_metrics=false"]


def _use_root(root: Path) -> None:
    """Import `simsiam` and `flows` from `root`, not from the checkout this venv has installed."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, str(root))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=HERE, help="the checkout to measure")
    args = ap.parse_args()
    root = args.root.resolve()
    _use_root(root)
    tmp = Path(tempfile.mkdtemp(prefix="simsiam-run-path-"))
    os.environ.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    for key in [k for k in os.environ if k.startswith(("PREFECT_API", "MLFLOW_", "SIMSIAM_S3"))]:
        os.environ.pop(key)
    from typer.testing import CliRunner

    import simsiam.cli
    from simsiam.services import stop_mlflow, stop_s3

    seen: set[tuple[str, str]] = set()

    def hook(frame, event, arg):
        if event == "call":
            path = frame.f_code.co_filename
            name = frame.f_code.co_qualname
            if path.startswith(str(root)) and not name.split(".")[-1].startswith("<"):  # not imports, lambdas
                seen.add((os.path.relpath(path, root), name))

    state = tmp / "state"
    sets = [a for s in TINY for a in ("--set", s)]
    threading.setprofile(hook)
    sys.setprofile(hook)
    try:
        result = CliRunner().invoke(simsiam.cli.app, ["run", "--subset", "512", "--state", str(state), *sets])
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        stop_mlflow(state)
        stop_s3(state)
    if result.exit_code != 0:
        raise SystemExit(f"simsiam run failed: {result.output[-2000:]}")
    steps = sorted(f"{p}:{name}" for p, name in seen if p.startswith(ORCHESTRATION))
    modules = sorted({p for p, _ in seen if p.startswith(("simsiam/", "flows/"))
                      and Path(p).stem not in CORE and Path(p).name != "__init__.py"})
    print(json.dumps({"bench": "run_path", "root": str(root), "orchestration_functions": len(steps),
                      "modules_outside_core": len(modules), "functions": steps, "modules": modules}, indent=1))


if __name__ == "__main__":
    main()
