"""Atomic writes: a reader sees the old file or the new one, never a torn one or a leftover."""

import pytest

from pgtm.io import atomic_write, write_text_atomically


def test_a_finished_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "log.csv"
    target.write_text("old\n")
    write_text_atomically(target, "new\n")
    with atomic_write(tmp_path / "data.bin", binary=True) as f:
        f.write(b"\x00\x01")
    assert target.read_text() == "new\n"
    assert (tmp_path / "data.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "log.csv"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_write_that_fails_midway_keeps_the_old_file_and_removes_the_temporary(tmp_path, error):
    target = tmp_path / "summary.md"
    target.write_text("old")
    with pytest.raises(error), atomic_write(target) as f:
        f.write("half of the new")
        raise error
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]
