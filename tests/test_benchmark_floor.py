"""The hand-written floor ELBO (benchmarks/floor.py) equals Pyro's Trace_ELBO exactly."""

import sys
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pgtm.models import build_gtm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from floor import floor_loss, floor_step, floor_terms  # noqa: E402

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


def pyro_loss(gtm, x, c, mask):
    pyro.clear_param_store()
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
def test_floor_equals_pyro_trace_elbo_and_its_gradients(case, masked):
    gtm, x, c, mask = make(case)
    mask = mask if masked else None
    for seed in (0, 1):
        pyro_l, pyro_g = loss_and_grads(lambda: pyro_loss(gtm, x, c, mask), gtm, seed)
        for unrolled in (True, False):  # weight gradients batched over the steps, or not
            floor_l, floor_g = loss_and_grads(
                lambda: floor_loss(gtm, x, c, mask, unrolled=unrolled), gtm, seed)  # noqa: B023
            torch.testing.assert_close(floor_l, pyro_l, rtol=1e-12, atol=1e-10)
            for a, b in zip(floor_g, pyro_g, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    # the same draws: a different seed gives a different loss
    assert not torch.equal(loss_and_grads(lambda: floor_loss(gtm, x, c, mask), gtm, 5)[0], floor_l)


def test_floor_terms_are_masked_and_add_up_to_the_loss():
    gtm, x, c, mask = make("introspective-penalty")
    pyro.set_rng_seed(0)
    terms = floor_terms(gtm, x, c, mask, check_inputs=True)
    for key in ("log_p_x", "log_p_z", "log_q_z", "penalty"):
        assert terms[key].shape == (B, T)
        assert torch.all(terms[key][~mask] == 0)
    assert torch.all(terms.penalty[mask] > 0)
    total = terms.log_p_x.sum() + terms.log_p_z.sum() - terms.log_q_z.sum() - terms.penalty.sum()
    torch.testing.assert_close(terms.loss, -total)


def test_floor_step_matches_a_pyro_svi_step():
    """One ClippedAdam step on the floor and one Pyro SVI step land on the same parameters."""
    from pyro.infer import SVI
    from pyro.optim import ClippedAdam
    from pyro.optim.clipped_adam import ClippedAdam as TorchClippedAdam

    gtm, x, c, mask = make("dnc")
    twin = make("dnc")[0]
    pyro.clear_param_store()
    svi = SVI(gtm.model, gtm.guide, ClippedAdam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=2))
    pyro.set_rng_seed(7)
    pyro_l = svi.step(x, c=c, mask=mask)
    optimizer = TorchClippedAdam(twin.parameters(), lr=1e-2)
    pyro.set_rng_seed(7)
    floor_l = floor_step(twin, optimizer, x, c, mask)
    assert floor_l == pytest.approx(pyro_l, rel=1e-12)
    for a, b in zip(gtm.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_benchmark_smoke_run_writes_the_results(tmp_path):
    import json

    import bench_step

    torch_threads = torch.get_num_threads()
    try:
        res = bench_step.main(
            ["--smoke", "--models", "vrnn,dnc", "--sections", "target,scaling",
             "--out", str(tmp_path)]
        )
    finally:
        torch.set_num_threads(torch_threads)
        bench_step.SIZES.clear()
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    for model in ("vrnn", "dnc"):
        row = saved["target"][model]
        assert row["pyro_ms"] > 0 and row["floor_ms"] > 0
        assert row["ratio"] == pytest.approx(row["pyro_ms"] / row["floor_ms"])
        assert saved["scaling"]["length"][model]["exponent"]["pyro"] is not None
    assert [r["num_slots"] for r in saved["scaling"]["slots"]["dnc"]["rows"]] == [8, 32]
    assert res["environment"]["torch_num_threads"] == 1
    assert "| vrnn |" in (tmp_path / "benchmark.md").read_text()
    assert (tmp_path / "benchmark_scaling.png").stat().st_size > 0
