"""Where a command's CPU goes: run it, sample /proc every --every seconds, and print JSON with the
CPU-seconds of its process tree by kind (Ray actors by class, MLflow/Prefect/SeaweedFS servers,
CLI subprocesses, pytest workers). The suite is CPU-bound on 2 cores: this says what to cut.

    python bench/cpu_by_process.py -- bash scripts/test.sh

A process is counted with its last CPU time seen, so one that lives under --every seconds may be
missed. Ray workers are re-parented to their raylet, so every `ray::` process is counted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter

KINDS = [("raylet", "ray system"), ("gcs_server", "ray system"), ("dashboard", "ray system"),
         ("log_monitor", "ray system"), ("runtime_env", "ray system"), ("weed", "seaweedfs"),
         ("mlflow server", "mlflow server"), ("uvicorn_log_config", "mlflow server"),
         ("prefect server", "prefect server"), ("prefect worker", "prefect worker"), ("postgres", "postgres"),
         ("chrom", "chromium"), ("exec(eval(sys.stdin", "pytest-xdist worker (in-process tests)"),
         ("simsiam.cli", "simsiam CLI subprocess"), ("bench/", "bench subprocess")]


def kind(cmd: str) -> str:
    if cmd.startswith("ray::"):
        return "ray actor " + re.sub(r"[.(].*", "", cmd.split()[0])
    return next((name for key, name in KINDS if key in cmd), "other: " + cmd[:50])


def snapshot(seen: dict) -> None:
    """pid -> [command, CPU-s, parent pid], keeping a command once its process turns zombie."""
    hz = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ").strip()
        except OSError:
            continue
        key = f"{pid}-{stat[19]}"  # pid + start time: pids are reused
        old = seen.get(key)
        seen[key] = [cmd or (old[0] if old else ""), (int(stat[11]) + int(stat[12])) / hz, stat[1]]


def tree_totals(seen: dict, root: int) -> Counter:
    parent = {k.split("-")[0]: v[2] for k, v in seen.items()}
    inside = {str(root)}
    for _ in range(64):  # grow the tree until stable
        inside |= {pid for pid, ppid in parent.items() if ppid in inside}
    totals: Counter = Counter()
    for key, (cmd, cpu, _) in seen.items():
        if key.split("-")[0] in inside or cmd.startswith("ray::"):
            totals[kind(cmd)] += cpu
    return totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to measure after --")
    seen: dict = {}
    t0, proc = time.time(), subprocess.Popen(command)
    while proc.poll() is None:
        snapshot(seen)
        time.sleep(args.every)
    totals = tree_totals(seen, proc.pid)
    print(json.dumps({"command": command, "exit_status": proc.returncode, "wall_s": round(time.time() - t0, 1),
                      "cpu_s": round(sum(totals.values()), 1),
                      "cpu_s_by_kind": {k: round(v, 1) for k, v in totals.most_common()}}, indent=2))
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
