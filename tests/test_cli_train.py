"""End to end through the command line: train -> evaluate -> sample, exact resume after a
SIGKILL, all on the bundled MNIST subset with tiny models."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pgtm.cli import main
from pgtm.inference.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--latent-size", "4", "--controller-size", "16", "--network", "mlp", "--batch-size", "4",
        "--eval-sequences", "4", "--iwae-particles", "30", "--no-progress"]


@pytest.fixture(autouse=True)
def bundled_data(monkeypatch):
    monkeypatch.delenv("PGTM_DATA_DIR", raising=False)


def train_args(out, steps, *extra):
    return ["train", "perfect-recall", "-l", "4", "-k", "2", "--out", str(out), "--steps",
            str(steps), "--eval-every", "3", "--checkpoint-every", "2", *TINY, *extra]


def test_train_evaluate_sample(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(run, 12, "--learning-rate", "3e-3")) == 0
    results = json.loads((run / "results.json").read_text())
    for key in ("recall_kl", "prerecall_kl", "elbo", "iwae", "iwae_k", "steps", "seconds",
                "parameters"):
        assert key in results
    assert results["steps"] == 12 and results["iwae"] >= results["elbo"]
    assert abs(results["iwae_per_frame"] * 6 - results["iwae"]) < 1e-6 * abs(results["iwae"])
    spec = json.loads((run / "run.json").read_text())
    assert spec["threads"] == {"intra_op": 1, "inter_op": torch.get_num_interop_threads()}
    for picture in ("samples.png", "kl_per_step.png", "read_weights.png", "read_heads.png"):
        assert (run / picture).stat().st_size > 1000
    log = (run / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss") and "recall_kl" in log[0]
    assert "read_entropy" in log[0] and "read_hit_rate" in log[0]
    heads = [json.loads(line) for line in (run / "read_heads.jsonl").read_text().splitlines()]
    assert [r["step"] for r in heads] == [3, 6, 9, 12]
    assert all(0 <= r["best_hit_rate"] <= 1 and len(r["entropy"]) == 5 for r in heads)
    losses = [float(row.split(",")[1]) for row in log[1:]]
    assert losses[-1] < losses[0]  # short training lowers the loss

    capsys.readouterr()
    written = (run / "results.json").stat().st_mtime_ns
    assert main(train_args(run, 12, "--learning-rate", "3e-3")) == 0  # finished: says so
    assert f"{run} is complete at step 12" in capsys.readouterr().err
    assert (run / "results.json").stat().st_mtime_ns == written
    assert main(["evaluate", str(run), "--particles", "20", "--sequences", "3", "--chunk-size",
                 "8", "--outliers", "1"]) == 0
    evaluation = json.loads((run / "evaluation_k20.json").read_text())
    assert len(evaluation["kl"]) == 6 and len(evaluation["iwae"]) == 3
    worst = min(range(3), key=lambda b: evaluation["elbo"][b])
    shown = capsys.readouterr().out
    assert f"sequence {worst}: ELBO {evaluation['elbo'][worst]:.6g}" in shown
    assert shown.count("  step ") == 3 and "prior sd away" in shown
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png"), "--observe", "4"]) == 0
    assert (tmp_path / "s.png").stat().st_size > 500
    assert (tmp_path / "s_read_weights.png").exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "perfect-recall", "-l", "3", "-k", "5", "--out", "X"], "--recall-length"),
        (["train", "perfect-recall", "--model", "vrnn", "--sparsity", "0.1", "--out", "X"],
         "--sparsity does not apply to --model vrnn (its memory options: none)"),
        (["evaluate", "no-such-run"], "RUN_DIR must be a folder written by 'pgtm train'"),
        (["train", "perfect-recall", "--threads", "0", "--out", "X"],
         "argument --threads: expected an integer >= 1, got '0'"),
        (["evaluate", "no-such-run", "--threads", "-1"],
         "argument --threads: expected an integer >= 1"),
        (["train", "perfect-recall", "--parameter-budget", "0", "--out", "X"],
         "argument --parameter-budget: expected an integer >= 1, got '0'"),
        (["train", "perfect-recall", "--parameter-budget", "900000", "--controller-size", "64",
          "--out", "X"], "give it or --controller-size, not both"),
        (["train", "perfect-recall", "--parameter-budget", "1000", "--network", "mlp", "--out",
          "X"], "--parameter-budget must be >= "),
    ],
)
def test_bad_input_gives_one_line_error(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pgtm") and ": error: " in err and message in err


def test_unknown_model_is_a_usage_error(capsys):
    assert main(["train", "perfect-recall", "--model", "hopfield", "--out", "X"]) == 2
    assert "invalid choice: 'hopfield'" in capsys.readouterr().err


def test_parameter_budget_is_recorded_and_the_run_reopens(tmp_path, capsys):
    """run.json keeps the controller size the budget chose: evaluate, sample and a resumed
    train rebuild that very model."""
    run, budget = tmp_path / "run", 600_000
    tiny = [a for a in TINY if a not in ("--controller-size", "16")]
    argv = ["train", "perfect-recall", "-l", "4", "-k", "2", "--out", str(run),
            "--eval-every", "2", "--checkpoint-every", "2", "--parameter-budget", str(budget),
            *tiny]
    assert main([*argv, "--steps", "2"]) == 0
    spec = json.loads((run / "run.json").read_text())
    width = spec["model_options"]["controller_size"]
    assert spec["parameter_budget"] == budget and "parameter_budget" not in spec["model_options"]
    results = json.loads((run / "results.json").read_text())
    assert abs(results["parameters"] - budget) <= 0.02 * budget and width != 16
    assert results["parameter_budget"] == budget
    assert _parameters(run)["controller.cell.weight_hh"].shape == (4 * width, width)
    (run / "results_step2.json").unlink()  # as a run of a version without these files
    assert main([*argv, "--steps", "4"]) == 0  # resumes from the step-2 checkpoint
    assert json.loads((run / "results.json").read_text())["steps"] == 4
    # each budget's final evaluation is kept: the continued run still has its step-2 results
    kept = {path.name: json.loads(path.read_text()) for path in run.glob("results_step*.json")}
    assert sorted(kept) == ["results_step2.json", "results_step4.json"]
    assert kept["results_step2.json"]["steps"] == 2
    assert kept["results_step4.json"] == json.loads((run / "results.json").read_text())
    assert main(["evaluate", str(run), "--particles", "2", "--sequences", "2"]) == 0
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png"), "--num", "2"]) == 0
    capsys.readouterr()


def _parameters(run):
    return load_checkpoint(Path(run) / "checkpoint.pt")["module"]


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    """Kill a training process after its first checkpoints, resume it, and compare with a run
    that was never interrupted: the parameters must be bit-identical."""
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "pgtm.cli", *train_args(killed, 10_000)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )
    checkpoint = killed / "checkpoint.pt"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if checkpoint.exists() and load_checkpoint(checkpoint)["step"] >= 4:
                break
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    step = load_checkpoint(checkpoint)["step"]
    assert 4 <= step < 10_000
    target = step + 3
    assert main(train_args(killed, target)) == 0
    fresh = tmp_path / "fresh"
    assert main(train_args(fresh, target)) == 0
    resumed, uninterrupted = _parameters(killed), _parameters(fresh)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name
    rows = (killed / "log.csv").read_text().splitlines()[1:]
    steps = [int(row.split(",")[0]) for row in rows]
    assert steps == sorted(set(steps)) and steps[-1] == target  # no duplicate rows


@pytest.mark.parametrize("model", ["introspective", "ntm", "lru", "dnc"])
def test_num_heads_reaches_every_memory_with_heads(model):
    from pgtm.cli import build_parser
    from pgtm.commands import model_options_from_args
    from pgtm.models import build_gtm

    args = build_parser().parse_args(
        ["train", "perfect-recall", "--model", model, "--num-heads", "2", "--out", "unused"])
    gtm = build_gtm(model, frame_shape=(1, 1, 8), sequence_length=4,
                    **model_options_from_args(args))
    assert gtm.memory.num_heads == 2


def test_memory_and_task_options_reach_the_model_and_the_task(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "perfect-recall", "--task-option", "prerecall_length=4", "-k", "2",
            "--model", "dnc", "--memory-option", "word_size=12", "--memory-option",
            "num_write_heads=2", "--out", str(run), "--steps", "2", "--eval-every", "2",
            "--checkpoint-every", "2", *TINY]
    assert main(argv) == 0
    spec = json.loads((run / "run.json").read_text())
    assert spec["model_options"]["word_size"] == 12
    assert spec["model_options"]["num_write_heads"] == 2
    assert spec["task"]["options"]["prerecall_length"] == 4
    assert main(["evaluate", str(run), "--particles", "2", "--sequences", "2"]) == 0
    capsys.readouterr()
