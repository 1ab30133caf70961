"""Correctness tests for ``pgtm.inference.evaluate``.

The reference model is a hand-written linear-Gaussian state-space model (LGSSM) following
``docs/CONVENTIONS.md``; its exact log-likelihood comes from an independent numpy Kalman filter.
The guide is the exact smoothing posterior of the LGSSM, ``q(z_t | z_{t-1}, x) =
p(z_t | z_{t-1}, x_{t:T})`` (a backward information filter), optionally with its covariance
inflated by ``inflate**2`` so that it is a *good but imperfect* proposal.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from pgtm.inference.evaluate import (
    LogWeights,
    evaluate,
    log_weights,
    save_json,
    time_index,
)

# --------------------------------------------------------------------------------------------
# LGSSM: z_0 ~ N(0, p0^2 I), z_t = A z_{t-1} + q eps_t, x_t = C z_t + r eta_t
# --------------------------------------------------------------------------------------------

Z, D = 2, 3
A = np.array([[0.9, 0.2], [-0.1, 0.8]])
CM = np.array([[1.0, 0.0], [0.5, 1.0], [-0.3, 0.7]])
Q_STD, R_STD, P0_STD = 0.5, 0.6, 1.0


def simulate(B: int, T: int, seed: int) -> torch.Tensor:
    """Draw ``x [B, T, D]`` (float32) from the LGSSM with numpy (independent of Pyro)."""
    rng = np.random.default_rng(seed)
    x = np.empty((B, T, D))
    for b in range(B):
        z = rng.normal(0.0, P0_STD, Z)
        for t in range(T):
            if t > 0:
                z = A @ z + rng.normal(0.0, Q_STD, Z)
            x[b, t] = CM @ z + rng.normal(0.0, R_STD, D)
    return torch.tensor(x, dtype=torch.float32)


def kalman_loglik(x: torch.Tensor) -> np.ndarray:
    """Exact ``log p(x_b)`` per sequence ``[B]`` by a float64 Kalman filter."""
    xs = x.double().numpy()
    out = []
    for xb in xs:
        mu, P = np.zeros(Z), np.eye(Z) * P0_STD**2
        ll = 0.0
        for t, xt in enumerate(xb):
            if t > 0:
                mu, P = A @ mu, A @ P @ A.T + np.eye(Z) * Q_STD**2
            S = CM @ P @ CM.T + np.eye(D) * R_STD**2
            e = xt - CM @ mu
            ll += -0.5 * (e @ np.linalg.solve(S, e) + np.linalg.slogdet(2 * np.pi * S)[1])
            G = P @ CM.T @ np.linalg.inv(S)
            mu, P = mu + G @ e, (np.eye(Z) - G @ CM) @ P
        out.append(ll)
    return np.array(out)


def _full_mask(x, mask):
    B, T = x.shape[:2]
    return mask if mask is not None else torch.ones(B, T, dtype=torch.bool, device=x.device)


def lgssm_model(x, c=None, mask=None, penalised=False, extra=False):
    """The LGSSM; with ``penalised`` it also has a masked per-step penalty factor (-0.5 per
    valid step) and a batch-global one (-2, outside the "sequences" plate); with ``extra`` a
    per-sequence latent ``"offset"`` ~ N(0, 1) without a time index (it affects nothing)."""
    B, T, _ = x.shape
    m = _full_mask(x, mask)
    a, cm = torch.tensor(A).to(x), torch.tensor(CM).to(x)
    zs = []
    with pyro.plate("sequences", B, dim=-2):
        if extra:
            pyro.sample("offset", dist.Normal(x.new_zeros(B, 1), 1.0))
        for t in range(T):
            if t == 0:
                d = dist.Normal(x.new_zeros(B, 1, Z), P0_STD)
            else:
                d = dist.Normal(zs[-1] @ a.T, Q_STD)
            with poutine.mask(mask=m[:, t : t + 1]):
                zs.append(pyro.sample(f"z_{t}", d.to_event(1)))  # batch [*K, B, 1]
        z = torch.cat(zs, dim=-2)  # [*K, B, T, Z]
        with pyro.plate("time", T, dim=-1), poutine.mask(mask=m):
            pyro.sample("x", dist.Normal(z @ cm.T, R_STD).to_event(1), obs=x)  # batch [*K, B, T]
            if penalised:
                pyro.factor("penalty_step", x.new_full((B, T), -0.5))
    if penalised:
        pyro.factor("penalty_global", x.new_tensor(-2.0))


def _smoothing_factors(x, m):
    """Exact posterior transitions ``z_t | z_{t-1}, x ~ N(G_t z_{t-1} + o_t, S_t)``, float64.

    Backward information filter; masked steps carry no observation information, so a sequence
    whose tail is masked gets exactly the posterior of its truncated version.
    """
    xd, w_all = x.double(), m.double()
    B, T, _ = x.shape
    a, cm = torch.tensor(A), torch.tensor(CM)
    eye = torch.eye(Z, dtype=torch.float64)
    qi = eye / Q_STD**2
    ctric = cm.T @ cm / R_STD**2
    J = torch.zeros(B, Z, Z, dtype=torch.float64)
    h = torch.zeros(B, Z, dtype=torch.float64)
    gains, offsets, covs = [None] * T, [None] * T, [None] * T
    for t in reversed(range(T)):
        w = w_all[:, t]
        L = J + w[:, None, None] * ctric
        l = h + w[:, None] * (xd[:, t] @ cm) / R_STD**2
        S = torch.linalg.inv((eye / P0_STD**2 if t == 0 else qi) + L)
        S = (S + S.transpose(-1, -2)) / 2
        offsets[t], covs[t] = (S @ l[..., None]).squeeze(-1), S
        if t > 0:
            gains[t] = S @ qi @ a
            J = a.T @ qi @ a - a.T @ qi @ S @ qi @ a
            J = (J + J.transpose(-1, -2)) / 2
            h = (a.T @ qi @ S @ l[..., None]).squeeze(-1)
    return gains, offsets, covs


def make_guide(inflate: float = 1.0, extra: bool = False):
    def guide(x, c=None, mask=None):
        B, T, _ = x.shape
        m = _full_mask(x, mask)
        gains, offsets, covs = _smoothing_factors(x.detach().cpu(), m.cpu())
        zs = []
        with pyro.plate("sequences", B, dim=-2):
            if extra:
                pyro.sample("offset", dist.Normal(x.new_full((B, 1), 0.3), 0.8))
            for t in range(T):
                loc = offsets[t][:, None, :].to(x)  # [B, 1, Z]
                if t > 0:
                    loc = loc + (gains[t][:, None].to(x) @ zs[-1][..., None]).squeeze(-1)
                cov = (covs[t][:, None] * inflate**2).to(x)  # [B, 1, Z, Z]
                with poutine.mask(mask=m[:, t : t + 1]):
                    zs.append(
                        pyro.sample(f"z_{t}", dist.MultivariateNormal(loc, covariance_matrix=cov))
                    )

    return guide


def penalised_model(x, c=None, mask=None):
    return lgssm_model(x, c, mask, penalised=True)


@pytest.fixture(scope="module")
def data():
    x = simulate(B=4, T=8, seed=123)
    return x, kalman_loglik(x)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def test_time_index():
    assert time_index("z_0") == 0
    assert time_index("z_12") == 12
    assert time_index("read_weights_3") == 3
    assert time_index("x") is None
    assert time_index("z_") is None
    assert time_index("z_1a") is None


# --------------------------------------------------------------------------------------------
# bounds on the LGSSM
# --------------------------------------------------------------------------------------------


def test_log_weights_exact_posterior_gives_exact_loglik(data):
    """With the exact smoothing posterior as proposal every importance weight equals p(x):
    a sharp check of the per-site bookkeeping (float32 model, so tolerance 1e-3 nats)."""
    x, exact = data
    pyro.set_rng_seed(0)
    lw = log_weights(lgssm_model, make_guide(1.0), x, num_particles=7)
    assert isinstance(lw, LogWeights)
    K, (B, T) = 7, x.shape[:2]
    assert lw.log_w.shape == (K, B) and lw.penalty.shape == (K, B)
    for t in (lw.log_p_x, lw.log_p_z, lw.log_q_z):
        assert t.shape == (K, B, T)
    np.testing.assert_allclose(lw.log_w.double().numpy(), np.broadcast_to(exact, (K, B)), atol=1e-3)
    total = (lw.log_p_x + lw.log_p_z - lw.log_q_z).sum(-1)
    torch.testing.assert_close(total, lw.log_w)
    assert (lw.penalty == 0).all() and (lw.log_extra == 0).all()
    assert (lw.log_q_z != 0).all() and (lw.log_p_z != 0).all()


def test_log_weights_sites_without_time_index(data):
    """A latent without a ``_t`` suffix goes to ``log_extra`` and into ``log_w``; a model site
    that is not observed and not in the guide (drawn from its prior) cancels and is left out."""
    x, exact = data
    pyro.set_rng_seed(2)
    guide_trace = poutine.trace(make_guide(1.0, extra=True)).get_trace(x)
    offset = guide_trace.nodes["offset"]["value"]  # [B, 1]
    expected = dist.Normal(0.0, 1.0).log_prob(offset) - dist.Normal(0.3, 0.8).log_prob(offset)
    pyro.set_rng_seed(2)
    with_extra = log_weights(
        lambda x, c=None, mask=None: lgssm_model(x, c, mask, extra=True),
        make_guide(1.0, extra=True),
        x,
        num_particles=1,
    )
    torch.testing.assert_close(with_extra.log_extra, expected.reshape(1, -1))
    np.testing.assert_allclose(
        (with_extra.log_w - with_extra.log_extra).double().numpy()[0], exact, atol=1e-3
    )
    pyro.set_rng_seed(2)
    prior_only = log_weights(
        lambda x, c=None, mask=None: lgssm_model(x, c, mask, extra=True),
        make_guide(1.0),
        x,
        num_particles=5,
    )
    assert (prior_only.log_extra == 0).all()
    np.testing.assert_allclose(prior_only.log_w.double().numpy(), np.broadcast_to(exact, (5, 4)),
                               atol=1e-3)


def test_kl_of_latents_without_time_index_is_reported_separately(data):
    """A sequence-level latent (like the Kanerva memory ``"memory"``) is in the bounds and in
    ``global_kl``; the per-step ``kl`` holds the ``z_t`` alone."""
    x, _ = data

    def model(x, c=None, mask=None):
        return lgssm_model(x, c, mask, extra=True)

    guide = make_guide(1.25, extra=True)
    pyro.set_rng_seed(4)
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace(x)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()

    def kl(name):
        return guide_trace.nodes[name]["log_prob"] - model_trace.nodes[name]["log_prob"]

    offset_kl = kl("offset")[:, 0].double()  # [B]
    step_kl = torch.cat([kl(f"z_{t}") for t in range(x.shape[1])], dim=-1).double()  # [B, T]
    pyro.set_rng_seed(4)
    lw = log_weights(model, guide, x, num_particles=1)
    torch.testing.assert_close(lw.kl_global, -lw.log_extra)  # no observed extra sites
    pyro.set_rng_seed(4)
    r = evaluate(model, guide, x, num_particles=1, chunk_size=1, keep_tensors=True)
    torch.testing.assert_close(r["global_kl_seq"], offset_kl, atol=1e-5, rtol=0)
    assert r["global_kl"] == pytest.approx(float(offset_kl.mean()), abs=1e-5)
    torch.testing.assert_close(r["kl_seq"], step_kl.sum(1), atol=1e-4, rtol=0)
    torch.testing.assert_close(r["kl"], step_kl.mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(r["elbo"], -r["nll_seq"] - r["kl_seq"] - r["global_kl_seq"])
    plain = evaluate(lgssm_model, make_guide(1.25), x, num_particles=3)
    assert plain["global_kl"] == 0.0 and plain["global_kl_seq"] == [0.0] * x.shape[0]


def test_iwae_matches_kalman_loglik(data):
    """IWAE with K = 4000 (chunks of 1000) vs the exact Kalman log-likelihood.

    Proposal: exact posterior with covariance inflated by 1.25^2 (16 latent dims). Then
    E_q[w^2]/E_q[w]^2 = prod over dims of s^2/sqrt(2 s^2 - 1) ≈ 3.0, so the IWAE estimate has
    sd ≈ sqrt(2.0 / 4000) ≈ 0.023 nats and bias ≈ 2.0 / (2 * 4000) ≈ 3e-4 nats. Tolerance
    0.15 nats per sequence is > 6 sd, while the ELBO gap (KL ≈ 16 * 0.5 (s^2 - 1 - log s^2)
    ≈ 0.93 nats) is far outside it, so the test can tell IWAE from ELBO.
    """
    x, exact = data
    pyro.set_rng_seed(1)
    res = evaluate(lgssm_model, make_guide(1.25), x, num_particles=4000, chunk_size=1000)
    iwae, elbo = np.array(res["iwae"]), np.array(res["elbo"])
    assert res["num_particles"] == 4000
    assert np.all(np.abs(iwae - exact) < 0.15), (iwae - exact)
    assert np.all(elbo <= iwae)
    assert np.all(iwae <= exact + 0.15)
    assert np.all(exact - elbo > 0.5), exact - elbo  # ELBO is visibly looser
    # the ELBO splits into per-sequence NLL and KL
    np.testing.assert_allclose(
        -np.array(res["nll_seq"]) - np.array(res["kl_seq"]), elbo, rtol=0, atol=1e-6
    )
    assert all(0.0 <= v <= 1.0 for v in res["khat_reading"].values())
    assert res["khat_max"] < 0.7  # bounded weights (wider proposal): PSIS says reliable


def test_iwae_agrees_with_pyro_renyi_elbo(data):
    """``evaluate``'s IWAE vs ``pyro.infer.RenyiELBO(alpha=0)`` (the same estimator).

    All sites live in the "sequences" plate, so RenyiELBO keeps that dim, does the logsumexp per
    sequence and sums: ``-loss == sum_b iwae_b`` in expectation. K = 20 particles, R = 20
    independent repeats of each; tolerance 4 standard errors of the difference of the means.
    """
    x, _ = data
    guide = make_guide(1.4)
    K, R = 20, 20
    renyi = pyro.infer.RenyiELBO(
        alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=3
    )
    ours, theirs, elbos = [], [], []
    pyro.set_rng_seed(3)
    for _ in range(R):
        res = evaluate(lgssm_model, guide, x, num_particles=K, chunk_size=K)
        ours.append(res["iwae_sum"])
        elbos.append(res["elbo_sum"])
        theirs.append(-renyi.loss(lgssm_model, guide, x))
    ours, theirs, elbos = map(np.array, (ours, theirs, elbos))
    se = math.sqrt(ours.var(ddof=1) / R + theirs.var(ddof=1) / R)
    assert abs(ours.mean() - theirs.mean()) < 4 * se, (ours.mean(), theirs.mean(), se)
    # the comparison is sharp: IWAE_20 is far from the ELBO on this scale
    assert ours.mean() - elbos.mean() > 10 * se


def test_chunking_and_single_particle(data):
    x, _ = data
    guide = make_guide(1.25)
    K = 1000
    pyro.set_rng_seed(4)
    chunked = evaluate(lgssm_model, guide, x, num_particles=K, chunk_size=128, keep_tensors=True)
    pyro.set_rng_seed(4)
    whole = evaluate(lgssm_model, guide, x, num_particles=K, chunk_size=K, keep_tensors=True)
    assert chunked["log_w"].shape == whole["log_w"].shape == (K, 4)  # 7 x 128 + 104
    # MC error, per sequence, from the weights themselves (delta method for the IWAE)
    for key, se_fn in (
        ("elbo", lambda lw: lw.std(0) / math.sqrt(K)),
        ("iwae", lambda lw: (lw - lw.logsumexp(0)).exp().mul(K).std(0) / math.sqrt(K)),
    ):
        se = torch.sqrt(se_fn(chunked["log_w"]) ** 2 + se_fn(whole["log_w"]) ** 2)
        diff = (chunked[key] - whole[key]).abs()
        assert (diff < 5 * se).all(), (key, diff, se)
    # chunks are combined exactly: recombining the kept weights reproduces the bounds
    lw = chunked["log_w"]
    torch.testing.assert_close(chunked["iwae"], lw.logsumexp(0) - math.log(K))
    torch.testing.assert_close(chunked["elbo"], lw.mean(0))
    # K = 1: the IWAE is the ELBO
    pyro.set_rng_seed(5)
    one = evaluate(lgssm_model, guide, x, num_particles=1, chunk_size=10)
    assert one["iwae"] == one["elbo"]
    assert all(math.isnan(k) for k in one["khat"])


# --------------------------------------------------------------------------------------------
# masks, penalties, recall summaries
# --------------------------------------------------------------------------------------------


def _masked_batch():
    x = simulate(B=3, T=8, seed=7)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[0, 5:] = False
    mask[1, 7:] = False
    x = x.clone()
    x[~mask] = 50.0  # garbage in the padding must not matter
    return x, mask


def test_masked_steps_contribute_nothing():
    """Same seed, same particles: a sequence with its tail masked has exactly the weights of
    its truncated version (the guide draws z_t in time order with the same shapes, so the first
    T' draws coincide)."""
    x, mask = _masked_batch()
    guide, K = make_guide(1.25), 64
    pyro.set_rng_seed(11)
    full = log_weights(lgssm_model, guide, x, mask=mask, num_particles=K)
    assert (full.log_p_x[:, ~mask] == 0).all()
    assert (full.log_p_z[:, ~mask] == 0).all() and (full.log_q_z[:, ~mask] == 0).all()
    for b, t_len in ((0, 5), (1, 7)):
        pyro.set_rng_seed(11)
        short = log_weights(lgssm_model, guide, x[:, :t_len], mask=mask[:, :t_len], num_particles=K)
        torch.testing.assert_close(full.log_w[:, b], short.log_w[:, b], atol=1e-4, rtol=0)
        torch.testing.assert_close(
            full.log_p_x[:, b, :t_len], short.log_p_x[:, b], atol=1e-5, rtol=0
        )
    # the same through evaluate (one chunk: with several chunks the full run consumes more
    # random numbers per chunk, so later chunks would draw different particles)
    pyro.set_rng_seed(12)
    res = evaluate(lgssm_model, guide, x, mask=mask, num_particles=96, chunk_size=96)
    pyro.set_rng_seed(12)
    short = evaluate(
        lgssm_model, guide, x[:, :5], mask=mask[:, :5], num_particles=96, chunk_size=96
    )
    assert res["elbo"][0] == pytest.approx(short["elbo"][0], abs=1e-4)
    assert res["iwae"][0] == pytest.approx(short["iwae"][0], abs=1e-4)
    # (the per-step curves average over all sequences, whose posteriors do change)
    assert res["kl_seq"][0] == pytest.approx(short["kl_seq"][0], abs=1e-4)
    assert res["nll_seq"][0] == pytest.approx(short["nll_seq"][0], abs=1e-4)
    # per-step curves average over the sequences that have the step (one chunk: same draws)
    pyro.set_rng_seed(13)
    r2 = evaluate(lgssm_model, guide, x, mask=mask, num_particles=50, chunk_size=50)
    pyro.set_rng_seed(13)
    lw = log_weights(lgssm_model, guide, x, mask=mask, num_particles=50)
    n_t = mask.sum(0).double()
    nll_t = -lw.log_p_x.double().sum((0, 1)) / (50 * n_t)
    kl_t = (lw.log_q_z - lw.log_p_z).double().sum((0, 1)) / (50 * n_t)
    np.testing.assert_allclose(r2["nll"], nll_t.numpy(), rtol=1e-6)
    np.testing.assert_allclose(r2["kl"], kl_t.numpy(), rtol=1e-6, atol=1e-6)
    assert r2["nll"][7] == pytest.approx(-lw.log_p_x[:, 2, 7].double().mean().item(), rel=1e-6)


def test_fully_masked_step_is_nan_and_saved_as_null(tmp_path):
    x, mask = _masked_batch()
    mask[2, 7] = False
    pyro.set_rng_seed(14)
    res = evaluate(lgssm_model, make_guide(1.25), x, mask=mask, num_particles=30, chunk_size=30)
    assert math.isnan(res["kl"][7]) and math.isnan(res["nll"][7])
    assert all(math.isfinite(v) for v in res["kl"][:7])
    path = tmp_path / "sub" / "res.json"
    save_json(res, path)
    loaded = json.loads(path.read_text())
    assert loaded["kl"][7] is None and loaded["nll"][7] is None
    assert loaded["elbo"] == pytest.approx(res["elbo"])
    assert os.listdir(path.parent) == ["res.json"]  # no temporary left behind


def test_penalties_excluded_from_bounds_but_reported():
    x, mask = _masked_batch()
    guide, K = make_guide(1.25), 40
    pyro.set_rng_seed(21)
    plain = evaluate(lgssm_model, guide, x, mask=mask, num_particles=K, chunk_size=16)
    pyro.set_rng_seed(21)
    pen = evaluate(penalised_model, guide, x, mask=mask, num_particles=K, chunk_size=16)
    for key in ("elbo", "iwae", "kl", "nll"):
        np.testing.assert_allclose(pen[key], plain[key], rtol=0, atol=1e-6)
    n_valid = mask.sum(1).double()
    expected = -0.5 * n_valid - 2.0 / 3  # global factor spread over the 3 sequences
    np.testing.assert_allclose(pen["penalty_seq"], expected.numpy(), atol=1e-5)
    assert pen["penalty"] == pytest.approx(float(expected.mean()), abs=1e-5)
    assert plain["penalty"] == 0.0
    pyro.set_rng_seed(22)
    lw = log_weights(penalised_model, guide, x, mask=mask, num_particles=3)
    torch.testing.assert_close(lw.penalty, expected.float().expand(3, 3))


def test_recall_summaries_and_json(data):
    x, _ = data
    B, T = x.shape[:2]
    recall = torch.zeros(B, T, dtype=torch.bool)
    recall[:, 5:] = True
    pyro.set_rng_seed(31)
    res = evaluate(lgssm_model, make_guide(1.25), x, recall=recall, num_particles=50, chunk_size=25)
    json.dumps(res, allow_nan=False)  # plain floats / lists
    # mask all True: recall / pre-recall means are means of the per-step curves
    assert res["recall_kl"] == pytest.approx(np.mean(res["kl"][5:]), abs=1e-9)
    assert res["prerecall_kl"] == pytest.approx(np.mean(res["kl"][:5]), abs=1e-9)
    assert res["recall_nll"] == pytest.approx(np.mean(res["nll"][5:]), abs=1e-9)
    assert res["prerecall_nll"] == pytest.approx(np.mean(res["nll"][:5]), abs=1e-9)
    assert res["kl_mean"] == pytest.approx(np.mean(res["kl"]), abs=1e-9)
    assert res["iwae_sum"] == pytest.approx(sum(res["iwae"]))
    grad_enabled = []

    def spy_model(x, c=None, mask=None):
        grad_enabled.append(torch.is_grad_enabled())
        return lgssm_model(x, c, mask)

    pyro.set_rng_seed(31)
    tens = evaluate(
        spy_model, make_guide(1.25), x, num_particles=50, chunk_size=25, keep_tensors=True
    )
    assert grad_enabled == [False, False]  # two chunks, both under torch.no_grad()
    assert tens["recall_kl"] is None
    assert isinstance(tens["elbo"], torch.Tensor) and tens["log_w"].shape == (50, B)
    np.testing.assert_allclose(tens["elbo"].numpy(), res["elbo"], atol=1e-12)


def test_recall_kl_per_sequence_and_its_median(data):
    x, _ = data
    B, T = x.shape[:2]
    recall = torch.zeros(B, T, dtype=torch.bool)
    recall[1:, 5:] = True  # sequence 0 has no recall step
    pyro.set_rng_seed(32)
    res = evaluate(lgssm_model, make_guide(1.25), x, recall=recall, num_particles=20)
    per_sequence = np.array(res["recall_kl_seq"], dtype=float)
    assert per_sequence.shape == (B,) and np.isnan(per_sequence[0])
    assert np.isfinite(per_sequence[1:]).all()
    # equal recall lengths: the mean over recall steps is the mean of the sequences' means
    assert res["recall_kl"] == pytest.approx(per_sequence[1:].mean(), abs=1e-9)
    assert res["recall_kl_median"] == pytest.approx(np.median(per_sequence[1:]), abs=1e-12)
    # one sequence far from its prior moves the mean, not the median
    far = x.clone()
    far[1, 5:] += 40.0
    pyro.set_rng_seed(32)
    shifted = evaluate(lgssm_model, make_guide(1.25), far, recall=recall, num_particles=20)
    assert shifted["recall_kl_seq"][1] > 10 * res["recall_kl_seq"][1] + 10
    assert shifted["recall_kl"] - res["recall_kl"] > 3.0
    others = np.array(shifted["recall_kl_seq"][2:])
    assert np.median(np.append(others, np.inf)) == pytest.approx(shifted["recall_kl_median"])
    pyro.set_rng_seed(32)
    assert evaluate(lgssm_model, make_guide(1.25), x, num_particles=2)["recall_kl_median"] is None


# --------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_error(data):
    x, _ = data
    guide = make_guide()
    B, T = x.shape[:2]
    with pytest.raises(ValueError, match="num_particles"):
        log_weights(lgssm_model, guide, x, num_particles=0)
    with pytest.raises(ValueError, match="num_particles"):
        evaluate(lgssm_model, guide, x, num_particles=0)
    with pytest.raises(ValueError, match="num_particles"):
        evaluate(lgssm_model, guide, x, num_particles=2.5)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate(lgssm_model, guide, x, num_particles=4, chunk_size=0)
    with pytest.raises(ValueError, match="x must have shape"):
        evaluate(lgssm_model, guide, x[0, 0], num_particles=4)
    with pytest.raises(ValueError, match="mask"):
        evaluate(lgssm_model, guide, x, mask=torch.ones(B, T + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        log_weights(lgssm_model, guide, x, mask=torch.ones(B, T))  # float, not bool
    with pytest.raises(ValueError, match="recall"):
        evaluate(lgssm_model, guide, x, recall=torch.ones(B + 1, T, dtype=torch.bool))
    with pytest.raises(ValueError, match="c must have shape"):
        evaluate(lgssm_model, guide, x, c=torch.zeros(B, T - 1, 2))


def test_particles_are_drawn_in_fewer_per_pass_where_a_pass_would_not_fit(data, monkeypatch):
    from pgtm.inference import importance

    x, _ = data
    # a budget of three copies of the frames: three particles per pass instead of eight
    monkeypatch.setattr(importance, "MAX_CHUNK_NUMBERS", 3 * x.numel())
    pyro.set_rng_seed(0)
    capped = evaluate(lgssm_model, make_guide(1.25), x, num_particles=8, chunk_size=8)
    monkeypatch.undo()
    pyro.set_rng_seed(0)
    asked = evaluate(lgssm_model, make_guide(1.25), x, num_particles=8, chunk_size=3)
    pyro.set_rng_seed(0)
    whole = evaluate(lgssm_model, make_guide(1.25), x, num_particles=8, chunk_size=8)
    assert capped["chunk_size"] == 3 and whole["chunk_size"] == 8
    assert capped["iwae"] == asked["iwae"] != whole["iwae"]
