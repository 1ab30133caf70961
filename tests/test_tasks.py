"""Tests of pgtm.tasks on real digits (the bundled MNIST subset) and a small fake Omniglot."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from pgtm import data
from pgtm.tasks import (
    ACTIONS,
    TASK_NAMES,
    SequenceBatch,
    cumulative_parity_digits,
    make_task,
    parity_digits,
)

try:  # tests/ is not a package (pytest's default "prepend" import mode) ...
    from test_data import write_fake_omniglot
except ImportError:  # ... unless someone adds tests/__init__.py
    from tests.test_data import write_fake_omniglot

REPO = Path(__file__).resolve().parents[1]
IMAGE_TASKS = [n for n in TASK_NAMES if n not in ("copy", "sequential-mnist")]
OMNIGLOT_TASKS = ("one-shot", "one-shot-generalisation")


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("omni")
    write_fake_omniglot(d, n_bg=24, n_ev=24)  # one-shot needs l = 20 distinct characters
    return d


@pytest.fixture(scope="module")
def tasks(omniglot_dir):
    """Every task twice: grey levels (``binarize="none"``) and dynamic binarisation."""
    out = {}
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.delenv(data.ENV_VAR, raising=False)
        warnings.simplefilter("ignore")  # bundled-subset warning
        for mode in ("none", "dynamic"):
            for name in TASK_NAMES:
                d = omniglot_dir if name in OMNIGLOT_TASKS else None
                out[name, mode] = make_task(name, data_dir=d, binarize=mode)
    return out


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def keys(images: torch.Tensor) -> set[bytes]:
    """Hashable pixel content of each image ``[N, ...]``."""
    flat = (images.reshape(len(images), -1) * 255).round().to(torch.uint8)
    return {row.numpy().tobytes() for row in flat}


def check_recall_copies(b: SequenceBatch) -> int:
    """Every recall step with an address shows exactly the addressed frame; returns their count."""
    bi, ti = torch.nonzero(b.recall & (b.addresses >= 0), as_tuple=True)
    src = b.addresses[bi, ti]
    assert bool((src < ti).all())
    assert not bool(b.recall[bi, src].any())  # sources are not recall steps themselves
    assert torch.equal(b.x[bi, ti], b.x[bi, src])
    return len(bi)


# ----------------------------------------------------------------------------------------------
# shapes, dtypes, reproducibility


@pytest.mark.parametrize("name", TASK_NAMES)
@pytest.mark.parametrize("mode", ["none", "dynamic"])
def test_shapes_and_dtypes(tasks, name, mode):
    task = tasks[name, mode]
    b = task.sample(3, "train", gen())
    assert isinstance(b, SequenceBatch)
    T = task.length
    assert b.x.shape == (3, T, *task.frame_shape) and b.x.dtype == torch.float32
    assert b.x.device.type == "cpu"
    assert float(b.x.min()) >= 0.0 and float(b.x.max()) <= 1.0
    for field in (b.mask, b.recall):
        assert field.shape == (3, T) and field.dtype == torch.bool
    for field in (b.labels, b.addresses):
        assert field.shape == (3, T) and field.dtype == torch.long
    assert bool(b.mask.all())
    assert bool((b.addresses[~b.recall] == -1).all())
    if task.context_size:
        assert b.c.shape == (3, T, task.context_size) and b.c.dtype == torch.float32
    else:
        assert b.c is None
    # a task whose frames are colour levels says so (binarize "none") and ignores the mode
    if mode == "dynamic" and getattr(task, "binarize", mode) == "dynamic":
        assert set(torch.unique(b.x).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_same_seed_same_batch(tasks, name):
    task = tasks[name, "dynamic"]
    a, b = task.sample(4, "test", gen(7)), task.sample(4, "test", gen(7))
    for fa, fb in zip(a, b, strict=True):
        assert (fa is None and fb is None) or torch.equal(fa, fb)
    assert not torch.equal(a.x, task.sample(4, "test", gen(8)).x)


def test_generator_is_the_only_randomness(tasks):
    task = tasks["perfect-recall", "dynamic"]
    g = gen(3)
    a = task.sample(2, "train", g)
    torch.manual_seed(123)  # the global RNG must not matter
    b = task.sample(2, "train", gen(3))
    assert torch.equal(a.x, b.x)


# ----------------------------------------------------------------------------------------------
# train/test separation


@pytest.mark.parametrize(
    "name", ["perfect-recall", "parity", "cumulative-parity", "navigation", "sequential-mnist"]
)
def test_train_and_test_pools_disjoint(tasks, name):
    task = tasks[name, "none"]
    train_keys, test_keys = keys(task.pools["train"].images), keys(task.pools["test"].images)
    assert not train_keys & test_keys
    for split, own, other in (("train", train_keys, test_keys), ("test", test_keys, train_keys)):
        b = task.sample(16, split, gen(1))
        frames = b.x.reshape(-1, 1, 28, 28)  # sequential-MNIST rows -> whole digits
        seen = keys(frames)
        assert seen <= own and not seen & other


@pytest.mark.parametrize("name", OMNIGLOT_TASKS)
def test_one_shot_uses_disjoint_characters(tasks, name):
    task = tasks[name, "none"]
    train_ids = set(task.characters["train"][1].tolist())
    test_ids = set(task.characters["test"][1].tolist())
    assert train_ids.isdisjoint(test_ids)
    assert set(task.sample(8, "train", gen()).labels.flatten().tolist()) <= train_ids
    assert set(task.sample(8, "test", gen()).labels.flatten().tolist()) <= test_ids


# ----------------------------------------------------------------------------------------------
# task invariants


@pytest.mark.parametrize("mode", ["none", "dynamic"])
def test_perfect_recall(tasks, mode):
    b = tasks["perfect-recall", mode].sample(8, "train", gen())
    assert b.x.shape[1] == 15 and bool((b.recall.sum(1) == 5).all())
    assert b.addresses[:, 10:].tolist() == [[0, 1, 2, 3, 4]] * 8
    assert check_recall_copies(b) == 8 * 5
    assert torch.equal(b.labels[:, 10:], b.labels[:, :5])


def test_similarity_cued(tasks):
    task = tasks["similarity-cued", "none"]
    assert (task.prerecall_length, task.recall_length, task.length) == (20, 5, 25)
    b = task.sample(32, "test", gen())
    addr = b.addresses[:, 20:]
    assert torch.equal(addr, addr[:, :1] + torch.arange(5))
    assert check_recall_copies(b) == 32 * 5


def test_similarity_cued_span_start_range(tasks):
    """Alg. 4's r ~ U[1, l - k] (1-based) is a 0-based start in [0, l - k - 1]: every one of those
    l - k values occurs, and the span never ends on the last pre-recall item."""
    task = tasks["similarity-cued", "none"]
    g = gen(5)
    starts = torch.cat([task.sample(64, "train", g).addresses[:, 20] for _ in range(10)])
    assert set(starts.tolist()) == set(range(20 - 5))  # 640 draws of 15 values
    # smallest case: l = k + 1 leaves one start, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        short = make_task("similarity-cued", prerecall_length=6, recall_length=5, binarize="none")
    assert bool((short.sample(64, "train", gen()).addresses[:, 6:] == torch.arange(5)).all())


def test_parity_rule_on_figure_5():
    """Fig. 5: pre-recall labels 7, 8, 9, 0, 8 -> recall digits 0, 1, 0, 1, 1 (1 = even)."""
    labels = torch.tensor([[7, 8, 9, 0, 8]])
    assert parity_digits(labels).tolist() == [[0, 1, 0, 1, 1]]
    assert cumulative_parity_digits(labels).tolist() == [[1, 1, 0, 0, 0]]  # 7, 15, 24, 24, 32


@pytest.mark.parametrize(
    ("name", "expected"), [("parity", [0, 1, 0, 1, 1]), ("cumulative-parity", [1, 1, 0, 0, 0])]
)
def test_parity_generator_on_figure_5(tasks, name, expected, monkeypatch):
    """The generator itself on Fig. 5's hand-made pre-recall labels."""
    task = tasks[name, "none"]
    pool = task.pools["train"]
    forced = [7, 8, 9, 0, 8, 1, 2, 3, 4, 5]
    index = torch.stack([torch.nonzero(pool.labels == d)[0, 0] for d in forced]).expand(2, 10)

    def forced_items(batch_size, n, split, generator):
        return task._frames(split, index, generator), task._labels(split, index)

    monkeypatch.setattr(task, "_draw_items", forced_items)
    b = task.sample(2, "train", gen())
    assert b.labels[:, :10].tolist() == [forced] * 2
    assert b.labels[:, 10:].tolist() == [expected] * 2
    for digit in (0, 1):  # new images of the recall digit
        digit_keys = keys(pool.images[pool.labels == digit])
        assert keys(b.x[:, 10:][b.labels[:, 10:] == digit]) <= digit_keys


@pytest.mark.parametrize("prerecall_length", [10, 20, 50])  # the paper's lengths, k = 5
def test_parity(prerecall_length, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = make_task("parity", prerecall_length=prerecall_length, binarize="none")
    l = prerecall_length
    assert (task.recall_length, task.length) == (5, l + 5)
    b = task.sample(32, "train", gen())
    expected = (b.labels[:, :5] % 2 == 0).long()  # the label of pre-recall step j alone
    assert torch.equal(b.labels[:, l:], expected)
    assert {0, 1} <= set(expected.flatten().tolist())
    assert bool((b.addresses == -1).all()) and bool(b.recall[:, l:].all())
    pool = task.pools["train"]
    for digit in (0, 1):
        digit_keys = keys(pool.images[pool.labels == digit])
        assert keys(b.x[:, l:][expected == digit]) <= digit_keys


def test_cumulative_parity(tasks):
    task = tasks["cumulative-parity", "none"]
    b = task.sample(32, "train", gen())
    expected = b.labels[:, :5].cumsum(1) % 2
    assert torch.equal(b.labels[:, 10:], expected)
    assert not torch.equal(expected, (b.labels[:, :5] % 2 == 0).long())  # not the paper's rule
    pool = task.pools["train"]
    for digit in (0, 1):
        assert keys(b.x[:, 10:][expected == digit]) <= keys(pool.images[pool.labels == digit])


def test_dynamic_dependency(tasks):
    task = tasks["dynamic-dependency", "none"]
    assert task.prerecall_length == 20 and task.recall_length == 5 and task.length == 25
    b = task.sample(32, "train", gen())
    pre_labels = b.labels[:, :20]
    addr = b.addresses[:, 20:]
    bi = torch.arange(32)
    assert torch.equal(addr[:, 0], pre_labels[:, 19])
    for j in range(1, 5):
        assert torch.equal(addr[:, j], b.labels[:, 20 + j - 1])
        assert torch.equal(addr[:, j], pre_labels[bi, addr[:, j - 1]])
    assert int(addr.max()) <= 9
    assert check_recall_copies(b) == 32 * 5
    with pytest.raises(ValueError, match=r"prerecall_length must be an integer >= 10, got 8"):
        make_task("dynamic-dependency", prerecall_length=8, recall_length=3)


def drawing_indices(drawings: torch.Tensor, frame: torch.Tensor) -> set[int]:
    """Which of one character's drawings ``[S, 1, 28, 28]`` equal ``frame``, pixel for pixel."""
    return {d for d in range(len(drawings)) if torch.equal(drawings[d], frame)}


@pytest.mark.parametrize("mode", ["none", "dynamic"])
def test_one_shot(tasks, mode):
    """Alg. 1 on held-out characters: recall repeats the same drawings, frame for frame."""
    task = tasks["one-shot", mode]
    assert (task.prerecall_length, task.recall_length, task.length) == (20, 5, 25)
    for split in ("train", "test"):
        b = task.sample(16, split, gen())
        assert bool((b.addresses[:, 20:] == torch.arange(5)).all())
        assert check_recall_copies(b) == 16 * 5  # identical (binarised) frames
        assert torch.equal(b.labels[:, 20:], b.labels[:, :5])
        for row in b.labels[:, :20]:
            assert len(set(row.tolist())) == 20  # distinct characters within a sequence
    if mode == "none":  # each pre-recall frame is one drawing of its character
        drawings, ids = task.characters["test"]
        pos = {int(c): i for i, c in enumerate(ids)}
        for s in range(16):
            for j in range(20):
                assert drawing_indices(drawings[pos[int(b.labels[s, j])]], b.x[s, j])


def test_one_shot_generalisation(tasks):
    task = tasks["one-shot-generalisation", "none"]
    b = task.sample(16, "train", gen())
    l, k = task.prerecall_length, task.recall_length
    assert (l, k) == (10, 5)
    assert bool((b.addresses[:, l:] == torch.arange(k)).all())
    assert torch.equal(b.labels[:, l:], b.labels[:, :k])  # same character ...
    for row in b.labels[:, :l]:
        assert len(set(row.tolist())) == l  # distinct characters in the pre-recall phase
    drawings, ids = task.characters["train"]
    # ... but another drawing: find each frame's drawing index within its character
    pos = {int(c): i for i, c in enumerate(ids)}
    for s in range(16):
        for j in range(k):
            ch = drawings[pos[int(b.labels[s, j])]]
            first, second = drawing_indices(ch, b.x[s, j]), drawing_indices(ch, b.x[s, l + j])
            assert first and second and first.isdisjoint(second)


def test_navigation(tasks):
    task = tasks["navigation", "none"]
    assert task.length == 25 and task.context_size == len(ACTIONS) == 5
    b, pos, cells = task.sample_with_map(16, "train", gen(2))
    assert torch.equal(b.x, task.sample(16, "train", gen(2)).x)  # same randomness as sample()
    g = task.grid_size
    assert int(pos.min()) >= 0 and int(pos.max()) < g
    # actions: one-hot, first 'stay', and consistent with the walk
    assert bool((b.c.sum(-1) == 1).all()) and bool((b.c[:, 0].argmax(-1) == 0).all())
    moves = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])
    assert torch.equal(pos[:, 1:] - pos[:, :-1], moves[b.c[:, 1:].argmax(-1)])
    # frames = digit of the map cell under the agent, pixel for pixel
    cell = pos[..., 0] * g + pos[..., 1]
    pool = task.pools["train"]
    assert torch.equal(b.x, pool.images[cells.gather(1, cell)])
    assert torch.equal(b.labels, pool.labels[cells.gather(1, cell)])
    # recall = revisit; address = first visit
    for s in range(16):
        for t in range(25):
            earlier = [u for u in range(t) if cell[s, u] == cell[s, t]]
            assert bool(b.recall[s, t]) == bool(earlier)
            assert int(b.addresses[s, t]) == (earlier[0] if earlier else -1)
    assert check_recall_copies(b) == int(b.recall.sum())
    # dynamic binarisation: revisits repeat the same binarised frame
    check_recall_copies(tasks["navigation", "dynamic"].sample(8, "test", gen()))


def test_copy(tasks):
    task = tasks["copy", "none"]
    assert task.frame_shape == (1, 1, 9) and task.length == 21
    b = task.sample(8, "train", gen())
    x = b.x[:, :, 0, 0]
    assert torch.equal(x[:, 11:], x[:, :10])  # targets = sources
    assert bool((x[:, 10, :8] == 0).all()) and bool((x[:, 10, 8] == 1).all())  # delimiter
    assert bool((x[:, :10, 8] == 0).all()) and bool((x[:, 11:, 8] == 0).all())
    assert bool(b.recall[:, 11:].all()) and not bool(b.recall[:, :11].any())
    assert b.addresses[:, 11:].tolist() == [list(range(10))] * 8
    assert bool((b.labels == -1).all())
    check_recall_copies(b)
    short = make_task("copy", prerecall_length=4, recall_length=2, width=3)
    assert short.frame_shape == (1, 1, 4) and short.length == 7


def test_sequential_mnist(tasks):
    task = tasks["sequential-mnist", "none"]
    b = task.sample(8, "test", gen())
    assert b.x.shape == (8, 28, 1, 1, 28) and not bool(b.recall.any())
    assert bool((b.addresses == -1).all())
    pool = task.pools["test"]
    digits = b.x.reshape(8, 1, 28, 28)
    assert keys(digits) <= keys(pool.images)  # the rows of one pool digit, in order
    assert bool((b.labels == b.labels[:, :1]).all())


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("perfect-recall", {"prerecall_length": 6, "recall_length": 6}),
        ("similarity-cued", {"prerecall_length": 6, "recall_length": 5}),
        ("similarity-cued", {"prerecall_length": 12, "recall_length": 3}),
    ],
)
def test_lengths(name, kw, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = make_task(name, binarize="none", **kw)
    b = task.sample(2, "train", gen())
    assert task.length == sum(kw.values()) == b.x.shape[1]
    check_recall_copies(b)


# ----------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("name", "kw", "match"),
    [
        ("tetris", {}, "^unknown task 'tetris'; expected one of: perfect-recall"),
        ("perfect-recall", {"recall_length": 11},
         r"recall_length must be an integer in \[1, prerecall_le"),
        ("copy", {"recall_length": 11},
         r"recall_length must be an integer in \[1, prerecall_length=10\]"),
        (
            "similarity-cued",
            {"prerecall_length": 6, "recall_length": 6},
            r"^recall_length must be an integer in \[1, prerecall_length - 1=5\], got 6$",
        ),
        ("similarity-cued", {"prerecall_length": 1},
         "prerecall_length must be an integer >= 2, got 1"),
        ("perfect-recall", {"prerecall_length": 0},
         "prerecall_length must be an integer >= 1, got 0"),
        ("perfect-recall", {"prerecall_length": 2.5}, "prerecall_length must be an integer"),
        ("navigation", {"prerecall_length": 5}, "has no option 'prerecall_length'; allowed:"),
        ("navigation", {"grid_size": 1}, r"grid_size must be an integer >= 2, got 1"),
        ("sequential-mnist", {"width": 3}, "has no option 'width'"),
        ("perfect-recall", {"dataset": "cifar"}, "^dataset must be one of 'mnist'"),
        ("perfect-recall", {"binarize": "maybe"}, "^binarize must be one of"),
        ("copy", {"binarize": "maybe"}, "^binarize must be one of"),
    ],
)
def test_bad_task_arguments(name, kw, match, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=match) as err:
            make_task(name, **kw)
    assert "\n" not in str(err.value)


def test_bad_sample_arguments(tasks):
    task = tasks["perfect-recall", "none"]
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(0, "train", gen())
    with pytest.raises(ValueError, match="^split must be one of 'train', 'test'"):
        task.sample(2, "valid", gen())
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        task.sample(2, "train", 0)


@pytest.mark.parametrize("name", ["parity", "cumulative-parity"])
def test_parity_needs_labels(name, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.delenv(data.ENV_VAR, raising=False)
    arrays = {s: np.zeros((5, 784), dtype=np.uint8) for s in ("train", "valid", "test")}
    np.savez_compressed(tmp_path / "binarized_mnist_larochelle.npz", **arrays)
    with pytest.raises(ValueError, match="needs digit labels"):
        make_task(name, data_dir=tmp_path, dataset="binarized-mnist")


def test_full_data_tasks():
    d = Path(os.environ.get("PGTM_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (d / "omniglot" / "omniglot_105_uint8.npz").is_file():
        pytest.skip("full data not available")
    for name in OMNIGLOT_TASKS:
        task = make_task(name, data_dir=d, binarize="none")
        b = task.sample(4, "test", gen())
        assert int(b.labels.min()) >= 964  # evaluation characters only
        assert int(task.sample(4, "train", gen()).labels.max()) < 964  # background only
    assert check_recall_copies(make_task("one-shot", data_dir=d).sample(4, "test", gen())) == 20
    dd = make_task("dynamic-dependency", data_dir=d, dataset="binarized-mnist")
    assert check_recall_copies(dd.sample(4, "train", gen())) == 20
