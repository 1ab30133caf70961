"""Every example runs: the demos and studies end to end on the bundled MNIST subset with tiny
models, the study scripts' usage, the data tools (the bundled subset is rebuilt exactly from the
full MNIST where it is present)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def bundled_data(monkeypatch):
    monkeypatch.delenv("PGTM_DATA_DIR", raising=False)


def annealing_betas(run):
    """The KL weights ``log.csv`` recorded for a run."""
    with open(run / "log.csv") as log:
        return [float(row["beta"]) for row in csv.DictReader(log)]


@pytest.mark.parametrize(
    "script,args",
    [
        ("custom_prior.py", ["--steps", "3"]),
        ("studies/compare_models.py", [
            "perfect-recall", "--models", "vrnn", "introspective", "--steps", "2",
            "--batch-size", "2", "--eval-every", "2", "--eval-sequences", "3",
            "--iwae-particles", "3", "-l", "3", "-k", "2", "--kl-anneal-steps", "4",
            "--parameter-budget", "1860000"]),
        ("studies/sparsity_study.py", ["--variants", "softplus", "softplus-sparse", "--seeds",
                                       "0", "1",
                               "--steps", "4", "--eval-every", "2", "--eval-sequences", "3",
                               "--iwae-particles", "3"]),
        ("studies/memory_forcing_study.py", ["--seeds", "0", "--steps", "2", "--eval-every", "2",
                                     "--eval-sequences", "3", "--iwae-particles", "3",
                                     "--batch-size", "2", "--latent-size", "4",
                                     "--controller-size", "16", "--num-heads", "1",
                                     "--copy-length", "3", "-l", "3", "-k", "2",
                                     "--kl-anneal-steps", "4"]),
    ],
)
def test_examples_run_end_to_end(script, args, tmp_path):
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    produced = {p.name for p in out.rglob("*")}
    assert "results.json" in produced
    if script == "studies/compare_models.py":
        summary = json.loads((out / "summary.json").read_text())
        assert set(summary) == {"vrnn", "introspective"}
        for model in summary.values():  # matched in size
            assert abs(model["parameters"] - 1_860_000) <= 0.02 * 1_860_000
        assert annealing_betas(out / "vrnn") == [0.25]
    if script == "studies/sparsity_study.py":
        summary = json.loads((out / "summary.json").read_text())["variants"]
        assert set(summary) == {"softplus", "softplus-sparse"}
        assert all(row["seeds"] == 2 for row in summary.values())
        assert {"dynamics.png", "summary.md", "read_heads.png"} <= produced
    if script == "studies/memory_forcing_study.py":
        summary = json.loads((out / "summary.json").read_text())["tasks"]
        assert set(summary) == {"copy", "sequential-mnist", "perfect-recall"}
        assert all(set(modes) == {"plain", "memory-forcing"} for modes in summary.values())
        assert 0 <= summary["copy"]["memory-forcing"]["exact_match"][0] <= 1
        assert summary["sequential-mnist"]["plain"]["recall_kl"] == [None, None]
        assert summary["perfect-recall"]["plain"]["iwae"][0] is not None
        assert {"summary.md", "summary.png"} <= produced
        header = (out / "copy" / "memory-forcing" / "seed0" / "log.csv").read_text()
        assert "mf_hidden_accuracy" in header and "mf_memory_accuracy" in header
        assert annealing_betas(out / "copy" / "plain" / "seed0") == [0.25]


def test_every_example_is_covered():
    covered = {"custom_prior.py", "probe_pointer_chain.py", "studies/compare_models.py",
               "studies/sparsity_study.py", "studies/memory_forcing_study.py",
               "studies/bounds_study.py", "studies/dnc_studies.sh",
               "studies/memory_comparison.sh", "studies/paper_experiments.sh",
               "studies/paper_report.py",
               "data/make_mnist_subset.py", "data/make_binarized_mnist_labels.py"}
    present = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.suffix in
               (".py", ".sh")}
    assert present == covered  # probe_pointer_chain and bounds_study: their own test files


@pytest.mark.parametrize("script", ["studies/dnc_studies.sh", "studies/memory_comparison.sh",
                                    "studies/paper_experiments.sh"])
def test_study_scripts_parse_and_state_their_usage(script):
    path = EXAMPLES / script
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    usage = path.read_text().split("\n", 8)[:8]
    assert any(f"bash examples/{script}" in line for line in usage)


def test_paper_experiments_refuses_an_unknown_experiment(tmp_path):
    run = subprocess.run(["bash", str(EXAMPLES / "studies" / "paper_experiments.sh"), "x", "1",
                          "0", "no-such-experiment"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "unknown experiment no-such-experiment" in run.stderr


def test_paper_experiments_passes_a_variants_options_and_keeps_its_runs_apart(tmp_path):
    """A stand-in ``pgtm`` on the PATH records each command the script issues."""
    fake = tmp_path / "bin" / "pgtm"
    fake.parent.mkdir()
    fake.write_text('#!/usr/bin/env bash\necho "$@" >> "$PGTM_CALLS"\n')
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
           "PGTM_CALLS": str(calls)}
    script = str(EXAMPLES / "studies" / "paper_experiments.sh")
    for extra in ([], ["--", "--min-scale", "0.01"]):
        subprocess.run(["bash", script, "data", "10", "1", "parity-l10", "dnc", "vrnn-x", *extra],
                       check=True, env=env, cwd=tmp_path)
    plain_dnc, plain_vrnn, variant_dnc, variant_vrnn = calls.read_text().splitlines()
    assert "--out runs/paper/parity-l10/dnc/seed1" in plain_dnc
    assert "--min-scale" not in plain_dnc + plain_vrnn
    assert "--model vrnn --frame-feedback" in plain_vrnn and "--frame-feedback" in variant_vrnn
    for call, model in ((variant_dnc, "dnc"), (variant_vrnn, "vrnn-x")):
        assert "--min-scale 0.01" in call
        assert f"--out runs/paper-variants/min-scale-0.01/parity-l10/{model}/seed1" in call
    assert all("--threads 1 " in call for call in calls.read_text().splitlines())
    # the thread count is the machine's business, not a variant: the same run folder
    subprocess.run(["bash", script, "data", "10", "1", "parity-l10", "dnc"], check=True,
                   env={**env, "THREADS": "2"}, cwd=tmp_path)
    two_threads = calls.read_text().splitlines()[-1]
    assert "--threads 2 " in two_threads and "--out runs/paper/parity-l10/dnc/seed1" in two_threads


def _fake_paper_run(run, steps, finished, recall_kl=18.5, recall_kl_median=None):
    """A run folder of ``pgtm train``: its log, and if finished its results and a rollback
    (without ``recall_kl_median``, as older code wrote them, when it is ``None``)."""
    run.mkdir(parents=True)
    with open(run / "log.csv", "w", newline="") as log:
        writer = csv.writer(log)
        writer.writerow(["step", "loss", "recall_kl"])
        for step in range(50, steps + 1, 50):
            writer.writerow([step, 1.0, 20 - step / 100 if step % 500 == 0 else ""])
    if finished:
        (run / "results.json").write_text(json.dumps({
            "steps": steps, "recall_kl": recall_kl, "prerecall_kl": 18.6, "kl": [18.0, 18.2],
            "elbo_per_frame": -102.4, "iwae_per_frame": -100.8, "iwae_per_sequence": -1512,
            "iwae_k": 100, "parameters": 1860892,
            **({} if recall_kl_median is None else {"recall_kl_median": recall_kl_median})}))
        (run / "rollbacks.json").write_text(json.dumps({"rollbacks": [{"diverged_at": 7}]}))


def test_paper_report_summarises_finished_and_running_runs(tmp_path):
    """A finished run (results.json, a rollback) and one still training (log.csv only)."""
    runs = tmp_path / "runs"
    for model, steps, finished in (("vrnn", 1000, True), ("lru", 500, False)):
        _fake_paper_run(runs / "perfect-recall-l10" / model / "seed0", steps, finished,
                        recall_kl_median=17.0)
    out = tmp_path / "report"
    completed = subprocess.run([sys.executable, str(EXAMPLES / "studies" / "paper_report.py"),
                                str(runs), "--out", str(out)], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())["perfect-recall-l10"]
    assert summary["vrnn"]["budgets"]["1000"]["recall_kl"] == {"mean": 18.5, "sd": None, "n": 1}
    assert summary["vrnn"]["runs"][0]["rollbacks"] == 1
    assert summary["lru"]["runs"][0] == {"seed": "seed0", "last_eval_step": 500,
                                         "recall_kl_last_eval": 15.0, "rollbacks": 0,
                                         "stopped_at": None, "finished": False, "results": [],
                                         "curve": [[500, 15.0]]}
    table = (out / "summary.md").read_text()
    assert "| vrnn | 1000 | 18.50 (n=1) | 17.00 (n=1) | 18.20 (n=1) |" in table
    assert "seed0 500: 15.00 |" in table and "20.7 / 7.8 ± 1.0" in table
    # the LRU's run stopped by a divergence past its last rollback: the table says so
    lru_run = runs / "perfect-recall-l10" / "lru" / "seed0"
    (lru_run / "rollbacks.json").write_text(json.dumps({"rollbacks": [{"diverged_at": 420}],
                                                        "stopped": {"diverged_at": 530}}))
    completed = subprocess.run([sys.executable, str(EXAMPLES / "studies" / "paper_report.py"),
                                str(runs), "--out", str(out)], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "seed0 500: 15.00 (stopped: diverged at 530) |" in (out / "summary.md").read_text()
    assert (out / "learning_curves.png").stat().st_size > 0
    # the run folders lost, the runs stay in the next report from its summary.json; a new
    # seed's folder joins them
    vrnn = runs / "perfect-recall-l10" / "vrnn"
    (vrnn / "seed0").rename(vrnn / "seed1")
    (runs / "perfect-recall-l10" / "lru" / "seed0" / "log.csv").unlink()
    completed = subprocess.run([sys.executable, str(EXAMPLES / "studies" / "paper_report.py"),
                                str(runs), "--out", str(out)], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    again = json.loads((out / "summary.json").read_text())["perfect-recall-l10"]
    assert [run["seed"] for run in again["vrnn"]["runs"]] == ["seed0", "seed1"]
    kept, new = again["vrnn"]["runs"]
    assert kept["from_summary"] and "from_summary" not in new
    assert again["vrnn"]["budgets"]["1000"]["recall_kl"]["n"] == 2
    assert again["vrnn"]["budgets"]["1000"]["recall_kl_median"]["n"] == 2
    assert again["lru"]["runs"][0]["from_summary"]
    assert "| vrnn | 1000† | 18.50 ± 0.00 (n=2) |" in (out / "summary.md").read_text()


def test_paper_report_keeps_each_budget_of_a_continued_run(tmp_path):
    """A run continued from 1,000 to 2,000 steps counts at 1,000 beside the other seeds, and at
    2,000 alone; while it trains on, it is both finished at 1,000 and unfinished."""
    runs = tmp_path / "runs"
    for seed, recall_kl in (("seed0", 18.0), ("seed1", 19.0)):
        _fake_paper_run(runs / "perfect-recall-l10" / "vrnn" / seed, 1000, True, recall_kl)
    continued = runs / "perfect-recall-l10" / "vrnn" / "seed0"
    first = json.loads((continued / "results.json").read_text())
    (continued / "results_step1000.json").write_text(json.dumps(first))
    with open(continued / "log.csv", "a", newline="") as log:
        csv.writer(log).writerow([1500, 1.0, 12.0])
    out = tmp_path / "report"
    script = str(EXAMPLES / "studies" / "paper_report.py")

    def report():
        completed = subprocess.run([sys.executable, script, str(runs), "--out", str(out)],
                                   capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, completed.stderr[-2000:]
        return json.loads((out / "summary.json").read_text())["perfect-recall-l10"]["vrnn"]

    training = report()
    assert list(training["budgets"]) == ["1000"]
    assert training["budgets"]["1000"]["recall_kl"]["mean"] == 18.5
    assert "seed0 1500: 12.00" in (out / "summary.md").read_text()
    # continued through the compiled objective (the config of the call that ended there)
    (continued / "results.json").write_text(json.dumps({**first, "steps": 2000, "recall_kl": 3,
                                                        "config": {"compile": True}}))
    with open(continued / "log.csv", "a", newline="") as log:
        csv.writer(log).writerow([2000, 1.0, 3.0])
    done = report()
    assert done["budgets"]["1000"]["recall_kl"] == {"mean": 18.5, "sd": 0.7071067811865476,
                                                    "n": 2}
    assert done["budgets"]["2000"]["recall_kl"] == {"mean": 3, "sd": None, "n": 1}
    table = (out / "summary.md").read_text()
    assert "| vrnn | 1000 | 18.50 ± 0.71 (n=2) |" in table
    assert "| vrnn | 2000ᶜ | 3.00 (n=1) | — |" in table  # no median from older code
    assert done["budgets"]["2000"]["compiled"] == 1 and done["budgets"]["1000"]["compiled"] == 0


def test_paper_report_reads_depth_runs_at_every_ten_thousand_steps(tmp_path):
    runs = tmp_path / "runs"
    _fake_paper_run(runs / "perfect-recall-l10" / "lru" / "seed2", 30000, True)  # a depth run
    _fake_paper_run(runs / "perfect-recall-l10" / "vrnn" / "seed0", 10000, True)
    out = tmp_path / "report"
    completed = subprocess.run([sys.executable, str(EXAMPLES / "studies" / "paper_report.py"),
                                str(runs), "--out", str(out)], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    depth = (out / "summary.md").read_text().split("## Depth runs")[1]
    # the fake curve is 20 - step / 100 at every 500 steps
    assert "| perfect-recall-l10 | lru | seed2 | -180.00 | -280.00 | 30,000: 18.50 |" in depth
    assert "| vrnn |" not in depth


def test_paper_report_adds_variants_as_rows_of_their_model(tmp_path):
    runs, variants = tmp_path / "paper", tmp_path / "paper-variants"
    _fake_paper_run(runs / "perfect-recall-l10" / "vrnn" / "seed0", 1000, True)
    for seed, recall_kl in (("seed0", 4.0), ("seed1", 5.0)):
        _fake_paper_run(variants / "min-scale-0.01" / "perfect-recall-l10" / "dnc" / seed, 1000,
                        True, recall_kl)
    out = tmp_path / "report"
    script = str(EXAMPLES / "studies" / "paper_report.py")
    completed = subprocess.run([sys.executable, script, str(runs), "--variants", str(variants),
                                "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())["perfect-recall-l10"]
    assert set(summary) == {"vrnn", "dnc [min-scale-0.01]"}
    assert summary["dnc [min-scale-0.01]"]["budgets"]["1000"]["recall_kl"]["mean"] == 4.5
    table = (out / "summary.md").read_text()
    assert "--variants" in table
    assert "| dnc [min-scale-0.01] | 1000 | 4.50 ± 0.71 (n=2) |" in table
    assert table.index("| vrnn |") < table.index("| dnc [min-scale-0.01] |")
    assert "2.0 / 1.5 ± 1.0 | 4-5e4 |" in table  # the paper's DNC beside its variant
    completed = subprocess.run([sys.executable, script, str(runs), "--variants",
                                str(tmp_path / "none"), "--out", str(out)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and "--variants: expected a folder" in completed.stderr


@pytest.mark.parametrize("tool", ["data/make_mnist_subset.py",
                                  "data/make_binarized_mnist_labels.py"])
def test_data_tools_show_their_usage(tool):
    run = subprocess.run([sys.executable, str(EXAMPLES / tool), "--help"], capture_output=True,
                         text=True)
    assert run.returncode == 0 and "--data-dir" in run.stdout


def test_the_bundled_subset_is_rebuilt_exactly_from_full_mnist(tmp_path):
    full = Path(os.environ.get("PGTM_DATA_DIR") or ROOT.parent / "shared" / "data")
    if not (full / "MNIST" / "raw").is_dir():
        pytest.skip("full MNIST not available")
    out = tmp_path / "subset.npz"
    subprocess.run([sys.executable, str(EXAMPLES / "data" / "make_mnist_subset.py"),
                    "--data-dir", str(full), "--out", str(out)], check=True, capture_output=True)
    bundled = ROOT / "pgtm" / "_data" / "mnist_subset.npz"
    with np.load(out) as new, np.load(bundled) as old:
        assert set(new.files) == set(old.files)
        for key in old.files:
            assert np.array_equal(new[key], old[key]), key
