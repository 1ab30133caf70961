"""The thread benchmark (benchmarks/threads.py) times the steady state of a run's log."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import threads  # noqa: E402


def test_a_step_is_timed_from_the_first_log_row_to_the_last(tmp_path):
    # the first row holds start-up and compilation: 40 s for 50 steps, then 0.1 s a step
    (tmp_path / "log.csv").write_text(
        "step,loss,loss_per_frame,beta,seconds\n50,1,1,1,40.0\n100,1,1,1,45.0\n150,1,1,1,50.0\n")
    assert threads.steady_ms_per_step(tmp_path) == pytest.approx(100.0)


def test_too_few_steps_for_a_steady_state_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        threads.main(["--steps", "8", "--out", str(tmp_path)])
    assert "--steps: expected at least 16, got 8" in capsys.readouterr().err
