"""scripts/setup.sh, the install step of both README commands, on what it checks before pip runs."""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_refuses_a_disk_too_full_for_the_venv_before_pip_starts(tmp_path):
    """A full disk is named up front, not as pip's ENOSPC half-way through the torch install."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    env = {**os.environ, "SIMSIAM_SETUP_NEED_GB": "1000000"}
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"{tmp_path} has" in proc.stderr and "GB free" in proc.stderr and "1000000 GB" in proc.stderr
    assert not (tmp_path / ".venv").exists()
