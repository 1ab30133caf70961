"""The read-head statistics recorded over training (the sparsity dynamics)."""

import json
import math

import pytest
import torch

from pgtm.inference.read_heads import ReadHeadLog, read_head_statistics
from pgtm.memories.base import Memory
from pgtm.memories.introspective import IntrospectiveMemory
from pgtm.plotting import plot_read_head_dynamics


def fifo(num_slots):
    """The latent slots of an Introspective memory of ``num_slots`` (a FIFO of latents)."""
    return IntrospectiveMemory(latent_size=1, controller_size=1, num_slots=num_slots).latent_slots


def written_slots(write_weights):
    """The latent slots of a memory that records ``write_weights [B, T, H, N]``."""
    def latent_slots(steps, times):
        return Memory().latent_slots(steps, times, write_weights)
    return latent_slots


def one_hot_reads(addresses, num_slots, num_heads=2, hit_head=0):
    """Weights ``[B, T, R, N]``: head ``hit_head`` one-hot on the slot holding the recalled
    latent, the other heads uniform."""
    b, t = addresses.shape
    weights = torch.full((b, t, num_heads, num_slots), 1.0 / num_slots)
    for i in range(b):
        for s in range(t):
            if addresses[i, s] >= 0:
                slot = fifo(num_slots)(addresses[i, s], torch.tensor(s))
                weights[i, s, hit_head] = 0
                weights[i, s, hit_head, slot] = 1
    return weights


def test_fifo_slot_matches_the_introspective_buffer():
    torch.manual_seed(0)
    memory = IntrospectiveMemory(latent_size=1, controller_size=1, num_slots=6)
    state = memory.initial_state((1,))
    for t in range(5):  # at step t the memory receives z_{t-1} = t - 1 (z_{-1} = 0 placeholder)
        out = memory(state, torch.zeros(1, 1), torch.full((1, 1), float(t - 1)))
        state = out.state
        for step in range(t):
            slot = int(memory.latent_slots(torch.tensor(step), torch.tensor(t)))
            assert state.buffer[0, slot, 0] == step


def test_one_hot_reads_of_the_recalled_step_are_hits_with_zero_entropy():
    addresses = torch.tensor([[-1, -1, -1, 0, 1, 2], [-1, -1, -1, 2, 0, 1]])
    recall = addresses[0] >= 0
    weights = one_hot_reads(addresses, num_slots=6)
    gates = torch.tensor([0.9, 0.2]).expand(2, 6, 2)
    stats = read_head_statistics(weights, gates, recall, addresses, fifo(6))
    assert stats["entropy"][0] == pytest.approx(0, abs=1e-6)
    assert stats["entropy"][1] == pytest.approx(math.log(6))
    assert stats["max_weight"] == pytest.approx([1.0, 1 / 6])
    assert stats["mass"] == pytest.approx([1.0, 1.0])
    assert stats["gate"] == pytest.approx([0.9, 0.2])
    assert stats["hit_rate"][0] == 1.0 and stats["best_hit_rate"] == 1.0
    assert len(stats["attended_slot"]) == 2 and len(stats["attended_slot"][0]) == 3
    assert sum(stats["slot_profile"][0]) == pytest.approx(1.0)


def test_misplaced_reads_are_misses():
    addresses = torch.tensor([[-1, -1, 0, 1]])
    weights = one_hot_reads(addresses, num_slots=4).roll(1, dims=-1)
    stats = read_head_statistics(weights, None, addresses[0] >= 0, addresses, fifo(4))
    assert stats["hit_rate"][0] == 0.0 and stats["best_hit_rate"] == 0.0


def slot_memory_reads(addresses, num_slots, hit=True):
    """``(read weights [B, T, 1, N], write weights [B, T, 1, N])`` of a slot memory that writes
    step ``t`` (holding :math:`z_{t-1}`) to slot ``(3 t) mod N``; a recall step reads the slot
    of the latent it repeats (``hit``) or the next one."""
    b, t = addresses.shape
    written = (3 * torch.arange(t)) % num_slots
    writes = torch.nn.functional.one_hot(written, num_slots).float().expand(b, t, num_slots)
    reads = torch.full((b, t, num_slots), 1.0 / num_slots)
    for i in range(b):
        for s in range(t):
            if addresses[i, s] >= 0:
                slot = int(written[addresses[i, s] + 1]) + (0 if hit else 1)
                reads[i, s] = torch.nn.functional.one_hot(torch.tensor(slot % num_slots),
                                                          num_slots)
    return reads.unsqueeze(2), writes.unsqueeze(2)


@pytest.mark.parametrize("hit", [True, False])
def test_reads_of_the_slot_a_slot_memory_wrote_are_hits(hit):
    addresses = torch.tensor([[-1, -1, -1, -1, 2, 0], [-1, -1, -1, -1, 1, 3]])
    reads, writes = slot_memory_reads(addresses, num_slots=7, hit=hit)
    stats = read_head_statistics(reads, None, addresses[0] >= 0, addresses, written_slots(writes))
    assert stats["hit_rate"] == [float(hit)] and stats["best_hit_rate"] == float(hit)
    # the FIFO reading of the same weights is wrong for a slot memory
    fifo_stats = read_head_statistics(reads, None, addresses[0] >= 0, addresses, fifo(7))
    assert fifo_stats["hit_rate"] != [1.0]


def test_recall_steps_that_repeat_no_step_are_not_counted():
    addresses = torch.tensor([[-1, -1, 0, -1]])  # the last recall step repeats nothing
    weights = one_hot_reads(addresses, num_slots=4)
    recall = torch.tensor([False, False, True, True])
    assert read_head_statistics(weights, None, recall, addresses, fifo(4))["hit_rate"][0] == 1.0
    none = torch.full_like(addresses, -1)
    assert "hit_rate" not in read_head_statistics(weights, None, recall, none, fifo(4))


def test_write_weights_or_slots_of_the_wrong_shape_raise():
    addresses = torch.tensor([[-1, 0]])
    with pytest.raises(ValueError, match=r"write_weights must have shape \[1, T, H, N\]"):
        read_head_statistics(torch.ones(1, 2, 1, 4), None, addresses[0] >= 0, addresses,
                             written_slots(torch.ones(2, 2, 1, 4)))
    with pytest.raises(ValueError, match=r"latent_slots must return the slots \[B, S\] = \[1, 1\]"):
        read_head_statistics(torch.ones(1, 2, 1, 4), None, addresses[0] >= 0, addresses,
                             lambda steps, times: steps[0])


def test_unnormalised_weights_report_their_mass():
    weights = torch.full((1, 2, 1, 4), 0.5)
    stats = read_head_statistics(weights, None, torch.tensor([False, False]))
    assert stats["mass"] == pytest.approx([2.0])
    assert stats["entropy"] == pytest.approx([math.log(4)])


@pytest.mark.parametrize("weights,recall,message", [
    (torch.ones(2, 3, 4), torch.ones(3, dtype=torch.bool), "weights must have shape"),
    (torch.ones(2, 3, 1, 4), torch.ones(2, dtype=torch.bool), "recall must have shape"),
])
def test_bad_shapes_raise(weights, recall, message):
    with pytest.raises(ValueError, match=message):
        read_head_statistics(weights, None, recall)


def test_log_drops_records_of_repeated_steps_and_plots(tmp_path):
    log = ReadHeadLog(tmp_path)
    addresses = torch.tensor([[-1, -1, 0, 1]])
    stats = read_head_statistics(one_hot_reads(addresses, 4), None, addresses[0] >= 0, addresses,
                                 fifo(4))
    for step in (10, 20, 30):
        log.write(step, stats)
    log.write(20, stats)  # a resumed run repeats step 20: step 30's record goes
    assert [r["step"] for r in log.read()] == [10, 20]
    json.loads(log.path.read_text().splitlines()[0])
    path = plot_read_head_dynamics(tmp_path / "heads.png", log.read(), title="t")
    assert (tmp_path / "heads.png").stat().st_size > 1000 and path.endswith("heads.png")
