"""The split of a batch's negative ELBO (``inference/diagnose.py``) that every divergence
records: its parts add up to Pyro's loss of the same draw, and a collapsed prior scale shows."""

import json

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from test_train import TinyGTM, TinyTask, _cfg

from pgtm.inference.diagnose import describe_terms, loss_terms
from pgtm.inference.train import train
from pgtm.models import build_gtm

SMALL = {"latent_size": 4, "controller_size": 16, "feature_size": 16, "network": "mlp"}


def frames(batch=3, length=5):
    generator = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.full((batch, length, 1, 28, 28), 0.3, dtype=torch.float64),
                           generator=generator)


@pytest.mark.parametrize("memory,options", [("vrnn", {}),
                                            ("introspective", {"weighting": "unnormalised",
                                                               "sparsity": 0.1})])
def test_the_parts_add_up_to_pyros_loss_of_the_same_draw(memory, options):
    torch.manual_seed(0)
    gtm = build_gtm(memory, sequence_length=5, **SMALL, **options).double()
    x = frames()
    pyro.set_rng_seed(7)
    terms = loss_terms(gtm, x)
    pyro.set_rng_seed(7)
    loss = Trace_ELBO(max_plate_nesting=2).loss(gtm.model, gtm.guide, x)
    assert terms["reconstruction"] + terms["kl"] + terms["penalty"] == pytest.approx(loss,
                                                                                     rel=1e-12)
    assert (terms["penalty"] > 0) == bool(options)
    assert terms["largest_kl_site"].startswith("z_") and isinstance(terms["largest_kl"], float)
    assert 0 < terms["prior_scale_min"] and 0 < terms["posterior_scale_min"]


def test_a_prior_scale_at_its_floor_shows_as_the_largest_kl():
    torch.manual_seed(0)
    gtm = build_gtm("vrnn", sequence_length=5, **SMALL).double()
    with torch.no_grad():  # every step's prior scale: softplus(-50) + 1e-3 ~ 1e-3
        gtm.prior.net[-1].bias[SMALL["latent_size"]:] = -50.0
    terms = loss_terms(gtm, frames())
    assert terms["prior_scale_min"] == pytest.approx(1e-3, rel=1e-3)
    assert terms["kl"] > 1e5 and terms["largest_kl"] > 0.1 * terms["kl"]
    assert "smallest prior scale 0.001" in describe_terms(terms)


def test_every_rollback_records_the_terms_of_the_diverged_batch(tmp_path):
    with pytest.warns(UserWarning, match=r"\(-log p\(x\|z\) .*\); rolled back"):
        train(TinyGTM(nan_at=5), TinyTask(), _cfg(tmp_path, on_divergence="rollback"))
    record, = json.loads((tmp_path / "rollbacks.json").read_text())["rollbacks"]
    assert set(record["terms"]) >= {"reconstruction", "kl", "penalty", "prior_scale_min"}
    assert record["terms"]["largest_kl_site"] in ("z_0", "z_1")  # not the plate's site


class _RecordingGTM(TinyGTM):
    """TinyGTM that keeps the first latent of every guide draw."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.first_latents = []

    def guide(self, x, c=None, mask=None):
        with pyro.poutine.trace() as tracer:
            super().guide(x, c, mask)
        self.first_latents.append(tracer.trace.nodes["z_0"]["value"].detach().clone())


def test_the_terms_are_those_of_the_diverged_steps_own_draw(tmp_path):
    # step 5 diverges; the diagnosis (the next guide draw) must replay step 5's draws, not draw
    # afresh, or an explosion caused by one unlucky sample would not show in its terms
    gtm = _RecordingGTM(nan_at=5)
    with pytest.warns(UserWarning, match="rolled back"):
        train(gtm, TinyTask(), _cfg(tmp_path, on_divergence="rollback"))
    step_4, step_5, diagnosis = gtm.first_latents[3:6]
    assert torch.equal(diagnosis, step_5) and not torch.equal(step_5, step_4)
