"""The glibc malloc tuning the ``pgtm`` commands apply at start."""

import ctypes.util
import platform

import pytest

from pgtm.cli.allocator import ENVIRONMENT_SWITCH, keep_freed_memory

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"
    or ctypes.util.find_library("c") is None,
    reason="needs glibc",
)


@glibc
def test_applied_on_glibc(monkeypatch):
    monkeypatch.delenv(ENVIRONMENT_SWITCH, raising=False)
    assert keep_freed_memory() is True


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(ENVIRONMENT_SWITCH, "default")
    assert keep_freed_memory() is False


def test_the_old_module_name_still_works_for_one_release():
    import pgtm.allocator
    import pgtm.cli.allocator

    assert pgtm.allocator.keep_freed_memory is pgtm.cli.allocator.keep_freed_memory
