"""What the Kanerva memory promises beyond the conformance suite (``test_memory_interface.py``,
which runs it like the other memories from its deterministic ``initial_state``, the prior mean):
the exact Bayesian writes, the least-squares addresses, the memory as a Pyro latent site in a GTM
(model and guide, path reuse, generation, evaluation) and its options."""

import math

import memory_contract as contract  # tests/ is on sys.path under pytest
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions.kl import kl_divergence
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam

from pgtm.cli import build_parser
from pgtm.commands import model_options_from_args
from pgtm.inference.evaluate import evaluate, log_weights
from pgtm.memories.kanerva import (
    SITE,
    KanervaMemory,
    KanervaState,
    bayes_posterior,
    bayes_update,
    least_squares_address,
    read,
)
from pgtm.models import build_gtm, count_parameters

F64 = torch.float64
Z, H, F, K, C = 3, 5, 6, 4, 7  # latent, controller, feature size, slots, code size
FRAME, T = (1, 1, 8), 6


def randn(*shape, generator, dtype=F64):
    return torch.randn(*shape, generator=generator, dtype=dtype)


def random_spd(*batch, size, generator, dtype=F64):
    a = randn(*batch, size, size, generator=generator, dtype=dtype)
    eye = torch.eye(size, dtype=dtype)
    return a @ a.transpose(-1, -2) / size + 0.5 * eye


def make_memory(dtype=F64, **options):
    torch.manual_seed(0)
    options = {"feature_size": F, "num_slots": K, "code_size": C, **options}
    return KanervaMemory(Z, H, **options).to(dtype)


def small_gtm(dtype=torch.float32, **options):
    torch.manual_seed(0)
    return build_gtm("kanerva", frame_shape=FRAME, sequence_length=T, network="mlp",
                     **options).to(dtype)


def frames(batch=3, dtype=torch.float32):
    generator = torch.Generator().manual_seed(5)
    return torch.bernoulli(torch.full((batch, T, *FRAME), 0.4), generator=generator).to(dtype)


# ----------------------------------------------------------------------------- writing
def test_sequential_rank_one_updates_equal_the_closed_form_posterior():
    g = torch.Generator().manual_seed(0)
    batch, steps, noise = (2, 3), 9, 0.7
    prior_mean = randn(*batch, K, C, generator=g)
    prior_cov = random_spd(*batch, size=K, generator=g)  # a full U_0
    addresses, codes = randn(*batch, steps, K, generator=g), randn(*batch, steps, C, generator=g)
    mean, cov = prior_mean, prior_cov
    for t in range(steps):
        mean, cov = bayes_update(mean, cov, addresses[..., t, :], codes[..., t, :], noise)
    # the closed form, written with explicit inverses
    w_t = addresses.transpose(-1, -2)
    prior_precision = torch.linalg.inv(prior_cov)
    expected_cov = torch.linalg.inv(prior_precision + w_t @ addresses / noise)
    expected_mean = expected_cov @ (prior_precision @ prior_mean + w_t @ codes / noise)
    torch.testing.assert_close(cov, expected_cov, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-9, atol=1e-11)
    closed_mean, closed_cov = bayes_posterior(prior_mean, prior_cov, addresses, codes, noise)
    torch.testing.assert_close(closed_cov, expected_cov, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(closed_mean, expected_mean, rtol=1e-9, atol=1e-11)


def test_a_zero_address_writes_nothing():
    g = torch.Generator().manual_seed(1)
    mean, cov = randn(2, K, C, generator=g), random_spd(2, size=K, generator=g)
    new_mean, new_cov = bayes_update(mean, cov, torch.zeros(2, K, dtype=F64),
                                     randn(2, C, generator=g), 1.0)
    assert torch.equal(new_mean, mean) and torch.equal(new_cov, cov)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_covariance_stays_symmetric_positive_definite_after_many_updates(dtype):
    """500 writes at least-squares addresses (as the guide makes them) of codes of size 3, on
    16 slots: U stays exactly symmetric, positive definite, below U_0, and (float64) equal to
    the closed form."""
    g = torch.Generator().manual_seed(2)
    slots, code_size, steps, noise = 16, 24, 500, 0.5
    prior_mean = randn(slots, code_size, generator=g, dtype=dtype)
    prior_cov = torch.diag(torch.rand(slots, generator=g, dtype=F64) + 0.5).to(dtype)
    mean, cov = prior_mean, prior_cov
    addresses, codes = [], []
    for _ in range(steps):
        code = 3 * randn(code_size, generator=g, dtype=dtype)
        address = least_squares_address(mean, code, 1.0)
        mean, cov = bayes_update(mean, cov, address, code, noise)
        addresses.append(address)
        codes.append(code)
    assert torch.equal(cov, cov.transpose(-1, -2))
    eigenvalues = torch.linalg.eigvalsh(cov.double())
    assert (eigenvalues > 0).all()
    torch.linalg.cholesky(cov)  # raises if not positive definite in its own precision
    # writes only remove variance: U_0 - U is positive semi-definite
    assert torch.linalg.eigvalsh((prior_cov - cov).double()).min() > -1e-5
    if dtype == F64:
        expected_mean, expected_cov = bayes_posterior(
            prior_mean, prior_cov, torch.stack(addresses), torch.stack(codes), noise
        )
        torch.testing.assert_close(cov, expected_cov, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(mean, expected_mean, rtol=1e-7, atol=1e-8)


# ----------------------------------------------------------------------------- addressing
def test_least_squares_address_equals_lstsq_and_the_normal_equations():
    g = torch.Generator().manual_seed(3)
    memory, key, regulariser = randn(3, 1, K, C, generator=g), randn(5, C, generator=g), 0.3
    address = least_squares_address(memory, key, regulariser)  # leading dims broadcast
    assert address.shape == (3, 5, K)
    eye = torch.eye(K, dtype=F64)
    for i in range(3):
        for j in range(5):
            m, k = memory[i, 0], key[j]
            # min ||k - w^T M||^2 + lambda ||w||^2 = min ||[M^T; sqrt(lambda) I] w - [k; 0]||^2
            stacked = torch.cat([m.T, math.sqrt(regulariser) * eye])
            target = torch.cat([k, torch.zeros(K, dtype=F64)]).unsqueeze(-1)
            lstsq = torch.linalg.lstsq(stacked, target).solution.squeeze(-1)
            normal = torch.linalg.solve(m @ m.T + regulariser * eye, m @ k)
            torch.testing.assert_close(address[i, j], lstsq, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(address[i, j], normal, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(read(memory, address), (address.unsqueeze(-2) @ memory)[..., 0, :])


def test_gradcheck_of_update_address_and_read_in_float64():
    g = torch.Generator().manual_seed(4)
    eye = torch.eye(K, dtype=F64)

    def write_then_read(prior_mean, factor, code, key):
        prior_cov = factor @ factor.transpose(-1, -2) + eye  # SPD under the finite differences
        address = least_squares_address(prior_mean, code, 0.5)
        mean, cov = bayes_update(prior_mean, prior_cov, address, code, 0.8)
        return read(mean, least_squares_address(mean, key, 0.5)), mean, cov

    inputs = [
        randn(2, K, C, generator=g),
        randn(2, K, K, generator=g),
        randn(2, C, generator=g),
        randn(2, C, generator=g),
    ]
    inputs = [t.requires_grad_(True) for t in inputs]
    assert torch.autograd.gradcheck(write_then_read, inputs)


# ----------------------------------------------------------------------------- q(M | x)
def test_posterior_of_a_batch_equals_b_runs_of_one_and_masked_steps_are_not_written():
    memory = make_memory()
    g = torch.Generator().manual_seed(6)
    features = randn(3, 2, T, F, generator=g)
    mask = torch.ones(3, 2, T, dtype=torch.bool)
    mask[1, 0, 4:] = False
    mask[2, 1, 2:] = False
    mean, cov = memory.posterior(features, mask)
    assert mean.shape == (3, 2, K, C) and cov.shape == (3, 2, K, K)
    for i in range(3):
        for j in range(2):
            length = int(mask[i, j].sum())  # the masked steps are a suffix here
            one_mean, one_cov = memory.posterior(features[i, j, :length].unsqueeze(0))
            torch.testing.assert_close(one_mean[0], mean[i, j], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(one_cov[0], cov[i, j], rtol=1e-12, atol=1e-12)
    # the posterior is the exact Bayesian posterior given the codes and the addresses used
    codes = memory.code(features[0, 0])
    addresses, running = [], memory.prior()
    for code in codes:
        addresses.append(least_squares_address(running[0], code, memory.address_regulariser))
        running = bayes_update(*running, addresses[-1], code, memory.write_noise)
    closed = bayes_posterior(*memory.prior(), torch.stack(addresses), codes, memory.write_noise)
    torch.testing.assert_close(closed[0], mean[0, 0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(closed[1], cov[0, 0], rtol=1e-9, atol=1e-10)


def test_read_is_w_transpose_m_and_broadcasts_against_the_latent():
    memory = make_memory()
    g = torch.Generator().manual_seed(7)
    state = KanervaState(randn(4, 1, K, C, generator=g))
    h, z = randn(4, 1, H, generator=g), randn(7, 4, 1, Z, generator=g)
    out = memory(state, h, z)
    assert out.read.shape == (7, 4, 1, C) and out.state.memory.shape == (7, 4, 1, K, C)
    assert out.weights is None and out.gates is None and out.penalty is None
    address = least_squares_address(state.memory, memory.key(h), memory.address_regulariser)
    torch.testing.assert_close(out.read[0], read(state.memory, address))


def test_bad_options_and_inputs_are_rejected():
    for options, match in [
        ({"write_noise": 0.0}, "write_noise"),
        ({"address_regulariser": -1.0}, "address_regulariser"),
        ({"code_size": 0}, "code_size"),
        ({"num_slots": 1.5}, "num_slots"),
    ]:
        with pytest.raises(ValueError, match=match):
            make_memory(**options)
    memory = make_memory()
    with pytest.raises(ValueError, match="features"):
        memory.posterior(torch.zeros(2, T, F + 1, dtype=F64))
    with pytest.raises(ValueError, match="mask"):
        memory.posterior(torch.zeros(2, T, F, dtype=F64), torch.ones(2, T - 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="feature_size"):
        make_memory(feature_size=None).posterior(torch.zeros(2, T, F, dtype=F64))
    with pytest.raises(ValueError, match="state"):
        memory(KanervaState(torch.zeros(2, K + 1, C, dtype=F64)), torch.zeros(2, H, dtype=F64),
               torch.zeros(2, Z, dtype=F64))


# ----------------------------------------------------------------------------- in a GTM
@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO])
def test_default_gtm_takes_an_svi_step_with_a_finite_loss(elbo):
    gtm = small_gtm()
    assert gtm.memory.num_slots == 32 and gtm.memory.code_size == 160
    assert gtm.memory.feature_size == 256  # build_gtm passes the encoder's output size
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    before = [p.detach().clone() for p in gtm.memory.parameters()]
    svi = SVI(gtm.model, gtm.guide, Adam({"lr": 1e-3}), elbo(max_plate_nesting=2))
    loss = svi.step(frames())
    pyro.clear_param_store()
    assert math.isfinite(loss)
    pairs = zip(gtm.memory.parameters(), before, strict=True)
    assert all(not torch.equal(p, b) for p, b in pairs)  # prior, key and code layers all learn


def test_memory_site_in_model_and_guide_traces_with_matching_shapes():
    gtm = small_gtm()
    x = frames()
    pyro.set_rng_seed(0)
    with pyro.plate("particles", 7, dim=-3):
        guide_trace = poutine.trace(gtm.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(gtm.model, guide_trace)).get_trace(x)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    guide_site, model_site = guide_trace.nodes[SITE], model_trace.nodes[SITE]
    assert model_site["value"] is guide_site["value"]  # the model replays the guide's M
    for site in (guide_site, model_site):
        assert not site["is_observed"]
        assert site["value"].shape == (7, 3, 1, 160, 32)  # M^T: [*particles, B, 1, C, K]
        assert site["log_prob"].shape == (7, 3, 1)
        assert site["fn"].event_shape == (160, 32)
        assert torch.isfinite(site["log_prob"]).all()
    assert model_trace.nodes["z_0"]["value"].shape == (7, 3, 1, 32)
    # the prior is the learned one
    prior = model_site["fn"].base_dist
    torch.testing.assert_close(prior.loc, gtm.memory.prior_mean.T.expand_as(prior.loc))


def test_analytic_kl_of_the_memory_is_the_matrix_normal_kl():
    """The KL TraceMeanField_ELBO uses (Independent(MultivariateNormal) pair) equals the
    matrix-normal KL 1/2 [C tr(U0^-1 U) + tr((R-R0)^T U0^-1 (R-R0)) - KC + C log|U0|/|U|]."""
    gtm = small_gtm(F64)
    with torch.no_grad():
        gtm.memory.code.weight.mul_(10)  # codes large enough to move q(M) away from p(M)
    x = frames(dtype=F64)
    guide_trace = poutine.trace(gtm.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(gtm.model, guide_trace)).get_trace(x)
    q, p = guide_trace.nodes[SITE]["fn"], model_trace.nodes[SITE]["fn"]
    kl = kl_divergence(q, p)
    assert kl.shape == (3, 1)
    mean, cov = gtm.memory.posterior(gtm.encoder(x).unsqueeze(1))
    prior_mean, prior_cov = gtm.memory.prior()
    slots, code_size = prior_mean.shape
    precision = torch.linalg.inv(prior_cov)
    diff = mean - prior_mean
    expected = 0.5 * (
        code_size * (precision @ cov).diagonal(dim1=-2, dim2=-1).sum(-1)
        + (diff.transpose(-1, -2) @ precision @ diff).diagonal(dim1=-2, dim2=-1).sum(-1)
        - slots * code_size
        + code_size * (torch.logdet(prior_cov) - torch.logdet(cov))
    )
    torch.testing.assert_close(kl, expected, rtol=1e-9, atol=1e-9)
    assert (kl > 1).all()


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO])
def test_reusing_the_guide_path_leaves_loss_and_gradients_unchanged(elbo, monkeypatch):
    gtm = small_gtm(F64, latent_size=4, controller_size=16, feature_size=16, code_size=12,
                    num_slots=5)
    x = frames(dtype=F64)
    steps_in_model = []
    path_step = gtm.path_step
    results = []
    for reuse in (True, False):
        gtm.reuse_path = reuse
        gtm.zero_grad()
        pyro.set_rng_seed(3)
        guide_trace = poutine.trace(gtm.guide).get_trace(x)
        monkeypatch.setattr(gtm, "path_step", lambda *a, _reuse=reuse: steps_in_model.append(
            _reuse) or path_step(*a))
        model_trace = poutine.trace(poutine.replay(gtm.model, guide_trace)).get_trace(x)
        monkeypatch.setattr(gtm, "path_step", path_step)
        assert model_trace.nodes[SITE]["value"] is guide_trace.nodes[SITE]["value"]
        pyro.set_rng_seed(3)
        loss = elbo(max_plate_nesting=2).differentiable_loss(gtm.model, gtm.guide, x)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in gtm.parameters()]))
    # with reuse the model computed no step of its own; without, all of them
    assert steps_in_model == [False] * T
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=0)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_model_on_its_own_samples_the_memory_from_the_prior():
    gtm = small_gtm(F64)
    x = frames(dtype=F64)
    gtm.guide(x)
    trace = poutine.trace(gtm.model).get_trace(x)  # a fresh prior sample: own path
    trace.compute_log_prob()
    assert torch.isfinite(trace.log_prob_sum())
    memory = trace.nodes[SITE]["value"]
    # conditioned on another M (and other latents) the model recomputes its path from it
    latents = {SITE: memory.detach().clone()}
    latents.update({f"z_{t}": trace.nodes[f"z_{t}"]["value"].detach().clone() for t in range(T)})
    gtm.guide(x)
    conditioned = poutine.trace(poutine.condition(gtm.model, latents)).get_trace(x)
    torch.testing.assert_close(conditioned.log_prob_sum(), trace.log_prob_sum())


def test_generate_samples_the_memory_from_the_prior_or_from_q_given_the_observed_frames(
    monkeypatch,
):
    gtm = small_gtm()
    calls = []
    for hook in ("prior_initial_state", "posterior_initial_state"):
        original = getattr(gtm.memory, hook)

        def record(*args, _hook=hook, _original=original):
            calls.append((_hook, args[0] if _hook == "prior_initial_state" else args[0].shape))
            return _original(*args)

        monkeypatch.setattr(gtm.memory, hook, record)
    x = frames()
    free = gtm.generate(T, 2)
    observed = gtm.generate(T, x=x, observed_steps=3)
    assert free.frames.shape == (2, T, *FRAME) and observed.frames.shape == x.shape
    assert ((observed.frames >= 0) & (observed.frames <= 1)).all()
    assert free.weights is None
    assert calls == [("prior_initial_state", (2,)),
                     ("posterior_initial_state", torch.Size([3, 3, 256]))]


def test_evaluate_reports_the_memory_kl_separately():
    gtm = small_gtm()
    with torch.no_grad():
        gtm.memory.code.weight.mul_(10)
    x = frames()
    mask = torch.ones(3, T, dtype=torch.bool)
    mask[2, 4:] = False
    pyro.set_rng_seed(0)
    r = evaluate(gtm.model, gtm.guide, x, mask=mask, num_particles=40, chunk_size=20,
                 keep_tensors=True)
    assert len(r["kl"]) == T and r["global_kl_seq"].shape == (3,)
    assert r["global_kl"] == pytest.approx(float(r["global_kl_seq"].mean()))
    # the bound is the per-step terms plus the memory's KL, which is not in the per-step kl
    torch.testing.assert_close(r["elbo"], -r["nll_seq"] - r["kl_seq"] - r["global_kl_seq"])
    assert (r["iwae"] >= r["elbo"] - 1e-9).all()  # Jensen, on the same particles
    # the estimate is close to the analytic KL of q(M | x) to p(M)
    pyro.set_rng_seed(1)
    lw = log_weights(gtm.model, gtm.guide, x, mask=mask, num_particles=200)
    guide_trace = poutine.trace(gtm.guide).get_trace(x, None, mask)
    model_trace = poutine.trace(poutine.replay(gtm.model, guide_trace)).get_trace(x, None, mask)
    exact = kl_divergence(guide_trace.nodes[SITE]["fn"], model_trace.nodes[SITE]["fn"])
    estimate, spread = lw.kl_global.mean(0), lw.kl_global.std(0) / math.sqrt(200)
    assert (exact > 1).all()
    assert ((estimate - exact[:, 0]).abs() < 5 * spread + 1e-3).all()


def test_default_parameter_count():
    """32 slots of code size 160: 5,152 prior parameters, key and code layers 41,120 each;
    the GTM (read size 160) is within 5% of the Introspective one (1,932,881)."""
    gtm = build_gtm("kanerva", sequence_length=15)
    assert (count_parameters(gtm.memory), count_parameters(gtm)) == (87_392, 1_999_713)
    assert abs(count_parameters(gtm) - 1_932_881) < 0.05 * 1_932_881


# ----------------------------------------------------------------------------- command line
def options_of(*argv):
    args = build_parser().parse_args(["train", "perfect-recall", "--out", "X", *argv])
    return model_options_from_args(args)


def test_command_line_options_reach_the_memory():
    options = options_of("--model", "kanerva", "--kanerva-slots", "16", "--kanerva-code-size",
                         "48", "--kanerva-address-regulariser", "0.5",
                         "--kanerva-write-noise", "0.25")
    expected = {"num_slots": 16, "code_size": 48, "address_regulariser": 0.5,
                "write_noise": 0.25}
    assert {k: options[k] for k in expected} == expected
    assert not set(expected) & set(options_of("--model", "kanerva"))
    gtm = build_gtm("kanerva", frame_shape=FRAME, sequence_length=T, **options)
    assert (gtm.memory.num_slots, gtm.memory.read_size) == (16, 48)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--kanerva-slots", "8"], "--kanerva-slots applies to --model kanerva only"),
        (["--model", "fast-weights", "--kanerva-code-size", "8"],
         "--kanerva-code-size applies to --model kanerva only"),
        (["--model", "kanerva", "--num-heads", "3"], "--num-heads does not apply"),
    ],
)
def test_command_line_options_of_other_models_are_rejected(argv, message):
    with pytest.raises(ValueError, match=message):
        options_of(*argv)


class TestKanervaContract(contract.MemoryContract):
    # run from its deterministic initial_state (the prior mean); its read does not depend on z,
    # but it broadcasts z's leading dims like the memories that write it
    name = "kanerva"
    options = {"num_slots": contract.N, "code_size": C}
    state_shapes = {"memory": (contract.N, C)}
    read_size = C
    checks_sizes = True
    writes_latent = False  # written by its guide hook, from the frames' features
    hook_only_parameters = frozenset({"prior_variance_raw"})  # the prior variance
    matrix_field = "memory"
