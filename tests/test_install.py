"""The built wheel installs ``pgtm`` (with ``pgtm.models``/``pgtm.inference``/``pgtm.tasks`` and
the bundled data) and nothing at the top level: ``import models`` / ``import inference`` must fail.

The sources are copied to a temporary folder first, so building never writes into the repo.
Deselect with ``-k "not install"`` when offline builds are impossible.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = r"""
import importlib, sys
target = sys.argv[1]
# Drop the editable install of the working tree, so that only the wheel can satisfy imports.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")
                    and "__editable__" not in repr(f)]
repo = sys.argv[2]
sys.path[:] = [p for p in sys.path if p and not p.startswith(repo)]
for name in list(sys.modules):
    if name == "pgtm" or name.startswith("pgtm."):
        del sys.modules[name]
import pgtm, pgtm.models, pgtm.inference, pgtm.data, pgtm.tasks, pgtm.cli
for mod in (pgtm, pgtm.models, pgtm.inference, pgtm.tasks, pgtm.cli):
    assert mod.__file__.startswith(target), (mod.__name__, mod.__file__)
assert pgtm.data.bundled_subset_path().is_file(), "bundled subset missing from the wheel"
for name in ("models", "inference"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"top-level module {name!r} is importable")
print("ok")
"""


def _copy_sources(dst: Path) -> Path:
    src = dst / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    for name in ("pgtm", "models", "inference"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    return src


def test_wheel_installs_only_pgtm(tmp_path):
    src = _copy_sources(tmp_path)
    dist, target = tmp_path / "dist", tmp_path / "target"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if build.returncode != 0:
        pytest.fail(f"wheel build failed:\n{build.stdout}\n{build.stderr}")
    wheels = list(dist.glob("pgtm-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "pgtm/_data/mnist_subset.npz" in names
    assert {n.split("/")[0] for n in names if not n.startswith("pgtm-")} == {"pgtm"}
    inst = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheels[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inst.returncode == 0, inst.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PGTM_DATA_DIR")}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run(
        [sys.executable, "-c", CHECK, str(target), str(REPO)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("ok")
