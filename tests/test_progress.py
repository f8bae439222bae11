"""Training progress off a terminal (a log file, CI, a Prefect worker): a plain line at least every
30 s and at the end, with step, img/s, loss, collapse ratio and ETA; nothing with --no-progress."""

import subprocess
import sys

from conftest import tiny_config, tiny_sets
from simsiam.reporters import ProgressReporter

METRICS = {"train/loss": -0.5, "train/z_std_ratio": 0.7}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_off_a_terminal_a_line_every_30_s_with_rate_and_eta_and_one_at_the_end(capsys):
    clock = Clock()
    rep = ProgressReporter(tty=False, every_s=30.0, clock=clock)
    rep.on_start(tiny_config("train.batch_size=16"), {"total_steps": 100, "start_step": 0})
    for step in range(1, 101):
        clock.now = step * 1.0  # one step per second: 16 img/s, 100 s in all
        rep.on_step(step, METRICS)
    rep.on_end(None)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": step ")[1].split("/")[0] for line in lines] == ["30", "60", "90", "100"]
    assert lines[0] == "pretrain cpu-demo: step 30/100 (30%), 16 img/s, loss -0.50, z_ratio 0.70, ETA 1m10s"
    assert lines[-1].endswith("ETA 0s")


def test_on_a_terminal_no_plain_lines_and_disabled_prints_nothing(capsys):
    clock = Clock()
    for rep in (ProgressReporter(enabled=False, tty=False, clock=clock), ProgressReporter(tty=True, clock=clock)):
        rep.on_start(tiny_config(), {"total_steps": 10, "start_step": 0})
        for step in range(1, 11):
            clock.now += 31
            rep.on_step(step, METRICS)
        rep.on_end(None)
    assert ": step " not in capsys.readouterr().err  # the terminal gets tqdm's bar, not lines


def test_simsiam_pretrain_with_stderr_in_a_file_logs_progress_lines(tmp_path):
    r = subprocess.run([sys.executable, "-m", "simsiam.cli", "pretrain", "--preset", "cpu-demo", "--out",
                        str(tmp_path / "run"), *tiny_sets()], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pretrain cpu-demo: step 8/8 (100%)" in r.stderr and "img/s" in r.stderr and "ETA 0s" in r.stderr
