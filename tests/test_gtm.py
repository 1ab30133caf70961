"""The generic GTM as a Pyro model/guide pair: structure, exact path reuse, masks, bad input."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pgtm.models import PRIORS, build_gtm, count_parameters

SMALL = {"latent_size": 4, "controller_size": 16, "feature_size": 16}


def small_gtm(memory="introspective", **kwargs):
    torch.manual_seed(0)
    options = dict(SMALL, sequence_length=5, network="mlp")
    options.update(kwargs)
    return build_gtm(memory, **options)


def binary_frames(batch=3, length=5, shape=(1, 28, 28)):
    return torch.bernoulli(torch.full((batch, length) + shape, 0.3))


def test_sites_follow_the_plate_conventions_with_vectorised_particles():
    gtm = small_gtm(weighting="unnormalised")
    x = binary_frames()
    with pyro.plate("particles", 7, dim=-3):
        guide_trace = poutine.trace(gtm.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(gtm.model, guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    for t in range(5):
        site = model_trace.nodes[f"z_{t}"]
        assert site["value"].shape == (7, 3, 1, 4)
        assert site["log_prob"].shape == (7, 3, 1)
        assert site["value"] is guide_trace.nodes[f"z_{t}"]["value"]
        assert model_trace.nodes[f"penalty_{t}"]["log_prob"].shape == (7, 3, 1)
    assert model_trace.nodes["x"]["log_prob"].shape == (7, 3, 5)


@pytest.mark.parametrize(
    "memory,options",
    [
        ("introspective", {"weighting": "unnormalised", "sparsity": 0.1}),
        ("introspective", {"posterior": "flow", "prior": "student-t"}),
        ("vrnn", {}),
        ("vrnn", {"frame_feedback": True}),
        ("ntm", {"frame_feedback": True}),
    ],
)
@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO])
def test_reusing_the_guide_path_leaves_loss_and_gradients_unchanged(memory, options, elbo):
    gtm = small_gtm(memory, **options).double()
    x = binary_frames().double()
    results = []
    for reuse in (True, False):
        gtm.reuse_path = reuse
        gtm.zero_grad()
        pyro.set_rng_seed(3)
        loss = elbo(max_plate_nesting=2).differentiable_loss(gtm.model, gtm.guide, x)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in gtm.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=0)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_model_recomputes_its_path_when_the_latents_are_not_the_guides():
    gtm = small_gtm()
    x = binary_frames()
    gtm.guide(x)
    assert gtm._guide_path is not None
    trace = poutine.trace(gtm.model).get_trace(x)  # fresh prior samples, not the guide's
    assert gtm._guide_path is None
    trace.compute_log_prob()
    assert torch.isfinite(trace.log_prob_sum())
    # conditioning on other latents must give the same density as a path computed from scratch
    latents = {f"z_{t}": torch.randn(3, 1, 4) for t in range(5)}
    gtm.guide(x)
    conditioned = poutine.trace(poutine.condition(gtm.model, latents)).get_trace(x)
    gtm.reuse_path = False
    fresh = poutine.trace(poutine.condition(gtm.model, latents)).get_trace(x)
    torch.testing.assert_close(conditioned.log_prob_sum(), fresh.log_prob_sum())


def test_masked_steps_contribute_nothing():
    gtm = small_gtm(sequence_length=5)
    x = binary_frames()
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 3:] = False
    elbo = Trace_ELBO(max_plate_nesting=2)
    pyro.set_rng_seed(0)
    masked = elbo.loss(gtm.model, gtm.guide, x, None, mask)
    pyro.set_rng_seed(0)
    truncated = elbo.loss(gtm.model, gtm.guide, x[:, :3])
    assert masked == pytest.approx(truncated, rel=1e-6)


def test_context_is_used_and_checked():
    gtm = small_gtm("vrnn", action_size=5)
    x = binary_frames()
    c = torch.nn.functional.one_hot(torch.randint(5, (3, 5)), 5).float()
    loss = Trace_ELBO(max_plate_nesting=2).loss(gtm.model, gtm.guide, x, c)
    assert loss == loss
    with pytest.raises(ValueError, match=r"c must have shape \[B, T, 5\]"):
        gtm.guide(x, c[..., :4])
    with pytest.raises(ValueError, match="c must have shape"):
        gtm.model(x)


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.zeros(3, 5, 28, 28), r"x must have shape \[B, T, 1, 28, 28\]"),
        (torch.full((3, 5, 1, 28, 28), float("nan")), "NaN"),
        (torch.zeros(3, 5, 1, 28, 28, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_frames_are_rejected(bad, match):
    gtm = small_gtm()
    with pytest.raises(ValueError, match=match):
        gtm.guide(bad)
    with pytest.raises(ValueError, match=match):
        gtm.model(bad)


def test_frame_values_are_checked_while_pyro_validates():
    """The values are checked with Pyro's validation (on by default), the shapes always: the
    training loop turns validation off after a batch shape's first step."""
    gtm = small_gtm()
    nan_frames = torch.full((3, 5, 1, 28, 28), float("nan"))
    pyro.distributions.enable_validation(False)
    try:
        gtm.check_inputs(nan_frames)  # no pass over the values
        with pytest.raises(ValueError, match=r"x must have shape"):
            gtm.check_inputs(torch.zeros(3, 5, 28, 28))
    finally:
        pyro.distributions.enable_validation(True)
    with pytest.raises(ValueError, match="NaN"):
        gtm.check_inputs(nan_frames)


def test_bad_mask_and_unknown_parts_are_rejected():
    gtm = small_gtm()
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \[B, T\]"):
        gtm.model(binary_frames(), None, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown prior 'cauchy'"):
        small_gtm(prior="cauchy")
    with pytest.raises(ValueError, match="unknown memory 'ntm2'"):
        small_gtm("ntm2")
    with pytest.raises(ValueError, match="sequence_length"):
        build_gtm("introspective")


def test_every_prior_and_likelihood_runs():
    x = binary_frames()
    for prior in PRIORS:
        for likelihood in ("bernoulli", "gaussian", "continuous-bernoulli"):
            gtm = small_gtm(prior=prior, likelihood=likelihood)
            loss = Trace_ELBO(max_plate_nesting=2).loss(gtm.model, gtm.guide, x)
            assert torch.isfinite(torch.tensor(loss)), (prior, likelihood)


def test_render_model_draws_the_latent_chain_and_observation():
    graphviz = pytest.importorskip("graphviz")
    gtm = small_gtm("vrnn", sequence_length=3)
    graph = pyro.render_model(gtm.model, model_args=(binary_frames(length=3),))
    assert isinstance(graph, graphviz.Digraph)
    source = graph.source
    assert all(name in source for name in ("z_0", "z_2", "sequences", "time"))


def test_generate_observes_then_samples_and_default_sizes_match_the_paper():
    gtm = small_gtm()
    x = binary_frames()
    out = gtm.generate(5, x=x, observed_steps=2)
    assert out.frames.shape == x.shape
    assert ((out.frames >= 0) & (out.frames <= 1)).all()
    assert out.weights.shape == (3, 5, 5, 5)
    with pytest.raises(ValueError, match="observed_steps"):
        gtm.generate(5, x=x, observed_steps=6)
    # the paper's models have about 1.86M parameters
    parameters = count_parameters(build_gtm("introspective", sequence_length=15))
    assert 1.6e6 < parameters < 2.1e6


def test_orthogonal_init_makes_each_recurrent_gate_matrix_orthogonal():
    gtm = small_gtm(orthogonal_init=True, controller_size=16)
    for gate in gtm.controller.cell.weight_hh.detach().chunk(4, dim=0):
        torch.testing.assert_close(gate.T @ gate, torch.eye(16), atol=1e-5, rtol=0)


def test_unroll_is_the_loop_of_generate_and_passes_gradients_when_reparameterised():
    gtm = small_gtm("ntm").eval()
    x = binary_frames(batch=2, length=5, shape=gtm.frame_shape)
    torch.manual_seed(3)
    generated = gtm.generate(5, x=x, observed_steps=3)
    torch.manual_seed(3)
    with torch.no_grad():
        unrolled = gtm.unroll(5, 2, features=gtm.encoder(x[:, :3]), observed_steps=3,
                              keep_memories=True)
    torch.testing.assert_close(unrolled.latents, generated.latents)
    torch.testing.assert_close(unrolled.write_weights, generated.write_weights)
    assert unrolled.contexts.shape == (2, 5, gtm.context_size)
    assert unrolled.memories.shape == (2, 5, gtm.memory.num_slots, gtm.memory.word_size)
    # reparameterised: the latents carry gradients back to the encoder (posterior steps) and
    # the prior (prior steps)
    path = gtm.unroll(5, 2, features=gtm.encoder(x), observed_steps=3, reparameterised=True)
    path.latents.sum().backward()
    for module in (gtm.encoder, gtm.prior):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_unroll_refuses_to_reparameterise_a_distribution_without_rsample():
    gtm = small_gtm("vrnn")

    class NoRsample(torch.distributions.Bernoulli):
        has_rsample = False

    gtm.prior.forward = lambda context: NoRsample(logits=context[..., :gtm.latent_size])
    with pytest.raises(ValueError, match="the prior must be reparameterisable"):
        gtm.unroll(3, 2, reparameterised=True)
    assert gtm.unroll(3, 2).latents.shape == (2, 3, gtm.latent_size)
