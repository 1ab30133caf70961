"""``pgtm.models.batched_scores``: the latent sites of a pass scored in one computation give
Pyro's objectives the numbers of the site-by-site scores (loss and gradients equal to the
rounding of a sum taken in another order), and whatever it cannot batch is scored step by
step."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from pgtm.models import build_gtm
from pgtm.models.batched_scores import BatchedScores

FRAME = (1, 1, 6)
SMALL = {"latent_size": 4, "controller_size": 8, "feature_size": 8, "network": "mlp"}
B, T = 3, 5


def make(memory, dtype, **options):
    torch.manual_seed(0)
    gtm = build_gtm(memory, frame_shape=FRAME, sequence_length=T, **SMALL, **options).to(dtype)
    generator = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((B, T) + FRAME, 0.4, dtype=dtype), generator=generator)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 3:] = False
    return gtm, x, mask


def loss_and_grads(gtm, elbo, x, mask):
    pyro.set_rng_seed(3)
    if isinstance(elbo, RenyiELBO):  # scored, not differentiated, in evaluation
        return torch.tensor(elbo.loss(gtm.model, gtm.guide, x, mask=mask)), ()
    loss = elbo.differentiable_loss(gtm.model, gtm.guide, x, mask=mask)
    grads = torch.autograd.grad(loss, list(gtm.parameters()), allow_unused=True)
    return loss.detach(), grads


def step_by_step(monkeypatch):
    monkeypatch.setattr(BatchedScores, "join", lambda self, t, distribution: distribution)


ELBOS = {
    "trace": lambda: Trace_ELBO(max_plate_nesting=2),
    "meanfield": lambda: TraceMeanField_ELBO(max_plate_nesting=2),
    "vectorised particles": lambda: Trace_ELBO(num_particles=3, vectorize_particles=True,
                                               max_plate_nesting=2),
    "iwae": lambda: RenyiELBO(alpha=0, num_particles=3, vectorize_particles=True,
                              max_plate_nesting=2),
}


@pytest.mark.parametrize("elbo", sorted(ELBOS))
@pytest.mark.parametrize("memory", ["vrnn", "introspective", "dnc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("masked", [False, True])
def test_the_objectives_are_those_of_site_by_site_scores(monkeypatch, elbo, memory, dtype,
                                                         masked):
    gtm, x, mask = make(memory, dtype)
    mask = mask if masked else None
    batched = loss_and_grads(gtm, ELBOS[elbo](), x, mask)
    with monkeypatch.context() as patch:
        step_by_step(patch)
        reference = loss_and_grads(gtm, ELBOS[elbo](), x, mask)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12,
                                                                             "atol": 1e-12}
    torch.testing.assert_close(batched[0], reference[0], **tolerance)
    for ours, theirs in zip(batched[1], reference[1], strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            torch.testing.assert_close(ours, theirs, **tolerance)


def count_normal_scores(monkeypatch):
    calls = []
    log_prob = torch.distributions.Normal.log_prob

    def counted(self, value):
        calls.append(tuple(value.shape))
        return log_prob(self, value)

    monkeypatch.setattr(torch.distributions.Normal, "log_prob", counted)
    return calls


def test_a_pass_is_scored_once_per_program(monkeypatch):
    """Trace_ELBO scores the T prior and the T posterior sites with two Normal computations
    over ``[B, T, Z]`` (Pyro's plates expand every site's distribution; this must keep it)."""
    gtm, x, mask = make("vrnn", torch.float64)
    calls = count_normal_scores(monkeypatch)
    loss_and_grads(gtm, Trace_ELBO(max_plate_nesting=2), x, mask)
    assert calls == [(B, T, SMALL["latent_size"])] * 2


def test_what_cannot_be_batched_is_scored_step_by_step(monkeypatch):
    scores = BatchedScores(2)
    loc, scale = torch.zeros(3, 1, 4), torch.ones(3, 1, 4)
    plain = [dist.Normal(loc + t, scale).to_event(1) for t in range(2)]
    steps = [scores.join(t, plain[t]) for t in range(2)]
    values, other = [torch.randn(3, 1, 4) for _ in range(2)], torch.randn(3, 1, 4)
    expected = [plain[t].log_prob(values[t]) for t in range(2)]
    calls = count_normal_scores(monkeypatch)
    scores.record(0, values[0])
    # step 1 has no value yet: step 0 is scored on its own
    assert torch.equal(steps[0].log_prob(values[0]), expected[0])
    scores.record(1, values[1])
    # another value than the recorded one: on its own
    torch.testing.assert_close(steps[1].log_prob(other), plain[1].log_prob(other), rtol=0,
                               atol=0)
    # the recorded values: one computation for both
    for t in range(2):
        torch.testing.assert_close(steps[t].log_prob(values[t]), expected[t], rtol=0, atol=0)
    assert calls == [(3, 1, 4), (3, 1, 4), (3, 1, 4), (3, 2, 4)]  # the third: the check above
    # a plate expanding a step to another batch shape gets a plain distribution
    expanded = steps[0].expand((5, 3, 1))
    assert type(expanded) is dist.Independent and expanded.batch_shape == (5, 3, 1)
    assert steps[0].expand((3, 1)) is steps[0]


@pytest.mark.parametrize("distribution", [
    dist.StudentT(3.0, torch.zeros(2, 1, 4), torch.ones(2, 1, 4)).to_event(1),
    dist.Normal(torch.zeros(2, 4), torch.ones(2, 4)).to_event(1),  # no step dim
    dist.Normal(torch.zeros(2, 1, 4), torch.ones(2, 1, 4)).to_event(2),
])
def test_other_distributions_pass_through(distribution):
    assert BatchedScores(1).join(0, distribution) is distribution
