"""The floor step (benchmarks/floor.py) is a Pyro SVI step; the step benchmark runs."""

import sys
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pgtm.models import build_gtm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from floor import floor_step  # noqa: E402

FRAME = (1, 1, 5)
SMALL = {"latent_size": 3, "controller_size": 8, "feature_size": 8, "network": "mlp"}
B, T = 3, 4


def make(seed=0):
    torch.manual_seed(seed)
    gtm = build_gtm("dnc", frame_shape=FRAME, sequence_length=T, **SMALL, num_slots=6,
                    word_size=4).double()
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.bernoulli(torch.full((B, T) + FRAME, 0.4, dtype=torch.float64), generator=generator)
    c = None
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 2:] = False  # a shorter sequence
    mask[2, 3:] = False
    return gtm, x, c, mask


def test_floor_step_matches_a_pyro_svi_step():
    """One ClippedAdam step on the floor and one Pyro SVI step land on the same parameters."""
    from pyro.infer import SVI
    from pyro.optim import ClippedAdam
    from pyro.optim.clipped_adam import ClippedAdam as TorchClippedAdam

    gtm, x, c, mask = make()
    twin = make()[0]
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
