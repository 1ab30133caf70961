"""Frame feedback (``frame_feedback=True``): the controller sees the previous frame's encoder
features, as the paper's VRNN (its Fig. 1a). The step-t prior depends on the frames before t
only; the guide's path, the model's own path, the floor, the particle filter and the unroll are
one recurrence (path reuse with feedback: ``tests/test_gtm.py``); generated frames are what is
fed back."""

import json

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pgtm.cli import main
from pgtm.inference import evaluate
from pgtm.inference.smc import smc
from pgtm.models import build_gtm, count_parameters

SMALL = {"latent_size": 4, "controller_size": 16, "feature_size": 16, "network": "mlp"}
B, T = 3, 5


def small_gtm(memory="vrnn", frame_feedback=True, **options):
    torch.manual_seed(0)
    return build_gtm(memory, sequence_length=T, frame_feedback=frame_feedback,
                     **{**SMALL, **options}).double()


def binary_frames(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((B, T, 1, 28, 28), 0.3, dtype=torch.float64),
                           generator=generator)


def prior_means(gtm, x, latents):
    """The mean of every step's prior in the model conditioned on ``latents`` (own path)."""
    gtm.reuse_path = False
    trace = poutine.trace(poutine.condition(gtm.model, latents)).get_trace(x)
    return [trace.nodes[f"z_{t}"]["fn"].mean for t in range(T)]


@pytest.mark.parametrize("memory", ["vrnn", "introspective"])
def test_the_step_t_prior_sees_the_frames_before_t_and_no_other(memory):
    x = binary_frames()
    latents = {f"z_{t}": torch.randn(B, 1, 4, dtype=torch.float64) for t in range(T)}
    changed = x.clone()
    changed[:, 2] = 1 - changed[:, 2]
    for feedback in (True, False):
        gtm = small_gtm(memory, frame_feedback=feedback)
        before, after = prior_means(gtm, x, latents), prior_means(gtm, changed, latents)
        same = [torch.equal(a, b) for a, b in zip(before, after, strict=True)]
        # with feedback, frame 2 reaches the controller at step 3; without, never
        assert same == ([True, True, True, False, False] if feedback else [True] * T)


def test_one_particle_filter_is_the_importance_weight_of_the_same_draws():
    gtm, x = small_gtm("introspective"), binary_frames()
    pyro.set_rng_seed(4)
    with torch.no_grad():
        ours = smc(gtm, x, num_particles=1).log_evidence
        resampled = smc(gtm, x, num_particles=4, ess_threshold=1.0).log_evidence
    pyro.set_rng_seed(4)
    theirs = evaluate(gtm.model, gtm.guide, x, num_particles=1, keep_tensors=True)["log_w"][0]
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-6)
    assert torch.isfinite(resampled).all()


def test_unrolling_every_frame_draws_the_guides_latents():
    gtm, x = small_gtm("introspective"), binary_frames()
    pyro.set_rng_seed(5)
    guide = poutine.trace(gtm.guide).get_trace(x)
    pyro.set_rng_seed(5)
    with torch.no_grad():
        path = gtm.unroll(T, B, features=gtm.encoder(x), observed_steps=T)
    for t in range(T):
        torch.testing.assert_close(path.latents[:, t], guide.nodes[f"z_{t}"]["value"][:, 0])


@pytest.mark.parametrize("feedback", [True, False])
def test_generated_frames_are_fed_back(feedback):
    """Reparameterised, a generated frame is fed back as the likelihood's mean: the later
    latents then depend on the decoder, which they cannot without feedback."""
    gtm, x = small_gtm(frame_feedback=feedback), binary_frames()
    path = gtm.unroll(T, B, features=gtm.encoder(x), observed_steps=2, reparameterised=True)
    path.latents[:, 3:].sum().backward()
    decoder_grads = [p.grad for p in gtm.decoder.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in decoder_grads) == feedback
    generated = gtm.generate(T, x=x, observed_steps=2)
    assert generated.frames.shape == x.shape


def test_the_parameter_budget_accounts_for_the_wider_controller_input():
    options = {"sequence_length": 15, "network": "mlp", "parameter_budget": 1_860_000}
    plain = build_gtm("vrnn", **options)
    fed = build_gtm("vrnn", frame_feedback=True, **options)
    assert abs(count_parameters(fed) - 1_860_000) <= 0.02 * 1_860_000
    assert fed.controller.cell.input_size == plain.controller.cell.input_size + 256
    assert fed.controller.output_size < plain.controller.output_size


def test_pgtm_train_records_frame_feedback_and_the_run_reopens(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PGTM_DATA_DIR", raising=False)
    run = tmp_path / "run"
    argv = ["train", "perfect-recall", "-l", "4", "-k", "2", "--model", "vrnn",
            "--frame-feedback", "--out", str(run), "--eval-every", "2",
            "--checkpoint-every", "2", "--latent-size", "4", "--controller-size", "16",
            "--network", "mlp", "--batch-size", "4", "--eval-sequences", "4",
            "--iwae-particles", "5", "--no-progress", "--threads", "1"]
    assert main([*argv, "--steps", "2"]) == 0
    assert json.loads((run / "run.json").read_text())["model_options"]["frame_feedback"] is True
    assert main([*argv, "--steps", "3"]) == 0  # resumes
    without = [a for a in argv if a != "--frame-feedback"]
    assert main([*without, "--steps", "4"]) == 2  # not the same run: refused in one line
    assert "--frame-feedback: True there, None now" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--particles", "2", "--sequences", "2"]) == 0
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png"), "--num", "2"]) == 0


@pytest.mark.parametrize("likelihood", ["gaussian", "continuous-bernoulli", "discretized-logistic"])
def test_every_likelihood_generates_with_its_own_frames_fed_back(likelihood):
    gtm = small_gtm(likelihood=likelihood)
    x = binary_frames() * 0.5 + 0.25  # grey levels inside (0, 1)
    generated = gtm.generate(T, x=x, observed_steps=2)
    assert generated.frames.shape == x.shape and torch.isfinite(generated.frames).all()
