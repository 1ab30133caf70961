"""Run lifecycle: SIGINT/SIGTERM checkpoint and resume exactly, a second signal exits at once,
one writer per run folder."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_cli_train import _parameters, train_args

from pgtm.cli import main
from pgtm.inference.checkpoint import load_checkpoint
from pgtm.inference.lifecycle import RunLock


@pytest.fixture(autouse=True)
def bundled_data(monkeypatch):
    monkeypatch.delenv("PGTM_DATA_DIR", raising=False)


def start_training(out, cwd):
    return subprocess.Popen([sys.executable, "-m", "pgtm", *train_args(out, 10_000)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd)


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_the_step_and_the_rerun_resumes_exactly(sig, status, tmp_path):
    stopped = tmp_path / "stopped"
    process = start_training(stopped, tmp_path)
    checkpoint, deadline = stopped / "checkpoint.pt", time.time() + 120
    try:
        while time.time() < deadline and not (
                checkpoint.exists() and load_checkpoint(checkpoint)["step"] >= 2):
            time.sleep(0.1)
        process.send_signal(sig)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == status
    step = load_checkpoint(checkpoint)["step"]
    lines = err.strip().splitlines()
    assert lines[-1] == (f"pgtm: interrupted by {signal.Signals(sig).name} at step {step}; "
                         f"checkpoint written to {checkpoint}; rerun the same command to resume")
    assert "Traceback" not in err
    assert not list(stopped.glob(".*.tmp"))  # no temp file left behind by the write
    target = step + 3
    assert main(train_args(stopped, target)) == 0
    fresh = tmp_path / "fresh"
    assert main(train_args(fresh, target)) == 0
    resumed, uninterrupted = _parameters(stopped), _parameters(fresh)
    for name in uninterrupted:
        assert torch.equal(resumed[name], uninterrupted[name]), name


def test_a_second_signal_exits_at_once(tmp_path):
    script = (
        "import os, signal\n"
        "from pgtm.inference.lifecycle import StopOnSignal\n"
        "with StopOnSignal() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    print('first', stop.signal_number, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    print('not reached', flush=True)\n"
    )
    # run outside the checkout, whose pgtm/ folder would shadow the installed package
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.stdout.split() == ["first", str(int(signal.SIGTERM))]
    assert done.returncode == 128 + signal.SIGINT


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(out), RunLock(out):  # re-entrant in the holding process
        done = subprocess.run([sys.executable, "-m", "pgtm", *train_args(out, 2)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"pgtm: error: out_dir {out.resolve()} is in use by process {os.getpid()} (another pgtm "
        "train); wait for it to finish or choose another --out")
    assert not (out / "checkpoint.pt").exists()
    assert main(train_args(out, 2)) == 0  # released


def test_taking_the_lock_removes_the_temp_files_of_dead_writers(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead = int(finished.stdout)
    hexes = ("0" * 32, "f" * 32)
    stale = tmp_path / f".checkpoint.pt.{dead}.{hexes[0]}.tmp"
    live = tmp_path / f".results.json.{os.getpid()}.{hexes[1]}.tmp"
    other = tmp_path / ".notes.tmp"  # not one of ours
    for path in (stale, live, other):
        path.write_text("partial")
    with RunLock(tmp_path):
        pass
    assert not stale.exists() and live.exists() and other.exists()


def test_divergence_is_one_line_naming_the_last_good_checkpoint(tmp_path, capsys):
    args = train_args(tmp_path / "run", 50, "--learning-rate", "1e9", "--clip-norm", "1e9")
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pgtm: error: training diverged at step ") and "checkpoint" in err
