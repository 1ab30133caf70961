"""Conv networks on RGB frames, the inception-like networks with batch norm (pgtm.inception), and
their train/eval modes, checkpoints and command-line runs on the rotating-room task."""

import json

import pyro
import pytest
import torch

from pgtm.cli import main
from pgtm.inception import InceptionBlock, InceptionDecoder, InceptionEncoder
from pgtm.inference.train import TrainConfig, train
from pgtm.models import build_gtm, count_parameters
from pgtm.networks import ConvDecoder, ConvEncoder, conv_downsamplings
from pgtm.tasks import make_task

TINY = dict(latent_size=4, controller_size=16, feature_size=32)


@pytest.mark.parametrize("shape,stages", [((1, 28, 28), 2), ((3, 32, 32), 2), ((3, 64, 64), 3)])
@pytest.mark.parametrize("network", [(ConvEncoder, ConvDecoder),
                                     (InceptionEncoder, InceptionDecoder)])
def test_encoders_and_decoders_handle_image_frames(shape, stages, network):
    encoder_cls, decoder_cls = network
    assert conv_downsamplings(shape) == stages
    encoder = encoder_cls(32, channels=8, frame_shape=shape)
    decoder = decoder_cls(10, channels=8, output_shape=(2 * shape[0],) + shape[1:])
    x = torch.rand(2, 3, *shape)  # leading dims [B, T]
    assert encoder(x).shape == (2, 3, 32)
    assert decoder(torch.randn(4, 2, 3, 10)).shape == (4, 2, 3, 2 * shape[0]) + shape[1:]


@pytest.mark.parametrize("shape,message", [
    ((1, 1, 9), "need image frames (C, H, W) with H, W >= 4"),
    ((3, 30, 30), "need H and W divisible by 4"),
    ((3, 36, 36), "need H and W divisible by 8"),
])
def test_frames_a_conv_network_cannot_take_are_refused(shape, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        conv_downsamplings(shape)
    with pytest.raises(ValueError, match="network='inception'"):
        build_gtm("vrnn", frame_shape=shape, network="inception", **TINY)


def test_auto_picks_conv_for_images_and_mlp_for_vectors():
    room = build_gtm("vrnn", frame_shape=(3, 32, 32), **TINY)
    assert isinstance(room.encoder, ConvEncoder)
    assert type(build_gtm("vrnn", frame_shape=(1, 1, 9), **TINY).encoder).__name__ == "MLPEncoder"


def test_inception_block_concatenates_four_branches():
    block = InceptionBlock(8, 16, stride=2)
    assert block(torch.rand(5, 8, 16, 16)).shape == (5, 16, 8, 8)
    assert len(block.branches) == 4 and block.norm.num_features == 16
    with pytest.raises(ValueError, match="out_channels must be a multiple of 4; got 10"):
        InceptionBlock(8, 10)


def test_batch_norm_uses_batch_statistics_in_train_mode_and_running_ones_in_eval_mode():
    torch.manual_seed(0)
    encoder = InceptionEncoder(16, channels=8, frame_shape=(3, 32, 32))
    frames = torch.rand(6, 3, 32, 32)
    encoder.train()
    alone, together = encoder(frames[:2]), encoder(frames)[:2]
    assert not torch.allclose(alone, together)  # normalised by each batch
    encoder.eval()
    stats = {k: v.clone() for k, v in encoder.state_dict().items() if "running" in k}
    assert stats and torch.allclose(encoder(frames[:2]), encoder(frames)[:2], atol=1e-6)
    for k, v in stats.items():
        assert torch.equal(v, encoder.state_dict()[k]), k  # eval mode leaves them alone


def tiny_room_gtm(seed=0):
    torch.manual_seed(seed)
    return build_gtm("introspective", frame_shape=(3, 16, 16), sequence_length=12,
                     network="inception", likelihood="discretized-logistic", **TINY)


def _config(out, steps=4, **kw):
    return TrainConfig(steps=steps, batch_size=3, learning_rate=3e-3, checkpoint_every=2,
                       progress=False, out_dir=str(out), **kw)


def test_evaluation_runs_in_eval_mode_and_leaves_the_trajectory_alone(tmp_path):
    task = make_task("rotating-room", image_size=16, prerecall_length=8, recall_length=4,
                     period=8)
    modes = []

    def evaluate(gtm, step):
        modes.append(gtm.training)
        gtm.encoder(task.sample(2, "test", torch.Generator().manual_seed(1)).x)
        return {}

    pyro.clear_param_store()
    evaluated = tiny_room_gtm()
    train(evaluated, task, _config(tmp_path / "e", eval_every=1), evaluate_fn=evaluate)
    assert modes == [False] * 4 and evaluated.training
    pyro.clear_param_store()
    plain = tiny_room_gtm()
    train(plain, task, _config(tmp_path / "p"))
    for k, v in plain.state_dict().items():
        assert torch.equal(v, evaluated.state_dict()[k]), k


def test_resume_restores_the_running_statistics_bit_for_bit(tmp_path):
    task = make_task("rotating-room", image_size=16, prerecall_length=8, recall_length=4,
                     period=8)
    pyro.clear_param_store()
    full = tiny_room_gtm()
    train(full, task, _config(tmp_path / "full"))
    pyro.clear_param_store()
    train(tiny_room_gtm(), task, _config(tmp_path / "split", steps=2))
    pyro.clear_param_store()
    resumed = tiny_room_gtm(seed=5)  # other weights, other statistics: all must come from disk
    train(resumed, task, _config(tmp_path / "split"))
    running = [k for k in full.state_dict() if "running_mean" in k or "num_batches" in k]
    assert running and int(full.state_dict()[running[-1]]) > 0
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


@pytest.mark.parametrize("network", ["conv", "inception"])
def test_cli_trains_the_rotating_room_with_a_discretised_logistic(tmp_path, network, monkeypatch):
    monkeypatch.delenv("PGTM_DATA_DIR", raising=False)
    run = tmp_path / network
    argv = ["train", "rotating-room", "--likelihood", "discretized-logistic", "--network", network,
            "--steps", "20", "--threads", "1", "--out", str(run), "-k", "5", "--latent-size", "8",
            "--controller-size", "32", "--batch-size", "4", "--eval-every", "10",
            "--eval-sequences", "4", "--iwae-particles", "4", "--no-progress"]
    assert main(argv) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 20 and results["iwae"] >= results["elbo"]
    spec = json.loads((run / "run.json").read_text())
    assert spec["task"]["options"]["period"] == 15 and spec["task"]["binarize"] == "none"
    assert spec["model_options"]["network"] == network
    losses = [float(line.split(",")[1]) for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert len(losses) == 2 and losses[1] < losses[0]  # means over steps 1-10 and 11-20
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png"), "--observe", "15",
                 "--num", "2"]) == 0
    assert (tmp_path / "s.png").stat().st_size > 1000


@pytest.mark.parametrize("likelihood", ["gaussian", "continuous-bernoulli", "discretized-logistic"])
def test_the_rgb_room_trains_with_each_likelihood_for_levels(likelihood):
    task = make_task("rotating-room", image_size=16, prerecall_length=8, recall_length=4,
                     period=8)
    pyro.clear_param_store()
    torch.manual_seed(0)
    gtm = build_gtm("vrnn", frame_shape=task.frame_shape, network="conv", likelihood=likelihood,
                    **TINY)
    result = train(gtm, task, TrainConfig(steps=12, batch_size=4, learning_rate=1e-2,
                                          progress=False))
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert sum(result.losses[-3:]) < sum(result.losses[:3])


def test_parameter_counts_on_the_room_are_of_one_size():
    counts = {network: count_parameters(build_gtm("vrnn", frame_shape=(3, 32, 32), network=network,
                                                  likelihood="discretized-logistic"))
              for network in ("conv", "inception")}
    assert abs(counts["inception"] - counts["conv"]) < 0.02 * counts["conv"]
