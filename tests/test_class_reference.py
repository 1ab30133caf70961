"""A run built with a user's class (prior, posterior, likelihood, memory) records an importable
reference, so ``pgtm evaluate``/``sample`` can rebuild it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pgtm.models.build import class_reference, resolve
from pgtm.models.priors import PRIORS, StandardNormalPrior


def test_a_module_class_round_trips():
    reference = class_reference(StandardNormalPrior)
    assert reference == "pgtm.models.priors:StandardNormalPrior"
    assert resolve("prior", reference, PRIORS) is StandardNormalPrior


def test_a_class_of_the_running_script_is_loaded_by_path(tmp_path):
    script = tmp_path / "my_script.py"
    script.write_text(textwrap.dedent('''
        from pgtm.models.build import class_reference
        from pgtm.models.priors import StandardNormalPrior

        class MyPrior(StandardNormalPrior):
            pass

        if __name__ == "__main__":
            print(class_reference(MyPrior))
            raise SystemExit("the main part must not run on import")
    '''))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    reference = run.stdout.strip()
    assert reference == f"{script}:MyPrior"
    cls = resolve("prior", reference, PRIORS)
    assert cls.__name__ == "MyPrior" and issubclass(cls, StandardNormalPrior)


@pytest.mark.parametrize("reference", ["no_such_module:Prior", "pgtm.models.priors:NoSuch",
                                       "/no/such/script.py:Prior"])
def test_an_unimportable_reference_is_one_line(reference):
    with pytest.raises(ValueError, match=r"^prior: cannot import") as info:
        resolve("prior", reference, PRIORS)
    assert "\n" not in str(info.value)
