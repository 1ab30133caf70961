"""The scale floor (``min_scale``): every learned Gaussian scale of the prior and the posterior
is at least the floor, the default is unchanged, a part without a floor refuses it in one line,
and ``pgtm train --min-scale`` records it and resumes only with it."""

import json

import pyro.poutine as poutine
import pytest
import torch

from pgtm.cli import main
from pgtm.models import build_gtm
from pgtm.models.priors import DEFAULT_MIN_SCALE

SMALL = {"latent_size": 4, "controller_size": 16, "feature_size": 16, "network": "mlp"}
B, T = 3, 4


def gtm_with(min_scale=None, **options):
    torch.manual_seed(0)
    return build_gtm("vrnn", sequence_length=T, min_scale=min_scale, **{**SMALL, **options})


def traces(gtm, x):
    """The guide's trace and the model's, replaying the guide's latents."""
    guide = poutine.trace(gtm.guide).get_trace(x)
    return guide, poutine.trace(poutine.replay(gtm.model, trace=guide)).get_trace(x)


def scales(gtm, x):
    """The smallest prior and posterior scale over every step of one guide-and-model pass."""
    guide, model = traces(gtm, x)
    smallest = {}
    for name, trace in (("prior", model), ("posterior", guide)):
        smallest[name] = min(trace.nodes[f"z_{t}"]["fn"].base_dist.scale.min().item()
                             for t in range(T))
    return smallest


def collapsed(gtm):
    """Drive every pre-softplus scale to -100 (softplus ~ 4e-44): the scales are the floor."""
    for net in (gtm.prior.net, gtm.posterior.net):
        last = net[-1]
        with torch.no_grad():
            last.weight[last.out_features // 2:] = 0
            last.bias[last.out_features // 2:] = -100
    return gtm


@pytest.mark.parametrize("min_scale", [None, 0.05])
def test_collapsed_scales_sit_at_the_floor(min_scale):
    x = torch.bernoulli(torch.full((B, T, 1, 28, 28), 0.3))
    smallest = scales(collapsed(gtm_with(min_scale)), x)
    floor = DEFAULT_MIN_SCALE if min_scale is None else min_scale
    assert smallest == pytest.approx({"prior": floor, "posterior": floor}, rel=1e-6)


def test_the_floor_bounds_the_kl_of_a_collapsed_prior():
    """The same collapsed networks: a 50x larger floor gives a far smaller KL."""
    x = torch.bernoulli(torch.full((B, T, 1, 28, 28), 0.3))
    losses = {}  # the one-sample KL estimate, log q - log p at the guide's draws
    for min_scale in (None, 0.05):
        gtm = collapsed(gtm_with(min_scale))
        with torch.no_grad():
            gtm.prior.net[-1].bias[:4] = 1.0  # the prior's mean away from the posterior's
        guide, model = traces(gtm, x)
        z = {t: guide.nodes[f"z_{t}"]["value"] for t in range(T)}
        losses[min_scale] = sum(guide.nodes[f"z_{t}"]["fn"].log_prob(z[t])
                                - model.nodes[f"z_{t}"]["fn"].log_prob(z[t])
                                for t in range(T)).mean().item()
    assert losses[None] > 100 * losses[0.05] > 0


def test_the_default_floor_builds_the_same_model():
    a, b = gtm_with(None).state_dict(), gtm_with(DEFAULT_MIN_SCALE).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("posterior", ["gaussian", "flow"])
def test_both_built_in_posteriors_take_the_floor(posterior):
    assert gtm_with(0.02, posterior=posterior).posterior.min_scale == 0.02


@pytest.mark.parametrize(("min_scale", "options", "message"), [
    (0.01, {"prior": "standard-normal"}, r"^min_scale: the prior 'standard-normal' has no scale"),
    (0.0, {}, r"^min_scale must be"),
])
def test_a_floor_that_cannot_be_set_is_refused_in_one_line(min_scale, options, message):
    with pytest.raises(ValueError, match=message):
        gtm_with(min_scale, **options)


def test_pgtm_train_records_the_floor_and_resumes_only_with_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PGTM_DATA_DIR", raising=False)
    run = tmp_path / "run"
    argv = ["train", "perfect-recall", "-l", "4", "-k", "2", "--model", "vrnn",
            "--min-scale", "0.01", "--out", str(run), "--eval-every", "2",
            "--checkpoint-every", "2", "--latent-size", "4", "--controller-size", "16",
            "--network", "mlp", "--batch-size", "4", "--eval-sequences", "4",
            "--iwae-particles", "5", "--no-progress", "--threads", "1"]
    assert main([*argv, "--steps", "2"]) == 0
    assert json.loads((run / "run.json").read_text())["model_options"]["min_scale"] == 0.01
    assert main([*argv, "--steps", "3"]) == 0  # resumes
    without = [a for a in argv if a not in ("--min-scale", "0.01")]
    assert main([*without, "--steps", "4"]) == 2  # not the same run: refused in one line
    assert "--min-scale: 0.01 there, None now" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--particles", "2", "--sequences", "2"]) == 0
    assert main(["train", "perfect-recall", "--min-scale", "0", "--out", str(tmp_path / "b"),
                 "--steps", "1"]) == 2
    assert "--min-scale" in capsys.readouterr().err
