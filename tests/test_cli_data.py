"""Tests of ``pgtm data preview`` (pgtm.cli) and pgtm.preview."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from pgtm import data
from pgtm.cli import COMMANDS, build_parser, main
from pgtm.preview import batch_to_grid, write_preview
from pgtm.tasks import TASK_NAMES, make_task

try:  # tests/ is not a package (pytest's default "prepend" import mode) ...
    from test_data import write_fake_omniglot
except ImportError:  # ... unless someone adds tests/__init__.py
    from tests.test_data import write_fake_omniglot

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# real data for the optional test (read before the autouse fixture clears the variable)
FULL_DATA = Path(os.environ.get("PGTM_DATA_DIR") or REPO.parent / "shared" / "data")


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("omni")
    write_fake_omniglot(d, n_bg=12, n_ev=12)
    return d


def assert_png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.width > 50 and im.height > 20
        return im.size


@pytest.mark.parametrize("name", [n for n in TASK_NAMES if not n.startswith("one-shot")])
def test_preview_every_task(name, tmp_path, capsys):
    out = tmp_path / f"{name}.png"
    rc = main(["data", "preview", name, "--out", str(out), "--n", "3", "--seed", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "wrote" in captured.out
    if name not in ("copy", "rotating-room"):  # those need no data
        assert "bundled subset" in captured.err  # one-line warning naming the source
    assert all(line.startswith("pgtm: warning:") for line in captured.err.splitlines())
    assert_png(out)


def test_preview_one_shot_fake_omniglot(omniglot_dir, tmp_path, capsys):
    out = tmp_path / "one-shot.png"
    rc = main(
        [
            "data",
            "preview",
            "one-shot",
            "--out",
            str(out),
            "--data-dir",
            str(omniglot_dir),
            "-l",
            "6",
            "-k",
            "3",
            "--binarize",
            "none",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    w, h = assert_png(out)
    assert w > h  # one row per sequence, 9 steps each


def test_preview_one_shot_full_data(tmp_path, capsys):
    d = FULL_DATA
    if not (d / "omniglot" / "omniglot_105_uint8.npz").is_file():
        pytest.skip("Omniglot data not available")
    out = tmp_path / "one-shot.png"
    assert main(["data", "preview", "one-shot", "--out", str(out), "--data-dir", str(d)]) == 0
    assert_png(out)


@pytest.mark.filterwarnings("ignore:full MNIST not found")
def test_preview_layout_and_recall_marking(tmp_path):
    task = make_task("perfect-recall", binarize="none", prerecall_length=4, recall_length=2)
    batch = task.sample(2, "train", torch.Generator().manual_seed(0))
    grid = batch_to_grid(batch)
    tile = 28 + 2 * 2 + 2  # frame + border + padding
    assert grid.shape == (3, 2 + 2 * tile, 2 + 6 * tile)
    # the border of a recall tile is red, of a pre-recall tile grey
    pre, rec = grid[:, 2, 2 + 1], grid[:, 2, 2 + 5 * tile + 1]
    assert pre[0] == pre[1] == pre[2]
    assert rec[0] > 0.8 and rec[1] < 0.3
    path = write_preview(task, tmp_path / "sub" / "p.png", n_sequences=2)
    assert_png(path)


def test_preview_rejects_bad_arguments(tmp_path):
    task = make_task("copy")
    with pytest.raises(ValueError, match="n_sequences"):
        write_preview(task, tmp_path / "a.png", n_sequences=0)
    with pytest.raises(ValueError, match=r"\.png"):
        write_preview(task, tmp_path / "a.jpg")


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["data", "preview", "tetris"], "unknown task 'tetris'; expected one of"),
        (["data", "preview", "copy", "-k", "30"],
         "--recall-length must be an integer in [1, --prerecall-length"),
        (["data", "preview", "copy", "--binarize", "x"], "argument --binarize: invalid choice"),
        (["data", "preview", "navigation", "-l", "3"], "has no option '--prerecall-length'"),
        (["data", "preview", "parity", "--split", "valid"], "argument --split: invalid choice"),
        (["data", "preview", "one-shot", "--data-dir", "{tmp}"], "no omniglot 'train' data found"),
    ],
)
def test_errors_are_one_line(argv, match, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--out", str(tmp_path / "x.png")]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if not ln.startswith("pgtm: warning:")]
    assert len(lines) == 1 and lines[0].startswith("pgtm") and ": error: " in lines[0]
    assert match in lines[0] and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_usage_errors_return_2(capsys):
    assert main([]) == 2
    assert main(["data", "preview", "copy"]) == 2  # --out missing
    assert "--out" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_command_registry():
    assert "data" in COMMANDS
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert "data" in sub.choices


def test_console_script_bad_task(tmp_path):
    exe = shutil.which("pgtm")
    cmd = [exe] if exe else [sys.executable, "-m", "pgtm.cli"]
    env = {k: v for k, v in os.environ.items() if k != data.ENV_VAR}
    proc = subprocess.run(
        [*cmd, "data", "preview", "no-such-task", "--out", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "pgtm: error: unknown task 'no-such-task'; expected one of: " + ", ".join(TASK_NAMES)
    ]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
