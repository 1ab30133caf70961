"""``elbo_outliers`` finds the sample that dominates a low ELBO, among the very samples that
``evaluate`` averaged."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pgtm.inference.evaluate import evaluate
from pgtm.inference.outliers import elbo_outliers

B, T, Z, D = 4, 5, 3, 2
CONFIDENT_SEQUENCE, CONFIDENT_STEP, CONFIDENT_SCALE = 1, 2, 1e-3


def model(x, c=None, mask=None):
    """Prior N(0, 1) per latent, except one sequence and step where it is confident (scale
    1e-3) about a location the guide does not share."""
    with pyro.plate("sequences", B, dim=-2):
        for t in pyro.markov(range(T)):
            scale = torch.ones(B, 1, Z)
            if t == CONFIDENT_STEP:
                scale[CONFIDENT_SEQUENCE] = CONFIDENT_SCALE
            pyro.sample(f"z_{t}", dist.Normal(torch.zeros(B, 1, Z), scale).to_event(1))
        with pyro.plate("time", T, dim=-1):
            pyro.sample("x", dist.Normal(torch.zeros(B, T, D), 1.0).to_event(1), obs=x)


def guide(x, c=None, mask=None):
    with pyro.plate("sequences", B, dim=-2):
        for t in pyro.markov(range(T)):
            pyro.sample(f"z_{t}", dist.Normal(torch.full((B, 1, Z), 0.5), 1.0).to_event(1))


def test_elbo_outliers_names_the_sample_and_step_that_evaluate_averaged():
    x = torch.randn(B, T, D)
    K, C = 10, 4  # chunks of 4, 4, 2
    pyro.set_rng_seed(3)
    evaluated = evaluate(model, guide, x, num_particles=K, chunk_size=C, keep_tensors=True)
    pyro.set_rng_seed(3)
    report = elbo_outliers(model, guide, x, num_particles=K, chunk_size=C, num_sequences=2,
                           num_steps=2)

    assert [r["sequence"] for r in report] == torch.argsort(evaluated["elbo"])[:2].tolist()
    worst = report[0]
    b = worst["sequence"]
    assert b == CONFIDENT_SEQUENCE
    assert worst["elbo"] == pytest.approx(float(evaluated["elbo"][b]), rel=1e-9)
    log_w = evaluated["log_w"][:, b]
    assert worst["particle"] == int(log_w.argmin())
    assert worst["log_w"] == pytest.approx(float(log_w.min()), rel=1e-6)

    step = worst["steps"][0]
    assert step["step"] == CONFIDENT_STEP and len(worst["steps"]) == 2
    assert step["prior_scale"] == pytest.approx(CONFIDENT_SCALE)
    assert step["posterior_loc"] == pytest.approx(0.5) and step["prior_loc"] == 0.0
    assert step["prior_z_score"] == pytest.approx(abs(step["z"]) / CONFIDENT_SCALE, rel=1e-5)
    # the step's log q - log p is mostly the confident prior's quadratic term
    assert step["kl"] > 0.5 * step["prior_z_score"] ** 2 - 50
    assert worst["steps"][1]["kl"] < 50


def test_elbo_outliers_rejects_bad_counts():
    x = torch.randn(B, T, D)
    with pytest.raises(ValueError, match="num_sequences"):
        elbo_outliers(model, guide, x, num_sequences=0)
    with pytest.raises(ValueError, match="chunk_size"):
        elbo_outliers(model, guide, x, chunk_size=0)
