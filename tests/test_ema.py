"""The exponential-moving-average memory: its contract and its equations."""

import json

import memory_contract as contract  # tests/ is on sys.path under pytest
import pytest
import torch

from pgtm.cli import main
from pgtm.memories.ema import EMAMemory


class TestEMAContract(contract.MemoryContract):
    name = "ema"
    options = {"decay": 0.8}
    state_shapes = {"average": (contract.Z,)}
    read_size = contract.Z
    checks_sizes = True


def test_the_average_follows_the_recursion_and_the_read_is_gated():
    torch.manual_seed(0)
    memory = EMAMemory(latent_size=2, controller_size=3, decay=0.75)
    with torch.no_grad():
        memory.gate.weight.zero_()
        memory.gate.bias.fill_(100.0)  # gate open: the read is the average
    state = memory.initial_state((1,))
    expected = torch.zeros(1, 2)
    for z in torch.randn(4, 1, 2):
        out = memory(state, torch.randn(1, 3), z)
        expected = 0.75 * expected + 0.25 * z
        torch.testing.assert_close(out.state.average, expected)
        torch.testing.assert_close(out.read, expected)
        state = out.state
    with torch.no_grad():
        memory.gate.bias.fill_(-100.0)  # gate shut
    assert memory(state, torch.randn(1, 3), torch.randn(1, 2)).read.abs().max() < 1e-30


@pytest.mark.parametrize("decay", [0, 1, 1.5, True, "0.5"])
def test_a_decay_outside_the_open_unit_interval_is_rejected_by_name(decay):
    with pytest.raises(ValueError, match="decay must be a number in \\(0, 1\\)"):
        EMAMemory(2, 3, decay=decay)


def test_it_trains_from_the_command_line_with_no_other_edit(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PGTM_DATA_DIR", raising=False)
    run = tmp_path / "run"
    assert main(["train", "perfect-recall", "-l", "4", "-k", "2", "--model", "ema",
                 "--memory-option", "decay=0.7", "--out", str(run), "--steps", "2",
                 "--eval-every", "2", "--checkpoint-every", "2", "--latent-size", "4",
                 "--controller-size", "16", "--network", "mlp", "--batch-size", "4",
                 "--eval-sequences", "4", "--iwae-particles", "5", "--no-progress"]) == 0
    assert json.loads((run / "run.json").read_text())["model_options"]["decay"] == 0.7
    assert json.loads((run / "results.json").read_text())["steps"] == 2
    capsys.readouterr()
