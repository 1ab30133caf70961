"""Parameter matching: ``build_gtm(..., parameter_budget=N)`` picks the controller size whose
model has the parameter count nearest to N, within 2%, for every memory and network."""

from __future__ import annotations

import pytest
import torch

from pgtm.models import MEMORIES, build_gtm, controller_size_for_budget, count_parameters

PAPER_BUDGET = 1_860_000  # the paper's models have 1,859,336 .. 1,884,177 parameters
PERFECT_RECALL = {"frame_shape": (1, 28, 28), "sequence_length": 15}


def parameters_at(memory: str, controller_size: int, **options) -> int:
    with torch.device("meta"):
        gtm = build_gtm(memory, controller_size=controller_size, **PERFECT_RECALL, **options)
    return count_parameters(gtm)


@pytest.mark.parametrize("network", ["mlp", "conv"])
@pytest.mark.parametrize("memory", sorted(MEMORIES))
def test_every_model_meets_the_paper_budget(memory, network):
    with torch.device("meta"):
        gtm = build_gtm(memory, network=network, parameter_budget=PAPER_BUDGET, **PERFECT_RECALL)
    count, width = count_parameters(gtm), gtm.controller.output_size
    assert abs(count - PAPER_BUDGET) <= 0.02 * PAPER_BUDGET
    # the nearest count over the widths: no neighbour is closer (so the bisection found it)
    for other in (width - 1, width + 1):
        distance = abs(parameters_at(memory, other, network=network) - PAPER_BUDGET)
        assert distance >= abs(count - PAPER_BUDGET)


def test_budget_leaves_the_random_state_alone_and_rebuilds_the_same_model():
    torch.manual_seed(0)
    matched = build_gtm("ntm", network="mlp", parameter_budget=PAPER_BUDGET, **PERFECT_RECALL)
    width = matched.controller.output_size
    torch.manual_seed(0)
    plain = build_gtm("ntm", network="mlp", controller_size=width, **PERFECT_RECALL)
    a, b = matched.state_dict(), plain.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = controller_size_for_budget("ntm", PAPER_BUDGET, **_parts(network="mlp"))
    assert again == width  # deterministic


def _parts(**options) -> dict:
    """Every argument of build_gtm but the controller size, at its default."""
    parts = {
        "frame_shape": (1, 28, 28), "sequence_length": 15, "action_size": 0, "latent_size": 32,
        "feature_size": 256, "network": "auto", "prior": "learned-gaussian",
        "posterior": "gaussian", "likelihood": "bernoulli", "orthogonal_init": False,
        "frame_feedback": False, "min_scale": None, "reuse_path": True,
    }
    return {**parts, **options}


def test_smallest_budget_is_the_one_named_in_the_error():
    at_one = parameters_at("vrnn", 1, network="mlp")
    with pytest.raises(ValueError, match=r"^parameter_budget must be >= (\d+) for this") as err:
        build_gtm("vrnn", network="mlp", parameter_budget=1000, **PERFECT_RECALL)
    smallest = int(err.value.args[0].split(">= ")[1].split()[0])
    assert abs(at_one - smallest) <= 0.02 * smallest  # within 2% ...
    assert abs(at_one - (smallest - 1)) > 0.02 * (smallest - 1)  # ... and one less is not
    with torch.device("meta"):
        gtm = build_gtm("vrnn", network="mlp", parameter_budget=smallest, **PERFECT_RECALL)
    assert gtm.controller.output_size == 1
    with pytest.raises(ValueError, match="parameter_budget must be >="):
        build_gtm("vrnn", network="mlp", parameter_budget=smallest - 1, **PERFECT_RECALL)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"parameter_budget": 0}, r"^parameter_budget must be an integer >= 1, got 0$"),
        ({"parameter_budget": -3}, r"^parameter_budget must be an integer >= 1, got -3$"),
        ({"parameter_budget": 2.5}, r"^parameter_budget must be an integer >= 1, got 2\.5$"),
        ({"parameter_budget": True}, r"^parameter_budget must be an integer >= 1, got True$"),
        (
            {"parameter_budget": 10**6, "controller_size": 128},
            r"^give controller_size or parameter_budget, not both .*; got controller_size=128$",
        ),
        ({"parameter_budget": 10**12}, r"^parameter_budget must be <= \d+ \(the parameter count"),
    ],
)
def test_bad_budgets(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        build_gtm("lru", network="mlp", **PERFECT_RECALL, **kwargs)
    assert "\n" not in str(err.value)


def test_bad_tolerance():
    with pytest.raises(ValueError, match=r"^tolerance must be a number in \(0, 1\), got 0$"):
        controller_size_for_budget("vrnn", PAPER_BUDGET, tolerance=0, **_parts())


def test_default_controller_size_is_still_256():
    assert build_gtm("vrnn", network="mlp", **PERFECT_RECALL).controller.output_size == 256
