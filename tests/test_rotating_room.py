"""The rotating-room task (pgtm.tasks.rotating_room) and its renderer (pgtm.room)."""

import math
from pathlib import Path

import pytest
import torch

from pgtm.room import Room, render_room, wall_hits
from pgtm.tasks import TASK_NAMES, make_task
from pgtm.tasks.rotating_room import PALETTE_BINS, RotatingRoomTask


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_shapes_ranges_and_protocol():
    task = make_task("rotating-room")
    assert "rotating-room" in TASK_NAMES
    assert (task.length, task.frame_shape, task.context_size) == (30, (3, 32, 32), 0)
    batch = task.sample(5, "train", generator())
    assert batch.x.shape == (5, 30, 3, 32, 32) and batch.x.dtype == torch.float32
    assert 0 <= batch.x.min() and batch.x.max() <= 1
    assert torch.equal(batch.x, (batch.x * 255).round() / 255)  # 8-bit levels
    assert batch.c is None and batch.mask.all()
    assert not batch.recall[:, :15].any() and batch.recall[:, 15:].all()
    assert torch.equal(batch.addresses[:, 15:], torch.arange(15, 30).expand(5, 15) % 15)
    assert (batch.addresses[:, :15] == -1).all()
    assert batch.labels.dtype == torch.long and batch.labels.min() >= 0
    assert batch.labels.max() < 4 + 2
    big = make_task("rotating-room", image_size=64).sample(2, "test", generator())
    assert big.x.shape == (2, 30, 3, 64, 64)


def test_equal_generator_states_give_identical_batches():
    task = RotatingRoomTask(speed_jitter=0.1)
    first, second = task.sample(4, "train", generator(3)), task.sample(4, "train", generator(3))
    for a, b in zip(first, second, strict=True):
        assert a is None if b is None else torch.equal(a, b)
    assert not torch.equal(first.x, task.sample(4, "train", generator(4)).x)


def test_frames_repeat_after_one_period():
    task = RotatingRoomTask(prerecall_length=12, recall_length=10, period=12)
    batch = task.sample(6, "train", generator(1))
    assert torch.equal(batch.x[:, 12:], batch.x[:, :10])  # bit-identical: speed exactly 2 pi / P
    assert not torch.equal(batch.x[:, 1:], batch.x[:, :-1])  # but it does turn
    recall = batch.recall.nonzero()
    assert torch.equal(batch.x[recall[:, 0], recall[:, 1]],
                       batch.x[recall[:, 0], batch.addresses[recall[:, 0], recall[:, 1]]])


def test_speed_jitter_breaks_exact_repetition_only_slightly():
    jittered = RotatingRoomTask(speed_jitter=0.05)
    batch, _, headings = jittered.sample_with_views(8, "train", generator(2))
    speed = (headings[:, 1] - headings[:, 0]) / (2 * math.pi / 15)
    assert (speed - 1).abs().max() <= 0.05 and (speed - 1).abs().max() > 0
    assert not torch.equal(batch.x[:, 15:], batch.x[:, :15])
    # about one sixth of a frame step away at most: a close view, not the same
    assert (batch.x[:, 15:] - batch.x[:, :15]).abs().mean() < 0.1


def plain_room(half_size=(1.0, 0.8)):
    """One room with red/green/blue/white walls (east/north/west/south), no poster, no pillar."""
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]]).double()
    return Room(
        half_size=torch.tensor([half_size]).double(), wall_colours=colours[None],
        floor_colour=torch.zeros(1, 3).double(), ceiling_colour=torch.zeros(1, 3).double(),
        poster_span=torch.zeros(1, 4, 2).double(), poster_heights=torch.zeros(1, 4, 2).double(),
        poster_colours=torch.zeros(1, 4, 3).double(), pillar_centres=torch.ones(1, 2, 2).double(),
        pillar_radii=torch.zeros(1, 2).double(), pillar_colours=torch.zeros(1, 2, 3).double(),
        palette_hue=torch.zeros(1).double(),
    )


def test_walls_pass_the_centre_of_view_east_north_west_south():
    room = plain_room()
    headings = torch.linspace(0, 2 * math.pi, 25, dtype=torch.float64)[:-1].unsqueeze(0) + 0.1
    frames = render_room(room, headings, 32)  # [1, 24, 3, 32, 32]
    centre = frames[0, :, :, 16, 15]  # [24, 3] the horizon pixel just left of straight ahead
    reference = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3**0.5] * 3])
    seen = (torch.nn.functional.normalize(centre, dim=-1) @ reference.T).argmax(-1)
    column_angle = math.atan(0.5 / 16)  # column 15 of 32 looks this much to the left
    assert torch.equal(seen, wall_hits(room.half_size, headings + column_angle).wall[0])
    changes = seen[torch.cat([torch.tensor([True]), seen[1:] != seen[:-1]])]
    assert changes.tolist() == [0, 1, 2, 3, 0]  # counter-clockwise order, back to east
    # turning left the scene slides right: the left edge shows the next wall first
    left, right = frames[0, :, :, 16, 0], frames[0, :, :, 16, -1]
    turn = (seen[1:] != seen[:-1]).nonzero()[0, 0]  # last step before the first change
    assert (torch.nn.functional.normalize(left[turn], dim=-1) @ reference.T).argmax() == 1
    assert (torch.nn.functional.normalize(right[turn], dim=-1) @ reference.T).argmax() == 0


def test_nearer_walls_look_taller():
    room = plain_room(half_size=(0.6, 1.3))
    frames = render_room(room, torch.tensor([[0.0, math.pi / 2]], dtype=torch.float64), 32)
    wall_rows = (frames[0, :, :, :, 16].sum(1) > 0).sum(-1)  # lit rows of the centre column
    assert wall_rows[0] > wall_rows[1]  # the east wall (0.6 away) beside the north one (1.3)
    assert 0 < wall_rows[1] < 32


def test_train_and_test_rooms_have_disjoint_palettes():
    task = RotatingRoomTask()
    for split, parity in (("train", 0), ("test", 1)):
        _, rooms, _ = task.sample_with_views(64, split, generator(5))
        bins = (rooms.palette_hue * 4 * PALETTE_BINS).floor().long()
        assert ((bins % 2) == parity).all() and (rooms.palette_hue < 0.25).all()
    train = task.sample(4, "train", generator(5)).x
    assert not torch.equal(train, task.sample(4, "test", generator(5)).x)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"period": 16}, "period must be an integer in [4, prerecall_length=15], got 16"),
        ({"period": 3}, "period must be an integer in [4, prerecall_length=15], got 3"),
        ({"prerecall_length": 2}, "prerecall_length must be an integer >= 4, got 2"),
        ({"recall_length": 0}, "recall_length must be an integer >= 1, got 0"),
        ({"image_size": 256}, "image_size must be an integer in [8, 128], got 256"),
        ({"image_size": 32.0}, "image_size must be an integer in [8, 128], got 32.0"),
        ({"speed_jitter": -0.1}, "speed_jitter must be a number in [0, 0.5], got -0.1"),
        ({"grid_size": 3}, "task 'rotating-room' has no option 'grid_size'"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError) as error:
        make_task("rotating-room", **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_sample_arguments():
    task = RotatingRoomTask()
    with pytest.raises(ValueError, match="split must be one of"):
        task.sample(2, "validation")
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(0)


def test_rebuilt_from_its_options_it_draws_the_same_batches():
    task = make_task("rotating-room", period=10, prerecall_length=12, speed_jitter=0.02)
    rebuilt = make_task(task.name, binarize=task.binarize,
                        **{k: getattr(task, k) for k in task.options})
    assert task.binarize == "none"
    drawn = task.sample(2, "test", generator()).x
    assert torch.equal(drawn, rebuilt.sample(2, "test", generator()).x)


def test_recall_frames_of_colour_sequences_get_a_red_border_not_a_tint(tmp_path):
    from pgtm.plotting import marked_frames, save_sequences

    batch = RotatingRoomTask(image_size=32).sample(1, "train", generator())
    images = marked_frames(batch.x, batch.recall[0])
    first_recall = images[0, 15]
    assert torch.allclose(first_recall[:, 1:-1, 1:-1], batch.x[0, 15, :, 1:-1, 1:-1])
    assert torch.allclose(first_recall[:, 0, :], torch.tensor([0.9, 0.05, 0.05])[:, None])
    assert torch.equal(images[0, 0], batch.x[0, 0])  # observed frames are untouched
    path = save_sequences(tmp_path / "room.png", [("room", batch.x, batch.recall[0])])
    assert Path(path).stat().st_size > 1000
