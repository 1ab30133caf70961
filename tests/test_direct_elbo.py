"""The GTM's ELBO written out (pgtm.inference.direct_elbo) equals Pyro's Trace_ELBO: loss and
gradients under the same draws, KL annealing, masks, every memory."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pgtm.inference.direct_elbo import direct_elbo_loss, direct_elbo_terms, unsupported
from pgtm.inference.guarded_step import LatentScale
from pgtm.models import build_gtm

FRAME = (1, 1, 5)
SMALL = {"latent_size": 3, "controller_size": 8, "feature_size": 8, "network": "mlp"}
B, T = 3, 4

CASES = {
    "vrnn-actions": ("vrnn", {"action_size": 2}),
    "vrnn-frame-feedback": ("vrnn", {"action_size": 2, "frame_feedback": True}),
    "introspective-penalty": ("introspective", {"weighting": "unnormalised", "sparsity": 0.1}),
    "introspective-flow": ("introspective", {"posterior": "flow", "prior": "student-t"}),
    "ntm": ("ntm", {"num_slots": 6}),
    "lru": ("lru", {"num_slots": 6}),
    "dnc": ("dnc", {"num_slots": 6, "word_size": 4}),
}


def make(case, seed=0):
    memory, options = CASES[case]
    torch.manual_seed(seed)
    gtm = build_gtm(memory, frame_shape=FRAME, sequence_length=T, **SMALL, **options).double()
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.bernoulli(torch.full((B, T) + FRAME, 0.4, dtype=torch.float64), generator=generator)
    c = None
    if gtm.action_size:
        c = torch.randn(B, T, gtm.action_size, generator=generator, dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 2:] = False  # a shorter sequence
    mask[2, 3:] = False
    return gtm, x, c, mask


def pyro_loss(gtm, x, c, mask, beta=1.0):
    pyro.clear_param_store()
    with LatentScale(beta):
        return Trace_ELBO(max_plate_nesting=2).differentiable_loss(
            gtm.model, gtm.guide, x, c=c, mask=mask
        )


def loss_and_grads(fn, gtm, seed):
    pyro.set_rng_seed(seed)
    loss = fn()
    params = [p for p in gtm.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    return loss.detach(), grads


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("masked", [False, True])
def test_direct_elbo_equals_pyro_trace_elbo_and_its_gradients(case, masked):
    gtm, x, c, mask = make(case)
    mask = mask if masked else None
    for seed in (0, 1):
        pyro_l, pyro_g = loss_and_grads(lambda: pyro_loss(gtm, x, c, mask), gtm, seed)
        for unrolled in (True, False):  # weight gradients batched over the steps, or not
            direct_l, direct_g = loss_and_grads(
                lambda: direct_elbo_loss(gtm, x, c, mask, unrolled=unrolled),  # noqa: B023
                gtm, seed)
            torch.testing.assert_close(direct_l, pyro_l, rtol=1e-12, atol=1e-10)
            for a, b in zip(direct_g, pyro_g, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    # the same draws: a different seed gives a different loss
    other_draws = loss_and_grads(lambda: direct_elbo_loss(gtm, x, c, mask), gtm, 5)[0]
    assert not torch.equal(other_draws, direct_l)


def test_direct_terms_are_masked_and_add_up_to_the_loss():
    gtm, x, c, mask = make("introspective-penalty")
    pyro.set_rng_seed(0)
    terms = direct_elbo_terms(gtm, x, c, mask, check_inputs=True)
    for key in ("log_p_x", "log_p_z", "log_q_z", "penalty"):
        assert getattr(terms, key).shape == (B, T)
        assert torch.all(getattr(terms, key)[~mask] == 0)
    assert torch.all(terms.penalty[mask] > 0)
    total = terms.log_p_x.sum() + terms.log_p_z.sum() - terms.log_q_z.sum() - terms.penalty.sum()
    torch.testing.assert_close(terms.loss, -total)




@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_kl_annealing_weights_the_latent_terms_as_pyro_does(beta):
    gtm, x, c, mask = make("introspective-penalty")
    pyro_l, pyro_g = loss_and_grads(lambda: pyro_loss(gtm, x, c, mask, beta), gtm, 0)
    direct_l, direct_g = loss_and_grads(
        lambda: direct_elbo_loss(gtm, x, c, mask, beta=torch.tensor(beta, dtype=x.dtype)),
        gtm, 0)
    torch.testing.assert_close(direct_l, pyro_l, rtol=1e-12, atol=1e-10)
    for a, b in zip(direct_g, pyro_g, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert not torch.isclose(direct_l, loss_and_grads(
        lambda: direct_elbo_loss(gtm, x, c, mask), gtm, 0)[0])


def test_a_memory_that_is_a_latent_variable_is_not_written_out():
    kanerva = build_gtm("kanerva", frame_shape=FRAME, sequence_length=T, **SMALL)
    assert "Kanerva" in unsupported(kanerva)
    assert unsupported(make("dnc")[0]) is None
