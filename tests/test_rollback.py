"""Kept checkpoints, rollback on divergence, the loss-explosion guard and the model check of a
resumed checkpoint (``pgtm.inference.train``, ``checkpoint.CheckpointRing``)."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import TinyGTM, TinyTask, _cfg
from torch import nn

from pgtm.inference.checkpoint import CHECKPOINT_NAME, load_checkpoint
from pgtm.inference.guarded_step import loss_explosion
from pgtm.inference.train import TrainConfig, TrainingDiverged, train


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _older_steps(run) -> list[int]:
    folder = run / "checkpoints"
    return sorted(int(p.stem[5:]) for p in folder.glob("step-*.pt")) if folder.is_dir() else []


@pytest.mark.parametrize("keep, older", [(1, []), (2, [6]), (3, [4, 6])])
def test_keeps_the_newest_checkpoints(tmp_path, keep, older):
    train(TinyGTM(), TinyTask(), _cfg(tmp_path, keep_checkpoints=keep))
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 8
    assert _older_steps(tmp_path) == older
    for step in older:
        assert load_checkpoint(tmp_path / "checkpoints" / f"step-{step:08d}.pt")["step"] == step


def test_rollback_reloads_the_checkpoint_and_lowers_the_learning_rate(tmp_path):
    # the 5th model call (step 5) is NaN; the run rolls back to step 4 and goes on at half the lr
    cfg = _cfg(tmp_path / "a", on_divergence="rollback", kl_anneal_steps=0)
    with pytest.warns(UserWarning, match="rolled back to the checkpoint of step 4"):
        result = train(gtm := TinyGTM(nan_at=5), TinyTask(), cfg)
    assert result.step == 8 and len(result.losses) == 8
    records = json.loads((tmp_path / "a" / "rollbacks.json").read_text())["rollbacks"]
    assert [(r["diverged_at"], r["resumed_from"], r["lr_scale"]) for r in records] == [
        (5, 4, 0.5)
    ]
    assert records[0]["reason"] == "non-finite loss"  # step 5 is not checked: no validation
    ckpt = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    assert ckpt["lr_scale"] == 0.5 and ckpt["rollbacks"] == records
    lrs = [g["lr"] for g in ckpt["optim"]["param_groups"]]
    assert lrs == pytest.approx([cfg.learning_rate * 0.5] * len(lrs))
    rows = (tmp_path / "a" / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 9))

    # deterministic: the same as resuming the step-4 checkpoint by hand at half the lr
    train(TinyGTM(), TinyTask(), _cfg(tmp_path / "b", steps=4, kl_anneal_steps=0))
    with pytest.warns(UserWarning, match="changed config fields"):
        train(manual := TinyGTM(), TinyTask(),
              _cfg(tmp_path / "b", kl_anneal_steps=0, learning_rate=cfg.learning_rate * 0.5))
    assert all(torch.equal(v, _params(manual)[k]) for k, v in _params(gtm).items())


def test_a_resumed_rollback_keeps_its_learning_rate(tmp_path):
    cfg = _cfg(tmp_path / "whole", on_divergence="rollback")
    with pytest.warns(UserWarning, match="rolled back"):
        train(whole := TinyGTM(nan_at=5), TinyTask(), cfg)
    part = _cfg(tmp_path / "parts", on_divergence="rollback", steps=6)
    with pytest.warns(UserWarning, match="rolled back"):
        train(TinyGTM(nan_at=5), TinyTask(), part)
    train(resumed := TinyGTM(), TinyTask(), _cfg(tmp_path / "parts", on_divergence="rollback"))
    assert all(torch.equal(v, _params(resumed)[k]) for k, v in _params(whole).items())


def test_rollbacks_are_bounded_and_go_further_back(tmp_path):
    cfg = _cfg(tmp_path, on_divergence="rollback", max_rollbacks=3)
    with pytest.warns(UserWarning, match="rolled back"), \
            pytest.raises(TrainingDiverged) as info:
        train(TinyGTM(nan_from=5), TinyTask(), cfg)
    err = info.value
    assert err.rollbacks == 3 and "\n" not in str(err) and "after 3 rollback(s)" in str(err)
    # step 5 failed from the checkpoint of step 4, then again: back to step 2 (the older one)
    records = json.loads((tmp_path / "rollbacks.json").read_text())["rollbacks"]
    assert [r["resumed_from"] for r in records] == [4, 2, 2]
    assert [r["lr_scale"] for r in records] == [0.5, 0.25, 0.125]
    assert err.checkpoint_step == 2 and load_checkpoint(err.checkpoint_path)["step"] == 2


def test_the_run_folder_records_the_divergence_that_stopped_it_until_it_trains_again(tmp_path):
    cfg = _cfg(tmp_path, on_divergence="rollback", max_rollbacks=1)
    with pytest.warns(UserWarning, match="rolled back"), \
            pytest.raises(TrainingDiverged) as info:
        train(TinyGTM(nan_from=5), TinyTask(), cfg)
    record = json.loads((tmp_path / "rollbacks.json").read_text())
    assert record["stopped"]["diverged_at"] == info.value.step == 5
    assert record["stopped"]["last_checkpoint"] == info.value.checkpoint_step
    assert "non-finite" in record["stopped"]["reason"] and "terms" in record["stopped"]
    assert len(record["rollbacks"]) == 1
    train(TinyGTM(), TinyTask(), cfg)  # resumed, it trains to the end
    assert "stopped" not in json.loads((tmp_path / "rollbacks.json").read_text())
    train(TinyGTM(), TinyTask(), cfg, resume=False)  # a fresh start has no rollbacks
    assert not (tmp_path / "rollbacks.json").exists()


def test_rollback_before_any_periodic_checkpoint_uses_step_zero(tmp_path):
    cfg = _cfg(tmp_path, on_divergence="rollback", checkpoint_every=None)
    with pytest.warns(UserWarning, match="checkpoint of step 0"):
        assert train(TinyGTM(nan_at=1), TinyTask(), cfg).step == 8


def test_the_explosion_guard_stops_a_finite_blow_up(tmp_path):
    cfg = _cfg(tmp_path / "guarded", steps=30, checkpoint_every=10)
    with pytest.raises(TrainingDiverged, match="loss explosion") as info:
        train(TinyGTM(explode_at=25), TinyTask(), cfg)
    assert info.value.step == 25 and info.value.checkpoint_step == 20
    off = _cfg(tmp_path / "off", steps=30, checkpoint_every=10, max_loss_ratio=None)
    assert train(TinyGTM(explode_at=25), TinyTask(), off).losses[24] > 1e11


def test_loss_explosion_rule():
    flat = [100.0] * 30
    assert loss_explosion(20_000.0, flat, 100.0) is not None
    assert loss_explosion(5_000.0, flat, 100.0) is None
    assert loss_explosion(20_000.0, flat[:19], 100.0) is None  # still warming up
    assert loss_explosion(20_000.0, flat, None) is None
    assert loss_explosion(-1e9, flat, 100.0) is None  # falling is learning
    assert loss_explosion(60_000.0, [-500.0] * 30, 100.0) is not None
    assert loss_explosion(50.0, [0.0] * 30, 100.0) is None  # a median near 0 counts as 1


class WiderGTM(TinyGTM):
    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Linear(2, 2)


def test_resuming_another_models_checkpoint_names_the_difference(tmp_path):
    train(TinyGTM(), TinyTask(), _cfg(tmp_path, steps=2))
    with pytest.raises(ValueError, match=r"^checkpoint: .* holds another model \(it lacks extra"):
        train(WiderGTM(), TinyTask(), _cfg(tmp_path, steps=4))


@pytest.mark.parametrize("field, value", [
    ("keep_checkpoints", 0), ("max_loss_ratio", 1.0), ("max_loss_ratio", float("nan")),
    ("on_divergence", "retry"), ("rollback_lr_factor", 1.0), ("rollback_lr_factor", 0.0),
    ("max_rollbacks", 0),
])
def test_bad_divergence_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        TrainConfig(**{field: value})
