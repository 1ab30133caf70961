"""``examples/probe_pointer_chain.py``: the probe's classifier, and the script end to end on a
tiny DNC run (bundled MNIST subset)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pgtm.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "probe_pointer_chain.py"


def load_script():
    spec = importlib.util.spec_from_file_location("probe_pointer_chain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_tiny_run(run, task, model, *task_shape):
    """Two SVI steps of a tiny model; returns the run folder."""
    main(["train", task, *task_shape, "--model", model, "--steps", "2", "--batch-size", "2",
          "--eval-every", "2", "--eval-sequences", "3", "--iwae-particles", "2", "--latent-size",
          "4", "--controller-size", "16", "--network", "mlp", "--no-progress", "--out", str(run)])
    return run


@pytest.fixture(autouse=True)
def bundled_data(monkeypatch):
    monkeypatch.delenv("PGTM_DATA_DIR", raising=False)


def test_probe_reads_a_linear_code_and_not_noise():
    probe_accuracy = load_script().probe_accuracy
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(10, (2000,), generator=generator)
    groups = torch.arange(2000) // 5
    codes = torch.randn(10, 16, generator=generator)
    noisy_codes = codes[targets] + 0.1 * torch.randn(2000, 16, generator=generator)
    assert probe_accuracy(noisy_codes, targets, groups, classes=10)["test"] > 0.99
    noise = torch.randn(2000, 16, generator=generator)
    assert probe_accuracy(noise, targets, groups, classes=10)["test"] < 0.2


def test_script_probes_a_trained_dnc_run(tmp_path):
    run = train_tiny_run(tmp_path / "run", "dynamic-dependency", "dnc", "-l", "10", "-k", "2")
    completed = subprocess.run([sys.executable, str(SCRIPT), str(run), "--sequences", "40"],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads((run / "probes.json").read_text())
    for name in ("label", "target_position", "slot_position"):
        assert 0 <= results[name]["test"] <= 1 and 0 <= results[name]["train"] <= 1
    assert 1 <= results["writes"]["distinct_slots"] <= 10
    assert 0 <= results["writes"]["total_weight"] <= 1


def test_script_rejects_a_run_of_another_task(tmp_path):
    run = train_tiny_run(tmp_path / "run", "perfect-recall", "vrnn", "-l", "3", "-k", "2")
    completed = subprocess.run([sys.executable, str(SCRIPT), str(run)],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert "run must be a dynamic-dependency run, got a perfect-recall run" in completed.stderr
