"""Every registered memory keeps the contract of ``tests/memory_contract.py``; the memory
without memory (the VRNN's) keeps it here, the others in their own test files."""

import ast
from pathlib import Path

import pytest
from memory_contract import MemoryContract  # tests/ is on sys.path under pytest

from pgtm.memories import MEMORIES
from pgtm.models import build_gtm, count_parameters

TESTS = Path(__file__).parent


class TestNoMemoryContract(MemoryContract):
    name = "vrnn"
    read_size = 0


def contracts_in(path: Path) -> set[str]:
    """The ``name`` of every ``MemoryContract`` subclass defined in the file ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and any(
            getattr(base, "id", getattr(base, "attr", None)) == "MemoryContract"
            for base in node.bases
        ):
            for statement in node.body:
                if (isinstance(statement, ast.Assign)
                        and [t.id for t in statement.targets if isinstance(t, ast.Name)] == ["name"]
                        and isinstance(statement.value, ast.Constant)):
                    names.add(statement.value.value)
    return names


def test_every_registered_memory_has_a_contract_test():
    covered = set().union(*(contracts_in(path) for path in TESTS.glob("test_*.py")))
    assert covered == set(MEMORIES)


def test_the_contract_finder_sees_a_planted_contract(tmp_path):
    planted = tmp_path / "test_planted.py"
    planted.write_text("class TestPlanted(contract.MemoryContract):\n    name = 'planted'\n"
                       "class TestOther(Base):\n    name = 'other'\n")
    assert contracts_in(planted) == {"planted"}


#: parameters of the default memory (latent 32, controller 256) and of
#: ``build_gtm(name, sequence_length=15)``, as the memories' docstrings state
DEFAULT_PARAMETERS = {
    "introspective": (20_560, 1_932_881),
    "ntm": (78_308, 1_990_629),
    "lru": (90_090, 2_002_411),
    "dnc": (74_012, 1_986_333),
    "fast-weights": (46_560, 1_958_881),
}
_default_counts = {}  # name -> counts, so that each default GTM is built once


def default_parameter_counts(name):
    if name not in _default_counts:
        gtm = build_gtm(name, sequence_length=15)
        assert gtm.memory.read_size == 160  # 5 heads of 32, as the Introspective memory's
        _default_counts[name] = (count_parameters(gtm.memory), count_parameters(gtm))
    return _default_counts[name]


@pytest.mark.parametrize("name", ["ntm", "lru", "dnc", "fast-weights"])
def test_default_gtm_keeps_the_parameter_count_of_the_introspective_one(name):
    introspective = default_parameter_counts("introspective")
    counts = default_parameter_counts(name)
    assert introspective == DEFAULT_PARAMETERS["introspective"]
    assert counts == DEFAULT_PARAMETERS[name]
    assert abs(counts[1] - introspective[1]) < 0.05 * introspective[1]
