"""Memory Forcing (``pgtm.inference.memory_forcing``), its integration with the training loop,
the ``pgtm train --memory-forcing`` flags and the copy task's exact-match rate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyro
import pytest
import torch
from torch import nn

import pgtm.inference.memory_forcing as mf
from pgtm.cli import main
from pgtm.inference.checkpoint import CHECKPOINT_NAME, load_checkpoint
from pgtm.inference.copy_metrics import exact_match
from pgtm.inference.memory_forcing import (
    DeepSets,
    MemoryForcing,
    MemorySummary,
    SequenceDiscriminator,
    discriminator_accuracy,
    gate,
    gram_spectrum,
    rollout,
)
from pgtm.inference.train import RegulariserLoss, TrainConfig, TrainingDiverged, train
from pgtm.models import build_gtm
from pgtm.models.gtm import Generated
from pgtm.tasks import CopyTask, make_task

DATA = Path(__file__).parent / "data"

TINY = dict(latent_size=3, controller_size=8, feature_size=8, network="mlp")


@pytest.fixture(autouse=True)
def _clean_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def tiny_copy():
    return CopyTask(prerecall_length=3, width=4)  # T = 7, frames [1, 1, 5]


def tiny_gtm(memory="dnc", task=None, seed=0, **options):
    task = task or tiny_copy()
    torch.manual_seed(seed)
    if memory in ("dnc", "ntm", "lru"):
        options = {"num_slots": 6, "word_size": 4, "num_heads": 2, **options}
    return build_gtm(memory, frame_shape=task.frame_shape, sequence_length=task.length,
                     likelihood="bernoulli", **TINY, **options)


def batch(task=None, size=4, seed=0):
    return (task or tiny_copy()).sample(size, "train", torch.Generator().manual_seed(seed))


def snapshot(parameters):
    return [p.detach().clone() for p in parameters]


# ----------------------------------------------------------------------------------------------
# memory matrices and rollouts


def test_the_rollout_of_a_memory_without_a_matrix_has_no_memory():
    assert rollout(tiny_gtm("vrnn"), batch().x, teacher_forced=False).memory is None


def test_rollout_shapes_modes_and_gradients():
    task, gtm = tiny_copy(), tiny_gtm()
    b = batch(task)
    torch.manual_seed(1)
    free = rollout(gtm, b.x, b.c, b.mask, teacher_forced=False)
    assert free.hidden.shape == (4, task.length, 8)
    assert free.memory.shape == (4, task.length, 6, 4)
    assert free.latents.shape == (4, task.length, 3) and free.mask.all()
    # differentiable: the free run reaches the prior and the memory, not the encoder/posterior
    (free.hidden.sum() + free.memory.sum()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gtm.prior.parameters())
    assert all(p.grad is None for p in gtm.encoder.parameters())
    gtm.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    teacher = rollout(gtm, b.x, b.c, b.mask, teacher_forced=True)
    teacher.hidden.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gtm.encoder.parameters())
    # the first hidden state sees no latent yet; later ones differ between the regimes
    assert torch.equal(teacher.hidden[:, 0], free.hidden[:, 0].detach())
    assert not torch.allclose(teacher.hidden[:, -1], free.hidden[:, -1].detach())


# ----------------------------------------------------------------------------------------------
# slot-order-invariant summaries


@pytest.mark.parametrize("slots, width", [(6, 4), (4, 6), (5, 5)])
def test_summary_is_invariant_to_slot_order(slots, width):
    torch.manual_seed(0)
    memory = torch.randn(3, 2, slots, width)  # [B, T, N, W]
    permuted = memory[..., torch.randperm(slots), :]
    assert not torch.equal(permuted, memory)
    # a discriminator reading the raw matrix would see a different input ...
    assert not torch.allclose(permuted.flatten(-2), memory.flatten(-2))
    # ... the summaries do not change
    assert torch.allclose(gram_spectrum(permuted), gram_spectrum(memory), atol=1e-5)
    summary = MemorySummary(slots, width, "both", deepsets_size=5)
    assert summary.output_size == min(slots, width) + 5
    assert torch.allclose(summary(permuted), summary(memory), atol=1e-5)
    disc = SequenceDiscriminator(summary.output_size, 7, summary)
    assert torch.allclose(disc(permuted), disc(memory), atol=1e-5)


def test_spectrum_is_the_squared_singular_values_and_has_finite_gradients():
    torch.manual_seed(0)
    memory = torch.randn(4, 6, 3)
    expected = torch.linalg.svdvals(memory).pow(2).flip(-1)  # ascending
    assert torch.allclose(gram_spectrum(memory), torch.log1p(expected), atol=1e-5)
    empty = torch.zeros(2, 5, 4, requires_grad=True)  # the memory at t = 0: all eigenvalues 0
    gram_spectrum(empty).sum().backward()
    assert torch.isfinite(empty.grad).all()


def test_spectrum_is_finite_where_the_float32_eigensolver_returns_nan():
    # a DNC memory after its first write, from a Memory Forcing run that stopped on a NaN
    memory = torch.load(DATA / "dnc_memory_float32_eigvalsh_nan.pt", weights_only=True)
    memory.requires_grad_(True)
    spectrum = gram_spectrum(memory)
    assert spectrum.dtype == torch.float32 and torch.isfinite(spectrum).all()
    expected = torch.linalg.svdvals(memory.detach().double()).pow(2).flip(-1)
    assert torch.allclose(spectrum.double(), torch.log1p(expected), atol=1e-6)
    spectrum.sum().backward()
    assert torch.isfinite(memory.grad).all()


def test_deepsets_and_summary_options():
    assert DeepSets(4, 3)(torch.randn(2, 5, 4)).shape == (2, 3)
    assert MemorySummary(6, 4, "spectrum").output_size == 4
    assert MemorySummary(6, 4, "deepsets", 9).output_size == 9
    with pytest.raises(ValueError, match="summary"):
        MemorySummary(6, 4, "raw")


def test_discriminator_reads_the_last_existing_step():
    torch.manual_seed(0)
    disc = SequenceDiscriminator(3, 5)
    seq = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    changed = seq.clone()
    changed[0, 2:] = 100.0  # past the end of sequence 0
    assert disc(seq, mask).shape == (2,)
    assert torch.equal(disc(seq, mask), disc(changed, mask))
    assert not torch.equal(disc(seq), disc(changed))


# ----------------------------------------------------------------------------------------------
# gradients kept apart


def test_discriminator_update_does_not_move_the_generator():
    gtm = tiny_gtm()
    forcing = MemoryForcing(gtm, update_gate=1.0, hidden_size=6, learning_rate=0.1)
    before_g, before_d = snapshot(gtm.parameters()), snapshot(forcing.parameters())
    out = forcing.loss(gtm, batch(), 1)
    out.own.backward()  # plain backward: nothing may reach the generator
    assert all(p.grad is None for p in gtm.parameters())
    forcing.step()
    assert all(torch.equal(a, p) for a, p in zip(before_g, gtm.parameters(), strict=True))
    assert any(not torch.equal(a, p)
               for a, p in zip(before_d, forcing.parameters(), strict=True))
    assert all(p.grad is None for p in forcing.parameters())  # cleared by step()


def test_generator_term_gives_the_discriminators_no_gradient():
    gtm = tiny_gtm()
    forcing = MemoryForcing(gtm, accuracy_gate=0.0, hidden_size=6)
    before_d = snapshot(forcing.parameters())
    torch.manual_seed(3)
    out = forcing.loss(gtm, batch(), 1)
    assert set(forcing.discriminators) == {"hidden", "memory"}
    assert out.generator is not None and out.generator.requires_grad
    out.generator.backward()  # plain backward: nothing may reach the discriminators
    assert all(p.grad is None for p in forcing.parameters())
    grads = [p.grad for p in gtm.prior.parameters()] + [p.grad for p in gtm.memory.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    torch.optim.SGD(gtm.parameters(), lr=0.1).step()
    forcing.step()  # no discriminator gradient: nothing moves
    assert all(torch.equal(a, p) for a, p in zip(before_d, forcing.parameters(), strict=True))


# ----------------------------------------------------------------------------------------------
# gating


def test_gate_and_accuracy():
    assert gate(0.75, 0.75, 0.99) == (False, True)
    assert gate(0.76, 0.75, 0.99) == (True, True)
    assert gate(0.99, 0.75, 0.99) == (True, False)
    assert gate(0.5, 0.75, 0.99) == (False, True)
    teacher = torch.tensor([2.0, -1.0, 0.5, 3.0])  # 3 right
    free = torch.tensor([-2.0, -0.1, 1.0, 0.0])  # 3 right (0 counts as free)
    assert discriminator_accuracy(teacher, free) == 6 / 8


@pytest.mark.parametrize(
    "accuracy, accuracy_gate, term_on, update_on",
    [(0.5, 0.75, False, True), (0.8, 0.75, True, True), (0.995, 0.75, True, False),
     (0.8, 0.9, False, True), (1.0, 0.75, True, False)],
)
def test_gating_in_the_regulariser(monkeypatch, accuracy, accuracy_gate, term_on, update_on):
    monkeypatch.setattr(mf, "discriminator_accuracy", lambda *_: accuracy)
    gtm = tiny_gtm()
    forcing = MemoryForcing(gtm, accuracy_gate=accuracy_gate, hidden_size=6)
    out = forcing.loss(gtm, batch(), 1)
    assert (out.generator is not None) is term_on
    assert (out.own is not None) is update_on
    for name in ("hidden", "memory"):
        assert out.metrics[f"mf_{name}_accuracy"] == accuracy
        assert out.metrics[f"mf_{name}_g_on"] == float(term_on)
        assert out.metrics[f"mf_{name}_d_on"] == float(update_on)
    assert (out.metrics["mf_term"] > 0) is term_on
    assert forcing.counts.tolist() == [[int(term_on), int(update_on)]] * 2


def test_a_winning_discriminator_is_frozen_during_training(monkeypatch, tmp_path):
    monkeypatch.setattr(mf, "discriminator_accuracy", lambda *_: 0.999)
    gtm, task = tiny_gtm(), tiny_copy()
    forcing = MemoryForcing(gtm, hidden_size=6)
    before_d, before_g = snapshot(forcing.parameters()), snapshot(gtm.parameters())
    train(gtm, task, TrainConfig(steps=3, batch_size=4, progress=False, out_dir=tmp_path,
                                 tensorboard=False), regulariser=forcing)
    assert all(torch.equal(a, p) for a, p in zip(before_d, forcing.parameters(), strict=True))
    assert any(not torch.equal(a, p) for a, p in zip(before_g, gtm.parameters(), strict=True))
    rows = _csv(tmp_path / "log.csv")
    assert [float(r["mf_hidden_g_on"]) for r in rows] == [1.0] * 3
    assert [float(r["mf_memory_d_on"]) for r in rows] == [0.0] * 3


def test_bad_settings():
    gtm = tiny_gtm()
    with pytest.raises(ValueError, match="accuracy_gate"):
        MemoryForcing(gtm, accuracy_gate=1.5)
    with pytest.raises(ValueError, match="weight"):
        MemoryForcing(gtm, weight=-1.0)
    assert set(MemoryForcing(tiny_gtm("vrnn")).discriminators) == {"hidden"}
    assert set(MemoryForcing(gtm, memory_discriminator=False).discriminators) == {"hidden"}


# ----------------------------------------------------------------------------------------------
# training loop: exact resume, logging, checkpoints, divergence


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _config(out, steps, **kw):
    return TrainConfig(steps=steps, batch_size=4, learning_rate=0.01, checkpoint_every=3,
                       progress=False, tensorboard=False, seed=2, out_dir=out, **kw)


def _run(out, steps, seed=0):
    pyro.clear_param_store()
    gtm = tiny_gtm(seed=seed)
    torch.manual_seed(seed + 100)
    forcing = MemoryForcing(gtm, accuracy_gate=0.0, hidden_size=6, learning_rate=0.05)
    result = train(gtm, tiny_copy(), _config(out, steps), regulariser=forcing)
    return gtm, forcing, result


def test_memory_forcing_resume_is_exact(tmp_path):
    full_g, full_d, full = _run(tmp_path / "full", 7)
    _run(tmp_path / "split", 4)
    # fresh objects with other initial weights: everything must come from the checkpoint
    split_g, split_d, split = _run(tmp_path / "split", 7, seed=5)
    assert split.start_step == 4 and split.step == 7
    for (name, a), b in zip(full_g.state_dict().items(), split_g.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    for (name, a), b in zip(full_d.discriminators.state_dict().items(),
                            split_d.discriminators.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(full_d.counts, split_d.counts)
    assert full.losses == split.losses

    rows, split_rows = _csv(tmp_path / "full" / "log.csv"), _csv(tmp_path / "split" / "log.csv")
    assert rows == [{**r, "seconds": rows[i]["seconds"]} for i, r in enumerate(split_rows)]
    for key in ("mf_hidden_accuracy", "mf_memory_accuracy", "mf_hidden_d_loss",
                "mf_memory_g_loss", "mf_term"):
        assert all(r[key] != "" for r in rows), key
    assert sum(float(r["mf_hidden_g_on"]) for r in rows) > 0  # the term was used
    # weights_only loading (load_checkpoint uses it) with the regulariser's state inside
    state = load_checkpoint(tmp_path / "full" / CHECKPOINT_NAME)["regulariser"]
    assert state["config"]["accuracy_gate"] == 0.0 and state["optimizer"]["state"]
    assert torch.equal(state["counts"], full_d.counts)


def test_resume_without_the_regulariser_warns(tmp_path):
    _run(tmp_path, 3)
    pyro.clear_param_store()
    with pytest.warns(UserWarning, match="holds a regulariser state but none was given"):
        train(tiny_gtm(), tiny_copy(), _config(tmp_path, 4))


class StubRegulariser:
    """A one-parameter regulariser: generator term ``scale * w * S`` and own loss ``w * S``
    with ``S`` the sum of the GTM's prior parameters; records ``w.grad`` at its step."""

    def __init__(self, scale=1000.0):
        self.w = nn.Parameter(torch.tensor(0.5))
        self.scale = scale
        self.seen = []

    def parameters(self):
        return iter([self.w])

    def to(self, device):
        return self

    def loss(self, gtm, batch, step):
        total = sum(p.sum() for p in gtm.prior.parameters())
        self.expected = float(total.detach())
        return RegulariserLoss(self.scale * self.w * total, self.w * total, {"stub": 1.0})

    def step(self):
        self.seen.append((float(self.w.grad), self.expected))
        self.w.grad = None

    def state_dict(self):
        return {"w": self.w.detach().clone()}

    def load_state_dict(self, state):
        self.w.data.copy_(state["w"])


def test_train_backpropagates_each_term_into_its_own_parameters_only():
    stub = StubRegulariser()
    train(tiny_gtm(), tiny_copy(), TrainConfig(steps=2, batch_size=2, progress=False),
          regulariser=stub)
    # d(own)/dw = S; the generator term (1000x larger) did not reach w
    assert len(stub.seen) == 2
    assert [pytest.approx(s) for _, s in stub.seen] == [g for g, _ in stub.seen]


def test_non_finite_regulariser_term_is_divergence(tmp_path):
    with pytest.raises(TrainingDiverged, match="non-finite regulariser term"):
        train(tiny_gtm(), tiny_copy(), _config(tmp_path, 2), regulariser=StubRegulariser(
            scale=float("nan")))


# ----------------------------------------------------------------------------------------------
# copy task: exact-match rate


class ScriptedGTM(nn.Module):
    """``generate`` returns given frame means and records ``observed_steps``."""

    def __init__(self, frames):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.frames = frames
        self.observed = None

    def generate(self, length, num_sequences=None, *, x=None, c=None, observed_steps=0):
        self.observed = observed_steps
        return Generated(self.frames, None, None, None)


def test_exact_match_on_a_hand_made_case():
    task = CopyTask(prerecall_length=3, width=4)  # delimiter at step 3, output steps 4..6
    b = task.sample(4, "test", torch.Generator().manual_seed(0))
    assert b.recall[0].tolist() == [False] * 4 + [True] * 3
    means = b.x * 0.8 + 0.1  # right side of 0.5 everywhere
    means[1, 5, 0, 0, 2] = 1.0 - means[1, 5, 0, 0, 2]  # one wrong bit in an output frame
    means[2, 1, 0, 0, 0] = 1.0 - means[2, 1, 0, 0, 0]  # wrong in the input phase: not counted
    means[3, 6, 0, 0, 4] = 0.7  # the delimiter channel must be 0 in the output too
    gtm = ScriptedGTM(means)
    result = exact_match(gtm, b)
    assert gtm.observed == 4  # the input phase and the delimiter are observed
    assert result["exact_match"] == 0.5  # sequences 0 and 2
    assert result["bit_accuracy"] == pytest.approx(1 - 2 / (4 * 3 * 5))
    assert result["observed_steps"] == 4 and result["num_sequences"] == 4


def test_exact_match_checks_the_output_phase_and_runs_on_a_real_gtm():
    task = tiny_copy()
    b = task.sample(3, "test", torch.Generator().manual_seed(0))
    result = exact_match(tiny_gtm(task=task), b)
    assert 0.0 <= result["exact_match"] <= 1.0 and 0.0 <= result["bit_accuracy"] <= 1.0
    assert exact_match(tiny_gtm(task=task), b) == result  # seeded
    ragged = b.recall.clone()
    ragged[0, -1] = False
    with pytest.raises(ValueError, match="recall"):
        exact_match(tiny_gtm(task=task), b._replace(recall=ragged))


# ----------------------------------------------------------------------------------------------
# command line


def test_cli_train_with_memory_forcing(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "copy", "-l", "3", "--model", "dnc", "--out", str(run),
            "--steps", "3", "--eval-every", "3", "--checkpoint-every", "3", "--latent-size",
            "3", "--controller-size", "8", "--batch-size", "4", "--eval-sequences", "3",
            "--iwae-particles", "3", "--no-progress", "--memory-forcing", "--mf-weight", "0.5",
            "--mf-accuracy-gate", "0.6"]
    assert main(argv) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["memory_forcing"]["weight"] == 0.5
    assert results["memory_forcing"]["accuracy_gate"] == 0.6
    assert results["memory_forcing"]["update_gate"] == 0.99
    assert 0.0 <= results["exact_match"] <= 1.0
    header = (run / "log.csv").read_text().splitlines()[0].split(",")
    assert {"mf_hidden_accuracy", "mf_memory_accuracy", "mf_term", "exact_match"} <= set(header)


def test_cli_memory_forcing_flags_need_the_switch(capsys, tmp_path):
    argv = ["train", "copy", "--out", str(tmp_path / "x"), "--mf-weight", "2"]
    assert main(argv) == 2
    assert "--mf-weight applies with --memory-forcing only" in capsys.readouterr().err


def test_make_task_copy_marks_the_output_phase_as_recall():
    b = make_task("copy", prerecall_length=2, width=3).sample(1)
    assert b.recall[0].tolist() == [False, False, False, True, True]
