"""The particle filter's bound: against the Kalman likelihood of the linear-Gaussian SSM (exact,
unbiased, converging), against the IWAE's importance weights for every memory, its bookkeeping
(per-particle state, masks), the K sweep, FIVO training, and `pgtm evaluate --bound`."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from test_lgssm_gtm import kalman_log_likelihood, lgssm, simulate

from pgtm.cli import main
from pgtm.inference import smc as smc_module
from pgtm.inference.bounds import bound_sweep, iwae_of_groups
from pgtm.inference.evaluate import evaluate
from pgtm.inference.fivo import FIVO
from pgtm.inference.smc import smc, systematic_ancestors
from pgtm.inference.train import TrainConfig, train
from pgtm.models import MEMORIES, build_gtm
from pgtm.tasks import make_task

ROOT = Path(__file__).resolve().parents[1]
FRAME = (1, 28, 28)
pytestmark = pytest.mark.filterwarnings("ignore:full MNIST not found")


def tiny_gtm(memory, length=6, seed=0):
    torch.manual_seed(seed)
    return build_gtm(memory, frame_shape=FRAME, sequence_length=length, network="mlp",
                     latent_size=4, controller_size=16, feature_size=16)


def binary_frames(batch=3, length=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((batch, length, *FRAME), 0.3), generator=generator)


# ---------------------------------------------------------------- exact answers (LGSSM)


def test_exact_posterior_without_resampling_gives_the_kalman_likelihood():
    """q = the exact smoothing posterior and no resampling: every particle's weight is p(x).
    The weights of intermediate steps differ between particles (each step's weight is a ratio
    of backward messages, which telescopes only over the whole sequence), so resampling would
    spoil the exactness: the final weights are equal (ESS = K) and only they."""
    x = simulate()
    exact = torch.tensor([kalman_log_likelihood(seq.numpy()) for seq in x])
    with torch.no_grad():
        result = smc(lgssm(inflation=1.0), x, num_particles=7, ess_threshold=0.0)
    torch.testing.assert_close(result.log_evidence, exact, rtol=0, atol=1e-8)
    assert not result.resampled.any()
    assert torch.allclose(result.ess[:, -1], torch.tensor(7.0).double())
    assert (result.ess[:, :-1] < 6.99).any()


@pytest.mark.parametrize("resampling", ["systematic", "multinomial"])
def test_the_evidence_estimate_is_unbiased(resampling):
    """E[p_hat(x)] = p(x) with resampling at every step: 2,000 independent filters (copies of
    one sequence in one batch) average to the Kalman likelihood within 4 standard errors. A
    filter that gathered the wrong ancestors or dropped a weight would be biased."""
    x = simulate(batch=1, length=8, seed=3)
    exact = kalman_log_likelihood(x[0].numpy())
    pyro.set_rng_seed(0)
    with torch.no_grad():
        result = smc(lgssm(inflation=1.5**2), x.expand(2000, -1, -1), num_particles=4,
                     resampling=resampling, ess_threshold=1.0)
    assert result.resampled.all()
    ratio = (result.log_evidence - exact).exp()
    standard_error = ratio.std() / math.sqrt(len(ratio))
    assert abs(ratio.mean() - 1) < 4 * standard_error
    assert (result.log_evidence - exact).mean() < -0.3  # ... while log p_hat is a lower bound


def test_the_bound_converges_to_the_kalman_likelihood_as_k_grows():
    x = simulate(batch=2, length=8, seed=5)
    exact = torch.tensor([kalman_log_likelihood(seq.numpy()) for seq in x])
    gtm = lgssm(inflation=1.5**2)
    pyro.set_rng_seed(1)
    gaps = []
    for k in (4, 32, 256):
        with torch.no_grad():
            runs = smc(gtm, x.repeat(50, 1, 1), num_particles=k).log_evidence.reshape(50, 2)
        gaps.append((exact - runs.mean(0)).abs().max().item())
    assert gaps[0] > 2 * gaps[1] > 4 * gaps[2]
    assert gaps[2] < 0.05


# ---------------------------------------------------------------- every memory


@pytest.mark.parametrize("memory", sorted(MEMORIES))
def test_one_particle_is_the_importance_weight_of_the_same_draws(memory):
    """With K = 1 nothing is resampled and the filter draws what the guide draws (same seed):
    its estimate is the importance weight of `evaluate`, for every memory, Kanerva's latent
    memory included."""
    gtm, x = tiny_gtm(memory), binary_frames()
    pyro.set_rng_seed(4)
    with torch.no_grad():
        ours = smc(gtm, x, num_particles=1).log_evidence
    pyro.set_rng_seed(4)
    theirs = evaluate(gtm.model, gtm.guide, x, num_particles=1, keep_tensors=True)["log_w"][0]
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("memory", sorted(MEMORIES))
def test_resampling_moves_each_particles_whole_state(memory, monkeypatch):
    """The particles keep their own states until step 2, where every particle becomes a copy of
    particle 0: the contexts of step 3 (controller, memory, read and latent after step 2) must
    then agree across particles, though those of step 2 did not. A state field left out of the
    gather would keep its particle's own history and break the agreement."""
    calls = []

    def copy_first_at_step_2(log_weights):
        calls.append(None)
        keep = torch.arange(log_weights.shape[-1]).expand(log_weights.shape)
        return torch.zeros_like(keep) if len(calls) == 3 else keep

    monkeypatch.setitem(smc_module.RESAMPLING, "copy", copy_first_at_step_2)
    gtm, x = tiny_gtm(memory), binary_frames(batch=2)
    contexts = []
    gtm.prior.register_forward_hook(lambda module, args, out: contexts.append(args[0]))
    with torch.no_grad():
        smc(gtm, x, num_particles=5, resampling="copy", ess_threshold=1.0)

    def agree(context):
        return torch.allclose(context, context[:, :1].expand_as(context))

    assert not agree(contexts[2]) and agree(contexts[3]) and not agree(contexts[4])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("memory", sorted(MEMORIES))
def test_on_cuda_one_particle_is_the_importance_weight_and_resampling_runs(memory):
    gtm, x = tiny_gtm(memory).cuda(), binary_frames().cuda()
    pyro.set_rng_seed(4)
    with torch.no_grad():
        ours = smc(gtm, x, num_particles=1).log_evidence
    pyro.set_rng_seed(4)
    theirs = evaluate(gtm.model, gtm.guide, x, num_particles=1, keep_tensors=True)["log_w"][0]
    torch.testing.assert_close(ours.double().cpu(), theirs, rtol=1e-5, atol=1e-2)
    with torch.no_grad():
        result = smc(gtm, x, num_particles=16, ess_threshold=1.0)
    assert result.log_evidence.is_cuda and torch.isfinite(result.log_evidence).all()


def test_masked_steps_carry_no_weight():
    """A sequence that ends at step 4 has the estimate of its first 4 frames."""
    gtm, x = tiny_gtm("introspective"), binary_frames(batch=1)
    mask = torch.arange(6).unsqueeze(0) < 4
    pyro.set_rng_seed(2)
    with torch.no_grad():
        masked = smc(gtm, x, mask=mask, num_particles=8, ess_threshold=1.0)
    pyro.set_rng_seed(2)
    with torch.no_grad():
        prefix = smc(gtm, x[:, :4], num_particles=8, ess_threshold=1.0)
    torch.testing.assert_close(masked.log_evidence, prefix.log_evidence)
    assert not masked.resampled[:, 4:].any()


def test_smc_is_tighter_than_the_iwae_at_equal_k_on_a_nonlinear_model():
    task = make_task("perfect-recall", prerecall_length=10, recall_length=5)
    x = task.sample(8, "test", torch.Generator().manual_seed(0)).x
    torch.manual_seed(0)
    gtm = build_gtm("vrnn", sequence_length=15, network="mlp")
    pyro.set_rng_seed(0)
    with torch.no_grad():
        sweep = bound_sweep(gtm, x, particles=[16], bound="both")
    assert sweep["smc"]["16"]["mean"] > sweep["iwae"]["16"]["mean"] + 0.5


def test_systematic_ancestors_follow_the_weights():
    log_weights = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.7, 0.1, 0.1, 0.1]]).log()
    ancestors = systematic_ancestors(log_weights)
    assert ancestors[1].tolist().count(0) >= 2 and (ancestors[0] != 0).all()
    assert ancestors.shape == (2, 4) and (ancestors[:, 1:] >= ancestors[:, :-1]).all()


@pytest.mark.parametrize(
    "kwargs,message",
    [({"num_particles": 0}, "num_particles"), ({"resampling": "stratified"}, "resampling"),
     ({"ess_threshold": 1.5}, "ess_threshold")],
)
def test_bad_arguments_name_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        smc(tiny_gtm("vrnn"), binary_frames(), **{"num_particles": 2, **kwargs})


# ---------------------------------------------------------------- the K sweep


def test_iwae_of_groups_averages_disjoint_groups():
    log_w = torch.randn(12, 3, dtype=torch.float64)
    expected = torch.stack([log_w[i : i + 4].logsumexp(0) - math.log(4) for i in (0, 4, 8)])
    torch.testing.assert_close(iwae_of_groups(log_w, 4), expected.mean(0))
    torch.testing.assert_close(iwae_of_groups(log_w, 1), log_w.mean(0))


def test_bound_sweep_reports_every_bound_per_sequence_and_per_frame():
    gtm, x = tiny_gtm("dnc"), binary_frames(batch=3)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[2, 3:] = False
    pyro.set_rng_seed(0)
    sweep = bound_sweep(gtm, x, mask=mask, particles=[4, 1], bound="both", max_batch=5)
    assert sweep["particles"] == [1, 4] and sweep["observed_steps"] == [6, 6, 3]
    for entry in [sweep["elbo"], *sweep["iwae"].values(), *sweep["smc"].values()]:
        per_sequence = torch.tensor(entry["per_sequence"], dtype=torch.float64)
        per_frame = torch.tensor(entry["per_frame"], dtype=torch.float64)
        steps = torch.tensor([6.0, 6.0, 3.0], dtype=torch.float64)
        torch.testing.assert_close(per_frame, per_sequence / steps)
        assert math.isclose(entry["per_frame_mean"], per_sequence.sum().item() / 15)
    assert len(sweep["smc"]["4"]["ess"]) == 6 and 0 <= sweep["smc"]["4"]["resampling_rate"] <= 1
    assert sweep["iwae"]["1"] == sweep["elbo"]
    assert sweep["evaluation"]["num_particles"] == 4
    with pytest.raises(ValueError, match="particles"):
        bound_sweep(gtm, x, particles=[0, 3])
    with pytest.raises(ValueError, match="bound"):
        bound_sweep(gtm, x, particles=[3], bound="fivo")


# ---------------------------------------------------------------- FIVO training


def test_fivo_with_one_particle_is_the_negative_elbo():
    gtm, x = tiny_gtm("introspective"), binary_frames()
    pyro.set_rng_seed(7)
    ours = FIVO(gtm, 1).loss(gtm.model, gtm.guide, x)
    pyro.set_rng_seed(7)
    theirs = Trace_ELBO(max_plate_nesting=2).loss(gtm.model, gtm.guide, x)
    assert math.isclose(ours, theirs, rel_tol=1e-6)


def fivo_config(out_dir, steps):
    return TrainConfig(steps=steps, batch_size=4, learning_rate=3e-3, elbo="fivo",
                       num_particles=3, kl_anneal_steps=4, checkpoint_every=3, progress=False,
                       tensorboard=False, seed=1, out_dir=out_dir)


def test_fivo_training_lowers_the_loss_and_resumes_exactly(tmp_path):
    task = make_task("perfect-recall", prerecall_length=4, recall_length=2)
    full = tiny_gtm("introspective")
    result = train(full, task, fivo_config(tmp_path / "full", 30))
    assert sum(result.losses[-5:]) < sum(result.losses[:5])

    pyro.clear_param_store()
    train(tiny_gtm("introspective"), task, fivo_config(tmp_path / "split", 6))
    pyro.clear_param_store()
    resumed = tiny_gtm("introspective", seed=5)
    train(resumed, task, fivo_config(tmp_path / "split", 30))
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


# ---------------------------------------------------------------- the command line


def test_pgtm_evaluate_sweeps_k_with_both_bounds(tmp_path, monkeypatch):
    monkeypatch.delenv("PGTM_DATA_DIR", raising=False)
    run = tmp_path / "run"
    assert main(["train", "perfect-recall", "-l", "4", "-k", "2", "--out", str(run), "--steps",
                 "4", "--model", "vrnn", "--latent-size", "4", "--controller-size", "16",
                 "--network", "mlp", "--batch-size", "4", "--eval-sequences", "2",
                 "--iwae-particles", "2", "--no-progress", "--elbo", "fivo"]) == 0
    assert main(["evaluate", str(run), "--bound", "both", "--particles", "1", "8", "--sequences",
                 "3"]) == 0
    results = json.loads((run / "evaluation_k1-8.json").read_text())
    assert results["num_particles"] == 8 and len(results["iwae"]) == 3  # the K_max report
    bounds = results["bounds"]
    assert set(bounds["smc"]) == set(bounds["iwae"]) == {"1", "8"}
    assert len(bounds["smc"]["8"]["per_frame"]) == 3
    assert (run / "evaluation_k1-8.png").stat().st_size > 5000
    assert main(["evaluate", str(run), "--bound", "smc", "--particles", "0"]) == 2
    assert main(["evaluate", str(run), "--bound", "smc", "--outliers", "1"]) == 2

    study = [sys.executable, str(ROOT / "examples" / "studies" / "bounds_study.py"), str(run),
             "--particles", "1", "3", "--sequences", "2", "--out", str(tmp_path / "study")]
    for reused in (False, True):
        completed = subprocess.run(study, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert ("reused" in completed.stdout) is reused
    summary = json.loads((tmp_path / "study" / "summary.json").read_text())
    row = summary[f"{tmp_path.name}/run"]
    assert row["model"] == "vrnn" and row["steps"] == 4 and set(row["sweep"]["smc"]) == {"1", "3"}
    assert (tmp_path / "study" / "bounds_vs_particles_perfect-recall.png").stat().st_size > 5000
    assert "| perfect-recall | vrnn | 4 |" in (tmp_path / "study" / "summary.md").read_text()
